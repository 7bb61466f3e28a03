"""Lab 11 (DDP training): its helpers, the busbw exercise as a learner gets it, its portfolio.

The training itself (launcher, checkpoints, the drill on real gloo ranks) is tested in
test_distributed_train.py and end to end by nbval over labs/11_ddp_training.ipynb; these
tests are in-process and fast.
"""

import json
import linecache

import matplotlib
import pytest

from labkit import exercises, labs, runs
from labkit.checks import ExerciseFailed
from labkit.checks.ddp import check_gradient_allreduce_busbw
from labkit.training import checkpoint
from labkit.labs import l11_ddp_training_plots as tp
from labkit.labs import l11_ddp_training as ts
from labkit.portfolio import build

matplotlib.use("Agg")


# --- planning ----------------------------------------------------------------------------------

def test_plan_backend_uses_nccl_only_with_a_gpu_per_rank_and_says_why_otherwise():
    assert ts.plan_backend("nccl", 0, gpus=8) == dict(backend="nccl", nproc=8, gpus=8,
                                                      nccl_not_measured=None)
    assert ts.plan_backend("auto", 0, gpus=4)["nproc"] == 4
    cpu = ts.plan_backend("auto", 0, gpus=0)
    assert (cpu["backend"], cpu["nproc"]) == ("gloo", 2) and "CPU tier" in cpu["nccl_not_measured"]
    assert ts.plan_backend("gloo", 4, gpus=8)["nproc"] == 4  # gloo asked: gloo, as many ranks
    one = ts.plan_backend("nccl", 0, gpus=1)
    assert (one["backend"], one["nproc"]) == ("gloo", 2)
    assert "1 CUDA GPU(s) visible" in one["nccl_not_measured"]
    too_many = ts.plan_backend("nccl", 16, gpus=8)
    assert too_many["backend"] == "gloo" and "16 rank(s) asked" in too_many["nccl_not_measured"]


def test_scaling_sizes_keep_one_gpu_per_rank_but_let_gloo_oversubscribe():
    nccl = ts.plan_backend("nccl", 0, gpus=2)
    assert ts.scaling_sizes([1, 2, 4, 8], nccl) == (
        [1, 2], "world size(s) [4, 8] skipped: 2 GPU(s) visible and NCCL needs one GPU per rank")
    assert ts.scaling_sizes([1, 2, 4], ts.plan_backend("gloo", 2, gpus=0)) == ([1, 2, 4], None)


# --- the step log ------------------------------------------------------------------------------

def test_step_log_keeps_rank0_steps_per_attempt_and_echoes_only_a_few():
    shown = []
    log = ts.StepLog(echo_every=10, echo=shown.append)
    lines = [
        "[rank 0] step 9/30 loss 7.4100 lr 9.00e-04 step 1.200 s 853 tokens/s",
        "[rank 0] step 10/30 loss 7.1490 val 7.0255 lr 9.14e-04 step 0.774 s 1,324 tokens/s",
        "[rank 1] fault drill: rank 1 kills itself (SIGKILL) before step 25",
        "[elastic] rank 1 failed (exit code -9); restart 1/1, resuming from step-00000020",
        "[rank 0] resumed from step-00000020: step 20, data position epoch 0 cursor 80",
        "[rank 0] step 30/30 loss 6.6714 val 6.2593 lr 1.00e-04 step 0.645 s 1,587 tokens/s",
        "[rank 1] step 30/30 loss 6.6714 lr 1.00e-04 step 0.645 s 1,587 tokens/s",  # not rank 0
    ]
    for line in lines:
        log(line)
    assert [(r["attempt"], r["step"]) for r in log.records] == [(0, 9), (0, 10), (1, 30)]
    first, second, last = log.records
    assert first["val"] is None and second["val"] == 7.0255 and second["tokens_per_s"] == 1324.0
    assert last["loss"] == 6.6714 and last["step_s"] == 0.645
    assert [r["step"] for r in log.attempt_records(0)] == [9, 10]
    assert lines[0] not in shown and lines[1] in shown and lines[5] in shown
    assert all(line in shown for line in lines[2:5])  # the kill, the restart, the resume
    assert lines[6] in shown  # not a rank-0 step line, so it is shown as it is


# --- tables ------------------------------------------------------------------------------------

