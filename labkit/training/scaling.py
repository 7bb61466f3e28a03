"""Weak scaling: the same per-rank batch on 1, 2, 4 ranks; what happens to tokens/s?

    from labkit.training.scaling import scaling_sweep, format_table
    rows = scaling_sweep([1, 2, 4], steps=20)
    print(format_table(rows))

Each rank keeps its batch (batch_size x seq_len tokens), so the global batch grows with the
world size. Perfect scaling would multiply tokens/s by the number of ranks; what you get
is less, for two reasons this table separates:
- communication: the gradient all_reduce (exposed_comm_s, from comm_split.py) grows with
  the number of ranks and is only partly hidden behind backward;
- cores: on a CPU box, ranks x threads > cores means the ranks time-slice the same cores.
  On this project's 2-core machines 4 ranks oversubscribe 2x, so their tokens/s says how
  the machine copes with contention, not how DDP scales. The note under the table says so.
`efficiency` = tokens/s / (ranks x tokens/s at 1 rank); the 1-minute load average before
and after each run is recorded because other processes on a shared machine move these
numbers (a load above the core count means something else was competing for the cores).
"""

from __future__ import annotations

from labkit.training.elastic import run_training


def scaling_sweep(world_sizes=(1, 2, 4), log=None, **config) -> list[dict]:
    """One short run per world size, no checkpoints; rows for a table or a plot."""
    config.setdefault("steps", 20)
    config.setdefault("eval_every", 0)
    rows = []
    for n in world_sizes:
        s = run_training(nproc=n, log=log, **config)
        split = s["comm_split"] or {}
        rows.append({
            "world_size": n, "threads_per_rank": s["threads_per_rank"],
            "cpu_count": s["cpu_count"], "oversubscribed": s["oversubscribed"],
            "global_batch_tokens": s["global_batch_tokens"], "tokens_per_s": s["tokens_per_s"],
            "tokens_per_s_median_step": s["tokens_per_s_median_step"],
            "step_s": s["step_s"], "compute_s": split.get("compute_s"),
            "synced_s": split.get("synced_s"), "exposed_comm_s": split.get("exposed_comm_s"),
            "exposed_comm_share": split.get("exposed_comm_share"),
            "allreduce_s": split.get("allreduce_s"),
            "allreduce_busbw_gbps": split.get("allreduce_busbw_gbps"),
            "load_avg_before": s["load_avg_1m"][0], "load_avg_after": s["load_avg_1m"][1],
            "final_loss": s["final_loss"],
            "note": s["note"],
        })
    base = rows[0]["tokens_per_s"] / rows[0]["world_size"] if rows else None
    for r in rows:
        r["efficiency"] = r["tokens_per_s"] / (r["world_size"] * base) if base else None
    return rows


def _num(v, width: int, digits: int) -> str:
    return f"{v:>{width}.{digits}f}" if isinstance(v, (int, float)) else f"{'-':>{width}}"


def format_table(rows: list[dict]) -> str:
    head = (f"{'ranks':>5} {'thr':>3} {'tokens/s':>9} {'eff':>5} {'step s':>7} "
            f"{'compute s':>9} {'synced s':>8} {'exp.comm':>8} {'allreduce s':>11} "
            f"{'busbw GB/s':>10} {'load 1m':>9}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['world_size']:>5} {r['threads_per_rank']:>3} {_num(r['tokens_per_s'], 9, 0)} "
            f"{_num(r['efficiency'], 5, 2)} {_num(r['step_s'], 7, 3)} "
            f"{_num(r['compute_s'], 9, 3)} {_num(r['synced_s'], 8, 3)} "
            f"{_num(r['exposed_comm_s'], 8, 3)} {_num(r['allreduce_s'], 11, 4)} "
            f"{_num(r['allreduce_busbw_gbps'], 10, 3)} "
            f"{r['load_avg_before']:>4.1f}/{r['load_avg_after']:<4.1f}"
            + ("  OVERSUBSCRIBED" if r["oversubscribed"] else ""))
    notes = sorted({r["note"] for r in rows})
    return "\n".join(lines + ["", *notes])
