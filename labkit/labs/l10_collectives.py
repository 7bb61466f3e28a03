"""What the collectives lab shows: peaks, fits and extrapolations of a `labkit collectives` run.

    report = run_collectives(...)                   # collectives.py
    plan = plan_backend("nccl", 0, 8 << 30)         # what this machine can actually run
    peak_busbw(report)                              # one row per op: best busbw, at which size
    fig = plot_fits(report, fit_rows(report["rows"]))
    rows = prediction_rows([1 << 20, 1 << 30], intra, inter, model="modelled: ...")

Everything here reads a report or a fit; nothing measures, so the notebook stays thin and the
numbers it records come only from the run itself or from a model it labels as such.
"""

from __future__ import annotations

import math

from labkit.collectives.alpha_beta import (
    AlphaBeta,
    Link,
    link_from_allreduce_fit,
    plot_fit,
    predict_ring_vs_tree,
)
from labkit.collectives.table import human_bytes
from labkit.errors import UserError

CPU_TIER_MAX_BYTES = 4 << 20  # gloo on a laptop: larger sizes only add minutes, not insight


def plan_backend(backend: str, nproc: int, max_bytes: int, gpus: int | None = None) -> dict:
    """Which backend, how many ranks and up to which size this machine can run.

    backend "auto" picks nccl with 2+ CUDA GPUs, else gloo. nproc 0 means one rank per GPU
    (nccl) or 2 (gloo). NCCL needs one GPU per rank and a collective needs 2+ ranks, so with
    fewer GPUs the plan falls back to the CPU tier (gloo, 2 ranks, at most 4 MiB) and says why
    in `nccl_not_measured`, which the lab records instead of any NCCL number.
    """
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if backend not in ("auto", "gloo", "nccl"):
        raise UserError(f"backend must be auto, gloo or nccl, not {backend!r}")
    want_nccl = backend == "nccl" or (backend == "auto" and gpus >= 2)
    ranks = nproc or (gpus if want_nccl else 2)
    if want_nccl and gpus >= 2 and ranks >= 2:
        return dict(backend="nccl", nproc=ranks, max_bytes=max_bytes, nccl_not_measured=None)
    why = ("the lab ran gloo on CPU processes (the CPU tier)" if backend != "nccl" else
           f"{gpus} CUDA GPU(s) visible, {ranks} rank(s) asked; NCCL needs one GPU per rank "
           f"and a collective 2+ ranks, so the lab fell back to gloo, 2 ranks, sizes up to "
           f"{human_bytes(CPU_TIER_MAX_BYTES)}")
    if backend == "nccl":
        ranks, max_bytes = 2, min(max_bytes, CPU_TIER_MAX_BYTES)
    return dict(backend="gloo", nproc=max(ranks, 2), max_bytes=max_bytes, nccl_not_measured=why)


def _us(t: float) -> float | int:
    """Microseconds for a table: whole numbers from 1 ms on (reads 12,345 not 1.234e+04)."""
    return int(round(t)) if t >= 1000 else round(t, 1)


def table_rows(report: dict) -> list[dict]:
    """The nccl-tests columns worth keeping in a CSV, one row per (op, size)."""
    out = []
    for r in report["rows"]:
        if not r["supported"]:
            out.append(dict(op=r["op"], supported=False, reason=r["reason"]))
            continue
        out.append(dict(op=r["op"], size_bytes=r["size_bytes"], count=r["count"],
                        dtype=r["dtype"], time_us=_us(r["time_us_mean"]),
                        algbw_GBps=round(r["algbw_GBps"], 4), busbw_GBps=round(r["busbw_GBps"], 4),
                        wrong="N/A" if r["wrong"] is None else r["wrong"]))
    return out


