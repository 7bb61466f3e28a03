"""Load-testing an OpenAI-compatible server the way the measurement should be done.

    arrivals.py     when each request is sent: an open-loop schedule fixed up front
    workloads.py    what each request asks: random, shared-prefix, multi-turn, ShareGPT
    client.py       one streaming request, timed chunk by chunk; faults become causes
    request_metrics.py  TTFT, both TPOT conventions, ITL, E2E, goodput, token mismatch
    loadgen.py      the benchmark loop: drift-free dispatcher, JSONL written as we go
    sweep.py        many loads (fresh prompts each) → table, Pareto plot, capacity at the SLO
    report.py       summary table, JSON and CSV
    capacity.py     capacity at the SLO, searched: raise the load, bisect, both bounds
    server_metrics.py  the server's own /metrics around a run (prefix-cache hits, means)
    plots.py        figures: Pareto, both TPOTs, curves per config, capacity and cost
    fake_server.py  an OpenAI-compatible server with known latencies: the oracle for tests
    cli.py          `labkit bench`; __main__.py: `python -m labkit.bench`

Quick start (a Python session or notebook):

    from labkit.bench.loadgen import BenchConfig, run_bench
    summary = run_bench(BenchConfig(base_url="http://127.0.0.1:8000", model="tiny",
                                    rate=4, num_requests=100, out_dir="runs/bench"))
"""
