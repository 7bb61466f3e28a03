"""`--dtype auto`: which number format the weights and the KV cache use, decided like vLLM.

A user who starts vLLM without `--dtype` gets bfloat16 on a CPU with native BF16 support
(AMX or AVX-512-BF16: Sapphire Rapids and later Xeons, Zen 4 and later EPYCs) and on a
GPU that has it (Ampere and later), because half the bytes per weight is half the memory
traffic, and memory traffic is what small-batch decode waits on. Without native support,
bfloat16 matmuls are emulated and slower than float32, so a CPU without it keeps float32.

    where                         auto picks    why
    CPU with amx_bf16/avx512_bf16 bfloat16      native BF16 matmuls (oneDNN uses them)
    other CPUs (AVX2 ...)         float32       BF16 would be emulated: slower, not faster
    GPU with BF16 (sm80+)         bfloat16      unless the checkpoint is float16: kept
    older GPU                     float16

The engine says what it chose and why in its start-up line and in /v1/models
(`dtype`, `dtype_reason`), so a benchmark row can state it. Greedy tokens equal
transformers' only on the float32 path; the bfloat16 test states its own criterion
(tests/test_engine_dtype.py).
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native BF16 support


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_dtype(requested: str, device: str = "cpu", checkpoint: str = "float32",
                  flags: set[str] | None = None, cuda_bf16: bool | None = None) -> tuple[str, str]:
    """(dtype name, the reason) for a requested dtype; flags/cuda_bf16 default to this machine."""
    if requested != "auto":
        return requested, f"--dtype {requested} (asked for)"
    if device.startswith("cuda"):
        if checkpoint == "float16":
            return "float16", "auto: the checkpoint is float16 (kept, as vLLM does)"
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = torch.cuda.is_bf16_supported()
        return ("bfloat16", "auto: the GPU supports bfloat16") if cuda_bf16 else \
            ("float16", "auto: the GPU has no bfloat16")
    have = sorted((cpu_flags() if flags is None else flags) & set(CPU_BF16_FLAGS))
    if have:
        return "bfloat16", f"auto: the CPU has native BF16 ({', '.join(have)})"
    return "float32", "auto: the CPU has no native BF16 (no amx_bf16 or avx512_bf16)"
