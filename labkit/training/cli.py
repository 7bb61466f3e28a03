"""`labkit train`: DDP training of the tiny Llama, the fault drill, and the scaling sweep.

Only the standard library is imported here; torch loads inside the ranks.
"""

from __future__ import annotations

import argparse
import json

from labkit.errors import UserError

DESCRIPTION = """\
Train the tiny Llama with DistributedDataParallel on N local ranks (gloo on CPU, NCCL with
one GPU per rank). Each rank reads its own shard of the corpus; after every backward DDP
all_reduces (averages) the gradients, so all ranks apply the same update and stay identical.
"""

EPILOG = """\
What it prints:
  loss / val       training loss averaged over all ranks; validation loss on fixed held-out
                   windows (the tail of the corpus). Both start near ln(vocab) ~ 8.3.
  tokens/s         global tokens (batch x seq-len x ranks) per second of training steps,
                   warm-up step, evaluation and checkpoint writes excluded
  compute s        forward+backward under ddp.no_sync(): no all_reduce, pure compute
  synced s         forward+backward as in training, with DDP's bucketed all_reduce
  exposed comm     synced - compute: communication that backward did NOT hide
  allreduce s      one bare all_reduce of all gradients (algbw/busbw as nccl-tests)
  attempts         one line per (re)start: which rank died, which checkpoint it resumed from

Checkpoints (--ckpt-dir): every --checkpoint-every steps, written atomically (temp file,
fsync, rename; a step directory only appears once every rank's file is on disk). They hold
the weights, AdamW's moments, the step (hence the learning rate), torch/numpy/python RNG
states and each rank's data position. A new run with the same --ckpt-dir resumes.

Fault drill: --kill-rank R --kill-at-step S makes rank R SIGKILL itself before step S. The
driver stops the other ranks, starts all of them again (up to --max-restarts times, as
torchrun's elastic agent does) and they resume from the last checkpoint. With --compare an
uninterrupted run with the same seed runs too and the final losses are compared.

On a 2-core machine, 4 ranks oversubscribe the cores 2x (each rank gets 1 torch thread):
the ranks then take turns, so tokens/s at 4 ranks measures contention, not DDP scaling.

examples:
  labkit train --steps 50 --out runs/latest/model              2 ranks, export for serving
  labkit train --ckpt-dir ckpt --checkpoint-every 10 --kill-rank 1 --kill-at-step 25 \\
      --max-restarts 1 --compare --json drill.json              the fault drill
  labkit train --scaling 1,2,4 --steps 20 --json scaling.json   weak scaling + comm split
  labkit train --backend nccl --nproc 8 --batch-size 32 --seq-len 512     on a GPU box
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="DDP training of the tiny Llama, with fault drill",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="ranks on this machine (default 2)")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                   help="gloo (CPU) or nccl (one GPU per rank); default: nccl if CUDA")
    p.add_argument("--model", default=None,
                   help="HF model directory to start from (default: the tiny Llama build)")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps (default 50)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="sequences per rank per step; global batch = this x ranks (default 4)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak learning rate: linear warm-up, cosine decay to 10%% (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="data order and RNG seed (default 0)")
    p.add_argument("--eval-every", type=int, default=10,
                   help="validation every N steps and at the end (default 10; 0 = end only)")
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="checkpoint every N steps and at the end (needs --ckpt-dir)")
    p.add_argument("--ckpt-dir", default=None,
                   help="where checkpoints go and are resumed from (default: none)")
    p.add_argument("--out", default=None,
                   help="export the trained model here in HF format (config.json, "
                        "model.safetensors, tokenizer files) for the serving labs")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0,
                   help="DDP gradient bucket size in MB: smaller buckets start all_reduce "
                        "earlier in backward but pay more per-call latency (default 25)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per rank (default: cores // ranks, at least 1)")
    p.add_argument("--probe-iters", type=int, default=3,
                   help="iterations of the compute/communication probe run after training "
                        "(each: one no_sync and one synced forward+backward; 0 skips it)")
    p.add_argument("--kill-rank", type=int, default=None,
                   help="fault drill: this rank SIGKILLs itself (first attempt only)...")
    p.add_argument("--kill-at-step", type=int, default=None, help="...before this step")
    p.add_argument("--max-restarts", type=int, default=None,
                   help="restart all ranks up to K times after a failure "
                        "(default: 1 with --kill-rank, else 0)")
    p.add_argument("--compare", action="store_true",
                   help="with --kill-rank: also run uninterrupted with the same seed and "
                        "compare final losses (checkpoints go to CKPT_DIR/reference and "
                        "CKPT_DIR/interrupted, or a temp directory)")
    p.add_argument("--tolerance", type=float, default=1e-6,
                   help="--compare passes if |loss difference| <= this (default 1e-6)")
    p.add_argument("--scaling", default=None, metavar="N,N,...",
                   help="instead of one run: weak-scaling sweep over these world sizes")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per attempt")
    p.add_argument("--json", default=None, metavar="PATH", help="write the summary as JSON")
    p.set_defaults(func=handle)


def _config(args) -> dict:
    return dict(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                lr=args.lr, seed=args.seed, eval_every=args.eval_every,
                checkpoint_every=args.checkpoint_every, bucket_cap_mb=args.bucket_cap_mb,
                threads=args.threads, comm_probe_iters=args.probe_iters)


def _validate(args) -> None:
    for name in ("nproc", "steps", "batch_size", "seq_len"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if (args.kill_rank is None) != (args.kill_at_step is None):
        raise UserError("the fault drill needs both --kill-rank R and --kill-at-step S")
    if args.kill_rank is not None:
        if not args.compare and not args.ckpt_dir:
            raise UserError("the fault drill resumes from a checkpoint: add --ckpt-dir DIR")
        if not 1 <= args.kill_at_step <= args.steps:
            raise UserError(f"--kill-at-step must be within 1..{args.steps}")
    if args.compare and args.kill_rank is None:
        raise UserError("--compare compares an interrupted run: add --kill-rank/--kill-at-step")


def handle(args) -> int:
    _validate(args)
    if args.scaling:
        from labkit.training.scaling import format_table, scaling_sweep

        sizes = [int(n) for n in args.scaling.split(",") if n.strip()]
        rows = scaling_sweep(sizes, backend=args.backend, model_dir=args.model,
                             timeout=args.timeout, log=None, **_config(args))
        print(format_table(rows))
        _write_json(args.json, {"scaling": rows})
        return 0
    restarts = args.max_restarts if args.max_restarts is not None else (
        1 if args.kill_rank is not None else 0)
    if args.compare:
        import tempfile

        from labkit.training.drill import fault_drill

        workdir = args.ckpt_dir or tempfile.mkdtemp(prefix="labkit-drill-")
        report = fault_drill(workdir, nproc=args.nproc, kill_rank=args.kill_rank,
                             kill_at_step=args.kill_at_step, max_restarts=restarts,
                             tolerance=args.tolerance, backend=args.backend,
                             model_dir=args.model, timeout=args.timeout, out_dir=args.out,
                             **_config(args))
        _print_summary(report["runs"]["interrupted"])
        print(f"\nfault drill: reference final loss {report['reference_final_loss']:.8f}, "
              f"interrupted {report['interrupted_final_loss']:.8f}, |diff| "
              f"{report['loss_abs_diff']:.2e} (val {report['val_loss_abs_diff']:.2e}, max "
              f"weight diff {report['max_param_abs_diff']:.2e}), tolerance "
              f"{report['tolerance']:.0e}: {'PASSED' if report['passed'] else 'FAILED'}; "
              f"{report['steps_recomputed']} step(s) recomputed after the restart")
        _write_json(args.json, report)
        return 0 if report["passed"] else 1
    from labkit.training.elastic import run_training

    summary = run_training(nproc=args.nproc, backend=args.backend, model_dir=args.model,
                           max_restarts=restarts, timeout=args.timeout, ckpt_dir=args.ckpt_dir,
                           out_dir=args.out, kill_rank=args.kill_rank,
                           kill_at_step=args.kill_at_step, **_config(args))
    _print_summary(summary)
    _write_json(args.json, summary)
    return 0


def _print_summary(s: dict) -> None:
    print(f"\n{s['world_size']} rank(s), {s['backend']}, {s['device']}: final step "
          f"{s['final_step']}, loss {s['final_loss']:.4f}, val loss {s['final_val_loss']:.4f}")
    if s["tokens_per_s"]:
        ph = s["phases_s"]
        print(f"tokens/s {s['tokens_per_s']:,.0f} over {s['steps_timed']} step(s) of the last "
              f"attempt; median step {s['step_s']:.3f} s = forward {ph['forward']:.3f} + "
              f"backward incl. all_reduce {ph['backward_incl_allreduce']:.3f} + optimizer "
              f"{ph['optimizer_and_loss_allreduce']:.3f} s")
    c = s.get("comm_split")
    if c:
        print(f"comm/compute: compute {c['compute_s']:.3f} s, synced {c['synced_s']:.3f} s, "
              f"exposed comm {c['exposed_comm_s']:.3f} s ({c['exposed_comm_share']:.0%}); "
              f"bare all_reduce of {c['grad_bytes'] / 1e6:.1f} MB {c['allreduce_s']:.4f} s "
              f"(busbw {c['allreduce_busbw_gbps']:.2f} GB/s)")
    for a in s["attempts"]:
        print(f"attempt {a['attempt']}: " + (
            f"ok, resumed from {a.get('resumed_from') or 'scratch'}" if a["ok"] else
            f"rank {a['failed_rank']} died (exit code {a['exitcode']}), restart from "
            f"{a['restart_from'] or 'scratch'}") + f" ({a['wall_s']:.0f} s)")
    print(s["note"])
    if s.get("export_dir"):
        print(f"exported HF model to {s['export_dir']}")


def _write_json(path: str | None, obj) -> None:
    if path:
        from labkit.runs import atomic_write_json

        atomic_write_json(path, obj)
        print(f"wrote {path}")
