"""Run a training job on N local ranks and restart it when a rank dies, like torchrun's
elastic agent does.

    from labkit.training.elastic import run_training
    summary = run_training(nproc=2, steps=40, ckpt_dir="ckpt", max_restarts=1,
                           kill_rank=1, kill_at_step=25)        # the fault drill
    summary["attempts"]     # [{"attempt": 0, "ok": False, "failed_rank": 1, ...}, {... True}]

What an elastic restart is (and is not): when any rank fails, the others are stuck in a
collective waiting for it, so the launcher stops *every* rank; the agent then starts a
whole new group (fresh rendezvous, fresh processes) and each rank resumes from the latest
complete checkpoint. Work since that checkpoint is recomputed - checkpoint more often to
lose less, at the price of more time spent writing. The world size stays the same here
(torchrun can also shrink or grow it between --nnodes MIN:MAX; our per-rank data shards
and RNG states would then need re-splitting, which this teaching version refuses).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from labkit.collectives.launch import RankFailed, default_backend, launch
from labkit.errors import UserError
from labkit.models import build_tiny_llama
from labkit.training import checkpoint
from labkit.training.data import load_token_stream
from labkit.training.train import TrainConfig

WORKER = "labkit.training.train:train_worker"


def prepare(model_dir: str | Path | None = None) -> tuple[str, str]:
    """(model directory, tokenized corpus .npy), built once here so ranks only read them."""
    model_dir = Path(model_dir) if model_dir else build_tiny_llama(verbose=False)
    return str(model_dir), str(load_token_stream(model_dir))


def run_training(nproc: int = 2, backend: str | None = None, model_dir=None,
                 max_restarts: int = 0, timeout: float = 1800, log=print, **config) -> dict:
    """Train on `nproc` local ranks; on a rank failure restart up to `max_restarts` times.

    `config` holds TrainConfig fields (steps, batch_size, seq_len, lr, seed, ckpt_dir,
    checkpoint_every, out_dir, kill_rank, kill_at_step, ...). Returns a summary dict: loss
    curves, tokens/s, the compute/communication split, and one entry per attempt.
    """
    backend = backend or default_backend()
    model_dir, tokens = prepare(model_dir)
    cfg = TrainConfig(model_dir=model_dir, tokens_path=tokens, **config)
    if cfg.kill_rank is not None and not 0 <= cfg.kill_rank < nproc:
        raise UserError(f"--kill-rank {cfg.kill_rank} does not exist with --nproc {nproc}")
    load_before = os.getloadavg()[0]
    attempts, t_start = [], time.monotonic()
    for attempt in range(max_restarts + 1):
        cfg.attempt = attempt
        t0 = time.monotonic()
        try:
            results = launch(WORKER, nproc=nproc, backend=backend,
                             args={"config": asdict(cfg)}, timeout=timeout, log=log)
        except RankFailed as e:
            resume = checkpoint.latest(cfg.ckpt_dir) if cfg.ckpt_dir else None
            attempts.append({"attempt": attempt, "ok": False, "failed_rank": e.rank,
                             "exitcode": e.exitcode, "wall_s": time.monotonic() - t0,
                             "restart_from": resume.name if resume else None})
            if attempt == max_restarts:
                raise UserError(f"training failed and --max-restarts {max_restarts} is used "
                                f"up.\n{e}") from e
            if log:
                log(f"[elastic] rank {e.rank} failed (exit code {e.exitcode}); restart "
                    f"{attempt + 1}/{max_restarts}, resuming from "
                    f"{resume.name if resume else 'scratch (no checkpoint yet)'}")
            continue
        attempts.append({"attempt": attempt, "ok": True, "wall_s": time.monotonic() - t0,
                         "resumed_from": results[0]["resumed_from"]})
        break
    return summarize(results, attempts, cfg, nproc, backend, load_before,
                     time.monotonic() - t_start)


def summarize(results: list[dict], attempts: list[dict], cfg, nproc: int, backend: str,
              load_before: float, wall_s: float) -> dict:
    r0 = results[0]
    hist = r0["history"]
    cores = os.cpu_count() or 1
    threads = r0["threads"]
    oversub = backend == "gloo" and nproc * threads > cores
    note = (f"{nproc} ranks x {threads} thread(s) on {cores} cores: "
            + (f"oversubscribed {nproc * threads / cores:.1f}x - ranks take turns on the "
               "cores, so this measures time-slicing, not parallel speed-up"
               if oversub else "one thread per core or fewer"))
    return {
        "world_size": nproc, "backend": backend, "device": r0["device"],
        "threads_per_rank": threads, "cpu_count": cores, "oversubscribed": oversub,
        "note": note, "load_avg_1m": [load_before, os.getloadavg()[0]],
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("attempt",)},
        "global_batch_tokens": cfg.batch_size * cfg.seq_len * nproc,
        "attempts": attempts, "restarts": len(attempts) - 1, "wall_s": wall_s,
        "final_step": hist["loss"][-1][0] if hist["loss"] else None,
        "final_loss": hist["loss"][-1][1] if hist["loss"] else None,
        "final_val_loss": hist["val"][-1][1] if hist["val"] else None,
        "loss_curve": hist["loss"], "val_curve": hist["val"],
        # throughput of the last attempt only (earlier attempts' timings died with them)
        "steps_timed": r0["steps_run"], "tokens_per_s": r0["tokens_per_s"],
        "tokens_per_s_median_step": r0["tokens_per_s_median_step"],
        "step_s": r0["step_s"], "phases_s": r0["phases_s"], "comm_split": r0["comm_split"],
        "data_positions": [r["data_position"] for r in results],
        "checkpoints": r0["checkpoints"], "export_dir": r0.get("export_dir"),
    }
