"""The tiny Llama model every CPU-tier lab uses, built offline from local text.

    from labkit.models import build_tiny_llama
    path = build_tiny_llama()          # builds once (~seconds), then found in the cache
    # transformers: AutoModelForCausalLM.from_pretrained(path)
    # vLLM:         python -m vllm.entrypoints.openai.api_server --model <path> ...

Modules: corpus (stdlib sources -> documents, token batches), tokenizer (byte-level BPE),
tiny_llama (config + random init + save), cache (where builds live, atomic publish),
info (parameter count and sizes), cli (`labkit model build|info`).
"""

from labkit.models.tiny_llama import TinyLlamaConfig, build_tiny_llama

__all__ = ["TinyLlamaConfig", "build_tiny_llama"]
