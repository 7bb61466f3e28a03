"""`labkit topo`: the real no-GPU path, and the link classification through a fake NVML."""

import argparse
import os
from types import SimpleNamespace

import pytest

from labkit.cluster import cli
from labkit.cluster.topo import (format_topology, nic_affinity, pci_relation,
                                     read_topology)


class FakeNVML:
    """The handful of NVML calls topo.py makes, over a described machine."""

    NVML_TOPOLOGY_INTERNAL, NVML_TOPOLOGY_SINGLE, NVML_TOPOLOGY_MULTIPLE = 0, 10, 20
    NVML_TOPOLOGY_HOSTBRIDGE, NVML_TOPOLOGY_NODE, NVML_TOPOLOGY_SYSTEM = 30, 40, 50
    NVML_NVLINK_MAX_LINKS, NVML_FEATURE_ENABLED = 18, 1

    class NVMLError(Exception):
        pass

    def __init__(self, bus_ids, links, ancestor, numa):
        self.bus_ids, self.links, self.ancestor, self.numa = bus_ids, links, ancestor, numa
        self.calls = []

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return len(self.bus_ids)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self.bus_ids[h])

    def nvmlDeviceGetNvLinkState(self, h, link):
        if link >= len(self.links[h]):
            raise self.NVMLError("Not Supported")
        return self.NVML_FEATURE_ENABLED if self.links[h][link] else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
        return SimpleNamespace(busId=self.links[h][link])

    def nvmlDeviceGetTopologyCommonAncestor(self, a, b):
        return self.ancestor[frozenset((a, b))]

    def nvmlDeviceGetCpuAffinity(self, h, words):
        mask = (1 << 8) - 1 if self.numa[h] == 0 else ((1 << 8) - 1) << 8
        return [mask] + [0] * (words - 1)

    def nvmlDeviceGetNumaNodeId(self, h):
        return self.numa[h]


def four_gpu_box():
    """GPU0-GPU1 joined by 4 NVLinks; GPU2, GPU3 on the other socket, PCIe only."""
    bus = ["00000000:18:00.0", "00000000:2A:00.0", "00000000:9A:00.0", "00000000:AB:00.0"]
    links = [[bus[1]] * 4 + [None] * 2, [bus[0]] * 4, [], []]
    S, M = FakeNVML.NVML_TOPOLOGY_SYSTEM, FakeNVML.NVML_TOPOLOGY_MULTIPLE
    ancestor = {frozenset((0, 1)): FakeNVML.NVML_TOPOLOGY_SINGLE, frozenset((2, 3)): M}
    for a in (0, 1):
        for b in (2, 3):
            ancestor[frozenset((a, b))] = S
    return FakeNVML(bus, links, ancestor, numa=[0, 0, 1, 1])


def test_matrix_classifies_nvlink_pcie_and_cross_socket(tmp_path):
    nvml = four_gpu_box()
    topo = read_topology(nvml, sysfs=tmp_path)
    assert nvml.calls == ["init", "shutdown"]
    assert topo["matrix"] == [["X", "NV4", "SYS", "SYS"],
                              ["NV4", "X", "SYS", "SYS"],
                              ["SYS", "SYS", "X", "PXB"],
                              ["SYS", "SYS", "PXB", "X"]]
    assert topo["kinds"][0] == ["self", "NVLink", "cross-socket", "cross-socket"]
    assert topo["kinds"][2][3] == "PCIe"
    g = topo["gpus"][1]
    assert g["bus_id"] == "0000:2a:00.0" and g["name"] == "NVIDIA H100 80GB HBM3"
    assert topo["gpus"][0]["cpu_affinity"] == "0-7" and topo["gpus"][3]["cpu_affinity"] == "8-15"
    text = format_topology(topo)
    assert text.splitlines()[1].split()[:5] == ["GPU0", "X", "NV4", "SYS", "SYS"]
    assert "SYS  = across the CPU socket interconnect" in text


