"""Paged attention: attention whose keys and values are read through block tables.

The KV cache is one tensor per layer shaped [num_blocks, block_size, num_kv_heads, head_dim]
(vLLM's layout, split into key_cache and value_cache). Sequence s's token at position p lives
in block block_tables[s, p // block_size], row p % block_size. Attention for sequence s is
ordinary causal attention over its first context_lens[s] tokens — the kernel only has to
*find* those tokens through the table instead of reading one contiguous array.

One call handles a whole batch with mixed work (vLLM's "varlen" layout):
- query holds the *new* tokens of every sequence, concatenated: [sum(query_lens), H, D];
- decode: query_lens[s] == 1, the token attends to all context_lens[s] cached tokens;
- prefill (or a chunk of it): query_lens[s] > 1; query token i sits at position
  context_lens[s] - query_lens[s] + i and attends causally to positions <= its own.
  The new tokens' K/V must already be written into the cache (see write_kv_cache).
GQA: H query heads share H // num_kv_heads KV heads (query head h reads KV head h // group).

Two implementations with one contract (the tests hold both to dense SDPA):
- "reference": gather + masked softmax(q k^T) v in fp32, written out in plain torch,
  vectorised (no Python loop over tokens or sequences); the one to read.
- "sdpa": the same gather, then torch's fused scaled_dot_product_attention with a boolean
  mask. impl="auto" picks it on every device: it was a little faster on CPU too (decode,
  32 seqs x 512 tokens, tiny-Llama heads: about 3x the time of dense SDPA on contiguous K/V,
  "reference" 5-10 % slower; copying every K/V row once in the gather is most of the gap).
Neither is a fused paged kernel (vLLM's reads blocks in place, no gather); that is the
next step on CUDA (Triton/FlashInfer), behind this same signature.
"""

from __future__ import annotations


def write_kv_cache(key_cache, value_cache, slot_mapping, key, value) -> None:
    """Store new tokens' K and V: token i goes to flat slot slot_mapping[i] (vLLM's
    reshape_and_cache). key/value: [num_tokens, num_kv_heads, head_dim]."""
    num_kv_heads, head_dim = key_cache.shape[2], key_cache.shape[3]
    key_cache.view(-1, num_kv_heads, head_dim)[slot_mapping] = key.to(key_cache.dtype)
    value_cache.view(-1, num_kv_heads, head_dim)[slot_mapping] = value.to(value_cache.dtype)


