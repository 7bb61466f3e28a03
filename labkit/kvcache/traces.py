"""JSONL request traces for the classic prefix-sharing workloads, and a strict reader.

One request per line:
    {"id": "r0", "arrival": 0.13, "prompt_token_ids": [...], "output_len": 64}
`arrival` is seconds since the trace started. Instead of `prompt_token_ids` a line may carry
`prompt` text (tokenised on read). `output_token_ids` (or `output` text) is optional: when a
later prompt contains an earlier answer (multi-turn chat, tree-of-thought) the trace records
that answer, so a simulator can cache exactly the tokens the later prompt will repeat.
Such a request also names it in `after`: it cannot be sent before that answer exists, so a
replay holds it back until `after` has finished (closed loop), even if `arrival` has passed.

Token ids are synthetic (random ids below VOCAB_SIZE from a seeded generator), so no
tokenizer or dataset is needed and every trace is reproducible from its seed. With text=True
each id becomes a made-up word; the toy tokenizer turns each word back into one token.

Workloads (the sharing pattern is what matters for a prefix cache):
- shared-prompt: a few long system prompts, each followed by a short user question
  (SGLang's generated-shared-prefix benchmark): a two-level tree.
- few-shot: one instruction header, then the k worked examples of one of a few tasks, then
  the question: a three-level tree (header -> task examples -> question).
- multi-turn: chat sessions; turn t's prompt is the whole conversation so far, including the
  model's earlier answers — reuse grows turn by turn.
- branching: tree-of-thought; each node's prompt extends its parent's prompt + thought with
  a branch instruction, so siblings share everything up to the instruction.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labkit.errors import UserError

VOCAB_SIZE = 32000
WORKLOADS = ("shared-prompt", "few-shot", "multi-turn", "branching")
_SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "du", "xa", "zo", "be", "gi", "hu", "fy"]


# -- synthetic tokens and text -----------------------------------------------------------------
def _tokens(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(1, VOCAB_SIZE, size=max(1, int(n))).tolist()


def _length(rng: np.random.Generator, mean: float, sigma: float = 0.4) -> int:
    """A lognormal length with the given mean: real prompt/answer lengths are right-skewed."""
    return max(1, int(round(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma))))


def token_to_word(token_id: int) -> str:
    """A made-up word per id (base-16 syllables), so text mode needs no dictionary."""
    word, x = "", token_id
    while True:
        word = _SYLLABLES[x % 16] + word
        x //= 16
        if x == 0:
            return word


def toy_tokenize(text: str) -> list[int]:
    """One token per whitespace-separated word (crc32 of the word): enough to make equal text
    produce equal ids. Real engines use the model's tokenizer (pass --tokenizer)."""
    return [zlib.crc32(w.encode()) % (1 << 31) for w in text.split()]


def _row(rid, arrival, prompt, output, text, give_output, after=None):
    row = {"id": rid, "arrival": round(float(arrival), 4)}
    if after is not None:
        row["after"] = after
    if text:
        row["prompt"] = " ".join(token_to_word(t) for t in prompt)
    else:
        row["prompt_token_ids"] = prompt
    row["output_len"] = len(output)
    if give_output:
        if text:
            row["output"] = " ".join(token_to_word(t) for t in output)
        else:
            row["output_token_ids"] = output
    return row


def _arrivals(rng, n, rate):
    """Poisson arrivals: exponential gaps with mean 1/rate seconds."""
    return np.cumsum(rng.exponential(1.0 / rate, size=n)) if rate > 0 else np.zeros(n)


# -- the four workloads --------------------------------------------------------------------------
def shared_prompt(num_requests=64, seed=0, num_groups=4, system_len=500, question_len=48,
                  output_len=64, rate=8.0, text=False) -> list[dict]:
    rng = np.random.default_rng(seed)
    systems = [_tokens(rng, system_len) for _ in range(num_groups)]
    arrivals = _arrivals(rng, num_requests, rate)
    rows = []
    for i in range(num_requests):
        group = int(rng.integers(num_groups))
        prompt = systems[group] + _tokens(rng, _length(rng, question_len))
        rows.append(_row(f"shared-{i}", arrivals[i], prompt, _tokens(rng, _length(rng, output_len)), text, False))
    return rows


def few_shot(num_requests=64, seed=0, num_tasks=4, header_len=60, num_shots=5, shot_len=90,
             question_len=48, output_len=32, rate=8.0, text=False) -> list[dict]:
    rng = np.random.default_rng(seed)
    header = _tokens(rng, header_len)
    shots = [sum((_tokens(rng, _length(rng, shot_len)) for _ in range(num_shots)), []) for _ in range(num_tasks)]
    arrivals = _arrivals(rng, num_requests, rate)
    rows = []
    for i in range(num_requests):
        task = int(rng.integers(num_tasks))
        prompt = header + shots[task] + _tokens(rng, _length(rng, question_len))
        rows.append(_row(f"fewshot-{i}", arrivals[i], prompt, _tokens(rng, _length(rng, output_len)), text, False))
    return rows


