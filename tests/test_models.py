"""labkit.models: corpus, tokenizer, tiny Llama build, cache and CLI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labkit.errors import UserError
from labkit.models import build_tiny_llama, cache, corpus, tiny_llama
from labkit.models.info import model_info

HF_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", cache.MARKER]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private cache root, so tests never touch (or depend on) the project's .cache."""
    d = tmp_path_factory.mktemp("labkit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_CACHE_DIR", str(d))
        yield d


@pytest.fixture(scope="module")
def model_dir(cache_dir) -> Path:
    return build_tiny_llama(seed=0, verbose=False)


# ---------------------------------------------------------------- corpus


def test_corpus_is_sorted_capped_and_stdlib_only():
    docs = corpus.load_corpus(max_bytes=300_000)
    paths = [d.path for d in docs]
    assert paths == sorted(paths)
    assert sum(len(d.text.encode()) for d in docs) <= 300_000
    assert len(docs) > 3
    assert not any(p.startswith(("site-packages/", "test/", "encodings/")) for p in paths)
    # Prefix property: a bigger cap only appends files, so small corpora are prefixes.
    bigger = corpus.load_corpus(max_bytes=600_000)
    assert [d.path for d in bigger[:len(docs)]] == paths
    assert corpus.corpus_digest(docs) == corpus.corpus_digest(corpus.load_corpus(300_000))
    assert corpus.corpus_digest(docs) != corpus.corpus_digest(bigger)


def test_corpus_batches_and_split(model_dir):
    docs = corpus.load_corpus(max_bytes=200_000)
    ids = corpus.encode_corpus(docs, model_dir)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    assert ids.dtype == np.uint16 and ids.max() < vocab
    assert (ids == 1).sum() == len(docs)  # one </s> (id 1) closes each document
    train, val = corpus.train_val_split(ids, val_fraction=0.1)
    assert len(train) + len(val) == len(ids)
    assert np.array_equal(val, ids[-len(val):])
    assert abs(len(val) / len(ids) - 0.1) < 0.01
    x, y = corpus.get_batch(train, batch_size=4, seq_len=32, rng=np.random.default_rng(0))
    assert x.shape == y.shape == (4, 32) and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    x2, _ = corpus.get_batch(train, batch_size=4, seq_len=32, rng=np.random.default_rng(0))
    assert np.array_equal(x, x2)
    with pytest.raises(ValueError):
        corpus.train_val_split(ids, val_fraction=1.5)


# ---------------------------------------------------------------- build output


def test_hf_files_and_config(model_dir):
    for name in HF_FILES:
        assert (model_dir / name).is_file(), name
    assert model_dir.parent == Path(os.environ["LABKIT_CACHE_DIR"]).resolve() / "models"
    assert model_dir.name.startswith("tiny-llama-")
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64 == cfg["head_dim"]
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    assert cfg["vocab_size"] == len(tok["model"]["vocab"]) == 4096
    info = model_info(model_dir)
    assert 4_000_000 < info["parameters"] < 6_500_000
    assert info["weight_dtypes"] == ["F32"]
    assert info["kv_cache_bytes_per_token"] == 2 * 4 * 2 * 64 * 4


