"""`labkit gpu-check`: one command that tells whether a rented GPU box runs the GPU tier.

Run it first on a new box (no network needed; torch with CUDA, nvidia-ml-py and
prometheus-client are all it uses beyond this repository). It writes one JSON with one entry
per check, each run on its own so one failure never hides the others:

    device        what torch sees: name, compute capability, memory, CUDA and driver versions
    nvml          NVML readings (the numbers dcgm-exporter and `labkit exporter` report)
    roofline      bf16 matmul TFLOP/s and device-to-device copy GB/s next to the datasheet peak
    paged_attention  labkit's paged attention op on CUDA: error vs dense SDPA, and timing
    engine        the teaching engine on CUDA: greedy tokens equal to the CPU float32 run
    nccl          a one-rank NCCL all_reduce (the library loads and a communicator forms)

Each entry has status ok | failed | skipped, its seconds, and either its figures or the
error. Without an NVIDIA GPU it writes {"gpu": false, ...} with every check skipped and the
reason, and exits 0: that outcome is what CI checks. A failed check makes the exit code 1.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import time
import traceback
from pathlib import Path

PROMPTS = ["def fibonacci(n):", "the of and to in is was for on are with as", "x"]


def check_device() -> dict:
    import torch

    p = torch.cuda.get_device_properties(0)
    return {"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1),
            "multiprocessors": p.multi_processor_count, "torch": torch.__version__,
            "cuda": torch.version.cuda, "devices": torch.cuda.device_count()}


def check_nvml() -> dict:
    import pynvml

    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        util = pynvml.nvmlDeviceGetUtilizationRates(h)
        name = pynvml.nvmlDeviceGetName(h)
        out = {"name": name.decode() if isinstance(name, bytes) else name,
               "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
               "fb_used_mib": mem.used // 2**20, "fb_free_mib": mem.free // 2**20,
               "gpu_util_pct": util.gpu, "mem_copy_util_pct": util.memory,
               "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000,
               "temp_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
               "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
               "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)}
        try:
            out["energy_mj"] = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except pynvml.NVMLError as e:
            out["energy_mj"] = f"not supported: {e}"
        try:
            out["gpm_supported"] = bool(pynvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice)
        except (AttributeError, pynvml.NVMLError) as e:
            out["gpm_supported"] = f"unknown: {e}"
        return out
    finally:
        pynvml.nvmlShutdown()


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def check_roofline() -> dict:
    from labkit import roofline

    mm = roofline.matmul_flops(8192, dtype="bfloat16", device="cuda")
    cp = roofline.copy_bandwidth(2048, device="cuda")
    name = check_device()["name"]
    peak = roofline.known_peak(name)
    out = {"matmul_bf16_tflops": round(mm["tflops"], 1), "copy_gbs": round(cp["gbs"], 1),
           "copy_counts": "read + write bytes", "peak": peak}
    if peak:
        out["fraction_of_peak_flops"] = round(mm["tflops"] / peak["bf16_tflops"], 3)
        out["fraction_of_peak_bw"] = round(cp["gbs"] / 1e3 / peak["bw_tbs"], 3)
    return out


def check_paged_attention() -> dict:
    from labkit.kvcache import paged_vs_dense

    shape = dict(num_heads=32, num_kv_heads=8, head_dim=128, block_size=16, seed=0,
                 device="cuda")
    err = paged_vs_dense.max_abs_error(context_lens=[37, 700, 22, 513],
                                       query_lens=[1, 700, 5, 1], impl="sdpa", **shape)
    t = paged_vs_dense.time_decode(batch_size=64, context_len=2048, num_heads=32,
                                   num_kv_heads=8, head_dim=128, block_size=16, repeats=20,
                                   device="cuda")
    return {"max_abs_err_vs_dense": float(f"{err:.3g}"), "decode": t,
            "ok": err < 1e-2}


def check_engine() -> dict:
    from labkit.engine.config import EngineConfig
    from labkit.engine.engine import LLMEngine
    from labkit.engine.sequence import SamplingParams
    from labkit.models import build_tiny_llama

    model = str(build_tiny_llama(verbose=False))
    greedy = SamplingParams(max_tokens=16, temperature=0)
    runs = {}
    for device in ("cpu", "cuda"):
        eng = LLMEngine(EngineConfig(model=model, device=device, dtype="float32",
                                     kv_cache_tokens=4096))
        runs[device] = [r["token_ids"] for r in eng.generate(PROMPTS, greedy)]
    same = runs["cpu"] == runs["cuda"]
    out = {"prompts": len(PROMPTS), "tokens_each": 16, "cuda_equals_cpu_float32": same}
    if not same:
        raise AssertionError(f"greedy tokens differ: cpu {runs['cpu']} vs cuda {runs['cuda']}")
    return out


def check_nccl() -> dict:
    import tempfile

    import torch
    import torch.distributed as dist

    init = Path(tempfile.mkdtemp(prefix="labkit-nccl-")) / "init"
    dist.init_process_group("nccl", init_method=f"file://{init}", rank=0, world_size=1)
    try:
        x = torch.full((1 << 20,), 2.0, device="cuda")
        dist.all_reduce(x)
        torch.cuda.synchronize()
        return {"nccl_version": ".".join(map(str, torch.cuda.nccl.version())),
                "all_reduce_ok": bool((x == 2.0).all())}
    finally:
        dist.destroy_process_group()


CHECKS = [("device", check_device), ("nvml", check_nvml), ("roofline", check_roofline),
          ("paged_attention", check_paged_attention), ("engine", check_engine),
          ("nccl", check_nccl)]


def no_gpu_reason() -> str | None:
    """None when torch sees a CUDA GPU, else why not (in words a learner can act on)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return ("no NVIDIA GPU visible to torch" + (f" (torch {torch.__version__} is a CPU "
                "build: install a CUDA build)" if not built else ""))
    return None


