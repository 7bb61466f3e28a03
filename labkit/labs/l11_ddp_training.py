"""What the DDP lab (labs/11) shows, read from `run_training` summaries and checkpoints.

    plan = plan_backend("auto", 0)              # gloo on CPU, nccl on 2+ GPUs, and why
    steps = StepLog(echo_every=10)              # pass as run_training(log=steps, log_every=1)
    ref = run_training(..., log=steps)          # steps.records: every step rank 0 printed
    comm_rows(ref)                              # the step's phases and the no_sync probe
    checkpoint_contents(latest_dir)             # what one checkpoint holds, file by file
    torn_write_demo(scratch)                    # which directory a resume would pick
    compare_runs(ref, bad, ...)                 # the fault drill's verdict
    rec.scalars(scaling_scalars(...))           # what the lab records, one entry per idea
    rec.scalars(drill_scalars(...))

Nothing here measures: the numbers come from the training ranks (train.py, comm_split.py)
or from files on disk, so the notebook stays thin and records only what a run produced.
Figures live in l11_ddp_training_plots.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from labkit.errors import UserError
from labkit.runs import NotMeasured
from labkit.training import checkpoint
from labkit.training.drill import max_param_diff

# rank 0's line in train.py: "step 7/30 loss 6.1234 val 6.0000 lr 1.00e-03 step 1.337 s 766
# tokens/s" (val only on evaluation steps), prefixed "[rank 0] " by the launcher.
STEP_LINE = re.compile(r"^\[rank 0\] step (\d+)/(\d+) loss ([\d.]+)(?: val ([\d.]+))? lr \S+ "
                       r"step ([\d.]+) s ([\d,]+) tokens/s")


def plan_backend(backend: str, nproc: int, gpus: int | None = None) -> dict:
    """Which backend and how many ranks this machine can run, and what it cannot measure.

    "auto" picks nccl with 2+ CUDA GPUs. nproc 0 means one rank per GPU (nccl) or 2 (gloo).
    NCCL needs one GPU per rank and the drill needs 2+ ranks, so with fewer GPUs we fall
    back to gloo on 2 CPU ranks and say why in `nccl_not_measured`.
    """
    if backend not in ("auto", "gloo", "nccl"):
        raise UserError(f"backend must be auto, gloo or nccl, not {backend!r}")
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    want_nccl = backend == "nccl" or (backend == "auto" and gpus >= 2)
    ranks = nproc or (gpus if want_nccl else 2)
    if want_nccl and 2 <= ranks <= gpus:
        return dict(backend="nccl", nproc=ranks, gpus=gpus, nccl_not_measured=None)
    if want_nccl:
        why = (f"{gpus} CUDA GPU(s) visible, {ranks} rank(s) asked: NCCL needs one GPU per "
               "rank and the drill needs 2+ ranks, so the lab fell back to gloo on 2 CPU ranks")
        return dict(backend="gloo", nproc=2, gpus=gpus, nccl_not_measured=why)
    why = ("the lab trained on gloo with CPU processes (the CPU tier); NCCL needs CUDA GPUs, "
           "one per rank")
    return dict(backend="gloo", nproc=ranks, gpus=gpus, nccl_not_measured=why)


def scaling_sizes(sizes: list[int], plan: dict) -> tuple[list[int], str | None]:
    """The sweep's world sizes this machine can run; with nccl, one GPU per rank."""
    if plan["backend"] != "nccl":
        return list(sizes), None
    kept = [n for n in sizes if n <= plan["gpus"]]
    dropped = [n for n in sizes if n > plan["gpus"]]
    why = (f"world size(s) {dropped} skipped: {plan['gpus']} GPU(s) visible and NCCL needs "
           "one GPU per rank") if dropped else None
    return kept, why


