"""What is in a model directory: parameters, shapes, bytes, and the KV cache per token.

Reads only config.json and the safetensors *header* (no torch import, no weights loaded),
so it is instant even for a large checkpoint.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from labkit.errors import UserError

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1}


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file: {name: {dtype, shape, data_offsets}}.

    File format: 8 bytes little-endian header length N, N bytes of JSON, then raw data.
    """
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def model_info(path: str | Path) -> dict:
    """Parameter count, sizes and attention geometry of a Hugging Face model directory."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json; pass a model directory such as the path "
                        "`labkit model build` prints")
    cfg = json.loads((path / "config.json").read_text())
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise UserError(f"{path} has no *.safetensors weights")
    tensors = {}
    for shard in shards:
        tensors.update(safetensors_header(shard))
    n_params = sum(_numel(t["shape"]) for t in tensors.values())
    weight_bytes = sum(_numel(t["shape"]) * DTYPE_BYTES[t["dtype"]] for t in tensors.values())
    dtypes = sorted({t["dtype"] for t in tensors.values()})

    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    elem = DTYPE_BYTES[dtypes[0]] if len(dtypes) == 1 else 2
    # Each token stores one K and one V vector per KV head in every layer.
    kv_bytes_per_token = 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * elem
    return {
        "path": str(path.resolve()),
        "architecture": (cfg.get("architectures") or ["?"])[0],
        "parameters": n_params,
        "weight_dtypes": dtypes,
        "weight_bytes": weight_bytes,
        "files": {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()},
        "hidden_size": cfg["hidden_size"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": cfg.get("intermediate_size"),
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg.get("max_position_embeddings"),
        "kv_cache_bytes_per_token": kv_bytes_per_token,
        "tensors": {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in tensors.items()},
    }


def format_info(info: dict) -> str:
    """Human-readable summary for `labkit model info`."""
    lines = [
        f"model       {info['path']}",
        f"arch        {info['architecture']}",
        f"parameters  {info['parameters']:,} ({info['parameters'] / 1e6:.2f}M)",
        f"weights     {info['weight_bytes'] / 2**20:.1f} MiB, {', '.join(info['weight_dtypes'])}",
        f"layers      {info['num_hidden_layers']}  hidden {info['hidden_size']}  "
        f"mlp {info['intermediate_size']}  vocab {info['vocab_size']}  "
        f"max positions {info['max_position_embeddings']}",
        f"attention   {info['num_attention_heads']} query heads, {info['num_key_value_heads']} "
        f"KV heads (GQA group {info['num_attention_heads'] // info['num_key_value_heads']}), "
        f"head_dim {info['head_dim']}",
        f"KV cache    {info['kv_cache_bytes_per_token']:,} bytes per token "
        f"(2 x layers x kv_heads x head_dim x dtype bytes)",
        "files:",
    ]
    lines += [f"  {name:<28}{size:>14,} bytes" for name, size in info["files"].items()]
    return "\n".join(lines)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
