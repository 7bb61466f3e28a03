"""The OpenAI-compatible HTTP API (the subset every bench and client here uses).

    POST /v1/completions       prompt: str | [str] | [int] | [[int]]   → text_completion
    POST /v1/chat/completions  messages → the tokenizer's chat template → chat.completion
    GET  /v1/models            the one served model
    GET  /health               200 while the engine process runs
    GET  /metrics              Prometheus text format, vLLM metric names (prometheus_metrics.py)

Sampling fields: max_tokens (chat: also max_completion_tokens), temperature (default 1),
top_p, seed, stop, plus vLLM's extensions ignore_eos, stop_token_ids and return_token_ids.
Streaming (`"stream": true`) sends Server-Sent Events: `data: {chunk}` lines, then
`data: [DONE]`. With `stream_options: {"include_usage": true}` every chunk carries
`"usage": null` and one last chunk with no choices carries the token counts.
When the engine is ahead of the client, tokens waiting in the queue go out as one chunk.
Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}, so the
official client raises BadRequestError / NotFoundError with the message.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations
# (request: Request) at run time, and Request is imported inside build_app.
import asyncio
import json
import time
import uuid

from labkit.engine.engine import check_request
from labkit.engine.sequence import SamplingParams


class APIError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param

    def body(self) -> dict:
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(self.status, "InternalServerError")
        return {"error": {"message": str(self), "type": kind, "param": self.param,
                          "code": self.status}}


def build_app(async_engine, metrics, tokenizer):
    """The FastAPI app. async_engine: a started AsyncEngine; tokenizer: the model's HF one."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    config = async_engine.config
    served_model_name = config.served_model_name
    created = int(time.time())

    async def lifespan(app):
        async_engine.attach(asyncio.get_running_loop())
        yield
        async_engine.stop()

    app = FastAPI(title="labkit teaching engine", lifespan=lifespan)

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/health")
    async def health():
        return Response(status_code=200 if async_engine.alive else 503)

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": served_model_name, "object": "model", "created": created, "owned_by": "labkit",
            "root": config.model, "parent": None, "max_model_len": config.max_model_len,
            "dtype": config.resolved_dtype, "dtype_reason": config.dtype_reason,
            "attention": config.attention}]}

    async def parse(request: Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError("the request body must be a JSON object")
        if body.get("model") not in (None, served_model_name):
            raise APIError(f"The model `{body['model']}` does not exist.", 404, "model")
        for field, ok in (("n", 1), ("best_of", 1)):
            if body.get(field, ok) not in (ok, None):
                raise APIError(f"{field} > 1 is not supported by the teaching engine", param=field)
        if body.get("logprobs") or body.get("top_logprobs") or body.get("echo"):
            raise APIError("logprobs and echo are not supported by the teaching engine")
        return body

    @app.post("/v1/completions")
    async def completions(request: Request):
        arrival = time.monotonic()
        body = await parse(request)
        prompts = _prompt_token_ids(body.get("prompt"), tokenizer)
        params = _sampling_params(body, body.get("max_tokens") or 16)
        return await respond(body, prompts, params, arrival, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        arrival = time.monotonic()
        body = await parse(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError("messages must be a non-empty list", param="messages")
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # no template, or a message the template cannot render
            raise APIError(f"cannot apply the chat template: {e}", param="messages") from None
        # The template writes <s> itself: do not add special tokens a second time.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        params = _sampling_params(body, max_tokens or max(1, config.max_model_len - len(ids)))
        return await respond(body, [ids], params, arrival, chat=True)

    async def respond(body, prompts, params, arrival, chat):
        try:
            checked = [check_request(config, len(ids), params) for ids in prompts]
        except ValueError as e:
            raise APIError(str(e)) from None
        if not async_engine.alive:
            raise APIError("the engine process is not running; restart the server", 500)
        q: asyncio.Queue = asyncio.Queue()
        index = {}
        for i, (ids, p) in enumerate(zip(prompts, checked)):
            rid = uuid.uuid4().hex
            index[rid] = i
            async_engine.submit(rid, ids, p, arrival, q)
        meta = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()),
                "model": served_model_name}
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream(async_engine, q, index, meta, chat, usage),
                                     media_type="text/event-stream")
        try:
            results = await _collect(q, index)
        finally:
            for rid in index:
                async_engine.abort(rid)  # no-op for finished requests; frees the rest
        return _full_response(results, meta, chat, bool(body.get("return_token_ids")))

    return app


