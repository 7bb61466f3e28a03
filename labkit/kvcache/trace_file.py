"""The JSONL trace file: one request per line, written and read strictly.

    {"id": "r0", "arrival": 0.13, "prompt_token_ids": [...], "output_len": 64}

Fields: `id` (unique), `arrival` (seconds since the trace started), `output_len` (tokens to
generate), and the prompt as `prompt_token_ids` or as `prompt` text (tokenised on read, by a
real tokenizer.json or the toy one below). Optional: `output_token_ids` (or `output` text),
the answer's tokens when a later prompt repeats them; `after`, the id of a request that must
finish before this one can be sent (the next chat turn waits for the answer).

Every problem in a file is a UserError that names the line and says how to fix it.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import UserError


def toy_tokenize(text: str) -> list[int]:
    """One token per whitespace-separated word (crc32 of the word): enough to make equal text
    produce equal ids. Real engines use the model's tokenizer (pass --tokenizer)."""
    return [zlib.crc32(w.encode()) % (1 << 31) for w in text.split()]


def write_jsonl(rows: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass
class TraceRequest:
    id: str
    arrival: float
    prompt_token_ids: list[int]
    output_len: int
    output_token_ids: list[int] | None = None  # known answer tokens, if the trace has them
    line: int = 0
    after: str | None = None  # id of a request that must finish before this one can be sent


def load_tokenizer(path):
    """A HF `tokenizer.json` (file or model directory) as a text -> ids function."""
    from tokenizers import Tokenizer

    p = Path(path)
    p = p / "tokenizer.json" if p.is_dir() else p
    if not p.is_file():
        raise UserError(
            f"no tokenizer at {p}; pass a tokenizer.json file or a model directory containing one"
        )
    tok = Tokenizer.from_file(str(p))
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def read_trace(path, tokenize=None) -> list[TraceRequest]:
    """Parse and validate a JSONL trace; every problem names the file line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"trace file {path} not found; create one with "
            f"`labkit kvcache trace --workload shared-prompt --out {path}`"
        )
    tokenize = tokenize or toy_tokenize
    out, seen = [], set()
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{where}: not valid JSON ({e.msg}); each line must be one JSON object"
            ) from None
        if not isinstance(row, dict):
            raise UserError(
                f'{where}: expected a JSON object like {{"id": ..., "arrival": ...}}, '
                f"got {type(row).__name__}"
            )
        out.append(_parse_row(row, where, lineno, tokenize))
        if out[-1].id in seen:
            raise UserError(f"{where}: duplicate id {out[-1].id!r}; give every request its own id")
        if out[-1].after is not None and out[-1].after not in seen:
            raise UserError(
                f"{where}: after={out[-1].after!r} names no request on an earlier line; "
                "list a request after the one it waits for"
            )
        seen.add(out[-1].id)
    if not out:
        raise UserError(f"{path} has no requests; expected one JSON object per line")
    return out


def _parse_row(row: dict, where: str, lineno: int, tokenize) -> TraceRequest:
    missing = [k for k in ("id", "arrival", "output_len") if k not in row]
    if missing:
        raise UserError(
            f"{where}: missing field(s) {', '.join(missing)}; each line needs id, arrival, "
            "output_len and prompt_token_ids (or prompt)"
        )
    arrival = row["arrival"]
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) or arrival < 0:
        raise UserError(f"{where}: arrival must be a number of seconds >= 0, got {arrival!r}")
    output_len = row["output_len"]
    if isinstance(output_len, bool) or not isinstance(output_len, int) or output_len < 1:
        raise UserError(f"{where}: output_len must be an integer >= 1, got {output_len!r}")
    if "prompt_token_ids" in row:
        prompt = _token_list(row["prompt_token_ids"], where, "prompt_token_ids")
    elif "prompt" in row:
        if not isinstance(row["prompt"], str):
            raise UserError(f"{where}: prompt must be a string (or give prompt_token_ids)")
        prompt = tokenize(row["prompt"])
    else:
        raise UserError(
            f"{where}: no prompt; add prompt_token_ids (a list of ints) or prompt (text)"
        )
    if not prompt:
        raise UserError(f"{where}: the prompt is empty; a request needs at least one prompt token")
    output = None
    if "output_token_ids" in row:
        output = _token_list(row["output_token_ids"], where, "output_token_ids")
        if len(output) != output_len:
            raise UserError(
                f"{where}: output_token_ids has {len(output)} tokens but output_len is "
                f"{output_len}; make them agree"
            )
    elif isinstance(row.get("output"), str):
        output = tokenize(row["output"]) or None
        output_len = len(output) if output else output_len  # the tokenizer decides the length
    after = None if row.get("after") is None else str(row["after"])
    return TraceRequest(str(row["id"]), float(arrival), prompt, output_len, output, lineno, after)


def _token_list(value, where: str, field_name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
    ):
        raise UserError(f"{where}: {field_name} must be a list of non-negative integers")
    return value
