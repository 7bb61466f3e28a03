"""The engine: a loop of steps. Each step = schedule → run the model → sample → append → finish.

    engine = LLMEngine(EngineConfig(model=path))
    engine.add_request([0, 512, 77], SamplingParams(max_tokens=8, temperature=0))
    while engine.has_unfinished():
        for out in engine.step():      # RequestOutput: new tokens and text of one request
            print(out.request_id, repr(out.new_text), out.finish_reason)

A request finishes on the first of: its end-of-sequence token (unless ignore_eos), one of
its stop token ids or stop strings, max_tokens generated, or max_model_len reached.
Stop strings are cut from the text, so while a request runs the last len(stop) − 1
characters are held back: they might be the start of a stop string (vLLM does the same).

The engine is single-threaded and knows nothing about HTTP: engine_core.py runs it in a
process of its own, and the server talks to that process (async_engine.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from labkit.engine.config import EngineConfig
from labkit.engine.fault import FaultFile
from labkit.engine.model_runner import ModelRunner
from labkit.engine.scheduler import Scheduler
from labkit.engine.sequence import SamplingParams, Sequence
from labkit.kvcache.hash_cache import HashPrefixCache
from labkit.kvcache.prefix_cache import NoPrefixCache
from labkit.kvcache.radix_cache import RadixPrefixCache


@dataclass
class RequestOutput:
    """What one step produced for one request (a streaming server sends it as one chunk)."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or stop token that matched
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    # Timestamps (time.monotonic, one clock for every process on the machine) from which
    # prometheus_metrics.py derives vLLM's latency histograms, wherever the outputs are consumed.
    time: float = 0.0  # when this step's tokens were sampled
    prev_token_time: float | None = None  # the previous token's time; None: first token
    arrival_time: float = 0.0
    queued_time: float | None = None
    scheduled_time: float | None = None
    first_token_time: float | None = None


def check_request(config: EngineConfig, num_prompt_tokens: int, params: SamplingParams) -> SamplingParams:
    """Raise ValueError (the server answers HTTP 400) for a request that can never run;
    return its params with max_tokens cut so the output stops at max_model_len."""
    n, limit = num_prompt_tokens, config.max_model_len
    if n == 0:
        raise ValueError("the prompt is empty")
    if n >= limit:
        raise ValueError(f"this model's maximum context length is {limit} tokens; the "
                         f"prompt has {n}, leaving no room for output")
    params = dataclasses.replace(params, max_tokens=min(params.max_tokens, limit - n))
    capacity = config.kv_capacity_tokens
    if n + params.max_tokens > capacity:
        raise ValueError(f"prompt + max_tokens = {n + params.max_tokens} tokens exceed the "
                         f"whole KV cache ({capacity} tokens); lower max_tokens or start the "
                         "server with more --kv-cache-tokens")
    return params


def make_prefix_cache(kind: str, capacity_tokens: int, block_size: int, radix_evict: str = "leaf"):
    """The KV storage and its prefix index (labkit.kvcache): one object, three designs."""
    if kind == "radix":
        return RadixPrefixCache(capacity_tokens, radix_evict)  # page size 1: token-granular hits
    if kind == "hash":
        return HashPrefixCache(capacity_tokens, block_size)
    return NoPrefixCache(capacity_tokens, block_size)


