"""Paged attention for the engine: metadata built once per step, three kernels.

labkit.kvcache.paged_attention is the readable reference: one call handles any mix of
prefill and decode by padding every sequence to the longest query and the longest
context. Inside the engine that generality costs time: the metadata (gather indices,
masks) would be rebuilt in every layer, and a step that mixes one 300-token prefill chunk
with 31 decodes would pad all 32 queries to 300 rows. So, like vLLM's attention backends,
we split the batch and build the metadata once per step (`AttentionMetadata`):

- decodes (query length 1; the runner puts them first): one batched call. Gather each
  sequence's K/V through its block table (index_select over whole blocks), pad to the
  longest context, mask the padding, run scaled_dot_product_attention.
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

Writing K/V into the cache is labkit.kvcache's write_kv_cache, and the tests check this
module against labkit.kvcache's paged_attention on random batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labkit.engine.shared_prefix import SharedPrefix, attend_with_lse, find_shared_prefixes, merge


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

    def take(self, name, shape, like):
        import math

        import torch

        n = 2 * math.prod(shape)  # K and V
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = self.bufs[name] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[: n // 2].view(shape), buf[n // 2 : n].view(shape)


@dataclass
class AttentionMetadata:
    slot_mapping: object  # int [num_tokens]: where each new token's K/V is written
    num_decodes: int = 0  # the first num_decodes rows are decodes, one per sequence
    decode_blocks: object = None  # int [num_decodes * max_blocks]: blocks to gather, padded
    decode_mask: object = None  # bool [num_decodes, 1, 1, max_blocks * block_size]
    shared: list[SharedPrefix] = field(default_factory=list)  # decode groups sharing a prefix
    prefills: list[PrefillChunk] = field(default_factory=list)
    workspace: Workspace = field(default_factory=Workspace)


def build_metadata(slot_mapping, decodes: list, prefills: list, block_size: int, device,
                   workspace: Workspace | None = None, cascade: bool = True):
    """decodes: (block_table, context_len) per decode sequence.
    prefills: (start row, num_tokens, block_table, context_len) per prefill chunk.
    Gathering whole blocks (not single slots) means block_size times fewer indices."""
    import numpy as np
    import torch

    def t(x, dtype=torch.long):
        return torch.as_tensor(x, dtype=dtype).to(device, non_blocking=True)

    meta = AttentionMetadata(slot_mapping=slot_mapping, num_decodes=len(decodes),
                             workspace=workspace or Workspace())
    if decodes:
        groups = find_shared_prefixes(decodes, block_size) if cascade else []
        skip = [0] * len(decodes)  # leading blocks a sequence reads through its group
        for members, num_blocks in groups:
            table = decodes[members[0]][0]
            meta.shared.append(SharedPrefix(t(members), t(table[:num_blocks])))
            for i in members:
                skip[i] = num_blocks
        nblocks = [-(-ctx // block_size) for _, ctx in decodes]
        width = max(nb - s for nb, s in zip(nblocks, skip))
        blocks = np.zeros((len(decodes), width), dtype=np.int64)  # pad with block 0, masked
        for i, ((table, _), nb, s) in enumerate(zip(decodes, nblocks, skip)):
            blocks[i, : nb - s] = table[s:nb]
        lens = np.array([ctx - s * block_size for (_, ctx), s in zip(decodes, skip)])
        mask = np.arange(width * block_size)[None, :] < lens[:, None]
        meta.decode_blocks = t(blocks.reshape(-1))
        meta.decode_mask = t(mask[:, None, None, :], torch.bool)
    for start, n, table, ctx in prefills:
        chunk = PrefillChunk(start, n)
        if ctx > n:  # earlier context (prefix hit or earlier chunk): gather it + shifted mask
            nb = -(-ctx // block_size)
            chunk.blocks = t(table[:nb])
            q_pos = (ctx - n) + np.arange(n)[:, None]
            chunk.mask = t(np.arange(nb * block_size)[None, :] <= q_pos, torch.bool)
        meta.prefills.append(chunk)
    return meta


def attention(q, k, v, key_cache, value_cache, meta: AttentionMetadata, scale: float):
    """q [T, H, D]; k, v [T, Hkv, D] for the new tokens; caches [blocks, block_size, Hkv, D].
    Writes k, v into the cache, returns [T, H, D]."""
    import torch
    import torch.nn.functional as F

    from labkit.kvcache.paged_attention import write_kv_cache

    write_kv_cache(key_cache, value_cache, meta.slot_mapping, k, v)
    num_blocks, block_size, num_kv_heads, head_dim = key_cache.shape
    rows_k = key_cache.view(num_blocks, -1)  # one row per block: gather blocks, not tokens
    rows_v = value_cache.view(num_blocks, -1)

    def gather(name, blocks, batch):  # -> K, V as [batch, Hkv, tokens, D], SDPA's layout
        kbuf, vbuf = meta.workspace.take(name, (blocks.shape[0], rows_k.shape[1]), rows_k)
        torch.index_select(rows_k, 0, blocks, out=kbuf)
        torch.index_select(rows_v, 0, blocks, out=vbuf)
        return tuple(x.view(batch, -1, num_kv_heads, head_dim).transpose(1, 2) for x in (kbuf, vbuf))

    out = torch.empty_like(q)
    if meta.num_decodes:
        b = meta.num_decodes
        kd, vd = gather("decode", meta.decode_blocks, b)
        if not meta.shared:
            o = F.scaled_dot_product_attention(q[:b, :, None, :], kd, vd,
                                               attn_mask=meta.decode_mask, scale=scale,
                                               enable_gqa=True)
            out[:b] = o[:, :, 0, :]
        else:
            group = q.shape[1] // num_kv_heads  # query heads per KV head
            qd = q[:b].view(b, num_kv_heads, group, head_dim)
            o, lse = attend_with_lse(qd, kd, vd, meta.decode_mask, scale)  # own suffixes
            for s in meta.shared:
                kp, vp = gather("prefix", s.blocks, 1)
                o[s.members], lse[s.members] = merge(o[s.members], lse[s.members],
                                                     *s.attend(qd, kp, vp, scale))
            out[:b] = o.reshape(b, -1, head_dim)

    for c in meta.prefills:
        rows = slice(c.start, c.start + c.num_tokens)
        qc = q[rows].transpose(0, 1)[None]  # [1, H, n, D]
        if c.blocks is None:  # nothing cached before this chunk: its own K/V, causal
            kc, vc = k[rows].transpose(0, 1)[None], v[rows].transpose(0, 1)[None]
            o = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=scale,
                                               enable_gqa=True)
        else:
            kc, vc = gather("prefill", c.blocks, 1)
            o = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=c.mask, scale=scale,
                                               enable_gqa=True)
        out[rows] = o[0].transpose(0, 1)
    return out
