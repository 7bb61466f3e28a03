"""Gathered K/V that attention.py keeps from one step to the next.

On a GPU, a paged-attention kernel reads each sequence's K/V straight out of its blocks.
Plain torch cannot: attention.py first *gathers* a batch's blocks into one dense tensor,
which costs a copy of the whole context of every sequence, every step, in every layer —
on a CPU, where attention is bound by memory traffic, that copy is most of its cost.

But from one decode step to the next, a sequence's context only grows by the token it
just produced; everything before is unchanged. So each decoding sequence keeps a row in
a gathered tensor (per layer) for as long as it keeps decoding: a step appends the new
token's K/V to the rows of the sequences that continue, gathers rows only for sequences
that are new to the batch, and leaves the rows of finished ones as holes for the next
newcomers (masked out meanwhile). The paged cache stays the source of truth; a row is
only a copy of what its blocks hold. Shared prefixes (cascade attention) are kept too,
keyed by their block ids: those blocks are locked and immutable while a group decodes.

The price is memory: the kept rows, per layer. They are kept only while they hold no
more tokens, all layers together, than `max_keep_tokens` (the KV cache's own capacity).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEADROOM_TOKENS = 64  # a fresh gather leaves room to append this many tokens in place


@dataclass
class Kept:
    keys: list  # per row: the (request id, skipped prefix) it holds, or None (a hole)
    lens: list  # per row: tokens it holds
    width: int  # tokens per row


@dataclass
class GatherPlan:
    """How one decode batch gets its K/V this step (built once, used by every layer)."""

    name: str  # "plain" or "suffix"
    width: int  # tokens per row (a multiple of block_size)
    keep: bool  # the rows live across steps (per layer) rather than in scratch memory
    positions: list = field(default_factory=list)  # kept row of each batch row
    num_rows: int = 0  # rows of the gathered tensor, holes included
    gather: list = field(default_factory=list)  # batch rows to gather anew
    append: list = field(default_factory=list)  # batch rows that get one token appended
    full: bool = True  # gather every row into a fresh layout


class Workspace:
    def __init__(self, max_keep_tokens: int = 0):
        self.max_keep_tokens = max_keep_tokens
        self.scratch = {}  # name -> flat buffer reused every layer and step
        self.kept_bufs = {}  # (name, layer) -> flat buffer holding the kept rows
        self.kept = {}  # name -> Kept
        self.prefixes = {}  # (layer, prefix key) -> (K, V) of the shared prefixes

    def plan(self, name, keys, lens, block_size, num_layers) -> GatherPlan:
        """keys: one hashable per batch row ((request id, skipped blocks)); lens: tokens per
        row, this step's token included."""
        prev = self.kept.get(name)
        if prev is not None and max(lens) <= prev.width:
            plan = self._reuse(prev, name, keys, lens)
            if plan is not None:
                return plan
        width = -(-(max(lens) + HEADROOM_TOKENS) // block_size) * block_size
        keep = len(keys) * width * num_layers <= self.max_keep_tokens
        if keep:
            self.kept[name] = Kept(list(keys), list(lens), width)
        else:
            self.kept.pop(name, None)
            width = -(-max(lens) // block_size) * block_size
        n = len(keys)
        return GatherPlan(name, width, keep, list(range(n)), n, list(range(n)), [], True)

    def _reuse(self, prev: Kept, name, keys, lens) -> GatherPlan | None:
        row_of = {k: r for r, k in enumerate(prev.keys) if k is not None}
        positions, gather, append, taken = [None] * len(keys), [], [], set()
        for i, k in enumerate(keys):
            r = row_of.get(k)
            if r is not None:
                positions[i] = r
                taken.add(r)
                (append if lens[i] == prev.lens[r] + 1 else gather).append(i)
        holes = [r for r in range(len(prev.keys)) if r not in taken]
        new = [i for i, p in enumerate(positions) if p is None]
        if len(new) > len(holes) or len(holes) - len(new) > max(4, len(keys) // 4):
            return None  # no room, or too many holes: compact with a fresh gather
        for i, r in zip(new, holes):
            positions[i] = r
        gather += new
        prev.keys = [None] * len(prev.keys)
        for i, r in enumerate(positions):
            prev.keys[r], prev.lens[r] = keys[i], lens[i]
        return GatherPlan(name, prev.width, True, positions, len(prev.keys), gather, append, False)

    def forget(self, name) -> None:
        self.kept.pop(name, None)

    def keep_prefixes(self, key) -> None:
        """Forget gathered prefixes this step does not use (their blocks may be reused)."""
        self.prefixes = {k: kv for k, kv in self.prefixes.items() if k[1] == key}

    def buffers(self, plan: GatherPlan, layer: int, shape, like):
        """K and V tensors of `shape` for this batch: kept per layer, or scratch."""
        store, key = (self.kept_bufs, (plan.name, layer)) if plan.keep else (self.scratch, plan.name)
        return self._take(store, key, shape, like)

    def take(self, name, shape, like):
        """Scratch K and V buffers (prefill gathers, new rows)."""
        return self._take(self.scratch, name, shape, like)

    @staticmethod
    def _take(store, key, shape, like):
        import math

        import torch

        n = 2 * math.prod(shape)
        buf = store.get(key)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = store[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[: n // 2].view(shape), buf[n // 2 : n].view(shape)