def paged_attention(
    query,
    key_cache,
    value_cache,
    block_tables,
    context_lens,
    query_lens=None,
    scale: float | None = None,
    impl: str = "auto",
):
    """Attention of `query` against K/V gathered through `block_tables`.

    query:        [num_query_tokens, num_heads, head_dim], sequences concatenated in batch order
    key_cache:    [num_blocks, block_size, num_kv_heads, head_dim] (value_cache the same)
    block_tables: int [batch, max_blocks_per_seq]; entries past a sequence's length are ignored
    context_lens: int [batch]; tokens of KV each sequence attends to (past + new)
    query_lens:   int [batch]; new tokens per sequence (default: 1 each, i.e. decode)
    Returns [num_query_tokens, num_heads, head_dim] in query's dtype.
    """
    import torch

    batch = block_tables.shape[0]
    device = query.device
    context_lens = torch.as_tensor(context_lens, device=device, dtype=torch.long)
    if query_lens is None:
        query_lens = torch.ones(batch, dtype=torch.long, device=device)
    query_lens = torch.as_tensor(query_lens, device=device, dtype=torch.long)
    _check_shapes(query, key_cache, value_cache, block_tables, context_lens, query_lens)
    if impl == "auto":
        impl = "sdpa"
    if impl not in ("reference", "sdpa"):
        raise ValueError(f"impl must be 'auto', 'reference' or 'sdpa', not {impl!r}")

    num_heads, head_dim = query.shape[1], query.shape[2]
    num_kv_heads = key_cache.shape[2]
    scale = head_dim**-0.5 if scale is None else scale

    # 1. Gather each sequence's K/V through its block table into a padded dense tensor
    #    [batch, max_ctx, Hkv, D]: one row gather per cache (each block is one row of
    #    block_size * Hkv * D numbers). index_select on that 2-D view is a plain row copy,
    #    several times faster on CPU than fancy-indexing the 4-D cache.
    max_ctx = int(context_lens.max())
    num_cache_blocks, block_size = key_cache.shape[0], key_cache.shape[1]
    num_blocks_needed = -(-max_ctx // block_size)
    rows = (
        block_tables[:, :num_blocks_needed].to(key_cache.device, torch.long).clamp(min=0).flatten()
    )  # pads -> 0, masked below
    padded = (batch, num_blocks_needed * block_size, num_kv_heads, head_dim)
    k = key_cache.reshape(num_cache_blocks, -1).index_select(0, rows).view(padded)[:, :max_ctx]
    v = value_cache.reshape(num_cache_blocks, -1).index_select(0, rows).view(padded)[:, :max_ctx]

    # 2. Scatter the varlen queries into a padded [batch, max_q, H, D] tensor.
    max_q = int(query_lens.max())
    seq_of_token = torch.repeat_interleave(torch.arange(batch, device=device), query_lens)
    starts = torch.cumsum(query_lens, 0) - query_lens
    index_in_seq = torch.arange(query.shape[0], device=device) - starts[seq_of_token]
    q = query.new_zeros(batch, max_q, num_heads, head_dim)
    q[seq_of_token, index_in_seq] = query

    # 3. The mask: query i of sequence s sits at position ctx - qlen + i and may read KV
    #    positions <= that (causal) and < ctx (the rest of the gather is padding).
    q_pos = (context_lens - query_lens)[:, None] + torch.arange(max_q, device=device)[None, :]
    kv_pos = torch.arange(max_ctx, device=device)
    allowed = (kv_pos[None, None, :] <= q_pos[:, :, None]) & (
        kv_pos[None, None, :] < context_lens[:, None, None]
    )  # [batch, max_q, max_ctx]; padded query rows still see position 0, so no row is empty

    if impl == "reference":
        out = _attend_reference(q, k, v, allowed, scale, num_kv_heads)
    else:
        out = _attend_sdpa(q, k, v, allowed, scale)
    return out[seq_of_token, index_in_seq].to(query.dtype)


def _attend_reference(q, k, v, allowed, scale, num_kv_heads):
    """softmax(q k^T * scale + mask) v in fp32, one pass per KV head.

    GQA: query heads h*group .. (h+1)*group - 1 all read KV head h. k[:, :, h] is a strided
    view of the gathered keys that matrix multiply reads in place; an einsum over all heads
    at once would first copy K and V into head-major order (a few KV heads = a few passes).
    """
    import torch

    batch, max_q, num_heads, head_dim = q.shape
    group, max_ctx = num_heads // num_kv_heads, k.shape[1]
    hidden = ~allowed[:, :, None, :]  # [batch, max_q, 1, max_ctx]: True = masked out
    out = torch.empty(batch, max_q, num_heads, head_dim, dtype=torch.float32, device=q.device)
    for h in range(num_kv_heads):
        heads = slice(h * group, (h + 1) * group)
        qh = q[:, :, heads].float().reshape(batch, max_q * group, head_dim)  # rows: (token, head)
        scores = torch.bmm(qh, k[:, :, h].float().transpose(1, 2)) * scale  # [batch, rows, max_ctx]
        scores = scores.view(batch, max_q, group, max_ctx).masked_fill_(hidden, float("-inf"))
        probs = torch.softmax(scores, dim=-1).view(batch, max_q * group, max_ctx)
        out[:, :, heads] = torch.bmm(probs, v[:, :, h].float()).view(batch, max_q, group, head_dim)
    return out


def _attend_sdpa(q, k, v, allowed, scale):
    """The same maths through torch's fused kernel (enable_gqa maps query heads to KV heads)."""
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),  # [batch, H, max_q, D]
        k.transpose(1, 2).to(q.dtype),  # [batch, Hkv, max_ctx, D]
        v.transpose(1, 2).to(q.dtype),
        attn_mask=allowed[:, None],  # True = may attend
        scale=scale,
        enable_gqa=True,
    )
    return out.transpose(1, 2)  # [batch, max_q, H, D]


def _check_shapes(query, key_cache, value_cache, block_tables, context_lens, query_lens):
    if query.dim() != 3 or key_cache.dim() != 4 or key_cache.shape != value_cache.shape:
        raise ValueError(
            "expected query [tokens, heads, head_dim] and key/value caches "
            f"[num_blocks, block_size, kv_heads, head_dim]; got {tuple(query.shape)}, "
            f"{tuple(key_cache.shape)}, {tuple(value_cache.shape)}"
        )
    if query.shape[2] != key_cache.shape[3] or query.shape[1] % key_cache.shape[2]:
        raise ValueError(
            f"query heads ({query.shape[1]}) must be a multiple of KV heads ({key_cache.shape[2]}) "
            f"and head_dim must match ({query.shape[2]} vs {key_cache.shape[3]})"
        )
    batch = block_tables.shape[0]
    if context_lens.shape != (batch,) or query_lens.shape != (batch,):
        raise ValueError(f"context_lens and query_lens need one entry per sequence ({batch})")
    if bool((query_lens < 1).any()) or bool((query_lens > context_lens).any()):
        raise ValueError(
            "need 1 <= query_lens[s] <= context_lens[s] (new tokens are part of the context)"
        )
    if int(query_lens.sum()) != query.shape[0]:
        raise ValueError(
            f"query has {query.shape[0]} tokens but query_lens sums to {int(query_lens.sum())}"
        )
    max_blocks = -(-int(context_lens.max()) // key_cache.shape[1])
    if block_tables.shape[1] < max_blocks:
        raise ValueError(
            f"block_tables has {block_tables.shape[1]} columns; "
            f"the longest context needs {max_blocks}"
        )
