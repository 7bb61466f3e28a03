"""Price catalog: what an instance-hour costs, per cloud, in SkyPilot's catalog shape.

The shipped table is labkit/cost/data/prices.csv. Its columns are SkyPilot's
(skypilot-org/skypilot-catalog, v8): InstanceType, AcceleratorName, AcceleratorCount, vCPUs,
MemoryGiB, Price, SpotPrice, Region, AvailabilityZone, plus three of ours: Cloud, Source and
Date, so every figure says where it came from and when. Prices are **per instance-hour**:
an 8-GPU p5.48xlarge at $55.04/h is $6.88 per GPU-hour.

SkyPilot's own files put the columns in a different order per cloud, so this loader reads by
header name, never by position. Traps seen in real catalog rows, each caught here with a
message naming the row and the fix:

    SpotPrice empty        no spot market (Lambda) -> spot_price is None, not 0
    SpotPrice > Price      a listing error (RunPod L40S): spot is never dearer than on demand
    Price <= 0             a typo or a free tier that nobody can rent
    AcceleratorCount wrong a count that disagrees with the instance name (gpu_8x_... = 8)
    unknown GPU name       "H100-SXM" instead of "H100": the error lists the names we know

A user override file (same columns, any order, only the columns you need beyond the required
ones) replaces rows with the same (Cloud, InstanceType, Region) and adds new ones: use it for
your negotiated price or a newer figure.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import UserError

SHIPPED = Path(__file__).with_name("data") / "prices.csv"

REQUIRED = ["InstanceType", "AcceleratorName", "AcceleratorCount", "Price", "SpotPrice",
            "Region", "Cloud", "Source", "Date"]
OPTIONAL = ["vCPUs", "MemoryGiB", "AvailabilityZone"]

# Accelerator names as SkyPilot spells them; a CPU-only row leaves AcceleratorName empty.
KNOWN_GPUS = ["A10G", "A100", "A100-80GB", "B200", "H100", "H200", "L4", "L40S", "T4", "V100"]

# GPUs per instance where the name says it: Lambda/RunPod "8x", GCP "-8g", AWS families.
_COUNT_IN_NAME = [re.compile(r"(?:^|_)(\d+)x[_]"), re.compile(r"-(\d+)g$")]
AWS_GPU_COUNTS = {"p5.48xlarge": 8, "p5en.48xlarge": 8, "p4d.24xlarge": 8, "p4de.24xlarge": 8,
                  "g6.xlarge": 1, "g6.2xlarge": 1, "g6.4xlarge": 1, "g6e.xlarge": 1,
                  "g6e.2xlarge": 1, "g6e.4xlarge": 1, "g6e.12xlarge": 4, "g6e.48xlarge": 8}


@dataclass(frozen=True)
class PriceRow:
    cloud: str
    instance_type: str
    accelerator: str | None  # None for a CPU-only instance
    accelerator_count: int
    price: float  # $ per instance-hour, on demand
    spot_price: float | None  # $ per instance-hour on spot; None = no spot market
    region: str
    zone: str
    vcpus: float | None
    memory_gib: float | None
    source: str
    date: str

    @property
    def per_gpu_hour(self) -> float:
        """On-demand $ per accelerator-hour (a CPU row: per instance-hour)."""
        return self.price / max(self.accelerator_count, 1)

    @property
    def spot_per_gpu_hour(self) -> float | None:
        return None if self.spot_price is None else self.spot_price / max(self.accelerator_count, 1)

    @property
    def label(self) -> str:
        what = f"{self.accelerator_count}x{self.accelerator}" if self.accelerator else "CPU"
        return f"{self.cloud} {self.instance_type} ({what})"


def _number(text: str, column: str, where: str, integer: bool = False) -> float | int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {column} is {text!r}, not a number; write it as e.g. 3.004")
    if integer:
        if value != int(value):
            raise UserError(f"{where}: {column} is {text!r}; it must be a whole number")
        return int(value)
    return value


def _expected_count(instance: str) -> int | None:
    if instance in AWS_GPU_COUNTS:
        return AWS_GPU_COUNTS[instance]
    for pattern in _COUNT_IN_NAME:
        m = pattern.search(instance)
        if m:
            return int(m.group(1))
    return None


def parse_row(raw: dict[str, str], where: str) -> PriceRow:
    """One CSV row (a dict keyed by header) -> a validated PriceRow, or a UserError."""
    get = lambda col: (raw.get(col) or "").strip()  # noqa: E731
    instance = get("InstanceType")
    if not instance:
        raise UserError(f"{where}: InstanceType is empty; every row names the instance it prices")
    where = f"{where} ({get('Cloud')} {instance})"
    gpu = get("AcceleratorName") or None
    if gpu is not None and gpu not in KNOWN_GPUS:
        raise UserError(f"{where}: unknown GPU {gpu!r}; known GPUs: {', '.join(KNOWN_GPUS)} "
                        "(leave AcceleratorName empty for a CPU-only instance)")
    count = _number(get("AcceleratorCount"), "AcceleratorCount", where, integer=True) or 0
    if gpu and count < 1:
        raise UserError(f"{where}: AcceleratorName is {gpu} but AcceleratorCount is {count}; "
                        "give the number of GPUs in one instance")
    if not gpu and count:
        raise UserError(f"{where}: AcceleratorCount is {count} but AcceleratorName is empty; "
                        "name the GPU or set the count to 0")
    expected = _expected_count(instance) if gpu else None
    if expected is not None and expected != count:
        raise UserError(f"{where}: AcceleratorCount is {count} but the instance name says "
                        f"{expected} GPUs; fix the count (prices are per instance, not per GPU)")
    price = _number(get("Price"), "Price", where)
    if price is None or price <= 0:
        raise UserError(f"{where}: Price is {get('Price') or 'empty'}; it must be a positive "
                        "$ per instance-hour")
    spot = _number(get("SpotPrice"), "SpotPrice", where)
    if spot is not None and spot <= 0:
        raise UserError(f"{where}: SpotPrice is {spot}; leave it empty when there is no spot "
                        "market, or give a positive $ per instance-hour")
    if spot is not None and spot > price:
        raise UserError(f"{where}: SpotPrice {spot} is above the on-demand Price {price}: a "
                        "listing error; leave SpotPrice empty (no spot) or correct it")
    return PriceRow(cloud=get("Cloud"), instance_type=instance, accelerator=gpu,
                    accelerator_count=count, price=price, spot_price=spot,
                    region=get("Region"), zone=get("AvailabilityZone"),
                    vcpus=_number(get("vCPUs"), "vCPUs", where),
                    memory_gib=_number(get("MemoryGiB"), "MemoryGiB", where),
                    source=get("Source"), date=get("Date"))


def read_csv(path: Path | str) -> list[PriceRow]:
    """Read and validate one catalog file; columns may come in any order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no price file at {path}; give a CSV with columns {', '.join(REQUIRED)}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; the header needs "
                            f"{', '.join(REQUIRED)} (any order; optional: {', '.join(OPTIONAL)})")
        reader.fieldnames = header
        return [parse_row(raw, f"{path.name} line {i}") for i, raw in enumerate(reader, start=2)]


