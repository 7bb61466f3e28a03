"""A streaming client for the OpenAI completions and chat-completions APIs, timed per chunk.

One request → one RequestRecord: when it was scheduled, when it was really sent, when each
chunk of text arrived, what the server's `usage` says, and — if it failed — why.

Choices that keep the numbers honest:
- One asyncio event loop and one clock (`loop.time()`, monotonic) for the schedule, the
  send and every chunk, so TTFT can never come out negative (GuideLLM #216 mixed clocks).
- aiohttp with `TCPConnector(limit=0)`: aiohttp's default pool silently caps a session at
  100 connections, so request 101 waits for a free connection inside the client — queueing
  that a naive benchmark reports as server latency.
- `stream_options.include_usage`: the server says how many tokens it produced; we count
  chunks (or retokenise, if given a tokenizer) on our side too and report disagreements
  instead of trusting a client-side count (inference-perf #580).
- TTFT ends at the first chunk with *non-empty* text: role-only and empty chunks that some
  servers send first are not tokens.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Callable

from labkit.bench.workloads import Request
from labkit.errors import UserError

APIS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass
class RequestRecord:
    """Times are seconds since the run started, all on the event loop's monotonic clock."""

    id: int
    scheduled: float  # when the arrival schedule said to send it
    dispatched: float | None = None  # when the dispatcher fired it (late = client overload)
    sent: float | None = None  # when we handed it to the HTTP library (after any slot wait)
    first_token: float | None = None  # first chunk with non-empty text
    end: float | None = None  # stream finished (or failed)
    chunk_times: list[float] = field(default_factory=list)  # every non-empty chunk
    chunk_tokens: list[int] = field(default_factory=list)  # client-side tokens per chunk
    prompt_tokens: int | None = None  # server's usage
    completion_tokens: int | None = None  # server's usage
    client_tokens: int = 0  # our own count: chunks, or tokenizer count of the whole text
    error: str | None = None  # cause: http_500, timeout, dropped_stream, connection_refused…
    error_detail: str = ""
    warmup: bool = False
    max_tokens: int = 0
    prompt_len: int = 0  # client-side prompt length estimate
    tag: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def output_tokens(self) -> int:
        """Server's count when it gave one, else ours (the summary says how often)."""
        return self.completion_tokens if self.completion_tokens is not None else self.client_tokens

    def to_json(self) -> str:
        d = dict(self.__dict__)  # shallow: dataclasses.asdict deep-copies every list
        # Microsecond resolution is plenty and keeps requests.jsonl small.
        for k in ("scheduled", "dispatched", "sent", "first_token", "end"):
            if d[k] is not None:
                d[k] = round(d[k], 6)
        d["chunk_times"] = [round(t, 6) for t in self.chunk_times]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "RequestRecord":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def build_payload(req: Request, api: str, model: str) -> dict:
    body: dict = {"model": model, "max_tokens": req.max_tokens, "stream": True,
                  "stream_options": {"include_usage": True}, "temperature": 0.0}
    if api == "chat":
        body["messages"] = req.messages
    else:
        body["prompt"] = req.prompt
    if req.ignore_eos:
        body["ignore_eos"] = True  # vLLM/SGLang extension: generate exactly max_tokens
    return body


