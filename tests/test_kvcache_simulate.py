"""Trace generators, the strict trace reader, the replay simulator and the kvcache CLI."""

import argparse
import json

import pytest

from labkit.errors import UserError
from labkit.kvcache import cli
from labkit.kvcache.simulate import simulate
from labkit.kvcache.trace_file import TraceRequest, read_trace, toy_tokenize, write_jsonl
from labkit.kvcache.traces import generate


def req(rid, arrival, prompt, output_len=4, output=None, after=None):
    return TraceRequest(rid, arrival, list(prompt), output_len, output, after=after)


def as_requests(rows):
    return [
        TraceRequest(
            r["id"],
            r["arrival"],
            r["prompt_token_ids"],
            r["output_len"],
            r.get("output_token_ids"),
            after=r.get("after"),
        )
        for r in rows
    ]


# -- traces ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("workload", ["shared-prompt", "few-shot", "multi-turn", "branching"])
def test_traces_are_deterministic_from_the_seed_and_well_formed(workload, tmp_path):
    a, b, c = (
        generate(workload, 20, seed=3),
        generate(workload, 20, seed=3),
        generate(workload, 20, seed=4),
    )
    assert a == b and a != c
    assert len(a) == 20 and len({r["id"] for r in a}) == 20
    assert [r["arrival"] for r in a] == sorted(r["arrival"] for r in a)
    parsed = read_trace(write_jsonl(a, tmp_path / "t.jsonl"))
    assert [p.prompt_token_ids for p in parsed] == [r["prompt_token_ids"] for r in a]


def test_shared_prompt_requests_start_with_one_of_the_system_prompts():
    rows = generate("shared-prompt", 30, seed=1, num_groups=3, system_len=100)
    heads = {tuple(r["prompt_token_ids"][:100]) for r in rows}
    assert 1 < len(heads) <= 3


def test_multi_turn_prompts_contain_the_whole_earlier_conversation():
    rows = generate("multi-turn", 8, seed=0, turns=4)
    by_id = {r["id"]: r for r in rows}
    for turn in range(1, 4):
        prev, cur = by_id[f"chat0-turn{turn - 1}"], by_id[f"chat0-turn{turn}"]
        history = prev["prompt_token_ids"] + prev["output_token_ids"]
        assert cur["prompt_token_ids"][: len(history)] == history
        assert cur["arrival"] > prev["arrival"] and cur["after"] == prev["id"]
    assert "after" not in by_id["chat0-turn0"]


def test_branching_children_extend_their_parent_prompt_and_thought():
    rows = generate("branching", 13, seed=0, branch=3, depth=2)
    by_id = {r["id"]: r for r in rows}
    root = by_id["tree0-noderoot"]
    for k in "012":
        child = by_id[f"tree0-node{k}"]
        head = root["prompt_token_ids"] + root["output_token_ids"]
        assert child["prompt_token_ids"][: len(head)] == head
        assert child["arrival"] > root["arrival"] and child["after"] == root["id"]
    assert (
        by_id["tree0-node0"]["prompt_token_ids"][-12:]
        != by_id["tree0-node1"]["prompt_token_ids"][-12:]
    )


def test_text_mode_tokenises_equal_text_to_equal_ids(tmp_path):
    rows = generate("multi-turn", 4, seed=0, text=True)
    assert "prompt" in rows[0] and "prompt_token_ids" not in rows[0]
    parsed = {p.id: p for p in read_trace(write_jsonl(rows, tmp_path / "t.jsonl"))}
    t0, t1 = parsed["chat0-turn0"], parsed["chat0-turn1"]
    history = t0.prompt_token_ids + t0.output_token_ids
    assert t1.prompt_token_ids[: len(history)] == history
    assert toy_tokenize("a b a") == [
        toy_tokenize("a")[0],
        toy_tokenize("b")[0],
        toy_tokenize("a")[0],
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"id": 1, "arrival": 0, "prompt_token_ids": [1], "output_len": 2}\n{"id": 2, "arrival": 0,',
            ":2: not valid JSON",
        ),
        ('{"id": 1, "arrival": 0, "prompt_token_ids": [1]}\n', ":1: missing field(s) output_len"),
        ('{"id": 1, "arrival": -1, "prompt_token_ids": [1], "output_len": 2}\n', "arrival must be"),
        (
            '{"id": 1, "arrival": 0, "prompt_token_ids": [1], "output_len": 0}\n',
            "output_len must be",
        ),
        (
            '{"id": 1, "arrival": 0, "prompt_token_ids": ["a"], "output_len": 2}\n',
            "list of non-negative integers",
        ),
        ('{"id": 1, "arrival": 0, "output_len": 2}\n', "no prompt"),
        (
            '{"id": 1, "arrival": 0, "prompt_token_ids": [1], "output_len": 2, "output_token_ids": [5]}\n',
            "make them agree",
        ),
        ('{"id": 1, "arrival": 0, "prompt_token_ids": [1], "output_len": 2}\n' * 2, "duplicate id"),
        ("[1, 2]\n", "expected a JSON object"),
        (
            '{"id": 1, "arrival": 0, "prompt_token_ids": [1], "output_len": 2, "after": "zz"}\n',
            "names no request on an earlier line",
        ),
        ("\n\n", "has no requests"),
    ],
)
def test_bad_traces_name_the_line_and_the_fix(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_trace(path)


def test_missing_trace_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="labkit kvcache trace"):
        read_trace(tmp_path / "nope.jsonl")


