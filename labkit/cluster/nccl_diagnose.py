"""Turn a parsed NCCL log (nccl_log.py) into plain-language links and things to check, and
the summary `labkit nccl-log` prints. The parser knows nothing of this module (no cycle).

Each rule encodes one classic multi-GPU performance problem and the knob or check that
usually explains it. They are hints, not verdicts: the log shows what NCCL chose, not why.
"""

from __future__ import annotations

from labkit.cluster import nccl_log
from labkit.cluster.nccl_log import NcclLog

NET_KINDS = ("NET/IB", "NET/Socket")
PATH_WORDS = {"NVL": "NVLink", "PIX": "one PCIe switch", "PXB": "several PCIe switches",
              "PXN": "PCIe via another GPU's NVLink (PXN)", "PHB": "the CPU's PCIe host bridge",
              "NODE": "host bridges of one NUMA node", "SYS": "across CPU sockets",
              "LOC": "the same device", "NET": "the network"}
VIRTUAL_IFACES = ("lo", "docker", "virbr", "veth", "cni", "flannel", "cali")


def _is_inter_node(log: NcclLog, ch: dict) -> bool:
    a, b = log.ranks.get(ch["src"]), log.ranks.get(ch["dst"])
    if a and b:
        return a["host"] != b["host"]
    return ch["kind"] in NET_KINDS  # NCCL uses the network only between nodes by default