class LLMEngine:
    def __init__(self, config: EngineConfig):
        from transformers import AutoTokenizer

        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.model, local_files_only=True)
        self._backend = self.tokenizer.backend_tokenizer  # Rust tokenizer: fast stream decode
        self.eos_token_ids = _eos_token_ids(config.model, self.tokenizer)
        self.cache = make_prefix_cache(config.prefix_cache, config.kv_cache_tokens, config.block_size,
                                       config.radix_evict)
        pool = self.cache.pool
        self.runner = ModelRunner(config, pool.num_blocks, pool.block_size)
        self.scheduler = Scheduler(self.cache, config.max_num_seqs,
                                   config.max_num_batched_tokens, config.policy,
                                   config.in_batch_prefix_caching)
        self.sequences: dict[str, Sequence] = {}  # unfinished requests by id
        self.fault = FaultFile(config.fault_file) if config.fault_file else None

    # -- requests in ------------------------------------------------------------------------
    def add_request(self, prompt_token_ids: list[int], params: SamplingParams,
                    request_id: str | None = None, arrival_time: float | None = None) -> Sequence:
        """Queue a request. Raises ValueError (the server answers HTTP 400) if it cannot fit."""
        seq = self.make_sequence(prompt_token_ids, params, request_id, arrival_time)
        self.add_sequence(seq)
        return seq

    def make_sequence(self, prompt_token_ids: list[int], params: SamplingParams,
                      request_id: str | None = None, arrival_time: float | None = None) -> Sequence:
        """Check a request and wrap it in a Sequence without touching engine state, so the
        HTTP thread can call it and answer 400 at once. Raises ValueError."""
        from tokenizers.decoders import DecodeStream

        params = check_request(self.config, len(prompt_token_ids), params)
        seq = Sequence(request_id or uuid.uuid4().hex, prompt_token_ids, params,
                       time.monotonic() if arrival_time is None else arrival_time)
        seq.decoder = DecodeStream(skip_special_tokens=True)
        return seq

    def add_sequence(self, seq: Sequence) -> None:
        """Put a checked Sequence in the waiting queue (engine thread only)."""
        self.sequences[seq.request_id] = seq
        self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Drop a request (its client went away). Returns its final output, or None if the
        engine does not know it (already finished)."""
        seq = self.scheduler.abort(request_id)
        if seq is None:
            return None
        self.sequences.pop(request_id, None)
        return self._output(seq, [], "", time.monotonic())

    def stats(self) -> dict:
        """Scheduler state for the gauges and counters of prometheus_metrics.py (vLLM's SchedulerStats)."""
        s = self.scheduler
        return {"running": len(s.running), "waiting": len(s.waiting),
                "kv_cache_usage": s.kv_cache_usage(), "preemptions": s.num_preemptions,
                "prefix_cache_queries": s.prefix_cache_queries,
                "prefix_cache_hits": s.prefix_cache_hits}

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- one step -------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        outputs = []
        if batch.seqs and self.fault:
            self.fault.before_step()  # a drill's injected slowness (off unless --fault-file)
        if batch.seqs:
            seqs, tokens = self.runner.run(batch)
            now = time.monotonic()
            self.scheduler.update_after_step(batch)
            for seq, token in zip(seqs, tokens):
                outputs.append(self._append(seq, token, now))
        return outputs

    def _append(self, seq: Sequence, token: int, now: float) -> RequestOutput:
        seq.output_token_ids.append(token)
        prev_token_time = seq.last_token_time
        if seq.first_token_time is None:
            seq.first_token_time = now
        seq.last_token_time = now
        piece = seq.decoder.step(self._backend, token) or ""
        seq.output_text += piece
        reason = self._stop_reason(seq, token, piece)
        if reason:
            self.scheduler.finish(seq, reason)
            self.sequences.pop(seq.request_id, None)
        # Text the client may see now: everything once finished, else hold back what could
        # still turn out to be the start of a stop string.
        hold = 0 if seq.is_finished else max((len(s) for s in seq.params.stop), default=1) - 1
        visible = max(seq.num_text_sent, len(seq.output_text) - hold)
        new_text = seq.output_text[seq.num_text_sent : visible]
        seq.num_text_sent = visible
        return self._output(seq, [token], new_text, now, prev_token_time)

    def _output(self, seq, tokens, text, now, prev_token_time=None) -> RequestOutput:
        return RequestOutput(
            seq.request_id, tokens, text, seq.is_finished, seq.finish_reason, seq.stop_reason,
            seq.num_prompt_tokens, seq.num_output_tokens, seq.num_cached_tokens, now,
            prev_token_time, seq.arrival_time, seq.queued_time, seq.scheduled_time,
            seq.first_token_time)

    def _stop_reason(self, seq: Sequence, token: int, piece: str) -> str | None:
        p = seq.params
        if token in self.eos_token_ids and not p.ignore_eos:
            return "stop"
        if token in p.stop_token_ids:
            seq.stop_reason = token
            return "stop"
        if p.stop and piece:
            # Only a stop string that ends inside the new piece can be new.
            text = seq.output_text
            start = max(0, len(text) - len(piece) - max(len(s) for s in p.stop) + 1)
            found = [(i, s) for s in p.stop if (i := text.find(s, start)) != -1]
            if found:
                i, s = min(found)
                seq.output_text, seq.stop_reason = text[:i], s
                return "stop"
        if seq.num_output_tokens >= p.max_tokens or seq.num_tokens >= self.config.max_model_len:
            return "length"
        return None

    # -- offline convenience --------------------------------------------------------------
    def generate(self, prompts: list, params: SamplingParams | list[SamplingParams]) -> list[dict]:
        """Run prompts (strings or token id lists) to completion. Returns, in order, dicts
        with token_ids, text, finish_reason, num_cached_tokens."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        ids = []
        for prompt, p in zip(prompts, params):
            tokens = self.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else prompt
            ids.append(self.add_request(list(tokens), p).request_id)
        results = {i: {"token_ids": [], "text": ""} for i in ids}
        while self.has_unfinished():
            for out in self.step():
                r = results[out.request_id]
                r["token_ids"] += out.new_token_ids
                r["text"] += out.new_text
                if out.finished:
                    r["finish_reason"] = out.finish_reason
                    r["num_cached_tokens"] = out.num_cached_tokens
        return [results[i] for i in ids]


def _eos_token_ids(model_dir: str, tokenizer) -> set[int]:
    """generation_config.json's eos_token_id (an int or a list: Llama 3 has several), else
    config.json's, else the tokenizer's."""
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            if eos is not None:
                return set(eos) if isinstance(eos, list) else {eos}
    return {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
