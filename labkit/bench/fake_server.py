"""An OpenAI-compatible server whose latencies are known: the oracle that tests the benchmark.

A load generator is itself a measuring instrument, and an instrument is checked against a
known reference. This server answers /v1/completions and /v1/chat/completions with a
stream whose timing we choose: the first token `ttft_ms` after the request arrived, then
one token every `tpot_ms`. Every token's send time is computed from the request's arrival
(arrival + ttft + (k-1)·tpot), never by adding sleeps, so its own delays do not drift.
A benchmark pointed at it should report TTFT ≈ ttft_ms and TPOT ≈ tpot_ms; any larger
difference is the benchmark's own error.

Faults on demand, chosen deterministically by arrival order (so tests can count them):
  error_rate   share of requests answered HTTP 500
  drop_rate    share of the other requests whose stream is cut off half-way
  die_after    the whole process exits when request die_after+1 arrives (server crash)
  multi_token_chunk_rate  share of those that stream two tokens per chunk, as engines do
               with speculative decoding: counting chunks then undercounts tokens.
  saturate_at  a server with a known capacity: with more than this many requests in flight
               when one arrives, that request's per-token time is tpot_ms × in_flight /
               saturate_at (a batch past the compute it has slows every member down). A
               capacity search with a TPOT limit then has a right answer to find.

Also: GET /health, /v1/models, /stats (the server's own measured TTFT and TPOT medians,
most requests in flight at once, CPU seconds used) and /reset (forget those figures).

It is a small HTTP/1.1 implementation on raw asyncio streams (keep-alive, chunked
transfer): 200 streaming requests/s of 16 tokens cost it about a fifth of one core.

    python -m labkit.bench.fake_server --ttft-ms 50 --tpot-ms 10 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass


@dataclass
class FakeConfig:
    ttft_ms: float = 50.0
    tpot_ms: float = 10.0
    output_tokens: int | None = None  # None: honour each request's max_tokens
    error_rate: float = 0.0
    drop_rate: float = 0.0
    die_after: int | None = None
    multi_token_chunk_rate: float = 0.0
    saturate_at: int | None = None
    model: str = "fake-model"


def _picked(i: int, rate: float, phase: float = 0.0) -> bool:
    """Exactly round(n·rate) of the first n requests are picked, spread evenly."""
    return rate > 0 and math.floor((i + 1) * rate + phase) > math.floor(i * rate + phase)


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def _chunk(data: bytes) -> bytes:
    """One HTTP chunk holding one SSE event."""
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


class FakeServer:
    def __init__(self, cfg: FakeConfig):
        self.cfg = cfg
        self.n_requests = 0
        self.n_streams = 0  # requests that got past the HTTP 500 check
        self.in_flight = self.max_in_flight = 0  # concurrent requests seen
        # What the server really did, per streamed request (its asyncio sleeps wake up to
        # ~1 ms late: epoll waits in whole milliseconds). The benchmark's error is measured
        # against these, and against the injected values.
        self.ttft_ms: list[float] = []
        self.tpot_ms: list[float] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:  # keep-alive: several requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                await self.route(method, path, body, writer)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def respond(self, writer, status: str, obj: dict):
        data = json.dumps(obj).encode()
        writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d"
                     b"\r\n\r\n%s" % (status.encode(), len(data), data))

    async def route(self, method: str, path: str, body: bytes, writer):
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/reset":  # forget the timings kept for /stats
            self.ttft_ms.clear()
            self.tpot_ms.clear()
            self.max_in_flight = self.in_flight
            return self.respond(writer, "200 OK", {"status": "ok"})
        if method == "GET" and path in ("/health", "/v1/models", "/stats"):
            if path == "/v1/models":
                return self.respond(writer, "200 OK", {"object": "list", "data": [
                    {"id": self.cfg.model, "object": "model"}]})
            if path == "/stats":
                return self.respond(writer, "200 OK", {
                    "requests": self.n_requests, "config": asdict(self.cfg),
                    "ttft_ms": _median(self.ttft_ms), "tpot_ms": _median(self.tpot_ms),
                    "ttft_ms_max": max(self.ttft_ms, default=None),
                    "max_in_flight": self.max_in_flight, "cpu_s": time.process_time()})
            return self.respond(writer, "200 OK", {"status": "ok"})
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return self.respond(writer, "404 Not Found", {"error": {"message": path}})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.generate(json.loads(body), path.endswith("chat/completions"), writer)
        finally:
            self.in_flight -= 1

    async def generate(self, req: dict, chat: bool, writer):
        loop = asyncio.get_running_loop()
        arrival = loop.time()  # every token time below is relative to this instant
        i = self.n_requests
        self.n_requests += 1
        cfg = self.cfg
        if cfg.die_after is not None and i >= cfg.die_after:
            os._exit(3)  # a crash: no clean shutdown, open streams just break
        if _picked(i, cfg.error_rate):
            return self.respond(writer, "500 Internal Server Error",
                                {"error": {"message": "injected failure", "code": 500}})
        n_out = cfg.output_tokens or int(req.get("max_tokens") or 16)
        j = self.n_streams  # drops and multi-token chunks are shares of the answered
        self.n_streams += 1
        drop_at = n_out // 2 if _picked(j, cfg.drop_rate) else None
        per_chunk = 2 if _picked(j, cfg.multi_token_chunk_rate, 0.5) else 1
        if chat:
            prompt_words = sum(len(str(m.get("content", "")).split())
                               for m in req.get("messages", []))
        else:
            prompt_words = len(str(req.get("prompt", "")).split())
        model = req.get("model", cfg.model)
        tpot_ms = cfg.tpot_ms
        if cfg.saturate_at and self.in_flight > cfg.saturate_at:
            tpot_ms *= self.in_flight / cfg.saturate_at
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(text: str | None, finish: str | None = None) -> bytes:
            if chat:
                choice = {"index": 0, "delta": {"content": text} if text is not None else
                          {"role": "assistant", "content": ""}, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
            return json.dumps({"id": f"fake-{i}", "object": kind, "created": 0,
                               "model": model, "choices": [choice]}).encode()

        usage = {"prompt_tokens": prompt_words, "completion_tokens": n_out,
                 "total_tokens": prompt_words + n_out}
        if not req.get("stream"):
            await asyncio.sleep(max(0.0, arrival + (cfg.ttft_ms + (n_out - 1) * tpot_ms)
                                    / 1e3 - loop.time()))
            msg = {"role": "assistant", "content": " tok" * n_out}
            choice = {"index": 0, "finish_reason": "length",
                      **({"message": msg} if chat else {"text": msg["content"]})}
            return self.respond(writer, "200 OK", {"id": f"fake-{i}", "model": model,
                                                   "choices": [choice], "usage": usage})
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        if chat:  # real servers open with a role-only chunk: not a token, TTFT must skip it
            writer.write(_chunk(event(None)))
        token = event(" tok" * per_chunk)
        k = 0
        while k < n_out:
            step = min(per_chunk, n_out - k)
            k += step
            # Absolute target time of token k: no accumulated sleep error.
            delay = arrival + (cfg.ttft_ms + (k - 1) * tpot_ms) / 1e3 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if k == step:
                first = loop.time()
            if drop_at is not None and k > drop_at:
                writer.transport.abort()  # cut the stream: no [DONE], no final chunk
                raise ConnectionResetError("injected drop")
            last = k >= n_out
            writer.write(_chunk(token if not last else
                                event(" tok" * step, "length")))
            if writer.transport.get_write_buffer_size() > 1 << 16:
                await writer.drain()
        now = loop.time()
        self.ttft_ms.append((first - arrival) * 1e3)
        if n_out > 1:
            self.tpot_ms.append((now - first) * 1e3 / (n_out - 1))
        writer.write(_chunk(json.dumps({"id": f"fake-{i}", "object": kind, "created": 0,
                                        "model": model, "choices": [], "usage": usage}).encode()))
        writer.write(_chunk(b"[DONE]") + b"0\r\n\r\n")
        await writer.drain()


async def serve(cfg: FakeConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    srv = FakeServer(cfg)
    # backlog: asyncio's default of 100 drops SYNs when a burst (rate=inf) opens hundreds of
    # connections at once, and the client's retry after 1 s would look like server latency.
    server = await asyncio.start_server(srv.handle, host, port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"READY http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def fake_server(**config):
    """Run the fake server in a child process (its own CPU time, its own event loop) and
    yield its base URL; the process is killed on exit. Used by tests and benchmarks."""
    cmd = [sys.executable, "-m", "labkit.bench.fake_server", "--port", "0"]
    for k, v in config.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        line = proc.stdout.readline()
        while not line.startswith("READY") and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"fake server exited with code {proc.returncode}")
            line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("fake server did not start within 30 s")
        yield line.split()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    types = {"ttft_ms": float, "tpot_ms": float, "output_tokens": int, "error_rate": float,
             "drop_rate": float, "die_after": int, "multi_token_chunk_rate": float,
             "saturate_at": int, "model": str}
    for name, default in asdict(FakeConfig()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=types[name], default=default)
    a = vars(p.parse_args(argv))
    host, port = a.pop("host"), a.pop("port")
    # The standard asyncio loop on purpose: its clock has nanosecond resolution, while
    # uvloop's timers tick in whole milliseconds, too coarse for an oracle.
    try:
        asyncio.run(serve(FakeConfig(**a), host, port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
