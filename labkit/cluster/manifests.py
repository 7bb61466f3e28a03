"""Multi-node training jobs for a real GPU cluster: Kubernetes manifests and torchrun lines.

One `ClusterJob` (plain values) becomes any of three things, all running the same command:

    torchrun --nnodes=N --nproc-per-node=G --rdzv-backend=c10d \\
             --rdzv-endpoint=<first node>:29500 --rdzv-id=<job> -m labkit.training.train

- `pytorchjob(job)`: a Kubeflow PyTorchJob (kubeflow.org/v1). The training operator creates a
  headless Service per pod, so `<name>-master-0` (or `<name>-worker-0` when elastic) resolves.
- `jobset(job)`: a JobSet (jobset.x-k8s.io/v1alpha2). One Indexed Job with N pods; JobSet's
  headless Service gives pod i the DNS name `<name>-node-0-<i>.<name>`.
- `torchrun_commands(job, hosts)`: one shell line per bare-metal node, with the same env.

With the c10d rendezvous every node runs the *same* command: the node whose address matches
the endpoint hosts the rendezvous store, and node ranks are handed out by the rendezvous, so
no `--node-rank` is needed. Check a manifest with `labkit.cluster.manifests_schema`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from labkit.errors import UserError

FABRICS = ("ib", "roce", "tcp")
GDR_LEVELS = ("LOC", "PIX", "PXB", "PHB", "SYS")
DEFAULT_IMAGE = "registry.example.com/labkit:gpu"  # your image: CUDA torch + labkit installed
DEFAULT_MODULE = "labkit.training.train"

# What each variable does; the CLI's --help and the YAML header print these.
NCCL_VARIABLES = {
    "NCCL_DEBUG": "log level: WARN (errors only), INFO (init, transports chosen), TRACE",
    "NCCL_DEBUG_SUBSYS": "which INFO topics: INIT, NET (NICs/transports), GRAPH (topology "
    "search), TUNING (algorithm/protocol per size), ALL",
    "NCCL_SOCKET_IFNAME": "IP interface(s) for NCCL's bootstrap and, on tcp, all traffic: "
    "'eth' = prefix, '=eth0' = exact name, '^docker' = exclude",
    "NCCL_IB_HCA": "RDMA devices (HCAs) NCCL may use, e.g. mlx5_0,mlx5_1 or mlx5_0:1 "
    "(port 1); unset = every device found, storage/management NICs included",
    "NCCL_IB_GID_INDEX": "RoCE only: which GID-table entry to use; RoCE v2 over IPv4 is "
    "usually 3 (ibv_devinfo -v); NCCL >= 2.21 picks one itself when unset (-1)",
    "NCCL_NET_GDR_LEVEL": "GPUDirect RDMA: NIC reads/writes GPU memory directly when the "
    "GPU-NIC PCIe distance is at most LOC < PIX < PXB < PHB < SYS (nvidia-smi topo -m)",
    "NCCL_IB_DISABLE": "1 = never use InfiniBand/RoCE verbs; traffic goes over TCP sockets",
}


@dataclass
class ClusterJob:
    """Everything a multi-node job needs; validated on creation (UserError on a bad value)."""

    name: str = "labkit-ddp"
    nodes: int = 2
    gpus_per_node: int = 8
    fabric: str = "ib"  # ib | roce | tcp
    image: str = DEFAULT_IMAGE
    hcas: tuple[str, ...] = ()  # () = let NCCL use every HCA it finds
    ifname: str = "eth0"  # pod network; on hostNetwork/bare metal e.g. ens, bond0
    gid_index: int | None = None  # None = 3 on roce, unset on ib
    gdr_level: str | None = "PHB"  # None = NCCL decides
    nccl_debug: str = "INFO"
    nccl_debug_subsys: str = "INIT,NET"
    rdma_resource: str | None = None  # e.g. rdma/rdma_shared_device_a, nvidia.com/hostdev
    rdma_count: int = 1
    host_network: bool = False
    network_attachment: str | None = None  # Multus network name for a RoCE/SR-IOV interface
    gpu_product: str | None = None  # GPU feature discovery label value
    shm_size: str = "16Gi"
    rdzv_port: int = 29500
    rdzv_id: str | None = None  # default: the job name
    max_restarts: int = 3
    min_nodes: int | None = None  # set (< nodes) for an elastic job: --nnodes=min:max
    module: str = DEFAULT_MODULE
    train_args: tuple[str, ...] = ()
    namespace: str | None = None

    def __post_init__(self):
        self.hcas = tuple(h for h in self.hcas if h)
        self.train_args = tuple(self.train_args)
        # 40 characters leave room for "-worker-NNN" / "-node-0-NNN" inside a 63-char pod name.
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", self.name):
            raise UserError(f"job name {self.name!r}: use lowercase letters, digits and '-', "
                            "start with a letter, at most 40 characters (a DNS label)")
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise UserError("--nodes and --gpus-per-node must be at least 1")
        if self.fabric not in FABRICS:
            raise UserError(f"fabric {self.fabric!r}: choose one of {', '.join(FABRICS)}")
        if self.gdr_level is not None and self.gdr_level not in GDR_LEVELS:
            raise UserError(f"GDR level {self.gdr_level!r}: choose one of {GDR_LEVELS}")
        if self.min_nodes is not None and not 1 <= self.min_nodes <= self.nodes:
            raise UserError(f"--min-nodes must be between 1 and --nodes ({self.nodes})")
        if not 1024 <= self.rdzv_port <= 65535:
            raise UserError("--rdzv-port must be between 1024 and 65535")
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?([KMGT]i?)?", self.shm_size):
            raise UserError(f"shm size {self.shm_size!r}: use a Kubernetes quantity like 16Gi")
        if self.rdma_count < 1:
            raise UserError("--rdma-resource count must be at least 1")

    @property
    def elastic(self) -> bool:
        return self.min_nodes is not None and self.min_nodes < self.nodes

    @property
    def nnodes(self) -> str:
        """torchrun's --nnodes: 'N', or 'MIN:MAX' for an elastic job."""
        return f"{self.min_nodes}:{self.nodes}" if self.elastic else str(self.nodes)

    def warnings(self) -> list[str]:
        """Settings that are valid YAML but will likely not give you RDMA; say why."""
        out = []
        if self.fabric != "tcp" and not self.hcas:
            out.append("no HCAs given: NCCL will use every RDMA device it finds; list the "
                       "GPU-fabric ones (ibv_devinfo) with --hca to keep storage NICs out")
        if self.fabric == "roce" and not (self.host_network or self.network_attachment):
            out.append("RoCE needs the RoCE interface (and its IP, which defines the GID) "
                       "inside the pod: use --host-network or --network-attachment")
        if self.fabric != "tcp" and not self.rdma_resource and not self.host_network:
            out.append("no --rdma-resource: the pod gets no /dev/infiniband devices unless "
                       "the RDMA device plugin's resource is requested")
        return out


