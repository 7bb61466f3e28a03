"""Save the trained model in Hugging Face format, for the serving labs.

    out/config.json  generation_config.json  model.safetensors   from the trained weights
    out/tokenizer.json  tokenizer_config.json  special_tokens_map.json   copied unchanged
    out/labkit_train.json                                          how it was trained

Any engine that loaded the untrained tiny Llama (`--model PATH`) loads this directory the
same way; only the weights changed, so the tokenizer files are copied, never regenerated.
The files are first written to a temp directory next to `out` and then moved in one by
one with atomic renames, so a crash never leaves a half-written model.safetensors there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def export_hf(model, source_dir: str | Path, out_dir: str | Path, record: dict) -> Path:
    """Write `model` (a transformers PreTrainedModel, not the DDP wrapper) into out_dir."""
    import os

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.export-"))
    try:
        # safetensors: a JSON header then raw tensor bytes; loads without running code.
        model.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, tmp / name)
        (tmp / "labkit_train.json").write_text(json.dumps(record, indent=2, default=str))
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
