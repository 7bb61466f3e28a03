"""A GPU exporter with dcgm-exporter's names, read through NVML (nvidia-ml-py).

Dashboards and alerts written against dcgm-exporter (what GPU clusters run) work on this one
unchanged: same metric names, types, units and labels (gpu, UUID, device, modelName,
Hostname, pci_bus_id). Counters keep dcgm-exporter's names, without a `_total` suffix.

    DCGM_FI_DEV_GPU_UTIL            gauge    %    share of time any kernel ran (not SM use!)
    DCGM_FI_DEV_MEM_COPY_UTIL       gauge    %    share of time memory was read or written
    DCGM_FI_DEV_FB_USED/FREE/RESERVED gauge  MiB  framebuffer memory
    DCGM_FI_DEV_POWER_USAGE         gauge    W
    DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter mJ since the driver loaded
    DCGM_FI_DEV_GPU_TEMP / MEMORY_TEMP gauge °C
    DCGM_FI_DEV_SM_CLOCK / MEM_CLOCK gauge   MHz
    DCGM_FI_DEV_PCIE_REPLAY_COUNTER counter       PCIe retries (a flaky link shows here)
    DCGM_FI_DEV_XID_ERRORS          gauge         last XID error seen (0: none)
    DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL counter    NVLink data TX + RX (NVML throughput fields)
    DCGM_FI_PROF_SM_ACTIVE, SM_OCCUPANCY, PIPE_TENSOR_ACTIVE, DRAM_ACTIVE, GR_ENGINE_ACTIVE
                                    gauge 0..1    Hopper+ (GPM): two samples an interval
                                                  apart; NVML gives percent, DCGM ratios
"GPU utilisation" says a kernel was running, not how much of the GPU it used: a kernel on
one SM of 132 shows 100 %. Read SM_ACTIVE beside it.

A field a device does not support is skipped and counted in
labkit_exporter_field_errors_total{field}, never fatal. Without an NVIDIA GPU the exporter
still serves: labkit_exporter_gpus 0, labkit_exporter_no_gpu_info{reason}, and the host's
CPU and memory, so the dashboards and labs run on the CPU tier too.

    labkit exporter --port 9400                         # until Ctrl-C, 127.0.0.1 only
    with start_exporter() as url: ...                   # in a lab: a thread, a free port
"""

from __future__ import annotations

import contextlib
import platform
import threading
import time

DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "pci_bus_id"]
# dcgm name → (type, help). The order is the order of the exposition.
FIELDS = {
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %)."),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("gauge", "Memory utilization (in %)."),
    "DCGM_FI_DEV_FB_USED": ("gauge", "Framebuffer memory used (in MiB)."),
    "DCGM_FI_DEV_FB_FREE": ("gauge", "Framebuffer memory free (in MiB)."),
    "DCGM_FI_DEV_FB_RESERVED": ("gauge", "Framebuffer memory reserved (in MiB)."),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W)."),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("counter", "Total energy consumption since boot (in mJ)."),
    "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C)."),
    "DCGM_FI_DEV_MEMORY_TEMP": ("gauge", "Memory temperature (in C)."),
    "DCGM_FI_DEV_SM_CLOCK": ("gauge", "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEM_CLOCK": ("gauge", "Memory clock frequency (in MHz)."),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("counter", "Total number of PCIe retries."),
    "DCGM_FI_DEV_XID_ERRORS": ("gauge", "Value of the last XID error encountered."),
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": ("counter", "Total number of NVLink bandwidth counters for all lanes."),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gauge", "Ratio of time the graphics engine is active."),
    "DCGM_FI_PROF_SM_ACTIVE": ("gauge", "The ratio of cycles an SM has at least 1 warp assigned."),
    "DCGM_FI_PROF_SM_OCCUPANCY": ("gauge", "The ratio of number of warps resident on an SM."),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("gauge", "Ratio of cycles the device memory interface is active."),
}
GPM = {  # dcgm name → the pynvml GPM metric id constant (values in percent)
    "DCGM_FI_PROF_SM_ACTIVE": "NVML_GPM_METRIC_SM_UTIL",
    "DCGM_FI_PROF_SM_OCCUPANCY": "NVML_GPM_METRIC_SM_OCCUPANCY",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    "DCGM_FI_PROF_DRAM_ACTIVE": "NVML_GPM_METRIC_DRAM_BW_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "NVML_GPM_METRIC_GRAPHICS_UTIL",
}


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class GpuCollector:
    """A prometheus_client collector: NVML read on every scrape (`nvml` is pynvml or a fake)."""

    def __init__(self, nvml=None, gpm_window_s: float = 0.2):
        if nvml is None:
            import pynvml as nvml
        self.nvml, self.gpm_window_s = nvml, gpm_window_s
        self.host = platform.node()
        self.errors: dict[str, int] = {}
        self.no_gpu_reason: str | None = None
        self.handles: list = []
        self._gpm_prev: dict[int, tuple[object, float]] = {}
        self._last_xid: dict[int, int] = {}
        self._events = None
        self._lock = threading.Lock()
        try:
            nvml.nvmlInit()
            self.handles = [nvml.nvmlDeviceGetHandleByIndex(i)
                            for i in range(nvml.nvmlDeviceGetCount())]
            if not self.handles:
                self.no_gpu_reason = "NVML found no GPU"
        except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound on a CPU machine
            self.no_gpu_reason = f"{type(e).__name__}: {e}"
        self.labels = [self._labels(i, h) for i, h in enumerate(self.handles)]
        self._watch_xids()

    def _labels(self, i: int, h) -> list[str]:
        n = self.nvml
        pci = self._try("pci_bus_id", lambda: _s(n.nvmlDeviceGetPciInfo(h).busId))
        return [str(i), self._try("UUID", lambda: _s(n.nvmlDeviceGetUUID(h))) or "",
                f"nvidia{i}", self._try("modelName", lambda: _s(n.nvmlDeviceGetName(h))) or "",
                self.host, pci or ""]

    def _try(self, field: str, fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - one unsupported field must not stop a scrape
            self.errors[field] = self.errors.get(field, 0) + 1
            return None

    def _watch_xids(self) -> None:
        n = self.nvml
        if not self.handles:
            return
        with contextlib.suppress(Exception):
            self._events = n.nvmlEventSetCreate()
            for h in self.handles:
                n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, self._events)

    def _drain_xids(self) -> None:
        n = self.nvml
        while self._events is not None:
            try:
                ev = n.nvmlEventSetWait(self._events, 0)  # 0 ms: never blocks a scrape
            except Exception:  # noqa: BLE001 - NVML_ERROR_TIMEOUT: no event pending
                return
            for i, h in enumerate(self.handles):
                if ev.device == h:
                    self._last_xid[i] = int(ev.eventData)

    def read(self, i: int, h) -> dict[str, float]:
        """Every dcgm field this device answers, as {name: value}."""
        n, out = self.nvml, {}

        def put(name, fn):
            v = self._try(name, fn)
            if v is not None:
                out[name] = float(v)

        util = self._try("DCGM_FI_DEV_GPU_UTIL", lambda: n.nvmlDeviceGetUtilizationRates(h))
        if util is not None:
            out["DCGM_FI_DEV_GPU_UTIL"], out["DCGM_FI_DEV_MEM_COPY_UTIL"] = util.gpu, util.memory
        mem = self._try("DCGM_FI_DEV_FB_USED",
                        lambda: n.nvmlDeviceGetMemoryInfo(h, version=n.nvmlMemory_v2))
        if mem is not None:
            out["DCGM_FI_DEV_FB_USED"] = mem.used / 2**20
            out["DCGM_FI_DEV_FB_FREE"] = mem.free / 2**20
            out["DCGM_FI_DEV_FB_RESERVED"] = getattr(mem, "reserved", 0) / 2**20
        put("DCGM_FI_DEV_POWER_USAGE", lambda: n.nvmlDeviceGetPowerUsage(h) / 1000)  # mW → W
        put("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            lambda: n.nvmlDeviceGetTotalEnergyConsumption(h))
        put("DCGM_FI_DEV_GPU_TEMP",
            lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
        put("DCGM_FI_DEV_MEMORY_TEMP", lambda: self._field(h, n.NVML_FI_DEV_MEMORY_TEMP))
        put("DCGM_FI_DEV_SM_CLOCK", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))
        put("DCGM_FI_DEV_MEM_CLOCK", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM))
        put("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", lambda: n.nvmlDeviceGetPcieReplayCounter(h))
        put("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
            lambda: self._field(h, n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX)
            + self._field(h, n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX))
        out["DCGM_FI_DEV_XID_ERRORS"] = float(self._last_xid.get(i, 0))
        out.update(self._gpm(i, h))
        return out

    def _field(self, h, field_id) -> float:
        """One NVML field value (nvmlDeviceGetFieldValues), as a number."""
        n = self.nvml
        [v] = n.nvmlDeviceGetFieldValues(h, [field_id])
        if getattr(v, "nvmlReturn", 0) != 0:
            raise RuntimeError(f"field {field_id}: NVML return {v.nvmlReturn}")
        kind = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal"}.get(
            getattr(v, "valueType", 3), "ullVal")
        return float(getattr(v.value, kind))

    def _gpm(self, i: int, h) -> dict[str, float]:
        """GPM metrics need two samples: this scrape's and the previous one (or one taken
        gpm_window_s ago, on the first scrape). Percent from NVML → a 0..1 ratio as DCGM."""
        n = self.nvml
        if not hasattr(n, "nvmlGpmSampleGet"):
            return {}
        supported = self._try("gpm", lambda: n.nvmlGpmQueryDeviceSupport(h).isSupportedDevice)
        if not supported:
            return {}
        now = n.nvmlGpmSampleAlloc()
        n.nvmlGpmSampleGet(h, now)
        prev, _ = self._gpm_prev.get(i, (None, 0.0))
        if prev is None:
            prev = now
            time.sleep(self.gpm_window_s)
            now = n.nvmlGpmSampleAlloc()
            n.nvmlGpmSampleGet(h, now)
        self._gpm_prev[i] = (now, time.monotonic())
        req = n.c_nvmlGpmMetricsGet_t()
        req.version, req.numMetrics = n.NVML_GPM_METRICS_GET_VERSION, len(GPM)
        req.sample1, req.sample2 = prev, now
        for k, const in enumerate(GPM.values()):
            req.metrics[k].metricId = getattr(n, const)
        got = self._try("gpm", lambda: n.nvmlGpmMetricsGet(req))
        out = {}
        for k, name in enumerate(GPM):
            if got is not None and got.metrics[k].nvmlReturn == 0:
                out[name] = got.metrics[k].value / 100.0
            else:
                self.errors[name] = self.errors.get(name, 0) + 1
        return out

    def exposition(self) -> str:
        """The /metrics text. DCGM families are written here, not by prometheus_client: it
        would name a counter's TYPE line `X_total`, and dcgm-exporter's is plain `X`."""
        from prometheus_client import CollectorRegistry, generate_latest

        with self._lock:
            self._drain_xids()
            readings = [self.read(i, h) for i, h in enumerate(self.handles)]
        lines = []
        for name, (kind, doc) in FIELDS.items():
            rows = [(labels, r[name]) for labels, r in zip(self.labels, readings) if name in r]
            if rows:
                lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
                lines += [f"{name}{{{_label_text(labels)}}} {value!r}" for labels, value in rows]
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Own(self))
        return "\n".join(lines) + ("\n" if lines else "") + generate_latest(reg).decode()

    def own_metrics(self):
        import psutil
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("labkit_exporter_gpus", "NVIDIA GPUs this exporter reads.",
                                value=len(self.handles))
        if self.no_gpu_reason:
            info = GaugeMetricFamily("labkit_exporter_no_gpu_info",
                                     "1 when no GPU could be read, with the reason.",
                                     labels=["reason"])
            info.add_metric([self.no_gpu_reason[:200]], 1)
            yield info
        errs = CounterMetricFamily("labkit_exporter_field_errors",
                                   "Reads of a field that failed (unsupported, not permitted).",
                                   labels=["field"])
        for field, count in sorted(self.errors.items()):
            errs.add_metric([field], count)
        yield errs
        yield GaugeMetricFamily("labkit_host_cpu_percent", "Host CPU utilisation (in %).",
                                value=psutil.cpu_percent(interval=None))
        vm = psutil.virtual_memory()
        yield GaugeMetricFamily("labkit_host_memory_used_bytes", "Host memory in use.",
                                value=vm.total - vm.available)
        yield GaugeMetricFamily("labkit_host_memory_total_bytes", "Host memory.",
                                value=vm.total)


def _label_text(values: list[str]) -> str:
    esc = [v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values]
    return ",".join(f'{k}="{v}"' for k, v in zip(DCGM_LABELS, esc))


class _Own:
    """The exporter's own metrics (gpus found, field errors, host), for prometheus_client."""

    def __init__(self, collector):
        self.collector = collector

    def collect(self):
        return self.collector.own_metrics()


def serve(port: int = 0, nvml=None, host: str = "127.0.0.1"):
    """An HTTP server answering /metrics from a GpuCollector; returns (server, thread)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    collector = GpuCollector(nvml)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "try /metrics")
                return
            body = collector.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # one line per scrape would drown the terminal
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="gpu-exporter")
    thread.start()
    return server, thread


@contextlib.contextmanager
def start_exporter(port: int = 0, nvml=None):
    """Serve the exporter from a thread on 127.0.0.1 until the block ends; yields its URL."""
    server, thread = serve(port, nvml)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