def nccl_env(job: ClusterJob) -> dict[str, str]:
    """The NCCL variables for the job's fabric, in the order a learner should read them."""
    env = {"NCCL_DEBUG": job.nccl_debug}
    if job.nccl_debug_subsys:
        env["NCCL_DEBUG_SUBSYS"] = job.nccl_debug_subsys
    env["NCCL_SOCKET_IFNAME"] = job.ifname
    if job.fabric == "tcp":
        env["NCCL_IB_DISABLE"] = "1"  # otherwise NCCL would still try any HCA it sees
        return env
    if job.hcas:
        env["NCCL_IB_HCA"] = ",".join(job.hcas)
    gid = job.gid_index if job.gid_index is not None else (3 if job.fabric == "roce" else None)
    if gid is not None:
        env["NCCL_IB_GID_INDEX"] = str(gid)
    if job.gdr_level:
        env["NCCL_NET_GDR_LEVEL"] = job.gdr_level
    return env


def torchrun_argv(job: ClusterJob, rdzv_host: str) -> list[str]:
    """The command every node runs; only the rendezvous host differs between targets."""
    return ["torchrun", f"--nnodes={job.nnodes}", f"--nproc-per-node={job.gpus_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_host}:{job.rdzv_port}",
            f"--rdzv-id={job.rdzv_id or job.name}", f"--max-restarts={job.max_restarts}",
            "-m", job.module, *job.train_args]


def rdzv_host(job: ClusterJob, kind: str) -> str:
    """The DNS name of the pod that hosts the c10d rendezvous store."""
    if kind == "pytorchjob":
        # Elastic PyTorchJobs have only Workers (the operator's own default rdzvHost).
        return f"{job.name}-{'worker' if job.elastic else 'master'}-0"
    if kind == "jobset":
        return f"{job.name}-node-0-0.{job.name}"  # <jobset>-<replicatedJob>-<job>-<pod>.<subdomain>
    raise UserError(f"kind {kind!r}: choose pytorchjob or jobset")


