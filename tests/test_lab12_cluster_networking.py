"""Lab 12 (cluster networking): helpers, the transport exercise as a learner gets it, portfolio."""

import json
from pathlib import Path

import pytest

from labkit import exercises, labs, runs
from labkit.checks import ExerciseFailed, networking
from labkit.labs import l12_cluster_networking as cc
from labkit.cluster import manifests as m
from labkit.portfolio import build

ROOT = Path(__file__).resolve().parents[1]
LAB_LOGS = ROOT / "labs" / "data" / "nccl"


def _classify(via):
    return networking._classify(via)


# --- helpers ----------------------------------------------------------------------------------

def test_lab_log_samples_are_the_tested_ones():
    """The lab ships its own copies (it must not read tests/); they must not drift."""
    for f in sorted(LAB_LOGS.glob("*.log")):
        assert f.read_bytes() == (ROOT / "tests" / "data" / "nccl" / f.name).read_bytes(), f.name
    assert len(list(LAB_LOGS.glob("*.log"))) == 6


def test_log_rows_split_transports_by_node_and_name_the_problem():
    rows = {r["sample"]: r for r in cc.log_rows(sorted(LAB_LOGS.glob("*.log")), _classify)}
    ib = rows["h100_2node_ib_gdr_2.19.3.log"]
    assert (ib["intra_node"], ib["inter_node"]) == ("p2p ×112", "rdma+gdr ×32")
    assert ib["first_hint"] == "nothing suspicious found"
    sock = rows["socket_despite_ib_2.23.4.log"]
    assert sock["inter_node"] == "tcp ×8" and sock["hcas_found"] == "mlx5_0/IB, mlx5_1/IB"
    assert "although IB/RoCE HCAs exist" in sock["first_hint"]
    roce = rows["roce_no_gdr_2.20.5.log"]
    assert roce["inter_node"] == "rdma ×8" and "RoCE" in roce["hcas_found"]
    assert rows["a100_2node_socket_shm_2.17.1.log"]["intra_node"] == "shm ×12"
    assert rows["docker0_init_fails_2.21.5.log"]["inter_node"] == "-"


def test_capture_nccl_log_output_parses_despite_rank_prefixes(monkeypatch):
    """The launcher prefixes every line with '[rank r] '; the parser must still read it."""
    sample = (LAB_LOGS / "h100_2node_ib_gdr_2.19.3.log").read_text().splitlines()
    seen = {}

    def fake_launch(target, nproc, backend, args, env, timeout, log):
        seen.update(target=target, backend=backend, env=env)
        for i, line in enumerate(sample):
            log(f"[rank {i % nproc}] {line}")
        return [None] * nproc

    monkeypatch.setattr(cc, "launch", fake_launch)  # the glue's own reference to launch
    from labkit.cluster.nccl_log import parse_nccl_log

    log = parse_nccl_log(cc.capture_nccl_log(2))
    assert seen["backend"] == "nccl" and seen["env"]["NCCL_DEBUG"] == "INFO"
    assert "TUNING" in seen["env"]["NCCL_DEBUG_SUBSYS"]
    assert dict(log.transports()) == {"P2P/IPC": 112, "NET/IB": 32}


def test_manifests_are_valid_and_broken_copies_are_caught():
    jobs = {"ib": m.ClusterJob(name="t-ib", fabric="ib", hcas=("mlx5_0",),
                               rdma_resource="rdma/rdma_shared_device_a"),
            "roce": m.ClusterJob(name="t-roce", fabric="roce", host_network=True,
                                 hcas=("mlx5_0",), rdma_resource="rdma/rdma_shared_device_a")}
    rows, docs = cc.manifest_check_rows(jobs, "1.33")
    assert [(r["fabric"], r["kind"], r["valid"]) for r in rows] == [
        ("ib", "PyTorchJob", "yes"), ("ib", "JobSet", "yes"),
        ("roce", "PyTorchJob", "yes"), ("roce", "JobSet", "yes")]
    assert {r["gpus"] for r in rows} == {16} and {r["pods"] for r in rows} == {2}
    assert "NCCL_IB_GID_INDEX" in rows[2]["nccl_env"]  # RoCE only
    assert "NCCL_IB_GID_INDEX" not in rows[0]["nccl_env"]
    from labkit.cluster.manifests_schema import validation_errors

    for name in ("pytorchjob_ib", "jobset_roce"):
        errors = validation_errors(cc.break_manifest(docs[name]), "1.33")
        assert len(errors) == 2, errors
        assert any("volumeMount" in e for e in errors)
    assert validation_errors(docs["pytorchjob_ib"], "1.33") == []  # the copy, not the original


