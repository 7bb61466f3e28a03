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
        │                    over the paged KV cache, and samples (sampler.py)
        └── sequence.py      one request's state: tokens, block table, status, timestamps
    metrics.py       Prometheus counters and histograms under vLLM's metric names
    config.py        every knob in one dataclass

Offline use (no HTTP):

    from labkit.engine.config import EngineConfig
    from labkit.engine.engine import LLMEngine
    from labkit.engine.sequence import SamplingParams
    engine = LLMEngine(EngineConfig(model=path))
    outs = engine.generate(["def fib(n):"], SamplingParams(max_tokens=16, temperature=0))

Serving: `python -m labkit.engine.server --model PATH --port 8000` (see server.py --help).
"""
