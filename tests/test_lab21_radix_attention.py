"""Lab 21 (RadixAttention vs hash): exercises and self-checks, simulator studies, TTFT helper,
portfolio."""

import json
import random

import pytest

from labkit import exercises, labs, runs
from labkit.checks import ExerciseFailed, radix
from labkit.labs import l21_radix_attention as radix_lab
from labkit.labs.l21_engine_ttft import parse_counters


def _cells(nb, first_def: str, count: int):
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if first_def in c)
    return code[first:first + count]


def _run(cells, ns=None):
    ns = {} if ns is None else ns
    for c in cells:
        exec("from labkit.checks import radix\n" + c, ns)
    return ns


def test_learner_copy_of_lab21_fails_with_the_hints_and_reference_passes(tmp_path, capsys):
    lab = labs.select(["21"])[0]
    ref = json.loads(lab.path.read_text())
    _run(_cells(ref, "def split_node", 2))
    _run(_cells(ref, "def evict", 2))
    out = capsys.readouterr().out
    assert "✔ match_prefix + insert: passed" in out and "✔ evict: passed" in out

    [(path, n)] = exercises.export([lab], tmp_path)
    assert n == 4  # split_node, match_prefix, insert, evict
    learner = json.loads(path.read_text())
    with pytest.raises(ExerciseFailed, match=r"split_node: not implemented yet — Exercise: "
                                             r"head = radix.new_node"):
        _run(_cells(learner, "def split_node", 2))
    with pytest.raises(ExerciseFailed, match=r"evict: not implemented yet — Exercise: repeat: "
                                             r"among radix.nodes\(root\)"):
        _run(_cells(learner, "def evict", 2))


def _match_without_split(root, tokens):
    node, n = root, 0
    while n < len(tokens) and tokens[n] in node["children"]:
        child, k = node["children"][tokens[n]], 0
        while k < len(child["key"]) and n + k < len(tokens) and child["key"][k] == tokens[n + k]:
            k += 1
        n += k
        if k < len(child["key"]):
            break
        node = child
    return n, node


def _insert_under_match(root, tokens):  # adds the rest under the node, never splitting
    n, node = _match_without_split(root, tokens)
    if n < len(tokens):
        node["children"][tokens[n]] = radix.new_node(tokens[n:], node)
    return n


def _evict_newest_first(root, num_tokens):
    evicted = 0
    while evicted < num_tokens:
        leaves = [x for x in radix.nodes(root) if not x["children"] and x["lock_ref"] == 0]
        if not leaves:
            break
        x = max(leaves, key=lambda x: x["last_access"])
        del x["parent"]["children"][x["key"][0]]
        evicted += len(x["key"])
    return evicted


def _evict_ignoring_locks(root, num_tokens):
    evicted = 0
    while evicted < num_tokens:
        leaves = [x for x in radix.nodes(root) if not x["children"]]
        if not leaves:
            break
        x = min(leaves, key=lambda x: x["last_access"])
        del x["parent"]["children"][x["key"][0]]
        evicted += len(x["key"])
    return evicted


def _evict_without_cascade(root, num_tokens):
    evicted = 0
    for x in sorted((x for x in radix.nodes(root) if not x["children"] and x["lock_ref"] == 0),
                    key=lambda x: x["last_access"]):
        if evicted >= num_tokens:
            break
        del x["parent"]["children"][x["key"][0]]
        evicted += len(x["key"])
    return evicted


def test_checks_catch_common_radix_mistakes():
    with pytest.raises(ExerciseFailed, match=r"the node returned should spell \[1, 2\].*split"):
        radix.check_match_and_insert(_match_without_split, radix.reference_insert)
    with pytest.raises(ExerciseFailed, match=r"insert\(tree of .*\]\): (expected|the tree)"):
        radix.check_match_and_insert(radix.reference_match_prefix, _insert_under_match)
    with pytest.raises(ExerciseFailed, match="expected this tree afterwards|tokens evicted"):
        radix.check_evict(_evict_newest_first)
    with pytest.raises(ExerciseFailed, match="evicted the locked node"):
        radix.check_evict(_evict_ignoring_locks)
    with pytest.raises(ExerciseFailed, match=r"expected 6 tokens evicted, got 4"):
        radix.check_evict(_evict_without_cascade)