def test_nccl_variables_cover_the_manifest_set_and_the_debugging_ones():
    rows = cc.nccl_variables_rows()
    names = [r["variable"] for r in rows]
    assert set(m.NCCL_VARIABLES) <= set(names) and len(names) == len(set(names))
    assert {"NCCL_P2P_DISABLE", "NCCL_ALGO", "NCCL_DEBUG_FILE"} <= set(names)


def test_transport_check_names_the_failing_input():
    with pytest.raises(ExerciseFailed, match=r"classify_transport\('P2P/CUMEM/read',\): "
                                             r"expected 'p2p', got 'nvlink'"):
        networking.check_classify_transport(lambda via: "nvlink")


# --- the exercise, as a learner gets it ---------------------------------------------------------

def _exercise_cells(nb):
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "def classify_transport" in c)
    return code[first:first + 2]


def _run(cells):
    ns = {"networking": networking}
    for c in cells:
        exec(c, ns)
    return ns


def test_learner_copy_of_lab12_fails_with_the_hint_and_reference_passes(tmp_path, capsys):
    lab = labs.select(["12"])[0]
    _run(_exercise_cells(json.loads(lab.path.read_text())))
    assert "✔ classify_transport: passed 12 cases" in capsys.readouterr().out

    [(path, n)] = exercises.export([lab], tmp_path)
    assert n == 1
    assert '"rdma+gdr" if "GDRDMA"' not in path.read_text()
    with pytest.raises(ExerciseFailed, match="not implemented yet — Exercise: look at the prefix"):
        _run(_exercise_cells(json.loads(path.read_text())))


# --- portfolio --------------------------------------------------------------------------------

def test_portfolio_page_reports_validity_and_log_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("12_cluster_networking", params={"nodes": 2})
    rec.table("manifest_checks", [dict(fabric="ib", kind="PyTorchJob", valid="yes", errors=0,
                                       pods=2, gpus=16, rdma_resource="rdma/x", nccl_env="X")])
    rec.scalar("manifests_valid", "4/4", note="PyTorchJob + JobSet for IB and RoCE")
    rec.scalar("manifest_gpus", 16)
    rows = cc.log_rows([LAB_LOGS / "socket_despite_ib_2.23.4.log"], _classify)
    rec.table("nccl_log_samples", rows)
    rec.scalar("nccl_logs_parsed", 1)
    rec.not_measured("gpu_link_matrix", "no NVIDIA driver/GPU found")
    rec.not_measured("own_nccl_log_summary", "0 CUDA GPU(s) visible")
    rec.table("debug_checklist", cc.DEBUG_CHECKLIST)
    runs.atomic_write_json(tmp_path / "r" / "12_cluster_networking" / "status.json",
                           {"status": "completed", "seconds": 60.0})
    build(tmp_path / "r", tmp_path / "site")
    page = " ".join((tmp_path / "site" / "12_cluster_networking.md").read_text().split())
    assert "**4/4 valid** (PyTorchJob + JobSet for IB and RoCE)" in page
    assert "| socket_despite_ib_2.23.4.log | 2.23.4 | 2 | - | tcp ×8 |" in page
    assert "not measured on this tier: no NVIDIA driver/GPU found" in page
    assert "not measured on this tier: 0 CUDA GPU(s) visible" in page
    assert "drain the node" in page
