"""The SkyPilot task for a GPU-tier batch run of the labs.

    labkit cloud task --gpus H100:1 --spot --bucket my-labkit-runs --out task.yaml
    sky jobs launch task.yaml --secret HF_TOKEN      # managed: recovers from preemptions
    sky launch -c labkit task.yaml                   # or a plain cluster (on demand)

What the task does on the rented box: install the GPU tier (`pip install -e '.[gpu,test]'`,
CUDA wheels from PyPI), run `labkit gpu-check`, then `labkit run --profile P --run-id R`.
The run directory lives in a bucket mounted at /labkit-runs, so a preemption loses at most
the lab that was running: the managed job restarts on a new VM, `--run-id R` finds the
directory and resumes, skipping every lab that completed (`labkit run --resume` semantics).
Back home, `labkit cloud fetch` copies the run out of the bucket and `labkit portfolio build`
publishes it next to a CPU run.

Schema: SkyPilot 0.14 (resources.accelerators / use_spot / disk_size / job_recovery,
workdir, file_mounts with a bucket in MOUNT_CACHED or MOUNT mode, envs, secrets, setup, run).
Secrets (HF_TOKEN) are declared, never written: their values come from `--secret` at launch.
"""

from __future__ import annotations

import datetime as _dt
import re

from labkit.errors import UserError

# Accelerator names as SkyPilot's catalog spells them (sky show-gpus), for the GPUs the
# profiles and the price catalog know. SkyPilot's parser accepts any name, so we check.
KNOWN_GPUS = ("H100", "H100-MEGA", "H200", "A100", "A100-80GB", "L40S", "L4", "A10G", "B200")
RECOVERY_STRATEGIES = ("FAILOVER", "EAGER_NEXT_REGION")  # sky.jobs.recovery_strategy
MOUNT_MODES = ("MOUNT_CACHED", "MOUNT")
RUNS_MOUNT = "/labkit-runs"
SECRETS = ("HF_TOKEN",)


def parse_gpus(spec: str) -> tuple[str, int]:
    """'H100:8' → ('H100', 8); 'L4' → ('L4', 1); unknown names name the known ones."""
    m = re.fullmatch(r"([A-Za-z0-9-]+)(?::(\d+))?", spec.strip())
    if not m:
        raise UserError(f"--gpus {spec!r}: write NAME[:COUNT], e.g. H100:1 or A100-80GB:8")
    name, count = m.group(1), int(m.group(2) or 1)
    canonical = {g.lower(): g for g in KNOWN_GPUS}.get(name.lower())
    if canonical is None:
        raise UserError(f"--gpus {spec!r}: unknown GPU {name!r}; known: {', '.join(KNOWN_GPUS)}")
    if not 1 <= count <= 16:
        raise UserError(f"--gpus {spec!r}: count must be 1..16 GPUs on one node")
    return canonical, count


def build_task(gpus: str = "H100:1", profile: str = "h100", spot: bool = False,
               labs: list[str] | None = None, bucket: str | None = None,
               mount_mode: str = "MOUNT_CACHED", disk_gb: int = 256,
               recovery: str = "FAILOVER", max_restarts_on_errors: int = 1,
               run_id: str | None = None) -> dict:
    """The task as a dict (write it with yaml.safe_dump). Checks what SkyPilot doesn't."""
    name, count = parse_gpus(gpus)
    if recovery not in RECOVERY_STRATEGIES:
        raise UserError(f"recovery strategy {recovery!r} does not exist; SkyPilot has: "
                        f"{', '.join(RECOVERY_STRATEGIES)}")
    if mount_mode not in MOUNT_MODES:
        raise UserError(f"mount mode {mount_mode!r}: use {' or '.join(MOUNT_MODES)}")
    if bucket is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise UserError(f"--bucket {bucket!r}: bucket names are 3-63 lowercase letters, "
                        "digits, '.' and '-'")
    run_id = run_id or f"{profile}-{name.lower()}x{count}-{_dt.date.today():%Y%m%d}"
    labs_arg = " ".join(labs or [])
    resources = {"accelerators": f"{name}:{count}", "use_spot": spot, "disk_size": disk_gb,
                 "job_recovery": {"strategy": recovery,
                                  "max_restarts_on_errors": max_restarts_on_errors}}
    task = {
        "name": f"labkit-{profile}",
        "resources": resources,
        "workdir": ".",
        "envs": {"LABKIT_PROFILE": profile, "LABKIT_RUN_ID": run_id,
                 **({"LABKIT_RUNS_DIR": RUNS_MOUNT} if bucket else {})},
        "secrets": {s: None for s in SECRETS},
        "setup": SETUP,
        "run": RUN.replace("@LABS@", f"{labs_arg} " if labs_arg else ""),
    }
    if bucket:
        task["file_mounts"] = {RUNS_MOUNT: {"name": bucket, "mode": mount_mode}}
    return task


SETUP = """\
set -euo pipefail
# The GPU tier: CUDA torch and vLLM from PyPI into a venv of their own (vLLM's CPU build
# and the GPU build share the module name `vllm`: never both in one environment).
python3 -m venv ~/labkit-venv
~/labkit-venv/bin/pip install -q -e '.[gpu,test]'
~/labkit-venv/bin/labkit doctor || true
"""

RUN = """\
set -euo pipefail
source ~/labkit-venv/bin/activate
export LABKIT_RUNS_DIR="${LABKIT_RUNS_DIR:-$HOME/labkit-runs}"  # the bucket, when mounted
mkdir -p "$LABKIT_RUNS_DIR"
labkit gpu-check --out "$LABKIT_RUNS_DIR/$LABKIT_RUN_ID.gpu_check.json" || true
# --run-id resumes the same run directory after a preemption: finished labs are skipped.
token=()
if [ -n "${HF_TOKEN:-}" ]; then token=(-p "hf_token=$HF_TOKEN"); fi
labkit run @LABS@--profile "$LABKIT_PROFILE" --run-id "$LABKIT_RUN_ID" "${token[@]}"
"""
