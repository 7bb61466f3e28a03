"""The fast path behind `--attention fast`: the same contract as plain_attention.py.

What it adds (each in its own file, each measured in benchmarks/README.md):
- a head-major cache, [num_kv_heads, num_blocks, block_size, head_dim], so a gathered batch
  is one contiguous [tokens, head_dim] matrix per (head, sequence) and decode scores are
  plain batched matmuls (attention.py);
- cascade attention: a prefix several decodes share is read once for all of them, and the
  two partial softmaxes are merged exactly (shared_prefix.py);
- gather buffers kept across steps: a decode appends its one new token to last step's
  gathered rows instead of gathering its whole context again (workspace.py);
- weights packed once for oneDNN (cpu_gemm.py; chosen in config.py with the switch).
"""

from __future__ import annotations

from labkit.engine.fast.attention import attention, build_metadata
from labkit.engine.fast.workspace import Workspace


class FastAttention:
    name = "fast"

    def __init__(self, num_blocks: int, num_layers: int, block_size: int):
        self.block_size, self.num_layers = block_size, num_layers
        self.workspace = Workspace(max_keep_tokens=num_blocks * block_size)

    @staticmethod
    def cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int):
        return (num_kv_heads, num_blocks, block_size, head_dim)

    def build(self, slot_mapping, decodes: list, prefills: list, device):
        return build_metadata(slot_mapping, decodes, prefills, self.block_size, device,
                              self.workspace, num_layers=self.num_layers)

    def attend(self, q, k, v, key_cache, value_cache, meta, scale: float, layer: int = 0):
        return attention(q, k, v, key_cache, value_cache, meta, scale, layer)