def multi_turn(num_requests=64, seed=0, turns=4, system_len=120, user_len=48, output_len=96,
               rate=2.0, think_time=3.0, text=False) -> list[dict]:
    rng = np.random.default_rng(seed)
    num_sessions = -(-num_requests // turns)
    starts = _arrivals(rng, num_sessions, rate)
    system = _tokens(rng, system_len)  # the same assistant persona for everyone
    rows = []
    for s in range(num_sessions):
        history, t = list(system), float(starts[s])
        for turn in range(turns):
            if len(rows) == num_requests:
                break
            prompt = history + _tokens(rng, _length(rng, user_len))
            answer = _tokens(rng, _length(rng, output_len))
            after = f"chat{s}-turn{turn - 1}" if turn else None  # the user reads the answer first
            rows.append(_row(f"chat{s}-turn{turn}", t, prompt, answer, text, True, after))
            history = prompt + answer
            t += think_time * float(rng.uniform(0.5, 1.5))
    return sorted(rows, key=lambda r: r["arrival"])


def branching(num_requests=64, seed=0, branch=3, depth=3, root_len=250, instruction_len=12,
              output_len=64, rate=1.0, level_gap=2.0, text=False) -> list[dict]:
    rng = np.random.default_rng(seed)
    instructions = [_tokens(rng, instruction_len) for _ in range(branch)]  # "try approach k"
    rows, tree = [], 0
    while len(rows) < num_requests:
        start = tree / rate if rate > 0 else 0.0
        level = [(_tokens(rng, root_len), "", None)]  # (prompt, path name, parent id) to expand
        for d in range(depth + 1):
            children = []
            for prompt, name, parent in level:
                if len(rows) == num_requests:
                    break
                thought, rid = _tokens(rng, _length(rng, output_len)), f"tree{tree}-node{name or 'root'}"
                rows.append(_row(rid, start + d * level_gap, prompt, thought, text, True, parent))
                children += [(prompt + thought + instructions[k], f"{name}{k}", rid) for k in range(branch)]
            level = children
        tree += 1
    return sorted(rows, key=lambda r: r["arrival"])


GENERATORS = {"shared-prompt": shared_prompt, "few-shot": few_shot, "multi-turn": multi_turn, "branching": branching}


def generate(workload: str, num_requests: int = 64, seed: int = 0, **kwargs) -> list[dict]:
    if workload not in GENERATORS:
        raise UserError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    return GENERATORS[workload](num_requests=num_requests, seed=seed, **kwargs)


def write_jsonl(rows: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- reading ---------------------------------------------------------------------------------------
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
        raise UserError(f"no tokenizer at {p}; pass a tokenizer.json file or a model directory containing one")
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
            raise UserError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object like {{\"id\": ..., \"arrival\": ...}}, got {type(row).__name__}")
        out.append(_parse_row(row, where, lineno, tokenize))
        if out[-1].id in seen:
            raise UserError(f"{where}: duplicate id {out[-1].id!r}; give every request its own id")
        if out[-1].after is not None and out[-1].after not in seen:
            raise UserError(f"{where}: after={out[-1].after!r} names no request on an earlier line; "
                            "list a request after the one it waits for")
        seen.add(out[-1].id)
    if not out:
        raise UserError(f"{path} has no requests; expected one JSON object per line")
    return out


def _parse_row(row: dict, where: str, lineno: int, tokenize) -> TraceRequest:
    missing = [k for k in ("id", "arrival", "output_len") if k not in row]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}; each line needs id, arrival, "
                        "output_len and prompt_token_ids (or prompt)")
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
        raise UserError(f"{where}: no prompt; add prompt_token_ids (a list of ints) or prompt (text)")
    if not prompt:
        raise UserError(f"{where}: the prompt is empty; a request needs at least one prompt token")
    output = None
    if "output_token_ids" in row:
        output = _token_list(row["output_token_ids"], where, "output_token_ids")
        if len(output) != output_len:
            raise UserError(f"{where}: output_token_ids has {len(output)} tokens but output_len is {output_len}; make them agree")
    elif isinstance(row.get("output"), str):
        output = tokenize(row["output"]) or None
        output_len = len(output) if output else output_len  # the tokenizer decides the length
    after = None if row.get("after") is None else str(row["after"])
    return TraceRequest(str(row["id"]), float(arrival), prompt, output_len, output, lineno, after)


def _token_list(value, where: str, field_name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise UserError(f"{where}: {field_name} must be a list of non-negative integers")
    return value