# -- simulator ------------------------------------------------------------------------------------
def test_summary_adds_up_and_none_never_hits():
    reqs = [req(f"r{i}", i, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, i + 100]) for i in range(5)]
    for cache in ("none", "hash", "radix"):
        res = simulate(reqs, cache, block_size=4)
        s, rows = res["summary"], res["requests"]
        assert s["prompt_tokens"] == 55
        assert s["cached_tokens"] == sum(r["hit_tokens"] for r in rows)
        assert s["prefill_tokens_computed"] == s["prompt_tokens"] - s["cached_tokens"]
        assert s["hit_rate"] == pytest.approx(s["cached_tokens"] / 55, abs=1e-4)
        assert [r["id"] for r in rows] == [r.id for r in reqs]
    # Each request arrives after the previous finished: 4 later requests hit the shared 10
    # tokens (radix) or the 2 full 4-token blocks inside them (hash).
    assert simulate(reqs, "none")["summary"]["cached_tokens"] == 0
    assert simulate(reqs, "radix")["summary"]["cached_tokens"] == 4 * 10
    assert simulate(reqs, "hash", block_size=4)["summary"]["cached_tokens"] == 4 * 8


def test_requests_in_the_same_batch_cannot_hit_each_other():
    reqs = [req(f"r{i}", 0.0, [7] * 20 + [i]) for i in range(4)]
    assert simulate(reqs, "radix", max_batch=4)["summary"]["cached_tokens"] == 0
    assert simulate(reqs, "radix", max_batch=1)["summary"]["cached_tokens"] == 3 * 20


def test_multi_turn_hits_include_the_previous_answer():
    rows = generate("multi-turn", 2, seed=0, turns=2)
    reqs = [
        TraceRequest(
            r["id"], r["arrival"], r["prompt_token_ids"], r["output_len"], r["output_token_ids"]
        )
        for r in rows
    ]
    second = simulate(reqs, "radix")["requests"][1]
    # everything the first turn computed: its prompt and all but its last answer token
    assert second["hit_tokens"] == len(rows[0]["prompt_token_ids"]) + rows[0]["output_len"] - 1


def test_lpm_serves_the_longest_cached_prefix_first_fcfs_serves_arrival_order():
    shared = list(range(50))
    reqs = [req("first", 0.0, shared + [1000], output_len=50)]
    reqs += [req(f"other{i}", 0.01 + i * 1e-3, [500 + i] * 40 + [i]) for i in range(3)]
    reqs += [req(f"share{i}", 0.02 + i * 1e-3, shared + [2000 + i]) for i in range(3)]
    order = {}
    for policy in ("fcfs", "lpm"):
        rows = simulate(reqs, "radix", policy=policy, max_batch=1)["requests"]
        order[policy] = [r["id"] for r in sorted(rows, key=lambda r: r["start"])]
    assert order["fcfs"] == [r.id for r in reqs]
    assert order["lpm"][1:4] == ["share0", "share1", "share2"]


def test_a_request_waits_for_the_request_it_depends_on():
    reqs = [
        req("turn0", 0.0, [1] * 30, output_len=100),
        req("other", 0.0, [2] * 30),
        req("turn1", 0.1, [1] * 30 + [5, 6], after="turn0"),
    ]  # arrives while turn0 still runs
    rows = {r["id"]: r for r in simulate(reqs, "radix", max_batch=8)["requests"]}
    assert rows["turn0"]["start"] == rows["other"]["start"] == 0.0
    assert rows["turn1"]["start"] > rows["turn1"]["arrival"]  # held back, not queued at 0.1
    assert rows["turn1"]["ready"] == rows["turn1"]["start"] and rows["turn1"]["wait_s"] == 0
    assert rows["turn1"]["hit_tokens"] == 30  # and so it hits what turn0 computed
    with pytest.raises(UserError, match="not in the trace"):
        simulate([req("a", 0, [1, 2], after="ghost")], "radix")


