"""`labkit model build` and `labkit model info`."""

from __future__ import annotations

import argparse
import json

MODEL_HELP = """\
The tiny model every CPU-tier lab uses: a Llama-architecture checkpoint (LlamaForCausalLM,
~5.2M parameters: 4 layers, hidden 256, 4 query heads of head_dim 64 sharing 2 KV heads,
vocabulary 4096) in Hugging Face format, with a byte-level BPE tokenizer trained on the
Python standard library's sources. Built offline in seconds; nothing is downloaded.
Weights are random from --seed until the distributed-training lab trains them: its text is
gibberish, but every engine must produce the same gibberish for the same prompt.
"""

BUILD_EPILOG = """\
The only thing printed on stdout is the model directory, so you can capture it:

  MODEL=$(labkit model build)
  labkit model build --seed 1 --out /tmp/tiny-llama-seed1

Point any engine or library at that directory instead of a Hub model id:

  python -c "from transformers import AutoModelForCausalLM, AutoTokenizer as T; \\
import sys; p=sys.argv[1]; t=T.from_pretrained(p); m=AutoModelForCausalLM.from_pretrained(p); \\
print(t.decode(m.generate(**t('def f(x):', return_tensors='pt'), max_new_tokens=8)[0]))" "$MODEL"

  VLLM_CPU_KVCACHE_SPACE=1 python -m vllm.entrypoints.openai.api_server --model "$MODEL" \\
      --host 127.0.0.1 --port 8000 --dtype float32 --enforce-eager --max-model-len 512
  curl -s localhost:8000/v1/completions -H 'content-type: application/json' \\
      -d '{"model": "'"$MODEL"'", "prompt": "def f(x):", "max_tokens": 8, "temperature": 0}'

Cache: without --out the model lives in <project>/.cache/models/tiny-llama-<key>/ (or
$LABKIT_CACHE_DIR/models/...), where <key> hashes the config, the seed and the corpus; a
second build with the same inputs finds it instantly. Builds are atomic: they happen in a
temporary directory renamed into place at the end, so an interrupted build leaves nothing
half-written.
"""

INFO_EPILOG = """\
Reads config.json and the safetensors header only (no weights are loaded).
"KV cache per token" is what one token of context costs an inference engine:
2 (K and V) x layers x KV heads x head_dim x bytes per element. GQA shrinks it by sharing
each K/V head between several query heads.

  labkit model info                 the default tiny model (built first if needed)
  labkit model info "$MODEL" --json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help="build or inspect the tiny Llama model",
                              description=MODEL_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    b = sub.add_parser("build", help="build (or find cached) the tiny Llama; print its path",
                       description=MODEL_HELP, epilog=BUILD_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--out", metavar="DIR", help="build here instead of the project cache")
    b.add_argument("--seed", type=int, default=0,
                   help="torch.manual_seed for the random weights (default 0); same seed, "
                        "same bytes")
    b.add_argument("--force", action="store_true",
                   help="rebuild even if a matching build exists (replaces it atomically)")
    b.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    b.set_defaults(func=_build)

    i = sub.add_parser("info", help="parameter count, shapes, sizes, KV-cache bytes per token",
                       description="Summarise a Hugging Face model directory.",
                       epilog=INFO_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("path", nargs="?", metavar="PATH",
                   help="model directory (default: the tiny Llama, seed 0)")
    i.add_argument("--json", action="store_true", help="machine-readable, with every tensor")
    i.set_defaults(func=_info)


def _build(args) -> int:
    from labkit.models import build_tiny_llama

    path = build_tiny_llama(out_dir=args.out, seed=args.seed, force=args.force,
                            verbose=not args.quiet)
    print(path)
    return 0


def _info(args) -> int:
    from labkit.models.info import format_info, model_info

    path = args.path
    if path is None:
        from labkit.models import build_tiny_llama

        path = build_tiny_llama()
    info = model_info(path)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
