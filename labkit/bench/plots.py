"""Figures a lab records (each function returns a matplotlib Figure; nothing is saved here).

    pareto_figure        p99 TTFT and TPOT vs output tok/s per load, SLO lines, capacity
                         (defined in sweep.py, which saves it as pareto.png)
    conventions_figure   the same requests under two "TPOT"s, and two clocks for E2E
    curves_figure        one latency-vs-throughput curve per engine+config
    capacity_figure      tok/s at the SLO and $/1M output tokens per engine+config
"""

from __future__ import annotations

import numpy as np

from labkit.bench import request_metrics as metrics
from labkit.bench.sweep import LOAD_NAME
from labkit.bench.sweep import pareto_figure  # noqa: F401 (sweep.py saves it; labs show it)


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _cdf(ax, values_ms, label, **kw):
    v = np.sort(np.asarray([x for x in values_ms if x is not None], dtype=float))
    if v.size:
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=label, **kw)


def conventions_figure(records, capped_records=None, title: str = ""):
    """Left: TPOT vs per-token latency of the same requests. Right: E2E on two clocks."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = _plt().subplots(1, 2, figsize=(11, 4))
    ok = [r for r in records if r.ok]
    _cdf(axes[0], [metrics.tpot(r) and metrics.tpot(r) * 1e3 for r in ok],
         "TPOT = (E2E−TTFT)/(out−1)  (vLLM)")
    _cdf(axes[0], [metrics.per_token_latency(r) and metrics.per_token_latency(r) * 1e3
                   for r in ok], "E2E/out  (GuideLLM 'TPOT')")
    _cdf(axes[0], [g * 1e3 for r in ok for g in metrics.itl(r)], "ITL, every gap pooled",
         linestyle=":")
    axes[0].set_xscale("log")  # a few stalls of seconds next to gaps of milliseconds
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_xlabel("ms (log)")
    axes[0].set_ylabel("share of requests (ITL: of gaps)")
    axes[0].set_title(title or "same requests, three per-token latencies")
    capped = [r for r in (capped_records or []) if r.ok]
    if capped:
        _cdf(axes[1], [(r.end - r.sent) * 1e3 for r in capped], "E2E from the send")
        _cdf(axes[1], [(r.end - r.scheduled) * 1e3 for r in capped], "E2E from the schedule")
        axes[1].set_title("behind a concurrency cap: the client's own queue")
        axes[1].set_xlabel("ms")
    else:
        axes[1].set_title("no capped run")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(curves: dict[str, dict[str, list[dict]]], slo: dict, kind: str):
    """curves[workload][config label] = sweep rows → one panel per workload (TTFT p99)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    workloads = list(curves)
    fig, axes = _plt().subplots(1, max(1, len(workloads)), figsize=(5.5 * len(workloads), 4.2),
                                squeeze=False)
    for ax, wl in zip(axes[0], workloads):
        for label, rows in curves[wl].items():
            # joined in load order: the path the server takes as the load rises
            pts = sorted(((r["output_tok_per_s"], r["ttft_p99_ms"], r["load"]) for r in rows
                          if r["ttft_p99_ms"] is not None), key=lambda p: p[2])
            if not pts:
                continue
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            for x, y, load in pts:
                ax.annotate(f"{load:g}", (x, y), textcoords="offset points", xytext=(3, 3),
                            fontsize=7, color=line.get_color())
        if slo.get("ttft"):
            ax.axhline(slo["ttft"], color="tab:red", linestyle="--", lw=1,
                       label=f"TTFT SLO {slo['ttft']:g} ms")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"workload: {wl}")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel("TTFT p99 (ms, log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"latency vs throughput per engine+config (labels: {LOAD_NAME[kind]})")
    fig.tight_layout()
    return fig


def capacity_figure(rows: list[dict], price_note: str = ""):
    """Bars per workload and config: tok/s at the SLO (left), $/1M output tokens (right).

    A config that ran but met the SLO at no tested load gets an empty slot marked "SLO not
    met"; configs this machine could not run are left to the table.
    """
    ran = [r for r in rows if r["status"] != "not measured"]
    workloads = list(dict.fromkeys(r["workload"] for r in ran))
    labels = list(dict.fromkeys(r["config"] for r in ran))
    fig, axes = _plt().subplots(1, 2, figsize=(11, 4.4))
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        color = f"C{j}"
        for i, wl in enumerate(workloads):
            r = next((r for r in ran if r["workload"] == wl and r["config"] == label), None)
            if r is None:
                continue
            x = i + j * width
            if r["usd_per_1m_output_tokens"] is not None:
                axes[0].bar(x, r["output_tok_per_s_at_slo"], width, color=color,
                            label=label if i == 0 or label not in
                            axes[0].get_legend_handles_labels()[1] else None)
                axes[1].bar(x, r["usd_per_1m_output_tokens"], width, color=color)
            else:
                for ax in axes:
                    ax.bar(x, 0, width, color=color,
                           label=label if ax is axes[0] and label not in
                           axes[0].get_legend_handles_labels()[1] else None)
                    ax.annotate("SLO\nnot met", (x, 0), textcoords="offset points",
                                xytext=(0, 3), ha="center", fontsize=7, color=color)
    for ax, name in zip(axes, ("output tok/s at the SLO (higher is better)",
                               "$ per 1M output tokens (lower is better)")):
        ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(workloads))])
        ax.set_xticklabels(workloads)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    if price_note:
        fig.text(0.5, 0.01, price_note, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04 if price_note else 0, 1, 1))
    return fig
