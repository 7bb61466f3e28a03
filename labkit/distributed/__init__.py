"""Step 1 of the roadmap: collectives, their cost model, NCCL logs and GPU topology.

launch.py       run N ranks of a worker function on one machine (loopback only)
busbw.py        nccl-tests' algbw / busbw definitions
collectives.py  `labkit collectives`: nccl-tests-style benchmark of every collective
alpha_beta.py   fit latency (alpha) and inverse bandwidth (beta); ring vs tree predictions
ring.py         exercise: ring all_reduce from send/recv
checks.py       the exercise's self-check
nccl_log.py     `labkit nccl-log`: what an NCCL_DEBUG=INFO log says about transports
topo.py         `labkit topo`: GPU-to-GPU link matrix through NVML
"""
