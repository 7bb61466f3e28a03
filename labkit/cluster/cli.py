"""The cluster's sub-commands: `labkit manifests`, `labkit nccl-log`, `labkit topo`.

`labkit manifests` writes a multi-node GPU training job as a PyTorchJob, a JobSet or torchrun
lines; `labkit nccl-log` explains an NCCL_DEBUG=INFO log; `labkit topo` shows the GPU links.

Only the standard library is imported here; yaml, jsonschema and kubernetes-validate load
inside the handlers (pynvml for topo).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

from labkit.errors import UserError

NCCL_LOG_EPILOG = """\
Make a log to read:
  NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,GRAPH,NET,TUNING NCCL_DEBUG_FILE=nccl.%h.%p.log \\
      labkit collectives --backend nccl --nproc 8
  labkit nccl-log nccl.gpu-node-1.12345.log
It reports NCCL's version, which rank runs on which host/GPU, the transport of every channel
(P2P/IPC or P2P/CUMEM = GPU-to-GPU over NVLink/PCIe; SHM = through host memory; NET/IB =
InfiniBand/RoCE, with GDRDMA = GPUDirect RDMA; NET/Socket = plain TCP), the NICs NCCL chose,
the algorithm/protocol picked per size (TUNING lines) and every WARN, then what to check.
"""

TOPO_EPILOG = """\
Cells as in `nvidia-smi topo -m`: NV<k> = k NVLinks (direct or through NVSwitch), PIX = same
PCIe switch, PXB = several PCIe switches, PHB = through the CPU's PCIe host bridge, NODE =
across host bridges on one NUMA node, SYS = across the CPU socket interconnect (slowest).
Without a GPU it says so and exits 0.
"""


def _epilog() -> str:
    from labkit.cluster.manifests import NCCL_VARIABLES

    width = max(map(len, NCCL_VARIABLES))
    nccl = "\n".join(textwrap.fill(v, 92, initial_indent=f"  {k:<{width}}  ",
                                   subsequent_indent=" " * (width + 4))
                     for k, v in NCCL_VARIABLES.items())
    return f"""\
What the NCCL variables in the job do (set per --fabric):
{nccl}
  ib   -> NCCL_IB_HCA (with --hca), NCCL_NET_GDR_LEVEL; InfiniBand verbs, GPUDirect RDMA
  roce -> as ib, plus NCCL_IB_GID_INDEX=3 (RoCE v2 over IPv4 on most ConnectX setups)
  tcp  -> NCCL_IB_DISABLE=1: everything over NCCL_SOCKET_IFNAME (slow; for debugging)

Every node runs the same torchrun line; the c10d rendezvous on <first node>:29500 hands out
node ranks. Kubernetes also needs the GPU and Network Operators: see --explain.

examples:
  labkit manifests --kind pytorchjob --nodes 4 --gpus-per-node 8 --fabric ib \\
      --hca mlx5_0,mlx5_1,mlx5_2,mlx5_3 --rdma-resource rdma/rdma_shared_device_a \\
      --gpu-product NVIDIA-H100-80GB-HBM3 --validate --out job.yaml
  labkit manifests --kind jobset --nodes 2 --fabric roce --host-network --ifname bond0
  labkit manifests --kind torchrun --nodes 2 --gpus-per-node 8 --hosts gpu-a,gpu-b --fabric tcp
  labkit manifests --check job.yaml          validate a (hand-edited) PyTorchJob/JobSet file
  labkit manifests --explain                 GPU Operator / Network Operator prerequisites
