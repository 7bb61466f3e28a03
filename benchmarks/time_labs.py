"""How long do the labs take on this machine? (Target: lab 00 under 60 s on 2 cores.)

Runs `labkit run` (all labs, or the ones named) on the CPU profile into a scratch runs folder
and prints one Markdown row per lab from each lab's status.json, plus the total wall time,
ready to paste into benchmarks/README.md.

    python benchmarks/time_labs.py            # every lab
    python benchmarks/time_labs.py 00         # just lab 00
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit.env import cpu_model, memory_and_disk


def main(labs: list[str]) -> int:
    out = Path(tempfile.mkdtemp(prefix="labkit-time-"))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "labkit.cli", "run", *labs, "--out", str(out)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    m = memory_and_disk()
    print(f"machine: {cpu_model()}, {m['cpu_cores']} cores, {m['memory_total_gib']} GiB; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| lab | status | seconds |\n|---|---|---|")
    for status in sorted(run_dir.glob("*/status.json")):
        s = json.loads(status.read_text())
        print(f"| {status.parent.name} | {s['status']} | {s.get('seconds', '?')} |")
    print(f"| **all ({' '.join(labs) or 'every lab'})**, wall time of `labkit run` | "
          f"{'ok' if r.returncode == 0 else 'failed'} | {wall:.1f} |")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
