"""Engine & config comparison: one server per config, a small sweep per workload, capacity.

A config is an engine plus knobs (labkit.serve ServeConfig fields), as a dict or a string:

    {"engine": "vllm"}                                  vLLM defaults (prefix caching on)
    {"engine": "vllm", "prefix_caching": False}         "vllm:prefix_caching=false"
    {"engine": "mini", "prefix_cache": "radix", "max_num_seqs": 4}
    {"engine": "sglang", "quantization": "fp8"}         GPU tier
    {"engine": "trtllm", "model": "nvidia/Llama-3.1-8B-Instruct-FP8"}
                                       TensorRT-LLM reads FP8 from the checkpoint

For each config: start the server (a context manager: it stops even if a sweep fails),
warm it up, then for each workload find its capacity at the SLO and read the server's
prefix-cache counters around it. With a SearchPlan (capacity.py) the load is raised until the
SLO breaks and then bisected, so capacity comes with both bounds ("bracketed"), or is said to
be only a lower bound; with a list of loads (fresh_sweep.py) capacity is the highest listed
load whose requests met the SLO (sweep.capacity). Its throughput is what the cost model
prices (labkit.cost.per_token). A config this machine cannot run is not started: it
gets the reason ("SGLang has no CPU kernels…") instead of a number.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from labkit.bench.capacity import SearchPlan, describe_bounds, run_capacity_search
from labkit.bench.sweep import run_fresh_sweep
from labkit.labs.l22_deploy_and_bench import load_average
from labkit.bench.loadgen import BenchConfig, run_bench
from labkit.bench.server_metrics import prefix_hit_rate, scrape
from labkit.bench.workloads import WorkloadParams
from labkit.cost.per_token import cost_per_million_tokens
from labkit.errors import UserError

# Why an engine cannot be measured on a machine without an NVIDIA GPU (FIELD_NOTES, DESIGN).
GPU_ONLY_REASON = {
    "sglang": "SGLang has no CPU kernels (SGLang 0.5.x on PyPI): GPU tier only",
    "trtllm": "TensorRT-LLM is GPU-only: it needs CUDA and NVIDIA's TensorRT libraries",
}
QUANTIZATION_REASON = ("quantized serving is measured on the GPU tier only: FP8 W8A8 needs an "
                       "NVIDIA GPU of compute capability ≥ 8.9 (vLLM docs), and the CPU tier's "
                       "tiny model is float32")


@dataclass
class ConfigSpec:
    engine: str
    knobs: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return " ".join([self.engine] + [f"{k}={v}" for k, v in self.knobs.items()])


def parse_config(config: dict | str) -> ConfigSpec:
    """{"engine": "mini", "prefix_cache": "none"} or "mini:prefix_cache=none" → ConfigSpec."""
    from labkit.serve.registry import ENGINES

    if isinstance(config, str):
        import yaml

        engine, _, rest = config.strip().partition(":")
        knobs = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            name, eq, value = part.partition("=")
            if not eq:
                raise UserError(f"config {config!r}: {part!r} is not knob=value")
            knobs[name.strip()] = yaml.safe_load(value)
    elif isinstance(config, dict) and "engine" in config:
        knobs = {k: v for k, v in config.items() if k != "engine"}
        engine = config["engine"]
    else:
        raise UserError(f"config {config!r}: give a dict with an 'engine' key plus knobs, "
                        'e.g. {"engine": "mini", "prefix_cache": "radix"}')
    if engine not in ENGINES:
        raise UserError(f"config {config!r}: unknown engine {engine!r}; engines: "
                        f"{', '.join(ENGINES)}")
    return ConfigSpec(engine, knobs)


def why_not_here(spec: ConfigSpec) -> str | None:
    """None when this machine can run the config, else the reason it cannot."""
    from labkit.serve.config import has_nvidia_gpu
    from labkit.serve.registry import engine_module

    mod = engine_module(spec.engine)
    gpu = has_nvidia_gpu()
    if mod.REQUIRES_GPU and not gpu:
        return GPU_ONLY_REASON.get(spec.engine, f"{mod.TITLE} is GPU only")
    missing = mod.missing()
    if missing:
        return f"{mod.TITLE} cannot start here: {missing} ({mod.INSTALL_HINT})"
    if spec.knobs.get("quantization") and not gpu:
        return QUANTIZATION_REASON
    return None


def measure_config(spec: ConfigSpec, model: str, base_knobs: dict, bench: BenchConfig,
                   workloads: dict[str, WorkloadParams], kind: str,
                   values: list[float] | SearchPlan, out_dir: Path, attainment: float = 0.9,
                   startup_timeout: float = 600, warmup_requests: int = 2,
                   served_model_name: str | None = None) -> dict:
    """Serve one config and find each workload's capacity on it. Never leaves a server behind.

    `values`: a SearchPlan (search for the capacity; `kind` and `attainment` then come from
    the plan) or a list of loads of `kind` to sweep. `bench` carries what every point shares
    (num_requests, slo, api, tokenizer...); base_url and model come from the running server.
    """
    from labkit.serve import ServerStartError, serve
    from labkit.errors import under_ci

    knobs = {**(base_knobs.get(spec.engine) or {}), **spec.knobs}
    model = knobs.pop("model", model)
    if served_model_name and spec.engine != "trtllm":  # trtllm serves the MODEL argument's name
        knobs.setdefault("served_model_name", served_model_name)
    result = {"config": spec.label, "engine": spec.engine, "knobs": knobs, "model": model,
              "sweeps": {}, "prefix_hit_rate": {}, "not_measured": why_not_here(spec)}
    if result["not_measured"]:
        return result
    out_dir = Path(out_dir)
    try:
        server = serve(spec.engine, model=model, port=None, log_dir=out_dir / "server",
                       timeout=startup_timeout, **knobs)
    except ServerStartError as e:
        if under_ci():  # in CI a server that does not start is a failure, not a gap
            raise
        result["not_measured"] = f"the server did not start: {e.cause} (log: {e.log_path})"
        return result
    load_before = load_average()
    with server:
        result["startup_s"] = server.startup_s
        cfg = replace(bench, base_url=server.base_url, model=server.model, progress=False)
        if warmup_requests:  # first requests pay one-off costs (allocations, lazy init)
            run_bench(replace(cfg, workload="random", rate=math.inf, concurrency=None,
                      num_requests=warmup_requests, slo={}, seed=10_000,
                      out_dir=str(out_dir / "warmup")))
        for k, (wl, params) in enumerate(workloads.items()):
            before = scrape(server.metrics_url)
            t0 = time.monotonic()
            # Seeds apart per workload: the generators draw words from one stream, so at
            # equal seeds random prompt 0 *is* the start of shared-prefix system prompt 0,
            # and a prefix cache would "hit" on a workload that shares nothing.
            wl_cfg = replace(cfg, workload=wl, params=params, seed=cfg.seed + 1000 * (k + 1),
                             out_dir=str(out_dir / wl))
            if isinstance(values, SearchPlan):
                sweep = run_capacity_search(wl_cfg, values)
            else:
                sweep = run_fresh_sweep(wl_cfg, kind, values, attainment, plot=False)
            sweep["wall_s"] = time.monotonic() - t0
            result["sweeps"][wl] = sweep
            result["prefix_hit_rate"][wl] = prefix_hit_rate(spec.engine, before,
                                                            scrape(server.metrics_url))
    # The machine's load while this config ran: configs measured at different loads are
    # not comparable, and a shared machine's load changes from one config to the next.
    loads = [x for x in (load_before, load_average()) if x is not None]
    result["load_avg_1m_max"] = max(loads) if loads else None
    return result


def _r(x, digits=2):
    return None if x is None else round(float(x), digits)


def capacity_rows(results: list[dict], price_per_hour: float, gpus: int = 1) -> list[dict]:
    """One row per config × workload: capacity at the SLO and its cost per 1M output tokens.

    status: "measured", "measured (lower bound)" (even the highest tested load met the SLO,
    so the capacity is at least this), "SLO not met" (no tested load met it) or "not
    measured" (this machine cannot run the config; `reason` says why). `capacity_status`
    says the same in the capacity search's words (bracketed | lower bound | SLO not met |
    not measured), and `load_low`/`load_high` bound the capacity where a search ran.

    Two prices per row, because a shared-prefix workload is mostly prompt: per 1M *output*
    tokens (vLLM's and most price sheets' convention) and per 1M tokens *in + out* (what a
    per-token API bill counts), both at the same capacity.
    """
    rows = []
    for res in results:
        workloads = res["sweeps"] or {None: None}
        for wl, sweep in workloads.items():
            row = {"config": res["config"], "engine": res["engine"], "workload": wl or "all",
                   "status": "", "load_at_slo": None, "output_tok_per_s_at_slo": None,
                   "ttft_p99_ms": None, "tpot_p99_ms": None, "prefix_hit_rate": None,
                   "usd_per_1m_output_tokens": None, "total_tok_per_s_at_slo": None,
                   "usd_per_1m_total_tokens": None, "capacity_status": "not measured",
                   "load_low": None, "load_high": None,
                   "load_avg_1m_max": res.get("load_avg_1m_max"), "reason": ""}
            if res["not_measured"]:
                row.update(status="not measured", reason=res["not_measured"])
            else:
                row.update(_capacity_cells(sweep, price_per_hour, gpus))
            if wl is not None and res["prefix_hit_rate"].get(wl) is not None:
                row["prefix_hit_rate"] = _r(res["prefix_hit_rate"][wl], 3)
            rows.append(row)
    return rows


def _capacity_cells(sweep: dict, price_per_hour: float, gpus: int) -> dict:
    """The capacity part of a capacity row, from a search result or a fixed sweep."""
    cap = sweep["capacity"]
    if "status" in sweep:  # a capacity search: it says itself how far it got
        status = sweep["status"]
        bounds = {"load_low": sweep["low"], "load_high": sweep["high"]}
    else:  # a fixed list: if even its highest load met the SLO, capacity is above it
        top = bool(cap) and cap["load"] == max(r["load"] for r in sweep["rows"])
        status = "SLO not met" if not cap else "lower bound" if top else "bracketed"
        bounds = {"load_low": cap["load"] if cap else None, "load_high": None}
    if not cap or not cap["output_tok_per_s"]:
        return {"status": "SLO not met", "capacity_status": "SLO not met",
                "reason": "no tested load met the SLO", **bounds}
    total = cap.get("total_tok_per_s")
    return {
        "status": "measured (lower bound)" if status == "lower bound" else "measured",
        "capacity_status": status, **bounds,
        "load_at_slo": cap["load"], "output_tok_per_s_at_slo": _r(cap["output_tok_per_s"]),
        "total_tok_per_s_at_slo": _r(total),
        "ttft_p99_ms": _r(cap["ttft_p99_ms"], 1), "tpot_p99_ms": _r(cap["tpot_p99_ms"], 1),
        # from the unrounded tok/s: the saving sentence divides costs
        "usd_per_1m_output_tokens": cost_per_million_tokens(price_per_hour,
                                                            cap["output_tok_per_s"], gpus),
        "usd_per_1m_total_tokens": (cost_per_million_tokens(price_per_hour, total, gpus)
                                    if total else None)}


def for_page(rows: list[dict]) -> list[dict]:
    """The same rows with empty cells instead of None (a table a reader can scan)."""
    return [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]


def format_capacity(rows: list[dict]) -> str:
    lines = [f"{'config':<34}{'workload':<15}{'load':>6}{'tok/s':>10}{'$/1M':>10}"
             f"{'hits':>7}  status"]
    for r in rows:
        hit = f"{r['prefix_hit_rate']:.0%}" if r["prefix_hit_rate"] is not None else "-"
        if r["status"].startswith("measured"):
            lines.append(f"{r['config']:<34}{r['workload']:<15}{r['load_at_slo']:>6g}"
                         f"{r['output_tok_per_s_at_slo']:>10.1f}"
                         f"{r['usd_per_1m_output_tokens']:>10.3g}{hit:>7}  {r['status']}")
        else:
            lines.append(f"{r['config']:<34}{r['workload']:<15}{'-':>6}{'-':>10}{'-':>10}"
                         f"{hit:>7}  {r['status']}: {r['reason']}")
    return "\n".join(lines)


def sweep_rows(results: list[dict]) -> list[dict]:
    """Every load point of every config and workload, flat (for the CSV table)."""
    out = []
    for res in results:
        for wl, sweep in res["sweeps"].items():
            for r in sweep["rows"]:
                out.append({"config": res["config"], "workload": wl, **{
                    k: (_r(v, 2) if isinstance(v, float) and math.isfinite(v) else v)
                    for k, v in r.items()}})
    return out


def costs_by_workload(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{workload: {config: $/1M}} for the configs that met the SLO (the cost sentences' input)."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["usd_per_1m_output_tokens"] is not None:
            out.setdefault(r["workload"], {})[r["config"]] = r["usd_per_1m_output_tokens"]
    return out


def describe(res: dict) -> str:
    """A few lines saying what one config measured (or why it was not measured)."""
    if res["not_measured"]:
        return f"{res['config']}: not measured — {res['not_measured']}"
    lines = [f"{res['config']}: healthy after {res['startup_s']:.0f} s"]
    for wl, sweep in res["sweeps"].items():
        cap, hit = sweep["capacity"], res["prefix_hit_rate"].get(wl)
        hits = f", prefix-cache hits {hit:.0%}" if hit is not None else ""
        if "status" in sweep:  # a capacity search
            tok = f" → {cap['output_tok_per_s']:.1f} output tok/s at {cap['load']:g}" if cap \
                else ""
            lines.append(f"  {wl}: {describe_bounds(sweep)}{tok}{hits}; "
                         f"{sweep['points_measured']} load points in {sweep['wall_s']:.0f} s")
        elif cap:
            top = cap["load"] == max(r["load"] for r in sweep["rows"])
            lines.append(f"  {wl}: capacity {'≥ ' if top else ''}load {cap['load']:g} → "
                         f"{cap['output_tok_per_s']:.1f} output tok/s (TTFT p99 "
                         f"{cap['ttft_p99_ms']:.0f} ms){hits}; sweep took {sweep['wall_s']:.0f} s")
        else:
            lines.append(f"  {wl}: no tested load met the SLO{hits}; sweep took "
                         f"{sweep['wall_s']:.0f} s")
    return "\n".join(lines)


def slug(text: str) -> str:
    """A file- and scalar-name-safe version of a config label or workload name."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def verdicts(rows: list[dict], workloads: list[str], baseline: str, model: str) -> list[dict]:
    """Per workload: the cheapest config that met the SLO against the baseline, as numbers
    and as the sentence that states them (labkit.cost.per_token.cost_sentence).

    `lower_bound` is True when the best or the baseline capacity is only a lower bound
    (even its highest tested load met the SLO): the real saving may then differ.
    """
    from labkit.cost.per_token import cheapest, cost_sentence, saving_percent

    costs = costs_by_workload(rows)
    out = []
    for wl in workloads:
        v = {"workload": wl, "best": None, "baseline": baseline, "usd_best": None,
             "usd_baseline": None, "saving_pct": None, "lower_bound": False,
             "sentence": None, "why": None}
        c = costs.get(wl)
        if not c:
            v["why"] = ("no config met the SLO on this workload: relax the SLO limits or "
                        "test lower loads")
            out.append(v)
            continue
        best = cheapest(c)
        status = {r["config"]: r["status"] for r in rows if r["workload"] == wl}
        v.update(best=best, usd_best=c[best],
                 sentence=cost_sentence(model, wl, best, baseline, c),
                 lower_bound=any("lower bound" in status.get(k, "") for k in (best, baseline)))
        if baseline in c:
            v.update(usd_baseline=c[baseline], saving_pct=saving_percent(c[baseline], c[best]))
        else:
            v["why"] = f"the baseline {baseline} met the SLO at no tested load"
        out.append(v)
    return out


