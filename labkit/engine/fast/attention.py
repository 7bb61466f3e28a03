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
  (shared_prefix.py). Only when the step's groups together save enough reads: with a few
  pairs, the extra ops and the re-gathers as groups change cost more than they save.
- prefill chunks (usually one or two per step): one call each. With no earlier context
  (a fresh prompt, no prefix-cache hit) the chunk's own K/V are all it needs: plain
  causal attention, no gather. Otherwise gather the context and use a causal mask
  shifted by the number of tokens already in the cache.

The tests check this module against labkit.kvcache's paged_attention on random batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labkit.engine.fast.shared_prefix import (
    PrefixBatch,
    attend_with_lse,
    find_shared_prefixes,
    merge,
    prefix_batch,
)
from labkit.engine.fast.workspace import GatherPlan, Workspace


@dataclass
class PrefillChunk:
    start: int  # first row of this sequence's queries in the flat batch
    num_tokens: int  # query length of the chunk
    blocks: object = None  # int [num_blocks] holding its context; None: no earlier context
    mask: object = None  # bool [num_tokens, num_blocks * block_size]: causal, shifted


@dataclass
class DecodeBatch:
    """Decoding sequences attended together, one row each in a gathered [Hkv, R, W, D]
    tensor that workspace.py may keep across steps (rows of finished sequences are holes)."""

    rows: object  # long [R]: the query row each tensor row attends with (holes: any row)
    out_rows: object  # long [n]: the query rows of this batch's sequences
    out_pos: object  # long [n]: their tensor rows, or None when row i is sequence i
    mask: object  # bool [1, R, 1, W]: True = not context (padding, holes)
    plan: GatherPlan
    gather_blocks: object = None  # long [rows to gather * W / block_size]
    gather_pos: object = None  # long: tensor rows those go to (None: all rows, in order)
    append_rows: object = None  # long: tensor rows that get this step's token appended,
    append_tok: object = None  # long: at these token positions,
    append_src: object = None  # long: from these query rows' new K/V


@dataclass
class AttentionMetadata:
    slot_mapping: object  # int [num_tokens]: where each new token's K/V is written
    plain: DecodeBatch | None = None  # decodes attended the ordinary way
    grouped: DecodeBatch | None = None  # decodes in shared-prefix groups: their own suffixes
    prefix: PrefixBatch | None = None  # the groups' shared prefixes
    prefills: list[PrefillChunk] = field(default_factory=list)
    workspace: Workspace = field(default_factory=Workspace)


