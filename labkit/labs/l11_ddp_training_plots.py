"""Figures of the DDP lab (labs/11): loss and tokens/s, the comm/compute split, weak scaling
and the fault drill. Each function takes what l11_ddp_training.py or run_training returned and
gives back a matplotlib figure; none of them measures anything.
"""

from __future__ import annotations


def _title(s: dict) -> str:
    return f"{s['world_size']} ranks, {s['backend']}, {s['threads_per_rank']} thread(s)/rank"


def plot_training(summary: dict, records: list[dict]):
    """Left: training and validation loss per step. Right: tokens/s of every step rank 0
    printed, with the median the summary reports (the first step is warm-up, excluded)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    steps, loss = zip(*summary["loss_curve"])
    a.plot(steps, loss, "-", lw=1.5, label="train loss (mean over ranks)")
    if summary["val_curve"]:
        vs, vl = zip(*summary["val_curve"])
        a.plot(vs, vl, "o--", ms=5, label="validation loss (held-out windows)")
    a.set_xlabel("step")
    a.set_ylabel("cross-entropy (nats)")
    a.set_title(f"loss, {_title(summary)}", fontsize=9)
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    if records:
        b.plot([r["step"] for r in records], [r["tokens_per_s"] for r in records], ".-",
               lw=0.8, label="rank 0, each step")
        b.axhline(summary["tokens_per_s_median_step"], color="C1", ls="--",
                  label=f"median step: {summary['tokens_per_s_median_step']:,.0f} tokens/s")
        b.set_ylim(bottom=0)
        b.set_xlabel("step")
        b.set_ylabel("global tokens/s")
        b.set_title(f"throughput ({summary['global_batch_tokens']:,} tokens per step)",
                    fontsize=9)
        b.grid(alpha=0.3)
        b.legend(fontsize=8)
    else:
        b.set_visible(False)
    fig.tight_layout()
    return fig


def plot_comm_split(summary: dict):
    """Left: the median step by phase. Right: the no_sync probe - compute alone, compute
    with DDP's overlapped all_reduce, their difference, and one un-overlapped all_reduce."""
    import matplotlib.pyplot as plt

    ph, c = summary["phases_s"], summary["comm_split"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.1, 1]})
    left = 0.0
    parts = [("forward", "forward"), ("backward incl. all_reduce", "backward_incl_allreduce"),
             ("optimizer + loss all_reduce", "optimizer_and_loss_allreduce")]
    for i, (label, key) in enumerate(parts):
        a.barh([0], [ph[key]], left=left, color=f"C{i}", label=f"{label}: {ph[key]:.3f} s")
        left += ph[key]
    a.set_yticks([])
    a.set_xlabel("seconds (medians over the timed steps)")
    a.set_title(f"one training step, {_title(summary)}", fontsize=9)
    a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    names = ["compute\n(no_sync)", "synced\n(as trained)", "exposed\ncomm", "bare\nall_reduce"]
    vals = [c["compute_s"], c["synced_s"], c["exposed_comm_s"], c["allreduce_s"]]
    bars = b.bar(names, vals, color=["C0", "C1", "C3", "C7"])
    b.bar_label(bars, fmt="%.3f s", fontsize=8)
    b.set_ylim(0, 1.18 * max(vals))
    b.set_ylabel("seconds (slowest rank, median)")
    b.set_title(f"no_sync probe: exposed comm = {c['exposed_comm_share']:.0%} of the synced pass"
                + ("\n(synced ran faster than no_sync: below the timing noise)"
                   if c["synced_s"] < c["compute_s"] else ""), fontsize=9)
    b.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_scaling(rows: list[dict]):
    """tokens/s (median step) per world size against perfect weak scaling from 1 rank, and
    the share of a synced forward+backward that communication added."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    n = [r["world_size"] for r in rows]
    tps = [r["tokens_per_s_median_step"] for r in rows]
    base = tps[0] / n[0]
    a.plot(n, [base * k for k in n], "k:", label="perfect weak scaling")
    a.plot(n, tps, "o-", label="measured (median step)")
    for r, y in zip(rows, tps):
        if r["oversubscribed"]:
            a.annotate("oversubscribed:\nmore threads than cores", (r["world_size"], y),
                       textcoords="offset points", xytext=(-60, 12), fontsize=7, color="C3")
    a.set_xticks(n)
    a.set_xlabel("ranks (same batch per rank)")
    a.set_ylabel("global tokens/s")
    a.set_ylim(bottom=0)
    a.set_title("weak scaling", fontsize=9)
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    share = [100 * (r["exposed_comm_share"] or 0) for r in rows]
    bars = b.bar([str(k) for k in n], share, color="C3")
    b.bar_label(bars, fmt="%.0f%%", fontsize=8)
    b.set_xlabel("ranks")
    b.set_ylabel("% of synced forward+backward")
    b.set_title("exposed gradient communication (no_sync probe)", fontsize=9)
    b.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_drill(reference: dict, interrupted: dict, report: dict, first_attempt: list[dict]):
    """Left: the uninterrupted run's loss, the killed attempt's steps and the restarted
    attempt's steps, with the kill and the checkpoint it resumed from marked.
    Right: |loss difference| per step against the tolerance."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    kill, resumed = report["kill_at_step"], report["resumed_step"]
    rs, rl = zip(*reference["loss_curve"])
    a.plot(rs, rl, "-", color="0.6", lw=3, label="uninterrupted run")
    if first_attempt:
        a.plot([r["step"] for r in first_attempt], [r["loss"] for r in first_attempt], "x",
               color="C3", ms=6, label="attempt 0 (rank killed)")
    after = [(s, v) for s, v in interrupted["loss_curve"] if s > resumed]
    if after:
        a.plot(*zip(*after), "o", mfc="none", color="C0", ms=5,
               label="attempt 1 (restarted, resumed)")
    a.axvline(kill, color="C3", ls="--")
    a.annotate(f"rank {report['kill_rank']} SIGKILLed\nbefore step {kill}", (kill, max(rl)),
               xytext=(4, -24), textcoords="offset points", fontsize=7, color="C3")
    a.axvline(resumed, color="C2", ls="--")
    a.annotate(f"restart resumes from\ncheckpoint step {resumed}", (resumed, max(rl)),
               xytext=(-95, -24), textcoords="offset points", fontsize=7, color="C2")
    if kill - 1 > resumed:
        a.axvspan(resumed + 0.5, kill - 0.5, color="C1", alpha=0.15,
                  label=f"{report['steps_recomputed']} step(s) computed twice")
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    a.set_title("fault drill: same seed, one rank killed mid-run", fontsize=9)
    a.grid(alpha=0.3)
    a.legend(fontsize=7.5)
    ref = dict((s, v) for s, v in reference["loss_curve"])
    diffs = [(s, abs(v - ref[s])) for s, v in interrupted["loss_curve"] if s in ref]
    b.bar([s for s, _ in diffs], [d for _, d in diffs], color="C0")
    b.axhline(report["tolerance"], color="C3", ls="--",
              label=f"tolerance {report['tolerance']:g}")
    top = max([d for _, d in diffs] + [report["tolerance"]])
    b.set_ylim(0, 1.3 * top)
    b.set_xlabel("step")
    b.set_ylabel("|loss difference|")
    if top == report["tolerance"] and not any(d for _, d in diffs):
        b.text(0.5, 0.45, f"all {len(diffs)} steps identical\n|difference| = 0",
               transform=b.transAxes, ha="center", fontsize=10, color="C0")
    b.set_title(f"largest difference: {report['curve_max_abs_diff']:.1e}", fontsize=9)
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig
