"""The teaching engine's fast path, chosen by `--attention fast` (the default).

The plain path (labkit/engine/plain_attention.py: lab 20's op, torch matmuls) computes the
same tokens; this folder is what makes them fast on a CPU, one trick per file:

    backend.py        FastAttention: the plain path's contract (cache shape, build, attend)
    attention.py      metadata built once per step; decode, cascade and prefill kernels
    shared_prefix.py  cascade attention: shared prefixes found, attended once, merged by LSE
    workspace.py      gather buffers kept across steps (append one token, not re-gather)
    cpu_gemm.py       float32 matmuls through weights packed once for oneDNN
"""
