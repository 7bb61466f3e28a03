"""Step 1 of the roadmap, the cluster: what NCCL chose, how the GPUs connect, the job manifests.

nccl_log.py           parse an NCCL_DEBUG=INFO log: version, ranks, channels, NICs, tuning
nccl_diagnose.py      the parsed log in plain words, and what to check next
topo.py               `labkit topo`: GPU-to-GPU link matrix through NVML, NIC affinity
manifests.py          PyTorchJob / JobSet / bare-metal torchrun lines with NCCL settings
manifests_schema.py   offline validation: own CRD-derived schema + kubernetes-validate
manifests_prereqs.py  GPU Operator / Network Operator prerequisites, explained
cli.py                `labkit manifests`, `labkit nccl-log`, `labkit topo`

Lab 12's glue is labkit.labs.l12_cluster_networking.
"""