def test_exercise_tree_agrees_with_the_real_radix_cache():
    from labkit.kvcache.radix_cache import RadixPrefixCache

    rng = random.Random(5)
    for _ in range(20):
        root, cache = radix.new_tree(), RadixPrefixCache(4096)
        seqs = radix._sequences(rng, 12)
        for s in seqs:
            if s:
                assert radix.reference_insert(root, s) == cache.match(s, record=False).hit_len
                cache.insert(s)
        for probe in radix._sequences(rng, 10):
            assert radix.reference_match_prefix(root, probe)[0] == cache.match(probe).hit_len


@pytest.fixture(scope="module")
def workloads(tmp_path_factory):
    return radix_lab.write_traces(tmp_path_factory.mktemp("traces"), num_requests=24, seed=1)


def test_radix_is_optimal_with_enough_memory_and_hash_loses_only_to_rounding(workloads):
    stats = {r["workload"]: r for r in radix_lab.trace_stats(workloads)}
    rows = radix_lab.capacity_sweep(workloads, [0], block_sizes=(16, 64))
    for w in workloads:
        got = {r["cache"]: r["hit_rate"] for r in rows if r["workload"] == w}
        assert got["radix"] == got["radix tail"] == stats[w]["best_hit_rate"] > 0.3
        assert got["radix"] >= got["hash B=16"] >= got["hash B=64"]
    rounding = radix_lab.block_size_sweep(workloads, (1, 16, 256))
    for w in workloads:
        lost = {r["block_size"]: r["tokens_lost_to_rounding"] for r in rounding
                if r["workload"] == w}
        assert lost[1] == 0 and 0 <= lost[16] < lost[256]
    assert [r["hit_tokens"] for r in radix_lab.rounding_example(100, 16)] == [96, 100]


def test_tail_eviction_keeps_more_than_whole_leaves_under_memory_pressure(workloads):
    reqs = {"shared-prompt": workloads["shared-prompt"]}
    rows = radix_lab.capacity_sweep(reqs, [1024], block_sizes=(16,))
    got = {r["cache"]: r for r in rows}
    assert got["radix tail"]["evicted_tokens"] > 0  # the capacity really was too small
    assert got["radix tail"]["cached_tokens"] > got["radix"]["cached_tokens"]
    assert got["radix tail"]["cached_tokens"] >= got["hash B=16"]["cached_tokens"]


def test_radix_behind_hash_lists_only_cells_where_a_radix_variant_lost():
    def row(w, cap, cache, n):
        return {"workload": w, "capacity_tokens": cap, "cache": cache, "cached_tokens": n}

    rows = [row("a", 64, "radix", 10), row("a", 64, "radix tail", 30), row("a", 64, "hash B=16", 20),
            row("b", 64, "radix", 40), row("b", 64, "radix tail", 40), row("b", 64, "hash B=16", 20)]
    assert radix_lab.radix_behind_hash(rows) == [
        {"workload": "a", "capacity_tokens": 64, "hash B=16": 20, "radix": 10, "radix tail": 30}]


def test_hot_cold_trace_starves_cold_requests_under_lpm():
    trace = radix_lab.hot_cold_trace()
    cold = [r for r in trace if r.id.startswith("cold")]
    heads = [tuple(r.prompt_token_ids[:32]) for r in trace]
    assert len(cold) == 12 and all(heads.count(tuple(r.prompt_token_ids[:32])) == 1
                                   for r in cold)  # cold prompts share nothing
    rows, waits = radix_lab.policy_comparison(trace, capacity_tokens=2048, max_batch=4)
    fcfs, lpm = rows
    assert (fcfs["policy"], lpm["policy"]) == ("fcfs", "lpm")
    assert lpm["hit_rate"] > fcfs["hit_rate"] and lpm["mean_wait_s"] < fcfs["mean_wait_s"]
    assert lpm["p99_wait_s"] > 1.5 * fcfs["p99_wait_s"]
    assert lpm["cold_mean_wait_s"] > fcfs["cold_mean_wait_s"]
    assert set(waits["lpm"]) == {r.id for r in trace}


