"""`labkit portfolio build RUN_DIR [RUN_DIR …] [--out DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_build(args) -> int:
    from labkit import runs
    from labkit.portfolio.build import build

    run_dirs = [runs.resolve_run_dir(r) for r in args.run]
    name = "+".join(d.name for d in run_dirs)
    out = Path(args.out) if args.out else Path("portfolio") / name
    pages = build(run_dirs if len(run_dirs) > 1 else run_dirs[0], out)
    for p in pages:
        print(p)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "portfolio", help="build case-study pages from a run's recorded results",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="portfolio_cmd", metavar="ACTION", required=True)
    b = s.add_parser(
        "build", help="render portfolio_templates/ from a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render one Markdown page per lab (reads well on GitHub) plus README.md "
        "and a single self-contained portfolio.html with the figures embedded. Every number "
        "comes from the run's results.json; a result the run did not record is shown as "
        "'not measured in this run', never invented. Each page lists the hardware, the "
        "versions and the exact command that reproduces it. Several runs (e.g. a CPU run and "
        "a GPU run copied back from a rented box) merge into one portfolio; every page and "
        "figure says which tier measured it.",
        epilog="examples:\n  labkit portfolio build runs/latest\n"
        "  labkit portfolio build 20261127-101500-cpu --out ~/site/labkit\n"
        "  labkit portfolio build latest runs/20261128-090000-h100   CPU + GPU in one")
    b.add_argument("run", metavar="RUN_DIR", nargs="+",
                   help="run directory, run id, or 'latest'; several merge into one portfolio")
    b.add_argument("--out", metavar="DIR", help="output folder (default portfolio/<run-id>[+<run-id>…])")
    b.set_defaults(func=cmd_build)
