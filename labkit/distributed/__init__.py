"""Step 1 of the roadmap: collectives, their cost model, NCCL logs and GPU topology.

launch.py         run N ranks of a worker function on one machine (loopback only)
worker.py         what each rank runs: join the group, call the function, report back
examples.py       tiny worker functions to try the launcher with
busbw.py          nccl-tests' algbw / busbw definitions
collectives.py    `labkit collectives`: nccl-tests-style benchmark of every collective
table.py          sizes like `-b 1K -e 64M` and the nccl-tests-style results table
alpha_beta.py     fit latency (alpha) and inverse bandwidth (beta); ring vs tree predictions
ring.py           exercise: ring all_reduce from send/recv
checks.py         the exercise's self-check (works for functions defined in a notebook)
nccl_log.py       `labkit nccl-log`: what an NCCL_DEBUG=INFO log says
nccl_diagnose.py  the log in plain words, and what to check next
topo.py           `labkit topo`: GPU-to-GPU link matrix through NVML, NIC affinity via sysfs
cli.py            registers collectives, nccl-log and topo with the `labkit` command
"""