def _prompt_token_ids(prompt, tokenizer) -> list[list[int]]:
    """str | [str] | [int] | [[int]] → one token id list per prompt (strings get <s>)."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise APIError("prompt must be a string, a list of strings or a list of token ids",
                       param="prompt")
    if all(isinstance(t, int) for t in prompt):
        return [prompt]
    out = []
    for p in prompt:
        if isinstance(p, str):
            out.append(tokenizer(p)["input_ids"])
        elif isinstance(p, list) and all(isinstance(t, int) for t in p):
            out.append(p)
        else:
            raise APIError("prompt must be a string, a list of strings or a list of token ids",
                           param="prompt")
    return out


def _sampling_params(body: dict, max_tokens: int) -> SamplingParams:
    stop = body.get("stop") or []
    try:
        return SamplingParams(
            max_tokens=int(max_tokens),
            temperature=float(body["temperature"]) if body.get("temperature") is not None else 1.0,
            top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
            seed=body.get("seed"), stop=[stop] if isinstance(stop, str) else list(stop),
            stop_token_ids=list(body.get("stop_token_ids") or []),
            ignore_eos=bool(body.get("ignore_eos", False)))
    except (TypeError, ValueError) as e:
        raise APIError(f"bad sampling parameter: {e}") from None


async def _collect(q: asyncio.Queue, index: dict) -> dict:
    """Wait for every request of this HTTP call to finish; accumulate text and token ids."""
    results = {rid: {"text": "", "token_ids": []} for rid in index}
    pending = len(index)
    while pending:
        out = await q.get()
        r = results[out.request_id]
        r["text"] += out.new_text
        r["token_ids"] += out.new_token_ids
        if out.finished:
            r["out"] = out
            pending -= 1
    return results


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _full_response(results: dict, meta: dict, chat: bool, token_ids: bool) -> dict:
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for i, r in enumerate(results.values()):
        out = r["out"]
        prompt_tokens += out.num_prompt_tokens
        completion_tokens += out.num_output_tokens
        choice = {"index": i, "finish_reason": out.finish_reason, "stop_reason": out.stop_reason,
                  "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": r["text"]}
        else:
            choice["text"] = r["text"]
        if token_ids:  # vLLM's return_token_ids extension: what the tests compare
            choice["token_ids"] = r["token_ids"]
        choices.append(choice)
    return {**meta, "object": "chat.completion" if chat else "text_completion",
            "choices": choices, "usage": _usage(prompt_tokens, completion_tokens)}


async def _stream(async_engine, q: asyncio.Queue, index: dict, meta: dict, chat: bool,
                  include_usage: bool):
    """Server-Sent Events. Cancelled when the client disconnects: then abort the requests."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if include_usage else {}

    def event(choices, **more) -> str:
        return "data: " + json.dumps({**meta, "object": obj, "choices": choices, **extra, **more}) + "\n\n"

    prompt_tokens = completion_tokens = 0
    pending = set(index)
    try:
        if chat:  # OpenAI's first chat chunk announces the role
            yield event([{"index": i, "delta": {"role": "assistant", "content": ""},
                          "logprobs": None, "finish_reason": None} for i in index.values()])
        while pending:
            outs = [await q.get()]
            while not q.empty():  # the engine got ahead of us: send the backlog as one chunk
                outs.append(q.get_nowait())
            merged: dict[str, list] = {}
            for out in outs:
                merged.setdefault(out.request_id, []).append(out)
            choices = []
            for rid, group in merged.items():
                last = group[-1]
                text = "".join(o.new_text for o in group)
                choice = {"index": index[rid], "logprobs": None,
                          "finish_reason": last.finish_reason if last.finished else None}
                if last.finished:
                    choice["stop_reason"] = last.stop_reason
                    pending.discard(rid)
                    prompt_tokens += last.num_prompt_tokens
                    completion_tokens += last.num_output_tokens
                if chat:
                    choice["delta"] = {"content": text} if text or not last.finished else {}
                else:
                    choice["text"] = text
                choices.append(choice)
            yield event(choices)
        if include_usage:
            yield event([], usage=_usage(prompt_tokens, completion_tokens))
        yield "data: [DONE]\n\n"
    finally:
        for rid in pending:
            async_engine.abort(rid)
