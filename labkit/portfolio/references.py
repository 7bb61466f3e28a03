"""Published reference figures a measured result should be read against, with their source.

These are not measurements of this run: a page shows them *beside* what was measured, named
as published references with where they come from, so a reader can judge a CPU-tier number
against what the same operation does on the hardware the job is about. Values from
/work/shared/FIELD_NOTES.md (each traced to its public source there).
"""

REFERENCES = {
    "h100_bf16_tflops": {
        "value": 989, "unit": "TFLOP/s", "what": "H100 SXM dense BF16 peak",
        "source": "NVIDIA H100 datasheet"},
    "h100_hbm_tbs": {
        "value": 3.35, "unit": "TB/s", "what": "H100 SXM HBM3 bandwidth peak",
        "source": "NVIDIA H100 datasheet"},
    "nccl_8xh100_allreduce_ring_busbw": {
        "value": 370, "unit": "GB/s", "what": "8×H100 NVSwitch all_reduce busbw, ring",
        "source": "NVIDIA/nccl-tests issue #212"},
    "nccl_8xh100_allreduce_nvls_busbw": {
        "value": 480, "unit": "GB/s", "what": "8×H100 NVSwitch all_reduce busbw, NVLS",
        "source": "NVIDIA/nccl-tests issue #212"},
    "nccl_ndr_ib_busbw_per_nic": {
        "value": "46–48", "unit": "GB/s", "what": "NDR 400G InfiniBand busbw per NIC",
        "source": "NVIDIA/nccl-tests issue #290"},
}


def reference(key: str) -> str:
    """'989 TFLOP/s (H100 SXM dense BF16 peak; NVIDIA H100 datasheet)' for a template."""
    r = REFERENCES[key]
    return f"{r['value']} {r['unit']} ({r['what']}; source: {r['source']})"
