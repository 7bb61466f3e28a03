"""Cascade attention: read a prefix shared by many decoding sequences once, not once each.

With a prefix cache, sequences that share a system prompt point at the *same* KV blocks
(their block tables start with the same block ids). Plain paged attention still gathers
those blocks once per sequence. Cascade attention (FlashInfer; vLLM's cascade backend)
splits each sequence's softmax over its context into two parts:

    shared prefix P (the group's common blocks)   own suffix S (everything after)

    softmax over P ∪ S = a weighted mix of the softmax over P and the softmax over S,

with weights given by each part's log-sum-exp (lse = log Σ exp(score)):

    lse = log(e^lse_P + e^lse_S)
    out = e^(lse_P − lse) · out_P + e^(lse_S − lse) · out_S

This is exact (up to float rounding), the same trick FlashAttention uses between tiles.
The prefix part stacks the queries of every sequence in a group into one matmul against
K/V gathered once, and all groups go through one padded batch (PrefixBatch). On a CPU,
attention is bound by memory traffic, so 32 sequences over 4 shared 400-token system
prompts read ~8x less KV. The prefixes' blocks are locked and immutable while their
groups decode, so the gathered copy is also kept from step to step (attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit.engine.sequence import common_prefix_len

MIN_SHARED_TOKENS = 32  # neighbours must share at least this much to be grouped
MIN_SAVED_TOKENS = 256  # (members − 1) × shared tokens: below this the extra ops cost more
# ... and all groups of a step together, or no cascade at all. Why a threshold: the cascade
# is ~30 more small tensor ops per layer, and the gathered prefixes and suffix rows are
# rebuilt whenever a group's members change, which with few sequences is every few steps;
# with a handful of pairs that costs more than the reads it spares, with groups of eight it
# wins clearly (the closed-loop figures: benchmarks/README.md, "Change 2").
# vLLM's FlashAttention backend decided alike (use_cascade_attention: never under 8
# requests or a 256-token common prefix); vLLM 0.32 has removed cascade attention.
MIN_STEP_SAVED_TOKENS = 4096


@dataclass
class PrefixBatch:
    """All shared-prefix groups of one step, padded into one batch so the whole cascade is
    a handful of tensor ops whatever the number of groups (G groups, at most M members)."""

    key: tuple  # the groups' prefix block ids: names this batch of prefixes across steps
    blocks: object  # long [G * Wp]: each group's prefix blocks, padded to the longest
    padding: object  # bool [1, G, 1, Wp * block_size]: True = not part of that prefix
    query_index: object  # long [G * M]: suffix-tensor row of each member slot (padded)
    member_pos: object  # long [n]: slot (g * M + j) of each grouped sequence, in order

    def attend(self, q, k, v, scale):
        """Every group's member queries against its prefix, one matmul for all groups.
        q [Hkv, R, Gq, D] (the suffix tensor's rows), k, v [Hkv, G, P, D]. Returns out
        [Hkv, n, Gq, D] and lse [Hkv, n, Gq, 1] for the n grouped sequences, in order."""
        hkv, _, gq, d = q.shape
        groups = k.shape[1]
        qp = q[:, self.query_index].reshape(hkv, groups, -1, d)  # [Hkv, G, M * Gq, D]
        o, lse = attend_with_lse(qp, k, v, self.padding, scale)
        o = o.reshape(hkv, -1, gq, d)[:, self.member_pos]
        return o, lse.reshape(hkv, -1, gq, 1)[:, self.member_pos]


def prefix_batch(groups, decodes, block_size, as_tensor, positions) -> PrefixBatch:
    """groups: (member indices, shared blocks) from find_shared_prefixes; the grouped
    decode sequences are the members in that order, and positions[j] is the row of the
    j-th one in the suffix batch's tensor (attention.py)."""
    import numpy as np
    import torch

    width = max(n for _, n in groups)
    most = max(len(members) for members, _ in groups)
    blocks = np.zeros((len(groups), width), dtype=np.int64)
    padding = np.ones((len(groups), width * block_size), dtype=bool)
    query_index = np.zeros((len(groups), most), dtype=np.int64)
    member_pos, row, key = [], 0, []
    for g, (members, n) in enumerate(groups):
        prefix = decodes[members[0]][0][:n]
        key.append(tuple(prefix))
        blocks[g, :n] = prefix
        padding[g, : n * block_size] = False
        query_index[g] = positions[row]  # padding slots repeat the first member: dropped
        query_index[g, : len(members)] = positions[row : row + len(members)]
        member_pos += [g * most + j for j in range(len(members))]
        row += len(members)
    return PrefixBatch(tuple(key), as_tensor(blocks.reshape(-1)),
                       as_tensor(padding[None, :, None, :], torch.bool), as_tensor(query_index.reshape(-1)),
                       as_tensor(member_pos))


def attend_with_lse(q, k, v, padding, scale):
    """softmax(q kᵀ · scale) v together with the log-sum-exp of each row.
    q [Hkv, B, G, D], k and v [Hkv, B, L, D], padding [1, B, 1, L] (True = not a key) or None.
    Returns out [Hkv, B, G, D] and lse [Hkv, B, G, 1]."""
    import torch

    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)  # [Hkv, B, G, L]
    if padding is not None:
        scores.masked_fill_(padding, float("-inf"))
    # The scores are the big tensor here, so touch them as few times as possible: subtract
    # the row max and exponentiate in place, sum, and normalise the small output instead of
    # the weights. (logsumexp, then exp(scores - lse), would read them twice more.)
    row_max = scores.amax(dim=-1, keepdim=True)
    weights = scores.sub_(row_max).exp_()
    total = weights.sum(dim=-1, keepdim=True)
    return torch.matmul(weights, v).div_(total), row_max + total.log()