def build_metadata(slot_mapping, decodes: list, prefills: list, block_size: int, device,
                   workspace: Workspace | None = None, cascade: bool = True,
                   num_layers: int = 1):
    """decodes: (block_table, context_len, request_id) per decode sequence (query rows
    0..len-1). prefills: (start row, num_tokens, block_table, context_len) per chunk.
    Gathering whole blocks (not single slots) means block_size times fewer indices."""
    import numpy as np
    import torch

    def t(x, dtype=torch.long):
        return torch.as_tensor(x, dtype=dtype).to(device, non_blocking=True)

    def decode_batch(name, rows, skips):
        """Lay the selected decodes' (suffix) contexts out as rows; plan what to gather."""
        lens = [decodes[i][1] - s * block_size for i, s in zip(rows, skips)]
        keys = tuple((decodes[i][2], s) for i, s in zip(rows, skips))
        plan = meta.workspace.plan(name, keys, lens, block_size, num_layers)
        pos, width = plan.positions, plan.width
        qrows, row_len = [rows[0]] * plan.num_rows, [1] * plan.num_rows  # holes: 1 token
        for j, r in enumerate(pos):
            qrows[r], row_len[r] = rows[j], lens[j]

        def blocks_of(js):
            out = np.zeros((len(js), width // block_size), dtype=np.int64)  # pad: block 0
            for r, j in enumerate(js):
                table, ctx, s = decodes[rows[j]][0], decodes[rows[j]][1], skips[j]
                out[r, : -(-ctx // block_size) - s] = table[s : -(-ctx // block_size)]
            return t(out.reshape(-1))

        padding = np.arange(width)[None, :] >= np.array(row_len)[:, None]
        d = DecodeBatch(t(qrows), t(rows), None if plan.full else t(pos),
                        t(padding[None, :, None, :], torch.bool), plan)
        if plan.full:
            d.gather_blocks = blocks_of(range(len(rows)))
        if not plan.full and plan.gather:
            d.gather_blocks = blocks_of(plan.gather)
            d.gather_pos = t([pos[j] for j in plan.gather])
        if plan.append:
            d.append_rows = t([pos[j] for j in plan.append])
            d.append_tok = t([lens[j] - 1 for j in plan.append])
            d.append_src = t([rows[j] for j in plan.append])
        return d

    meta = AttentionMetadata(slot_mapping=slot_mapping, workspace=workspace or Workspace())
    groups = find_shared_prefixes(decodes, block_size) if cascade and decodes else []
    # Sequences in a group attend their prefix through it and only their suffix here;
    # the rest are padded separately, so one long loner does not widen every suffix.
    grouped = [i for members, _ in groups for i in members]
    plain = sorted(set(range(len(decodes))) - set(grouped))
    if plain:
        meta.plain = decode_batch("plain", plain, [0] * len(plain))
    if groups:
        skips = [n for members, n in groups for _ in members]
        meta.grouped = decode_batch("suffix", grouped, skips)
        meta.prefix = prefix_batch(groups, decodes, block_size, t, meta.grouped.plan.positions)
    for name, batch in (("plain", meta.plain), ("suffix", meta.grouped)):
        if batch is None:
            meta.workspace.forget(name)
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

    def decode_kv(d: DecodeBatch):  # -> K, V as [Hkv, R, W, D]
        shape = (num_kv_heads, d.plan.num_rows, d.plan.width, head_dim)
        kd, vd = meta.workspace.buffers(d.plan, layer, shape, rows_k)
        if d.gather_blocks is not None and d.gather_pos is None:  # every row, in order
            torch.index_select(rows_k, 1, d.gather_blocks, out=kd.view(num_kv_heads, -1, rows_k.shape[2]))
            torch.index_select(rows_v, 1, d.gather_blocks, out=vd.view(num_kv_heads, -1, rows_v.shape[2]))
        elif d.gather_blocks is not None:  # newcomers into their rows (holes)
            gk, gv = gather("rows", d.gather_blocks, d.gather_pos.shape[0])
            kd[:, d.gather_pos], vd[:, d.gather_pos] = gk, gv
        if d.append_rows is not None:  # the others: last step's row plus this step's token
            kd[:, d.append_rows, d.append_tok] = k[d.append_src].transpose(0, 1)
            vd[:, d.append_rows, d.append_tok] = v[d.append_src].transpose(0, 1)
        return kd, vd

    def decode_queries(d: DecodeBatch):  # -> [Hkv, R, group, D]
        return q[d.rows].view(-1, num_kv_heads, group, head_dim).transpose(0, 1)

    def decode_out(d: DecodeBatch, o):  # o [Hkv, n, group, D], in out_rows order
        out[d.out_rows] = o.transpose(0, 1).reshape(o.shape[1], -1, head_dim)

    def own_rows(d: DecodeBatch, x):  # tensor rows -> this batch's sequences, in order
        return x if d.out_pos is None else x[:, d.out_pos]

    out = torch.empty_like(q)
    if meta.plain is not None:
        d = meta.plain
        qd = decode_queries(d)
        kd, vd = decode_kv(d)
        scores = torch.matmul(qd, kd.transpose(-1, -2)).mul_(scale)  # [Hkv, R, group, W]
        scores.masked_fill_(d.mask, float("-inf"))
        decode_out(d, own_rows(d, torch.matmul(torch.softmax(scores, dim=-1), vd)))
    if meta.grouped is not None:
        d = meta.grouped
        qd = decode_queries(d)
        ks, vs = decode_kv(d)
        o, lse = attend_with_lse(qd, ks, vs, d.mask, scale)  # each sequence's own suffix
        p = meta.prefix
        kv = meta.workspace.prefixes.get((layer, p.key))
        if kv is None:  # gathered once for every group, and kept for the next steps
            groups = p.padding.shape[1]
            kv = meta.workspace.prefixes[layer, p.key] = tuple(
                x.index_select(1, p.blocks).view(num_kv_heads, groups, -1, head_dim)
                for x in (rows_k, rows_v))
        o, _ = merge(own_rows(d, o), own_rows(d, lse), *p.attend(qd, *kv, scale))
        decode_out(d, o)

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