def describe_links(log: NcclLog) -> list[str]:
    """'intra-node: P2P/CUMEM (...)' and 'inter-node: NET/IB with GPUDirect RDMA on ...'."""
    intra = sorted({c["kind"] for c in log.channels if not _is_inter_node(log, c)})
    inter = [c for c in log.channels if _is_inter_node(log, c)]
    out = []
    if intra:
        words = []
        for kind in intra:
            if kind.startswith("P2P"):
                path = {p["intra"] for p in log.patterns} & {"NVL"}
                how = "NVLink (topology type NVL)" if path else "NVLink or PCIe: see 'labkit topo'"
                words.append(f"{kind} (GPU to GPU directly, {how})")
            elif kind == "SHM":
                words.append("SHM (staged through host shared memory, not GPU peer-to-peer)")
            else:
                words.append(kind)
        out.append("intra-node: " + "; ".join(words))
    if inter:
        kinds = sorted({c["kind"] for c in inter})
        words = []
        for kind in kinds:
            chans = [c for c in inter if c["kind"] == kind]
            devs = sorted({c["net_dev"] for c in chans if c["net_dev"] is not None})
            if kind == "NET/IB":
                names = [d["name"] for d in log.ib_devices if d["index"] in devs] or devs
                gdr = sum(c["gdr"] for c in chans)
                how = ("with GPUDirect RDMA" if gdr == len(chans) else
                       "without GPUDirect RDMA" if gdr == 0 else
                       f"GPUDirect RDMA on {gdr} of {len(chans)} connections")
                words.append(f"NET/IB {how} on {', '.join(map(str, dict.fromkeys(names)))}")
            elif kind == "NET/Socket":
                names = [d["name"] for d in log.socket_devices if d["index"] in devs] or devs
                words.append(f"NET/Socket (TCP) on {', '.join(map(str, dict.fromkeys(names)))}")
            else:
                words.append(kind)
        out.append("inter-node: " + "; ".join(words))
    if not log.channels:
        out.append("no 'Channel .. via ..' lines: transports unknown (NCCL_DEBUG=INFO was not "
                   "set, or the log stops before the first collective connected)")
    counts = log.transports()
    if counts:
        out.append("channel connections: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if log.ib_devices:
        out.append("HCAs NCCL found: " + ", ".join(
            dict.fromkeys(f"{d['name']}:{d['port']}/{d['link']}" for d in log.ib_devices)))
    if log.socket_devices:
        out.append("socket interfaces: " + ", ".join(
            dict.fromkeys(f"{d['name']} {d['addr']}" for d in log.socket_devices)))
    for p in log.patterns[:1]:
        out.append(f"topology search: {p['nchannels']} channels; GPU-to-GPU path type "
                   f"{p['intra']} ({PATH_WORDS.get(p['intra'], '?')}), GPU-to-network path "
                   f"type {p['inter']} ({PATH_WORDS.get(p['inter'], '?')})")
    if log.nvls_available:
        out.append("NVLS (NVLink SHARP, in-switch reductions) is available on this node")
    return out


def diagnose(log: NcclLog) -> list[str]:
    kinds = log.transports()
    hosts = log.hosts()
    socket_used = kinds.get("NET/Socket", 0) > 0 or "Socket" in log.network
    ib_used = kinds.get("NET/IB", 0) > 0
    hints = []
    if socket_used and log.ib_devices:
        names = ", ".join(dict.fromkeys(d["name"] for d in log.ib_devices))
        hints.append(f"NET/Socket (TCP) carries inter-node traffic although IB/RoCE HCAs exist "
                     f"({names}): check NCCL_IB_DISABLE / NCCL_NET / NCCL_IB_HCA.")
    elif socket_used and (len(hosts) > 1 or kinds.get("NET/Socket")):
        why = (" NCCL_IB_DISABLE=1 is set in the environment."
               if log.env.get("NCCL_IB_DISABLE") == "1" else "")
        hints.append("inter-node traffic uses TCP sockets (NET/Socket), typically several "
                     "times slower than InfiniBand/RoCE." + why + " If the nodes have HCAs, "
                     "check NCCL_IB_DISABLE / NCCL_IB_HCA, that /dev/infiniband and "
                     "libibverbs are visible in the container, and `ibv_devinfo`.")
    net_ib = [c for c in log.channels if c["kind"] == "NET/IB"]
    if ib_used and not any(c["gdr"] for c in net_ib):
        no_module = any("no module" in g["detail"] for g in log.gdr if not g["enabled"])
        hints.append("NET/IB without GPUDirect RDMA: every message is copied through host "
                     "memory. " + ("NCCL reports '(no module)': load nvidia-peermem (or use "
                                   "dma-buf). " if no_module else "")
                     + "Check NCCL_NET_GDR_LEVEL and how far GPUs and NICs are apart on PCIe "
                     "(`labkit topo`).")
    if kinds.get("SHM"):
        why = (" NCCL_P2P_DISABLE=1 is set in the environment."
               if log.env.get("NCCL_P2P_DISABLE") == "1" else "")
        hints.append("GPUs on one node talk through host shared memory (SHM) instead of "
                     "peer-to-peer." + why + " Check NCCL_P2P_DISABLE / NCCL_P2P_LEVEL, "
                     "IOMMU/ACS settings, and that all GPUs are visible in one container.")
    single_node = log.nnodes == 1 or (
        len(hosts) == 1 and log.nranks is not None and len(log.ranks) == log.nranks)
    bad = [i for i in log.bootstrap + [d["name"] for d in log.socket_devices]
           if i.startswith(VIRTUAL_IFACES)]
    if bad and not single_node:
        hints.append(f"NCCL's sockets use {', '.join(dict.fromkeys(bad))}, a loopback or "
                     "container-bridge interface other nodes cannot reach: for a multi-node "
                     "job set NCCL_SOCKET_IFNAME to the cluster network's interface "
                     "(e.g. NCCL_SOCKET_IFNAME=eth0).")
    if any(d["link"] == "RoCE" for d in log.ib_devices) and ib_used:
        hints.append("RoCE: make sure NCCL_IB_GID_INDEX selects the RoCE v2 GID"
                     + (f" (set to {log.env['NCCL_IB_GID_INDEX']})"
                        if "NCCL_IB_GID_INDEX" in log.env else " (not set in this log)")
                     + " and that the fabric is lossless (PFC/ECN).")
    for p in log.patterns:
        if p["inter"] in ("PHB", "SYS", "NODE") and (ib_used or len(hosts) > 1):
            hints.append(f"GPU-to-NIC path type {p['inter']} ({PATH_WORDS[p['inter']]}): GPUs "
                         "and NICs are not under a common PCIe switch, which limits or "
                         "disables GPUDirect RDMA.")
            break
    stuck = sorted(log.init_started - set(log.ranks))
    if stuck:
        hints.append(f"ranks {stuck} started init but never logged Init COMPLETE: "
                     "initialization failed or hung (read the WARN lines).")
    if log.nranks and log.ranks and len(log.ranks) < log.nranks and not stuck:
        hints.append(f"Init COMPLETE seen for {len(log.ranks)} of {log.nranks} ranks: the "
                     "other ranks' logs are not in this file (concatenate all nodes' logs, "
                     "or use NCCL_DEBUG_FILE=nccl.%h.%p.log on every node).")
    if log.warnings:
        hints.append(f"{len(log.warnings)} WARN line(s): read them first, they usually name "
                     "the failing call.")
    if log.channels and not log.tuning:
        hints.append("no TUNING lines: add TUNING to NCCL_DEBUG_SUBSYS to see which "
                     "algorithm/protocol NCCL picks per message size.")
    return hints


def report(log: NcclLog) -> dict:
    """The parsed log as a dict, with the diagnostics (what `labkit nccl-log --json` prints)."""
    return {**log.to_dict(), "diagnostics": diagnose(log)}


def format_summary(log: NcclLog) -> str:
    """What a learner needs from the log, in plain words, plus what to check next."""
    if log.lines == 0:
        return ("no NCCL lines found: was the job run with NCCL_DEBUG=INFO? Lines look like "
                "'host:pid:tid [0] NCCL INFO ...'")
    head = f"NCCL {log.version or '?'}"
    head += f" (built for CUDA {log.cuda})" if log.cuda else ""
    head += f", CUDA driver {log.cuda_driver}" if log.cuda_driver else ""
    lines = [head]
    hosts = log.hosts()
    if hosts:
        lines.append(f"ranks {nccl_log.ranges(log.ranks)} of {log.nranks} on {len(hosts)} node(s)"
                     + ("" if log.nnodes in (None, len(hosts))
                        else f" (NCCL counted {log.nnodes} nodes: logs of some are missing)"))
        for host, ranks in hosts.items():
            devs = nccl_log.ranges(log.ranks[r]["cuda_dev"] for r in ranks)
            lines.append(f"  {host}: ranks {nccl_log.ranges(ranks)} on GPUs {devs}")
    elif log.init_started:
        lines.append(f"ranks {nccl_log.ranges(log.init_started)} of {log.nranks} started init; "
                     "none logged Init COMPLETE")
    lines += describe_links(log)
    for coll, choices in nccl_log.tuning_summary(log).items():
        lines.append(f"{coll}: " + "; ".join(choices))
    if log.env:
        lines.append("set by environment: " + ", ".join(f"{k}={v}" for k, v in log.env.items()))
    lines.append(f"warnings: {len(log.warnings)}")
    for w in log.warnings[:10]:
        lines.append(f"  WARN {w['host']} [{w['dev']}] {w['message']}")
    problems = diagnose(log)
    lines.append("diagnostics:" if problems else "diagnostics: nothing suspicious found")
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)
