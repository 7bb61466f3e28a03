"""The teaching engine: a small continuous-batching LLM server you can read in one sitting.

One request's journey, file by file (nano-vllm's layout):

    server.py        HTTP: OpenAI-compatible /v1/completions, /v1/chat/completions, /metrics
        │  tokenised prompt + SamplingParams
        ▼
    engine.py        the step loop: schedule → run the model → sample → append → finish
        │
        ├── scheduler.py     who runs this step: token budget, chunked prefill, preemption,
        │                    FCFS or LPM order, prefix-cache lookups (labkit.kvcache)
        ├── model_runner.py  turns the scheduled batch into tensors, runs llama.py's forward
        │                    over the paged KV cache, and samples (sampler.py); reads the
        │                    one switch, --attention plain | fast:
        │       plain_attention.py  lab 20's paged attention op as it is (read this first)
        │       fast/               cascade attention, kept gather buffers, packed matmuls
        └── sequence.py      one request's state: tokens, block table, status, timestamps
    prometheus_metrics.py  Prometheus counters and histograms under vLLM's metric names
    config.py        every knob in one dataclass; the server's flags are built from it
    dtype.py         --dtype auto: bfloat16 only where the hardware has native BF16
    llama.py         the Llama forward pass in plain torch (attention passed in)
    sampler.py       greedy, temperature and top-p sampling
    api.py           the FastAPI app behind server.py (routes, streaming, errors)
    async_engine.py  the server's side of the engine: requests in, outputs out, over pipes
    engine_core.py   the engine process: the step loop without HTTP in the way
    fault.py         deliberate per-step slowness for alert drills (--fault-file)

Offline use (no HTTP):

    from labkit.engine.config import EngineConfig
    from labkit.engine.engine import LLMEngine
    from labkit.engine.sequence import SamplingParams
    engine = LLMEngine(EngineConfig(model=path))
    outs = engine.generate(["def fib(n):"], SamplingParams(max_tokens=16, temperature=0))

Serving: `python -m labkit.engine.server --model PATH --port 8000` (see server.py --help).
"""
