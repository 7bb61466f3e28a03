from labkit import roofline


def test_probe_measures_positive_ceilings():
    r = roofline.probe(matmul_size=128, copy_mib=8, device="cpu")
    assert r["matmul"]["tflops"] > 0 and r["copy"]["gbs"] > 0
    assert r["peak"] is None  # no datasheet figure for a CPU: nothing invented
    # intensity of an n³ fp32 matmul is 2n³ / (3·n²·4) = n/6
    assert abs(r["matmul"]["intensity"] - 128 / 6) < 1e-9


def test_known_peaks_match_nvml_names():
    assert roofline.known_peak("NVIDIA H100 80GB HBM3")["bf16_tflops"] == 989
    assert roofline.known_peak("NVIDIA H200")["bw_tbs"] == 4.8
    assert roofline.known_peak("Quadro K600") is None
    # whole words only: a GH200 superchip is not an H200, an L40S is not an L4
    assert roofline.known_peak("NVIDIA GH200 480GB") is None
    assert roofline.known_peak("NVIDIA L40S")["label"] == "L40S"
    assert roofline.known_peak("NVIDIA L4")["label"] == "L4"