def test_same_seed_gives_identical_bytes_other_seed_other_weights(model_dir, tmp_path):
    again = build_tiny_llama(out_dir=tmp_path / "again", seed=0, verbose=False)
    for name in HF_FILES:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name
    other = build_tiny_llama(out_dir=tmp_path / "seed1", seed=1, verbose=False)
    assert (other / "model.safetensors").read_bytes() != (model_dir / "model.safetensors").read_bytes()
    # The tokenizer depends on the corpus only, not on the seed.
    assert (other / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_transformers_loads_and_generates_greedily(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == model_info(model_dir)["parameters"]
    inputs = tok("def fibonacci(n):", return_tensors="pt")
    assert inputs["input_ids"][0, 0].item() == tok.bos_token_id  # <s> prepended, like Llama
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert 1 <= len(new) <= 8 and (len(new) == 8 or new[-1] == tok.eos_token_id)
    # Greedy = argmax of the logits at each step; check the first step by hand.
    with torch.no_grad():
        first = model(**inputs).logits[0, -1].argmax().item()
    assert new[0] == first


def test_tokenizer_round_trips_and_chat_template(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    texts = ["def f(x):\n\treturn x ** 2  # square\n", "  leading spaces\r\n",
             "héllo wörld ✓ 漢字 🙂", "", "class A(B, metaclass=M):\n    pass\n" * 3]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    code = Path(corpus.__file__).read_text()
    assert len(tok(code)["input_ids"]) < len(code) / 2  # BPE compresses code it was trained on
    messages = [{"role": "user", "content": "Hi"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<s><|user|>\nHi</s>\n<|assistant|>\n"


# ---------------------------------------------------------------- cache and atomicity


def test_second_call_uses_cache(model_dir, monkeypatch, capsys):
    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt although a matching build is cached")

    monkeypatch.setattr(tiny_llama, "_build_into", no_rebuild)
    assert build_tiny_llama(seed=0) == model_dir
    assert "found cached build" in capsys.readouterr().err


def test_crash_mid_build_leaves_nothing(cache_dir, monkeypatch):
    def crash_after_tokenizer(tmp, *args):
        (tmp / "tokenizer.json").write_text("{}")  # some files are already written...
        raise KeyboardInterrupt  # ...when the user presses Ctrl-C

    monkeypatch.setattr(tiny_llama, "_build_into", crash_after_tokenizer)
    with pytest.raises(KeyboardInterrupt):
        build_tiny_llama(seed=7, verbose=False)
    # Whatever is in the cache is a finished build: no temp dir, no half-built model.
    leftovers = list((cache_dir / "models").iterdir())
    assert all(cache.read_marker(p) is not None for p in leftovers), leftovers
    assert not any(cache.read_marker(p)["seed"] == 7 for p in leftovers)


def test_abandoned_temp_dir_of_dead_process_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import socket

    target = tmp_path / "tiny-llama-abc"
    stale = tmp_path / f".tiny-llama-abc.tmp-{socket.gethostname()}-{dead}-xyz"
    stale.mkdir()
    ours = cache.make_temp_dir(target)
    assert not stale.exists() and ours.is_dir()


def test_racing_builders_first_publish_wins(tmp_path):
    target = tmp_path / "model"
    a, b = cache.make_temp_dir(target), cache.make_temp_dir(target)
    cache.write_marker(a, {"key": "k", "who": "a"})
    cache.write_marker(b, {"key": "k", "who": "b"})
    assert cache.publish(a, target) is True
    assert cache.publish(b, target) is False  # loser discards its copy
    assert cache.read_marker(target)["who"] == "a" and not b.exists()


def test_out_dir_conflicts_need_force(model_dir, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a labkit model"):
        build_tiny_llama(out_dir=foreign, verbose=False)
    assert (foreign / "notes.txt").read_text() == "mine"

    small = tiny_llama.TinyLlamaConfig(corpus_max_bytes=100_000, vocab_size=512)  # fast
    out = build_tiny_llama(out_dir=tmp_path / "m", seed=3, config=small, verbose=False)
    with pytest.raises(UserError, match="--force"):
        build_tiny_llama(out_dir=out, seed=4, config=small, verbose=False)
    assert build_tiny_llama(out_dir=out, seed=4, config=small, force=True, verbose=False) == out
    assert cache.read_marker(out)["seed"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "m"]  # no temp leftovers


# ---------------------------------------------------------------- CLI


def _cli(argv):
    from labkit.models import cli

    parser = argparse.ArgumentParser(prog="labkit")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_build_prints_only_the_path(model_dir, capsys):
    assert _cli(["model", "build"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{model_dir}\n"
    assert "found cached build" in err


def test_cli_info(model_dir, capsys):
    assert _cli(["model", "info", str(model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == model_info(model_dir)["parameters"]
    assert info["tensors"]["model.embed_tokens.weight"]["shape"] == [4096, 256]
    assert _cli(["model", "info", str(model_dir)]) == 0
    assert "KV cache" in capsys.readouterr().out
    with pytest.raises(UserError):
        _cli(["model", "info", str(model_dir.parent)])
