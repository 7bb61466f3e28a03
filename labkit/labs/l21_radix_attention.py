"""What lab 21 (RadixAttention vs vLLM's hash prefix cache) runs, so its cells stay thin.

    write_traces        the four classic workloads as JSONL files, read back as requests
    trace_stats         what each trace holds, and the best any prefix cache could hit
    capacity_sweep      hash vs radix (whole-leaf and tail eviction) hit rates at several
                        KV capacities and block sizes
    radix_behind_hash   the (workload, capacity) cells where a radix cache hit less than hash
    block_size_sweep    at unlimited capacity: what block rounding costs the hash cache
    rounding_example    two prompts sharing 100 tokens: 96 hit with 16-token blocks, 100 radix
    hot_cold_trace      a hot shared prompt plus a few cold requests: LPM's starvation case
    policy_comparison   FCFS vs LPM on one trace: hit rate, mean and tail wait
    plot_*              the figures

Everything here runs the simulator (simulate.py): no model, a toy clock, exact token counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labkit.kvcache import simulate as sim
from labkit.kvcache import trace_file, traces
from labkit.kvcache.hash_cache import HashPrefixCache
from labkit.kvcache.radix_cache import RadixPrefixCache

CACHE_STYLES = {"radix": ("tab:green", "-"), "radix tail": ("tab:olive", "-."),
                "hash": ("tab:blue", "--"), "none": ("grey", ":")}
MARKERS = {"radix": "o", "radix tail": "D"}  # hash: squares for B=16, triangles otherwise


def write_traces(out_dir, num_requests: int = 64, seed: int = 0) -> dict:
    """Generate every workload in traces.WORKLOADS, write <out_dir>/<workload>.jsonl and read
    it back (the same path `labkit kvcache simulate --trace FILE` takes)."""
    out = {}
    for w in traces.WORKLOADS:
        path = trace_file.write_jsonl(traces.generate(w, num_requests, seed),
                                      Path(out_dir) / f"{w}.jsonl")
        out[w] = trace_file.read_trace(path)
    return out


def trace_stats(requests_by_workload: dict) -> list[dict]:
    rows = []
    for w, reqs in requests_by_workload.items():
        best = sim.simulate(reqs, "radix")["summary"]  # unlimited capacity: nothing evicted
        lens = [len(r.prompt_token_ids) for r in reqs]
        rows.append({"workload": w, "requests": len(reqs), "prompt_tokens": sum(lens),
                     "mean_prompt_len": round(float(np.mean(lens)), 1),
                     "output_tokens": sum(r.output_len for r in reqs),
                     "best_hit_rate": best["hit_rate"]})
    return rows


def _label(cache: str, block_size: int, radix_evict: str = "leaf") -> str:
    if cache == "radix":
        return "radix" if radix_evict == "leaf" else "radix tail"
    return f"{cache} B={block_size}"


def capacity_sweep(requests_by_workload: dict, capacities, block_sizes=(16, 64),
                   policy: str = "fcfs", max_batch: int = 8) -> list[dict]:
    """One row per (workload, capacity, cache): hit rate and evictions. Capacity 0 or None
    means unlimited (enough KV for every request at once). "radix" evicts whole leaves as
    SGLang does; "radix tail" evicts only the tokens it needs from the end of a leaf."""
    rows = []
    caches = [("radix", 1, "leaf"), ("radix", 1, "tail")] + [("hash", b, "leaf") for b in block_sizes]
    for w, reqs in requests_by_workload.items():
        for cap in capacities:
            for cache, bs, evict in caches:
                s = sim.simulate(reqs, cache, bs, cap or None, policy, max_batch,
                                 radix_evict=evict)["summary"]
                rows.append({"workload": w, "capacity_tokens": cap or "unlimited",
                             "cache": _label(cache, bs, evict), "hit_rate": s["hit_rate"],
                             "cached_tokens": s["cached_tokens"],
                             "prefill_tokens_computed": s["prefill_tokens_computed"],
                             "evicted_tokens": s["evicted_tokens"]})
    return rows


def radix_behind_hash(rows: list[dict], hash_label: str = "hash B=16") -> list[dict]:
    """Cells of a capacity sweep where a radix variant cached fewer prompt tokens than the
    hash cache `hash_label`: one row per (workload, capacity) with both radix results."""
    by_key = {(r["workload"], r["capacity_tokens"], r["cache"]): r["cached_tokens"] for r in rows}
    cells = dict.fromkeys((r["workload"], r["capacity_tokens"]) for r in rows)
    out = []
    for w, cap in cells:
        h = by_key[(w, cap, hash_label)]
        leaf, tail = by_key[(w, cap, "radix")], by_key[(w, cap, "radix tail")]
        if leaf < h or tail < h:
            out.append({"workload": w, "capacity_tokens": cap, hash_label: h,
                        "radix": leaf, "radix tail": tail})
    return out


def plot_capacity_sweep(rows: list[dict], axes=None):
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    if axes is None:
        _, axes = plt.subplots(1, len(workloads), figsize=(3.2 * len(workloads), 3.2),
                               sharey=True)
    caps = list(dict.fromkeys(r["capacity_tokens"] for r in rows))
    for ax, w in zip(np.atleast_1d(axes), workloads):
        for label in dict.fromkeys(r["cache"] for r in rows):
            mine = {r["capacity_tokens"]: r["hit_rate"] for r in rows
                    if r["workload"] == w and r["cache"] == label}
            colour, style = CACHE_STYLES[label.split(" B=")[0]]
            marker = MARKERS.get(label, "s" if label.endswith("=16") else "^")
            ax.plot(range(len(caps)), [100 * mine[c] for c in caps], marker=marker, ls=style,
                    color=colour, alpha=0.85, label=label)
        ax.set_xticks(range(len(caps)), [str(c) for c in caps], rotation=30, fontsize=8)
        ax.set_title(w, fontsize=9)
        ax.set_xlabel("KV capacity (tokens)", fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("prompt tokens hit (%)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return axes


def block_size_sweep(requests_by_workload: dict, block_sizes=(1, 4, 16, 64, 256)) -> list[dict]:
    """Unlimited capacity (no eviction): only the hash cache's block rounding differs."""
    rows = []
    for w, reqs in requests_by_workload.items():
        radix = sim.simulate(reqs, "radix")["summary"]
        for bs in block_sizes:
            s = sim.simulate(reqs, "hash", bs)["summary"]
            rows.append({"workload": w, "block_size": bs, "hash_hit_rate": s["hit_rate"],
                         "radix_hit_rate": radix["hit_rate"],
                         "tokens_lost_to_rounding": radix["cached_tokens"] - s["cached_tokens"],
                         "lost_per_request": round((radix["cached_tokens"] - s["cached_tokens"])
                                                   / len(reqs), 1)})
    return rows