def _chunk_text(obj: dict, api: str) -> str:
    choices = obj.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    if api == "chat":
        delta = c.get("delta") or {}
        # Reasoning models stream their thinking separately; it is generated tokens too.
        return (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    return c.get("text") or ""


class StreamingClient:
    """Use as `async with StreamingClient(...) as c: await c.send(req, record, t0)`."""

    def __init__(self, base_url: str, model: str, api: str = "completions",
                 api_key: str | None = None, timeout: float = 600.0,
                 count_tokens: Callable[[str], int] | None = None):
        if api not in APIS:
            raise UserError(f"unknown --api {api!r}; choose one of {', '.join(APIS)}")
        self.url = base_url.rstrip("/") + APIS[api]
        self.base_url = base_url.rstrip("/")
        self.model, self.api, self.timeout = model, api, timeout
        self.count_tokens = count_tokens
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.session = None

    async def __aenter__(self):
        import aiohttp

        # limit=0: no connection cap (aiohttp's default is 100, see module doc).
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    async def check_server(self) -> list[str]:
        """Fail fast, with a fix, when nothing answers at the base URL. Returns served models."""
        import aiohttp

        try:
            async with self.session.get(self.base_url + "/v1/models", headers=self.headers,
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status == 401:
                    raise UserError(f"{self.base_url} refused the API key (HTTP 401); set "
                                    "OPENAI_API_KEY or pass --api-key-env")
                if resp.status != 200:
                    return []  # some servers have no /v1/models; the run will tell
                data = await resp.json(content_type=None)
                return [m.get("id", "") for m in data.get("data", [])]
        except (aiohttp.ClientConnectorError, asyncio.TimeoutError, OSError) as e:
            raise UserError(f"nothing answers at {self.base_url} ({type(e).__name__}): start a "
                            "server with `labkit serve ...` or check --base-url") from None

    async def send(self, req: Request, rec: RequestRecord, t0: float) -> RequestRecord:
        """Send one streaming request; fill `rec` in place. Never raises for server faults."""
        import aiohttp

        loop = asyncio.get_running_loop()
        # Serialise before taking the send time: our own JSON work is not server latency.
        body = json.dumps(build_payload(req, self.api, self.model)).encode()
        pieces: list[str] = []
        done = finished = False
        tail = b""
        rec.sent = loop.time() - t0
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as resp:
                if resp.status != 200:
                    rec.error = f"http_{resp.status}"
                    rec.error_detail = (await resp.text())[:200]
                    return rec
                # Read whatever bytes arrived rather than awaiting one line at a time:
                # fewer wake-ups per request, which is what a 2-core client runs out of.
                # Every event in one read gets that read's time: when we could see it.
                async for data in resp.content.iter_any():
                    now = loop.time() - t0
                    lines = (tail + data).split(b"\n")
                    tail = lines.pop()  # an incomplete line waits for the next read
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue  # blank separators, comments, "event:" lines
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            done = True
                            break
                        obj = json.loads(payload)
                        if obj.get("error"):
                            rec.error = "error_in_stream"
                            rec.error_detail = str(obj["error"])[:200]
                            break
                        if obj.get("usage"):
                            rec.prompt_tokens = obj["usage"].get("prompt_tokens")
                            rec.completion_tokens = obj["usage"].get("completion_tokens")
                        choices = obj.get("choices")
                        if choices and choices[0].get("finish_reason"):
                            finished = True
                        text = _chunk_text(obj, self.api)
                        if not text:
                            continue
                        if rec.first_token is None:
                            rec.first_token = now
                        rec.chunk_times.append(now)
                        rec.chunk_tokens.append(
                            self.count_tokens(text) if self.count_tokens else 1)
                        pieces.append(text)
                    if done or rec.error:
                        break
            if rec.error is None and not (done or finished):
                rec.error = "dropped_stream"
                rec.error_detail = "stream ended before [DONE] or a finish_reason"
        except asyncio.TimeoutError:
            rec.error, rec.error_detail = "timeout", f"no complete answer within {self.timeout:g} s"
        except aiohttp.ClientConnectorError as e:
            refused = isinstance(getattr(e, "os_error", None), ConnectionRefusedError)
            rec.error = "connection_refused" if refused else "connection_error"
            rec.error_detail = str(e)[:200]
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                ConnectionResetError) as e:
            rec.error, rec.error_detail = "dropped_stream", f"{type(e).__name__}: {e}"[:200]
        except aiohttp.ClientError as e:
            rec.error, rec.error_detail = "connection_error", f"{type(e).__name__}: {e}"[:200]
        except json.JSONDecodeError as e:
            rec.error, rec.error_detail = "bad_response", f"not JSON in stream: {e}"[:200]
        finally:
            rec.end = loop.time() - t0
            if self.count_tokens and pieces:
                rec.client_tokens = self.count_tokens("".join(pieces))
            else:
                rec.client_tokens = len(rec.chunk_times)
        return rec
