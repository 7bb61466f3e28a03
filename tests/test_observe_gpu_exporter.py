"""The GPU exporter: dcgm-exporter's names, types, units and labels through a fake NVML, and
the real no-GPU path of this machine."""

import re
import urllib.request

import pytest

from _fake_nvml import FakeNVML
from labkit.observe.gpu_exporter import DCGM_LABELS, FIELDS, GpuCollector, start_exporter


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def samples(text):
    """{sample name as written: [(labels, value, TYPE)]} — the names exactly as exposed (a
    client library's parser would add `_total` to counters, hiding the point of the test)."""
    types, out = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append(
                (labels, float(m.group(3)), types.get(m.group(1), "?")))
    return out


def test_every_dcgm_field_with_its_name_type_unit_and_labels():
    with start_exporter(nvml=FakeNVML(count=2)) as url:
        text = scrape(url)
    got = samples(text)
    for name, (kind, _) in FIELDS.items():
        assert name in got, name
        assert f"# TYPE {name} {kind}" in text
        assert len(got[name]) == 2  # one series per GPU
    labels = got["DCGM_FI_DEV_GPU_UTIL"][0][0]
    assert set(labels) == set(DCGM_LABELS)
    assert labels["modelName"] == "NVIDIA H100 80GB HBM3" and labels["device"] == "nvidia0"
    assert labels["pci_bus_id"] == "00000000:10:00.0" and labels["UUID"] == "GPU-0000-0"
    v = {n: got[n][0][1] for n in got}
    assert v["DCGM_FI_DEV_POWER_USAGE"] == 60.0  # mW → W
    assert v["DCGM_FI_DEV_FB_USED"] == 8192 and v["DCGM_FI_DEV_FB_RESERVED"] == 512  # MiB
    assert v["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == 123_456_789  # mJ, counter
    assert v["DCGM_FI_PROF_SM_ACTIVE"] == 0.375 and v["DCGM_FI_PROF_DRAM_ACTIVE"] == 0.8
    assert v["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"] == 1500
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total" not in got  # dcgm's names exactly
    assert v["labkit_exporter_gpus"] == 2


def test_an_unsupported_field_is_skipped_and_counted_never_fatal():
    nvml = FakeNVML(count=1, fail={"nvmlDeviceGetPcieReplayCounter", "nvmlGpmQueryDeviceSupport"})
    col = GpuCollector(nvml)
    col.exposition()  # a first scrape: the failures are counted from then on
    got = samples(_expose(col))
    assert "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" not in got
    assert "DCGM_FI_PROF_SM_ACTIVE" not in got  # no GPM on this device
    assert "DCGM_FI_DEV_GPU_UTIL" in got  # the rest is still there
    errors = {s[0]["field"]: s[1] for s in got["labkit_exporter_field_errors_total"]}
    assert errors["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"] >= 1 and errors["gpm"] >= 1


def test_an_xid_error_shows_on_its_gpu():
    col = GpuCollector(FakeNVML(count=2, xid=("handle1", 79)))
    got = samples(_expose(col))
    by_gpu = {s[0]["gpu"]: s[1] for s in got["DCGM_FI_DEV_XID_ERRORS"]}
    assert by_gpu == {"0": 0.0, "1": 79.0}


def _expose(collector):
    return collector.exposition()


def test_without_a_gpu_it_serves_the_reason_and_the_host():
    pytest.importorskip("pynvml")
    with start_exporter() as url:  # the real pynvml: no NVIDIA driver on this machine
        assert url.startswith("http://127.0.0.1:")
        got = samples(scrape(url))
    if got["labkit_exporter_gpus"][0][1] > 0:
        pytest.skip("this machine has an NVIDIA GPU")
    assert not [n for n in got if n.startswith("DCGM_")]
    [(labels, value, _)] = got["labkit_exporter_no_gpu_info"]
    assert value == 1 and "NVML" in labels["reason"]
    assert got["labkit_host_memory_total_bytes"][0][1] > 0
    assert 0 <= got["labkit_host_cpu_percent"][0][1] <= 100
