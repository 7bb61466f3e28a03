"""The teaching engine's greedy output equals transformers' greedy `generate`, token for token.

The tiny Llama has float32 random weights: top-1/top-2 logit gaps are ~0.1, far above
float32 rounding (~1e-6), so batching, chunking or a cache hit may change the last bits of
a logit but never the argmax. Any mismatch is a real bug (a wrong position, a stale KV
slot, a mask off by one), which is what these tests are for.
"""

import json
import shutil

import pytest

from labkit.engine.config import EngineConfig
from labkit.engine.engine import LLMEngine
from labkit.engine.sequence import SamplingParams
from labkit.models import build_tiny_llama

MAX_NEW = 20
PROMPTS = [
    "def fibonacci(n):",
    "import os\nimport sys\n\nclass",
    "the of and to in is was for on are with as his they be at one have this from",
    "x",
    "    return self._cache[key]\n\n    def __len__(self):\n        return len(self._cache)\n",
]
GREEDY = SamplingParams(max_tokens=MAX_NEW, temperature=0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: this model's matmuls are too small to gain from two, and on a
    shared 2-core machine a second spinning OpenMP thread makes everything many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_path():
    return build_tiny_llama(verbose=False)


def hf_greedy(model_path, prompts, max_new=MAX_NEW):
    """transformers' reference, one prompt at a time (no padding effects)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt")
            gen = model.generate(**ids, max_new_tokens=max_new, do_sample=False)
            out.append(gen[0, ids["input_ids"].shape[1]:].tolist())
    return out


@pytest.fixture(scope="module")
def reference(model_path):
    return hf_greedy(model_path, PROMPTS)


def engine(model_path, **kw):
    kw.setdefault("kv_cache_tokens", 4096)
    return LLMEngine(EngineConfig(model=str(model_path), **kw))


def token_ids(results):
    return [r["token_ids"] for r in results]


@pytest.mark.parametrize("cache", ["radix", "hash", "none"])
def test_each_prompt_alone_matches_transformers(model_path, reference, cache):
    eng = engine(model_path, prefix_cache=cache)
    for prompt, ref in zip(PROMPTS, reference):
        assert token_ids(eng.generate([prompt], GREEDY)) == [ref], prompt


@pytest.mark.parametrize("attention", ["fast", "plain"])
@pytest.mark.parametrize("cache", ["radix", "hash", "none"])
def test_concurrent_batch_with_tiny_chunks_matches_transformers(model_path, reference, cache,
                                                                attention):
    """All prompts at once, prefill chunks of at most 3 tokens: every step mixes decodes
    and partial prefills of different sequences. Both attention paths: plain ≡ fast ≡ HF."""
    eng = engine(model_path, prefix_cache=cache, max_num_batched_tokens=3, block_size=4,
                 attention=attention)
    assert token_ids(eng.generate(PROMPTS, GREEDY)) == reference


@pytest.mark.parametrize("attention", ["fast", "plain"])
@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_prefix_cache_hits_give_the_same_tokens(model_path, reference, cache, attention):
    eng = engine(model_path, prefix_cache=cache, block_size=4, attention=attention)
    first = eng.generate(PROMPTS, GREEDY)
    again = eng.generate(PROMPTS, GREEDY)  # prompts (and their outputs) are cached now
    assert token_ids(first) == token_ids(again) == reference
    hits = [r["num_cached_tokens"] for r in again]
    # Only prompt[:-1] can hit (the last token must run to give logits); hash: whole blocks.
    lens = [len(eng.tokenizer(p)["input_ids"]) for p in PROMPTS]
    best = [n - 1 if cache == "radix" else (n - 1) // 4 * 4 for n in lens]
    assert hits == best
    assert eng.scheduler.prefix_cache_hits == sum(best)


@pytest.mark.parametrize("attention", ["fast", "plain"])
def test_shared_prefix_across_different_prompts(model_path, attention):
    """Prompts that share a long prefix but differ after it: the second one hits mid-way."""
    base = PROMPTS[4] * 3
    prompts = [base + "x = 1", base + "while True:"]
    ref = hf_greedy(model_path, prompts, max_new=8)
    eng = engine(model_path, prefix_cache="radix", attention=attention)
    params = SamplingParams(max_tokens=8, temperature=0)
    assert token_ids(eng.generate(prompts[:1], params)) == ref[:1]
    second = eng.generate(prompts[1:], params)
    assert token_ids(second) == ref[1:]
    assert second[0]["num_cached_tokens"] > 30


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_concurrent_requests_sharing_a_system_prompt(model_path, cache, monkeypatch):
    """Four requests with one long shared prefix decode together: their common KV blocks
    are attended once for the group (cascade attention). Same tokens as transformers."""
    from labkit.engine.fast import attention, shared_prefix

    monkeypatch.setattr(shared_prefix, "MIN_STEP_SAVED_TOKENS", 0)  # four is too few to pay
    groups_seen = []
    real = attention.find_shared_prefixes
    monkeypatch.setattr(attention, "find_shared_prefixes",
                        lambda *a: groups_seen.append(real(*a)) or groups_seen[-1])
    system = PROMPTS[4] * 8
    prompts = [system + q for q in ("x = 1", "def f(y):", "class A:", "import re")]
    ref = hf_greedy(model_path, prompts, max_new=10)
    eng = engine(model_path, prefix_cache=cache, block_size=4)
    eng.generate(prompts[:1], SamplingParams(max_tokens=1, temperature=0))  # cache the prefix
    out = eng.generate(prompts, SamplingParams(max_tokens=10, temperature=0))
    assert token_ids(out) == ref
    assert any(len(g) == 1 and len(g[0][0]) == 4 for g in groups_seen)


@pytest.mark.parametrize("cache", ["radix", "hash"])
def test_a_burst_with_a_new_system_prompt_computes_it_once(model_path, cache):
    """Four requests arrive together with a system prompt nobody has cached. In-batch prefix
    caching: the first computes it, the others wait a step and hit it. Turned off, all four
    compute it. The tokens are transformers' either way."""
    from labkit.engine.sequence import common_prefix_len

    system = PROMPTS[4] * 8
    prompts = [system + q for q in ("x = 1", "def f(y):", "class A:", "import re")]
    params = SamplingParams(max_tokens=6, temperature=0)
    on = engine(model_path, prefix_cache=cache, block_size=4)
    off = engine(model_path, prefix_cache=cache, block_size=4, in_batch_prefix_caching=False)
    with_hold, without = on.generate(prompts, params), off.generate(prompts, params)
    assert token_ids(with_hold) == token_ids(without) == hf_greedy(model_path, prompts, max_new=6)
    assert [r["num_cached_tokens"] for r in without] == [0, 0, 0, 0]
    ids = [on.tokenizer(p)["input_ids"] for p in prompts]
    shared = min(common_prefix_len(ids[0], x) for x in ids[1:])  # ~ the system prompt
    hits = [r["num_cached_tokens"] for r in with_hold]
    assert hits[0] == 0 and min(hits[1:]) >= shared // 4 * 4 > 100


@pytest.mark.parametrize("cache", ["radix", "hash", "none"])
def test_output_survives_preemption(model_path, reference, cache):
    """A KV cache too small for all prompts at once: requests are preempted, recomputed
    later, and still produce exactly transformers' tokens."""
    eng = engine(model_path, prefix_cache=cache, kv_cache_tokens=96, block_size=4)
    assert token_ids(eng.generate(PROMPTS, GREEDY)) == reference
    assert eng.scheduler.num_preemptions > 0
    assert not eng.has_unfinished()


def test_rope_theta_is_read_from_the_config(model_path, tmp_path):
    """Change rope_theta in config.json: transformers and the engine must both follow it,
    and the tokens must differ from the default theta's (or the test proves nothing)."""
    other = tmp_path / "theta"
    shutil.copytree(model_path, other)
    cfg = json.loads((other / "config.json").read_text())
    if "rope_parameters" in cfg:
        cfg["rope_parameters"]["rope_theta"] = 50.0
    cfg["rope_theta"] = 50.0
    (other / "config.json").write_text(json.dumps(cfg))
    prompt = [PROMPTS[4]]
    ref = hf_greedy(other, prompt)
    assert ref != hf_greedy(model_path, prompt)
    assert token_ids(engine(other).generate(prompt, GREEDY)) == ref


def test_eos_stop_strings_and_stop_tokens(model_path, reference):
    eng = engine(model_path)
    ref = reference[0]
    # A stop token id: generation ends there, the stop token is part of the output ids.
    out = eng.generate([PROMPTS[0]], SamplingParams(max_tokens=MAX_NEW, temperature=0,
                                                    stop_token_ids=[ref[3]]))[0]
    assert out["token_ids"] == ref[: ref.index(ref[3]) + 1] and out["finish_reason"] == "stop"
    # A stop string taken from the middle of the reference text is cut from the output.
    full = eng.generate([PROMPTS[0]], GREEDY)[0]["text"]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = eng.generate([PROMPTS[0]], SamplingParams(max_tokens=MAX_NEW, temperature=0,
                                                     stop=[stop]))[0]
    assert cut["finish_reason"] == "stop" and cut["text"] == full[: full.index(stop)]
    # The end-of-sequence token ends a request unless ignore_eos; with it, max_tokens rules.
    eos = next(iter(eng.eos_token_ids))
    assert eng.generate([[0, 5, 9]], SamplingParams(max_tokens=1, temperature=0))[0]["finish_reason"] == "length"
    forced = eng.generate([PROMPTS[0]], SamplingParams(max_tokens=MAX_NEW, temperature=0,
                                                        stop_token_ids=[], ignore_eos=True))
    assert len(forced[0]["token_ids"]) == MAX_NEW
    assert eos not in ref or reference[0].index(eos) == len(ref) - 1


def test_max_model_len_caps_the_output(model_path):
    eng = engine(model_path, max_model_len=12)
    out = eng.generate([[0, 5, 9, 11, 13, 17, 19, 23, 29, 31]], SamplingParams(max_tokens=50, temperature=0,
                                                                              ignore_eos=True))
    assert len(out[0]["token_ids"]) == 2 and out[0]["finish_reason"] == "length"
    with pytest.raises(ValueError, match="maximum context length"):
        eng.add_request(list(range(12)), GREEDY)


def test_seeded_sampling_is_reproducible_and_top_p_tiny_is_greedy(model_path, reference):
    eng = engine(model_path)
    p = SamplingParams(max_tokens=MAX_NEW, temperature=1.5, seed=1234)
    a = eng.generate([PROMPTS[0]], p)
    # Same seed, this time in a batch with other requests: the same text.
    b = eng.generate([PROMPTS[1], PROMPTS[0], PROMPTS[2]], [GREEDY, p, GREEDY])
    assert token_ids(a)[0] == token_ids(b)[1]
    c = eng.generate([PROMPTS[0]], SamplingParams(max_tokens=MAX_NEW, temperature=1.5, seed=99))
    assert token_ids(c) != token_ids(a)  # at temperature 1.5 over 20 tokens: surely differs
    assert token_ids(a)[0] != reference[0]
    # A nucleus so small it holds only the most likely token: sampling becomes greedy.
    nucleus = eng.generate([PROMPTS[0]], SamplingParams(max_tokens=MAX_NEW, temperature=1.0,
                                                        top_p=1e-6, seed=5))
    assert token_ids(nucleus) == [reference[0]]


def test_prefill_steps_run_on_prefill_threads_and_decodes_on_num_threads(model_path, monkeypatch):
    """A step that prefills 64+ prompt tokens takes --prefill-threads, the decode steps
    after it go back to --num-threads; the tokens do not depend on it."""
    import torch

    from labkit.errors import UserError

    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n) or real(n))
    eng = engine(model_path, num_threads=1, prefill_threads=2)
    prompt = PROMPTS[4] * 3  # ~100 tokens: one prefill step, then decodes
    out = eng.generate([prompt], SamplingParams(max_tokens=4, temperature=0))
    assert seen == [1, 2, 1]  # start-up, the prefill step, the first decode
    assert token_ids(out) == hf_greedy(model_path, [prompt], max_new=4)
    for bad in ({"num_threads": 0}, {"prefill_threads": 0}):
        with pytest.raises(UserError, match="at least 1"):
            EngineConfig(model=str(model_path), **bad)
