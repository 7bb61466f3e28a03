"""Turn a scheduled batch into tensors, run the model over the paged KV cache, sample.

The KV cache is preallocated once: per layer a key and a value tensor of shape
[num_kv_heads, num_blocks, block_size, head_dim] (vLLM's is [num_blocks, block_size,
num_kv_heads, head_dim]; head-major suits the CPU matmuls of attention.py). Nothing is
allocated per request; a request only owns block ids, listed in its block table.

For one step the runner flattens every scheduled sequence's new tokens into one list
(vLLM's "varlen" batch) and builds, once for all layers:

    input_ids, positions     the new tokens and where they sit in their sequence
    slot_mapping             flat cache slot each new token's K/V is written to:
                             block_table[pos // block_size] * block_size + pos % block_size
    attention metadata       per sequence, which blocks hold its context and how long it
                             is (attention.py), built once and shared by every layer
    logits_indices           which rows produce a next token: the last new token of each
                             sequence whose tokens are now all computed (a prefill chunk
                             that stops mid-prompt samples nothing)

Attention (attention.py) writes the new K/V into the cache, then reads each sequence's
context through its block table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from labkit.engine.attention import AttentionMetadata, attention, build_metadata
from labkit.engine.workspace import Workspace
from labkit.engine.llama import LlamaModel
from labkit.engine.sampler import sample
from labkit.engine.scheduler import ScheduledBatch


@dataclass
class StepInputs:
    input_ids: object  # long [num_tokens] on the model's device
    positions: object  # long [num_tokens]
    attn: AttentionMetadata  # slot mapping, what to gather, masks: built once, used by every layer
    logits_indices: object  # long [len(sample_seqs)]: rows whose next token we sample
    sample_seqs: list  # sequences that get a new token this step


# A step with at least this many prefill tokens runs on prefill_threads (see ModelRunner).
PREFILL_THREADS_MIN_TOKENS = 64


class ModelRunner:
    def __init__(self, model_dir: str, num_blocks: int, block_size: int, device: str = "cpu",
                 dtype: str = "auto", max_model_len: int | None = None,
                 num_threads: int | None = None, prefill_threads: int | None = None,
                 cpu_gemm: str = "onednn"):
        import torch

        self.device = torch.device(device)
        self.threads = self.prefill_threads = None
        if self.device.type == "cpu":
            # Every core, decode steps too. Until the matmuls went through oneDNN-packed
            # weights (cpu_gemm.py) one core was left to the HTTP server, as vLLM's CPU worker
            # does: a second MKL thread bought little at 8-row matmuls. Packed, the matmuls of
            # a step run 1.4-1.8x faster on two threads; a whole C = 8 closed loop 1.33x
            # in-process, 1.08-1.10x served, where the server's bursts after each step take
            # the second core (2-vCPU VM, benchmarks/README.md).
            cores = os.cpu_count() or 2
            self.threads = num_threads or cores
            # Prefill chunks are big matmuls (tens of milliseconds) that split well across
            # threads, and a server with nothing to stream meanwhile (nobody's next token
            # exists until the step ends): --num-threads 1 still prefills on every core.
            self.prefill_threads = prefill_threads or max(self.threads, cores)
            torch.set_num_threads(self.threads)
        self.model = LlamaModel(model_dir, device, dtype, max_model_len, cpu_gemm)
        self.block_size = block_size
        m = self.model
        # Head-major per layer, [Hkv, blocks, block_size, D]: see attention.py.
        shape = (m.num_layers, m.num_kv_heads, num_blocks, block_size, m.head_dim)
        # One allocation for the whole cache, all layers: the memory a server reserves at
        # start-up (vLLM sizes it from --gpu-memory-utilization; we from --kv-cache-tokens).
        self.key_cache = torch.zeros(shape, dtype=m.dtype, device=self.device)
        self.value_cache = torch.zeros(shape, dtype=m.dtype, device=self.device)
        self.scale = m.head_dim**-0.5
        self.workspace = Workspace(max_keep_tokens=num_blocks * block_size)

    @property
    def kv_cache_bytes(self) -> int:
        return 2 * self.key_cache.numel() * self.key_cache.element_size()

    def prepare(self, batch: ScheduledBatch) -> StepInputs:
        """Python lists -> tensors, decodes first. Decodes take a one-token fast path;
        prefill chunks use numpy for the slot arithmetic (no Python loop per token)."""
        import torch

        bs = self.block_size
        order = sorted(range(len(batch)), key=lambda i: batch.num_new_tokens[i] != 1)
        input_ids, positions, slots = [], [], []
        decodes, prefills, logits_indices, sample_seqs = [], [], [], []
        for i in order:
            seq, n = batch.seqs[i], batch.num_new_tokens[i]
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            table = seq.block_table
            if n == 1:  # a decode (or a one-token chunk): attends to `end` tokens
                input_ids.append(seq.token_at(start))
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
                decodes.append((table, end, seq.request_id))
            else:
                prefills.append((len(input_ids), n, table, end))
                input_ids.extend(seq.token_ids(start, end))
                pos = np.arange(start, end)
                positions.extend(pos.tolist())
                slots.extend((np.asarray(table)[pos // bs] * bs + pos % bs).tolist())
            if end == seq.num_tokens:  # every token computed: the last one predicts the next
                logits_indices.append(len(input_ids) - 1)
                sample_seqs.append(seq)

        def t(x):
            return torch.as_tensor(x, dtype=torch.long).to(self.device, non_blocking=True)

        attn = build_metadata(t(slots), decodes, prefills, bs, self.device, self.workspace,
                              num_layers=self.model.num_layers)
        return StepInputs(t(input_ids), t(positions), attn, t(logits_indices), sample_seqs)

    def run(self, batch: ScheduledBatch) -> tuple[list, list[int]]:
        """One forward pass for the whole batch. Returns (sequences that got a token, tokens)."""
        import torch

        x = self.prepare(batch)
        prefilling = sum(n for n in batch.num_new_tokens if n > 1) >= PREFILL_THREADS_MIN_TOKENS
        threads = self.prefill_threads if prefilling else self.threads
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)  # cheap: the thread pool stays, fewer join in

        def attend(layer, q, k, v):
            return attention(q, k, v, self.key_cache[layer], self.value_cache[layer], x.attn,
                             self.scale, layer)

        with torch.inference_mode():
            logits = self.model.forward(x.input_ids, x.positions, attend, x.logits_indices)
            if not x.sample_seqs:  # only mid-prompt chunks: the cache is filled, nothing to sample
                return [], []
            return x.sample_seqs, sample(logits, x.sample_seqs)
