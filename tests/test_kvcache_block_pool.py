"""Block pool, block tables and copy-on-write (PagedAttention's block manager)."""

import pytest

from labkit.kvcache.block_pool import BlockPool, OutOfBlocks, blocks_for


def test_allocate_and_free_count_blocks():
    pool = BlockPool(num_blocks=4, block_size=16)
    a = pool.allocate(3)
    assert len(set(a)) == 3 and pool.num_free_blocks == 1
    assert all(pool.ref_cnt[b] == 1 for b in a)
    pool.free(a)
    assert pool.num_free_blocks == 4 and all(pool.ref_cnt[b] == 0 for b in a)
    pool.check_invariants()


def test_out_of_blocks_is_specific_and_changes_nothing():
    pool = BlockPool(num_blocks=3, block_size=4)
    table = pool.new_table(8)  # 2 blocks
    with pytest.raises(OutOfBlocks) as e:
        pool.append_tokens(table, 8)  # needs 2 more, 1 free
    assert (e.value.needed, e.value.available) == (2, 1)
    assert "KV cache is full" in str(e.value)
    assert table.num_tokens == 8 and len(table.block_ids) == 2 and pool.num_free_blocks == 1
    pool.check_invariants()


def test_double_free_is_refused():
    pool = BlockPool(2, 4)
    (b,) = pool.allocate(1)
    pool.free([b])
    with pytest.raises(ValueError, match="negative"):
        pool.free([b])


def test_blocks_are_added_only_at_block_boundaries_and_slots_follow_the_table():
    pool = BlockPool(10, 4)
    table = pool.new_table(3)
    assert len(table.block_ids) == 1
    pool.append_tokens(table, 1)  # fills block 0 exactly
    assert len(table.block_ids) == 1
    pool.append_tokens(table, 1)
    assert len(table.block_ids) == 2
    assert len(table.block_ids) == blocks_for(table.num_tokens, 4)
    b0, b1 = table.block_ids
    assert table.slot_mapping() == [b0 * 4, b0 * 4 + 1, b0 * 4 + 2, b0 * 4 + 3, b1 * 4]
    with pytest.raises(IndexError):
        table.slot(5)


def test_fork_shares_blocks_and_copy_on_write_copies_the_partial_last_block():
    pool = BlockPool(10, 4)
    parent = pool.new_table(6)  # blocks: [full, 2 of 4 used]
    child = pool.fork(parent)
    assert child.block_ids == parent.block_ids
    assert all(pool.ref_cnt[b] == 2 for b in parent.block_ids)
    shared_last = parent.block_ids[-1]

    assert pool.blocks_needed_to_append(child, 1) == 1  # the copy
    copies = pool.append_tokens(child, 1)
    assert len(copies) == 1 and copies[0][0] == shared_last
    new_last = copies[0][1]
    assert child.block_ids[-1] == new_last != shared_last
    assert child.block_ids[0] == parent.block_ids[0]  # the full block stays shared
    assert pool.ref_cnt[shared_last] == 1 and pool.ref_cnt[new_last] == 1
    assert pool.ref_cnt[parent.block_ids[0]] == 2

    # The parent is now the only owner of its last block: it writes in place.
    assert pool.append_tokens(parent, 1) == []
    assert parent.block_ids[-1] == shared_last
    pool.check_invariants()


def test_fork_with_full_last_block_needs_no_copy():
    pool = BlockPool(10, 4)
    parent = pool.new_table(8)
    child = pool.fork(parent)
    assert pool.append_tokens(child, 1) == []
    assert child.block_ids[:2] == parent.block_ids and len(child.block_ids) == 3


def test_free_table_returns_blocks_once_no_sequence_uses_them():
    pool = BlockPool(6, 4)
    parent = pool.new_table(5)
    child = pool.fork(parent)
    pool.free_table(parent)
    assert pool.num_free_blocks == 4  # the child still holds both blocks
    pool.free_table(child)
    assert pool.num_free_blocks == 6
    pool.check_invariants()


def test_free_queue_order_kept_blocks_to_tail_others_to_head_and_reuse_hook():
    pool = BlockPool(4, 2)
    a, b, c, _ = pool.allocate(4)
    pool.free([a, b], keep=lambda x: True)  # cached: tail, in this order
    pool.free([c], keep=lambda x: False)  # nothing worth keeping: head
    assert pool.free_queue() == [c, a, b]
    reused = []
    pool.on_reuse = reused.append
    assert pool.allocate(2) == [c, a] and reused == [c, a]
    pool.incref(b)  # a cached free block hit again leaves the queue
    assert pool.free_queue() == [] and pool.ref_cnt[b] == 1
    with pytest.raises(OutOfBlocks):
        pool.allocate(1)


def test_copy_on_write_keeps_forked_sequences_attention_correct():
    """Fork, copy the shared partial block as told, write different tokens: each sequence's
    paged attention must equal dense attention over its own tokens."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from labkit.kvcache.paged_attention import paged_attention, write_kv_cache

    torch.manual_seed(0)
    bs, hkv, d = 4, 2, 8
    pool = BlockPool(8, bs)
    kc, vc = torch.zeros(8, bs, hkv, d), torch.zeros(8, bs, hkv, d)
    prompt_k, prompt_v = torch.randn(6, hkv, d), torch.randn(6, hkv, d)
    parent = pool.new_table(6)
    write_kv_cache(kc, vc, torch.tensor(parent.slot_mapping()), prompt_k, prompt_v)
    child = pool.fork(parent)
    seqs = []
    for table in (parent, child):
        for src, dst in pool.append_tokens(table, 1):
            kc[dst], vc[dst] = kc[src], vc[src]  # the model runner's job
        k1, v1 = torch.randn(1, hkv, d), torch.randn(1, hkv, d)
        write_kv_cache(kc, vc, torch.tensor(table.slot_mapping(6, 7)), k1, v1)
        seqs.append((table, torch.cat([prompt_k, k1]), torch.cat([prompt_v, v1])))
    q = torch.randn(2, 4, d)
    tables = torch.tensor([t.block_ids for t, _, _ in seqs])
    out = paged_attention(q, kc, vc, tables, [7, 7])
    for i, (_, k, v) in enumerate(seqs):
        ref = F.scaled_dot_product_attention(
            q[i][:, None], k.transpose(0, 1), v.transpose(0, 1), enable_gqa=True
        )
        torch.testing.assert_close(out[i], ref[:, 0], atol=1e-5, rtol=1e-5)
