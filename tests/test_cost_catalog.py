"""labkit.cost.catalog: the shipped price table, read by header name, and its validation."""

import pytest

from labkit.cost import catalog
from labkit.errors import UserError

HEADER = ("InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,"
          "Region,AvailabilityZone,Cloud,Source,Date")


def write(tmp_path, *lines, header=HEADER, name="p.csv"):
    p = tmp_path / name
    p.write_text("\n".join([header, *lines]) + "\n")
    return p


def test_shipped_catalog_covers_the_gpus_clouds_and_a_cpu_row():
    rows = catalog.load_catalog()
    gpus = {r.accelerator for r in rows}
    assert {"H100", "H200", "A100-80GB", "L40S", "L4"} <= gpus
    assert {"AWS", "GCP", "Lambda", "RunPod"} <= {r.cloud for r in rows}
    assert all(r.source and r.date for r in rows)
    cpu = catalog.cpu_row(rows)
    assert cpu.accelerator is None and cpu.accelerator_count == 0


def test_per_gpu_hour_divides_the_instance_price():
    p5 = next(r for r in catalog.load_catalog() if r.instance_type == "p5.48xlarge")
    assert p5.per_gpu_hour == pytest.approx(55.04 / 8)  # 6.88
    assert p5.spot_per_gpu_hour == pytest.approx(17.63 / 8)
    gcp = next(r for r in catalog.load_catalog() if r.cloud == "GCP")
    assert gcp.price == pytest.approx(1.18251 + 9.79655)  # VM row + accelerator row


def test_columns_in_another_order_are_read_by_name(tmp_path):
    cols = HEADER.split(",")[::-1]
    vals = "p5.48xlarge,H100,8,192,2048,55.04,17.63,us-east-1,,AWS,src,2026-11".split(",")[::-1]
    rows = catalog.read_csv(write(tmp_path, ",".join(vals), header=",".join(cols)))
    assert rows[0].price == 55.04 and rows[0].accelerator_count == 8
    assert rows[0].spot_price == 17.63


def test_empty_spot_means_no_spot(tmp_path):
    rows = catalog.read_csv(write(tmp_path, "g6.xlarge,L4,1,4,16,0.8048,,,,AWS,s,d"))
    assert rows[0].spot_price is None and rows[0].spot_per_gpu_hour is None


@pytest.mark.parametrize("line, words", [
    ("x1,H100-SXM,1,,,4.0,,,,Lambda,s,d", ["unknown GPU 'H100-SXM'", "H100", "L40S"]),
    ("x1,H100,1,,,0,,,,Lambda,s,d", ["Price is 0", "positive"]),
    ("x1,H100,1,,,-2,,,,Lambda,s,d", ["Price is -2"]),
    ("8x_H100_SXM,H100,8,,,21.52,23.92,,,RunPod,s,d", ["SpotPrice 23.92 is above", "21.52"]),
    ("x1,H100,1,,,4,0,,,Lambda,s,d", ["SpotPrice is 0.0"]),
    ("gpu_8x_a100_80gb_sxm4,A100-80GB,1,,,22.32,,,,Lambda,s,d", ["AcceleratorCount is 1",
                                                                "says 8"]),
    ("p5.48xlarge,H100,1,,,55.04,,,,AWS,s,d", ["AcceleratorCount is 1", "says 8"]),
    ("x1,H100,0,,,4,,,,Lambda,s,d", ["AcceleratorCount is 0"]),
    ("c5.2xlarge,,2,,,0.34,,,,AWS,s,d", ["AcceleratorName is empty"]),
    ("x1,H100,1.5,,,4,,,,Lambda,s,d", ["whole number"]),
    ("x1,H100,1,,,cheap,,,,Lambda,s,d", ["'cheap', not a number"]),
])
def test_bad_rows_get_a_message_naming_the_problem(tmp_path, line, words):
    with pytest.raises(UserError) as e:
        catalog.read_csv(write(tmp_path, line))
    for w in words:
        assert w in str(e.value)
    assert "line 2" in str(e.value)


def test_missing_column_is_named(tmp_path):
    header = HEADER.replace(",SpotPrice", "")
    with pytest.raises(UserError, match="missing column.*SpotPrice"):
        catalog.read_csv(write(tmp_path, "g6.xlarge,L4,1,4,16,0.8,,,AWS,s,d", header=header))


def test_override_replaces_same_row_and_adds_new(tmp_path):
    over = write(tmp_path, "p5.48xlarge,H100,8,192,2048,40.00,,us-east-1,,AWS,my deal,2026-12",
                 "gpu_1x_h200,H200,1,,,3.00,,,,Lambda,quote,2026-12", name="mine.csv")
    rows = catalog.load_catalog(override=over)
    p5 = [r for r in rows if r.instance_type == "p5.48xlarge"]
    assert len(p5) == 1 and p5[0].price == 40.0 and p5[0].spot_price is None
    assert any(r.instance_type == "gpu_1x_h200" for r in rows)
    assert len(rows) == len(catalog.load_catalog()) + 1


def test_for_gpu_sorts_by_gpu_hour_and_rejects_unknown_names():
    h100 = catalog.for_gpu(catalog.load_catalog(), "h100")
    per_hour = [r.per_gpu_hour for r in h100]
    assert per_hour == sorted(per_hour) and len(h100) >= 3
    assert h100[0].per_gpu_hour == pytest.approx(21.52 / 8)  # RunPod 8x: $2.69/GPU-h
    with pytest.raises(UserError, match="known GPUs: .*A100-80GB"):
        catalog.for_gpu(catalog.load_catalog(), "H1000")


def test_format_rows_shows_dash_for_no_spot():
    text = catalog.format_rows(catalog.for_gpu(catalog.load_catalog(), "H200"))
    assert "p5en.48xlarge" in text and "—" in text