class StepLog:
    """A `log=` callback for run_training: keeps rank 0's step lines, echoes a few.

    Every restart of the elastic driver is announced by an "[elastic]" line, so the records
    of attempt 0 (the one a rank died in) stay apart from those of the restarted attempt:
    the drill's figure shows the steps that were computed twice.
    """

    def __init__(self, echo_every: int = 10, echo=print):
        self.records: list[dict] = []
        self.attempt = 0
        self.echo_every, self.echo = echo_every, echo

    def __call__(self, line: str) -> None:
        m = STEP_LINE.match(line)
        if m is None:
            if line.startswith("[elastic]"):
                self.attempt += 1
            if self.echo:  # restarts, the kill, "resumed from", warnings: always worth seeing
                self.echo(line)
            return
        step, total = int(m.group(1)), int(m.group(2))
        self.records.append(dict(attempt=self.attempt, step=step, loss=float(m.group(3)),
                                 val=float(m.group(4)) if m.group(4) else None,
                                 step_s=float(m.group(5)),
                                 tokens_per_s=float(m.group(6).replace(",", ""))))
        if self.echo and (step == total or (self.echo_every and step % self.echo_every == 0)):
            self.echo(line)

    def attempt_records(self, attempt: int) -> list[dict]:
        return [r for r in self.records if r["attempt"] == attempt]


def comm_rows(summary: dict) -> list[dict]:
    """The median training step by phase, then the no_sync probe, in seconds."""
    ph, c, n = summary["phases_s"] or {}, summary["comm_split"] or {}, summary["world_size"]
    rows = [
        ("median step", summary["step_s"], "rank 0's median step (phases below are medians "
         "too, so they need not add up exactly)"),
        ("  forward", ph.get("forward"), "model(x) and the loss on this rank's batch"),
        ("  backward incl. all_reduce", ph.get("backward_incl_allreduce"),
         "gradients; DDP all_reduces each bucket as soon as it is ready"),
        ("  optimizer + loss all_reduce", ph.get("optimizer_and_loss_allreduce"),
         "clip, AdamW update, averaging the logged loss"),
        ("compute (no_sync)", c.get("compute_s"),
         "forward+backward with DDP's all_reduce switched off"),
        ("synced", c.get("synced_s"), "forward+backward as in training"),
        ("exposed communication", c.get("exposed_comm_s"),
         "synced - compute: the all_reduce time backward did not hide"),
        ("bare all_reduce of all gradients", c.get("allreduce_s"),
         f"{c.get('grad_bytes', 0) / 1e6:.1f} MB in one call, {n} ranks, no overlap"),
    ]
    return [dict(part=p, seconds=round(s, 4) if s is not None else None, meaning=m)
            for p, s, m in rows]


def scaling_table(rows: list[dict]) -> list[dict]:
    """The sweep's rows without the long note, plus efficiency from median steps (a slow
    step caused by another process on a shared machine moves the mean, not the median)."""
    keep = ("world_size", "threads_per_rank", "oversubscribed", "global_batch_tokens",
            "tokens_per_s", "tokens_per_s_median_step", "efficiency", "step_s", "compute_s",
            "exposed_comm_s", "exposed_comm_share", "allreduce_s", "allreduce_busbw_gbps",
            "load_avg_before", "load_avg_after")
    base = rows[0]["tokens_per_s_median_step"] / rows[0]["world_size"] if rows else None
    out = []
    for r in rows:
        row = {k: _round(r.get(k)) for k in keep}
        row["efficiency_median_step"] = _round(
            r["tokens_per_s_median_step"] / (r["world_size"] * base) if base else None)
        out.append(row)
    return out


