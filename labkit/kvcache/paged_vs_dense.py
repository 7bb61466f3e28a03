"""Paged attention against dense SDPA on random batches: the same numbers, and the time.

    random_paged_batch  random K/V scattered through shuffled block tables + dense K/V
    dense_attention     the reference: each sequence alone, contiguous K/V, torch SDPA
    max_abs_error       max |paged_attention - dense SDPA| over one batch
    time_decode         one decode step: dense SDPA on contiguous K/V vs the paged op

Lab 20 and `labkit gpu-check` both run these. torch is imported inside the functions, so
the module imports with numpy alone.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np

from labkit.kvcache.block_pool import blocks_for
from labkit.kvcache.paged_attention import paged_attention, write_kv_cache


def random_paged_batch(context_lens, query_lens, num_heads=4, num_kv_heads=2, head_dim=64,
                       block_size=16, seed=0, device="cpu", dtype=None):
    """Random K/V for each sequence, written into a paged cache through shuffled block
    tables, plus the queries. Returns (args for paged_attention, dense per-sequence K/V)."""
    import torch

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    need = [blocks_for(c, block_size) for c in context_lens]
    num_blocks = sum(need) + 2
    free = list(range(num_blocks))
    rng.shuffle(free)  # a sequence's blocks land anywhere in the pool

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device, dtype)

    key_cache = randn(num_blocks, block_size, num_kv_heads, head_dim)  # garbage elsewhere
    value_cache = randn(num_blocks, block_size, num_kv_heads, head_dim)
    tables, dense, queries = [], [], []
    for c, q, n in zip(context_lens, query_lens, need):
        blocks = [free.pop() for _ in range(n)]
        tables.append(blocks + [0] * (max(need) - n))
        k, v = randn(c, num_kv_heads, head_dim), randn(c, num_kv_heads, head_dim)
        slots = torch.tensor([blocks[p // block_size] * block_size + p % block_size
                              for p in range(c)], device=device)
        write_kv_cache(key_cache, value_cache, slots, k, v)
        dense.append((k, v))
        queries.append(randn(q, num_heads, head_dim))
    args = dict(query=torch.cat(queries), key_cache=key_cache, value_cache=value_cache,
                block_tables=torch.tensor(tables, device=device),
                context_lens=torch.tensor(context_lens, device=device),
                query_lens=torch.tensor(query_lens, device=device))
    return args, dense


def dense_attention(args, dense):
    """The reference: each sequence on its own, contiguous K/V, torch SDPA in fp32. Query i
    of a sequence sits at position ctx - qlen + i and sees positions up to its own."""
    import torch
    import torch.nn.functional as F

    outs, start = [], 0
    for (k, v), c, n in zip(dense, args["context_lens"].tolist(), args["query_lens"].tolist()):
        q = args["query"][start:start + n].float()
        start += n
        mask = torch.arange(c, device=q.device)[None, :] <= torch.arange(
            c - n, c, device=q.device)[:, None]
        o = F.scaled_dot_product_attention(q.transpose(0, 1), k.float().transpose(0, 1),
                                           v.float().transpose(0, 1), attn_mask=mask,
                                           enable_gqa=True)
        outs.append(o.transpose(0, 1))
    return torch.cat(outs)


def max_abs_error(context_lens, query_lens, impl="auto", **shape) -> float:
    """max |paged_attention - dense SDPA| over every output number of one random batch."""
    args, dense = random_paged_batch(context_lens, query_lens, **shape)
    out = paged_attention(**args, impl=impl).float()
    return float((out - dense_attention(args, dense)).abs().max())


def _median_ms(fn, repeats: int, sync) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def time_decode(batch_size=32, context_len=512, num_heads=4, num_kv_heads=2, head_dim=64,
                block_size=16, repeats=20, device="cpu") -> dict:
    """Median time of one decode step's attention (one new token per sequence, all
    sequences at context_len): dense SDPA on contiguous [batch, heads, ctx, dim] K/V, and
    the paged op on the same numbers scattered through block tables."""
    import torch
    import torch.nn.functional as F

    shape = dict(num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                 block_size=block_size, device=device)
    args, dense = random_paged_batch([context_len] * batch_size, [1] * batch_size, **shape)
    q = args["query"][:, None].transpose(1, 2)  # [batch, heads, 1, dim]
    k = torch.stack([kv[0] for kv in dense]).transpose(1, 2)  # [batch, kv_heads, ctx, dim]
    v = torch.stack([kv[1] for kv in dense]).transpose(1, 2)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        out = {
            "dense_sdpa_ms": _median_ms(
                lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), repeats, sync),
            "paged_sdpa_ms": _median_ms(lambda: paged_attention(**args, impl="sdpa"),
                                        repeats, sync),
            "paged_reference_ms": _median_ms(lambda: paged_attention(**args, impl="reference"),
                                             repeats, sync),
        }
    out.update(threads=torch.get_num_threads(), device=str(device),
               load_avg_1m=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
               shape=f"{batch_size} seqs x {context_len} ctx, {num_heads} heads "
                     f"({num_kv_heads} KV), head_dim {head_dim}, block {block_size}")
    return out
