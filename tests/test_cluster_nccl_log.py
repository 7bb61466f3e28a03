"""`labkit nccl-log` on NCCL_DEBUG=INFO samples written from real NCCL 2.17-2.23 formats."""

import argparse
import json
from pathlib import Path

import pytest

from labkit.cluster import cli
from labkit.cluster.nccl_diagnose import diagnose, format_summary
from labkit.cluster.nccl_log import parse_nccl_log, transport_kind, tuning_summary
from labkit.errors import UserError

DATA = Path(__file__).parent / "data" / "nccl"


def parse(name):
    return parse_nccl_log((DATA / name).read_text())


def test_single_node_h100_nvlink_nvls():
    log = parse("h100_1node_nvls_2.21.5.log")
    assert (log.version, log.cuda, log.cuda_driver) == ("2.21.5", "12.4", "12.4")
    assert log.nranks == 8 and sorted(log.ranks) == list(range(8))
    assert log.hosts() == {"gpu-node-1": list(range(8))}
    assert log.ranks[3]["bus_id"] == "5d000" and log.ranks[3]["cuda_dev"] == 3
    assert dict(log.transports()) == {"P2P/CUMEM": 128}  # 16 channels x 8 ring edges
    assert [d["name"] for d in log.ib_devices] == [f"mlx5_{i}" for i in range(8)]
    assert log.nvls_available and log.patterns[0]["intra"] == "NVL"
    # TUNING: upper-case 'SIMPLE' is normalised; choices grouped into size ranges
    summary = tuning_summary(log)
    assert summary["AllReduce"][0] == "Ring/LL for 8 B..4 KiB"
    assert summary["AllReduce"][-1] == "NVLS/Simple for 512 KiB..1 GiB"
    assert diagnose(log) == []
    text = format_summary(log)
    assert "ranks 0-7 of 8 on 1 node(s)" in text
    assert "intra-node: P2P/CUMEM (GPU to GPU directly, NVLink (topology type NVL))" in text
    assert "inter-node" not in text


def test_two_nodes_infiniband_with_gpudirect_rdma():
    log = parse("h100_2node_ib_gdr_2.19.3.log")  # version banner without the host prefix
    assert log.version == "2.19.3" and log.nranks == 16 and log.nnodes == 2
    assert log.hosts() == {"gpu-node-1": list(range(8)), "gpu-node-2": list(range(8, 16))}
    net = [c for c in log.channels if c["kind"] == "NET/IB"]
    assert len(net) == 32 and all(c["gdr"] for c in net)
    assert {c["direction"] for c in net} == {"send", "receive"}
    assert all(g["enabled"] for g in log.gdr)
    text = format_summary(log)
    assert "inter-node: NET/IB with GPUDirect RDMA on mlx5_0, mlx5_3" in text
    assert "AllReduce: Tree/LL for 1 KiB..64 KiB" in text
    assert diagnose(log) == []


def test_socket_and_shm_with_old_numeric_tuning_and_busid_brackets():
    log = parse("a100_2node_socket_shm_2.17.1.log")
    assert log.version == "2.17.1" and log.hosts()["a100-1"] == [4, 5, 6, 7]
    assert log.env["NCCL_IB_DISABLE"] == "1" and log.env["NCCL_P2P_DISABLE"] == "1"
    assert {c["kind"] for c in log.channels} == {"SHM", "NET/Socket"}
    assert {(t["algo"], t["proto"]) for t in log.tuning} == {
        ("Tree", "LL"), ("Ring", "LL"), ("Ring", "Simple")}  # 0/1 and 0/2 decoded
    hints = " ".join(diagnose(log))
    assert "TCP sockets" in hints and "NCCL_IB_DISABLE=1 is set" in hints
    assert "host shared memory (SHM)" in hints and "NCCL_P2P_DISABLE=1 is set" in hints


def test_roce_without_gdr_and_a_warning():
    log = parse("roce_no_gdr_2.20.5.log")
    assert {d["link"] for d in log.ib_devices} == {"RoCE"}
    assert not any(c["gdr"] for c in log.channels if c["kind"] == "NET/IB")
    assert len(log.warnings) == 1 and "GID table change" in log.warnings[0]["message"]
    assert log.warnings[0]["where"] == "transport/net_ib.cc:101"
    hints = diagnose(log)
    assert any("without GPUDirect RDMA" in h and "nvidia-peermem" in h for h in hints)
    assert any("NCCL_IB_GID_INDEX" in h and "set to 3" in h for h in hints)
    assert any("path type PHB" in h for h in hints)


def test_socket_used_although_ib_hcas_exist_with_torchrun_prefixes():
    log = parse("socket_despite_ib_2.23.4.log")
    assert log.version == "2.23.4" and log.hosts() == {"node-a": [0], "node-b": [1]}
    assert log.transports()["NET/Socket"] == 8
    hints = diagnose(log)
    assert hints[0].startswith("NET/Socket (TCP) carries inter-node traffic although IB/RoCE "
                               "HCAs exist (mlx5_0, mlx5_1): check NCCL_IB_DISABLE")


def test_failed_init_over_docker0():
    log = parse("docker0_init_fails_2.21.5.log")
    assert log.ranks == {} and log.init_started == {0, 1} and log.nranks == 4
    assert len(log.warnings) == 2 and "socketStartConnect" in log.warnings[0]["message"]
    hints = " ".join(diagnose(log))
    assert "docker0" in hints and "NCCL_SOCKET_IFNAME" in hints
    assert "never logged Init COMPLETE" in hints
    assert "ranks 0-1 of 4 started init" in format_summary(log)


@pytest.mark.parametrize("via,kind", [
    ("P2P/IPC/read", "P2P/IPC"), ("P2P/CUMEM", "P2P/CUMEM"),
    ("P2P/direct pointer/read", "P2P/direct"), ("SHM/direct/direct", "SHM"),
    ("NET/IB/3/GDRDMA", "NET/IB"), ("NET/IB/0(1)/GDRDMA", "NET/IB"),
    ("NET/Socket/0", "NET/Socket")])
def test_transport_kinds(via, kind):
    assert transport_kind(via) == kind


def test_not_an_nccl_log():
    log = parse_nccl_log("hello\nworld\n")
    assert log.lines == 0 and "NCCL_DEBUG=INFO" in format_summary(log)


def test_cli_text_and_json(capsys, tmp_path):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["nccl-log", str(DATA / "roce_no_gdr_2.20.5.log"), "--json"])
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["transports"] == {"NET/IB": 8, "P2P/CUMEM": 4}
    assert data["hosts"] == {"roce-a": [0, 1], "roce-b": [2, 3]}
    assert any("GPUDirect" in d for d in data["diagnostics"])
    args = parser.parse_args(["nccl-log", str(tmp_path / "missing.log")])
    with pytest.raises(UserError, match="not a file"):
        args.func(args)
