"""Paged attention for the engine: metadata built once per step, three kernels.

labkit.kvcache.paged_attention is the readable reference: one call handles any mix of
prefill and decode by padding every sequence to the longest query and the longest
context. Inside the engine that generality costs time: the metadata (gather indices,
masks) would be rebuilt in every layer, and a step that mixes one 300-token prefill chunk
with 31 decodes would pad all 32 queries to 300 rows. So, like vLLM's attention backends,
we split the batch and build the metadata once per step (`AttentionMetadata`):

- decodes (query length 1; the runner puts them first): one batched call. Gather each
  sequence's K/V through its block table (index_select over whole blocks), pad to the
  longest context, mask the padding: softmax(q kᵀ) v as two batched matmuls.
- shared prefixes (cascade attention, as in FlashInfer and vLLM): when several decoding
  sequences start with the *same* cached blocks — one system prompt, many questions —
  gathering that prefix once per sequence reads the same memory again and again, and on
  a CPU this memory traffic is the cost of attention. So the prefix is gathered once and
  attended by all the group's queries together; each sequence's own suffix is attended
  separately; the two partial softmaxes are merged exactly with their log-sum-exps
  (shared_prefix.py).
- prefill chunks (usually one or two per step): one call each. With no earlier context
  (a fresh prompt, no prefix-cache hit) the chunk's own K/V are all it needs: plain
  causal attention, no gather. Otherwise gather the context and use a causal mask
  shifted by the number of tokens already in the cache.

The tests check this module against labkit.kvcache's paged_attention on random batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labkit.engine.shared_prefix import (PrefixBatch, attend_with_lse, find_shared_prefixes, merge,
                                         prefix_batch)


@dataclass
class PrefillChunk:
    start: int  # first row of this sequence's queries in the flat batch
    num_tokens: int  # query length of the chunk
    blocks: object = None  # int [num_blocks] holding its context; None: no earlier context
    mask: object = None  # bool [num_tokens, num_blocks * block_size]: causal, shifted


class Workspace:
    """Scratch memory for gathered K/V, reused by every layer and every step. A fresh
    10 MB tensor per layer per step would cost more in page faults (the kernel zero-fills
    each new page) than the copy into it."""

    def __init__(self):
        self.bufs = {}
        # Gathered shared prefixes, (layer, PrefixBatch.key) -> (K, V). A prefix's blocks
        # are locked and immutable while a group decodes over it, so the copy made in one
        # step is still exact in the next: gather once, attend for the next 100 steps.
        self.prefixes = {}

    def keep_prefixes(self, key) -> None:
        """Forget gathered prefixes this step does not use (their blocks may be reused)."""
        self.prefixes = {k: kv for k, kv in self.prefixes.items() if k[1] == key}

    def take(self, name, shape, like):
        import math

        import torch

        n = 2 * math.prod(shape)  # K and V
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = self.bufs[name] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[: n // 2].view(shape), buf[n // 2 : n].view(shape)


@dataclass
class DecodeBatch:
    """Decoding sequences attended together: their blocks gathered and padded to one width."""

    rows: object  # which query rows (a slice, or a long tensor of row indices)
    blocks: object  # long [len(rows) * width]: blocks to gather, padded with block 0
    mask: object  # bool [1, len(rows), 1, width * block_size]: True = padding, not context


@dataclass
class AttentionMetadata:
    slot_mapping: object  # int [num_tokens]: where each new token's K/V is written
    plain: DecodeBatch | None = None  # decodes attended the ordinary way
    grouped: DecodeBatch | None = None  # decodes in shared-prefix groups: their own suffixes
    prefix: PrefixBatch | None = None  # the groups' shared prefixes
    prefills: list[PrefillChunk] = field(default_factory=list)
    workspace: Workspace = field(default_factory=Workspace)


def build_metadata(slot_mapping, decodes: list, prefills: list, block_size: int, device,
                   workspace: Workspace | None = None, cascade: bool = True):
    """decodes: (block_table, context_len) per decode sequence (query rows 0..len-1).
    prefills: (start row, num_tokens, block_table, context_len) per prefill chunk.
    Gathering whole blocks (not single slots) means block_size times fewer indices."""
    import numpy as np
    import torch

    def t(x, dtype=torch.long):
        return torch.as_tensor(x, dtype=dtype).to(device, non_blocking=True)

    def decode_batch(rows, skips):
        """Pad the selected decodes' (suffix) blocks to one width; mask the padding."""
        tables = [(decodes[i][0], decodes[i][1], s) for i, s in zip(rows, skips)]
        nblocks = [-(-ctx // block_size) for _, ctx, _ in tables]
        width = max(nb - s for nb, (_, _, s) in zip(nblocks, tables))
        blocks = np.zeros((len(tables), width), dtype=np.int64)
        for i, ((table, _, s), nb) in enumerate(zip(tables, nblocks)):
            blocks[i, : nb - s] = table[s:nb]
        lens = np.array([ctx - s * block_size for _, ctx, s in tables])
        padding = np.arange(width * block_size)[None, :] >= lens[:, None]
        return t(blocks.reshape(-1)), t(padding[None, :, None, :], torch.bool)

    meta = AttentionMetadata(slot_mapping=slot_mapping, workspace=workspace or Workspace())
    groups = find_shared_prefixes(decodes, block_size) if cascade and decodes else []
    # Sequences in a group attend their prefix through it and only their suffix here;
    # the rest are padded separately, so one long loner does not widen every suffix.
    grouped = [i for members, _ in groups for i in members]
    plain = sorted(set(range(len(decodes))) - set(grouped))
    if plain:
        rows = slice(0, len(decodes)) if not groups else t(plain)
        meta.plain = DecodeBatch(rows, *decode_batch(plain, [0] * len(plain)))
    if groups:
        skips = [n for members, n in groups for _ in members]
        meta.grouped = DecodeBatch(t(grouped), *decode_batch(grouped, skips))
        meta.prefix = prefix_batch(groups, decodes, block_size, t)
    meta.workspace.keep_prefixes(meta.prefix.key if meta.prefix else None)
    for start, n, table, ctx in prefills:
        chunk = PrefillChunk(start, n)
        if ctx > n:  # earlier context (prefix hit or earlier chunk): gather it + shifted mask
            nb = -(-ctx // block_size)
            chunk.blocks = t(table[:nb])
            q_pos = (ctx - n) + np.arange(n)[:, None]
            chunk.mask = t(np.arange(nb * block_size)[None, :] <= q_pos, torch.bool)
        meta.prefills.append(chunk)
    return meta


def write_kv(key_cache, value_cache, slot_mapping, k, v) -> None:
    """Store the new tokens' K and V: token i goes to flat slot slot_mapping[i] of every
    KV head. k, v: [num_tokens, Hkv, D] (labkit.kvcache's write_kv_cache, head-major)."""
    num_kv_heads, head_dim = key_cache.shape[0], key_cache.shape[-1]
    key_cache.view(num_kv_heads, -1, head_dim)[:, slot_mapping] = k.transpose(0, 1)
    value_cache.view(num_kv_heads, -1, head_dim)[:, slot_mapping] = v.transpose(0, 1)


def attention(q, k, v, key_cache, value_cache, meta: AttentionMetadata, scale: float,
              layer: int = 0):
    """q [T, H, D]; k, v [T, Hkv, D] for the new tokens; caches [Hkv, blocks, block_size, D].
    Writes k, v into the cache, returns [T, H, D].

    The cache is head-major (vLLM's is [blocks, block_size, Hkv, D]): gathering a batch's
    blocks then yields [Hkv, batch, tokens, D], where every (head, sequence) pair is one
    contiguous [tokens, D] matrix, and the decode scores are plain batched matmuls with
    no copy in between."""
    import torch
    import torch.nn.functional as F

    write_kv(key_cache, value_cache, meta.slot_mapping, k, v)
    num_kv_heads, num_blocks, block_size, head_dim = key_cache.shape
    rows_k = key_cache.view(num_kv_heads, num_blocks, -1)  # gather whole blocks, not tokens
    rows_v = value_cache.view(num_kv_heads, num_blocks, -1)
    group = q.shape[1] // num_kv_heads  # query heads per KV head (GQA)

    def gather(name, blocks, batch):  # -> K, V as [Hkv, batch, tokens, D]
        shape = (num_kv_heads, blocks.shape[0], rows_k.shape[2])
        kbuf, vbuf = meta.workspace.take(name, shape, rows_k)
        torch.index_select(rows_k, 1, blocks, out=kbuf)
        torch.index_select(rows_v, 1, blocks, out=vbuf)
        return kbuf.view(num_kv_heads, batch, -1, head_dim), vbuf.view(num_kv_heads, batch, -1, head_dim)

    def decode_queries(rows):  # [b, H, D] -> [Hkv, b, group, D]
        return q[rows].view(-1, num_kv_heads, group, head_dim).transpose(0, 1)

    def decode_out(rows, o):  # [Hkv, b, group, D] -> out rows [b, H, D]
        out[rows] = o.transpose(0, 1).reshape(o.shape[1], -1, head_dim)

    out = torch.empty_like(q)
    if meta.plain is not None:
        d = meta.plain
        qd = decode_queries(d.rows)
        kd, vd = gather("plain", d.blocks, qd.shape[1])
        scores = torch.matmul(qd, kd.transpose(-1, -2)).mul_(scale)  # [Hkv, b, group, tokens]
        scores.masked_fill_(d.mask, float("-inf"))
        decode_out(d.rows, torch.matmul(torch.softmax(scores, dim=-1), vd))
    if meta.grouped is not None:
        d = meta.grouped
        qd = decode_queries(d.rows)
        ks, vs = gather("suffix", d.blocks, qd.shape[1])
        o, lse = attend_with_lse(qd, ks, vs, d.mask, scale)  # each sequence's own suffix
        p = meta.prefix
        kv = meta.workspace.prefixes.get((layer, p.key))
        if kv is None:  # gathered once for every group, and kept for the next steps
            groups = p.padding.shape[1]
            kv = meta.workspace.prefixes[layer, p.key] = tuple(
                x.index_select(1, p.blocks).view(num_kv_heads, groups, -1, head_dim)
                for x in (rows_k, rows_v))
        o, _ = merge(o, lse, *p.attend(qd, *kv, scale))
        decode_out(d.rows, o)

    for c in meta.prefills:
        rows = slice(c.start, c.start + c.num_tokens)
        qc = q[rows].transpose(0, 1)[None]  # [1, H, n, D]
        if c.blocks is None:  # nothing cached before this chunk: its own K/V, causal
            kc, vc = k[rows].transpose(0, 1)[None], v[rows].transpose(0, 1)[None]
            o = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=scale,
                                               enable_gqa=True)
        else:
            kc, vc = gather("prefill", c.blocks, 1)  # [Hkv, 1, ctx, D]
            o = F.scaled_dot_product_attention(qc, kc.transpose(0, 1), vc.transpose(0, 1),
                                               attn_mask=c.mask, scale=scale, enable_gqa=True)
        out[rows] = o[0].transpose(0, 1)
    return out
