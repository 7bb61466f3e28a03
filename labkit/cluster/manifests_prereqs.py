"""What a Kubernetes cluster must provide before a multi-node GPU job can run (Markdown).

The cluster-networking notebook shows `prerequisites_markdown()`; `labkit manifests
--explain` prints it. Names of resources and labels are the ones the manifests in
`labkit.cluster.manifests` request, so the text and the YAML can be read side by side.
"""

from __future__ import annotations

PREREQUISITES_MD = """\
## What the cluster needs before this job can run

A PyTorchJob or JobSet only *asks* for GPUs and RDMA devices. Something on every node has to
install the drivers and *advertise* those devices to the scheduler. On NVIDIA hardware that
is two operators.

### 1. NVIDIA GPU Operator (every GPU node)

- **driver** -- the NVIDIA kernel driver, run as a container (or a host-installed driver,
  with `driver.enabled=false`). Check: `nvidia-smi` works on the node.
- **container toolkit** -- configures containerd/CRI-O so that a container that was given a
  GPU can actually open it.
- **device plugin** -- advertises whole GPUs as the extended resource `nvidia.com/gpu` (MIG
  slices as e.g. `nvidia.com/mig-1g.10gb`). Check: `nvidia.com/gpu: 8` under *Allocatable*.
- **GPU feature discovery** -- labels each node with `nvidia.com/gpu.product`,
  `nvidia.com/gpu.count`, `nvidia.com/gpu.memory`; the job's `nodeSelector` uses the first
  to pick e.g. `NVIDIA-H100-80GB-HBM3`.
- **DCGM exporter** -- GPU utilisation, memory, power and XID errors as Prometheus metrics
  (step 3 of the labs).

GPU nodes are usually tainted (e.g. `nvidia.com/gpu=present:NoSchedule`) so that only pods
that need GPUs land there; the manifest tolerates any `nvidia.com/gpu` taint. A pod gets GPUs
only through `resources.limits["nvidia.com/gpu"]`: one per rank, so `--nproc-per-node` must
not exceed it.

### 2. NVIDIA Network Operator (InfiniBand or RoCE)

- **MOFED / DOCA-OFED driver container** -- the ConnectX (`mlx5`) drivers and RDMA core
  libraries, unless the host already has them.
- **RDMA shared device plugin** -- advertises the HCAs as one resource many pods share, e.g.
  `rdma/rdma_shared_device_a`; requesting it puts `/dev/infiniband/*` into the pod.
- **or the SR-IOV / host-device plugin** -- each pod gets its own virtual or physical
  function, e.g. `nvidia.com/hostdev` or a name from an `SriovNetworkNodePolicy`.
- **Multus + a secondary network** (macvlan, IPoIB, SR-IOV or host-device CNI) -- puts the
  fabric interface, with its own IP, into the pod; chosen by the pod annotation
  `k8s.v1.cni.cncf.io/networks`.

**The resource name is configuration, not a constant**: it is whatever the cluster admin
wrote in the NicClusterPolicy (`resourceName` of the RDMA shared device plugin) or the
SR-IOV/host-device policy. Read it off `kubectl describe node`, then pass it with
`--rdma-resource`.

InfiniBand verbs need only the device files, so the pod network can stay as it is. RoCE
runs over Ethernet and derives its GID (the RDMA address) from the interface's IP, so the
RoCE interface itself must be inside the pod: `--host-network`, or a Multus attachment with
`--network-attachment`.

**GPUDirect RDMA** (the NIC reads and writes GPU memory, no copy through host RAM) needs a
way to register GPU memory with the NIC: the Linux **DMA-BUF** path (NVIDIA's recommendation
where supported, with the open GPU kernel modules) or the legacy **`nvidia-peermem`** module
(formerly `nv_peer_mem`), which the GPU Operator loads with `driver.rdma.enabled=true`.
`NCCL_NET_GDR_LEVEL` then decides for which GPU-NIC pairs NCCL uses it, by PCIe distance.

Registering memory pins it, so the container needs the `IPC_LOCK` capability (the manifest
adds it) or an unlimited `ulimit -l`.

### 3. What to check, in this order

1. `kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count` -- GPU nodes are
   labelled; the product string is what `--gpu-product` must match exactly.
2. `kubectl describe node <gpu-node>` -- under *Allocatable*: `nvidia.com/gpu` and your RDMA
   resource with non-zero counts. Zero or missing means the device plugin is not running.
3. `kubectl get pods -n gpu-operator` (and the network operator's namespace) -- everything
   Running or Completed; the validator pods report driver and toolkit problems.
4. In a pod of the job: `nvidia-smi` (all GPUs), `nvidia-smi topo -m` (GPU-to-NIC distance:
   with labkit's default `NCCL_NET_GDR_LEVEL=PHB`, pairs up to PHB use GPUDirect RDMA, SYS
   pairs across CPU sockets do not), `ibv_devinfo`
   (each HCA `PORT_ACTIVE`, `link_layer` InfiniBand or Ethernet = RoCE), `ibv_devinfo -v |
   grep GID` (RoCE: which index holds the RoCE v2 IPv4 GID), `ulimit -l`.
5. On the node: `lsmod | grep peermem` when using nvidia-peermem.
6. Run a 2-node collective with `NCCL_DEBUG=INFO` and read the log with `labkit nccl-log`:
   `NET/IB ... GDRDMA` is RDMA with GPUDirect; `NET/IB` alone is RDMA through host memory;
   `NET/Socket` means NCCL fell back to TCP (wrong `NCCL_IB_HCA`, no devices in the pod, or
   `NCCL_IB_DISABLE=1`). Compare the 2-node all_reduce busbw with the NIC's line rate
   (NDR 400 Gb/s ~ 50 GB/s per NIC; nccl-tests reports ~46-48 GB/s busbw per NIC).
"""


def prerequisites_markdown() -> str:
    """The explainer as Markdown, for a notebook's `display(Markdown(...))`."""
    return PREREQUISITES_MD
