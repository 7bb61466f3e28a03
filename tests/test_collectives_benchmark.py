"""`labkit collectives` on real gloo ranks: rows, bandwidth arithmetic, checks, unsupported ops."""

import argparse
import json

import pytest

from labkit.collectives import cli
from labkit.collectives.busbw import OPS, busbw_factor
from labkit.collectives.benchmark import run_collectives
from labkit.collectives.launch import launch
from labkit.collectives.table import format_table, parse_size, size_sweep
from labkit.errors import UserError


def run_cli(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_two_gloo_ranks_every_op(tmp_path, capsys):
    out = tmp_path / "coll.json"
    rc = run_cli(["collectives", "--backend", "gloo", "--nproc", "2", "--min-bytes", "1K",
                  "--max-bytes", "64K", "--factor", "8", "--iters", "3", "--warmup", "1",
                  "--json", str(out), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["op"] for r in rows] == [op for op in OPS for _ in range(3)]
    for r in rows:
        assert r["supported"] and r["correct"] is True and r["wrong"] == 0
        assert r["size_bytes"] in (1024, 8192, 65536)
        assert 0 < r["time_us_min"] <= r["time_us_mean"] <= r["time_us_max"]
        # algbw is S / mean time; busbw is algbw times nccl-tests' factor
        n_S = r["count"] * 4 * (2 if r["op"] in ("all_gather", "reduce_scatter",
                                                 "all_to_all") else 1)
        assert r["algbw_GBps"] == pytest.approx(n_S / (r["time_us_mean"] * 1e-6) / 1e9)
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * busbw_factor(r["op"], 2))
    table = capsys.readouterr().out
    assert "size         count      type   redop    root     time" in table
    assert "# wrong elements: 0 OK" in table
    assert table.count("# all_reduce: avg bus bandwidth") == 1


def test_checker_counts_a_corrupted_element_for_every_op():
    results = launch("distributed_workers:corrupt_and_count", nproc=2, backend="gloo",
                     args={"nbytes": 4096}, timeout=120, log=None)
    for op, (clean, corrupted) in results[0].items():
        assert clean == 0, f"{op}: correct result counted as wrong"
        assert corrupted == 1, f"{op}: one corrupted element gave {corrupted} wrong"
    assert all(v == [0, 0] for v in results[1].values())  # rank 1 was not touched


def test_op_the_backend_refuses_is_an_unsupported_row_not_a_crash():
    # gloo in torch 2.13 has all_to_all and reduce_scatter, but no float8 reductions
    report = run_collectives(backend="gloo", nproc=2, ops=["all_reduce", "broadcast"],
                             sizes=[64], dtype="float8_e4m3fn", iters=2, warmup=1, log=None)
    ar = report["rows"][0]
    assert ar["op"] == "all_reduce" and ar["supported"] is False
    assert "not supported by gloo" in ar["reason"]
    text = format_table(report)
    assert "# all_reduce: not supported by gloo" in text


def test_sizes_are_read_like_nccl_tests():
    assert parse_size("1K") == 1024 and parse_size("64M") == 64 << 20
    assert parse_size("1GiB") == 1 << 30 and parse_size("512") == 512
    assert size_sweep(1024, 1 << 20, 4) == [1024, 4096, 16384, 65536, 262144, 1048576]
    assert size_sweep(8, 8, 1) == [8]
    with pytest.raises(UserError):
        parse_size("1X")
    with pytest.raises(UserError):
        size_sweep(1024, 1 << 20, 1)


def test_unknown_op_is_a_user_error_before_launching():
    with pytest.raises(UserError, match="unknown op"):
        run_collectives(backend="gloo", ops=["allreduce"])
