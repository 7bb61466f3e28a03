"""The paged attention op against dense scaled_dot_product_attention on random shapes."""

import random

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F

from labkit.kvcache.paged_attention import paged_attention, write_kv_cache


def make_batch(
    rng: random.Random,
    num_seqs,
    block_size,
    num_kv_heads,
    group,
    head_dim,
    decode,
    dtype=torch.float32,
):
    """Random sequences scattered over shuffled physical blocks + the dense reference."""
    ctx = [rng.randint(1, 70) for _ in range(num_seqs)]
    qlen = [1 if decode else rng.randint(1, c) for c in ctx]
    need = [-(-c // block_size) for c in ctx]
    num_blocks = sum(need) + 3
    kc = torch.randn(
        num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype
    )  # garbage everywhere
    vc = torch.randn_like(kc)
    free = list(range(num_blocks))
    rng.shuffle(free)
    width = max(need) + rng.randint(0, 2)
    tables, queries, refs = [], [], []
    for c, n, blocks_needed in zip(ctx, qlen, need):
        blocks = [free.pop() for _ in range(blocks_needed)]
        tables.append(blocks + [-1] * (width - blocks_needed))  # -1 padding must be ignored
        k = torch.randn(c, num_kv_heads, head_dim, dtype=dtype)
        v = torch.randn(c, num_kv_heads, head_dim, dtype=dtype)
        slots = torch.tensor(
            [blocks[p // block_size] * block_size + p % block_size for p in range(c)]
        )
        write_kv_cache(kc, vc, slots, k, v)
        q = torch.randn(n, num_kv_heads * group, head_dim, dtype=dtype)
        # Dense reference: query i sits at position c - n + i (SDPA's is_causal would align
        # top-left, which is wrong when there is past context — hence the explicit mask).
        mask = torch.arange(c)[None, :] <= torch.arange(c - n, c)[:, None]
        ref = F.scaled_dot_product_attention(
            q.float().transpose(0, 1),
            k.float().transpose(0, 1),
            v.float().transpose(0, 1),
            attn_mask=mask,
            enable_gqa=True,
        )
        queries.append(q)
        refs.append(ref.transpose(0, 1))
    return (
        torch.cat(queries),
        kc,
        vc,
        torch.tensor(tables),
        torch.tensor(ctx),
        torch.tensor(qlen),
    ), torch.cat(refs)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
@pytest.mark.parametrize("decode", [True, False], ids=["decode", "prefill"])
def test_matches_dense_sdpa_on_random_shapes(impl, decode):
    rng = random.Random(1234 + decode)
    torch.manual_seed(0)
    for _ in range(40):
        args, ref = make_batch(
            rng,
            num_seqs=rng.randint(1, 6),
            block_size=rng.choice([1, 2, 4, 8, 16]),
            num_kv_heads=rng.choice([1, 2, 4]),
            group=rng.choice([1, 2, 4]),
            head_dim=rng.choice([4, 16, 32]),
            decode=decode,
        )
        out = paged_attention(*args, impl=impl)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_decode_is_the_default_and_custom_scale_is_used():  # impl="auto"
    rng = random.Random(7)
    args, ref = make_batch(rng, 3, 4, 2, 2, 8, decode=True)
    q, kc, vc, tables, ctx, _ = args
    torch.testing.assert_close(paged_attention(q, kc, vc, tables, ctx), ref, atol=2e-5, rtol=1e-4)
    other = paged_attention(q, kc, vc, tables, ctx, scale=1.0)
    assert not torch.allclose(other, ref, atol=1e-3)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_half_precision_inputs_return_input_dtype(impl):
    rng = random.Random(3)
    args, ref = make_batch(rng, 3, 8, 2, 2, 16, decode=False, dtype=torch.bfloat16)
    out = paged_attention(*args, impl=impl)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_tokens_past_the_context_length_are_ignored():
    """Poisoning every cache slot a sequence must not read changes nothing."""
    rng = random.Random(11)
    args, ref = make_batch(rng, 4, 4, 1, 2, 8, decode=False)
    q, kc, vc, tables, ctx, qlen = args
    for s in range(len(ctx)):
        for p in range(int(ctx[s]), tables.shape[1] * 4):
            b = int(tables[s, p // 4])
            if b >= 0:
                kc[b, p % 4] = 1e4
                vc[b, p % 4] = 1e4
    torch.testing.assert_close(
        paged_attention(q, kc, vc, tables, ctx, qlen), ref, atol=2e-5, rtol=1e-4
    )


def test_bad_shapes_give_clear_errors():
    kc = torch.zeros(4, 4, 2, 8)
    q = torch.zeros(2, 3, 8)  # 3 heads, 2 KV heads: not a multiple
    with pytest.raises(ValueError, match="multiple"):
        paged_attention(q, kc, kc, torch.zeros(2, 1, dtype=torch.long), [1, 1])
    q = torch.zeros(3, 4, 8)
    with pytest.raises(ValueError, match="query_lens"):
        paged_attention(q, kc, kc, torch.zeros(2, 1, dtype=torch.long), [1, 1])
    with pytest.raises(ValueError, match="columns"):
        paged_attention(torch.zeros(1, 4, 8), kc, kc, torch.zeros(1, 1, dtype=torch.long), [9])
