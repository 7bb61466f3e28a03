"""Which engines `labkit serve` knows, and the module that maps the config for each."""

from __future__ import annotations

import importlib
from types import ModuleType

from labkit.errors import UserError

# name -> module. Each module provides NAME, TITLE, REQUIRES_GPU, INSTALL_HINT, FLAGS,
# DOCUMENTED_FLAGS, METRICS, METRICS_PATH, missing() and build(cfg, workdir) -> LaunchPlan.
ENGINES = {
    "vllm": "labkit.serve.vllm",
    "sglang": "labkit.serve.sglang",
    "trtllm": "labkit.serve.trtllm",
    "mini": "labkit.serve.mini",
}


def engine_module(name: str) -> ModuleType:
    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])
