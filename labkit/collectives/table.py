"""Sizes the way nccl-tests takes them (`-b 1K -e 64M -f 2`) and its results table.

nccl-tests uses binary units: 1K = 1024 bytes, 1M = 1024**2, 1G = 1024**3.
"""

from __future__ import annotations

import re

from labkit.errors import UserError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str | int) -> int:
    """'64M' -> 67108864. Accepts 512, 1K, 1KB, 1KiB, 64M, 1G (all binary, like nccl-tests)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise UserError(f"cannot read size {text!r}; write e.g. 512, 1K, 64M or 1G (binary units)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def size_sweep(min_bytes: int, max_bytes: int, factor: float = 2) -> list[int]:
    """min, min*factor, ... up to max (inclusive), as nccl-tests' -b/-e/-f."""
    if min_bytes < 1 or max_bytes < min_bytes:
        raise UserError(f"need 1 <= min-bytes <= max-bytes, got {min_bytes} and {max_bytes}")
    if factor <= 1 and min_bytes != max_bytes:
        raise UserError(f"factor must be > 1 to go from {min_bytes} to {max_bytes} bytes")
    sizes, s = [], min_bytes
    while s <= max_bytes:
        sizes.append(int(s))
        if factor <= 1:
            break
        s = int(s * factor) if int(s * factor) > s else s + 1
    return sizes


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    raise AssertionError


HEADER = (
    "#       size         count      type   redop    root     time      min      max"
    "   algbw   busbw  #wrong\n"
    "#        (B)    (elements)                               (us)     (us)     (us)"
    "  (GB/s)  (GB/s)        "
)


def format_table(report: dict) -> str:
    """The report from run_collectives as nccl-tests prints it, one block per op."""
    lines = [
        f"# labkit collectives: backend {report['backend']}, {report['nranks']} ranks, "
        f"{report.get('device', '?')}, torch {report.get('torch', '?')}",
        f"# iters {report['iters']}, warmup {report['warmup']}, check "
        f"{'on' if report['check'] else 'off'}; time = slowest rank's mean per iteration "
        "(as nccl-tests); min/max: its fastest/slowest iteration",
    ]
    for op in dict.fromkeys(r["op"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["op"] == op]
        if not rows[0]["supported"]:
            lines += ["#", f"# {op}: {rows[0]['reason']}"]
            continue
        lines += ["#", f"# {op} (out-of-place where torch allows; all_reduce/broadcast in place)",
                  HEADER]
        for r in rows:
            wrong = "N/A" if r["wrong"] is None else str(r["wrong"])
            lines.append(
                f"{r['size_bytes']:12d}  {r['count']:12d}  {r['dtype']:>8s}  {r['redop']:>6s}"
                f"  {r['root']:6d}  {r['time_us_mean']:7.1f}  {r['time_us_min']:7.1f}"
                f"  {r['time_us_max']:7.1f}  {r['algbw_GBps']:6.2f}  {r['busbw_GBps']:6.2f}"
                f"  {wrong:>6s}"
            )
        avg = sum(r["busbw_GBps"] for r in rows) / len(rows)
        lines.append(f"# {op}: avg bus bandwidth {avg:.3f} GB/s over {len(rows)} sizes")
    checked = [r for r in report["rows"] if r.get("wrong") is not None]
    if checked:
        bad = sum(r["wrong"] for r in checked)
        lines.append(f"# wrong elements: {bad} {'OK' if bad == 0 else 'FAILED'}")
    return "\n".join(lines)