def pod_template(job: ClusterJob, kind: str) -> dict:
    """The pod every node runs: GPUs, /dev/shm, NCCL env, RDMA access, GPU-node scheduling."""
    limits: dict = {"nvidia.com/gpu": job.gpus_per_node}
    if job.rdma_resource:
        limits[job.rdma_resource] = job.rdma_count
    container = {
        # The training operator finds its container by the name "pytorch" (env, ports).
        "name": "pytorch",
        "image": job.image,
        "command": torchrun_argv(job, rdzv_host(job, kind)),
        "env": [{"name": k, "value": v} for k, v in nccl_env(job).items()],
        "ports": [{"name": "pytorchjob-port" if kind == "pytorchjob" else "rdzv",
                   "containerPort": job.rdzv_port}],
        "resources": {"limits": limits},  # extended resources: requests default to limits
        # NCCL's shared-memory transport and DataLoader workers need far more than 64 MiB.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if job.fabric != "tcp":
        # RDMA pins (registers) buffers; IPC_LOCK lifts the locked-memory limit for that.
        container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
    spec: dict = {
        "containers": [container],
        "volumes": [{"name": "dshm",
                     "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size}}],
        # GPU nodes are usually tainted so that only pods asking for GPUs land there.
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}],
    }
    if job.gpu_product:
        spec["nodeSelector"] = {"nvidia.com/gpu.product": job.gpu_product}
    if job.host_network:
        # The host's NICs (and their RoCE GIDs) become the pod's; keep cluster DNS working.
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if kind == "jobset":
        spec["restartPolicy"] = "Never"  # a failed pod fails its Job; JobSet restarts all
    metadata: dict = {"labels": {"app.kubernetes.io/name": job.name,
                                 "app.kubernetes.io/part-of": "labkit"}}
    if job.network_attachment:
        metadata["annotations"] = {"k8s.v1.cni.cncf.io/networks": job.network_attachment}
    return {"metadata": metadata, "spec": spec}


def _metadata(job: ClusterJob) -> dict:
    meta = {"name": job.name}
    if job.namespace:
        meta["namespace"] = job.namespace
    return meta


def pytorchjob(job: ClusterJob) -> dict:
    """A Kubeflow PyTorchJob: Master + Workers, or Workers only with an elasticPolicy."""

    def replicas(n: int) -> dict:
        # A fresh template per replica type: YAML stays alias-free and each can be edited.
        return {"replicas": n, "restartPolicy": "OnFailure",
                "template": pod_template(job, "pytorchjob")}

    spec: dict = {"nprocPerNode": str(job.gpus_per_node)}  # a string in the CRD ("auto", "8")
    if job.elastic:
        spec["elasticPolicy"] = {
            "rdzvBackend": "c10d", "rdzvPort": job.rdzv_port,
            "rdzvId": job.rdzv_id or job.name, "minReplicas": job.min_nodes,
            "maxReplicas": job.nodes, "maxRestarts": job.max_restarts}
        spec["pytorchReplicaSpecs"] = {"Worker": replicas(job.nodes)}
    else:
        specs = {"Master": replicas(1)}
        if job.nodes > 1:
            specs["Worker"] = replicas(job.nodes - 1)
        spec["pytorchReplicaSpecs"] = specs
    spec["runPolicy"] = {"backoffLimit": job.max_restarts}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": _metadata(job), "spec": spec}


def jobset(job: ClusterJob) -> dict:
    """A JobSet: one Indexed Job of N pods with stable DNS names; restarts as a whole."""
    job_spec = {"parallelism": job.nodes, "completions": job.nodes,
                "completionMode": "Indexed",  # pod index -> stable hostname
                "backoffLimit": 0,  # one pod failing fails the Job ...
                "template": pod_template(job, "jobset")}
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": _metadata(job),
            "spec": {"network": {"enableDNSHostnames": True, "subdomain": job.name},
                     # ... and JobSet recreates every pod, so all ranks resume together.
                     "failurePolicy": {"maxRestarts": job.max_restarts},
                     "replicatedJobs": [{"name": "node", "replicas": 1,
                                         "template": {"spec": job_spec}}]}}


@dataclass
class NodeCommand:
    host: str
    env: dict[str, str]
    argv: list[str]

    def shell(self) -> str:
        """One line to paste on the node: VAR=value ... torchrun ..."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.argv)}"


def torchrun_commands(job: ClusterJob, hosts: list[str] | None = None) -> list[NodeCommand]:
    """One command per bare-metal node; hosts[0] hosts the rendezvous store."""
    hosts = list(hosts) if hosts else [f"node{i}" for i in range(job.nodes)]
    if len(hosts) != job.nodes:
        raise UserError(f"{len(hosts)} hosts given for --nodes {job.nodes}; give one per node")
    argv = torchrun_argv(job, hosts[0])
    return [NodeCommand(host, nccl_env(job), list(argv)) for host in hosts]


def torchrun_script(job: ClusterJob, hosts: list[str] | None = None) -> str:
    """The bare-metal commands as text, each preceded by which node runs it."""
    cmds = torchrun_commands(job, hosts)
    lines = [f"# {job.nodes} nodes x {job.gpus_per_node} GPUs, fabric={job.fabric}; start "
             "every line within the rendezvous timeout (600 s), in any order.",
             f"# {cmds[0].host} hosts the c10d rendezvous store on port {job.rdzv_port}; "
             "the others must reach it over the network."]
    for i, cmd in enumerate(cmds):
        lines += [f"# on {cmd.host} (node {i} of {job.nodes})", cmd.shell()]
    return "\n".join(lines) + "\n"


def manifest(job: ClusterJob, kind: str) -> dict:
    if kind == "pytorchjob":
        return pytorchjob(job)
    if kind == "jobset":
        return jobset(job)
    raise UserError(f"kind {kind!r}: choose pytorchjob or jobset")


def to_yaml(doc: dict, job: ClusterJob | None = None) -> str:
    """YAML for `kubectl apply -f`; with a job, a comment header explains its NCCL variables."""
    import yaml

    header = ""
    if job is not None:
        header = "".join(f"# {k}: {NCCL_VARIABLES[k]}\n" for k in nccl_env(job)
                         if k in NCCL_VARIABLES)
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)
