"""How this machine's GPUs and NICs are connected: `nvidia-smi topo -m` from NVML and sysfs.

Why it matters: NCCL's speed between two GPUs depends on the path. NVLink (NV<k>: k links,
directly or through an NVSwitch) is ~10x PCIe; PCIe through one switch (PIX) or several (PXB)
is fine; through the CPU's host bridge (PHB), between host bridges (NODE) or across the CPU
socket interconnect (SYS) is slowest. For the network, a NIC under the same PCIe switch as
the GPU (PIX) is what GPUDirect RDMA wants.

Everything that talks to NVML goes through the `nvml` argument (the real `pynvml` module by
default), so tests inject a small fake and check the classification without GPUs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PCI_ADDR = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
KIND = {"PIX": "PCIe", "PXB": "PCIe", "PHB": "PCIe", "NODE": "PCIe", "SYS": "cross-socket",
        "BRD": "PCIe"}
LEGEND = """\
Legend (as nvidia-smi topo -m):
  X    = self
  NV#  = NVLink, # links (direct, or through NVSwitch)
  PIX  = PCIe, at most one PCIe switch
  PXB  = PCIe, several PCIe switches (no host bridge)
  PHB  = PCIe, through the CPU's PCIe host bridge
  NODE = PCIe, across host bridges within one NUMA node
  SYS  = across the CPU socket interconnect (QPI/UPI/xGMI): cross-socket"""


def normalize_bus_id(bus_id) -> str:
    """'00000000:18:00.0' (NVML) or b'...' -> '0000:18:00.0' (sysfs spelling), lower case."""
    if isinstance(bus_id, bytes):
        bus_id = bus_id.decode()
    domain, bus, devfn = bus_id.strip().lower().split(":")
    return f"{int(domain, 16):04x}:{bus}:{devfn}"


def _cpu_list(words: list[int]) -> str:
    """NVML affinity bitmask (64-bit words, lowest CPUs first) -> '0-55,112-167'."""
    cpus = [w * 64 + b for w, word in enumerate(words) for b in range(64) if word >> b & 1]
    out: list[list[int]] = []
    for c in cpus:
        if out and c == out[-1][1] + 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in out)


def _levels(nvml) -> dict[int, str]:
    return {nvml.NVML_TOPOLOGY_INTERNAL: "BRD", nvml.NVML_TOPOLOGY_SINGLE: "PIX",
            nvml.NVML_TOPOLOGY_MULTIPLE: "PXB", nvml.NVML_TOPOLOGY_HOSTBRIDGE: "PHB",
            nvml.NVML_TOPOLOGY_NODE: "NODE", nvml.NVML_TOPOLOGY_SYSTEM: "SYS"}


def _nvlink_peers(nvml, handle) -> dict[str, int]:
    """Remote PCI bus id -> number of active NVLinks from this GPU."""
    peers: dict[str, int] = {}
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            if nvml.nvmlDeviceGetNvLinkState(handle, link) != nvml.NVML_FEATURE_ENABLED:
                continue
            remote = normalize_bus_id(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
        except nvml.NVMLError:  # link index beyond this GPU, or no NVLink at all
            continue
        peers[remote] = peers.get(remote, 0) + 1
    return peers


def gpu_matrix(nvml) -> dict:
    """GPUs and their pairwise link codes; nvml must already be initialised."""
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    gpus = []
    for i, h in enumerate(handles):
        name = nvml.nvmlDeviceGetName(h)
        gpu = {"index": i, "name": name.decode() if isinstance(name, bytes) else name,
               "bus_id": normalize_bus_id(nvml.nvmlDeviceGetPciInfo(h).busId),
               "cpu_affinity": None, "numa_node": None}
        try:
            words = max(1, ((os.cpu_count() or 64) + 63) // 64)
            gpu["cpu_affinity"] = _cpu_list(list(nvml.nvmlDeviceGetCpuAffinity(h, words)))
        except nvml.NVMLError:
            pass
        try:
            gpu["numa_node"] = int(nvml.nvmlDeviceGetNumaNodeId(h))
        except (nvml.NVMLError, AttributeError):
            pass
        gpu["nvlinks"] = _nvlink_peers(nvml, h)
        gpus.append(gpu)
    bus_ids = {g["bus_id"] for g in gpus}
    # links whose far end is not a GPU end at an NVSwitch: every switch-attached GPU reaches
    # every other one at the bandwidth of its switch links
    to_switch = [sum(n for bus, n in g["nvlinks"].items() if bus not in bus_ids) for g in gpus]
    levels = _levels(nvml)
    matrix = []
    for i, gi in enumerate(gpus):
        row = []
        for j, gj in enumerate(gpus):
            if i == j:
                row.append("X")
            elif gi["nvlinks"].get(gj["bus_id"]):
                row.append(f"NV{gi['nvlinks'][gj['bus_id']]}")
            elif to_switch[i] and to_switch[j]:
                row.append(f"NV{min(to_switch[i], to_switch[j])}")
            else:
                level = nvml.nvmlDeviceGetTopologyCommonAncestor(handles[i], handles[j])
                row.append(levels.get(int(level), f"?{level}"))
        matrix.append(row)
    return {"gpus": gpus, "matrix": matrix}


def link_kind(code: str) -> str:
    """'NV18' -> 'NVLink', 'PXB' -> 'PCIe', 'SYS' -> 'cross-socket'."""
    return "self" if code == "X" else "NVLink" if code.startswith("NV") else KIND.get(code, "?")


# --- NICs, from sysfs (NVML does not know about them) ------------------------------------


def _numa(dev: Path) -> int | None:
    try:
        n = int((dev / "numa_node").read_text())
        return None if n < 0 else n
    except (OSError, ValueError):
        return None


def find_nics(sysfs: str | Path = "/sys") -> list[dict]:
    """RDMA devices (InfiniBand/RoCE HCAs) and PCI network interfaces, with PCI paths."""
    sysfs, nics = Path(sysfs), []
    for cls in ("infiniband", "net"):
        base = sysfs / "class" / cls
        for entry in sorted(base.iterdir()) if base.is_dir() else []:
            dev = entry / "device"
            if not dev.exists():  # virtual interfaces (lo, docker0, veth) have no device
                continue
            real = dev.resolve()
            # virtio and similar sit one level below their PCI function: use that function
            real = next((p for p in (real, *real.parents) if PCI_ADDR.match(p.name)), real)
            if any(n["pci_path"] == str(real) for n in nics):
                continue  # the netdev of an HCA we already listed
            nics.append({"name": entry.name, "kind": "rdma" if cls == "infiniband" else "net",
                         "bus_id": real.name, "pci_path": str(real), "numa_node": _numa(real)})
    return nics


def pci_relation(path_a: str, path_b: str, numa_a=None, numa_b=None) -> str:
    """nvidia-smi's category for two PCI devices from their sysfs paths (an approximation).

    Paths look like /sys/devices/pci0000:17/0000:17:00.0/0000:18:00.0/0000:1a:00.0: a root
    complex, then the bridges down to the device. Different root complexes: NODE on one NUMA
    node, SYS across sockets. Same root complex: PIX if both hang one port below a shared
    PCIe switch, PXB if deeper, PHB if they only share the host bridge.
    """
    a, b = Path(path_a).parts, Path(path_b).parts
    roots = [i for i, p in enumerate(a) if p.startswith("pci")]
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    if not roots or common <= roots[0]:
        return "NODE" if numa_a is not None and numa_a == numa_b else "SYS"
    if common - (roots[0] + 1) <= 0:
        return "PHB"
    return "PIX" if max(len(a), len(b)) - common <= 2 else "PXB"


def nic_affinity(gpus: list[dict], nics: list[dict], sysfs: str | Path = "/sys") -> list[list]:
    """Row per GPU, column per NIC: the PCI relation code."""
    rows = []
    for g in gpus:
        gdev = Path(sysfs) / "bus" / "pci" / "devices" / g["bus_id"]
        gpath = str(gdev.resolve()) if gdev.exists() else ""
        numa = g["numa_node"] if g["numa_node"] is not None else _numa(gdev)
        rows.append([pci_relation(gpath, n["pci_path"], numa, n["numa_node"]) for n in nics])
    return rows


def read_topology(nvml=None, sysfs: str | Path = "/sys") -> dict:
    """Everything `labkit topo` shows, JSON-ready. Without GPUs: available=False and why."""
    nics = find_nics(sysfs)
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return {"available": False, "reason": "nvidia-ml-py is not installed "
                    "(pip install nvidia-ml-py)", "gpus": [], "nics": nics}
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:  # NVMLError_LibraryNotFound on machines without a driver
        return {"available": False, "reason": f"no NVIDIA driver/GPU found (NVML: {e})",
                "gpus": [], "nics": nics}
    try:
        topo = gpu_matrix(nvml)
    finally:
        nvml.nvmlShutdown()
    topo["kinds"] = [[link_kind(c) for c in row] for row in topo["matrix"]]
    topo.update(available=True, nics=nics, nic_matrix=nic_affinity(topo["gpus"], nics, sysfs))
    return topo


def format_topology(topo: dict) -> str:
    if not topo["available"]:
        lines = [f"no GPU topology to show: {topo['reason']}.",
                 "This is expected on the CPU tier; run `labkit topo` on a GPU machine."]
        if topo["nics"]:
            lines.append("network devices: " + ", ".join(
                f"{n['name']} ({n['bus_id']})" for n in topo["nics"]))
        return "\n".join(lines)
    gpus, nics = topo["gpus"], topo["nics"]
    heads = [f"GPU{g['index']}" for g in gpus] + [f"NIC{k}" for k in range(len(nics))]
    lines = ["      " + "".join(f"{h:>6}" for h in heads) + "  CPU affinity  NUMA"]
    for g, row, nrow in zip(gpus, topo["matrix"], topo["nic_matrix"]):
        numa = "N/A" if g["numa_node"] is None else str(g["numa_node"])
        lines.append(f"{'GPU' + str(g['index']):6}" + "".join(f"{c:>6}" for c in row + nrow)
                     + f"  {g['cpu_affinity'] or 'N/A':12}  {numa}")
    for k, n in enumerate(nics):
        col = [r[k] for r in topo["nic_matrix"]]
        lines.append(f"{'NIC' + str(k):6}" + "".join(f"{c:>6}" for c in col))
    lines += ["", LEGEND, ""]
    lines += [f"GPU{g['index']}: {g['name']} ({g['bus_id']})" for g in gpus]
    lines += [f"NIC{k}: {n['name']} ({n['kind']}, {n['bus_id']})" for k, n in enumerate(nics)]
    return "\n".join(lines)