def plot_block_size_sweep(rows: list[dict], ax=None):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    colours = plt.get_cmap("tab10")
    for i, w in enumerate(dict.fromkeys(r["workload"] for r in rows)):
        mine = [r for r in rows if r["workload"] == w]
        ax.plot([r["block_size"] for r in mine], [100 * r["hash_hit_rate"] for r in mine],
                "o--", color=colours(i), label=f"{w}: hash")
        ax.axhline(100 * mine[0]["radix_hit_rate"], color=colours(i), lw=0.8,
                   label=f"{w}: radix")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hash cache block size (tokens)")
    ax.set_ylabel("prompt tokens hit (%)")
    ax.legend(fontsize=7, ncol=2)
    return ax


def rounding_example(shared: int = 100, block_size: int = 16, seed: int = 0) -> list[dict]:
    """Two prompts that share their first `shared` tokens; the second looks up the first."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(1, 30000, shared).tolist()
    first = prefix + rng.integers(1, 30000, 40).tolist()
    second = prefix + rng.integers(1, 30000, 40).tolist()
    rows = []
    for cache in (HashPrefixCache(4096, block_size), RadixPrefixCache(4096)):
        cache.insert(first)
        hit = cache.match_prompt(second).hit_len
        rows.append({"cache": cache.name if cache.name == "radix" else f"hash B={block_size}",
                     "shared_tokens": shared, "hit_tokens": hit, "recomputed": shared - hit})
    return rows


def hot_cold_trace(num_hot: int = 96, num_cold: int = 12, hot_rate: float = 8.0,
                   cold_rate: float = 1.0, output_len: int = 32, seed: int = 0) -> list:
    """Requests sharing two hot system prompts, mixed with cold requests whose prompts share
    nothing. Under load, LPM keeps picking hot requests (long cached prefix) first."""
    hot = traces.shared_prompt(num_hot, seed, num_groups=2, rate=hot_rate, output_len=output_len)
    gaps = np.random.default_rng(seed + 1).exponential(1.0 / cold_rate, num_cold)
    cold = []
    for i, t in enumerate(np.cumsum(gaps)):  # each its own seed: no two cold prompts share
        (r,) = traces.shared_prompt(1, seed + 1000 + i, num_groups=1, output_len=output_len)
        cold.append({**r, "id": f"cold-{i}", "arrival": round(float(t), 4)})
    for r in hot:
        r["id"] = r["id"].replace("shared", "hot")
    rows = sorted(hot + cold, key=lambda r: r["arrival"])
    return [trace_file.TraceRequest(r["id"], r["arrival"], r["prompt_token_ids"],
                                    r["output_len"], line=i + 1) for i, r in enumerate(rows)]


def policy_comparison(requests, capacity_tokens=None, max_batch: int = 4):
    """FCFS vs LPM with the radix cache: a summary row per policy, and every request's wait."""
    rows, waits = [], {}
    for policy in sim.POLICIES:
        out = sim.simulate(requests, "radix", capacity_tokens=capacity_tokens, policy=policy,
                           max_batch=max_batch)
        s, per = out["summary"], out["requests"]
        waits[policy] = {r["id"]: r["wait_s"] for r in per}
        cold = [r["wait_s"] for r in per if r["id"].startswith("cold")]
        rows.append({"policy": policy, "hit_rate": s["hit_rate"], "mean_wait_s": s["mean_wait_s"],
                     "p50_wait_s": round(float(np.percentile([r["wait_s"] for r in per], 50)), 3),
                     "p99_wait_s": s["p99_wait_s"],
                     "max_wait_s": round(max(r["wait_s"] for r in per), 3),
                     "cold_mean_wait_s": round(float(np.mean(cold)), 3) if cold else None})
    return rows, waits


def plot_wait_cdf(waits: dict, ax=None):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    for policy, colour in zip(waits, ("tab:blue", "tab:orange")):
        w = np.sort(list(waits[policy].values()))
        ax.step(w, np.arange(1, len(w) + 1) / len(w), where="post", color=colour, label=policy)
        cold = sorted(v for k, v in waits[policy].items() if k.startswith("cold"))
        ax.plot(cold, [np.searchsorted(w, c, side="right") / len(w) for c in cold], "x",
                color=colour, label=f"{policy}: cold requests")
    ax.set_xlabel("wait in queue (s, simulator's toy clock)")
    ax.set_ylabel("share of requests")
    ax.legend(fontsize=8)
    return ax