def test_lpm_runs_one_of_several_requests_sharing_an_uncached_prefix_first():
    """SGLang's in-batch prefix caching: siblings of a queued request wait one round, so
    they hit the prefix it computes instead of computing it alongside it."""
    prefix = list(range(100, 140))
    reqs = [req(f"sib{i}", 0.0, prefix + [i]) for i in range(3)] + [req("solo", 0.0, [7] * 41)]
    hits = {
        p: simulate(reqs, "radix", policy=p, max_batch=2)["summary"]["cached_tokens"]
        for p in ("fcfs", "lpm")
    }
    assert hits == {"fcfs": 40, "lpm": 80}


def test_lpm_on_dependent_workloads_lowers_mean_wait_but_stretches_the_tail():
    reqs = as_requests(generate("branching", 120, seed=0, rate=20.0))
    f = simulate(reqs, "radix", policy="fcfs", max_batch=4)["summary"]
    lpm = simulate(reqs, "radix", policy="lpm", max_batch=4)["summary"]
    assert lpm["mean_wait_s"] < f["mean_wait_s"] and lpm["p99_wait_s"] > f["p99_wait_s"]


def test_small_capacity_evicts_and_too_small_capacity_is_a_user_error():
    rows = generate("shared-prompt", 40, seed=0)
    reqs = [
        TraceRequest(r["id"], r["arrival"], r["prompt_token_ids"], r["output_len"]) for r in rows
    ]
    tight = simulate(reqs, "radix", capacity_tokens=2500)["summary"]
    assert tight["evicted_tokens"] > 0
    with pytest.raises(UserError, match="raise --capacity-tokens"):
        simulate(reqs, "hash", capacity_tokens=300)


# -- CLI ------------------------------------------------------------------------------------------
def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="labkit")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_trace_then_simulate_json(tmp_path, capsys):
    out = tmp_path / "few.jsonl"
    assert (
        run_cli(
            "kvcache", "trace", "--workload", "few-shot", "--out", str(out), "--num-requests", "12"
        )
        == 0
    )
    assert len(out.read_text().splitlines()) == 12
    capsys.readouterr()
    assert run_cli("kvcache", "simulate", "--trace", str(out), "--cache", "hash", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["cache"] == "hash" and len(data["requests"]) == 12
    assert data["summary"]["cached_tokens"] == sum(r["hit_tokens"] for r in data["requests"]) > 0
    assert (
        run_cli(
            "kvcache",
            "simulate",
            "--trace",
            str(out),
            "--policy",
            "lpm",
            "--capacity-tokens",
            "3000",
        )
        == 0
    )
    assert "hit_rate" in capsys.readouterr().out


def test_cli_radix_evict_reaches_the_cache(tmp_path, capsys):
    out = tmp_path / "shared.jsonl"
    run_cli("kvcache", "trace", "--workload", "shared-prompt", "--out", str(out),
            "--num-requests", "24")
    capsys.readouterr()
    got = {}
    for mode in ("leaf", "tail"):
        assert run_cli("kvcache", "simulate", "--trace", str(out), "--capacity-tokens", "1500",
                       "--radix-evict", mode, "--json") == 0
        got[mode] = json.loads(capsys.readouterr().out)["summary"]
        assert got[mode]["radix_evict"] == mode and got[mode]["evicted_tokens"] > 0
    # Tail eviction throws away exactly what it needs; whole leaves overshoot.
    assert got["tail"]["evicted_tokens"] < got["leaf"]["evicted_tokens"]
    with pytest.raises(SystemExit):
        run_cli("kvcache", "simulate", "--trace", str(out), "--radix-evict", "lru")


def test_unknown_radix_eviction_is_a_user_error():
    reqs = [TraceRequest("a", 0.0, [1, 2, 3], 2)]
    with pytest.raises(UserError, match="leaf or tail"):
        simulate(reqs, "radix", radix_evict="lru")


def test_cli_help_teaches_hit_semantics(capsys):
    with pytest.raises(SystemExit):
        run_cli("kvcache", "simulate", "--help")
    text = capsys.readouterr().out
    assert "floor(100/16)*16 = 96" in text and "last token is always recomputed" in text
    assert "examples:" in text


def test_cli_bad_input_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "arrival": 0, "prompt_token_ids": [1, 2], "output_len": 3}\nnot json\n'
    )
    with pytest.raises(UserError, match=r"bad.jsonl:2"):
        run_cli("kvcache", "simulate", "--trace", str(bad))
    with pytest.raises(UserError, match="capacity-tokens"):
        run_cli("kvcache", "simulate", "--trace", str(bad), "--capacity-tokens", "0")


def test_cli_waste_prints_the_comparison(capsys):
    assert run_cli("kvcache", "waste", "--num-seqs", "200", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    fit = {r["scheme"]: r["sequences_fit"] for r in data["fit"]}
    assert fit["paged"] > fit["pow2"] > fit["max"]
