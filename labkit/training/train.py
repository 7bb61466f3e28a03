"""One rank of a DistributedDataParallel training run of the tiny Llama.

Two ways in, same code:
- `labkit train` / `labkit.training.elastic.run_training` start N ranks with the
  loopback-only launcher and call `train_worker(config)` in each (restarting on failure);
- on a cluster, torchrun starts the ranks:  torchrun --nnodes 2 --nproc-per-node 8 ...
  -m labkit.training.train --backend nccl --ckpt-dir /shared/ckpt   (see `main()`).

One step, and why each part is there:
  x, y = this rank's next batch        every rank reads its own shard (data.py)
  loss = cross_entropy(model(x), y)    forward on the local batch only
  loss.backward()                      DDP all_reduces (averages) gradient buckets while
                                       backward is still running: comm overlaps compute
  clip, optimizer.step()               every rank now has identical gradients, so
                                       identical updates keep the replicas identical
The learning rate is a pure function of the step (warm-up then cosine), so a checkpoint
needs only the step number to restore the schedule. The loss we log is all_reduced too,
so the curve is the average over the whole global batch, not one rank's view.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from labkit.training import checkpoint
from labkit.training.comm_split import measure_comm_split
from labkit.training.data import ShardedBatches, train_val_split, val_windows
from labkit.training.export import export_hf


@dataclass
class TrainConfig:
    model_dir: str                  # HF directory to start from (the built tiny Llama)
    tokens_path: str                # the tokenized corpus (.npy, from data.load_token_stream)
    ckpt_dir: str | None = None     # None: no checkpoints, no resume
    out_dir: str | None = None      # export the trained model here (HF format)
    steps: int = 50
    batch_size: int = 4             # per rank: the global batch is batch_size x world_size
    seq_len: int = 128
    lr: float = 1e-3
    warmup_steps: int = 5
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 10      # 0: only at the end
    keep_checkpoints: int = 2
    eval_every: int = 10            # 0: only at the end
    eval_windows: int = 32          # fixed validation windows, shared out over the ranks
    bucket_cap_mb: float = 25.0     # DDP gradient bucket size (torch's default is 25)
    threads: int | None = None      # torch threads per rank; None: cores // local ranks
    comm_probe_iters: int = 3       # 0 skips the compute/communication probe
    kill_rank: int | None = None    # fault drill: this rank SIGKILLs itself...
    kill_at_step: int | None = None  # ...before running this step, on the first attempt
    attempt: int = 0                # which (re)start this is; set by the elastic driver
    log_every: int = 10

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 10 % of it at the last step."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / max(1, cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def lm_loss(model, x, y):
    """Next-token cross-entropy. y is already x shifted by one (data.py), so we do not
    pass labels= to the HF model, which would shift a second time."""
    import torch.nn.functional as F

    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))


def evaluate(model, vx, vy, device, batch: int = 8) -> float:
    """Mean validation loss over every rank's share of the fixed validation windows."""
    import torch
    import torch.distributed as dist

    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of losses, windows]
    model.eval()
    with torch.no_grad():
        for i in range(0, len(vx), batch):
            x = torch.from_numpy(vx[i:i + batch]).to(device)
            y = torch.from_numpy(vy[i:i + batch]).to(device)
            total[0] += lm_loss(model, x, y).double() * len(x)
            total[1] += len(x)
    model.train()
    dist.all_reduce(total)
    return (total[0] / total[1]).item()


