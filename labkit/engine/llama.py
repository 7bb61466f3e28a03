"""The Llama architecture in plain torch, reading a Hugging Face checkpoint's weights.

Per layer, for the flattened tokens of the whole batch ([num_tokens, hidden]):

    x = h + attention(rms_norm(h))          attention: q,k,v projections, RoPE on q and k,
    h = x + mlp(rms_norm(x))                grouped-query attention through the paged KV
                                            cache, output projection
    mlp(x) = down(silu(gate(x)) * up(x))    SwiGLU

Every formula follows transformers' LlamaForCausalLM so greedy outputs agree token for
token: RMSNorm computed in float32, RoPE with rotate_half and cos/sin from rope_theta,
softmax scale head_dim ** -0.5. Two engine tricks that do not change the maths:
- q, k, v projections are fused into one matmul (one weight [q|k|v]), gate and up too:
  fewer, bigger matmuls, which is what makes small batches fast on CPU. Weights are kept
  transposed, [in, out], so every projection is a plain `x @ W` (on a CPU, through a copy
  packed once for oneDNN's kernel: cpu_gemm.py).
- tokens are a flat list with positions, not a padded [batch, seq] grid, so a prefill
  chunk of 300 tokens and 31 one-token decodes share one forward pass without padding.
The attention op itself lives outside (model_runner.py): the model does not know about
block tables.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from labkit.engine.fast.cpu_gemm import make_linear
from labkit.errors import UserError


class LlamaModel:
    def __init__(self, model_dir: str, device: str = "cpu", dtype: str = "auto",
                 max_positions: int | None = None, cpu_gemm: str = "onednn"):
        import torch

        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        self.cfg = cfg
        self.num_layers = cfg["num_hidden_layers"]
        self.num_heads = cfg["num_attention_heads"]
        self.num_kv_heads = cfg.get("num_key_value_heads", self.num_heads)
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // self.num_heads
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise UserError(f"{model_dir}: attention/MLP biases are not supported by the "
                            "teaching engine (Llama, Mistral and Qwen3-style models have none)")
        name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
        self.dtype = getattr(torch, name if dtype == "auto" else dtype)
        self.device = torch.device(device)
        w = load_safetensors(model_dir)

        def get(key):
            return w.pop(key).to(self.device, self.dtype)

        def linear(*keys):
            # HF stores a linear layer as [out, in] and computes x @ W.T. We store W.T once,
            # contiguous ([in, out]): MKL's small-batch matmuls run up to 2x faster that way.
            # On a CPU, make_linear also packs it for oneDNN (cpu_gemm.py).
            return make_linear(torch.cat([get(k) for k in keys]).T.contiguous(), cpu_gemm)

        self.embed = get("model.embed_tokens.weight")
        self.layers = []
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            self.layers.append({
                "input_norm": get(p + "input_layernorm.weight"),
                "qkv": linear(*(p + f"self_attn.{x}_proj.weight" for x in "qkv")),
                "o": linear(p + "self_attn.o_proj.weight"),
                "post_norm": get(p + "post_attention_layernorm.weight"),
                "gate_up": linear(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"),
                "down": linear(p + "mlp.down_proj.weight"),
            })
        self.norm = get("model.norm.weight")
        # Tied embeddings (small models): the output head reuses the input embedding.
        self.lm_head = (linear("lm_head.weight") if "lm_head.weight" in w
                        else make_linear(self.embed.T.contiguous(), cpu_gemm))
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.inter = self.layers[0]["gate_up"].weight.shape[1] // 2
        n = max_positions or cfg.get("max_position_embeddings", 2048)
        self.cos, self.sin = rope_cos_sin(cfg, self.head_dim, n, self.device)

    def forward(self, input_ids, positions, attention, logits_indices):
        """input_ids, positions: int [num_tokens]. attention(layer, q, k, v) -> out, with
        q [T, H, D], k and v [T, Hkv, D]. Returns float32 logits [len(logits_indices), vocab]
        for the positions whose next token we sample (the last token of each sequence)."""
        import torch.nn.functional as F

        T = input_ids.shape[0]
        h = self.embed[input_ids]
        cos, sin = self.cos[positions].to(h.dtype), self.sin[positions].to(h.dtype)
        for i, L in enumerate(self.layers):
            x = rms_norm(h, L["input_norm"], self.eps)
            qkv = L["qkv"](x)
            # RoPE rotates q and k alike: one call over their H + Hkv heads together.
            qk = apply_rope(qkv[:, : self.q_size + self.kv_size].view(T, -1, self.head_dim), cos, sin)
            q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
            v = qkv[:, self.q_size + self.kv_size :].view(T, self.num_kv_heads, self.head_dim)
            o = attention(i, q, k, v)
            h = h + L["o"](o.reshape(T, self.q_size))
            x = rms_norm(h, L["post_norm"], self.eps)
            gate_up = L["gate_up"](x)
            h = h + L["down"](F.silu(gate_up[:, : self.inter]) * gate_up[:, self.inter :])
        h = rms_norm(h[logits_indices], self.norm, self.eps)
        return self.lm_head(h).float()


def rms_norm(x, weight, eps):
    """x / sqrt(mean(x²) + eps) * weight, computed in float32 like transformers' LlamaRMSNorm."""
    import torch
    import torch.nn.functional as F

    if x.dtype == torch.float32:  # the same formula as one fused op (bit-identical here)
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def apply_rope(x, cos, sin):
    """Rotary embedding, HF layout: rotate the first and second halves of head_dim as pairs.
    x [T, heads, D]; cos, sin [T, D] (each frequency appears twice: cat(freqs, freqs))."""
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # rotate_half
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def rope_cos_sin(cfg: dict, head_dim: int, max_positions: int, device):
    """cos/sin tables [max_positions, head_dim] in float32, as transformers computes them.

    Default RoPE: position p, pair i rotates by angle p * theta ** (-2i / head_dim).
    rope_theta sits at the top of config.json in older checkpoints and inside
    `rope_parameters` (transformers 5) or `rope_scaling` in newer ones; other RoPE types
    (llama3, yarn, linear) are computed by transformers' own initialiser.
    """
    import torch

    params = dict(cfg.get("rope_scaling") or {})
    params.update(cfg.get("rope_parameters") or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = 1.0
    if rope_type == "default":
        exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        inv_freq = 1.0 / (theta**exponent)
    elif rope_type in ("llama3", "linear", "yarn", "longrope"):
        from transformers import AutoConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        hf_cfg = AutoConfig.for_model(**cfg)
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_cfg, "cpu")
    else:
        raise UserError(f"RoPE type {rope_type!r} is not supported by the teaching engine")
    positions = torch.arange(max_positions, dtype=torch.float32)
    freqs = positions[:, None] * inv_freq.float()[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(device), (emb.sin() * scaling).to(device)


def load_safetensors(model_dir: str) -> dict:
    """All tensors of model.safetensors (or of every shard of a sharded checkpoint)."""
    from safetensors.torch import load_file

    files = sorted(glob.glob(str(Path(model_dir) / "*.safetensors")))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights found (pytorch_model.bin "
                        "checkpoints are not supported; convert with safetensors)")
    weights = {}
    for f in files:
        weights.update(load_file(f))
    return weights
