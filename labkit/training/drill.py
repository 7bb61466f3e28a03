"""The fault drill: does a run that lost a rank end where an unbroken run ends?

    from labkit.training.drill import fault_drill
    report = fault_drill(workdir, nproc=2, steps=30, checkpoint_every=10,
                         kill_rank=1, kill_at_step=25)
    report["loss_abs_diff"], report["max_param_abs_diff"], report["passed"]

Two runs with the same seed and settings, each with its own checkpoint directory:
  reference    never interrupted
  interrupted  rank `kill_rank` SIGKILLs itself before step `kill_at_step`; the elastic
               driver restarts every rank, which resume from the last checkpoint and redo
               the steps after it.
Resuming restores the weights, the optimizer's moments, the step (hence the learning
rate), every RNG and each rank's data position, and replays the same batches, so on a CPU
with gloo the two runs should agree bit for bit. We compare the final training loss, the
final validation loss and every weight of the final checkpoints. `tolerance` bounds the
loss difference; on GPUs (non-deterministic kernels, NCCL reduction order) expect ~1e-4.
"""

from __future__ import annotations

from pathlib import Path

from labkit.training import checkpoint
from labkit.training.elastic import run_training


def max_param_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between the weights of two checkpoints."""
    import torch

    wa = torch.load(a / "model.pt", weights_only=True)["model"]
    wb = torch.load(b / "model.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def fault_drill(workdir: str | Path, nproc: int = 2, kill_rank: int = 1,
                kill_at_step: int = 25, max_restarts: int = 1, tolerance: float = 1e-6,
                log=print, **config) -> dict:
    """Run the reference and the interrupted run; return both summaries and the diffs."""
    workdir = Path(workdir)
    steps = config.setdefault("steps", 30)
    every = config.setdefault("checkpoint_every", 10)
    if not 0 < kill_at_step <= steps:
        raise ValueError(f"kill_at_step must be in 1..{steps}, got {kill_at_step}")
    out_dir = config.pop("out_dir", None)  # only the interrupted run's model is exported
    runs = {}
    for name, kill in (("reference", {}),
                       ("interrupted", {"kill_rank": kill_rank, "kill_at_step": kill_at_step,
                                        "out_dir": out_dir})):
        if log:
            log(f"[drill] {name} run: {nproc} ranks, {steps} steps, checkpoint every {every}"
                + (f", rank {kill_rank} killed before step {kill_at_step}" if kill else ""))
        runs[name] = run_training(nproc=nproc, max_restarts=max_restarts if kill else 0,
                                  ckpt_dir=str(workdir / name / "ckpt"), log=log,
                                  **kill, **config)
    ref, bad = runs["reference"], runs["interrupted"]
    loss_diff = abs(ref["final_loss"] - bad["final_loss"])
    val_diff = abs(ref["final_val_loss"] - bad["final_val_loss"])
    param_diff = max_param_diff(checkpoint.latest(workdir / "reference" / "ckpt"),
                                checkpoint.latest(workdir / "interrupted" / "ckpt"))
    return {
        "nproc": nproc, "steps": steps, "checkpoint_every": every, "kill_rank": kill_rank,
        "kill_at_step": kill_at_step, "restarts": bad["restarts"],
        "resumed_from": bad["attempts"][-1].get("resumed_from"),
        "steps_recomputed": _recomputed(bad, kill_at_step),
        "reference_final_loss": ref["final_loss"], "interrupted_final_loss": bad["final_loss"],
        "loss_abs_diff": loss_diff, "val_loss_abs_diff": val_diff,
        "max_param_abs_diff": param_diff, "tolerance": tolerance,
        "passed": bad["restarts"] >= 1 and loss_diff <= tolerance and val_diff <= tolerance,
        "runs": runs,
    }


def _recomputed(summary: dict, kill_at_step: int) -> int:
    """Steps done before the kill that the restart had to do again (lost work)."""
    resumed = summary["attempts"][-1].get("resumed_from")
    last_saved = int(Path(resumed).name.split("-")[1]) if resumed else 0
    return max(0, (kill_at_step - 1) - last_saved)
