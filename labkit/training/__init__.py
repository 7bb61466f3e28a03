"""Step 1 of the roadmap, DDP training: data shards, the loop, checkpoints, a rank failure.

data.py         each rank's shard of the tokenized corpus; resumable (epoch, cursor)
train.py        one DDP rank: the training loop (launcher or torchrun entry point)
checkpoint.py   atomic checkpoints (model, optimizer, RNG, step, data) and resume
comm_split.py   compute vs gradient-communication time (no_sync probe, bare all_reduce)
export.py       the trained model in Hugging Face format, for the serving labs
elastic.py      run N ranks, restart all of them after a rank failure (like torchrun)
drill.py        fault drill: kill a rank, resume, compare with an uninterrupted run
scaling.py      weak scaling over world sizes 1, 2, 4 with the comm/compute split
cli.py          `labkit train` (DDP run, fault drill, weak scaling)

The ranks start through labkit.collectives.launch; lab 11's glue is
labkit.labs.l11_ddp_training (+ _plots).
"""