def train_worker(config: dict) -> dict:
    """Run (or resume) training on this rank; the process group is already initialised."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # N ranks x "Loading weights" bars drown the log
    cfg = TrainConfig.from_dict(config)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device(f"cuda:{local_rank}" if on_gpu else "cpu")
    # N ranks x all cores threads each would fight over the cores: give each a fair share.
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    ids = np.load(cfg.tokens_path, mmap_mode="r")  # shared page cache, not N copies
    train_ids, val_ids = train_val_split(ids)
    batches = ShardedBatches(train_ids, rank, world, cfg.batch_size, cfg.seq_len, cfg.seed)
    vx, vy = val_windows(val_ids, cfg.seq_len, cfg.eval_windows, rank, world)

    model = LlamaForCausalLM.from_pretrained(cfg.model_dir, dtype=torch.float32).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                                  weight_decay=cfg.weight_decay)
    start, history, resumed_from = 0, {"loss": [], "val": []}, None
    found = checkpoint.latest(cfg.ckpt_dir) if cfg.ckpt_dir else None
    if found is not None:
        saved, mine = checkpoint.load(found, rank, map_location=device, world_size=world)
        model.load_state_dict(saved["model"])  # before wrapping: DDP then broadcasts rank 0's
        optimizer.load_state_dict(saved["optimizer"])
        checkpoint.restore_rng(mine["rng"])
        batches.load_state_dict(mine["data"])
        start, history, resumed_from = saved["step"], saved["meta"]["history"], str(found)
        print(f"resumed from {found.name}: step {start}, data position epoch "
              f"{batches.epoch} cursor {batches.cursor}", flush=True)
    # The only buffers (rotary inv_freq) are constants: syncing them before every forward,
    # DDP's default, would add a broadcast collective per step for nothing.
    no_buffer_sync = ({"forward_sync_buffers": False}  # torch >= 2.13 spelling
                      if "forward_sync_buffers" in inspect.signature(DDP).parameters
                      else {"broadcast_buffers": False})
    ddp = DDP(model, device_ids=[local_rank] if on_gpu else None,
              bucket_cap_mb=cfg.bucket_cap_mb, **no_buffer_sync)

    def sync():
        if on_gpu:
            torch.cuda.synchronize(device)

    timings, saved_steps = [], []
    tokens_per_step = cfg.batch_size * cfg.seq_len * world
    for step in range(start + 1, cfg.steps + 1):
        if cfg.attempt == 0 and rank == cfg.kill_rank and step == cfg.kill_at_step:
            print(f"fault drill: rank {rank} kills itself (SIGKILL) before step {step}",
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no traceback: like an OOM kill
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        t0 = time.perf_counter()
        x, y = (torch.from_numpy(a).to(device) for a in batches.next())
        sync()
        t1 = time.perf_counter()
        loss = lm_loss(ddp, x, y)
        sync()
        t2 = time.perf_counter()
        loss.backward()  # includes DDP's bucketed all_reduce, overlapped with backward
        sync()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logged = loss.detach().double()
        dist.all_reduce(logged)
        sync()
        t4 = time.perf_counter()
        timings.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        history["loss"].append([step, logged.item() / world])
        val = ""
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            history["val"].append([step, evaluate(model, vx, vy, device)])
            val = f" val {history['val'][-1][1]:.4f}"
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps or val):
            print(f"step {step}/{cfg.steps} loss {history['loss'][-1][1]:.4f}{val} "
                  f"lr {lr_at(step, cfg):.2e} step {t4 - t0:.3f} s "
                  f"{tokens_per_step / (t4 - t0):,.0f} tokens/s", flush=True)
        if cfg.ckpt_dir and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                             or step == cfg.steps):
            checkpoint.save(
                cfg.ckpt_dir, step,
                model.state_dict() if rank == 0 else None,
                optimizer.state_dict() if rank == 0 else None,
                {"rng": checkpoint.capture_rng(), "data": batches.state_dict()},
                meta={"history": history, "config": asdict(cfg)}, keep=cfg.keep_checkpoints)
            saved_steps.append(step)

    split = None
    if cfg.comm_probe_iters > 0:
        # A separate sampler (other seed): the probe must not move the real data position.
        probe = ShardedBatches(train_ids, rank, world, cfg.batch_size, cfg.seq_len, cfg.seed + 1)
        px, py = (torch.from_numpy(a).to(device) for a in probe.next())
        split = measure_comm_split(ddp, lm_loss, px, py, iters=cfg.comm_probe_iters)

    result = {"rank": rank, "world_size": world, "threads": threads, "device": str(device),
              "attempt": cfg.attempt, "start_step": start, "resumed_from": resumed_from,
              "steps_run": len(timings), "checkpoints": saved_steps,
              "data_position": batches.state_dict(), **_throughput(timings, tokens_per_step),
              "comm_split": split}
    if rank == 0:
        result["history"] = history
        if cfg.out_dir:
            export_hf(model, cfg.model_dir, cfg.out_dir,
                      {"config": asdict(cfg), "world_size": world, "history": history})
            result["export_dir"] = cfg.out_dir
    return result


def _throughput(timings: list[tuple], tokens_per_step: int) -> dict:
    """Medians per phase, and tokens/s over this attempt's steps minus the first (warm-up:
    allocator, DDP bucket rebuild). Eval and checkpoint time are excluded."""
    if not timings:
        return {"tokens_per_s": None, "tokens_per_s_median_step": None, "step_s": None,
                "phases_s": None}
    steady = timings[1:] or timings
    totals = [sum(t) for t in steady]
    med = [float(np.median([t[i] for t in steady])) for i in range(4)]
    return {"tokens_per_s": tokens_per_step * len(steady) / sum(totals),
            # the median step ignores the odd step another process on the machine slowed down
            "tokens_per_s_median_step": tokens_per_step / float(np.median(totals)),
            "step_s": float(np.median(totals)),
            "phases_s": dict(zip(("data", "forward", "backward_incl_allreduce",
                                  "optimizer_and_loss_allreduce"), med))}


def main(argv: list[str] | None = None) -> int:
    """Entry point for torchrun (each rank runs this). Restarts come from torchrun's
    --max-restarts; every start resumes from the latest complete checkpoint."""
    import argparse
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    p = argparse.ArgumentParser(prog="python -m labkit.training.train",
                                description="one DDP rank of the tiny-Llama training (torchrun)")
    p.add_argument("--backend", default="nccl" if torch.cuda.is_available() else "gloo")
    p.add_argument("--model-dir", default=None, help="default: build/find the tiny Llama")
    for f in fields(TrainConfig):
        if f.name not in ("model_dir", "tokens_path", "attempt"):
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default)
    args = p.parse_args(argv)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(args.backend, timeout=timedelta(minutes=10))  # env:// from torchrun
    try:
        from labkit.models import build_tiny_llama
        from labkit.training.data import load_token_stream

        if local_rank == 0:  # one tokenization per node; the others find the cached file
            model_dir = args.model_dir or str(build_tiny_llama(verbose=False))
            load_token_stream(model_dir)
        dist.barrier()
        model_dir = args.model_dir or str(build_tiny_llama(verbose=False))
        config = {k: v for k, v in vars(args).items() if k != "backend"}
        config.update(model_dir=model_dir, tokens_path=str(load_token_stream(model_dir)),
                      attempt=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)))
        result = train_worker(config)
        if result["rank"] == 0:
            print(f"done: {result['steps_run']} steps, {result['tokens_per_s']} tokens/s")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