def test_prefix_counters_are_summed_over_label_sets_and_missing_ones_are_none():
    text = """# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 1200.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 34.0
vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.7e+09
"""
    assert parse_counters(text) == {"prefix_cache_hits_total": 1234.0,
                                    "prefix_cache_queries_total": None}


def _fake_run(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("21_radix_attention", params={})
    rec.scalar("hit_shared_prompt_radix_unlimited", 0.8187)
    rec.scalar("hit_shared_prompt_hash16_unlimited", 0.8122)
    rec.scalar("lpm_p99_wait_s", 5.098, unit="s (toy clock)")
    rec.scalar("fcfs_p99_wait_s", 2.648, unit="s (toy clock)")
    rec.scalar("ttft_p50_ms_radix", 122.8, unit="ms", note="32 requests, 4 groups")
    rec.scalar("ttft_p99_ms_radix", 825.2, unit="ms")
    rec.scalar("engine_hit_rate_radix", 0.8303)
    rec.not_measured("ttft_p50_ms_none", "the engine failed to start: port busy")
    rec.scalar("engine_load_avg", 999.0)  # more than this machine's cores: overloaded
    runs.atomic_write_json(tmp_path / "r" / "21_radix_attention" / "status.json",
                           {"status": "completed", "seconds": 90.0, "params": {}})
    return tmp_path / "r"


def test_portfolio_page_shows_engine_rows_that_ran_or_failed_and_hides_others(tmp_path,
                                                                              monkeypatch):
    from labkit.portfolio import build

    build(_fake_run(tmp_path, monkeypatch), tmp_path / "site")
    page = (tmp_path / "site" / "21_radix_attention.md").read_text()
    assert "the radix cache served 81.9 %" in page and "16-token blocks:\n81.2 %" in page
    assert "the p99 wait\nwent from 2.648 s (toy clock) to 5.098 s (toy clock)" in page
    assert "| radix | 122.8 ms | 825.2 ms | 83.0 % |" in page
    assert "| none | *not measured on this tier: the engine failed to start: port busy* |" in page
    assert "| hash |" not in page  # never asked for: no row
    assert "Without a prefix cache the median TTFT" not in page  # no speedup was recorded
    assert "shared and overloaded while I measured (1-minute\nload average 999 on" in page


def test_engine_ttft_scalars_speedups_and_failures():
    from labkit.labs import l21_engine_ttft as engine_ttft
    from labkit.runs import NotMeasured

    none = {"prefix_cache": "none", "ttft_p50_ms": 90.0, "ttft_p99_ms": 120.0, "hit_rate": None}
    radix_row = {"prefix_cache": "radix", "ttft_p50_ms": 30.0, "ttft_p99_ms": 50.0,
                 "hit_rate": 0.8}
    found = engine_ttft.ttft_scalars(radix_row, note="n=8")
    assert found["ttft_p50_ms_radix"] == (30.0, "ms", "n=8")
    assert found["engine_hit_rate_radix"][0] == 0.8
    assert isinstance(engine_ttft.ttft_scalars(none, "")["engine_hit_rate_none"], NotMeasured)
    assert engine_ttft.speedup_scalars([none, radix_row])["ttft_p50_speedup_radix"][0] == 3.0
    assert isinstance(engine_ttft.speedup_scalars([radix_row])["ttft_p50_speedup_radix"],
                      NotMeasured)
    failed = engine_ttft.failed_scalars("hash", "x" * 900)
    assert set(failed) == {"ttft_p50_ms_hash", "ttft_p99_ms_hash", "engine_hit_rate_hash"}
    assert len(failed["ttft_p50_ms_hash"].reason) == 500