def scaling_scalars(table: list[dict], skipped: str | None, plan: dict, sizes: list[int],
                    asked: list[int], cpu_count: int) -> dict:
    """The weak-scaling sweep for rec.scalars: tokens/s and efficiency per world size, and
    why a size was not run (skipped by the plan, or 4 gloo ranks left out on a small box)."""
    out = {}
    for r in table:
        w = r["world_size"]
        out[f"scaling_tokens_per_s_{w}"] = (
            round(r["tokens_per_s_median_step"], 1), "tokens/s",
            f"median step, {r['threads_per_rank']} thread(s)/rank"
            + (", oversubscribed" if r["oversubscribed"] else ""))
        out[f"scaling_efficiency_{w}"] = (r["efficiency_median_step"], "",
                                          "tokens/s / (ranks x tokens/s at 1 rank), median steps")
    if skipped:
        out["scaling_skipped"] = NotMeasured(skipped)
    if plan["backend"] == "gloo" and 4 not in sizes:
        out["scaling_tokens_per_s_4"] = NotMeasured(
            f"not run (scaling_world_sizes {asked}); on this {cpu_count}-core machine 4 ranks "
            "would oversubscribe the cores and measure time-slicing, not scaling")
    return out


def drill_scalars(report: dict, interrupted: dict, kill_rank: int, kill_at_step: int,
                  tolerance: float) -> dict:
    """The fault drill for rec.scalars: what was killed, what the restart redid, and how far
    the interrupted run ended from the uninterrupted one (compare_runs' report)."""
    return {
        "drill_kill_rank": kill_rank,
        "drill_kill_at_step": (kill_at_step, "", "the rank SIGKILLed itself before this step"),
        "drill_exitcode": (interrupted["attempts"][0].get("exitcode"), "",
                           "-9: killed by SIGKILL"),
        "drill_restarts": report["restarts"],
        "drill_resumed_step": (report["resumed_step"], "",
                               f"the latest complete checkpoint when rank {kill_rank} died"),
        "drill_steps_recomputed": (report["steps_recomputed"], "",
                                   "steps run before the kill and again after the restart"),
        "drill_reference_final_loss": report["reference_final_loss"],
        "drill_interrupted_final_loss": report["interrupted_final_loss"],
        "drill_loss_abs_diff": (report["loss_abs_diff"], "", "final training loss"),
        "drill_val_loss_abs_diff": report["val_loss_abs_diff"],
        "drill_curve_max_abs_diff": (report["curve_max_abs_diff"], "",
                                     f"over all {report['curve_steps_compared']} steps"),
        "drill_max_param_abs_diff": (report["max_param_abs_diff"], "",
                                     "largest |weight difference| of the final checkpoints"),
        "drill_tolerance": tolerance,
        "drill_result": ("passed" if report["passed"] else "failed", "",
                         f"restarted {report['restarts']}x and |final loss diff| <= "
                         f"{tolerance:g}"),
    }


def _round(v, digits: int = 4):
    return round(v, digits) if isinstance(v, float) else v


def checkpoint_contents(path: str | Path) -> list[dict]:
    """One row per item of one checkpoint directory: which file, what it holds, how big."""
    import json

    import torch

    path = Path(path)
    manifest = json.loads((path / checkpoint.MANIFEST).read_text())
    saved = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    n_params = sum(v.numel() for v in saved["model"].values())
    opt = saved["optimizer"]
    moments = sorted({k for s in opt["state"].values() for k in s})
    group = opt["param_groups"][0]
    size = (path / "model.pt").stat().st_size
    rows = [
        dict(file="model.pt", bytes=size, item="model",
             holds=f"{len(saved['model'])} tensors, {n_params:,} parameters (rank 0 only: "
                   "every rank holds the same weights)"),
        dict(file="model.pt", bytes=size, item="optimizer",
             holds=f"AdamW state of {len(opt['state'])} tensors ({', '.join(moments)}); "
                   f"betas {tuple(group['betas'])}, weight decay {group['weight_decay']}"),
        dict(file="model.pt", bytes=size, item="step", holds=f"{saved['step']} (sets the "
             "learning rate: warm-up + cosine is a function of the step)"),
        dict(file="model.pt", bytes=size, item="meta",
             holds=f"loss history ({len(saved['meta']['history']['loss'])} steps) and the "
                   "training config"),
    ]
    for rank in range(manifest["world_size"]):
        f = path / f"rank-{rank:05d}.pt"
        mine = torch.load(f, map_location="cpu", weights_only=True)
        d = mine["data"]
        rows.append(dict(file=f.name, bytes=f.stat().st_size, item="rng",
                         holds="generator states: " + ", ".join(sorted(mine["rng"]))))
        rows.append(dict(file=f.name, bytes=f.stat().st_size, item="data position",
                         holds=f"rank {d['rank']}: epoch {d['epoch']}, cursor {d['cursor']} "
                               f"(windows of its shard already drawn this epoch)"))
    rows.append(dict(file=checkpoint.MANIFEST, bytes=(path / checkpoint.MANIFEST).stat().st_size,
                     item="manifest", holds=f"step {manifest['step']}, world size "
                     f"{manifest['world_size']}, the size of every file; written last"))
    return rows


