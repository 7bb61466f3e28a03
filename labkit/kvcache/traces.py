"""Synthetic request traces for the classic prefix-sharing workloads.

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
each id becomes a made-up word; trace_file.toy_tokenize turns each word back into one token.
Writing and reading the JSONL lives in trace_file.py.

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

import numpy as np

from labkit.errors import UserError

VOCAB_SIZE = 32000
WORKLOADS = ("shared-prompt", "few-shot", "multi-turn", "branching")
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "su",
    "ta",
    "ri",
    "po",
    "ve",
    "du",
    "xa",
    "zo",
    "be",
    "gi",
    "hu",
    "fy",
]


# -- synthetic tokens and text -----------------------------------------------------------------
def _tokens(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(1, VOCAB_SIZE, size=max(1, int(n))).tolist()


def _length(rng: np.random.Generator, mean: float, sigma: float = 0.4) -> int:
    """A lognormal length with the given mean: real prompt/answer lengths are right-skewed."""
    return max(1, round(float(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma))))


def token_to_word(token_id: int) -> str:
    """A made-up word per id (base-16 syllables), so text mode needs no dictionary."""
    word, x = "", token_id
    while True:
        word = _SYLLABLES[x % 16] + word
        x //= 16
        if x == 0:
            return word


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
def shared_prompt(
    num_requests=64,
    seed=0,
    num_groups=4,
    system_len=500,
    question_len=48,
    output_len=64,
    rate=8.0,
    text=False,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    systems = [_tokens(rng, system_len) for _ in range(num_groups)]
    arrivals = _arrivals(rng, num_requests, rate)
    rows = []
    for i in range(num_requests):
        group = int(rng.integers(num_groups))
        prompt = systems[group] + _tokens(rng, _length(rng, question_len))
        rows.append(
            _row(
                f"shared-{i}",
                arrivals[i],
                prompt,
                _tokens(rng, _length(rng, output_len)),
                text,
                False,
            )
        )
    return rows


def few_shot(
    num_requests=64,
    seed=0,
    num_tasks=4,
    header_len=60,
    num_shots=5,
    shot_len=90,
    question_len=48,
    output_len=32,
    rate=8.0,
    text=False,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    header = _tokens(rng, header_len)
    shots = [
        [t for _ in range(num_shots) for t in _tokens(rng, _length(rng, shot_len))]
        for _ in range(num_tasks)
    ]
    arrivals = _arrivals(rng, num_requests, rate)
    rows = []
    for i in range(num_requests):
        task = int(rng.integers(num_tasks))
        prompt = header + shots[task] + _tokens(rng, _length(rng, question_len))
        rows.append(
            _row(
                f"fewshot-{i}",
                arrivals[i],
                prompt,
                _tokens(rng, _length(rng, output_len)),
                text,
                False,
            )
        )
    return rows


def multi_turn(
    num_requests=64,
    seed=0,
    turns=4,
    system_len=120,
    user_len=48,
    output_len=96,
    rate=2.0,
    think_time=3.0,
    text=False,
) -> list[dict]:
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


def branching(
    num_requests=64,
    seed=0,
    branch=3,
    depth=3,
    root_len=250,
    instruction_len=12,
    output_len=64,
    rate=1.0,
    level_gap=2.0,
    text=False,
) -> list[dict]:
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
                thought, rid = (
                    _tokens(rng, _length(rng, output_len)),
                    f"tree{tree}-node{name or 'root'}",
                )
                rows.append(_row(rid, start + d * level_gap, prompt, thought, text, True, parent))
                children += [
                    (prompt + thought + instructions[k], f"{name}{k}", rid) for k in range(branch)
                ]
            level = children
        tree += 1
    return sorted(rows, key=lambda r: r["arrival"])


GENERATORS = {
    "shared-prompt": shared_prompt,
    "few-shot": few_shot,
    "multi-turn": multi_turn,
    "branching": branching,
}


def generate(workload: str, num_requests: int = 64, seed: int = 0, **kwargs) -> list[dict]:
    if workload not in GENERATORS:
        raise UserError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    return GENERATORS[workload](num_requests=num_requests, seed=seed, **kwargs)
