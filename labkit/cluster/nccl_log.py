"""Read an NCCL_DEBUG=INFO log: which transports, NICs and algorithms NCCL actually chose.

Every NCCL line starts `host:pid:tid [cudaDev] NCCL INFO ...` (WARN lines add `file.cc:123`
before `NCCL`). The lines that matter for performance debugging:
  NCCL version 2.21.5+cuda12.4                         library and CUDA it was built for
  ... rank 3 nranks 16 cudaDev 3 nvmlDev 3 busId 3b000 commId 0x.. - Init COMPLETE
  Channel 02/0 : 3[3] -> 4[4] via P2P/CUMEM/read        GPU to GPU (NVLink or PCIe)
  Channel 00 : 1[1] -> 2[2] via SHM/direct/direct        through host shared memory
  Channel 00/0 : 7[7] -> 8[0] [send] via NET/IB/3/GDRDMA InfiniBand/RoCE + GPUDirect RDMA
  Channel 00/0 : 3[3] -> 4[0] [send] via NET/Socket/0    plain TCP
  NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/RoCE ...     HCAs NCCL found (port, link layer)
  NET/Socket : Using [0]eth0:10.0.0.1<0>                 interfaces for sockets
  Pattern 4, crossNic 0, nChannels 16, bw 40/40, type NVL/PIX, ...   paths the topology
      search settled on (intra-node / GPU-to-NIC): NVL = NVLink, PIX/PXB = PCIe switch(es),
      PHB = via CPU host bridge, SYS = across CPU sockets
  AllReduce: 2097152 Bytes -> Algo NVLS proto Simple ...  TUNING: choice per call size
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

PREFIX = re.compile(
    r"(?P<host>[\w.\-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] "
    r"(?:(?P<src>\S+:\d+) )?NCCL (?P<level>INFO|WARN|TRACE|ABORT) ?(?P<msg>.*)")
VERSION = re.compile(r"NCCL version (?P<v>\d+\.\d+\.\d+)(?:\+cuda(?P<cuda>[\d.]+))?")
DRIVER = re.compile(r"cudaDriverVersion (\d+)")
KEYVAL = re.compile(r"\b(rank|nranks|nRanks|cudaDev|nvmlDev|busId|commId|nNodes|localRanks|"
                    r"localRank) (\S+)")
CHANNEL = re.compile(r"Channel (?P<ch>\d+)(?:/\d+)? : (?P<src>\d+)\[(?P<sdev>[0-9a-fx]+)\] -> "
                     r"(?P<dst>\d+)\[(?P<ddev>[0-9a-fx]+)\] (?:\[(?P<dir>send|receive)\] )?"
                     r"via (?P<via>.+?)\s*$")
IB_USING = re.compile(r"NET/IB : Using (?P<devs>.*?)(?:; OOB (?P<oob>\S+))?\s*$")
IB_DEV = re.compile(r"\[(\d+)\]([\w\-.]+):(\d+)/(IB|RoCE)")
SOCK_USING = re.compile(r"NET/Socket : Using (?P<devs>.*)")
SOCK_DEV = re.compile(r"\[(\d+)\]([\w\-.@]+):([^<\s]+)<\d+>")
BOOTSTRAP = re.compile(r"Bootstrap : Using ([\w\-.@]+):([^<\s]+)<")
NETWORK = re.compile(r"Using network (.+?)\s*$")
GDR = re.compile(r"GPU Direct RDMA (Enabled|Disabled) for (?:GPU \S+ / )?HCA (\d+)"
                 r"(?: '([^']+)'?)?(.*)")
ENV = re.compile(r"(NCCL_\w+) set (?:by environment )?to (.*?)\.?\s*$")
TUNING = re.compile(r"^(?P<coll>\w+): (?P<bytes>\d+) Bytes -> Algo (?P<algo>\w+) "
                    r"proto (?P<proto>\w+)")
PATTERN = re.compile(r"Pattern (\d+), crossNic (\d+), nChannels (\d+), bw ([\d.]+)/([\d.]+), "
                     r"type (\w+)/(\w+)")
CHANNELS = re.compile(r"(\d+) coll channels, .*?(\d+) nvls channels, (\d+) p2p channels")

# NCCL before 2.19 printed algorithm/protocol as numbers: these are its enum orders.
ALGOS = ("Tree", "Ring", "CollNetDirect", "CollNetChain", "NVLS", "NVLSTree", "PAT")
PROTOS = ("LL", "LL128", "Simple")


def _canonical(name: str, names: tuple[str, ...]) -> str:
    if name.isdigit() and int(name) < len(names):
        return names[int(name)]
    return next((n for n in names if n.lower() == name.lower()), name)


def transport_kind(via: str) -> str:
    """'P2P/CUMEM/read' -> 'P2P/CUMEM', 'NET/IB/0/GDRDMA' -> 'NET/IB', 'SHM/direct' -> 'SHM'."""
    parts = via.split("/")
    if parts[0] == "P2P" and len(parts) > 1:
        return "P2P/" + parts[1].split()[0]  # "direct pointer" -> P2P/direct
    if parts[0] == "NET" and len(parts) > 1:
        return "NET/" + parts[1]
    return parts[0]


@dataclass
class NcclLog:
    version: str | None = None
    cuda: str | None = None
    cuda_driver: str | None = None
    nranks: int | None = None
    nnodes: int | None = None
    ranks: dict[int, dict] = field(default_factory=dict)  # rank -> host, pid, cudaDev, busId
    init_started: set = field(default_factory=set)
    channels: list[dict] = field(default_factory=list)
    ib_devices: list[dict] = field(default_factory=list)
    socket_devices: list[dict] = field(default_factory=list)
    bootstrap: list[str] = field(default_factory=list)
    network: set = field(default_factory=set)
    gdr: list[dict] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tuning: list[dict] = field(default_factory=list)
    patterns: list[dict] = field(default_factory=list)
    channel_counts: dict | None = None
    nvls_available: bool = False
    warnings: list[dict] = field(default_factory=list)
    lines: int = 0

    def transports(self) -> Counter:
        return Counter(c["kind"] for c in self.channels)

    def hosts(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for rank, info in sorted(self.ranks.items()):
            out[info["host"]].append(rank)
        return dict(out)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["init_started"] = sorted(self.init_started)
        d["network"] = sorted(self.network)
        d["transports"] = dict(self.transports())
        d["hosts"] = self.hosts()
        return d


def _add_unique(items: list[dict], item: dict) -> None:
    if item not in items:
        items.append(item)


def parse_nccl_log(text: str) -> NcclLog:
    """Parse NCCL_DEBUG=INFO output (one rank's or several concatenated); never raises."""
    log, seen_channels = NcclLog(), set()
    for line in text.splitlines():
        m = PREFIX.search(line)
        msg = m["msg"] if m else line  # the version banner may come without the prefix
        if (v := VERSION.search(msg)) and not log.version:
            log.version, log.cuda = v["v"], v["cuda"]
        if not m:
            continue
        log.lines += 1
        if m["level"] == "WARN":
            _add_unique(log.warnings, {"host": m["host"], "dev": int(m["dev"]),
                                       "where": m["src"], "message": msg.strip()})
            continue
        if d := DRIVER.search(msg):
            n = int(d[1])
            log.cuda_driver = f"{n // 1000}.{n % 1000 // 10}"
        elif "Init COMPLETE" in msg or "Init START" in msg:
            kv = dict(KEYVAL.findall(msg))
            if "rank" not in kv:
                continue
            rank = int(kv["rank"])
            log.nranks = max(log.nranks or 0, int(kv.get("nranks", 0)))
            if "Init START" in msg:
                log.init_started.add(rank)
            else:
                log.ranks[rank] = {"host": m["host"], "pid": int(m["pid"]),
                                   "cuda_dev": int(kv.get("cudaDev", m["dev"])),
                                   "bus_id": kv.get("busId"), "nranks": int(kv["nranks"])}
        elif "nNodes" in msg:
            kv = dict(KEYVAL.findall(msg))
            log.nnodes = max(log.nnodes or 0, int(kv["nNodes"]))
        elif c := CHANNEL.search(msg):
            key = (m["host"], m["pid"], c["ch"], c["src"], c["dst"], c["dir"], c["via"])
            if key in seen_channels:
                continue
            seen_channels.add(key)
            via = c["via"]
            net_dev = re.match(r"NET/\w+/(\d+)", via)
            log.channels.append({
                "channel": int(c["ch"]), "src": int(c["src"]), "dst": int(c["dst"]),
                "direction": c["dir"], "via": via, "kind": transport_kind(via),
                "gdr": "GDRDMA" in via, "net_dev": int(net_dev[1]) if net_dev else None,
                "host": m["host"]})
        elif u := IB_USING.search(msg):
            for idx, name, port, link in IB_DEV.findall(u["devs"]):
                _add_unique(log.ib_devices, {"index": int(idx), "name": name,
                                             "port": int(port), "link": link,
                                             "host": m["host"]})
        elif u := SOCK_USING.search(msg):
            for idx, name, addr in SOCK_DEV.findall(u["devs"]):
                _add_unique(log.socket_devices, {"index": int(idx), "name": name,
                                                 "addr": addr, "host": m["host"]})
        elif b := BOOTSTRAP.search(msg):
            if b[1] not in log.bootstrap:
                log.bootstrap.append(b[1])
        elif n := NETWORK.search(msg):
            log.network.add(n[1])
        elif g := GDR.search(msg):
            _add_unique(log.gdr, {"enabled": g[1] == "Enabled", "hca": int(g[2]),
                                  "name": g[3], "detail": g[4].strip(), "host": m["host"]})
        elif e := ENV.search(msg):
            log.env[e[1]] = e[2]
        elif t := TUNING.search(msg):
            log.tuning.append({"coll": t["coll"], "bytes": int(t["bytes"]),
                               "algo": _canonical(t["algo"], ALGOS),
                               "proto": _canonical(t["proto"], PROTOS)})
        elif p := PATTERN.search(msg):
            _add_unique(log.patterns, {"pattern": int(p[1]), "cross_nic": int(p[2]),
                                       "nchannels": int(p[3]), "bw": float(p[4]),
                                       "intra": p[6], "inter": p[7]})
        elif cc := CHANNELS.search(msg):
            log.channel_counts = {"coll": int(cc[1]), "nvls": int(cc[2]), "p2p": int(cc[3])}
        elif "NVLS multicast support is available" in msg:
            log.nvls_available = True
    return log


def ranges(numbers) -> str:
    """[0,1,2,3,8] -> '0-3,8'."""
    nums, out = sorted(set(numbers)), []
    for n in nums:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in out)


def _size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:g} {unit}"
    return f"{n} B"


def tuning_summary(log: NcclLog) -> dict[str, list[str]]:
    """Per collective: which algorithm/protocol NCCL chose over which size range."""
    out: dict[str, list[str]] = {}
    for coll in dict.fromkeys(t["coll"] for t in log.tuning):
        runs: list[list] = []  # consecutive sizes with the same choice
        for t in sorted((t for t in log.tuning if t["coll"] == coll), key=lambda t: t["bytes"]):
            choice = f"{t['algo']}/{t['proto']}"
            if runs and runs[-1][0] == choice:
                runs[-1][2] = t["bytes"]
            else:
                runs.append([choice, t["bytes"], t["bytes"]])
        out[coll] = [f"{c} for {_size(a)}" + (f"..{_size(b)}" if b != a else "")
                     for c, a, b in runs]
    return out
