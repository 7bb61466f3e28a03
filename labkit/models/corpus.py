"""A text corpus that every machine already has: the Python standard library's sources.

The tiny model needs text to train its tokenizer on (and, in the distributed-training lab,
to train its weights on). Downloading a data set is not allowed on the lab machines, so we
read the `*.py` files of the interpreter's own standard library, in sorted path order, up to
a byte cap. Same interpreter version -> same files -> same bytes, on any machine.

A different Python minor version ships different sources, so `corpus_digest()` (a hash of
the exact bytes used) is part of the model's cache key: the cache never mixes them up.

For training later: `encode_corpus()` turns the documents into one stream of token ids
(each file followed by `</s>`), `train_val_split()` cuts that stream, and `get_batch()`
samples (input, target) windows the way nanoGPT does.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bump when the selection rules below change, so cached models built from the old corpus
# are not reused by mistake.
CORPUS_VERSION = 1
DEFAULT_MAX_BYTES = 4_000_000  # ~4 MB, ~230 files: ~1.5 s of tokenizer training on 2 cores

# Directories we skip: installed third-party packages are not "the standard library" and
# differ between machines; test suites contain deliberately broken files; `encodings/` is
# mostly character tables, which teach a tokenizer nothing about code.
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test",
              "encodings"}


@dataclass(frozen=True)
class Document:
    path: str  # relative to the stdlib root, with '/' separators: stable across machines
    text: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_source_files(root: Path) -> list[Path]:
    """All candidate `*.py` files under root, in sorted order of their relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        found.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    # Sort by the relative posix path, not by os.walk order (which is filesystem dependent).
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_corpus(max_bytes: int = DEFAULT_MAX_BYTES, root: Path | None = None) -> list[Document]:
    """The first files (sorted by path) whose UTF-8 text fits in `max_bytes` in total.

    Files that are not valid UTF-8 are skipped; Windows line endings become '\\n' so the
    corpus does not depend on how the interpreter was installed.
    """
    root = Path(root) if root is not None else stdlib_root()
    docs, total = [], 0
    for path in iter_source_files(root):
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text.replace("\r\n", "\n")
        size = len(text.encode("utf-8"))
        if size == 0:
            continue
        if total + size > max_bytes:
            break  # stop at the first file that does not fit: keeps the prefix property
        docs.append(Document(path.relative_to(root).as_posix(), text))
        total += size
    if not docs:
        from labkit.errors import UserError

        raise UserError(f"no readable *.py files found under {root}; is this a full Python "
                        "install? Pass root=... to load_corpus to use another directory")
    return docs


def corpus_digest(docs: list[Document]) -> str:
    """sha256 over paths and texts: identifies the exact corpus in cache keys."""
    h = hashlib.sha256(f"corpus-v{CORPUS_VERSION}\n".encode())
    for d in docs:
        for part in (d.path, d.text):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))  # length prefix: no ambiguity
            h.update(data)
    return h.hexdigest()


def encode_corpus(docs: list[Document], tokenizer_dir: str | Path) -> np.ndarray:
    """One flat stream of token ids: each document's tokens followed by the eos id.

    uint16 is enough for a 4096-token vocabulary and halves memory versus int32.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    eos = tok.token_to_id("</s>")
    # add_special_tokens=False: we place separators ourselves, no <s> inside the stream.
    encodings = tok.encode_batch([d.text for d in docs], add_special_tokens=False)
    parts = []
    for enc in encodings:
        parts.append(np.asarray(enc.ids, dtype=np.uint16))
        parts.append(np.asarray([eos], dtype=np.uint16))
    assert tok.get_vocab_size() <= np.iinfo(np.uint16).max + 1
    return np.concatenate(parts)


def train_val_split(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Cut the stream once: the first (1 - val_fraction) is train, the tail is validation.

    A contiguous tail (not a random sample of windows) keeps validation text unseen: random
    windows would overlap the training windows.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]


def get_batch(ids: np.ndarray, batch_size: int, seq_len: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`batch_size` random windows: x = ids[i:i+seq_len], y = ids[i+1:i+seq_len+1].

    y is x shifted by one: the model predicts every next token. Returns int64 arrays, the
    dtype torch's cross_entropy wants for targets. Pass a seeded Generator so every rank
    (or every rerun) draws the batches you expect.
    """
    if len(ids) <= seq_len:
        raise ValueError(f"stream of {len(ids)} tokens is too short for seq_len={seq_len}")
    starts = rng.integers(0, len(ids) - seq_len, size=batch_size)
    x = np.stack([ids[s:s + seq_len] for s in starts]).astype(np.int64)
    y = np.stack([ids[s + 1:s + 1 + seq_len] for s in starts]).astype(np.int64)
    return x, y
