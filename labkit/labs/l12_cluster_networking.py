"""What the cluster-networking lab shows: NCCL variables, manifest checks, log verdicts, checklist.

    nccl_variables_rows()                      every NCCL variable the labs use, what it does
    manifest_check_rows(jobs, k8s_version)     PyTorchJob + JobSet per job, validated offline
    break_manifest(doc)                        a copy with two classic typos (negative control)
    log_rows(paths, classify)                  one verdict row per NCCL_DEBUG=INFO log
    capture_nccl_log(nproc)                    GPU tier: this machine's own NCCL log
    DEBUG_CHECKLIST                            symptom -> what to look at -> the fix

The notebook stays thin; everything recorded comes from parsing, validating or running.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

from labkit.cluster.manifests import NCCL_VARIABLES, manifest
from labkit.cluster.manifests_schema import validation_errors
from labkit.cluster.nccl_diagnose import diagnose
from labkit.cluster.nccl_log import parse_nccl_log
from labkit.collectives.launch import launch

# Variables beyond the ones the manifests set (labkit/cluster/manifests.py), from NCCL's
# environment-variable documentation as summarised in FIELD_NOTES.md. Most are for
# *experiments and debugging*; production jobs rarely need more than the manifest's set.
MORE_NCCL_VARIABLES = {
    "NCCL_DEBUG_FILE": "write the log to a file instead of stdout; %h = host, %p = pid, e.g. "
    "nccl.%h.%p.log (one file per process: concatenate them for labkit nccl-log)",
    "NCCL_NET": "force the network transport by name, e.g. IB or Socket",
    "NCCL_ALGO": "restrict the algorithms NCCL may pick (Ring, Tree, NVLS, NVLSTree, "
    "CollnetDirect, CollnetChain): for experiments, not for production",
    "NCCL_PROTO": "restrict the protocols (LL, LL128, Simple): for experiments",
    "NCCL_P2P_DISABLE": "1 = no direct GPU-to-GPU (NVLink/PCIe P2P); traffic goes through "
    "host shared memory (SHM) instead",
    "NCCL_P2P_LEVEL": "farthest PCIe/NVLink distance at which P2P is still used "
    "(LOC, NVL, PIX, PXB, PHB, SYS)",
    "NCCL_SHM_DISABLE": "1 = no host shared-memory transport between GPUs of one node",
    "NCCL_NVLS_ENABLE": "NVLink SHARP (in-switch reductions on NVSwitch systems): 0 disables",
    "NCCL_CROSS_NIC": "whether rings/trees may use different NICs on different nodes "
    "(matters when each rail is a separate network)",
    "NCCL_TOPO_DUMP_FILE": "write the topology NCCL detected (XML) to this file",
}

MANIFEST_SET = set(NCCL_VARIABLES)


def nccl_variables_rows() -> list[dict]:
    rows = [dict(variable=k, what_it_does=v, set_by="labkit manifests")
            for k, v in NCCL_VARIABLES.items()]
    rows += [dict(variable=k, what_it_does=v, set_by="you, when debugging")
             for k, v in MORE_NCCL_VARIABLES.items()]
    return rows


# --- manifests -------------------------------------------------------------------------------

def _pod_specs(doc: dict) -> list[tuple[int, dict]]:
    """(replicas, pod spec) for every pod template in a PyTorchJob or JobSet."""
    if doc["kind"] == "PyTorchJob":
        return [(r["replicas"], r["template"]["spec"])
                for r in doc["spec"]["pytorchReplicaSpecs"].values()]
    out = []
    for rj in doc["spec"]["replicatedJobs"]:
        job = rj["template"]["spec"]
        out.append((rj.get("replicas", 1) * job["parallelism"], job["template"]["spec"]))
    return out


def manifest_check_rows(jobs: dict, k8s_version: str, kinds=("pytorchjob", "jobset")):
    """Build every (job, kind) manifest, validate it offline; return (rows, docs by label)."""
    rows, docs = [], {}
    for label, job in jobs.items():
        for kind in kinds:
            doc = manifest(job, kind)
            errors = validation_errors(doc, k8s_version)
            pods = _pod_specs(doc)
            limits = [s["containers"][0]["resources"]["limits"] for _, s in pods]
            env = [e["name"] for e in pods[0][1]["containers"][0]["env"]]
            rows.append(dict(fabric=label, kind=doc["kind"], valid="yes" if not errors else "no",
                             errors=len(errors), pods=sum(n for n, _ in pods),
                             gpus=sum(n * lim["nvidia.com/gpu"] for (n, _), lim in
                                      zip(pods, limits)),
                             rdma_resource=", ".join(k for k in limits[0] if k != "nvidia.com/gpu")
                             or "-", nccl_env=" ".join(env), warnings=len(job.warnings())))
            docs[f"{kind}_{label}"] = doc
    return rows, docs


def break_manifest(doc: dict) -> dict:
    """A copy with two classic hand-editing mistakes: a misspelled field in the job spec and a
    misspelled container field (`volumeMount` for `volumeMounts`)."""
    bad = copy.deepcopy(doc)
    if bad["kind"] == "PyTorchJob":
        spec = next(iter(bad["spec"]["pytorchReplicaSpecs"].values()))
        spec["restartPolice"] = spec.pop("restartPolicy")
        pod = spec["template"]["spec"]
    else:
        rj = bad["spec"]["replicatedJobs"][0]
        rj["replica"] = rj.pop("replicas")
        pod = rj["template"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    return bad


# --- NCCL logs -------------------------------------------------------------------------------

def _inter_node(log, ch: dict) -> bool:
    a, b = log.ranks.get(ch["src"]), log.ranks.get(ch["dst"])
    if a and b:
        return a["host"] != b["host"]
    return ch["kind"].startswith("NET/")  # NCCL uses the network only between nodes by default


def channel_classes(log, classify) -> dict[str, Counter]:
    """Channel connections per scope ('intra-node', 'inter-node') and class, via classify(via)."""
    out = {"intra-node": Counter(), "inter-node": Counter()}
    for ch in log.channels:
        out["inter-node" if _inter_node(log, ch) else "intra-node"][classify(ch["via"])] += 1
    return out


def _fmt(counter: Counter) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in counter.most_common()) or "-"


def log_rows(paths, classify) -> list[dict]:
    """One row per log file: what NCCL used, judged with `classify`, and the first hint."""
    rows = []
    for path in paths:
        log = parse_nccl_log(Path(path).read_text(errors="replace"))
        classes = channel_classes(log, classify)
        hints = diagnose(log)
        hcas = dict.fromkeys(f"{d['name']}/{d['link']}" for d in log.ib_devices)
        rows.append(dict(
            sample=Path(path).name, nccl=log.version or "?", nodes=len(log.hosts()) or "?",
            ranks=f"{len(log.ranks)}/{log.nranks}" if log.nranks else "?",
            intra_node=_fmt(classes["intra-node"]), inter_node=_fmt(classes["inter-node"]),
            hcas_found=(", ".join(hcas) or "-") if len(hcas) <= 2
            else f"{len(hcas)} ({next(iter(hcas))}…)",
            warnings=len(log.warnings), hints=len(hints),
            first_hint=hints[0] if hints else "nothing suspicious found"))
    return rows


def capture_nccl_log(nproc: int, sizes=(1 << 10, 1 << 20, 64 << 20), timeout: float = 300) -> str:
    """GPU tier: run a short NCCL all_reduce sweep with NCCL_DEBUG=INFO; return what it logged.

    NCCL writes its INFO lines to stdout, and the launcher streams every rank's stdout to
    `log`, so collecting those lines *is* the log `labkit nccl-log` reads.
    """
    lines: list[str] = []
    launch("labkit.collectives.benchmark:worker", nproc=nproc, backend="nccl",
           args=dict(ops=["all_reduce"], sizes=list(sizes), iters=2, warmup=1, check=False),
           env={"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET,GRAPH,TUNING"},
           timeout=timeout, log=lines.append)
    return "\n".join(lines) + "\n"


# --- the checklist ---------------------------------------------------------------------------

DEBUG_CHECKLIST = [
    dict(step=1, symptom="job hangs at start, or 'connection refused/aborted' in WARN lines",
         look_at="NCCL log: 'Bootstrap : Using <iface>'; labkit nccl-log",
         fix="NCCL_SOCKET_IFNAME = an interface every node can reach (not lo/docker0); "
             "firewall open between nodes; rendezvous host resolvable"),
    dict(step=2, symptom="pods Pending, or fewer GPUs than asked",
         look_at="kubectl describe node: Allocatable nvidia.com/gpu and the RDMA resource",
         fix="GPU Operator device plugin / Network Operator RDMA plugin running; resource "
             "name in the manifest matches the node's"),
    dict(step=3, symptom="inter-node bandwidth far below the NIC (e.g. a few GB/s on NDR)",
         look_at="NCCL log: 'via NET/Socket' instead of 'via NET/IB'",
         fix="/dev/infiniband in the pod (RDMA resource), libibverbs in the image, "
             "NCCL_IB_DISABLE unset, NCCL_IB_HCA naming real HCAs (ibv_devinfo)"),
    dict(step=4, symptom="NET/IB is used but busbw still below line rate",
         look_at="'via NET/IB/<n>' without '/GDRDMA'; labkit topo (GPU-NIC distance)",
         fix="nvidia-peermem loaded or dma-buf; GPU and NIC under one PCIe switch; "
             "NCCL_NET_GDR_LEVEL"),
    dict(step=5, symptom="RoCE: errors, timeouts or poor speed under load",
         look_at="HCAs listed as '/RoCE'; NCCL_IB_GID_INDEX; switch PFC/ECN counters",
         fix="GID index of the RoCE v2 entry (ibv_devinfo -v / show_gids); lossless "
             "Ethernet: PFC on the RDMA priority, ECN (DCQCN) on the switches"),
    dict(step=6, symptom="GPUs of one node talk slowly to each other",
         look_at="'via SHM' instead of 'via P2P'; labkit topo (NV#, PIX vs SYS)",
         fix="NCCL_P2P_DISABLE unset; IOMMU/ACS settings; all GPUs visible in one container"),
    dict(step=7, symptom="good bandwidth at large sizes, slow small messages",
         look_at="NCCL_DEBUG_SUBSYS=TUNING: algorithm/protocol per size; labkit collectives",
         fix="compare with nccl-tests references; α (latency) dominates: fewer, larger "
             "buckets (DDP bucket_cap_mb) or tree/NVLS where available"),
    dict(step=8, symptom="one slow or failing node drags the whole job",
         look_at="all_reduce busbw per node (labkit collectives) and per pair of nodes "
             "(nccl-tests all_reduce_perf); WARN lines naming a host; XID errors (dmesg, DCGM)",
         fix="drain the node; re-run the pairwise test; check cables/optics (link flaps)"),
]