# --- recording (lab 23 glue: one call per idea instead of a loop in a notebook cell) -------

def record_capacity(rec, rows: list[dict]) -> None:
    """Each config × workload's capacity and prices as scalars; `capacity_status__…` says
    whether the capacity was bracketed or is only a lower bound (labkit.cost reads it)."""
    for r in rows:
        name = f"{slug(r['config'])}__{slug(r['workload'])}"
        if r["usd_per_1m_output_tokens"] is None:
            rec.not_measured(f"capacity_tok_s__{name}", r["reason"])
            continue
        rec.scalar(f"capacity_status__{name}", r["capacity_status"])
        rec.scalar(f"capacity_tok_s__{name}", r["output_tok_per_s_at_slo"], unit="tok/s",
                   note=r["status"])
        rec.scalar(f"capacity_load_low__{name}", r["load_low"], unit="concurrency")
        if r["load_high"] is not None:
            rec.scalar(f"capacity_load_high__{name}", r["load_high"], unit="concurrency")
        rec.scalar(f"usd_per_1m__{name}", round(r["usd_per_1m_output_tokens"], 4), unit="$",
                   note="per 1M output tokens")
        if r["usd_per_1m_total_tokens"] is not None:
            rec.scalar(f"usd_per_1m_total__{name}", round(r["usd_per_1m_total_tokens"], 4),
                       unit="$", note="per 1M prompt + output tokens")