def _summary(curve, val=6.0, restarts=0, attempts=None, world=2):
    return {"world_size": world, "backend": "gloo", "threads_per_rank": 1, "device": "cpu",
            "loss_curve": curve, "val_curve": [[curve[-1][0], val]], "final_loss": curve[-1][1],
            "final_val_loss": val, "final_step": curve[-1][0], "restarts": restarts,
            "attempts": attempts or [{"attempt": 0, "ok": True, "wall_s": 10.0,
                                      "resumed_from": None}],
            "global_batch_tokens": 1024, "step_s": 1.5, "tokens_per_s": 600.0,
            "tokens_per_s_median_step": 680.0,
            "phases_s": {"data": 0.0, "forward": 0.4, "backward_incl_allreduce": 0.9,
                         "optimizer_and_loss_allreduce": 0.2},
            "comm_split": {"grad_bytes": 20_980_736, "compute_s": 2.0, "synced_s": 2.2,
                           "exposed_comm_s": 0.2, "exposed_comm_share": 0.2 / 2.2,
                           "allreduce_s": 0.0855,
                           "allreduce_busbw_gbps": 20_980_736 / 0.0855 / 1e9}}


def test_comm_rows_and_scaling_table_carry_the_measured_values():
    rows = {r["part"].strip(): r["seconds"] for r in ts.comm_rows(_summary([[1, 8.0]]))}
    assert rows["exposed communication"] == 0.2 and rows["compute (no_sync)"] == 2.0
    assert rows["backward incl. all_reduce"] == 0.9 and rows["median step"] == 1.5
    sweep = [dict(world_size=1, threads_per_rank=1, oversubscribed=False, tokens_per_s=400.0,
                  tokens_per_s_median_step=500.0, efficiency=1.0, note="x"),
             dict(world_size=4, threads_per_rank=1, oversubscribed=True, tokens_per_s=900.0,
                  tokens_per_s_median_step=1000.0, efficiency=900 / 1600, note="y")]
    table = ts.scaling_table(sweep)
    assert [r["efficiency_median_step"] for r in table] == [1.0, 0.5]
    assert "note" not in table[0] and table[1]["oversubscribed"] is True


# --- checkpoints -------------------------------------------------------------------------------

def test_checkpoint_contents_name_every_part_of_a_resume(tmp_path):
    import torch

    from labkit.training.data import ShardedBatches

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    batches = ShardedBatches(torch.arange(1000).numpy(), 0, 1, 4, 8, seed=0)
    for _ in range(3):
        batches.next()
    checkpoint.save(tmp_path, 3, model.state_dict(), opt.state_dict(),
                    {"rng": checkpoint.capture_rng(), "data": batches.state_dict()},
                    meta={"history": {"loss": [[1, 2.0], [2, 1.9], [3, 1.8]], "val": []}})
    rows = ts.checkpoint_contents(checkpoint.latest(tmp_path))
    by_item = {r["item"]: r for r in rows}
    assert set(by_item) == {"model", "optimizer", "step", "meta", "rng", "data position",
                            "manifest"}
    assert "2 tensors, 15 parameters" in by_item["model"]["holds"]
    assert "exp_avg, exp_avg_sq" in by_item["optimizer"]["holds"]
    assert by_item["step"]["holds"].startswith("3 ")
    assert "epoch 0, cursor 12" in by_item["data position"]["holds"]
    assert "numpy, python, torch" in by_item["rng"]["holds"]
    assert by_item["model"]["bytes"] == (tmp_path / "step-00000003" / "model.pt").stat().st_size


def test_torn_write_demo_resumes_from_the_only_complete_checkpoint(tmp_path):
    demo = ts.torn_write_demo(tmp_path / "demo")
    assert demo["on_disk"] == [".tmp-step-00000020", "step-00000010", "step-00000030"]
    assert demo["complete"] == ["step-00000010"] and demo["resume_from"] == "step-00000010"


# --- the drill's verdict -----------------------------------------------------------------------

def _ckpt(path, weights):
    import torch

    checkpoint.save(path, 30, {"w": torch.tensor(weights)}, {}, {"data": {}})
    return path


def test_compare_runs_reports_lost_work_and_every_difference(tmp_path):
    curve = [[s, 8.0 - 0.1 * s] for s in range(1, 31)]
    ref = _summary(curve)
    bad_curve = [[s, v + (3e-7 if s == 30 else 0.0)] for s, v in curve]
    attempts = [{"attempt": 0, "ok": False, "failed_rank": 1, "exitcode": -9, "wall_s": 30.0,
                 "restart_from": "step-00000020"},
                {"attempt": 1, "ok": True, "wall_s": 20.0,
                 "resumed_from": "/somewhere/interrupted/step-00000020"}]
    bad = _summary(bad_curve, restarts=1, attempts=attempts)
    report = ts.compare_runs(ref, bad, _ckpt(tmp_path / "a", [1.0, 2.0]),
                             _ckpt(tmp_path / "b", [1.0, 2.5]), 1, 25, 1e-6)
    assert report["resumed_step"] == 20 and report["steps_recomputed"] == 4
    assert report["loss_abs_diff"] == pytest.approx(3e-7)
    assert report["curve_max_abs_diff"] == pytest.approx(3e-7)
    assert report["max_param_abs_diff"] == pytest.approx(0.5)
    assert report["passed"] and report["restart_wall_s"] == [30.0, 20.0]
    strict = ts.compare_runs(ref, bad, tmp_path / "a", tmp_path / "b", 1, 25, 1e-7)
    assert not strict["passed"]
    no_restart = ts.compare_runs(ref, ref, tmp_path / "a", tmp_path / "a", 1, 25, 1e-6)
    assert not no_restart["passed"]  # identical losses prove nothing if nothing was killed
    assert no_restart["max_param_abs_diff"] == 0.0