def run_checks(checks=None, gpu_reason: str | None = None) -> dict:
    """Run every check in isolation; a GPU-less machine skips them all with the reason."""
    checks = CHECKS if checks is None else checks
    report = {"labkit_gpu_check": 1, "date": _dt.datetime.now().astimezone().isoformat(
        timespec="seconds"), "host": platform.node(), "python": platform.python_version(),
        "gpu": gpu_reason is None, "checks": {}}
    if gpu_reason:
        report["reason"] = gpu_reason
    for name, fn in checks:
        if gpu_reason:
            report["checks"][name] = {"status": "skipped", "reason": gpu_reason}
            continue
        t0 = time.monotonic()
        try:
            result = {"status": "ok", **fn()}
        except Exception as e:  # noqa: BLE001 - one failing check must not hide the others
            result = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=4)}
        result["seconds"] = round(time.monotonic() - t0, 2)
        report["checks"][name] = result
        print(f"  {name:16s} {result['status']:7s} {result['seconds']:6.1f} s", flush=True)
    return report


def cmd_gpu_check(args) -> int:
    from labkit.runs import atomic_write_json

    reason = no_gpu_reason()
    print("no GPU: " + reason if reason else "checking the GPU tier …", flush=True)
    report = run_checks(gpu_reason=reason)
    atomic_write_json(args.out, report)
    failed = [n for n, c in report["checks"].items() if c["status"] == "failed"]
    print(f"report: {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def register(sub) -> None:
    import argparse

    p = sub.add_parser("gpu-check", help="check a GPU box runs the GPU tier (one JSON; "
                       "exit 0 with a 'no GPU' report on a CPU machine)",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="report path (default ./gpu_check.json)")
    p.set_defaults(func=cmd_gpu_check)


if __name__ == "__main__":
    from labkit.cli import main

    sys.exit(main(["gpu-check", *sys.argv[1:]]))