def record_verdicts(rec, rows: list[dict], workloads: list[str], baseline: str, model: str,
                    gpu_present: bool) -> list[str]:
    """Record each workload's verdict; return the sentences to print.

    A saving is recorded only when both capacities behind it were bracketed: from a lower
    bound the true saving could be larger, smaller or of the other sign, so the record says
    not_measured with the reason, and the case study (lab 42) quotes no X from it."""
    lines = []
    for v in verdicts(rows, workloads, baseline, model):
        w = slug(v["workload"])
        if v["best"] is None:
            lines.append(f"{v['workload']}: {v['why']}")
            rec.not_measured(f"saving_pct__{w}", v["why"])
            continue
        caveat = " (a capacity here is only a lower bound)" if v["lower_bound"] else ""
        lines.append(v["sentence"] + caveat + ("." if gpu_present else
                                               ". (GPU price, CPU measurement)"))
        rec.text(f"verdict__{w}", v["sentence"] + caveat)
        rec.scalar(f"best__{w}", v["best"])
        rec.scalar(f"lower_bound__{w}", "yes" if v["lower_bound"] else "no")
        rec.scalar(f"usd_per_1m_best__{w}", round(v["usd_best"], 4), unit="$")
        if v["saving_pct"] is None:
            rec.not_measured(f"saving_pct__{w}", v["why"])
            continue
        rec.scalar(f"usd_per_1m_baseline__{w}", round(v["usd_baseline"], 4), unit="$")
        if v["lower_bound"]:
            rec.not_measured(f"saving_pct__{w}", "a capacity behind it is only a lower bound "
                             "(the SLO never broke): raise the search's max load")
        else:
            rec.scalar(f"saving_pct__{w}", round(v["saving_pct"], 1), unit="%")
    return lines