def load_catalog(override: Path | str | None = None, shipped: Path | str = SHIPPED
                 ) -> list[PriceRow]:
    """The shipped rows, with an override file's rows replacing same-key rows or added."""
    rows = {(r.cloud, r.instance_type, r.region): r for r in read_csv(shipped)}
    if override is not None:
        for r in read_csv(override):
            rows[(r.cloud, r.instance_type, r.region)] = r
    return list(rows.values())


def for_gpu(rows: list[PriceRow], gpu: str) -> list[PriceRow]:
    """Rows of one GPU, cheapest per GPU-hour first; an unknown name lists the known ones."""
    if gpu.upper() == "CPU":
        picked = [r for r in rows if r.accelerator is None]
    else:
        by_name = {g.lower(): g for g in KNOWN_GPUS}
        if gpu.lower() not in by_name:
            raise UserError(f"unknown GPU {gpu!r}; known GPUs: {', '.join(KNOWN_GPUS)}, or CPU")
        picked = [r for r in rows if r.accelerator == by_name[gpu.lower()]]
    return sorted(picked, key=lambda r: r.per_gpu_hour)


def cpu_row(rows: list[PriceRow]) -> PriceRow:
    """The CPU-tier instance the CPU labs price their throughput with."""
    cpus = for_gpu(rows, "CPU")
    if not cpus:
        raise UserError("the price catalog has no CPU-only row (empty AcceleratorName); add one "
                        "to your override file")
    return cpus[0]


def format_rows(rows: list[PriceRow]) -> str:
    head = (f"{'cloud':<7} {'instance':<22} {'GPUs':<12} {'$/h':>9} {'spot $/h':>9} "
            f"{'$/GPU-h':>8}  source (date)")
    lines = [head, "-" * len(head)]
    for r in rows:
        gpus = f"{r.accelerator_count}x{r.accelerator}" if r.accelerator else "CPU"
        spot = f"{r.spot_price:9.4g}" if r.spot_price is not None else f"{'—':>9}"
        lines.append(f"{r.cloud:<7} {r.instance_type:<22} {gpus:<12} {r.price:9.4g} {spot} "
                     f"{r.per_gpu_hour:8.4g}  {r.source} ({r.date})")
    return "\n".join(lines)
