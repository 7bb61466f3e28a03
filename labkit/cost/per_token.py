"""Cost per 1M output tokens, from a measured throughput and a price per hour.

    $/1M output tokens = $/GPU-hour × GPUs / (output tokens/s × 3600) × 1e6

(FIELD_NOTES "Cost"). Which throughput? The one measured *at the SLO*: the highest load at
which the server still met its latency limits (labkit.bench.sweep.capacity). A server
pushed past its SLO produces more tokens per second, but tokens nobody wants that late;
pricing them would flatter the config that degrades worst.

Example: one H100 at $6.88/h (AWS p5.48xlarge on demand, $55.04 / 8 GPUs, SkyPilot
catalog v8) that sustains 2,000 output tok/s within the SLO costs
6.88 / (2000 × 3600) × 1e6 = $0.956 per 1M output tokens.

Two conventions, and a figure must say which it uses:

    output  $/1M *output* tokens: all instance time is charged to the tokens generated
            (vLLM/SGLang blog convention; what `cost_per_million_tokens` returns)
    total   $/1M tokens *processed*, prompt + output: the time is spread over both. On a
            prompt-heavy workload (shared-prefix: 1,000-token prompts, 64-token answers) this
            is far lower than the output figure, and it is the one to compare with an API
            price list that bills input and output tokens together.

A saving is always relative: config B "cuts cost by X %" vs baseline A when
X = (1 − cost_B / cost_A) × 100. Same price and GPU count on both sides, X is the
throughput ratio in disguise: 1 − tok_A / tok_B.
"""

from __future__ import annotations

import math

SECONDS_PER_HOUR = 3600
# $6.88: AWS p5.48xlarge (8×H100) on demand, us-east-1 (SkyPilot catalog v8)
P5_PER_GPU_HOUR = 55.04 / 8


def cost_per_million_tokens(price_per_hour: float, output_tok_per_s: float,
                            gpus: int = 1) -> float:
    """Dollars per 1M output tokens for `gpus` devices at `price_per_hour` each.

    Raises ValueError for a throughput that is not a positive finite number: zero tokens
    per second has no cost per token (it is infinite), and the caller should say "did not
    meet the SLO" rather than print `inf`.
    """
    if not (isinstance(output_tok_per_s, (int, float)) and math.isfinite(output_tok_per_s)
            and output_tok_per_s > 0):
        raise ValueError(f"output_tok_per_s must be a positive number, got {output_tok_per_s!r}")
    if price_per_hour < 0 or gpus < 1:
        raise ValueError(f"price_per_hour must be ≥ 0 and gpus ≥ 1, got {price_per_hour}, {gpus}")
    dollars_per_second = price_per_hour * gpus / SECONDS_PER_HOUR
    return dollars_per_second / output_tok_per_s * 1e6


CONVENTIONS = ("output", "total")


def cost_per_million(price_per_hour: float, output_tok_per_s: float, gpus: int = 1,
                     prompt_tok_per_s: float = 0.0, convention: str = "output") -> float:
    """$/1M tokens in the named convention ("output" or "total"; see the module docstring)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if convention == "output":
        return cost_per_million_tokens(price_per_hour, output_tok_per_s, gpus)
    if prompt_tok_per_s < 0:
        raise ValueError(f"prompt_tok_per_s must be >= 0, got {prompt_tok_per_s!r}")
    return cost_per_million_tokens(price_per_hour, output_tok_per_s + prompt_tok_per_s, gpus)


def saving_percent(baseline_cost: float, candidate_cost: float) -> float:
    """How much cheaper the candidate is, in % of the baseline (negative: dearer)."""
    if not baseline_cost > 0:
        raise ValueError(f"baseline cost must be positive, got {baseline_cost!r}")
    return (1.0 - candidate_cost / baseline_cost) * 100.0


def cheapest(costs: dict[str, float]) -> str:
    """The label with the lowest cost (ties: the first one given)."""
    if not costs:
        raise ValueError("no costs to compare")
    return min(costs, key=lambda k: costs[k])


def _pct(x: float) -> str:
    return f"{x:.0f}%" if abs(x) >= 10 else f"{x:.1f}%"


def cost_sentence(model: str, workload: str, best: str, baseline: str,
                  costs: dict[str, float]) -> str:
    """'for this model and workload, B cuts cost per 1M tokens by X% vs A' — X computed.

    `costs` holds only configs that met the SLO at some load (label -> $/1M output tokens);
    `best` is the cheapest of them. Every number in the sentence comes from `costs`.
    """
    head = f"for this model ({model}) and workload ({workload})"
    if baseline not in costs:
        return (f"{head}, the baseline {baseline} met the SLO at no tested load, so there is "
                f"no saving to compute against it; the cheapest config that met it is {best} "
                f"(${costs[best]:.3g} per 1M output tokens)")
    if best == baseline:
        others = {k: v for k, v in costs.items() if k != baseline}
        if not others:
            return f"{head}, only {baseline} met the SLO: nothing to compare it with"
        runner_up = cheapest(others)
        dearer = -saving_percent(costs[baseline], costs[runner_up])
        return (f"{head}, no config beats the baseline {baseline} "
                f"(${costs[baseline]:.3g} per 1M output tokens); the next best, {runner_up}, "
                f"costs {_pct(dearer)} more")
    x = saving_percent(costs[baseline], costs[best])
    return (f"{head}, {best} cuts cost per 1M output tokens by {_pct(x)} vs {baseline} "
            f"(${costs[best]:.3g} vs ${costs[baseline]:.3g})")
