"""The engine's own process: the step loop, fed through a pipe (vLLM's EngineCoreProc).

Why a separate process: the HTTP server spends CPU on every token it streams (JSON,
SSE framing, sockets). In one Python process that work and the step loop take turns on
one GIL, and every forward pass waits for the web server's turn — the engine runs at the
speed of its slowest neighbour. vLLM v1 splits the two for this reason: the API server
process tokenises and streams, the EngineCore process only schedules and runs the model.

    server process                          engine-core process (this module)
    ("add", (request_id, ids, params, t)) ─► engine.add_request
    ("abort", request_id)               ─► engine.abort_request
    ("stop", None)                      ─► exit
                                        ◄─ ("ready", info) once the model is loaded
                                        ◄─ ("outputs", [RequestOutput, ...], stats) per step

The process ignores SIGINT and SIGTERM: the server finishes the running requests first
and then sends "stop". If the server dies, the pipe closes and this loop exits too.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import traceback


def run_engine_core(config, requests, outputs) -> None:
    """Process entry point. requests: Connection to receive from; outputs: to send to.

    With LABKIT_ENGINE_PROFILE=FILE set, the loop runs under cProfile and writes its stats
    to FILE on shutdown (`python -m pstats FILE`, then `sort tottime`, `stats 20`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    profile_path = os.environ.get("LABKIT_ENGINE_PROFILE")
    if not profile_path:
        return _loop(config, requests, outputs)
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(_loop, config, requests, outputs)
    finally:
        profiler.dump_stats(profile_path)


def _sender(outputs, pending: queue.SimpleQueue) -> None:
    """Writes to the pipe for the loop, so a step never waits for a busy server process to
    read the previous step's outputs (a full pipe would block send)."""
    try:
        while (message := pending.get()) is not None:
            outputs.send(message)
    except (BrokenPipeError, OSError):  # the server is gone; the loop notices and exits
        pass


def _loop(config, requests, outputs) -> None:
    from labkit.engine.engine import LLMEngine, RequestOutput

    try:
        engine = LLMEngine(config)
    except Exception as e:  # a bad model directory, out of memory...: the server reports it
        outputs.send(("error", f"{type(e).__name__}: {e}"))
        return
    outputs.send(("ready", {"kv_cache_bytes": engine.runner.kv_cache_bytes}))
    pending: queue.SimpleQueue = queue.SimpleQueue()
    sender = threading.Thread(target=_sender, args=(outputs, pending), daemon=True)
    sender.start()
    try:
        _steps(engine, requests, pending, RequestOutput)
    finally:
        pending.put(None)
        sender.join(5)


def _steps(engine, requests, pending, RequestOutput) -> None:
    while True:
        outs = []
        # Idle: sleep until a message comes (poll(None) also wakes when the server dies).
        # Busy: take whatever has arrived, without waiting, and run the next step.
        timeout = 0 if engine.has_unfinished() else None
        while requests.poll(timeout):
            try:
                kind, value = requests.recv()
            except EOFError:  # the server is gone
                return
            if kind == "stop":
                return
            if kind == "add":
                request_id, prompt_ids, params, arrival = value
                try:
                    engine.add_request(prompt_ids, params, request_id, arrival)
                except ValueError:  # the server checks first; this is a safety net
                    outs.append(RequestOutput(request_id, [], "", True, "abort"))
            elif kind == "abort":
                out = engine.abort_request(value)
                if out is not None:
                    outs.append(out)
            timeout = 0
        try:
            outs += engine.step()
        except Exception:  # a bug, not the client's fault: fail the requests, keep serving
            traceback.print_exc()
            outs += [o for rid in list(engine.sequences) if (o := engine.abort_request(rid))]
        pending.put(("outputs", outs, engine.stats()))