def test_figures_draw_from_summaries(tmp_path):
    curve = [[s, 8.0 - 0.1 * s] for s in range(1, 31)]
    ref = _summary(curve)
    records = [dict(attempt=0, step=s, loss=v, val=None, step_s=1.0, tokens_per_s=700.0 + s)
               for s, v in curve[:24]]
    report = dict(kill_at_step=25, resumed_step=20, kill_rank=1, steps_recomputed=4,
                  tolerance=1e-6, curve_max_abs_diff=0.0)
    rows = ts.scaling_table([dict(world_size=n, threads_per_rank=1, oversubscribed=n > 2,
                                  tokens_per_s=500.0 * n, tokens_per_s_median_step=520.0 * n,
                                  efficiency=1.0, exposed_comm_share=0.1 * n)
                             for n in (1, 2, 4)])
    figs = [tp.plot_training(ref, records), tp.plot_training(ref, []),
            tp.plot_comm_split(ref), tp.plot_scaling(rows),
            tp.plot_drill(ref, ref, report, records)]
    drill_text = [t.get_text() for t in figs[-1].axes[1].texts]
    assert drill_text == ["all 30 steps identical\n|difference| = 0"]
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 10_000


# --- the exercise, as a learner gets it ----------------------------------------------------------

def _exercise_cells(nb):
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "def allreduce_busbw" in c)
    return code[first:first + 2]


def _run_like_jupyter(cells, tmp_path):
    ref = _summary([[1, 8.0]])
    ns = {"__name__": "__main__", "check_gradient_allreduce_busbw": check_gradient_allreduce_busbw,
          "rec": runs.LabRecorder(tmp_path / "rec", "11_ddp_training"), "ref": ref,
          "split": ref["comm_split"], "where": "2 gloo ranks, cpu"}
    for i, src in enumerate(cells):
        name = f"<lab11 cell {i}>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        exec(compile(src, name, "exec"), ns)
    return ns


def test_learner_copy_of_lab11_fails_with_the_hint_and_reference_passes(tmp_path, capsys):
    lab = labs.select(["11"])[0]
    ns = _run_like_jupyter(_exercise_cells(json.loads(lab.path.read_text())), tmp_path)
    out = capsys.readouterr().out
    assert "✔ allreduce_busbw: passed 26 cases" in out
    assert "the measured all_reduce of 21.0 MB in 85.5 ms on 2 ranks has busbw 0.2454 GB/s" in out
    assert ns["rec"].results["scalars"]["busbw_exercise"]["value"] == "passed"

    [(path, n)] = exercises.export([lab], tmp_path / "learner")
    assert n == 1
    assert "2 * (world_size - 1)" not in path.read_text()
    with pytest.raises(ExerciseFailed, match="not implemented yet — Exercise: algbw = bytes"):
        _run_like_jupyter(_exercise_cells(json.loads(path.read_text())), tmp_path)


def test_check_names_the_case_an_algbw_only_answer_gets_wrong():
    # on 2 ranks busbw == algbw (2(n-1)/n = 1), so the 8-rank case is the one that catches it
    with pytest.raises(ExerciseFailed, match=r"allreduce_busbw\(1073741824, 0.01, 8\): "
                       r"expected 187.9048192, got 107.3741824"):
        check_gradient_allreduce_busbw(lambda b, t, n: b / t / 1e9)
    wrong_probe = dict(_summary([[1, 8.0]])["comm_split"], allreduce_busbw_gbps=1.0)
    with pytest.raises(ExerciseFailed, match="the probe recorded 1.0 GB/s"):
        check_gradient_allreduce_busbw(lambda b, t, n: b / t / 1e9 * 2 * (n - 1) / n,
                                       measured=wrong_probe, world_size=2)


# --- portfolio ---------------------------------------------------------------------------------

