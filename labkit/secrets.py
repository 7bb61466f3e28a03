"""Keep secrets (tokens, keys, passwords) out of everything labkit writes.

Two rules, applied everywhere something is written (results, run metadata, executed
notebooks, logs, portfolio pages):
1. A parameter or environment variable whose *name* looks secret is never written.
2. The *values* of such variables are redacted wherever they appear in written text, in
   case a notebook printed one by accident.

`labkit run -p hf_token=...` therefore does not inject `hf_token` into the notebook (papermill
would save it in the executed copy); it hands it to the kernel as the environment variable
`HF_TOKEN` instead, which libraries such as huggingface_hub read directly.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

from labkit.atomic import atomic_write_text

# A name is split into words at `_`, `-`, `.`; it looks secret if a word is one of these or
# ends with one (HF_TOKEN, OPENAI_API_KEY, apikey, db_password, AWS_SECRET_ACCESS_KEY).
# Plurals such as `max_tokens` are counts, not credentials, and stay ordinary parameters.
# (Not "pwd": $PWD is the working directory, not a password.)
SECRET_WORDS = ("token", "key", "secret", "secrets", "password", "passwd",
                "credential", "credentials", "auth", "cookie", "bearer")
REDACTED = "***redacted***"
# Values shorter than this are not redacted by value: "1" or "true" would mangle every file.
MIN_SECRET_LEN = 6


# "per_token", "first_token", "num_key" name quantities, not credentials.
NOT_SECRET_BEFORE = {"per", "num", "max", "min", "first", "last", "next", "prev", "each"}


def is_secret_name(name: str) -> bool:
    words = [w for w in re.split(r"[_\-.\s]+", name.lower()) if w]
    return any(w.endswith(s) and not (i and words[i - 1] in NOT_SECRET_BEFORE)
               for i, w in enumerate(words) for s in SECRET_WORDS)


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """Values of secret-looking environment variables, plus any given ones."""
    values = [v for k, v in os.environ.items() if is_secret_name(k)]
    values += list(extra)
    # Longest first, so a secret that contains another is replaced whole.
    return sorted({v for v in values if v and len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)


def redact_text(text: str, values: Iterable[str] | None = None) -> str:
    for v in secret_values() if values is None else values:
        text = text.replace(v, REDACTED)
    return text


def drop_secret_names(params: dict) -> dict:
    """Parameters or environment without the entries whose name looks secret."""
    return {k: v for k, v in params.items() if not is_secret_name(str(k))}


def scrub(obj: Any, values: Iterable[str] | None = None) -> Any:
    """Copy of a JSON-like object with every secret *value* redacted, at any depth.

    Keys are kept: a result called `ms_per_token` is not a credential. Dicts of
    parameters or environment go through drop_secret_names() before they are recorded.
    """
    values = secret_values() if values is None else list(values)
    if isinstance(obj, dict):
        return {k: scrub(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, values) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, values)
    return obj


def safe_environ() -> dict[str, str]:
    """The environment without secret-named variables (for recording what a run saw)."""
    return drop_secret_names(dict(os.environ))


def redact_file(path: os.PathLike | str, values: Iterable[str]) -> bool:
    """Redact secret values inside a text file in place (atomically). True if it changed."""
    values = list(values)
    if not values:
        return False
    try:
        text = open(path, encoding="utf-8").read()
    except (UnicodeDecodeError, OSError):
        return False  # binary files (PNG, safetensors) are not text we produced from values
    new = redact_text(text, values)
    if new != text:
        atomic_write_text(path, new)
        return True
    return False
