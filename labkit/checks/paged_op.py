"""Check for lab 20, exercise 2: the paged attention op itself, for decode.

The learner writes

    paged_decode_attention(query, key_cache, value_cache, block_tables, context_lens, scale)

query [batch, num_heads, head_dim] holds one new token per sequence; key_cache/value_cache
[num_blocks, block_size, num_kv_heads, head_dim] hold everyone's KV in blocks; sequence s
attends to its first context_lens[s] tokens, found through block_tables[s] (token p is in
block block_tables[s, p // block_size], row p % block_size). GQA: query head h reads KV
head h // (num_heads // num_kv_heads). Returns [batch, num_heads, head_dim].

The cases are chosen to catch the usual mistakes: a context that ends mid-block (reading
the whole last block attends to stale rows), unused table entries that point at blocks
full of another sequence's data, a single-token context, GQA groups of 1, 2 and 4, and
blocks scattered in the pool in no particular order. The reference is labkit's own op.
"""

from __future__ import annotations

from labkit.checks import ExerciseFailed
from labkit.kvcache.paged_attention import paged_attention

# (batch, num_heads, num_kv_heads, head_dim, block_size, context_lens, what it catches)
CASES = [
    (1, 2, 2, 8, 4, [1], "a single cached token"),
    (1, 2, 2, 8, 4, [4], "a context that fills its last block exactly"),
    (1, 2, 2, 8, 4, [6], "a context ending mid-block: rows past it are stale"),
    (3, 4, 2, 8, 4, [5, 9, 2], "GQA groups of 2, three lengths"),
    (2, 8, 2, 16, 8, [17, 31], "GQA groups of 4"),
    (2, 4, 4, 8, 16, [16, 33], "block_size 16 (vLLM's)"),
    (4, 4, 1, 8, 2, [3, 7, 1, 8], "multi-query attention (one KV head)"),
]


def _case_tensors(batch, num_heads, num_kv_heads, head_dim, block_size, context_lens, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    max_blocks = max(-(-c // block_size) for c in context_lens) + 1  # +1: an unused entry
    num_blocks = batch * max_blocks + 3
    key_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, generator=g)
    value_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, generator=g)
    # Blocks handed out in shuffled order; unused entries point at real blocks too, full of
    # someone else's data, so reading past context_lens shows up in the result.
    order = torch.randperm(num_blocks, generator=g)[: batch * max_blocks]
    block_tables = order.view(batch, max_blocks).to(torch.int32)
    query = torch.randn(batch, num_heads, head_dim, generator=g)
    return query, key_cache, value_cache, block_tables, torch.tensor(context_lens)


def check_paged_decode_attention(fn, seed: int = 0, atol: float = 1e-4) -> int:
    """Compare fn with labkit's paged_attention (reference implementation) on every case."""
    import torch

    n = 0
    for k, (batch, heads, kv_heads, dim, bs, ctx, what) in enumerate(CASES):
        q, kc, vc, bt, cl = _case_tensors(batch, heads, kv_heads, dim, bs, ctx, seed + k)
        scale = dim ** -0.5
        where = (f"batch {batch}, {heads} query heads / {kv_heads} KV heads, head_dim {dim}, "
                 f"block_size {bs}, context_lens {ctx} ({what})")
        expected = paged_attention(q, kc, vc, bt, cl, scale=scale, impl="reference")
        try:
            got = fn(q.clone(), kc.clone(), vc.clone(), bt.clone(), cl.clone(), scale)
        except NotImplementedError as e:
            raise ExerciseFailed(f"paged_decode_attention: not implemented yet — {e}") from None
        except Exception as e:  # noqa: BLE001 - any crash is reported with its input
            raise ExerciseFailed(f"{where}: raised {type(e).__name__}: {e}") from None
        got = torch.as_tensor(got)
        if tuple(got.shape) != tuple(expected.shape):
            raise ExerciseFailed(f"{where}: expected shape {tuple(expected.shape)}, got "
                                 f"{tuple(got.shape)}")
        err = (got.float() - expected.float()).abs().max().item()
        if not err <= atol:
            s, h = divmod(int((got.float() - expected.float()).abs().amax(-1).argmax()), heads)
            raise ExerciseFailed(
                f"{where}: max abs error {err:.2e} (allowed {atol:g}); worst at sequence {s}, "
                f"head {h}: expected {expected[s, h, :4].tolist()}…, got "
                f"{got[s, h, :4].tolist()}…")
        n += 1
    print(f"✔ paged_decode_attention: matches the reference op on {n} cases "
          "(mid-block ends, stale table entries, GQA, MQA)")
    return n