def test_nvswitch_box_is_nv18_everywhere(tmp_path):
    bus = [f"00000000:{0x18 + 16 * i:02X}:00.0" for i in range(8)]
    switches = [f"00000000:{0xE0 + k:02X}:00.0" for k in range(4)]
    links = [[switches[k % 4] for k in range(18)] for _ in range(8)]
    ancestor = {frozenset((a, b)): FakeNVML.NVML_TOPOLOGY_SYSTEM
                for a in range(8) for b in range(8) if a != b}
    topo = read_topology(FakeNVML(bus, links, ancestor, numa=[0] * 4 + [1] * 4), sysfs=tmp_path)
    off_diagonal = {c for i, row in enumerate(topo["matrix"]) for j, c in enumerate(row) if i != j}
    assert off_diagonal == {"NV18"}


def make_pci(root, *chain):
    """Create /sys/devices/<chain...> and return its path."""
    path = root / "devices" / os.path.join(*chain)
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_nics_from_sysfs_and_their_pci_distance_to_gpus(tmp_path):
    sysfs = tmp_path
    # socket 0: root complex pci0000:17, PCIe switch 18 -> ports 19:00.0 (GPU0) and 19:04.0 (NIC0)
    gpu0 = make_pci(sysfs, "pci0000:17", "0000:17:00.0", "0000:18:00.0", "0000:19:00.0",
                    "0000:1a:00.0")
    nic0 = make_pci(sysfs, "pci0000:17", "0000:17:00.0", "0000:18:00.0", "0000:19:04.0",
                    "0000:1b:00.0")
    # socket 1: another root complex
    nic1 = make_pci(sysfs, "pci0000:97", "0000:97:00.0", "0000:98:00.0")
    for dev, numa in ((gpu0, 0), (nic0, 0), (nic1, 1)):
        (dev / "numa_node").write_text(f"{numa}\n")
    for name, dev in (("mlx5_0", nic0), ("mlx5_1", nic1)):
        (sysfs / "class" / "infiniband" / name).mkdir(parents=True)
        (sysfs / "class" / "infiniband" / name / "device").symlink_to(dev)
    (sysfs / "class" / "net" / "lo").mkdir(parents=True)  # virtual: no device link
    (sysfs / "bus" / "pci" / "devices").mkdir(parents=True)
    (sysfs / "bus" / "pci" / "devices" / "0000:1a:00.0").symlink_to(gpu0)
    gpus = [{"bus_id": "0000:1a:00.0", "numa_node": 0}]
    from labkit.cluster.topo import find_nics

    nics = find_nics(sysfs)
    assert [(n["name"], n["bus_id"], n["numa_node"]) for n in nics] == [
        ("mlx5_0", "0000:1b:00.0", 0), ("mlx5_1", "0000:98:00.0", 1)]
    assert nic_affinity(gpus, nics, sysfs) == [["PIX", "SYS"]]


@pytest.mark.parametrize("a,b,numa,expect", [
    ("/d/pci0000:17/0000:17:00.0/0000:18:00.0/0000:19:00.0/0000:1a:00.0",
     "/d/pci0000:17/0000:17:00.0/0000:18:00.0/0000:19:08.0/0000:1c:00.0/0000:1d:00.0/0000:1e:00.0",
     (0, 0), "PXB"),
    ("/d/pci0000:17/0000:17:00.0/0000:1a:00.0", "/d/pci0000:17/0000:17:02.0/0000:30:00.0",
     (0, 0), "PHB"),
    ("/d/pci0000:17/0000:17:00.0/0000:1a:00.0", "/d/pci0000:3a/0000:3a:00.0/0000:3b:00.0",
     (0, 0), "NODE"),
])
def test_pci_relation_categories(a, b, numa, expect):
    assert pci_relation(a, b, *numa) == expect


def test_no_gpu_machine_says_so_and_exits_0(capsys):
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    except pynvml.NVMLError:
        pass
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["topo"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("no GPU topology to show: no NVIDIA driver/GPU found (NVML: ")
    args = parser.parse_args(["topo", "--json"])
    assert args.func(args) == 0
    assert '"available": false' in capsys.readouterr().out