def merge(o1, lse1, o2, lse2):
    """Combine two partial attentions over disjoint key sets into the full one."""
    import torch

    lse = torch.logaddexp(lse1, lse2)
    return o1 * torch.exp(lse1 - lse) + o2 * torch.exp(lse2 - lse), lse


def find_shared_prefixes(decodes: list, block_size: int) -> list[tuple[list[int], int]]:
    """Groups of decode sequences whose block tables start with the same blocks.

    decodes: (block_table, context_len) per sequence. Returns (member indices, shared
    blocks) per group worth grouping. Sorting the tables puts sequences with a common
    prefix next to each other; a group is a run of neighbours that share at least
    MIN_SHARED_TOKENS, and its prefix is the shortest of their pairwise common prefixes.
    A sequence's newest block is never shared (its last token was just written there).
    Groups that would save too few reads are dropped, and so is the whole cascade when all
    groups together save fewer than MIN_STEP_SAVED_TOKENS.
    """
    order = sorted(range(len(decodes)), key=lambda i: decodes[i][0])
    runs, run, shared = [], [order[0]], None
    for prev, cur in zip(order, order[1:]):
        lcp = common_prefix_len(decodes[prev][0], decodes[cur][0])
        lcp = min(lcp, (decodes[prev][1] - 1) // block_size, (decodes[cur][1] - 1) // block_size)
        if lcp * block_size >= MIN_SHARED_TOKENS:
            run.append(cur)
            shared = lcp if shared is None else min(shared, lcp)
        else:
            runs.append((run, shared))
            run, shared = [cur], None
    runs.append((run, shared))

    def saved(members, n):  # token reads the group spares: all members but one skip the prefix
        return (len(members) - 1) * n * block_size

    groups = [(members, n) for members, n in runs
              if len(members) > 1 and saved(members, n) >= MIN_SAVED_TOKENS]
    return groups if sum(saved(*g) for g in groups) >= MIN_STEP_SAVED_TOKENS else []
