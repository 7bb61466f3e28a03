"""What runs inside each rank started by `labkit.collectives.launch`.

    python -m labkit.collectives.worker SPEC.json RANK

The parent writes SPEC.json (target "module:function", its keyword args, backend, world size,
init method). This process joins the process group, calls the function and hands its return
value back as `result-<rank>.json`; if anything raises, the traceback goes to
`error-<rank>.txt` so the parent can show *this* rank's traceback instead of a wall of
"connection closed by peer" messages from the others.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path


def resolve(target: str):
    """Import "package.module:function" (the function may be a dotted attribute path)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _exit_with_parent(poll_s: float = 0.5) -> None:
    """Die if the launcher dies.

    Ranks run in their own sessions (so the launcher can kill each rank's whole process group),
    which also means a launcher killed with SIGKILL would leave them running forever. A
    daemon thread that notices re-parenting closes that gap.
    """
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _write_atomic(path: Path, text: str) -> None:
    # Write-then-rename: the parent never reads half a file.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_error(run_dir: Path, rank: int) -> None:
    path = run_dir / f"error-{rank}.txt"
    if not path.exists():  # keep the first (root) traceback of this rank
        _write_atomic(path, traceback.format_exc())


def run(spec: dict, rank: int) -> None:
    run_dir = Path(spec["run_dir"])
    dist = None
    if spec["init_process_group"]:
        from datetime import timedelta

        import torch.distributed as dist  # only here: a worker without a group skips torch

        if spec["backend"] == "nccl":
            import torch

            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(
            spec["backend"],
            init_method=spec["init_method"],
            rank=rank,
            world_size=spec["world_size"],
            timeout=timedelta(seconds=spec["pg_timeout_s"]),
        )
    try:
        fn = resolve(spec["target"])
        result = fn(**spec["args"])
        try:
            text = json.dumps(result)
        except TypeError as e:
            raise TypeError(
                f"{spec['target']} returned a {type(result).__name__} that is not JSON "
                f"serialisable ({e}); return plain lists/dicts/numbers (e.g. tensor.tolist())"
            ) from None
        _write_atomic(run_dir / f"result-{rank}.json", text)
    except BaseException:
        # Before destroy_process_group: closing our sockets makes the peers fail too, and the
        # launcher blames whoever wrote a traceback first. That must be us, the root cause.
        write_error(run_dir, rank)
        raise
    finally:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, rank = Path(argv[0]), int(argv[1])
    _exit_with_parent()
    spec = json.loads(spec_path.read_text())
    try:
        run(spec, rank)
    except BaseException:  # noqa: BLE001 - every failure, even SystemExit, must reach the parent
        # Not printed here: the launcher raises it once, tagged with this rank.
        write_error(Path(spec["run_dir"]), rank)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
