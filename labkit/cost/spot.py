"""Spot instances: how often to checkpoint, and what a preemptible job really costs.

Checkpoint interval τ for a job that writes a checkpoint in C and fails on average every M
(mean time between failures, here: between preemptions):

    Young (1974)   τ = √(2·C·M)
    Daly (2006)    τ = √(2·C·M) · [1 + ⅓·√(C/2M) + (C/2M)/9] − C      (for C < 2M; else M)

Daly's is the better first-order optimum when C is not tiny against M (FIELD_NOTES: C = 5
min gives 117 / 57 / 9.1 min at M = 24 h / 6 h / 15 min, Young 120 / 60 / 12.2).

`simulate_job()` is a Monte Carlo of one training job on spot: preemptions arrive as a
Poisson process (rate 1/M), work since the last checkpoint is lost, every restart costs R.
It returns the distribution of wall time and of cost, next to the same job on demand —
the numbers behind "spot cut the bill by X %, and the job took Y % longer".

Preemption rates come from published traces (skypilot-org/spot-traces: 41–60 preemptions
in 177 h per zone, mean spot lifetime 1.4–3.1 h, for p3.2xlarge in April 2023) or from a
trace file in that repository's JSON shape, {"metadata": {"gap_seconds": 300}, "data":
[1, 1, 0, …]} (1 = the spot instance was available in that gap), read by `read_trace()`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import UserError


def young(checkpoint_s: float, mtbf_s: float) -> float:
    _check(checkpoint_s, mtbf_s)
    return math.sqrt(2 * checkpoint_s * mtbf_s)


def daly(checkpoint_s: float, mtbf_s: float) -> float:
    _check(checkpoint_s, mtbf_s)
    c, m = checkpoint_s, mtbf_s
    if c >= 2 * m:
        return m
    r = c / (2 * m)
    return math.sqrt(2 * c * m) * (1 + math.sqrt(r) / 3 + r / 9) - c


def _check(c: float, m: float) -> None:
    if not (c > 0 and m > 0):
        raise UserError(f"checkpoint time and MTBF must be > 0 s, got {c} and {m}")


@dataclass(frozen=True)
class Trace:
    gap_s: float
    available: list[int]  # 1 = spot available during that gap

    @property
    def preemptions(self) -> int:
        """Available → unavailable transitions: the instance was taken away."""
        return sum(1 for a, b in zip(self.available, self.available[1:]) if a and not b)

    @property
    def availability(self) -> float:
        return sum(self.available) / len(self.available)

    @property
    def mtbf_s(self) -> float:
        """Mean spot lifetime: available time per preemption (inf when never preempted)."""
        up = sum(self.available) * self.gap_s
        return up / self.preemptions if self.preemptions else math.inf


def read_trace(path) -> Trace:
    try:
        doc = json.loads(Path(path).read_text())
        gap, data = float(doc["metadata"]["gap_seconds"]), [int(x) for x in doc["data"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a spot-traces file ({{'metadata': {{'gap_seconds': N}}, "
                        f"'data': [1, 0, …]}}): {e}") from None
    if not data or set(data) - {0, 1}:
        raise UserError(f"{path}: 'data' must be a non-empty list of 0 and 1")
    return Trace(gap, data)


def generate_trace(hours: float, mtbf_h: float, outage_h: float, gap_s: float = 300,
                   seed: int = 0) -> dict:
    """A synthetic trace in spot-traces' JSON shape (labelled as generated in its metadata)."""
    rng = random.Random(seed)
    data, t = [], 0.0
    while t < hours * 3600:
        up = rng.expovariate(1 / (mtbf_h * 3600))
        down = rng.expovariate(1 / (outage_h * 3600))
        data += [1] * max(1, round(up / gap_s)) + [0] * max(1, round(down / gap_s))
        t += up + down
    n = int(hours * 3600 / gap_s)
    return {"metadata": {"gap_seconds": gap_s, "generated_by": "labkit.cost.spot",
                         "note": f"synthetic: exponential lifetimes, mean {mtbf_h} h, "
                                 f"outages mean {outage_h} h, seed {seed}"},
            "data": data[:n]}


@dataclass(frozen=True)
class Job:
    work_h: float  # compute the job needs, hours, without failures
    checkpoint_s: float  # time to write one checkpoint (measured: lab 11)
    restart_s: float  # time from preemption to training again (new VM, load, resume)
    interval_s: float  # checkpoint interval


def simulate_job(job: Job, mtbf_s: float, spot_price: float, on_demand_price: float,
                 trials: int = 2000, seed: int = 0) -> dict:
    """Monte Carlo: wall time and cost of the job on spot vs on demand (same checkpoints)."""
    if job.interval_s <= 0 or job.work_h <= 0:
        raise UserError("work_h and interval_s must be > 0")
    rng = random.Random(seed)
    work = job.work_h * 3600
    chunk = job.interval_s + job.checkpoint_s  # work, then its checkpoint
    n_ckpt = math.ceil(work / job.interval_s)
    clean = work + n_ckpt * job.checkpoint_s  # no failures: on demand
    walls, preempts = [], []
    for _ in range(trials):
        done = wall = 0.0
        n = 0
        while done < work:
            life = rng.expovariate(1 / mtbf_s)
            left = work - done
            need = left + math.ceil(left / job.interval_s) * job.checkpoint_s
            if life >= need:  # this instance lives long enough to finish
                wall += need
                break
            # preempted: whole chunks written before it are saved, the partial one is lost
            done += int(life // chunk) * job.interval_s
            wall += life + job.restart_s
            n += 1
        walls.append(wall)
        preempts.append(n)
    walls.sort()

    def pct(p):
        return walls[min(len(walls) - 1, int(p * len(walls)))]

    mean = sum(walls) / len(walls)
    return {"on_demand_hours": clean / 3600, "on_demand_cost": clean / 3600 * on_demand_price,
            "spot_hours_mean": mean / 3600, "spot_hours_p50": pct(0.5) / 3600,
            "spot_hours_p95": pct(0.95) / 3600,
            "spot_cost_mean": mean / 3600 * spot_price,
            "spot_cost_p95": pct(0.95) / 3600 * spot_price,
            "preemptions_mean": sum(preempts) / len(preempts),
            "saving_pct": (1 - (mean / 3600 * spot_price) / (clean / 3600 * on_demand_price))
            * 100, "trials": trials, "walls_h": [w / 3600 for w in walls]}


def serving_replicas(replicas_needed: int, availability: float) -> int:
    """Spot replicas to hold so that, on average, `replicas_needed` are up (SkyServe-style
    over-provisioning; on-demand fallback covers the rest when a zone empties)."""
    if not 0 < availability <= 1:
        raise UserError(f"availability must be in (0, 1], got {availability}")
    return math.ceil(replicas_needed / availability - 1e-9)
