"""Lab 20 (PagedAttention): the exercise and its self-check, the lab's helpers, its portfolio."""

import json
import random

import pytest

from labkit import exercises, labs, runs
from labkit.checks import ExerciseFailed, paged
from labkit.labs import l20_paged_attention as paged_lab
from labkit.kvcache import paged_vs_dense
from labkit.kvcache.block_pool import BlockPool, OutOfBlocks


def _exercise_cells(nb):
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "def allocate_slots" in c)
    return code[first:first + 2]  # the exercise and its check cell


def _run_cells(cells):
    ns: dict = {}
    for c in cells:
        exec("from labkit.checks import paged\n"
             "from labkit.kvcache.block_pool import OutOfBlocks\n" + c, ns)


def test_learner_copy_of_lab20_fails_with_the_hint_and_reference_passes(tmp_path, capsys):
    lab = labs.select(["20"])[0]
    _run_cells(_exercise_cells(json.loads(lab.path.read_text())))
    assert "✔ allocate_slots: passed" in capsys.readouterr().out

    [(path, n)] = exercises.export([lab], tmp_path)
    assert n == 2  # allocate_slots and the paged decode op
    assert "free_blocks.pop(0)\n" not in path.read_text()
    with pytest.raises(ExerciseFailed, match=r"not implemented yet — Exercise: blocks needed = "
                                             r"ceil\(\(num_tokens \+ num_new_tokens\)"):
        _run_cells(_exercise_cells(json.loads(path.read_text())))


