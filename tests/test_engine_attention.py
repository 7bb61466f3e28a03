"""The engine's two attention paths against labkit.kvcache's reference paged attention, on
random caches and block tables: the fast one (split decode/prefill, cascade over shared
prefixes, kept buffers) and the plain one (lab 20's op per decode batch and prefill chunk)."""

import random

import pytest

torch = pytest.importorskip("torch")

from labkit.engine.fast import shared_prefix  # noqa: E402
from labkit.engine.fast.attention import attention, build_metadata  # noqa: E402
from labkit.engine.fast.shared_prefix import find_shared_prefixes  # noqa: E402
from labkit.engine.fast.workspace import Workspace  # noqa: E402
from labkit.engine.sequence import common_prefix_len  # noqa: E402
from labkit.kvcache.paged_attention import paged_attention, write_kv_cache  # noqa: E402

H, HKV, D = 4, 2, 16


def random_batch(rng, block_size, num_blocks=400):
    """Decodes in groups that share prefix blocks, plus prefill chunks with and without
    earlier context. Returns everything both implementations need."""
    free = list(range(num_blocks))
    rng.shuffle(free)
    take = lambda n: [free.pop() for _ in range(n)]  # noqa: E731
    seqs = []  # (block_table, context_len, query_len)
    for _ in range(3):  # groups sharing a prefix of 2..6 blocks
        prefix = take(rng.randint(2, 6))
        for _ in range(rng.randint(1, 4)):
            own = rng.randint(1, 3 * block_size)
            table = prefix + take(-(-own // block_size) + 1)
            seqs.append((table, len(prefix) * block_size + own, 1))
    for _ in range(3):  # loners
        ctx = rng.randint(1, 5 * block_size)
        seqs.append((take(-(-ctx // block_size)), ctx, 1))
    for past in (0, 0, rng.randint(1, 3 * block_size)):  # prefill chunks
        n = rng.randint(2, 2 * block_size)
        seqs.append((take(-(-(past + n) // block_size)), past + n, n))
    return seqs


def mixed_step(seed, block_size, num_blocks=400):
    """One random step for both paths: caches in lab 20's layout, the new tokens' q/k/v,
    the runner's inputs (slot mapping, decodes first, prefill chunks) and the reference."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    seqs = random_batch(rng, block_size, num_blocks)
    kc = torch.randn(num_blocks, block_size, HKV, D)
    vc = torch.randn(num_blocks, block_size, HKV, D)
    T = sum(q for _, _, q in seqs)
    q, k, v = torch.randn(T, H, D), torch.randn(T, HKV, D), torch.randn(T, HKV, D)
    slots, decodes, prefills, row = [], [], [], 0
    for i, (table, ctx, n) in enumerate(seqs):
        slots += [table[p // block_size] * block_size + p % block_size for p in range(ctx - n, ctx)]
        (decodes.append((table, ctx, i)) if n == 1 else prefills.append((row, n, table, ctx)))
        row += n
    ref_k, ref_v = kc.clone(), vc.clone()
    write_kv_cache(ref_k, ref_v, torch.tensor(slots), k, v)
    width = max(len(t) for t, _, _ in seqs)
    tables = torch.tensor([t + [0] * (width - len(t)) for t, _, _ in seqs])
    ref = paged_attention(q, ref_k, ref_v, tables, [c for _, c, _ in seqs],
                          [n for _, _, n in seqs], impl="reference")
    return dict(kc=kc, vc=vc, q=q, k=k, v=v, slots=torch.tensor(slots), decodes=decodes,
                prefills=prefills, ref=ref, ref_k=ref_k)


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_attention_matches_the_kvcache_reference(block_size, seed, monkeypatch):
    monkeypatch.setattr(shared_prefix, "MIN_SHARED_TOKENS", 1)
    monkeypatch.setattr(shared_prefix, "MIN_SAVED_TOKENS", 1)  # cascade whenever possible
    monkeypatch.setattr(shared_prefix, "MIN_STEP_SAVED_TOKENS", 1)
    x = mixed_step(seed, block_size)
    meta = build_metadata(x["slots"], x["decodes"], x["prefills"], block_size, "cpu")
    assert meta.prefix is not None, "the batch was built to contain shared prefixes"
    head_major = lambda t: t.permute(2, 0, 1, 3).contiguous()  # noqa: E731  (engine layout)
    ours = attention(x["q"], x["k"], x["v"], head_major(x["kc"]), head_major(x["vc"]), meta,
                     D**-0.5)
    torch.testing.assert_close(ours, x["ref"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_plain_path_matches_the_kvcache_reference(block_size, seed):
    """`--attention plain` on the same mixed batches: lab 20's layout, lab 20's op."""
    from labkit.engine.plain_attention import PlainAttention

    x = mixed_step(seed, block_size)
    plain = PlainAttention(400, 1, block_size)
    assert plain.cache_shape(400, block_size, HKV, D) == tuple(x["kc"].shape)
    meta = plain.build(x["slots"], x["decodes"], x["prefills"], "cpu")
    kc, vc = x["kc"].clone(), x["vc"].clone()
    ours = plain.attend(x["q"], x["k"], x["v"], kc, vc, meta, D**-0.5)
    torch.testing.assert_close(ours, x["ref"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kc, x["ref_k"])  # the new tokens' K went where slot_mapping says


@pytest.mark.parametrize("cascade_threshold", [1, 10**9])  # with and without groups
def test_decode_steps_that_reuse_last_steps_gather(cascade_threshold, monkeypatch):
    """Decode steps over a changing batch: step 0 gathers every row; step 1 appends one
    token per row; in step 2 one sequence has finished (its row becomes a hole); in step 3
    a newcomer is gathered into that hole. Each step must equal the reference."""
    monkeypatch.setattr(shared_prefix, "MIN_SHARED_TOKENS", 1)
    monkeypatch.setattr(shared_prefix, "MIN_SAVED_TOKENS", cascade_threshold)
    monkeypatch.setattr(shared_prefix, "MIN_STEP_SAVED_TOKENS", cascade_threshold)
    rng = random.Random(7)
    torch.manual_seed(7)
    block_size, num_blocks = 4, 300
    seqs = [(t, c) for t, c, n in random_batch(rng, block_size, 250) if n == 1]
    # Room to grow: two fresh blocks each, from the 50 the batch did not use.
    seqs = [(t[: -(-c // block_size)] + [250 + 2 * i, 251 + 2 * i], c) for i, (t, c) in enumerate(seqs)]
    newcomer = len(seqs)
    seqs.append(seqs[1])  # shares seq 1's blocks (prefix cache hit), joins in step 3
    kc, vc = torch.randn(num_blocks, block_size, HKV, D), torch.randn(num_blocks, block_size, HKV, D)
    head_major = lambda x: x.permute(2, 0, 1, 3).contiguous()  # noqa: E731
    ours_k, ours_v = head_major(kc), head_major(vc)
    workspace = Workspace(max_keep_tokens=10**9)
    batches = [range(newcomer)] * 2 + [range(1, newcomer), [i for i in range(newcomer + 1) if i != 0]]
    for step, members in enumerate(batches):
        ctxs = [seqs[i][1] + (step if i != newcomer else 0) for i in members]
        if step == 3:  # seq 1 and the newcomer must not write the same slot: newcomer reads only
            ctxs[-1] = seqs[1][1]
        tables = [seqs[i][0] for i in members]
        slots = torch.tensor([t[(c - 1) // block_size] * block_size + (c - 1) % block_size
                              for t, c in zip(tables, ctxs)])
        n = len(members)
        q, k, v = torch.randn(n, H, D), torch.randn(n, HKV, D), torch.randn(n, HKV, D)
        if step == 3:  # the newcomer's "new" token is already in the cache: keep it as is
            k[-1] = kc.view(-1, HKV, D)[slots[-1]]
            v[-1] = vc.view(-1, HKV, D)[slots[-1]]
        decodes = [(t, c, i) for t, c, i in zip(tables, ctxs, members)]
        meta = build_metadata(slots, decodes, [], block_size, "cpu", workspace, num_layers=1)
        plans = [b.plan for b in (meta.plain, meta.grouped) if b is not None]
        if cascade_threshold > 1:  # no groups: one plain batch, whose rows we can follow
            (plan,) = plans
            expect = {0: (True, n, 0), 1: (False, 0, n), 2: (False, 0, n), 3: (False, 1, n - 1)}
            assert (plan.full, len(plan.gather), len(plan.append)) == expect[step]
            assert plan.num_rows == newcomer  # the finished sequence's row became a hole
        else:  # groups shift as members come and go: rows move between the two batches
            assert all(p.full for p in plans) if step == 0 else any(p.append for p in plans)
            assert step != 1 or not any(p.full for p in plans)
        ours = attention(q, k, v, ours_k, ours_v, meta, D**-0.5)
        write_kv_cache(kc, vc, slots, k, v)
        width = max(len(t) for t in tables)
        table_t = torch.tensor([t + [0] * (width - len(t)) for t in tables])
        ref = paged_attention(q, kc, vc, table_t, ctxs, impl="reference")
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 3, 4]) == 4
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert common_prefix_len([5], [6, 7]) == 0
    assert common_prefix_len([], [1]) == 0
    rng = random.Random(3)
    for _ in range(200):
        a = [rng.randint(0, 2) for _ in range(rng.randint(0, 12))]
        b = a[: rng.randint(0, len(a))] + [rng.randint(0, 2) for _ in range(rng.randint(0, 5))]
        expect = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert common_prefix_len(a, b) == expect


def test_find_shared_prefixes_groups_sequences_by_their_common_blocks(monkeypatch):
    monkeypatch.setattr(shared_prefix, "MIN_STEP_SAVED_TOKENS", 0)  # each group on its own
    p1, p2 = list(range(1000, 1150)), list(range(2000, 2300))
    decodes = [(p1 + [1, 2], 152), ([7, 8, 9], 3), (p2 + [3], 301), (p1 + [4], 151),
               (p2 + [5, 6], 302), (p1 + [9], 151)]
    groups = sorted(find_shared_prefixes(decodes, block_size=1))
    assert groups == [([0, 3, 5], 150), ([2, 4], 300)]
    # Too little sharing to pay for the extra work: no group.
    assert find_shared_prefixes([(p1[:20] + [1], 21), (p1[:20] + [2], 21)], 1) == []
    assert find_shared_prefixes([(p1 + [1], 151), (p1 + [2], 151)], 1) == []  # 1 x 150 < 256
    # Never the whole context: the newest token's block stays each sequence's own.
    assert find_shared_prefixes([(p2, 300)] * 3, 1) == [([0, 1, 2], 299)]
    # Blocks of 16 tokens: the shared part is counted in blocks.
    blocks = [(list(range(40)) + [100 + i], 40 * 16 + 5) for i in range(3)]
    assert find_shared_prefixes(blocks, 16) == [([0, 1, 2], 40)]


def test_no_cascade_when_all_groups_together_save_too_little():
    """Pairs over a 700-token system prompt each save 700 reads: worth it only when enough
    of them decode in the same step (MIN_STEP_SAVED_TOKENS, 4,096)."""
    def pairs(n):  # n system prompts of 700 tokens, two sequences on each
        return [(list(range(1000 * g, 1000 * g + 700)) + [5000 + 10 * g + j], 701)
                for g in range(n) for j in range(2)]

    assert shared_prefix.MIN_STEP_SAVED_TOKENS == 4096
    assert find_shared_prefixes(pairs(5), 1) == []  # 5 x 700 = 3,500 saved
    assert len(find_shared_prefixes(pairs(6), 1)) == 6  # 6 x 700 = 4,200
    eight = [(list(range(700)) + [5000 + j], 701) for j in range(8)]
    assert find_shared_prefixes(eight, 1) == [(list(range(8)), 700)]  # 7 x 700 = 4,900
