"""Workloads: lengths are what was asked, prefixes are shared where they should be."""

from pathlib import Path

import pytest

from labkit.bench.workloads import WorkloadParams, make_requests
from labkit.errors import UserError

SAMPLE = Path(__file__).parent / "data" / "bench" / "sharegpt_sample.json"


def test_random_prompts_have_the_asked_length_and_do_not_share_prefixes():
    reqs = make_requests("random", 20, WorkloadParams(input_len=50, output_len=7), seed=1)
    assert len(reqs) == 20
    assert all(len(r.prompt.split()) == 50 == r.prompt_len for r in reqs)
    assert all(r.max_tokens == 7 and r.ignore_eos for r in reqs)
    assert len({tuple(r.prompt.split()[:5]) for r in reqs}) == 20
    assert reqs[0].messages == [{"role": "user", "content": reqs[0].prompt}]


def test_random_range_ratio_varies_lengths_within_bounds():
    reqs = make_requests("random", 200, WorkloadParams(input_len=100, output_len=100,
                                                       range_ratio=0.5), seed=2)
    lens = [len(r.prompt.split()) for r in reqs]
    assert min(lens) >= 50 and max(lens) <= 150 and len(set(lens)) > 20


def test_shared_prefix_groups_share_their_system_prompt():
    p = WorkloadParams(num_groups=3, system_prompt_len=40, question_len=5, output_len=4)
    reqs = make_requests("shared-prefix", 12, p, seed=3)
    by_group = {}
    for r in reqs:
        by_group.setdefault(r.tag, set()).add(r.messages[0]["content"])
        assert r.prompt.startswith(r.messages[0]["content"])
        assert len(r.messages[1]["content"].split()) == 5
    assert len(by_group) == 3 and all(len(s) == 1 for s in by_group.values())
    assert len({next(iter(s)) for s in by_group.values()}) == 3
    # shuffled: the groups interleave instead of arriving in blocks
    assert [r.tag for r in reqs] != sorted(r.tag for r in reqs)


def test_multi_turn_each_turn_extends_the_previous_context():
    p = WorkloadParams(num_turns=3, question_len=4, output_len=6, system_prompt_len=10)
    reqs = make_requests("multi-turn", 6, p, seed=4)  # 2 conversations × 3 turns
    conv0 = [r for r in reqs if r.tag.startswith("conv=0")]
    assert [r.tag for r in conv0] == ["conv=0 turn=1", "conv=0 turn=2", "conv=0 turn=3"]
    for a, b in zip(conv0, conv0[1:]):
        assert b.messages[: len(a.messages)] == a.messages  # the old context, unchanged
        assert b.messages[len(a.messages)]["role"] == "assistant"
        assert b.prompt.startswith(a.prompt.rsplit("\nassistant:", 1)[0])
        assert b.prompt_len > a.prompt_len
    # every conversation's turn t is sent before any turn t+1
    turns = [int(r.tag.split("turn=")[1]) for r in reqs]
    assert turns == sorted(turns)


def test_sharegpt_reads_the_local_file_and_applies_the_filters():
    reqs = make_requests(f"sharegpt:{SAMPLE}", 5, WorkloadParams(output_len=None), seed=5)
    prompts = {r.prompt for r in reqs}
    # "hi" (too short), a gpt-first and a one-turn conversation are dropped: 3 remain
    assert len(prompts) == 3
    assert all(r.messages[0]["role"] == "user" for r in reqs)
    sky = next(r for r in reqs if "sky" in r.prompt)
    assert sky.max_tokens > 30  # the reply's length in words
    fixed = make_requests(f"sharegpt:{SAMPLE}", 3, WorkloadParams(output_len=9), seed=5)
    assert all(r.max_tokens == 9 for r in fixed)


def test_missing_file_and_unknown_workload_are_user_errors():
    with pytest.raises(UserError, match="never downloads"):
        make_requests("sharegpt:/nonexistent.json", 3)
    with pytest.raises(UserError, match="unknown workload"):
        make_requests("zipf", 3)


def test_same_seed_same_requests():
    a = make_requests("shared-prefix", 8, seed=9)
    b = make_requests("shared-prefix", 8, seed=9)
    assert [r.prompt for r in a] == [r.prompt for r in b]