"""


def register(subparsers) -> None:
    from labkit.cluster.manifests import DEFAULT_IMAGE, DEFAULT_MODULE, FABRICS, GDR_LEVELS
    from labkit.cluster.manifests_schema import DEFAULT_K8S_VERSION

    p = subparsers.add_parser(
        "manifests", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog(),
        help="multi-node GPU training job: Kubeflow PyTorchJob, JobSet or torchrun lines",
        description="Write the Kubernetes manifest (or bare-metal torchrun command lines) for "
        "a multi-node torchrun job with GPUs, /dev/shm, RDMA and NCCL settings for "
        "InfiniBand, RoCE or TCP, and optionally validate it offline against schemas.")
    p.add_argument("--kind", choices=("pytorchjob", "jobset", "torchrun"), default="pytorchjob",
                   help="Kubeflow PyTorchJob (training operator), JobSet, or plain command "
                   "lines for bare-metal nodes (default: pytorchjob)")
    p.add_argument("--nodes", type=int, default=2, help="machines (pods), one torchrun each")
    p.add_argument("--gpus-per-node", type=int, default=8,
                   help="GPUs requested per pod = ranks per node (--nproc-per-node)")
    p.add_argument("--fabric", choices=FABRICS, default="ib",
                   help="network between nodes: InfiniBand, RoCE (RDMA over Ethernet) or TCP")
    p.add_argument("--image", default=DEFAULT_IMAGE,
                   help="container image with CUDA torch and labkit installed, e.g. built "
                   "FROM an NGC PyTorch image (default: a placeholder to replace)")
    p.add_argument("--hca", default="", help="RDMA devices for NCCL_IB_HCA, e.g. "
                   "mlx5_0,mlx5_1 (see ibv_devinfo); default: NCCL uses all it finds")
    p.add_argument("--ifname", default="eth0", help="NCCL_SOCKET_IFNAME: interface for "
                   "bootstrap/TCP; pods: eth0, host network: e.g. bond0 or ens; '=x' exact")
    p.add_argument("--gid-index", type=int, default=None,
                   help="NCCL_IB_GID_INDEX (RoCE; default 3; -1 lets NCCL >= 2.21 choose)")
    p.add_argument("--gdr-level", choices=(*GDR_LEVELS, "auto"), default="PHB",
                   help="NCCL_NET_GDR_LEVEL: farthest GPU-NIC PCIe distance that still uses "
                   "GPUDirect RDMA (default PHB = same CPU); auto leaves it to NCCL")
    p.add_argument("--gpu-product", default=None, help="nodeSelector on the GPU feature "
                   "discovery label nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3")
    p.add_argument("--rdma-resource", default=None, metavar="NAME[=COUNT]",
                   help="RDMA device-plugin resource to request, e.g. "
                   "rdma/rdma_shared_device_a or nvidia.com/hostdev=4; the name is set by "
                   "your RDMA device plugin / Network Operator config (kubectl describe node)")
    p.add_argument("--host-network", action="store_true",
                   help="use the node's network namespace (its NICs, RoCE GIDs, hostname)")
    p.add_argument("--network-attachment", default=None,
                   help="Multus network(s) for the fabric interface (pod annotation "
                   "k8s.v1.cni.cncf.io/networks)")
    p.add_argument("--shm-size", default="16Gi", help="size of the memory-backed /dev/shm")
    p.add_argument("--name", default="labkit-ddp", help="job name, also the rendezvous id")
    p.add_argument("--namespace", default=None)
    p.add_argument("--min-nodes", type=int, default=None,
                   help="make the job elastic: torchrun --nnodes=MIN:NODES")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="torchrun worker-group restarts (and the job's restart budget)")
    p.add_argument("--rdzv-port", type=int, default=29500)
    p.add_argument("--module", default=DEFAULT_MODULE, help="python module torchrun runs")
    p.add_argument("--train-args", default="", help="arguments for the module, one string")
    p.add_argument("--hosts", default="", help="--kind torchrun: comma list of node "
                   "hostnames; the first hosts the rendezvous (default node0,node1,...)")
    p.add_argument("--nccl-debug", choices=("WARN", "INFO", "TRACE"), default="INFO")
    p.add_argument("--nccl-debug-subsys", default="INIT,NET",
                   help="add TUNING to log algorithm/protocol choices for labkit nccl-log")
    p.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    p.add_argument("--validate", action="store_true", help="check the manifest offline: "
                   "labkit's CRD-derived schema + Kubernetes core schemas (strict)")
    p.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION,
                   help="Kubernetes version whose core schemas --validate/--check use")
    p.add_argument("--check", type=Path, default=None, metavar="FILE",
                   help="only validate an existing PyTorchJob/JobSet YAML file")
    p.add_argument("--explain", action="store_true",
                   help="print the GPU/Network Operator prerequisites (Markdown) and exit")
    p.set_defaults(func=manifests_command)

    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "nccl-log", formatter_class=raw, epilog=NCCL_LOG_EPILOG,
        help="explain an NCCL_DEBUG=INFO log: transports, NICs, algorithms, warnings",
        description="Summarise what NCCL decided, from its NCCL_DEBUG=INFO output.")
    p.add_argument("file", type=Path, help="log file (several ranks' logs may be concatenated)")
    p.add_argument("--json", action="store_true", help="print the parsed log as JSON")
    p.set_defaults(func=nccl_log_command)

    p = subparsers.add_parser(
        "topo", formatter_class=raw, epilog=TOPO_EPILOG,
        help="GPU-to-GPU link matrix (NVLink/PCIe/cross-socket) and NIC affinity via NVML",
        description="Show how this machine's GPUs (and NICs) are connected, like "
        "`nvidia-smi topo -m`.")
    p.add_argument("--json", action="store_true", help="print the topology as JSON")
    p.set_defaults(func=topo_command)



def _rdma(spec: str | None) -> tuple[str | None, int]:
    if not spec:
        return None, 1
    name, sep, count = spec.partition("=")
    if not name or (sep and not count.isdigit()):
        raise UserError(f"--rdma-resource {spec!r}: use NAME or NAME=COUNT, e.g. "
                        "rdma/rdma_shared_device_a or nvidia.com/hostdev=4")
    return name, int(count or 1)


def job_from_args(args):
    from labkit.cluster.manifests import ClusterJob

    rdma_name, rdma_count = _rdma(args.rdma_resource)
    return ClusterJob(
        name=args.name, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        fabric=args.fabric, image=args.image, hcas=tuple(args.hca.split(",")),
        ifname=args.ifname, gid_index=args.gid_index,
        gdr_level=None if args.gdr_level == "auto" else args.gdr_level,
        nccl_debug=args.nccl_debug, nccl_debug_subsys=args.nccl_debug_subsys,
        rdma_resource=rdma_name, rdma_count=rdma_count, host_network=args.host_network,
        network_attachment=args.network_attachment, gpu_product=args.gpu_product,
        shm_size=args.shm_size, rdzv_port=args.rdzv_port, max_restarts=args.max_restarts,
        min_nodes=args.min_nodes, module=args.module,
        train_args=tuple(shlex.split(args.train_args)), namespace=args.namespace)


def _check(docs, k8s_version: str) -> int:
    from labkit.cluster.manifests_schema import validation_errors

    bad = 0
    for doc in docs:
        errors = validation_errors(doc, k8s_version)
        kind = doc.get("kind") if isinstance(doc, dict) else "?"
        if errors:
            bad += 1
            print(f"INVALID {kind}:", *errors, sep="\n  - ", file=sys.stderr)
        else:
            print(f"valid {kind}: labkit's CRD-derived schema, Kubernetes {k8s_version} core "
                  "schemas (strict) and operator rules", file=sys.stderr)
    return 1 if bad else 0


def manifests_command(args) -> int:
    if args.explain:
        from labkit.cluster.manifests_prereqs import prerequisites_markdown

        print(prerequisites_markdown())
        return 0
    if args.check is not None:
        import yaml

        if not args.check.is_file():
            raise UserError(f"{args.check} is not a file; pass a PyTorchJob/JobSet YAML file")
        docs = [d for d in yaml.safe_load_all(args.check.read_text()) if d]
        if not docs:
            raise UserError(f"{args.check} holds no YAML document")
        return _check(docs, args.k8s_version)

    from labkit.cluster import manifests as m

    job = job_from_args(args)
    for warning in job.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    rc = 0
    if args.kind == "torchrun":
        hosts = [h.strip() for h in args.hosts.split(",") if h.strip()] or None
        text = m.torchrun_script(job, hosts)
        if args.validate:
            print("note: --validate checks Kubernetes manifests; command lines have no "
                  "schema", file=sys.stderr)
    else:
        doc = m.manifest(job, args.kind)
        text = m.to_yaml(doc, job)
        if args.validate:
            rc = _check([doc], args.k8s_version)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)
        print(f"# wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return rc


def nccl_log_command(args) -> int:
    from labkit.cluster.nccl_diagnose import format_summary, report
    from labkit.cluster.nccl_log import parse_nccl_log

    if not args.file.is_file():
        raise UserError(f"{args.file} is not a file; pass the path of an NCCL_DEBUG=INFO log")
    log = parse_nccl_log(args.file.read_text(errors="replace"))
    print(json.dumps(report(log), indent=2) if args.json else format_summary(log))
    return 0


def topo_command(args) -> int:
    from labkit.cluster.topo import format_topology, read_topology

    topo = read_topology()
    print(json.dumps(topo, indent=2) if args.json else format_topology(topo))
    return 0
