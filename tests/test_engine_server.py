"""The teaching engine's HTTP server, driven by the official `openai` client.

Starts `python -m labkit.engine.server` as a real subprocess (the way `labkit serve
--engine mini` does), then checks the OpenAI API surface, streaming with usage, the
Prometheus metrics against the requests we sent, a busy port, and a clean SIGTERM.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from labkit.models import build_tiny_llama

pytestmark = pytest.mark.slow

NAME = "tiny"
STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, port, *extra):
    cmd = [sys.executable, "-m", "labkit.engine.server", "--model", str(model), "--port",
           str(port), "--served-model-name", NAME, "--num-threads", "1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_healthy(proc, port):
    t0 = time.monotonic()
    while time.monotonic() - t0 < STARTUP_TIMEOUT_S:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail("server not healthy in time")


@pytest.fixture(scope="module")
def model():
    return build_tiny_llama(verbose=False)


@pytest.fixture(scope="module")
def server(model):
    port = free_port()
    proc = start_server(model, port, "--max-num-batched-tokens", "64")
    wait_healthy(proc, port)
    yield {"port": port, "proc": proc, "base": f"http://127.0.0.1:{port}"}
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["base"] + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def hf(model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    return AutoTokenizer.from_pretrained(model), AutoModelForCausalLM.from_pretrained(model)


def hf_greedy(hf, ids, n):
    import torch

    tok, model = hf
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, do_sample=False)
    return out[0, len(ids):].tolist()


def metrics(server) -> dict:
    """Every `vllm:` sample line of /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(server["base"] + "/metrics") as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("vllm:"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def metric(m: dict, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in m.items():
        base = key.split("{")[0]
        if base == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


SENT = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}


def count(usage):
    SENT["requests"] += 1
    SENT["prompt_tokens"] += usage.prompt_tokens
    SENT["completion_tokens"] += usage.completion_tokens


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    from labkit.engine.dtype import resolve_dtype

    with urllib.request.urlopen(server["base"] + "/v1/models") as r:
        card = json.load(r)["data"][0]
    assert (card["dtype"], card["dtype_reason"]) == resolve_dtype("auto", "cpu")  # said, why
    assert card["attention"] == "fast"
    with urllib.request.urlopen(server["base"] + "/health") as r:
        assert r.status == 200


def test_completions_greedy_matches_transformers(client, hf):
    tok, _ = hf
    prompts = ["def fibonacci(n):", "import os\nimport sys\n\nclass"]
    resp = client.completions.create(model=NAME, prompt=prompts, max_tokens=12, temperature=0,
                                     extra_body={"return_token_ids": True})
    assert len(resp.choices) == 2
    for p, choice in zip(prompts, sorted(resp.choices, key=lambda c: c.index)):
        ids = tok(p)["input_ids"]
        ref = hf_greedy(hf, ids, 12)
        assert choice.token_ids == ref
        assert choice.text == tok.decode(ref, skip_special_tokens=True)
        assert choice.finish_reason == ("length" if len(ref) == 12 else "stop")
    assert resp.usage.prompt_tokens == sum(len(tok(p)["input_ids"]) for p in prompts)
    assert resp.usage.completion_tokens == 24 or resp.choices[0].finish_reason == "stop"
    SENT["requests"] += 2
    SENT["prompt_tokens"] += resp.usage.prompt_tokens
    SENT["completion_tokens"] += resp.usage.completion_tokens


def test_chat_applies_the_template_once(client, hf):
    tok, _ = hf
    messages = [{"role": "user", "content": "Write a loop."}]
    resp = client.chat.completions.create(model=NAME, messages=messages, max_tokens=8,
                                          temperature=0)
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert resp.usage.prompt_tokens == len(ids)
    ref = hf_greedy(hf, ids, 8)
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == tok.decode(ref, skip_special_tokens=True)
    count(resp.usage)


def test_streaming_with_usage_equals_the_non_streamed_answer(client):
    kwargs = dict(model=NAME, prompt="class Node:\n    def __init__(self", max_tokens=16,
                  temperature=0)
    whole = client.completions.create(**kwargs)
    count(whole.usage)
    chunks = list(client.completions.create(**kwargs, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    # Usage only in the final, choice-less chunk; null before it.
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    count(chunks[-1].usage)

    chat = list(client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    assert chat[0].choices[0].delta.role == "assistant"
    assert chat[-1].usage.completion_tokens == 6 or chat[-2].choices[0].finish_reason == "stop"
    count(chat[-1].usage)


def test_concurrent_seeded_requests(client):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        r = client.completions.create(model=NAME, prompt=f"def f{i}(x):", max_tokens=10,
                                      temperature=0.8, seed=i)
        return r

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for r in results:
        count(r.usage)
        assert r.choices[0].finish_reason in ("length", "stop")
    # Same seed, same text, whatever else was running.
    assert one(3).choices[0].text == results[3].choices[0].text
    count(results[3].usage)


def test_errors_use_the_openai_shape(client):
    import openai

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=NAME, prompt=[1] * 5000, max_tokens=2)


def test_metrics_use_vllm_names_and_match_the_requests_sent(server):
    m = metrics(server)
    names = {k.split("{")[0] for k in m}
    for name in ["vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total",
                 "vllm:prefix_cache_hits_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket",
                 "vllm:request_time_per_output_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:request_queue_time_seconds_bucket",
                 "vllm:request_prefill_time_seconds_bucket", "vllm:request_decode_time_seconds_bucket",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:num_preemptions_total", "vllm:request_success_total"]:
        assert name in names, name
    assert all(f'model_name="{NAME}"' in k for k in m)
    assert metric(m, "vllm:request_success_total") == SENT["requests"]
    assert metric(m, "vllm:e2e_request_latency_seconds_count") == SENT["requests"]
    assert metric(m, "vllm:time_to_first_token_seconds_count") == SENT["requests"]
    assert metric(m, "vllm:prompt_tokens_total") == SENT["prompt_tokens"]
    assert metric(m, "vllm:prefix_cache_queries_total") == SENT["prompt_tokens"]
    assert metric(m, "vllm:generation_tokens_total") == SENT["completion_tokens"]
    # One inter-token gap per token after each request's first.
    assert metric(m, "vllm:inter_token_latency_seconds_count") == SENT["completion_tokens"] - SENT["requests"]
    # The same prompt was sent twice in the streaming test: the second time it hit the cache.
    assert 0 < metric(m, "vllm:prefix_cache_hits_total") < SENT["prompt_tokens"]
    assert metric(m, "vllm:num_requests_running") == 0 and metric(m, "vllm:num_requests_waiting") == 0
    assert metric(m, "vllm:request_success_total", finished_reason="abort") == 0


def test_a_client_that_disconnects_is_aborted(server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    conn.request("POST", "/v1/completions",
                 body='{"prompt": "x", "max_tokens": 1000, "stream": true, "ignore_eos": true}',
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read1(100)  # the stream has started
    conn.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = metrics(server)
        if metric(m, "vllm:request_success_total", finished_reason="abort") == 1:
            break
        time.sleep(0.2)
    assert metric(m, "vllm:request_success_total", finished_reason="abort") == 1
    assert metric(m, "vllm:num_requests_running") == 0
    assert metric(m, "vllm:kv_cache_usage_perc") == 0


def test_busy_port_is_a_clear_error(server, model):
    proc = start_server(model, server["port"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert f"port {server['port']}" in out and "--port" in out and "Traceback" not in out


def test_sigterm_shuts_down_cleanly(server):
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    out = proc.stdout.read()
    assert "shut down" in out and "Traceback" not in out
    with pytest.raises(OSError):
        urllib.request.urlopen(server["base"] + "/health", timeout=2)
