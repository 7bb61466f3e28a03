"""`labkit serve`: one launcher for vLLM, SGLang, TensorRT-LLM and the teaching engine.

    from labkit.serve import serve
    with serve("vllm", model=path, port=None, max_model_len=512, enforce_eager=True) as s:
        s.base_url, s.model, s.metrics_url

Files: config.py (the common ServeConfig), vllm.py / sglang.py / trtllm.py / mini.py (each
engine's real flags and metric names), launcher.py (start, health wait, stop), process_tree.py
and watchdog.py (no orphaned server), ports.py, diagnose.py (why a start failed), records.py
(log and launch.json in the run directory),
metric_vocabulary.py (one metric vocabulary across engines), registry.py (engine name → module),
cli.py (`labkit serve`).
"""

import importlib

# Loaded on first use (PEP 562), so `labkit --help`, which imports labkit.serve.cli, does
# not pay for urllib & co.
_EXPORTS = {
    "LaunchPlan": "config", "ServeConfig": "config",
    "Server": "launcher", "ServerStartError": "launcher", "launch": "launcher",
    "plan": "launcher", "serve": "launcher", "stop_all": "launcher",
    "metric_name": "metric_vocabulary", "metric_names": "metric_vocabulary",
    "metrics_table": "metric_vocabulary",
    "ENGINES": "registry", "engine_module": "registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"labkit.serve.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'labkit.serve' has no attribute {name!r}")
