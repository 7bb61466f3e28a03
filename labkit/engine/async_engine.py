"""The server's handle on the engine-core process (vLLM's AsyncLLM).

    HTTP handler (event loop)                       engine-core process (engine_core.py)
    ─────────────────────────                       ────────────────────────────────────
    params = check_request(...)     (400 here)
    submit(id, ids, params, queue) ── pipe ───────► add_request
    await queue.get()  ◄── reader thread ◄── pipe ─ ("outputs", [...], stats) every step
    client gone → abort(id)        ── pipe ───────► abort_request: blocks freed

A reader thread waits on the output pipe (blocking reads release the GIL) and hands each
step's outputs to the event loop in one call_soon_threadsafe. There, one callback routes
each output to the queue of the handler waiting for it and feeds the Prometheus metrics
(prometheus_metrics.py). (The event loop cannot watch the pipe itself: add_reader would make the file
descriptor non-blocking, and multiprocessing's recv() cannot resume a half-read message.)
"""

from __future__ import annotations

import asyncio
import threading

from labkit.engine.engine_core import run_engine_core
from labkit.errors import UserError


class AsyncEngine:
    def __init__(self, config, metrics):
        import multiprocessing as mp

        self.config, self.metrics = config, metrics
        # spawn, not fork: a forked child would inherit torch's OpenMP threads half-built.
        ctx = mp.get_context("spawn")
        req_recv, self._req_send = ctx.Pipe(duplex=False)
        self._out_recv, out_send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=run_engine_core, args=(config, req_recv, out_send),
                                name="labkit-engine-core", daemon=True)
        self.streams: dict[str, asyncio.Queue] = {}  # request id -> its handler's queue
        self.info: dict = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float = 600) -> None:
        """Start the engine process and wait until its model is loaded (blocking)."""
        self.proc.start()
        if not self._out_recv.poll(timeout):
            self.proc.kill()
            raise UserError(f"the engine process did not load the model within {timeout:.0f} s")
        try:
            kind, payload = self._out_recv.recv()
        except EOFError:
            raise UserError(f"the engine process died while loading the model (exit code "
                            f"{self.proc.exitcode}); see the messages above") from None
        if kind == "error":
            raise UserError(f"the engine could not start: {payload}")
        self.info = payload

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Route the engine's outputs on this event loop (call from the loop, at startup)."""
        self.loop = loop
        threading.Thread(target=self._read_outputs, name="labkit-engine-reader", daemon=True).start()

    def _read_outputs(self) -> None:
        """Reader thread: everything the engine sent, batched into one loop callback."""
        while True:
            try:
                messages = [self._out_recv.recv()]
                while self._out_recv.poll():
                    messages.append(self._out_recv.recv())
            except (EOFError, OSError):  # the engine process is gone
                messages = None
            loop = self.loop
            if loop is None or loop.is_closed():
                return
            loop.call_soon_threadsafe(self._on_outputs, messages)
            if messages is None:
                return

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def submit(self, request_id: str, prompt_ids: list[int], params, arrival: float,
               out_queue: asyncio.Queue) -> None:
        """Queue a checked request; its RequestOutputs arrive on out_queue."""
        self.streams[request_id] = out_queue
        self._req_send.send(("add", (request_id, prompt_ids, params, arrival)))

    def abort(self, request_id: str) -> None:
        if self.streams.pop(request_id, None) is not None and self.alive:
            self._req_send.send(("abort", request_id))

    def stop(self, timeout: float = 10.0) -> None:
        self.loop = None  # the reader thread stops delivering
        if self.alive:
            try:
                self._req_send.send(("stop", None))
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)

    def _on_outputs(self, messages) -> None:
        """Runs on the event loop: route each output to its handler; update the metrics."""
        if messages is None:  # the engine process died: fail every open request
            from labkit.engine.engine import RequestOutput

            for rid, q in list(self.streams.items()):
                q.put_nowait(RequestOutput(rid, [], "", True, "abort"))
            self.streams.clear()
            return
        for _, outputs, stats in messages:
            for out in outputs:
                self.metrics.observe(out)
                q = self.streams.get(out.request_id)
                if q is None:
                    continue  # the client left; the abort is on its way to the engine
                q.put_nowait(out)
                if out.finished:
                    del self.streams[out.request_id]
            self.metrics.update(stats)
