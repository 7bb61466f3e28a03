"""Run the engine's step loop in a background thread; HTTP handlers await their outputs.

    HTTP handler (event loop)                      engine thread
    ─────────────────────────                      ─────────────
    seq = engine.make_sequence(...)   (400 here)
    submit(seq, queue) ──── inbox ───────────────► add_sequence(seq)
                                                   loop: outs = engine.step()
    await queue.get()  ◄── call_soon_threadsafe ── one callback per step, all outputs
    client gone → abort(id) ── inbox ────────────► abort_request(id): blocks freed

Why a thread and not an asyncio task: a step is a forward pass of milliseconds; run on
the event loop it would stall every other connection for that long. torch releases the
GIL inside its kernels, so the HTTP side keeps answering while the model runs.
Only the engine thread touches engine state; the inbox is the only way in.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import traceback


class AsyncEngine:
    def __init__(self, engine):
        self.engine = engine
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.streams: dict[str, asyncio.Queue] = {}  # request id -> its handler's queue
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labkit-engine", daemon=True)

    # -- event-loop side -----------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.inbox.put(("wake", None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, seq, out_queue: asyncio.Queue) -> None:
        """Hand a checked Sequence to the engine; its RequestOutputs arrive on out_queue."""
        self.streams[seq.request_id] = out_queue
        self.inbox.put(("add", seq))

    def abort(self, request_id: str) -> None:
        if self.streams.pop(request_id, None) is not None:
            self.inbox.put(("abort", request_id))

    def _dispatch(self, outputs) -> None:
        """Runs on the event loop: route each output to the handler waiting for it."""
        for out in outputs:
            q = self.streams.get(out.request_id)
            if q is None:
                continue  # the client left; the abort is on its way to the engine
            q.put_nowait(out)
            if out.finished:
                del self.streams[out.request_id]

    # -- engine-thread side ----------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        while not self._stop.is_set():
            # Idle: sleep until a request arrives. Busy: take what came in, then step.
            self._drain(block=not engine.has_unfinished())
            if self._stop.is_set() or not engine.has_unfinished():
                continue
            try:
                outputs = engine.step()
            except Exception:  # a bug, not the client's fault: fail the requests, keep serving
                traceback.print_exc()
                outputs = self._abort_all()
            if outputs:
                self.loop.call_soon_threadsafe(self._dispatch, outputs)

    def _drain(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, value = item
            if kind == "add":
                self.engine.add_sequence(value)
            elif kind == "abort":
                self.engine.abort_request(value)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _abort_all(self):
        from labkit.engine.engine import RequestOutput

        outs = []
        for rid in list(self.engine.sequences):
            self.engine.abort_request(rid)
            outs.append(RequestOutput(rid, [], "", True, "abort"))
        return outs