def torn_write_demo(scratch: str | Path) -> dict:
    """Three directories a crash can leave behind, and which one a resume picks.

    step 10: a complete checkpoint; .tmp-step 20: a crash while writing (never renamed);
    step 30: published, but model.pt lost its tail afterwards (manifest sizes disagree).
    Runs in this process with no process group (world size 1), on a 4-number "model".
    """
    import torch

    scratch = Path(scratch)
    state = {"w": torch.arange(4.0)}
    checkpoint.save(scratch, 10, state, {}, {"data": {"cursor": 40}}, keep=0)
    torn = scratch / ".tmp-step-00000020"
    torn.mkdir(parents=True, exist_ok=True)
    (torn / ".model.pt.tmp").write_bytes(b"half a file")  # what a crash mid-write leaves
    checkpoint.save(scratch, 30, state, {}, {"data": {"cursor": 120}}, keep=0)
    model = scratch / "step-00000030" / "model.pt"
    model.write_bytes(model.read_bytes()[:100])
    found = checkpoint.latest(scratch)
    return {"on_disk": sorted(p.name for p in scratch.iterdir()),
            "complete": [p.name for p in checkpoint.list_complete(scratch)],
            "resume_from": found.name if found else None}


def _step_of(path: str | None) -> int:
    return int(Path(path).name.split("-")[1]) if path else 0


def compare_runs(reference: dict, interrupted: dict, ref_ckpt: str | Path,
                 bad_ckpt: str | Path, kill_rank: int, kill_at_step: int,
                 tolerance: float) -> dict:
    """The fault drill's verdict (as drill.fault_drill reports it), for two runs the lab ran
    itself: the main training run is the uninterrupted reference, so it is trained once."""
    resumed = interrupted["attempts"][-1].get("resumed_from")
    ref_curve = dict((s, v) for s, v in reference["loss_curve"])
    bad_curve = dict((s, v) for s, v in interrupted["loss_curve"])
    same_steps = sorted(set(ref_curve) & set(bad_curve))
    loss_diff = abs(reference["final_loss"] - interrupted["final_loss"])
    val_diff = abs(reference["final_val_loss"] - interrupted["final_val_loss"])
    return {
        "kill_rank": kill_rank, "kill_at_step": kill_at_step,
        "restarts": interrupted["restarts"], "resumed_from": resumed,
        "resumed_step": _step_of(resumed),
        # steps done before the kill that the restart had to do again (lost work)
        "steps_recomputed": max(0, kill_at_step - 1 - _step_of(resumed)),
        "reference_final_loss": reference["final_loss"],
        "interrupted_final_loss": interrupted["final_loss"],
        "loss_abs_diff": loss_diff, "val_loss_abs_diff": val_diff,
        "curve_max_abs_diff": max(abs(ref_curve[s] - bad_curve[s]) for s in same_steps),
        "curve_steps_compared": len(same_steps),
        "max_param_abs_diff": max_param_diff(checkpoint.latest(ref_ckpt),
                                             checkpoint.latest(bad_ckpt)),
        "tolerance": tolerance,
        "passed": (interrupted["restarts"] >= 1 and loss_diff <= tolerance
                   and val_diff <= tolerance),
        "restart_wall_s": [round(a["wall_s"], 1) for a in interrupted["attempts"]],
    }
