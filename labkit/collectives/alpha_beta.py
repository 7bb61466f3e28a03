"""The latency-bandwidth (alpha-beta) model of collectives: fit it, plot it, extrapolate it.

Sending n bytes costs T(n) = alpha + n * beta: alpha is the fixed cost of one message
(software, kernel launch, wire latency, in seconds), beta the seconds per byte (1/bandwidth).
A collective is a sequence of such steps, so each op's time on p ranks is well described by
`T(S) = a + b * S` with op- and p-specific a and b. Small messages live in the alpha regime,
large ones in the beta regime; a sweep (labkit collectives) shows both.

Ring vs tree all_reduce (Thakur, Rabenseifner & Gropp, "Optimization of collective
communication operations in MPICH", IJHPCA 2005; FIELD_NOTES.md):
  ring: T = 2(p-1) alpha + 2(p-1)/p * n * beta   bandwidth-optimal, latency grows with p
  tree: T = 2 log2(p) alpha + 2 * n * beta         latency grows with log p
The tree's bandwidth term 2*n*beta is that of a *pipelined double binary tree*, the tree NCCL
uses since 2.4: in two complementary trees every rank sends and receives about 2n bytes in
total, each tree carrying half the data (Sanders, Speck & Traeff, "Two-tree algorithms for full
bandwidth broadcast, reduction and scan", Parallel Computing 2009; NVIDIA blog "Massively
Scale Your Deep Learning Training with NCCL 2.4", 2019). Pipeline fill (a few chunk times) is
ignored. A non-pipelined binomial tree would pay 2 log2(p) * n * beta instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class AlphaBeta:
    alpha_s: float  # fixed cost per operation, seconds
    beta_s_per_byte: float  # seconds per byte of S (the algbw bytes)
    n_points: int
    rel_rms: float  # typical relative misfit of the points the fit trusted

    def predict(self, nbytes):
        return self.alpha_s + np.asarray(nbytes, dtype=float) * self.beta_s_per_byte

    @property
    def bandwidth_GBps(self) -> float:
        """Large-message algbw the fit implies: 1/beta in GB/s (inf if beta is 0)."""
        return math.inf if self.beta_s_per_byte == 0 else 1 / self.beta_s_per_byte / 1e9


def _weighted_lstsq(x, t, w):
    """Minimise sum w_i * ((alpha + beta x_i - t_i) / t_i)^2 with alpha, beta >= 0."""
    sw = np.sqrt(w) / t  # relative errors: a 10 us and a 10 ms point count alike
    A = np.stack([sw, sw * x], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(A, sw * t, rcond=None)
    if alpha < 0:  # latency below zero is noise: refit the line through the origin
        alpha, beta = 0.0, float(np.sum(sw * sw * x * t) / np.sum(sw * sw * x * x))
    if beta < 0:
        alpha, beta = float(np.sum(sw * sw * t) / np.sum(sw * sw)), 0.0
    return float(alpha), float(beta)


def fit_alpha_beta(nbytes, seconds, huber_k: float = 1.345, max_iter: int = 50) -> AlphaBeta:
    """Fit T = alpha + beta * n to measured times, robustly.

    Why not plain least squares: times span 1000x across a sweep, so absolute residuals of
    the largest sizes would decide alpha alone; and one run hit by a noisy neighbour can
    drag the line. So residuals are relative, and Huber weights (iteratively reweighted)
    shrink the influence of outliers beyond huber_k robust standard deviations.
    """
    x, t = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    if x.shape != t.shape or x.size < 2:
        raise ValueError("need at least two (bytes, seconds) points of equal length")
    if np.any(t <= 0) or np.ptp(x) == 0:
        raise ValueError("times must be > 0 and at least two sizes must differ")
    w = np.ones_like(t)
    alpha, beta = _weighted_lstsq(x, t, w)
    for _ in range(max_iter):
        r = (alpha + beta * x - t) / t
        scale = 1.4826 * np.median(np.abs(r - np.median(r)))  # robust std (MAD)
        if scale < 1e-12:
            break
        a = np.abs(r) / (huber_k * scale)
        w_new = np.where(a <= 1, 1.0, 1 / np.maximum(a, 1e-12))
        new = _weighted_lstsq(x, t, w_new)
        done = np.allclose(new, (alpha, beta), rtol=1e-9, atol=0)
        (alpha, beta), w = new, w_new
        if done:
            break
    r = (alpha + beta * x - t) / t
    rel_rms = float(np.sqrt(np.sum(w * r * r) / np.sum(w)))
    return AlphaBeta(alpha, beta, int(x.size), rel_rms)


def fit_rows(rows: list[dict]) -> dict[str, AlphaBeta]:
    """One fit per op from `labkit collectives` rows (S bytes vs the `time` column)."""
    by_op: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r.get("supported", True):
            seconds = r["time_us_mean"] * 1e-6
            s_bytes = r["algbw_GBps"] * 1e9 * seconds  # algbw = S / t, so S = algbw * t
            xs, ts = by_op.setdefault(r["op"], ([], []))
            xs.append(s_bytes)
            ts.append(seconds)
    return {op: fit_alpha_beta(xs, ts) for op, (xs, ts) in by_op.items() if len(set(xs)) > 1}


def plot_fit(ax, nbytes, seconds, fit: AlphaBeta, label: str = ""):
    """Measured points and the fitted line on log-log axes (pass a matplotlib Axes)."""
    x = np.asarray(nbytes, dtype=float)
    grid = np.geomspace(x.min(), x.max(), 100)
    pts = ax.loglog(x, np.asarray(seconds) * 1e6, "o", label=f"{label} measured".strip())
    ax.loglog(grid, fit.predict(grid) * 1e6, "-", color=pts[0].get_color(),
              label=f"{label} fit: alpha={fit.alpha_s * 1e6:.1f} us, "
              f"1/beta={fit.bandwidth_GBps:.3g} GB/s".strip())
    ax.set_xlabel("S (bytes)")
    ax.set_ylabel("time per operation (us)")
    ax.legend(fontsize="small")
    return ax


# --- extrapolating all_reduce to many GPUs -----------------------------------------------


def ring_allreduce_time(nbytes, p: int, alpha: float, beta: float):
    """2(p-1) alpha + 2(p-1)/p * n * beta (Thakur et al. 2005)."""
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * np.asarray(nbytes, dtype=float) * beta


def tree_allreduce_time(nbytes, p: int, alpha: float, beta: float):
    """2 log2(p) alpha + 2 n beta: pipelined double binary tree (see module docstring)."""
    return 2 * math.log2(p) * alpha + 2 * np.asarray(nbytes, dtype=float) * beta


def crossover_bytes(p: int, alpha: float, beta: float) -> float:
    """Message size below which tree beats ring on p ranks: p (p-1-log2 p) alpha / beta."""
    return p * (p - 1 - math.log2(p)) * alpha / beta


def link_from_allreduce_fit(fit: AlphaBeta, p: int) -> tuple[float, float]:
    """Per-step (alpha, beta) of the ring behind a measured all_reduce fit on p ranks."""
    return fit.alpha_s / (2 * (p - 1)), fit.beta_s_per_byte * p / (2 * (p - 1))


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth_GBps: float  # per direction, per GPU
    source: str
    alpha_s: float | None = None  # per-step latency: measure it or state your assumption

    def with_alpha(self, alpha_s: float) -> "Link":
        return replace(self, alpha_s=alpha_s)


NVLINK_H100 = Link("NVLink 4 (H100 SXM)", 450.0,
                   "NVIDIA H100 datasheet: 900 GB/s bidirectional = 450 GB/s per direction")
NDR_400G = Link("InfiniBand NDR, one 400 Gb/s NIC per GPU", 50.0,
                "400 Gb/s / 8 bits = 50 GB/s; nccl-tests #290 measures ~46-48 GB/s busbw")


def predict_ring_vs_tree(nbytes: float, intra: Link, inter: Link, gpus_per_node: int = 8,
                         gpus=(8, 16, 32, 64, 128, 256, 512, 1024)) -> list[dict]:
    """Predicted all_reduce time of ring and tree for each GPU count.

    Assumptions (state them when you quote the numbers): within one node every step uses
    `intra`; once the job spans nodes the slowest hop, the network `inter` (one NIC per GPU,
    as on DGX H100), paces every step of the synchronous algorithm.
    """
    for link in (intra, inter):
        if link.alpha_s is None:
            raise ValueError(f"{link.name}: give a latency, e.g. link.with_alpha(fitted_alpha)")
    out = []
    for p in gpus:
        link = intra if p <= gpus_per_node else inter
        a, b = link.alpha_s, 1 / (link.bandwidth_GBps * 1e9)
        ring = float(ring_allreduce_time(nbytes, p, a, b))
        tree = float(tree_allreduce_time(nbytes, p, a, b))
        out.append(dict(gpus=p, nodes=math.ceil(p / gpus_per_node), link=link.name,
                        ring_s=ring, tree_s=tree, faster="tree" if tree < ring else "ring",
                        crossover_bytes=crossover_bytes(p, a, b) if p > 2 else 0.0))
    return out


def format_predictions(rows: list[dict], nbytes: float) -> str:
    lines = [f"all_reduce of {nbytes / 2**20:g} MiB: predicted time (alpha-beta model)",
             f"{'GPUs':>6} {'nodes':>6} {'ring (us)':>11} {'tree (us)':>11} {'faster':>7}"
             f" {'tree wins below':>16}  link"]
    for r in rows:
        lines.append(f"{r['gpus']:6d} {r['nodes']:6d} {r['ring_s'] * 1e6:11.1f} "
                     f"{r['tree_s'] * 1e6:11.1f} {r['faster']:>7} "
                     f"{r['crossover_bytes'] / 2**20:12.3g} MiB  {r['link']}")
    return "\n".join(lines)
