"""What lab 20 (PagedAttention) shows, kept out of the notebook so its cells stay thin.

    plot_reservation   what a contiguous max-length reservation holds vs what is used
    grow_sequences     a few sequences that grow in turns, so their blocks interleave
    plot_block_tables  the figure: logical blocks of each sequence -> physical pool
    fork_steps         copy-on-write fork for parallel sampling, ref counts step by step
    plot_fragmentation / plot_fit   the waste study's two figures (waste.py holds the maths)

The op against dense SDPA (correctness and timing) is labkit.kvcache.paged_vs_dense: the
GPU check runs it too.

torch is imported inside the functions that need it (the module imports with numpy alone).
"""

from __future__ import annotations

import random

import numpy as np

from labkit.kvcache.block_pool import BlockPool, BlockTable

# -- why contiguous reservation wastes memory -----------------------------------------------


def plot_reservation(lengths, max_model_len: int, n: int = 12, ax=None):
    """The first n sequences: prompt, output, and the slab reserved for tokens never used."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    p = np.array([a for a, _ in lengths[:n]])
    o = np.array([b for _, b in lengths[:n]])
    x = np.arange(len(p))
    ax.bar(x, p, color="#48c", label="prompt")
    ax.bar(x, o, bottom=p, color="#8c4", label="output")
    ax.bar(x, max_model_len - p - o, bottom=p + o, color="#ddd", edgecolor="#c44",
           label=f"reserved, never used (max_model_len {max_model_len})")
    ax.set_xlabel("sequence")
    ax.set_ylabel("KV slots (tokens)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    return ax


# -- block tables ---------------------------------------------------------------------------


def grow_sequences(pool: BlockPool, final_lens: list[int], chunk: int = 5,
                   seed: int = 0) -> list[BlockTable]:
    """Grow one block table per sequence, a few tokens at a time in a random order.

    Real requests arrive and decode concurrently, so consecutive blocks of one sequence
    end up anywhere in the pool: that is why a *table* is needed to find them.
    """
    rng = random.Random(seed)
    tables = [pool.new_table(0) for _ in final_lens]
    while any(t.num_tokens < n for t, n in zip(tables, final_lens)):
        i = rng.choice([i for i, (t, n) in enumerate(zip(tables, final_lens)) if t.num_tokens < n])
        pool.append_tokens(tables[i], min(chunk, final_lens[i] - tables[i].num_tokens))
    return tables


def block_table_rows(tables: list[BlockTable]) -> list[dict]:
    """One row per sequence: its block table and how full its last block is."""
    rows = []
    for i, t in enumerate(tables):
        last = t.num_tokens - (len(t.block_ids) - 1) * t.block_size if t.block_ids else 0
        rows.append({"sequence": f"s{i}", "tokens": t.num_tokens,
                     "block_table": " ".join(map(str, t.block_ids)),
                     "last_block_fill": f"{last}/{t.block_size}",
                     "unused_slots": len(t.block_ids) * t.block_size - t.num_tokens})
    return rows


def plot_block_tables(tables: list[BlockTable], num_blocks: int, axes=None):
    """Left: each sequence's logical blocks (label = physical block id, fill = tokens held).
    Right: the physical pool, each block coloured by the sequence that owns it."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(tables) + 1.8),
                               gridspec_kw={"width_ratios": [1.1, 1]})
    left, right = axes
    colours = plt.get_cmap("tab10")
    owner = {}
    for s, t in enumerate(tables):
        for j, b in enumerate(t.block_ids):
            filled = min(t.block_size, t.num_tokens - j * t.block_size) / t.block_size
            left.add_patch(plt.Rectangle((j, -s - 0.4), 0.92, 0.8, fill=False, lw=1))
            left.add_patch(plt.Rectangle((j, -s - 0.4), 0.92 * filled, 0.8, color=colours(s),
                                         alpha=0.55))
            left.text(j + 0.46, -s, str(b), ha="center", va="center", fontsize=8)
            owner[b] = (s, j)
    width = max(len(t.block_ids) for t in tables)
    left.set_xlim(-0.2, width + 0.2)
    left.set_ylim(-len(tables) + 0.4, 0.6)
    left.set_yticks([-s for s in range(len(tables))],
                    [f"s{s} ({t.num_tokens} tok)" for s, t in enumerate(tables)])
    left.set_xticks([j + 0.46 for j in range(width)], [str(j) for j in range(width)])
    left.set_xlabel("logical block (position // block_size)")
    left.set_title("block tables: box = physical block id, shading = tokens held", fontsize=9)
    cols = int(np.ceil(np.sqrt(num_blocks * 2)))
    for b in range(num_blocks):
        x, y = b % cols, -(b // cols)
        s, j = owner.get(b, (None, None))
        right.add_patch(plt.Rectangle((x, y - 0.45), 0.92, 0.9, lw=0.8, fill=s is not None,
                                      ec="black", fc=colours(s) if s is not None else "white",
                                      alpha=0.55 if s is not None else 1))
        right.text(x + 0.46, y, f"{b}" + (f"\ns{s}.{j}" if s is not None else ""),
                   ha="center", va="center", fontsize=6.5)
    right.set_xlim(-0.2, cols + 0.2)
    right.set_ylim(-(num_blocks - 1) // cols - 0.6, 0.6)
    right.axis("off")
    right.set_title("physical KV pool: block id, owner s<seq>.<logical block>", fontsize=9)
    return axes


# -- copy-on-write fork -----------------------------------------------------------------------


def fork_steps(prompt_len: int = 37, n: int = 3, block_size: int = 16,
               new_tokens: int = 2) -> list[dict]:
    """Parallel sampling with n samples: fork the prompt's table n-1 times, then each sample
    decodes `new_tokens` tokens. Rows: the pool's state after each step."""
    pool = BlockPool(32, block_size)
    parent = pool.new_table(prompt_len)
    rows = []

    def snap(step, copies=()):
        used = sorted({b for t in samples for b in t.block_ids})
        rows.append({"step": step, "tables": " | ".join(" ".join(map(str, t.block_ids))
                                                         for t in samples),
                     "ref_counts": " ".join(f"{b}:{pool.ref_cnt[b]}" for b in used),
                     "blocks_used": pool.num_used_blocks,
                     "blocks_without_sharing": sum(len(t.block_ids) for t in samples),
                     "copy_on_write": " ".join(f"{s}->{d}" for s, d in copies)})

    samples = [parent]
    snap(f"prompt ({prompt_len} tokens)")
    samples += [pool.fork(parent) for _ in range(n - 1)]
    snap(f"fork into {n} samples")
    for step in range(new_tokens):
        for i, t in enumerate(samples):
            snap(f"decode {step + 1}, sample {i}", pool.append_tokens(t, 1))
    pool.check_invariants()
    return rows


# -- the waste study's figures --------------------------------------------------------------


def plot_fragmentation(rows: list[dict], ax=None):
    """Paged rows of waste.waste_table: internal fragmentation (% of reserved) vs block size,
    with the contiguous schemes as horizontal lines."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    paged = [r for r in rows if r["scheme"] == "paged"]
    ax.plot([r["block_size"] for r in paged], [100 * r["waste_frac"] for r in paged], "o-",
            label="paged: unused tail of last block")
    for r, style in zip([r for r in rows if r["scheme"] in ("max", "pow2")], ("--", ":")):
        ax.axhline(100 * r["waste_frac"], color="tab:red", ls=style,
                   label=f"contiguous, reserve {r['scheme']}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("block size (tokens)")
    ax.set_ylabel("wasted share of reserved KV (%)")
    ax.legend(fontsize=8)
    return ax


def plot_fit(rows: list[dict], ax=None):
    """Bars of waste.fit_table: how many sequences each scheme fits in the same KV budget."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    labels = [r["scheme"] if r["scheme"] != "paged" else f"paged B={r['block_size']}"
              for r in rows]
    bars = ax.bar(labels, [r["sequences_fit"] for r in rows],
                  color=["#c44" if r["scheme"] != "paged" else "#48c" for r in rows])
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("sequences that fit at once")
    ax.set_title(f"KV budget {rows[0]['budget_tokens']:,} tokens", fontsize=9)
    return ax
