"""The `labkit` command: one sub-command per learner task.

Each feature module owns its sub-commands through a `register(subparsers)` function, so
this file stays a table of contents. Modules listed here must import only the standard
library at module level (torch and friends load inside the command functions), which keeps
`labkit --help` instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from labkit import __version__
from labkit.errors import UserError

# Order is the order `labkit --help` lists them: roughly the roadmap order.
COMMAND_MODULES = [
    "labkit.env",  # doctor
    "labkit.gpu_check",  # gpu-check
    "labkit.cloud.cli",  # cloud task / validate / fetch (SkyPilot)
    "labkit.run_labs",  # run
    "labkit.models.cli",  # model build / info
    "labkit.exercises",  # exercises export / reset
    "labkit.lab_server",  # lab (JupyterLab on the learner copies)
    "labkit.collectives.cli",  # collectives
    "labkit.training.cli",  # train (DDP, fault drill)
    "labkit.cluster.cli",  # manifests, nccl-log, topo
    "labkit.kvcache.cli",  # kvcache simulate / trace
    "labkit.serve.cli",  # serve
    "labkit.bench.cli",  # bench
    "labkit.observe.cli",  # prom up / down / status / targets, exporter
    "labkit.cost.cli",  # cost prices / per-token / monthly / spot
    "labkit.portfolio.cli",  # portfolio build
]

EPILOG = """\
typical session:
  labkit doctor                 what this machine can run, and what to install for the rest
  labkit run                    run every lab on the CPU tier (papermill), recording results
  labkit run 00 -p matmul_size=512
  labkit portfolio build runs/latest
  labkit model build            build (or find) the tiny Llama and print its path
  labkit lab                    work through the labs by hand in JupyterLab (127.0.0.1)

Every sub-command has its own --help.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labkit",
        description="Hands-on labs for AI infrastructure engineering: run, measure, publish.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except UserError as e:  # a problem the user can fix: no traceback, just what to do
        print(f"labkit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
