"""Step 1 of the roadmap, collectives: N ranks on one machine, nccl-tests' numbers, and why.

launch.py       run N ranks of a worker function on one machine (loopback only)
worker.py       what each rank runs: join the group, call the function, report back
examples.py     tiny worker functions to try the launcher with
busbw.py        nccl-tests' algbw / busbw definitions
benchmark.py    `labkit collectives`: nccl-tests-style benchmark of every collective
table.py        sizes like `-b 1K -e 64M` and the nccl-tests-style results table
alpha_beta.py   fit latency (alpha) and inverse bandwidth (beta); ring vs tree predictions
ring.py         exercise: ring all_reduce from send/recv (its self-check: labkit/checks/)
cli.py          `labkit collectives`

DDP training is labkit.training, NCCL logs / topology / cluster manifests labkit.cluster,
and lab 10's glue labkit.labs.l10_collectives.
"""
