"""Monthly spend for a traffic profile: from requests a day to replicas to dollars a month.

    mean requests/s  = requests_per_day / 86,400
    peak requests/s  = mean × peak_to_mean            (diurnal: the busiest hour vs the average)
    peak output tok/s = peak requests/s × output_tokens
    replicas         = ceil(peak output tok/s × (1 + headroom) / capacity per replica)
    $/month          = replicas × $/replica-hour × 730 h

`capacity per replica` is the output tokens/s one replica sustains *within the SLO*, measured
on a workload with the same prompt/answer shape (labkit.bench capacity search). Sizing for the
peak, not the mean, is what a fixed fleet must do: at the mean you would miss the SLO every
afternoon. `headroom` (0.2 = 20 %) covers a replica lost to a deploy or a failure and the
noise in the measurement. 730 h = 8,760 h a year / 12, the cloud providers' billing month.

The sensitivity table moves one input at a time by ±`step` (default 20 %) and reports how far
the bill moves: replicas are whole numbers, so small changes can move nothing, then a lot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from labkit.errors import UserError

HOURS_PER_MONTH = 730
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Traffic:
    requests_per_day: float
    peak_to_mean: float = 2.0
    input_tokens: int = 512
    output_tokens: int = 128

    def check(self) -> None:
        if self.requests_per_day <= 0:
            raise UserError(f"requests_per_day must be > 0, got {self.requests_per_day}")
        if self.peak_to_mean < 1:
            raise UserError(f"peak_to_mean is a ratio peak/mean, so >= 1; got {self.peak_to_mean}")
        if self.output_tokens < 1 or self.input_tokens < 0:
            raise UserError("output_tokens must be >= 1 and input_tokens >= 0, got "
                            f"{self.output_tokens} and {self.input_tokens}")


@dataclass(frozen=True)
class Fleet:
    capacity_tok_s: float  # output tok/s per replica at the SLO (measured)
    price_per_hour: float  # $ per replica-hour (instance price × instances per replica)
    headroom: float = 0.2

    def check(self) -> None:
        if not (self.capacity_tok_s > 0 and math.isfinite(self.capacity_tok_s)):
            raise UserError(f"capacity_tok_s must be a positive measured throughput, got "
                            f"{self.capacity_tok_s}; a config that met the SLO at no load has "
                            "no capacity to size a fleet with")
        if self.price_per_hour <= 0:
            raise UserError(f"price_per_hour must be > 0, got {self.price_per_hour}")
        if not 0 <= self.headroom < 5:
            raise UserError(f"headroom is a fraction (0.2 = 20 %), got {self.headroom}")


def monthly_spend(traffic: Traffic, fleet: Fleet) -> dict:
    """Every step of the formula above, so a page can show its working."""
    traffic.check()
    fleet.check()
    mean_rps = traffic.requests_per_day / SECONDS_PER_DAY
    peak_rps = mean_rps * traffic.peak_to_mean
    peak_out = peak_rps * traffic.output_tokens
    needed = peak_out * (1 + fleet.headroom) / fleet.capacity_tok_s
    replicas = max(1, math.ceil(needed - 1e-9))  # 1e-9: 2.0000000001 is still 2 replicas
    usd_month = replicas * fleet.price_per_hour * HOURS_PER_MONTH
    tokens_month = traffic.requests_per_day * 365 / 12 * (traffic.input_tokens
                                                           + traffic.output_tokens)
    out_month = traffic.requests_per_day * 365 / 12 * traffic.output_tokens
    return {
        "mean_rps": mean_rps, "peak_rps": peak_rps, "peak_output_tok_s": peak_out,
        "peak_prompt_tok_s": peak_rps * traffic.input_tokens,
        "replicas_exact": needed, "replicas": replicas,
        "utilisation_at_peak": peak_out / (replicas * fleet.capacity_tok_s),
        "usd_per_month": usd_month,
        # what the month's traffic costs per token when the fleet is sized for the peak
        "usd_per_1m_output_tokens_served": usd_month / out_month * 1e6,
        "usd_per_1m_total_tokens_served": usd_month / tokens_month * 1e6,
    }


_INPUTS = [("requests_per_day", "traffic"), ("peak_to_mean", "traffic"),
           ("output_tokens", "traffic"), ("capacity_tok_s", "fleet"),
           ("price_per_hour", "fleet"), ("headroom", "fleet")]


def sensitivity(traffic: Traffic, fleet: Fleet, step: float = 0.2) -> list[dict]:
    """One row per input: $/month at −step and +step, sorted by the swing (largest first)."""
    base = monthly_spend(traffic, fleet)["usd_per_month"]
    rows = []
    for name, owner in _INPUTS:
        out = {}
        for sign in (-1, +1):
            t, f = traffic, fleet
            obj = t if owner == "traffic" else f
            value = getattr(obj, name) * (1 + sign * step)
            if name == "output_tokens":
                value = max(1, round(value))
            if name == "peak_to_mean":
                value = max(1.0, value)
            if owner == "traffic":
                t = replace(t, **{name: value})
            else:
                f = replace(f, **{name: value})
            out[sign] = (value, monthly_spend(t, f)["usd_per_month"])
        rows.append({"input": name, "base": getattr(traffic if owner == "traffic" else fleet,
                                                    name),
                     "low": out[-1][0], "usd_low": out[-1][1],
                     "high": out[+1][0], "usd_high": out[+1][1],
                     "swing_usd": abs(out[+1][1] - out[-1][1]),
                     "swing_pct": abs(out[+1][1] - out[-1][1]) / base * 100})
    return sorted(rows, key=lambda r: -r["swing_usd"])


def describe(traffic: Traffic, fleet: Fleet) -> str:
    m = monthly_spend(traffic, fleet)
    return (f"{traffic.requests_per_day:,.0f} requests/day, peak {traffic.peak_to_mean:g}x mean "
            f"-> {m['peak_rps']:.2f} req/s x {traffic.output_tokens} output tokens = "
            f"{m['peak_output_tok_s']:,.1f} tok/s at peak; x (1 + {fleet.headroom:g}) / "
            f"{fleet.capacity_tok_s:,.1f} tok/s per replica = {m['replicas_exact']:.2f} -> "
            f"{m['replicas']} replica(s) x ${fleet.price_per_hour:g}/h x 730 h = "
            f"${m['usd_per_month']:,.2f}/month")


def as_row(traffic: Traffic, fleet: Fleet) -> dict:
    return {**asdict(traffic), **asdict(fleet), **monthly_spend(traffic, fleet)}
