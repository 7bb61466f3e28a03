"""Workloads: *what* each request asks for.

- random:        random words; input and output lengths set by you. No two prompts share a
                 prefix, so a prefix cache cannot help: the baseline.
- shared-prefix: SGLang's "generated-shared-prefix": G groups, each with one long system
                 prompt shared by P questions. Prefix caching (vLLM) and RadixAttention
                 (SGLang) should shine here.
- multi-turn:    conversations whose every turn resends the whole earlier conversation plus
                 a new question, so the shared prefix grows turn after turn.
- sharegpt:FILE: real conversations in ShareGPT format from a local JSON file: the first
                 human turn is the prompt, the first reply's length is the output length.

Lengths are counted in words from a fixed list of short common English words. Each such
word is about one token for GPT-style BPE tokenizers, which keeps lengths controllable
without a tokenizer. The server's `usage` gives the true token counts; the summary reports
both.

Why the multi-turn replies are synthetic: an open-loop benchmark fixes every send time up
front, so a request cannot wait for the real answer of the previous turn. We put a made-up
reply of `output_len` words in the context instead; the prefix each turn shares with the
previous one is the same, which is what multi-turn stresses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from labkit.errors import UserError

# Short, common, lower-case words: each one is a single token (with its leading space) in
# GPT-2/Llama-style BPE vocabularies, so "n words" ≈ "n tokens".
WORDS = (
    "the of and to in is was for on are with as his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people "
    "my over know water than call first who may down side been now find any new work part "
    "take get place made live where after back little only round man year came show every "
    "good me give our under name very through just form great think say help low line turn "
    "cause much mean before move right boy old too same tell does set three want air well also "
    "play small end put home read hand port large spell add even land here must big high such "
    "follow act why ask men change went light kind off need house picture try us again animal "
    "point mother world near build self earth father head stand own page should country found "
    "answer school grow study still learn plant cover food sun four thought let keep eye never "
    "last door between city tree cross since hard start might story saw far sea draw left late "
    "run while press close night real life few stop open seem together next white children "
    "begin got walk example ease paper often always music those both mark book letter until "
    "mile river car feet care second group carry took rain eat room friend began idea fish "
    "mountain north once base hear horse cut sure watch color face wood main enough plain girl "
    "usual young ready above ever red list though feel talk bird soon body dog family direct "
    "pose leave song measure state product black short numeral class wind question happen "
    "complete ship area half rock order fire south problem piece told knew pass farm top whole "
    "king size heard best hour better true during hundred am remember step early hold west "
    "ground interest reach fast five sing listen six table travel less morning ten simple "
    "several vowel toward war lay against pattern slow center love person money serve appear "
    "road map science rule govern pull cold notice voice fall power town fine certain fly unit "
    "lead cry dark machine note wait plan figure star box noun field rest correct able pound "
    "done beauty drive stood contain front teach week final gave green oh quick develop sleep "
    "warm free minute strong special mind behind clear tail produce fact street inch lot "
    "nothing course stay wheel full force blue object decide surface deep moon island foot "
    "yet busy test record boat common gold possible plane age dry wonder laugh thousand ago "
    "ran check game shape yes hot miss brought heat snow bed bring sit perhaps fill east "
    "weight language among"
).split()

WORKLOADS = ("random", "shared-prefix", "multi-turn", "sharegpt:FILE")


@dataclass
class Request:
    """One request to send: `prompt` for the completions API, `messages` for chat."""

    prompt: str
    messages: list[dict]
    max_tokens: int
    ignore_eos: bool = True
    prompt_len: int = 0  # client-side estimate (words, or tokens if a tokenizer was given)
    tag: str = ""  # where it came from, e.g. "group=3" or "conv=2 turn=1"


@dataclass
class WorkloadParams:
    input_len: int = 256  # random: prompt words
    output_len: int | None = None  # max_tokens; None: 128, or for sharegpt the reply's length
    range_ratio: float = 0.0  # random: lengths uniform in [len*(1-r), len*(1+r)]
    num_groups: int = 8  # shared-prefix
    system_prompt_len: int = 512  # shared-prefix (and multi-turn's opening system prompt)
    question_len: int = 64  # shared-prefix and multi-turn: words per question
    num_turns: int = 4  # multi-turn
    ignore_eos: bool = True
    count_tokens: Callable[[str], int] | None = field(default=None, repr=False)


def words(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=max(0, int(n))))


def _length(p: WorkloadParams, text: str) -> int:
    return p.count_tokens(text) if p.count_tokens else len(text.split())


def _out_len(p: WorkloadParams) -> int:
    return 128 if p.output_len is None else p.output_len


def _vary(rng, n: int, ratio: float) -> int:
    if ratio <= 0:
        return n
    return int(rng.integers(max(1, int(n * (1 - ratio))), int(n * (1 + ratio)) + 1))


def random_requests(n: int, p: WorkloadParams, rng) -> list[Request]:
    out = []
    for _ in range(n):
        text = words(rng, _vary(rng, p.input_len, p.range_ratio))
        out.append(Request(text, [{"role": "user", "content": text}],
                           max(1, _vary(rng, _out_len(p), p.range_ratio)), p.ignore_eos,
                           _length(p, text), "random"))
    return out


def shared_prefix_requests(n: int, p: WorkloadParams, rng) -> list[Request]:
    """n requests spread evenly over num_groups groups; each group shares a system prompt.

    The order is shuffled so groups interleave, as independent users' requests would: a
    cache has to keep several prefixes alive at once (SGLang's generator shuffles too).
    """
    systems = [words(rng, p.system_prompt_len) for _ in range(p.num_groups)]
    out = []
    for i in range(n):
        g = i % p.num_groups
        q = words(rng, p.question_len)
        msgs = [{"role": "system", "content": systems[g]}, {"role": "user", "content": q}]
        prompt = systems[g] + "\n" + q
        out.append(Request(prompt, msgs, _out_len(p), p.ignore_eos, _length(p, prompt),
                           f"group={g}"))
    order = rng.permutation(n)
    return [out[i] for i in order]


def multi_turn_requests(n: int, p: WorkloadParams, rng) -> list[Request]:
    """ceil(n / num_turns) conversations; turn t resends turns 1..t-1 plus a new question.

    Requests are ordered turn by turn (every conversation's turn 1, then every turn 2…), so
    a later turn is always sent after the earlier turn of the same conversation.
    """
    n_conv = -(-n // p.num_turns)
    convs = []
    for c in range(n_conv):
        system = words(rng, p.system_prompt_len) if p.system_prompt_len else ""
        convs.append([{"role": "system", "content": system}] if system else [])
    out = []
    for t in range(p.num_turns):
        for c in range(n_conv):
            if len(out) == n:
                return out
            convs[c].append({"role": "user", "content": words(rng, p.question_len)})
            msgs = [dict(m) for m in convs[c]]
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in msgs) + "\nassistant:"
            out.append(Request(prompt, msgs, _out_len(p), p.ignore_eos, _length(p, prompt),
                               f"conv={c} turn={t + 1}"))
            # The synthetic reply the next turn will carry in its context (see module doc).
            convs[c].append({"role": "assistant", "content": words(rng, _out_len(p))})
    return out


def load_sharegpt(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ShareGPT file {path} not found; pass a local JSON file (a list of "
                        "{'conversations': [{'from': 'human', 'value': …}, …]}). "
                        "labkit never downloads datasets at run time.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); expected ShareGPT format") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of conversations")
    return data


def sharegpt_requests(n: int, p: WorkloadParams, rng, path: str | Path) -> list[Request]:
    """Prompt = first human turn; max_tokens = length of the first reply (or output_len).

    Filters follow vLLM's ShareGPT sampler: drop pairs with a prompt or reply shorter than
    4, a prompt longer than 1024, or prompt + reply longer than 2048 (counted in tokens if
    a tokenizer was given, else words). If the file has fewer usable pairs than n, they are
    reused in a new random order (the summary's request count still says n).
    """
    pairs = []
    for conv in load_sharegpt(path):
        turns = conv.get("conversations") or conv.get("conversation") or []
        if len(turns) < 2:
            continue
        human, reply = turns[0].get("value", ""), turns[1].get("value", "")
        if turns[0].get("from") not in ("human", "user"):
            continue
        plen, olen = _length(p, human), _length(p, reply)
        if p.output_len is not None:
            olen = p.output_len
        if plen < 4 or olen < 4 or plen > 1024 or plen + olen > 2048:
            continue
        pairs.append((human, plen, olen))
    if not pairs:
        raise UserError(f"{path}: no usable conversation (need a human turn then a reply, "
                        "each of 4 to 1024 tokens)")
    out = []
    while len(out) < n:
        for i in rng.permutation(len(pairs)):
            if len(out) == n:
                break
            human, plen, olen = pairs[i]
            out.append(Request(human, [{"role": "user", "content": human}], olen,
                               p.ignore_eos, plen, f"sharegpt={i}"))
    return out


def make_requests(workload: str, n: int, params: WorkloadParams | None = None,
                  seed: int = 0) -> list[Request]:
    """n requests of the named workload; the same seed gives the same requests."""
    p = params or WorkloadParams()
    rng = np.random.default_rng(seed)
    if workload == "random":
        return random_requests(n, p, rng)
    if workload == "shared-prefix":
        return shared_prefix_requests(n, p, rng)
    if workload == "multi-turn":
        return multi_turn_requests(n, p, rng)
    if workload.startswith("sharegpt:"):
        return sharegpt_requests(n, p, rng, workload.split(":", 1)[1])
    raise UserError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")


def token_counter(tokenizer_path: str) -> Callable[[str], int]:
    """A function text → token count from a local tokenizer (tokenizer.json or HF dir)."""
    path = Path(tokenizer_path)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    if path.is_dir():
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return lambda text: len(hf.encode(text, add_special_tokens=False))
    raise UserError(f"tokenizer {tokenizer_path} not found: pass a local tokenizer.json or "
                    "a model directory (no downloads at run time)")
