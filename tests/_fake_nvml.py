"""A stand-in for pynvml with two Hopper-like GPUs, for the exporter's GPU code paths.

Values are chosen so a test can check every conversion: 60 000 mW → 60 W, 8 GiB → 8192 MiB,
GPM 37.5 % → 0.375. `fail` names calls that raise, as unsupported fields do on real GPUs.
"""

from types import SimpleNamespace

NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
NVML_FI_DEV_MEMORY_TEMP = 82
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX = 138, 139
nvmlMemory_v2 = 0x02000028
nvmlEventTypeXidCriticalError = 8
NVML_GPM_METRICS_GET_VERSION = 1
NVML_GPM_METRIC_GRAPHICS_UTIL, NVML_GPM_METRIC_SM_UTIL, NVML_GPM_METRIC_SM_OCCUPANCY = 1, 2, 3
NVML_GPM_METRIC_ANY_TENSOR_UTIL, NVML_GPM_METRIC_DRAM_BW_UTIL = 5, 10
GPM_PERCENT = {1: 90.0, 2: 37.5, 3: 12.5, 5: 25.0, 10: 80.0}


class NVMLError(Exception):
    pass


class FakeNVML:
    def __init__(self, count=2, fail=(), xid=None):
        self.count, self.fail, self.xid = count, set(fail), xid
        self.initialised = False
        for name, value in globals().items():  # pynvml's constants, as module attributes
            if name.startswith(("NVML_", "nvmlMemory", "nvmlEvent")):
                setattr(self, name, value)

    def _check(self, name):
        if name in self.fail:
            raise NVMLError(f"{name}: Not Supported")

    def nvmlInit(self):
        self.initialised = True

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"handle{i}"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-0000-{h[-1]}"

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=f"00000000:1{h[-1]}:00.0")

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=97, memory=41)

    def nvmlDeviceGetMemoryInfo(self, h, version=None):
        return SimpleNamespace(used=8 * 2**30, free=72 * 2**30, reserved=512 * 2**20)

    def nvmlDeviceGetPowerUsage(self, h):
        return 60_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return 123_456_789

    def nvmlDeviceGetTemperature(self, h, kind):
        return 54

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980 if kind == NVML_CLOCK_SM else 2619

    def nvmlDeviceGetPcieReplayCounter(self, h):
        self._check("nvmlDeviceGetPcieReplayCounter")
        return 3

    def nvmlDeviceGetFieldValues(self, h, ids):
        self._check("nvmlDeviceGetFieldValues")
        value = {NVML_FI_DEV_MEMORY_TEMP: 61, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: 1000,
                 NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: 500}[ids[0]]
        return [SimpleNamespace(nvmlReturn=0, valueType=3,
                                value=SimpleNamespace(ullVal=value))]

    # XID events
    def nvmlEventSetCreate(self):
        return "events"

    def nvmlDeviceRegisterEvents(self, h, kind, events):
        pass

    def nvmlEventSetWait(self, events, timeout_ms):
        if self.xid is None:
            raise NVMLError("Timeout")
        device, data, self.xid = self.xid[0], self.xid[1], None
        return SimpleNamespace(device=device, eventData=data)

    # GPM
    def nvmlGpmQueryDeviceSupport(self, h):
        self._check("nvmlGpmQueryDeviceSupport")
        return SimpleNamespace(isSupportedDevice=1)

    def nvmlGpmSampleAlloc(self):
        return object()

    def nvmlGpmSampleGet(self, h, sample):
        return sample

    def c_nvmlGpmMetricsGet_t(self):
        metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(8)]
        return SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None,
                               metrics=metrics)

    def nvmlGpmMetricsGet(self, req):
        assert req.sample1 is not None and req.sample2 is not None  # two samples, always
        for m in req.metrics[:req.numMetrics]:
            m.value = GPM_PERCENT[m.metricId]
        return req
