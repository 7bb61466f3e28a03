"""Deliberate slowness for alert drills, switched on and off while the server runs.

An alert is only trusted once it has been seen to fire and to resolve. Lab 31 makes the
teaching engine slow on purpose, watches its SLO alert go pending → firing, removes the
cause and watches it resolve. The switch is a file (`--fault-file PATH`), read before every
engine step: no HTTP endpoint that could slow a server, nothing to restart.

    echo step_delay_ms=200 > PATH    every step sleeps 200 ms first (TTFT and ITL grow)
    rm PATH                          back to normal at the next step

The file is stat()ed once per step (about a microsecond) and re-read only when it changes.
"""

from __future__ import annotations

import os
import time


class FaultFile:
    def __init__(self, path: str):
        self.path = path
        self._stamp: int | None = None
        self.step_delay_s = 0.0

    def _reload(self) -> None:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self._stamp, self.step_delay_s = None, 0.0
            return
        if stamp == self._stamp:
            return
        self._stamp, self.step_delay_s = stamp, 0.0
        try:
            text = open(self.path).read()
        except OSError:
            return
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "step_delay_ms":
                try:
                    self.step_delay_s = max(0.0, float(value)) / 1e3
                except ValueError:
                    pass  # a half-written file: read again at the next change

    def before_step(self) -> float:
        """Sleep the injected delay, if any; return it (seconds)."""
        self._reload()
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        return self.step_delay_s


def set_fault(path, step_delay_ms: float | None) -> None:
    """Turn the fault on (a delay in ms) or off (None), atomically."""
    if step_delay_ms is None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"step_delay_ms={step_delay_ms}\n")
    os.replace(tmp, path)
