"""Build a tiny Llama-architecture checkpoint in Hugging Face format, offline.

The same directory layout as any model on the Hugging Face Hub, so every engine that
loads `meta-llama/...` loads this too (`--model PATH` instead of a model id):

    config.json              architecture: LlamaForCausalLM, sizes, rope, special token ids
    generation_config.json   bos/eos/pad for `generate` and vLLM's defaults
    model.safetensors        the weights (float32 by default: see TinyLlamaConfig.dtype)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
    labkit_build.json        how it was built (seed, corpus, parameter count)

Default sizes, ~5.2M parameters: hidden 256, 4 layers, 4 query heads of head_dim 64 sharing
2 KV heads (grouped-query attention, as in Llama 2 70B / Llama 3), SwiGLU MLP of 768.
Weights are random (torch.manual_seed(seed)) until the distributed-training lab trains
them, so its text is gibberish, but every engine must produce the *same* gibberish: the
labs compare engines token for token.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.errors import UserError
from labkit.models import cache, corpus
from labkit.models.tokenizer import BOS, EOS, PAD, save_tokenizer, train_tokenizer

BUILDER_VERSION = 1  # bump when the build recipe changes: new cache keys, no stale reuse
NAME = "tiny-llama"


@dataclass(frozen=True)
class TinyLlamaConfig:
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # head_dim = 256 / 4 = 64, a size every attention kernel has
    num_key_value_heads: int = 2  # GQA: 2 query heads share each K/V head -> half the KV cache
    intermediate_size: int = 768  # SwiGLU width ~ 8/3 * hidden, rounded up to a multiple of 256
    max_position_embeddings: int = 2048
    vocab_size: int = 4096  # target for BPE training; the model uses what the tokenizer has
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False  # separate lm_head, like Llama 2 7B
    initializer_range: float = 0.02
    # float32: vLLM's CPU build serves it on any x86/ARM CPU, and transformers and vLLM
    # then agree on greedy tokens (bfloat16's rounding can flip near-tied argmaxes).
    dtype: str = "float32"
    corpus_max_bytes: int = corpus.DEFAULT_MAX_BYTES

    def __post_init__(self):
        assert self.hidden_size % self.num_attention_heads == 0, "hidden_size % heads != 0"
        assert self.num_attention_heads % self.num_key_value_heads == 0, "heads % kv_heads != 0"
        assert self.dtype in ("float32", "bfloat16", "float16"), f"unknown dtype {self.dtype}"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def build_tiny_llama(out_dir: str | Path | None = None, seed: int = 0,
                     config: TinyLlamaConfig | None = None, force: bool = False,
                     verbose: bool = True) -> Path:
    """Build the tiny Llama (or find it already built) and return its directory.

    out_dir=None uses the cache: `<cache root>/models/tiny-llama-<key>/` (see
    `labkit.models.cache.cache_root`, overridable with $LABKIT_CACHE_DIR). A build whose
    recorded key matches is reused; force=True rebuilds and swaps it in atomically.
    """
    config = config or TinyLlamaConfig()
    log = _logger(verbose)
    docs = corpus.load_corpus(config.corpus_max_bytes)
    spec = {"name": NAME, "builder_version": BUILDER_VERSION, "seed": seed,
            "config": asdict(config), "corpus_digest": corpus.corpus_digest(docs)}
    key = cache.cache_key(spec)
    target = (Path(out_dir).expanduser().resolve() if out_dir is not None
              else cache.cache_root() / "models" / f"{NAME}-{key}")

    found = cache.read_marker(target)
    if found is not None and found.get("key") == key and not force:
        log(f"found cached build {target}")
        return target
    if target.exists() and any(target.iterdir()):
        if found is None:
            raise UserError(f"{target} exists and is not a labkit model build; "
                            "choose another --out or remove that directory yourself")
        if not force:
            raise UserError(f"{target} holds a different build (seed {found.get('seed')}, "
                            f"key {found.get('key')}, want {key}); pass --force to replace "
                            "it or choose another --out")

    t0 = time.perf_counter()
    tmp = cache.make_temp_dir(target)
    try:
        _build_into(tmp, docs, spec, key, config, seed, log)
        won = cache.publish(tmp, target, replace=force)
    except BaseException:  # also Ctrl-C: never leave the temp dir behind
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"built {target} in {time.perf_counter() - t0:.1f} s" if won else
        f"another process finished {target} first; using it")
    return target


def _build_into(tmp: Path, docs, spec: dict, key: str, config: TinyLlamaConfig,
                seed: int, log) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    t = time.perf_counter()
    n_bytes = sum(len(d.text.encode()) for d in docs)
    tok = train_tokenizer((d.text for d in docs), vocab_size=config.vocab_size)
    save_tokenizer(tok, tmp, model_max_length=config.max_position_embeddings)
    log(f"trained BPE tokenizer: {tok.get_vocab_size()} tokens from {len(docs)} stdlib files "
        f"({n_bytes / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")

    hf_config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),  # exactly the tokenizer's size: no unused rows
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rope_theta=config.rope_theta,
        rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=config.tie_word_embeddings,
        initializer_range=config.initializer_range,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD),
    )
    dtype = getattr(torch, config.dtype)
    torch.manual_seed(seed)  # the only randomness: the initial weights
    model = LlamaForCausalLM(hf_config).to(dtype)
    hf_config.dtype = config.dtype
    hf_config.architectures = ["LlamaForCausalLM"]  # engines pick their model class by this
    hf_config.save_pretrained(tmp)
    GenerationConfig(bos_token_id=hf_config.bos_token_id, eos_token_id=hf_config.eos_token_id,
                     pad_token_id=hf_config.pad_token_id).save_pretrained(tmp)

    # safetensors = a JSON header (name -> dtype, shape, byte offsets) then raw bytes; it
    # loads without executing code, unlike pickle. Same tensors -> same bytes.
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")  # HF convention: tied head is not stored twice
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    n_params = sum(v.numel() for v in state.values())
    log(f"initialised LlamaForCausalLM with seed {seed}: {n_params / 1e6:.2f}M parameters, "
        f"{config.dtype}")

    record = dict(spec, key=key, parameters=n_params, vocab_size=tok.get_vocab_size(),
                  corpus={"files": len(docs), "bytes": n_bytes, "first": docs[0].path,
                          "last": docs[-1].path,
                          "python": platform.python_version()})
    cache.write_marker(tmp, record)  # last: its presence means "complete"


def _logger(verbose: bool):
    def log(msg: str) -> None:
        if verbose:  # stderr: stdout of `labkit model build` carries only the path
            print(f"[labkit model] {msg}", file=sys.stderr, flush=True)
    return log
