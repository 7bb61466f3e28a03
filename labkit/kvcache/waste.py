"""The memory-waste study: contiguous KV reservation vs paged blocks.

Before PagedAttention, a serving system stored each request's KV in one contiguous slab,
sized when the request started — before anyone knows how long the answer will be. The
PagedAttention paper (Kwon et al., SOSP'23, section 3 and Fig. 2) names the waste:
- reserved: slots held now for tokens the request will produce later;
- internal fragmentation: slots past the request's final length, never used at all;
- (external fragmentation between slabs, which this study leaves out: it only adds to it).
Its baselines reserve, per request (the paper's Orca variants):
    max:    max_model_len tokens (the request might run that long)
    pow2:   the final length rounded up to a power of two (a buddy-style allocator)
    oracle: exactly the final length (impossible in practice: it needs the future)
Paged KV reserves ceil(live_tokens / block_size) blocks: waste is under one block per sequence.

Lengths come from a seeded lognormal (right-skewed like real chat traffic: most prompts and
answers short, a long tail). The defaults are illustrative; pass means that match your data.
Everything returns plain dicts (rows), ready for a table, a CSV or `plot_waste`.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("max", "pow2", "oracle", "paged")


def sample_lengths(
    n: int = 1000,
    seed: int = 0,
    prompt_mean: float = 160,
    output_mean: float = 340,
    sigma: float = 1.0,
    max_model_len: int = 2048,
) -> list[tuple[int, int]]:
    """(prompt_len, output_len) pairs, lognormal with the given means, capped at max_model_len."""
    rng = np.random.default_rng(seed)

    def draw(mean):
        return np.maximum(1, np.round(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, n))).astype(
            int
        )

    prompts = np.minimum(draw(prompt_mean), max_model_len - 1)
    outputs = np.minimum(
        draw(output_mean), max_model_len - prompts
    )  # the request stops at the limit
    return list(zip(prompts.tolist(), outputs.tolist()))


def kv_bytes_per_token(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int = 2
) -> int:
    """K and V (the 2) for every layer and KV head.

    e.g. Llama-3-8B: 32 layers, 8 KV heads, head_dim 128, bf16 -> 128 KiB per token."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def live_tokens(lengths, at: str = "end", seed: int = 0) -> np.ndarray:
    """Tokens each sequence holds at a moment: at the 'end' of generation (prompt + output)
    or at a 'random' moment (prompt + a uniform share of the output generated so far)."""
    p = np.array([a for a, _ in lengths])
    o = np.array([b for _, b in lengths])
    if at == "end":
        return p + o
    if at == "random":
        return p + np.floor(np.random.default_rng(seed).uniform(0, 1, len(o)) * (o + 1)).astype(
            int
        ).clip(max=o)
    raise ValueError(f"at must be 'end' or 'random', not {at!r}")


def reserved_tokens(
    lengths, scheme: str, live: np.ndarray, block_size: int = 16, max_model_len: int = 2048
) -> np.ndarray:
    """KV slots each sequence holds under a reservation scheme."""
    final = np.array([a + b for a, b in lengths])
    if scheme == "max":
        return np.full(len(final), max_model_len)
    if scheme == "pow2":
        return np.minimum(2 ** np.ceil(np.log2(np.maximum(final, 1))).astype(int), max_model_len)
    if scheme == "oracle":
        return final
    if scheme == "paged":
        return -(-live // block_size) * block_size
    raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")


def waste_row(
    lengths,
    scheme: str,
    block_size: int = 16,
    max_model_len: int = 2048,
    at: str = "end",
    seed: int = 0,
    bytes_per_token: int | None = None,
) -> dict:
    """Reserved vs used KV for all sequences at one moment, split into the paper's categories."""
    live = live_tokens(lengths, at, seed)
    final = np.array([a + b for a, b in lengths])
    reserved = reserved_tokens(lengths, scheme, live, block_size, max_model_len)
    if scheme == "paged":
        future, internal = np.zeros_like(live), reserved - live  # only the last block's tail
    else:
        future, internal = final - live, reserved - final
    row = {
        "scheme": scheme,
        "block_size": block_size if scheme == "paged" else None,
        "at": at,
        "sequences": len(lengths),
        "used_tokens": int(live.sum()),
        "reserved_tokens": int(reserved.sum()),
        "reserved_future_tokens": int(future.sum()),
        "internal_fragmentation_tokens": int(internal.sum()),
    }
    row["wasted_tokens"] = row["reserved_tokens"] - row["used_tokens"]
    row["waste_frac"] = round(row["wasted_tokens"] / row["reserved_tokens"], 4)
    if bytes_per_token:
        row["reserved_bytes"] = row["reserved_tokens"] * bytes_per_token
        row["wasted_bytes"] = row["wasted_tokens"] * bytes_per_token
    return row


def waste_table(
    lengths,
    block_sizes=(1, 8, 16, 32, 64, 128, 256),
    max_model_len: int = 2048,
    at: str = "end",
    seed: int = 0,
    bytes_per_token: int | None = None,
) -> list[dict]:
    """One row per contiguous scheme, then one per paged block size: fragmentation vs block size."""
    rows = [
        waste_row(
            lengths,
            s,
            max_model_len=max_model_len,
            at=at,
            seed=seed,
            bytes_per_token=bytes_per_token,
        )
        for s in ("max", "pow2", "oracle")
    ]
    rows += [
        waste_row(lengths, "paged", b, max_model_len, at, seed, bytes_per_token)
        for b in block_sizes
    ]
    return rows


def sequences_that_fit(
    lengths, budget_tokens: int, scheme: str, block_size: int = 16, max_model_len: int = 2048
) -> int:
    """How many of these sequences (taken in order, each at its final length) fit in a KV
    budget of budget_tokens at once: the batch size the scheme allows."""
    final = np.array([a + b for a, b in lengths])
    reserved = reserved_tokens(lengths, scheme, final, block_size, max_model_len)
    return int(np.searchsorted(np.cumsum(reserved), budget_tokens, side="right"))


def fit_table(
    lengths, budget_tokens: int, block_size: int = 16, max_model_len: int = 2048
) -> list[dict]:
    rows = []
    for s in SCHEMES:
        n = sequences_that_fit(lengths, budget_tokens, s, block_size, max_model_len)
        rows.append(
            {
                "scheme": s,
                "block_size": block_size if s == "paged" else None,
                "budget_tokens": budget_tokens,
                "sequences_fit": n,
            }
        )
    best = max(r["sequences_fit"] for r in rows if r["scheme"] != "oracle") or 1
    for r in rows:
        r["vs_best_practical"] = round(r["sequences_fit"] / best, 3)
    return rows


def plot_waste(rows: list[dict], ax=None):
    """Bar chart of wasted share of reserved KV per scheme / block size; returns the Axes."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 3.5))
    labels = [r["scheme"] if r["scheme"] != "paged" else f"paged B={r['block_size']}" for r in rows]
    ax.bar(
        labels,
        [100 * r["waste_frac"] for r in rows],
        color=["#c44" if r["scheme"] != "paged" else "#48c" for r in rows],
    )
    ax.set_ylabel("wasted share of reserved KV (%)")
    ax.set_title(f"KV waste, {rows[0]['sequences']} sequences ({rows[0]['at']} of generation)")
    ax.tick_params(axis="x", rotation=45)
    return ax
