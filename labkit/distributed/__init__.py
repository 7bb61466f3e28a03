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

DDP training (`labkit train`, module train_cli.py):
data.py           each rank's shard of the tokenized corpus; resumable (epoch, cursor)
train.py          one DDP rank: the training loop (launcher or torchrun entry point)
checkpoint.py     atomic checkpoints (model, optimizer, RNG, step, data) and resume
comm_split.py     compute vs gradient-communication time (no_sync probe, bare all_reduce)
export.py         the trained model in Hugging Face format, for the serving labs
elastic.py        run N ranks, restart all of them after a rank failure (like torchrun)
drill.py          fault drill: kill a rank, resume, compare with an uninterrupted run
scaling.py        weak scaling over world sizes 1, 2, 4 with the comm/compute split

Cluster manifests (`labkit manifests`, module manifests_cli.py):
manifests.py          PyTorchJob / JobSet / bare-metal torchrun lines with NCCL settings
manifests_schema.py   offline validation: own CRD-derived schema + kubernetes-validate
manifests_prereqs.py  GPU Operator / Network Operator prerequisites, explained

Glue for the step-1 notebooks (labs 10-12):
collectives_summary.py  tables, fits and prediction plots for lab 10
train_summary.py        step logs, scaling/comm tables, drill comparison for lab 11
train_plots.py          lab 11's figures
cluster_checklist.py    NCCL variable table, manifest checks, log rows for lab 12
"""