def _floor_blocks(table, num_tokens, new, free, bs):  # forgets the partly filled block
    need = (num_tokens + new) // bs - len(table)
    if need > len(free):
        raise OutOfBlocks(need, len(free))
    table.extend(free.pop(0) for _ in range(max(need, 0)))
    return [table[p // bs] * bs + p % bs for p in range(num_tokens, num_tokens + new)]


def _from_the_back(table, num_tokens, new, free, bs):
    need = -(-(num_tokens + new) // bs) - len(table)
    if need > len(free):
        raise OutOfBlocks(need, len(free))
    table.extend(free.pop() for _ in range(max(need, 0)))
    return [table[p // bs] * bs + p % bs for p in range(num_tokens, num_tokens + new)]


def _grabs_before_checking(table, num_tokens, new, free, bs):
    need = -(-(num_tokens + new) // bs) - len(table)
    for _ in range(max(need, 0)):
        if not free:
            raise OutOfBlocks(need, 0)
        table.append(free.pop(0))
    return [table[p // bs] * bs + p % bs for p in range(num_tokens, num_tokens + new)]


@pytest.mark.parametrize("wrong, message", [
    (_floor_blocks, r"raised IndexError|expected slot mapping"),
    (_from_the_back,
     r"free_blocks=\[5, 3\], block_size=4\): expected slot mapping \[20\], got \[12\]"),
    (_grabs_before_checking, r"raised OutOfBlocks but changed its inputs"),
])
def test_check_names_the_failing_input_for_common_mistakes(wrong, message):
    with pytest.raises(ExerciseFailed, match=message) as e:
        paged.check_allocate_slots(wrong)
    assert "allocate_slots(block_table=" in str(e.value)


def test_reference_matches_the_block_pool_and_the_checks_hit_out_of_blocks():
    rng = random.Random(3)
    for _ in range(30):
        bs = rng.choice([1, 4, 16])
        pool = BlockPool(64, bs)
        table, free, n = pool.new_table(0), list(range(64)), 0  # the pool hands out 0, 1, 2...
        mine: list[int] = []
        for _ in range(10):
            new = rng.randint(0, 2 * bs)
            slots = paged.reference_allocate_slots(mine, n, new, free, bs)
            pool.append_tokens(table, new)
            assert table.block_ids == mine
            assert table.slot_mapping(n, n + new) == slots
            n += new
    # the random schedules in the check really exercise the out-of-blocks branch
    raised = []

    def spy(*args):
        try:
            return paged.reference_allocate_slots(*args)
        except OutOfBlocks:
            raised.append(args)
            raise

    paged.check_allocate_slots(spy)
    assert len(raised) >= 12


def test_grown_block_tables_interleave_and_account_for_every_token():
    pool = BlockPool(20, 16)
    lens = [37, 70, 22, 51]
    tables = paged_lab.grow_sequences(pool, lens, chunk=5, seed=0)
    pool.check_invariants()
    assert [t.num_tokens for t in tables] == lens
    assert [len(t.block_ids) for t in tables] == [3, 5, 2, 4]
    ids = [b for t in tables for b in t.block_ids]
    assert len(set(ids)) == len(ids) == pool.num_used_blocks
    assert any(t.block_ids != sorted(t.block_ids) or
               t.block_ids != list(range(t.block_ids[0], t.block_ids[0] + len(t.block_ids)))
               for t in tables)  # growing in turns scatters a sequence's blocks
    rows = paged_lab.block_table_rows(tables)
    assert [r["unused_slots"] for r in rows] == [16 * len(t.block_ids) - n
                                                 for t, n in zip(tables, lens)]


def test_fork_shares_blocks_and_copies_only_the_partial_last_block():
    rows = paged_lab.fork_steps(prompt_len=37, n=3, block_size=16, new_tokens=2)
    assert rows[1]["ref_counts"] == "0:3 1:3 2:3"
    copies = [r["copy_on_write"] for r in rows if r["copy_on_write"]]
    assert len(copies) == 2  # n - 1 samples copy the shared partial block; the last keeps it
    assert rows[-1]["blocks_used"] == 3 + 2 and rows[-1]["blocks_without_sharing"] == 9
    full = paged_lab.fork_steps(prompt_len=32, n=3, block_size=16, new_tokens=1)
    assert not any(r["copy_on_write"] for r in full)  # full blocks: new blocks, no copies


def test_paged_op_matches_dense_and_the_timer_reports_its_setting():
    pytest.importorskip("torch")
    err = paged_vs_dense.max_abs_error([37, 70, 22, 51], [1, 70, 5, 1], num_heads=4,
                                       num_kv_heads=2, head_dim=16, block_size=16)
    assert err < 1e-5
    t = paged_vs_dense.time_decode(batch_size=4, context_len=40, num_heads=4, num_kv_heads=2,
                                   head_dim=16, block_size=8, repeats=2)
    assert t["threads"] >= 1 and t["device"] == "cpu"
    assert all(t[k] > 0 for k in ("dense_sdpa_ms", "paged_sdpa_ms", "paged_reference_ms"))


def _fake_run(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("20_paged_attention", params={"block_size": 16})
    rec.scalar("waste_max_mid", 0.8453)
    rec.scalar("waste_paged_mid", 0.0235, note="paged, block_size 16")
    rec.scalar("fit_paged_vs_max", 3.97, unit="x")
    rec.scalar("dense_sdpa_ms", 21.9, unit="ms", note="median of 20; cpu, 2 threads")
    rec.not_measured("paged_sdpa_ms", "the op crashed in this fake run")
    rec.table("sequences_fit", [{"scheme": "paged", "sequences_fit": 127}])
    runs.atomic_write_json(tmp_path / "r" / "20_paged_attention" / "status.json",
                           {"status": "completed", "seconds": 40.0, "params": {}})
    return tmp_path / "r"


def test_portfolio_page_uses_recorded_values_only(tmp_path, monkeypatch):
    from labkit.portfolio import build

    build(_fake_run(tmp_path, monkeypatch), tmp_path / "site")
    page = (tmp_path / "site" / "20_paged_attention.md").read_text()
    assert "84.5 % with max-length reservation" in page
    assert "2.4 % with paged blocks" in page and "blocks of\n16 tokens" in page
    assert "| dense SDPA, contiguous K/V | 21.9 ms |" in page
    assert "*not measured on this tier: the op crashed in this fake run*" in page
    assert "| paged | 127 |" in page
    assert "*not measured in this run*" in page  # e.g. the fork table was never recorded


def _paged_op_cells(nb):
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "def paged_decode_attention" in c)
    return code[first:first + 2]


def _run_op_cells(cells, ns=None):
    ns = {} if ns is None else ns
    for c in cells:
        exec("import torch\nfrom labkit.checks import paged_op\n" + c, ns)
    return ns


def test_paged_op_exercise_reference_passes_and_stub_gives_its_hint(tmp_path, capsys):
    lab = labs.select(["20"])[0]
    _run_op_cells(_paged_op_cells(json.loads(lab.path.read_text())))
    assert "✔ paged_decode_attention: matches the reference op" in capsys.readouterr().out
    [(path, _)] = exercises.export([lab], tmp_path)
    with pytest.raises(ExerciseFailed, match=r"not implemented yet — Exercise: per sequence s"):
        _run_op_cells(_paged_op_cells(json.loads(path.read_text())))


def test_paged_op_check_catches_reading_the_whole_last_block():
    import torch

    from labkit.checks import paged_op

    def whole_blocks(query, key_cache, value_cache, block_tables, context_lens, scale):
        bs, group = key_cache.shape[1], query.shape[1] // key_cache.shape[2]
        out = torch.empty_like(query)
        for s in range(query.shape[0]):
            n = -(-int(context_lens[s]) // bs) * bs  # rounds the context up to whole blocks
            p = torch.arange(n)
            blocks = block_tables[s, p // bs].long()
            k = key_cache[blocks, p % bs].repeat_interleave(group, dim=1)
            v = value_cache[blocks, p % bs].repeat_interleave(group, dim=1)
            w = (torch.einsum("hd,thd->ht", query[s], k) * scale).softmax(-1)
            out[s] = torch.einsum("ht,thd->hd", w, v)
        return out

    # a one-token context in a 4-token block is the first case that reads stale rows
    with pytest.raises(ExerciseFailed,
                       match=r"context_lens \[1\] \(a single cached token\): max abs error"):
        paged_op.check_paged_decode_attention(whole_blocks)
