import json

from labkit import cli, env


def test_no_gpu_is_a_normal_answer():
    g = env.gpus()
    # On a CI machine without a driver NVML is missing; on a GPU box we get a list.
    assert isinstance(g["gpus"], list)
    if not g["gpus"]:
        assert "no NVIDIA GPU" in g["note"] or "NVML" in g["note"]


def test_doctor_json_has_every_section_and_a_lab_table(capsys):
    assert cli.main(["doctor", "--json", "--quick"]) == 0
    facts = json.loads(capsys.readouterr().out)
    for key in ("machine", "python", "versions", "torch", "git", "engines", "binaries", "labs"):
        assert key in facts
    row = next(r for r in facts["labs"] if r["lab"] == "00_orientation")
    assert row["cpu"] == "ready"
    if not facts["torch"]["cuda_available"]:
        assert row["gpu"] == "missing cuda_gpu" and "GPU" in row["gpu_fix"][0]


def test_engine_import_reports_missing_package_plainly():
    r = env.engine_import("labkit_no_such_engine")
    assert r == {"ok": False, "version": None, "error": "not installed"}


def test_report_names_what_to_install(capsys):
    facts = env.doctor_facts(check_engines=False)
    text = env.format_report(facts)
    assert "00_orientation" in text and "tiers:" in text
