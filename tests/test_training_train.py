"""DDP training: the fault drill on gloo, atomic checkpoints, resumable data order, export.

The drill runs once per module through the real CLI handler (3 launches of 2 ranks on a
much smaller Llama than the lab's, so it fits CI); the other tests are in-process.
"""

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pytest

from labkit.training import checkpoint
from labkit.training.data import ShardedBatches, val_windows
from labkit.training.cli import register
from labkit.errors import UserError

STEPS, EVERY, KILL_AT = 12, 5, 8


def cli(*argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def small_model():
    from labkit.models import TinyLlamaConfig, build_tiny_llama

    cfg = TinyLlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, intermediate_size=128, vocab_size=512,
                          corpus_max_bytes=300_000)
    return build_tiny_llama(config=cfg, verbose=False)


@pytest.fixture(scope="module")
def drill(small_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("drill")
    code = cli("--model", str(small_model), "--nproc", "2", "--backend", "gloo",
               "--steps", str(STEPS), "--batch-size", "4", "--seq-len", "32",
               "--checkpoint-every", str(EVERY), "--eval-every", "6",
               "--ckpt-dir", str(work / "ckpt"), "--out", str(work / "model"),
               "--kill-rank", "1", "--kill-at-step", str(KILL_AT), "--compare",
               "--json", str(work / "drill.json"), "--timeout", "240")
    return code, json.loads((work / "drill.json").read_text()), work


@pytest.mark.slow
def test_fault_drill_resumes_and_matches_uninterrupted_run(drill):
    code, report, _ = drill
    assert code == 0 and report["passed"]
    bad = report["runs"]["interrupted"]
    first, second = bad["attempts"]
    assert not first["ok"] and first["failed_rank"] == 1 and first["exitcode"] == -9  # SIGKILL
    assert first["restart_from"] == "step-00000005"
    assert second["ok"] and second["resumed_from"].endswith("step-00000005")
    # steps 6 and 7 ran before the kill and again after it
    assert report["steps_recomputed"] == KILL_AT - 1 - EVERY
    # the whole curve, not only the end, is the uninterrupted one; CPU + gloo is bit-exact
    ref = report["runs"]["reference"]
    assert [s for s, _ in bad["loss_curve"]] == list(range(1, STEPS + 1))
    assert np.allclose(bad["loss_curve"], ref["loss_curve"], rtol=0, atol=1e-6)
    assert report["loss_abs_diff"] <= 1e-6 and report["max_param_abs_diff"] <= 1e-6
    # and it actually trained
    assert bad["final_loss"] < bad["loss_curve"][0][1] - 0.05
    assert ref["restarts"] == 0 and bad["restarts"] == 1


@pytest.mark.slow
def test_resume_restores_step_and_data_position(drill):
    _, report, work = drill
    bad, ref = report["runs"]["interrupted"], report["runs"]["reference"]
    # the restarted attempt timed only the steps after the checkpoint it resumed from
    assert bad["steps_timed"] == STEPS - EVERY and ref["steps_timed"] == STEPS
    # each rank ends at the same place in its shard as the uninterrupted run: 12 batches of 4
    assert bad["data_positions"] == ref["data_positions"]
    assert [(p["rank"], p["epoch"], p["cursor"]) for p in bad["data_positions"]] == \
        [(0, 0, STEPS * 4), (1, 0, STEPS * 4)]
    saved, mine = checkpoint.load(checkpoint.latest(work / "ckpt" / "interrupted" / "ckpt"), 1)
    assert saved["step"] == STEPS and mine["data"]["cursor"] == STEPS * 4


@pytest.mark.slow
def test_exported_model_loads_with_transformers(drill, small_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, work = drill
    out = work / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "labkit_train.json"):
        assert (out / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    saved, _ = checkpoint.load(checkpoint.latest(work / "ckpt" / "interrupted" / "ckpt"), 0)
    for k, v in model.state_dict().items():  # the trained weights, not the initial ones
        assert torch.equal(v, saved["model"][k]), k
    before = AutoModelForCausalLM.from_pretrained(small_model).state_dict()
    assert not torch.equal(before["lm_head.weight"], model.state_dict()["lm_head.weight"])
    ids = tok("def main():", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


@pytest.mark.slow
def test_comm_split_is_measured(drill):
    _, report, work = drill
    c = report["runs"]["reference"]["comm_split"]
    assert c["compute_s"] > 0 and c["synced_s"] > 0 and c["allreduce_s"] > 0
    assert c["exposed_comm_s"] == pytest.approx(max(0.0, c["synced_s"] - c["compute_s"]))
    # the bare all_reduce moved exactly one float32 per parameter
    saved, _ = checkpoint.load(checkpoint.latest(work / "ckpt" / "reference" / "ckpt"), 0)
    assert c["grad_bytes"] == 4 * sum(v.numel() for v in saved["model"].values())


# --- checkpoints, in one process (no process group: world size 1) ----------------------------

def _state(value: float):
    import torch

    return {"w": torch.full((1000,), value)}


def test_crash_mid_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 5, _state(5.0), {"lr": 1}, {"data": {"cursor": 20}})
    real = checkpoint._write_durable

    def crash_in_model_file(path, data):
        if path.name == "model.pt":
            path.with_name(".model.pt.tmp").write_bytes(data[: len(data) // 2])  # torn write
            raise KeyboardInterrupt("simulated crash half-way through model.pt")
        real(path, data)

    monkeypatch.setattr(checkpoint, "_write_durable", crash_in_model_file)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 10, _state(10.0), {"lr": 2}, {"data": {"cursor": 40}})
    assert (tmp_path / ".tmp-step-00000010").is_dir()  # the half-written attempt is there...
    found = checkpoint.latest(tmp_path)  # ...and ignored
    assert found.name == "step-00000005"
    saved, mine = checkpoint.load(found, 0)
    assert saved["step"] == 5 and float(saved["model"]["w"][0]) == 5.0
    assert mine["data"]["cursor"] == 20
    with pytest.raises(UserError, match="--nproc 1"):  # per-rank state cannot be re-split
        checkpoint.load(found, 0, world_size=2)

    monkeypatch.setattr(checkpoint, "_write_durable", real)  # the next save cleans up
    checkpoint.save(tmp_path, 10, _state(10.0), {"lr": 2}, {"data": {"cursor": 40}})
    assert checkpoint.latest(tmp_path).name == "step-00000010"
    assert not (tmp_path / ".tmp-step-00000010").exists()


def test_torn_published_checkpoint_is_skipped_and_old_ones_pruned(tmp_path):
    for step in (5, 10, 15):
        checkpoint.save(tmp_path, step, _state(step), {}, {"data": {}}, keep=2)
    assert [p.name for p in checkpoint.list_complete(tmp_path)] == \
        ["step-00000010", "step-00000015"]
    model_file = tmp_path / "step-00000015" / "model.pt"
    model_file.write_bytes(model_file.read_bytes()[:100])  # e.g. a disk that lost the tail
    assert checkpoint.latest(tmp_path).name == "step-00000010"
    assert checkpoint.latest(tmp_path / "missing") is None


def test_rng_states_round_trip(tmp_path):
    import torch

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    checkpoint.save(tmp_path, 1, {}, {}, {"rng": checkpoint.capture_rng()})
    first = (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    _, mine = checkpoint.load(checkpoint.latest(tmp_path), 0)  # weights_only=True load
    checkpoint.restore_rng(mine["rng"])
    assert (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()) == first


# --- data order --------------------------------------------------------------------------------

def test_shards_are_disjoint_and_resume_replays_the_same_batches():
    ids = np.arange(10_000, dtype=np.uint16)
    a = ShardedBatches(ids, 0, 2, batch_size=4, seq_len=16, seed=3)
    b = ShardedBatches(ids, 1, 2, batch_size=4, seq_len=16, seed=3)
    xa, ya = a.next()
    xb, _ = b.next()
    assert xa.max() < 5000 <= xb.min()  # rank 0 reads the first half, rank 1 the second
    assert (ya[:, :-1] == xa[:, 1:]).all()  # targets are the inputs shifted by one
    for _ in range(100):  # 312 windows / 4 = 78 batches per epoch: crosses an epoch
        a.next()
    state = a.state_dict()
    assert state["epoch"] == 1
    expected = [a.next()[0] for _ in range(3)]
    c = ShardedBatches(ids, 0, 2, batch_size=4, seq_len=16, seed=3)
    c.load_state_dict(state)
    assert all((c.next()[0] == e).all() for e in expected)
    with pytest.raises(UserError, match="world_size"):
        ShardedBatches(ids, 0, 4, 4, 16, 3).load_state_dict(state)


def test_val_windows_are_dealt_to_ranks_without_overlap():
    ids = np.arange(1000, dtype=np.uint16)
    parts = [val_windows(ids, 10, 8, r, 3)[0] for r in range(3)]
    starts = sorted(int(p[i, 0]) for p in parts for i in range(len(p)))
    assert starts == [i * 10 for i in range(8)]


def test_cli_rejects_half_a_drill_and_help_teaches(capsys):
    with pytest.raises(UserError, match="both"):
        cli("--kill-rank", "1")
    with pytest.raises(UserError, match="--ckpt-dir"):
        cli("--kill-rank", "1", "--kill-at-step", "3")
    with pytest.raises(SystemExit):
        cli("--help")
    text = capsys.readouterr().out
    assert "no_sync" in text and "oversubscribe" in text and "--max-restarts" in text
