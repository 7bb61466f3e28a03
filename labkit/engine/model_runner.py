"""Turn a scheduled batch into tensors, run the model over the paged KV cache, sample.

The KV cache is preallocated once, a key and a value tensor per layer, in the shape the
attention path asks for: `--attention plain` (plain_attention.py) keeps lab 20's and vLLM's
[num_blocks, block_size, num_kv_heads, head_dim]; `--attention fast` (fast/) a head-major
[num_kv_heads, num_blocks, block_size, head_dim] that suits its CPU matmuls. Nothing is
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

The attention path writes the new K/V into the cache, then reads each sequence's context
through its block table. Both paths take the same inputs (the decodes' and prefill
chunks' block tables and lengths) and give the same tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from labkit.engine.config import EngineConfig
from labkit.engine.fast.backend import FastAttention
from labkit.engine.llama import LlamaModel
from labkit.engine.plain_attention import PlainAttention
from labkit.engine.sampler import sample
from labkit.engine.scheduler import ScheduledBatch


@dataclass
class StepInputs:
    input_ids: object  # long [num_tokens] on the model's device
    positions: object  # long [num_tokens]
    attn: object  # the attention path's metadata: slot mapping, tables, masks; built once per
    #               step, used by every layer
    logits_indices: object  # long [len(sample_seqs)]: rows whose next token we sample
    sample_seqs: list  # sequences that get a new token this step


# A step with at least this many prefill tokens runs on prefill_threads (see ModelRunner).
PREFILL_THREADS_MIN_TOKENS = 64
ATTENTION_PATHS = {"plain": PlainAttention, "fast": FastAttention}  # EngineConfig.attention


class ModelRunner:
    def __init__(self, config: EngineConfig, num_blocks: int, block_size: int):
        import torch

        self.device = torch.device(config.device)
        self.threads = self.prefill_threads = None
        if self.device.type == "cpu":
            # Every core, decode steps too: with packed weights a step's matmuls split well
            # over two threads (the measurements: benchmarks/README.md, "oneDNN-packed").
            cores = os.cpu_count() or 2
            self.threads = config.num_threads or cores
            # Prefill chunks are big matmuls (tens of milliseconds) that split well across
            # threads, and a server with nothing to stream meanwhile (nobody's next token
            # exists until the step ends): --num-threads 1 still prefills on every core.
            self.prefill_threads = config.prefill_threads or max(self.threads, cores)
            torch.set_num_threads(self.threads)
        self.model = LlamaModel(config.model, config.device, config.resolved_dtype,
                                config.max_model_len, config.cpu_gemm)
        self.block_size = block_size
        m = self.model
        self.attention = ATTENTION_PATHS[config.attention](num_blocks, m.num_layers, block_size)
        shape = (m.num_layers, *self.attention.cache_shape(num_blocks, block_size,
                                                           m.num_kv_heads, m.head_dim))
        # One allocation for the whole cache, all layers: the memory a server reserves at
        # start-up (vLLM sizes it from --gpu-memory-utilization; we from --kv-cache-tokens).
        self.key_cache = torch.zeros(shape, dtype=m.dtype, device=self.device)
        self.value_cache = torch.zeros(shape, dtype=m.dtype, device=self.device)
        self.scale = m.head_dim**-0.5

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

        attn = self.attention.build(t(slots), decodes, prefills, self.device)
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
            return self.attention.attend(q, k, v, self.key_cache[layer],
                                         self.value_cache[layer], x.attn, self.scale, layer)

        with torch.inference_mode():
            logits = self.model.forward(x.input_ids, x.positions, attend, x.logits_indices)
            if not x.sample_seqs:  # only mid-prompt chunks: the cache is filled, nothing to sample
                return [], []
            return x.sample_seqs, sample(logits, x.sample_seqs)
