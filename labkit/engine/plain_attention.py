"""The plain attention path (`--attention plain`): lab 20's paged attention op, as it is.

Read this one first. The fast path (`--attention fast`, the default; labkit/engine/fast/)
computes the same numbers with cascade attention over shared prefixes, gather buffers
kept across steps and oneDNN-packed matmuls; the tests hold both to transformers' greedy
tokens.

The KV cache has lab 20's layout, which is vLLM's: per layer a key and a value tensor of
[num_blocks, block_size, num_kv_heads, head_dim]. Token p of a sequence lives in block
block_table[p // block_size], row p % block_size; the runner's slot_mapping says where each
new token's K/V goes.

One step, the same for every layer:
1. write the new tokens' K/V into their slots (labkit.kvcache's write_kv_cache);
2. the decodes (query length 1; the runner puts them first): one call of paged_attention
   over their block tables, padded into one [n, max_blocks] tensor, and context lengths;
3. each prefill chunk: one call of its own, query length n, context = what is cached before
   it + n. Kept apart from the decodes so a 300-token chunk does not pad 31 one-token
   queries to 300 rows each.
paged_attention gathers each sequence's blocks, masks what it may not see (the future, the
padding) and runs torch's scaled_dot_product_attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labkit.kvcache.paged_attention import paged_attention, write_kv_cache


@dataclass
class PlainMetadata:
    slot_mapping: object  # long [num_tokens]: flat cache slot of each new token
    num_decodes: int = 0
    decode_tables: object = None  # long [num_decodes, max_blocks], padded with block 0
    decode_lens: object = None  # long [num_decodes]: tokens each decode attends to
    prefills: list = field(default_factory=list)  # (start row, n, table [1, nb], ctx, qlen)


class PlainAttention:
    name = "plain"

    def __init__(self, num_blocks: int, num_layers: int, block_size: int):
        self.block_size = block_size  # nothing is kept between steps: that is the fast path

    @staticmethod
    def cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int):
        return (num_blocks, block_size, num_kv_heads, head_dim)

    def build(self, slot_mapping, decodes: list, prefills: list, device) -> PlainMetadata:
        """decodes: (block_table, context_len, request_id), query rows 0..len-1;
        prefills: (start row, num_tokens, block_table, context_len)."""
        import torch

        def t(x):
            return torch.as_tensor(x, dtype=torch.long).to(device)

        bs = self.block_size
        meta = PlainMetadata(slot_mapping, num_decodes=len(decodes))
        if decodes:
            width = max(-(-ctx // bs) for _, ctx, _ in decodes)
            meta.decode_tables = t([list(table[:width]) + [0] * (width - len(table[:width]))
                                    for table, _, _ in decodes])
            meta.decode_lens = t([ctx for _, ctx, _ in decodes])
        for start, n, table, ctx in prefills:
            meta.prefills.append((start, n, t([table[: -(-ctx // bs)]]), t([ctx]), t([n])))
        return meta

    def attend(self, q, k, v, key_cache, value_cache, meta: PlainMetadata, scale: float,
               layer: int = 0):
        """q [T, H, D]; k, v [T, Hkv, D] for the new tokens. Returns [T, H, D]."""
        import torch

        write_kv_cache(key_cache, value_cache, meta.slot_mapping, k, v)
        out = torch.empty_like(q)
        n = meta.num_decodes
        if n:
            out[:n] = paged_attention(q[:n], key_cache, value_cache, meta.decode_tables,
                                      meta.decode_lens, scale=scale)
        for start, num, table, ctx, qlen in meta.prefills:
            rows = slice(start, start + num)
            out[rows] = paged_attention(q[rows], key_cache, value_cache, table, ctx, qlen,
                                        scale=scale)
        return out