def peak_busbw(report: dict) -> list[dict]:
    """Per op: the largest busbw of the sweep and the size it was reached at."""
    out = []
    for op in dict.fromkeys(r["op"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["op"] == op]
        if not rows[0]["supported"]:
            out.append(dict(op=op, supported=False, reason=rows[0]["reason"]))
            continue
        best = max(rows, key=lambda r: r["busbw_GBps"])
        out.append(dict(op=op, supported=True, peak_busbw_GBps=round(best["busbw_GBps"], 4),
                        at_bytes=best["size_bytes"], at=human_bytes(best["size_bytes"]),
                        algbw_GBps=round(best["algbw_GBps"], 4),
                        time_us=_us(best["time_us_mean"])))
    return out


def fit_table(fits: dict[str, AlphaBeta]) -> list[dict]:
    return [dict(op=op, alpha_us=_us(f.alpha_s * 1e6),
                 bandwidth_GBps=round(f.bandwidth_GBps, 4) if math.isfinite(f.bandwidth_GBps)
                 else "inf", rel_rms=round(f.rel_rms, 3), points=f.n_points)
            for op, f in fits.items()]


def _points(report: dict, op: str) -> tuple[list[float], list[float]]:
    """(S bytes, seconds) of one op, S = algbw * t as in alpha_beta.fit_rows."""
    xs, ts = [], []
    for r in report["rows"]:
        if r["op"] == op and r["supported"]:
            t = r["time_us_mean"] * 1e-6
            xs.append(r["algbw_GBps"] * 1e9 * t)
            ts.append(t)
    return xs, ts


def plot_fits(report: dict, fits: dict[str, AlphaBeta]):
    """One log-log panel per fitted op: measured times and the fitted alpha + beta*S line."""
    import matplotlib.pyplot as plt

    ops = list(fits)
    cols = min(3, max(1, len(ops)))
    rows = max(1, math.ceil(len(ops) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.4 * rows), squeeze=False)
    for ax, op in zip(axes.flat, ops):
        xs, ts = _points(report, op)
        plot_fit(ax, xs, ts, fits[op], label=op)
        ax.set_title(op, fontsize=10)
        ax.legend(fontsize=6.5, loc="upper left")
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    fig.suptitle(f"{report['backend']}, {report['nranks']} ranks: measured time vs "
                 "alpha-beta fit", fontsize=11)
    fig.tight_layout()
    return fig


def prediction_rows(sizes: list[int], intra: Link, inter: Link, model: str,
                    gpus=(8, 16, 32, 64, 128, 256, 512, 1024)) -> list[dict]:
    """Ring vs tree all_reduce per size and GPU count, flattened for a table and a plot."""
    out = []
    for nbytes in sizes:
        for r in predict_ring_vs_tree(nbytes, intra, inter, gpus=gpus):
            out.append(dict(model=model, size=human_bytes(nbytes), size_bytes=nbytes,
                            gpus=r["gpus"], nodes=r["nodes"], link=r["link"],
                            ring_us=round(r["ring_s"] * 1e6, 2),
                            tree_us=round(r["tree_s"] * 1e6, 2), faster=r["faster"],
                            tree_wins_below=human_bytes(r["crossover_bytes"]),
                            tree_wins_below_bytes=round(r["crossover_bytes"])))
    return out


def plot_predictions(ax, rows: list[dict], title: str):
    """Ring (solid) and tree (dashed) time vs GPU count, one colour per message size."""
    for i, size in enumerate(dict.fromkeys(r["size"] for r in rows)):
        sel = [r for r in rows if r["size"] == size]
        g = [r["gpus"] for r in sel]
        colour = f"C{i}"
        ax.loglog(g, [r["ring_us"] for r in sel], "-o", color=colour, ms=3,
                  label=f"ring, {size}")
        ax.loglog(g, [r["tree_us"] for r in sel], "--s", color=colour, ms=3,
                  label=f"tree, {size}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs (ranks)")
    ax.set_ylabel("all_reduce time (us), modelled")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def fitted_link(fits: dict[str, AlphaBeta], report: dict) -> Link | None:
    """This machine's per-step link, from the all_reduce fit (None without a fit on 2+ ranks)."""
    if "all_reduce" not in fits or report["nranks"] < 2:
        return None
    a_step, b_step = link_from_allreduce_fit(fits["all_reduce"], report["nranks"])
    return Link(f"this machine ({report['backend']}, fitted)", 1 / b_step / 1e9,
                "fitted from this run's all_reduce sweep", a_step)


def fitted_scalars(link: Link, rows: list[dict], size: int, nranks: int) -> dict:
    """The fitted step latency and bandwidth, and the modelled ring/tree times at `size` on the
    largest rank count of `rows` (prediction_rows with the fitted link), for rec.scalars."""
    last = [r for r in rows if r["size_bytes"] == size][-1]
    note = f"modelled from this machine's fit: {last['size']}, {last['gpus']} ranks"
    return {
        "fitted_step_alpha_us": (round(link.alpha_s * 1e6, 2), "us",
                                 f"per ring step, from the all_reduce fit on {nranks} ranks"),
        "fitted_step_bandwidth_GBps": (round(link.bandwidth_GBps, 4), "GB/s",
                                       "per ring step (1/beta), from the all_reduce fit"),
        **{f"fitted_{last['gpus']}rank_large_{algo}_ms":
           (round(last[f"{algo}_us"] / 1e3, 2), "ms", note) for algo in ("ring", "tree")},
    }
