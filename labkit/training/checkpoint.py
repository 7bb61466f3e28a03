"""Checkpoints a crash can never half-write, and resuming from the latest complete one.

Layout, one directory per saved step:

    ckpt_dir/step-00000030/model.pt        rank 0: model + optimizer + step + loss history
    ckpt_dir/step-00000030/rank-00001.pt   every rank: its RNG states and data position
    ckpt_dir/step-00000030/manifest.json   written last: step, world size, file sizes

Why rank 0 writes the model and every rank writes its own small file:
- Under DDP every rank holds identical weights and optimizer state (the all_reduce made the
  gradients equal, and every rank applies the same update), so one copy is enough; N ranks
  writing N identical 60 MB files would only cost disk and time.
- RNG states and data positions *differ* per rank. Each rank writes its own (a few KB) so
  nothing has to be gathered through rank 0 - the same reason torch.distributed.checkpoint
  writes one shard per rank. On several nodes ckpt_dir must be a shared file system.

Why a crash cannot leave a torn checkpoint (the order matters):
1. rank 0 creates `.tmp-step-N/`; a barrier makes every rank wait for it;
2. each file is written to a temp name, flushed, fsync'ed, then renamed (rename is atomic);
3. a barrier: every rank's file is on disk;
4. rank 0 writes manifest.json, fsyncs, renames `.tmp-step-N` to `step-N` (atomic for a
   directory), and fsyncs ckpt_dir so the rename itself survives a power cut.
A reader only accepts `step-*` directories whose manifest lists files that exist with the
recorded sizes; a crash anywhere leaves at worst a `.tmp-` directory that is ignored, and
the previous checkpoint stays the latest complete one.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np

from labkit.errors import UserError

STEP_DIR = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"


def _dist():
    """(rank, world_size, barrier) whether or not a process group is running."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist.barrier
    return 0, 1, lambda: None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    """temp file + flush + fsync + rename: the file is complete or absent, never partial."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _torch_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def capture_rng() -> dict:
    """Every random number generator a training step may touch, as plain values.

    Stored as tensors, lists and ints only, so `torch.load(weights_only=True)` can read
    them back without unpickling arbitrary objects.
    """
    import torch

    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, [int(k) for k in key], pos, has_gauss, gauss],
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(ckpt_dir: str | Path, step: int, model_state: dict | None, optim_state: dict | None,
         rank_state: dict, meta: dict | None = None, keep: int = 2) -> Path:
    """Collective: every rank calls it at the same step. Returns the published directory.

    model_state/optim_state are only used on rank 0 (pass None elsewhere); rank_state is
    this rank's own (RNG, data position); meta is small JSON-able info kept with the model.
    """
    rank, world, barrier = _dist()
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"step-{step:08d}"
    tmp = ckpt_dir / f".tmp-step-{step:08d}"
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a run that crashed here
        tmp.mkdir()
    barrier()
    _write_durable(tmp / f"rank-{rank:05d}.pt", _torch_bytes(rank_state))
    if rank == 0:
        _write_durable(tmp / "model.pt", _torch_bytes(
            {"model": model_state, "optimizer": optim_state, "step": step, "meta": meta or {}}))
    barrier()  # every rank's file is durable before the checkpoint becomes visible
    if rank == 0:
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.suffix == ".pt"}
        manifest = {"step": step, "world_size": world, "files": files}
        _write_durable(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step after a restart: replace the old copy
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_dir)
        for old in list_complete(ckpt_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()  # nobody races ahead (or reads) before the checkpoint is published
    return final


def is_complete(path: Path) -> bool:
    """A published step directory whose manifest matches the files on disk."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        return all((path / name).stat().st_size == size
                   for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def list_complete(ckpt_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step, not by file time)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if STEP_DIR.match(p.name) and is_complete(p)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest(ckpt_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None when there is none (a fresh start)."""
    done = list_complete(ckpt_dir)
    return done[-1] if done else None


def load(path: str | Path, rank: int, map_location="cpu",
         world_size: int | None = None) -> tuple[dict, dict]:
    """(model file contents, rank `rank`'s state) of one checkpoint directory.

    Pass the job's world_size when resuming: it must match the one that wrote the files.
    weights_only=True: loading a checkpoint must not execute code hidden in a pickle.
    """
    import torch

    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    world = world_size
    if world is not None and manifest["world_size"] != world:
        raise UserError(
            f"{path} was written by {manifest['world_size']} ranks, this job has {world}; "
            "per-rank RNG and data positions cannot be re-split. Resume with --nproc "
            f"{manifest['world_size']} or start fresh with another --ckpt-dir")
    model = torch.load(path / "model.pt", map_location=map_location, weights_only=True)
    mine = torch.load(path / f"rank-{rank:05d}.pt", map_location="cpu", weights_only=True)
    return model, mine
