"""Decode-sized matmuls on a CPU: pack each weight once, as vLLM's CPU backend does.

A decode step multiplies a handful of rows (one per running sequence) by every weight
matrix of the model. A BLAS sgemm (MKL, what `x @ W` calls) first copies W into the
blocked layout its inner kernel reads ("packing"), on every call. With hundreds of rows
that copy is amortised; with 8 rows it is about as much memory traffic as the multiply
itself, and memory traffic is what a decode step on a CPU is made of.

oneDNN (bundled with torch) can do that copy once: `_reorder_linear_weight` stores W in its
kernel's blocked layout at load time, and `_linear_pointwise` then streams the packed
weight straight into its kernel. vLLM's CPU worker does the same for every linear layer
(`create_onednn_mm` in vllm/model_executor/layers/utils.py). On the 2-vCPU dev VM the tiny
Llama's 17 matmuls of one step ran 1.2-1.3x faster at 4-32 rows on one thread, and 1.7-2.1x
on two, where `x @ W` gains little from the second thread (benchmarks/cpu_gemm.py).

Exceptions: a single row (batch of one) takes MKL's matrix-vector path, which packs nothing
and beats the packed kernel, so it keeps `x @ W`; and only float32 weights are packed (other
dtypes and other devices use `x @ W`). The results agree with `x @ W` to float32 rounding
(the sums are added in another order), not bit for bit.

The price is memory: each weight is held twice, packed and plain (for the one-row case).
Nothing for the tiny Llama (16 MiB more); for a 1B-parameter model in float32, 4 GiB more —
`--cpu-gemm torch` keeps one copy.
"""

from __future__ import annotations

CPU_GEMMS = ("onednn", "torch")
PACK_FOR_ROWS = 8  # oneDNN picks its blocking for this many rows; 8-64 measured the same


class Linear:
    """y = x @ W with W stored [in, out] (see llama.py)."""

    packed = None

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, x):
        return x @ self.weight


class PackedLinear(Linear):
    """y = x @ W through a oneDNN-packed copy of W (W kept for the one-row case)."""

    def __init__(self, weight):
        import torch

        super().__init__(weight)
        # oneDNN takes the weight as [out, in], like torch.nn.Linear.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.T.contiguous(), PACK_FOR_ROWS)

    def __call__(self, x):
        import torch

        if x.shape[0] == 1:
            return x @ self.weight
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


def can_pack(device, dtype) -> bool:
    """oneDNN packing applies: float32 weights on a CPU whose torch build has oneDNN."""
    import torch

    return (torch.device(device).type == "cpu" and dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def make_linear(weight, cpu_gemm: str = "onednn") -> Linear:
    """The matmul for one weight ([in, out]): packed for oneDNN where that applies."""
    if cpu_gemm not in CPU_GEMMS:
        raise ValueError(f"cpu_gemm must be one of {CPU_GEMMS}, not {cpu_gemm!r}")
    if cpu_gemm == "onednn" and can_pack(weight.device, weight.dtype):
        try:
            return PackedLinear(weight)
        except RuntimeError:  # a torch build whose oneDNN cannot pack this: stay correct
            pass
    return Linear(weight)
