"""A roofline probe: how fast can this machine multiply, and how fast can it move bytes?

Every later lab is limited by one of two ceilings (Williams et al., "Roofline", CACM 2009):
compute (FLOP/s, reached by large matmuls) or memory bandwidth (bytes/s, reached by copies).
A kernel with arithmetic intensity I (FLOPs per byte moved) can at best reach
min(peak_flops, I × peak_bandwidth). LLM decode has I ≈ 1–2 for batch 1, so it is
bandwidth-bound; prefill and training matmuls have I in the hundreds, so compute-bound.
"""

from __future__ import annotations

import re
import time

from labkit.env import cpu_model

# Datasheet peaks (dense, no sparsity). Sources: NVIDIA datasheets; H100 figures as quoted
# in FIELD_NOTES. "bf16" = dense BF16 tensor-core TFLOP/s, "bw" = HBM/GDDR TB/s.
KNOWN_PEAKS = {
    "H100 SXM": {"match": ("H100 80GB HBM3", "H100 SXM"), "bf16_tflops": 989, "bw_tbs": 3.35},
    "H100 PCIe": {"match": ("H100 PCIe",), "bf16_tflops": 756, "bw_tbs": 2.0},
    "H200": {"match": ("H200",), "bf16_tflops": 989, "bw_tbs": 4.8},
    "A100 80GB": {"match": ("A100-SXM4-80GB", "A100 80GB"), "bf16_tflops": 312, "bw_tbs": 2.039},
    "L40S": {"match": ("L40S",), "bf16_tflops": 362, "bw_tbs": 0.864},
    "L4": {"match": ("NVIDIA L4",), "bf16_tflops": 121, "bw_tbs": 0.3},
}


def _names(device_name: str, pattern: str) -> bool:
    """`pattern` appears in the name as whole words: "H200" must not match "NVIDIA GH200 480GB"
    (a Grace Hopper superchip: different memory, different peaks) nor "L4" match "L40S"."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(pattern)}(?![A-Za-z0-9])", device_name,
                     flags=re.IGNORECASE) is not None


def known_peak(device_name: str) -> dict | None:
    """Datasheet peak for a GPU name as NVML/torch reports it, or None if we don't know it."""
    for label, p in KNOWN_PEAKS.items():
        if any(_names(device_name, m) for m in p["match"]):
            return {"label": label, "bf16_tflops": p["bf16_tflops"], "bw_tbs": p["bw_tbs"]}
    return None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_time(fn, device: str, repeats: int, min_seconds: float = 0.2) -> float:
    """Best-of-N wall time of fn(): the least disturbed run is the closest to the hardware."""
    fn()  # warm-up: page faults, allocator, kernel selection
    _sync(device)
    best, spent, n = float("inf"), 0.0, 0
    while n < repeats or spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
        if n >= 10 * repeats:
            break
    return best


def matmul_flops(size: int, dtype: str = "float32", device: str = "cpu",
                 repeats: int = 5) -> dict:
    """Measured FLOP/s of a size×size×size matmul (2·n³ FLOPs: one multiply + one add)."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(size, size, dtype=dt, device=device)
    b = torch.randn(size, size, dtype=dt, device=device)
    seconds = _best_time(lambda: a @ b, device, repeats)
    flops = 2 * size**3
    return {"size": size, "dtype": dtype, "device": device, "seconds": seconds,
            "tflops": flops / seconds / 1e12,
            "intensity": flops / (3 * size * size * a.element_size())}


def copy_bandwidth(mebibytes: int, device: str = "cpu", repeats: int = 5) -> dict:
    """Measured bytes/s of copying a buffer; read + write both count (as STREAM's Copy)."""
    import torch

    n = mebibytes * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = _best_time(lambda: dst.copy_(src), device, repeats)
    moved = 2 * n * 4
    return {"mebibytes": mebibytes, "device": device, "seconds": seconds,
            "gbs": moved / seconds / 1e9}


def probe(matmul_size: int = 1024, copy_mib: int = 256, device: str = "auto") -> dict:
    """Run both probes on the chosen device; attach the datasheet peak where known."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    mm = matmul_flops(matmul_size, dtype, device)
    bw = copy_bandwidth(copy_mib, device)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else _cpu_name()
    return {"device": device, "device_name": name, "threads": torch.get_num_threads(),
            "matmul": mm, "copy": bw,
            "peak": known_peak(name) if device.startswith("cuda") else None,
            "ridge_intensity": mm["tflops"] * 1e12 / (bw["gbs"] * 1e9)}


def _cpu_name() -> str:
    return cpu_model()


def plot_roofline(result: dict, ax=None):
    """Log-log roofline: measured ceilings, the two probes as points, the peak if known."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.2))
    intensity = np.logspace(-2, 4, 200)
    flops = result["matmul"]["tflops"] * 1e12
    bw = result["copy"]["gbs"] * 1e9
    # A CPU lives in GFLOP/s, a GPU in TFLOP/s: pick the unit that gives readable numbers.
    scale, unit = (1e12, "TFLOP/s") if flops >= 1e12 else (1e9, "GFLOP/s")
    ax.loglog(intensity, np.minimum(flops, intensity * bw) / scale, label="measured roofline")
    if result.get("peak"):
        p = result["peak"]
        ax.loglog(intensity, np.minimum(p["bf16_tflops"] * 1e12, intensity * p["bw_tbs"] * 1e12)
                  / scale, "--", label=f"{p['label']} datasheet peak")
    mm = result["matmul"]
    ax.plot([mm["intensity"]], [flops / scale], "o",
            label=f"matmul {mm['size']}³ {mm['dtype']}: {flops / scale:.3g} {unit}")
    ax.axvline(result["ridge_intensity"], color="grey", lw=0.8, ls=":")
    ax.text(result["ridge_intensity"] * 1.1, flops / scale / 30,
            f"ridge ≈ {result['ridge_intensity']:.1f} FLOP/byte", fontsize=8)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel(f"attainable {unit}")
    ax.set_title(f"Roofline of {result['device_name']} ({result['device']})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    return ax