def _fake_run(tmp_path, monkeypatch, drill="passed", diff=0.0):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("11_ddp_training", params={"backend": "gloo"})
    rec.scalar("model_params", 5_245_184)
    rec.scalar("backend", "gloo", note="2 ranks")
    rec.scalar("nranks", 2)
    rec.not_measured("nccl_training", "the lab trained on gloo with CPU processes (the CPU tier)")
    rec.scalar("tokens_per_s_median_step", 676.6, unit="tokens/s", note="median step")
    rec.scalar("drill_kill_rank", 1)
    rec.scalar("drill_kill_at_step", 25)
    rec.scalar("drill_resumed_step", 20)
    rec.scalar("drill_loss_abs_diff", diff)
    rec.scalar("drill_max_param_abs_diff", diff)
    rec.scalar("drill_tolerance", 1e-6)
    rec.scalar("drill_result", drill)
    rec.scalar("scaling_efficiency_2", 1.107)
    rec.not_measured("scaling_tokens_per_s_4", "not run; 4 ranks would oversubscribe 2 cores")
    rec.text("trained_model", "11_ddp_training/files/trained_model")
    runs.atomic_write_json(tmp_path / "r" / "11_ddp_training" / "status.json",
                           {"status": "completed", "seconds": 150.0})
    build(tmp_path / "r", tmp_path / "site")
    return " ".join((tmp_path / "site" / "11_ddp_training.md").read_text().split())


def test_portfolio_page_tells_the_drill_in_the_first_person(tmp_path, monkeypatch):
    page = _fake_run(tmp_path, monkeypatch)
    assert ("I trained a 5.2M-parameter Llama with DistributedDataParallel on 2 gloo ranks at "
            "676.6 tokens/s (median step); killed rank 1 with SIGKILL before step 25; the job "
            "restarted from the checkpoint of step 20, and its final loss matched the "
            "uninterrupted run with the same seed within 1e-06 (difference: 0; every weight "
            "identical, bit for bit).") in page
    assert "not measured on this tier: the lab trained on gloo with CPU processes" in page
    assert "most likely not a real speed-up" in page  # efficiency 1.107 is explained, not sold
    assert "4 ranks: *not measured on this tier: not run; 4 ranks would oversubscribe" in page
    assert "11_ddp_training/files/trained_model" in page
    assert "*not measured in this run*" in page  # e.g. the figures of this fake run


def test_portfolio_page_says_when_the_drill_failed(tmp_path, monkeypatch):
    page = _fake_run(tmp_path, monkeypatch, drill="failed", diff=0.02)
    assert "did **not** match the uninterrupted run within 1e-06 (difference: 0.02)" in page
    assert "bit for bit" not in page


def test_scaling_scalars_record_each_size_and_say_why_4_gloo_ranks_are_missing():
    from labkit.runs import NotMeasured

    table = [{"world_size": 1, "tokens_per_s_median_step": 100.04, "threads_per_rank": 2,
              "oversubscribed": False, "efficiency_median_step": 1.0},
             {"world_size": 2, "tokens_per_s_median_step": 180.0, "threads_per_rank": 1,
              "oversubscribed": True, "efficiency_median_step": 0.9}]
    found = ts.scaling_scalars(table, None, {"backend": "gloo"}, [1, 2], [1, 2], cpu_count=2)
    assert found["scaling_tokens_per_s_1"][:2] == (100.0, "tokens/s")
    assert "oversubscribed" in found["scaling_tokens_per_s_2"][2]
    assert found["scaling_efficiency_2"][0] == 0.9
    assert isinstance(found["scaling_tokens_per_s_4"], NotMeasured)
    assert "scaling_skipped" not in found
    nccl = ts.scaling_scalars(table, "no 4 GPUs", {"backend": "nccl"}, [1, 2], [1, 2, 4], 8)
    assert nccl["scaling_skipped"] == NotMeasured("no 4 GPUs")
    assert "scaling_tokens_per_s_4" not in nccl


def test_drill_scalars_carry_the_verdict_and_the_tolerance():
    report = dict(restarts=1, resumed_step=10, steps_recomputed=2, reference_final_loss=3.1,
                  interrupted_final_loss=3.1, loss_abs_diff=0.0, val_loss_abs_diff=0.0,
                  curve_max_abs_diff=0.0, curve_steps_compared=20, max_param_abs_diff=0.0,
                  passed=False)
    found = ts.drill_scalars(report, {"attempts": [{"exitcode": -9}]}, kill_rank=1,
                             kill_at_step=12, tolerance=1e-3)
    assert found["drill_result"][0] == "failed" and "0.001" in found["drill_result"][2]
    assert found["drill_exitcode"][0] == -9 and found["drill_kill_rank"] == 1
