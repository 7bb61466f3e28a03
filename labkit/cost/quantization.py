"""Quantization: what it saves in memory (arithmetic, exact) and in time (modelled on the
CPU tier from published figures, measured only on a GPU).

Memory is arithmetic, so it is computed, never modelled:

    weights  = parameters × bytes per weight        (bf16 2, FP8/INT8 1, INT4 0.5)
    KV cache = 2 (K and V) × layers × kv_heads × head_dim × bytes × tokens

Speed-ups are hardware behaviour. FP8 W8A8 needs tensor cores of compute capability ≥ 8.9
(H100, H200, L40S, L4); a CPU has none, so on the CPU tier the speed-up is **modelled** from
the published figures below, and every page that shows it says "modelled". On the GPU tier
lab 23 measures vLLM with `--quantization fp8` instead.
"""

from __future__ import annotations

from labkit.errors import UserError

BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp32": 4.0}

# Published speed-ups against FP16/BF16 on H100 (FIELD_NOTES; re-check before quoting):
PUBLISHED = {
    "fp8": {"speedup_low": 1.39, "speedup_high": 1.66, "accuracy_loss_pct": 0.46,
            "source": "TensorRT Model Optimizer benchmark.md, Llama3-8B on H100 (FP8 vs FP16); "
                      "MMLU loss 0.46 %"},
    "int4": {"speedup_low": 1.0, "speedup_high": 3.71, "accuracy_loss_pct": 4.60,
             "source": "TensorRT Model Optimizer benchmark.md, INT4 AWQ up to 3.71x; MMLU "
                       "loss 4.60 % (Llama3-8B)"},
}


def weight_bytes(parameters: float, dtype: str) -> float:
    return parameters * _bytes(dtype)


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype: str = "bf16") -> float:
    return 2 * layers * kv_heads * head_dim * _bytes(dtype)


def _bytes(dtype: str) -> float:
    if dtype not in BYTES:
        raise UserError(f"unknown dtype {dtype!r}; known: {', '.join(BYTES)}")
    return BYTES[dtype]


def kv_tokens_that_fit(gpu_gib: float, parameters: float, weight_dtype: str, layers: int,
                       kv_heads: int, head_dim: int, kv_dtype: str = "bf16",
                       utilisation: float = 0.9) -> int:
    """KV tokens left once the weights are loaded (vLLM's gpu_memory_utilization share)."""
    free = gpu_gib * 2**30 * utilisation - weight_bytes(parameters, weight_dtype)
    return max(0, int(free // kv_bytes_per_token(layers, kv_heads, head_dim, kv_dtype)))


def modelled_capacity(measured_tok_s: float, scheme: str, bound: str = "low") -> dict:
    """Capacity with `scheme` *modelled* from a measured bf16 capacity and a published factor."""
    if scheme not in PUBLISHED:
        raise UserError(f"no published speed-up for {scheme!r}; known: {', '.join(PUBLISHED)}")
    p = PUBLISHED[scheme]
    factor = p["speedup_low"] if bound == "low" else p["speedup_high"]
    return {"scheme": scheme, "tok_s": measured_tok_s * factor, "factor": factor,
            "kind": "modelled", "source": p["source"],
            "accuracy_loss_pct": p["accuracy_loss_pct"]}
