"""cpu_gemm.py: oneDNN-packed weights give x @ W (to float32 rounding), where they apply."""

import pytest

from labkit.engine.fast.cpu_gemm import Linear, PackedLinear, can_pack, make_linear

torch = pytest.importorskip("torch")


@pytest.fixture
def weight():
    torch.manual_seed(0)
    return torch.randn(256, 768)  # [in, out], as llama.py stores it


needs_onednn = pytest.mark.skipif(not can_pack("cpu", torch.float32),
                                  reason="this torch build has no oneDNN linear")


@needs_onednn
@pytest.mark.parametrize("rows", [2, 8, 33, 300])
def test_packed_matmul_equals_x_at_w_to_float32_rounding(weight, rows):
    lin = make_linear(weight)
    assert isinstance(lin, PackedLinear) and lin.packed is not None
    x = torch.randn(rows, 256)
    y, ref = lin(x), x @ weight
    assert y.shape == ref.shape == (rows, 768)
    # Sums of 256 products of N(0, 1) values: |ref| ~ 16, float32 rounding ~ 1e-5 of that.
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_one_row_keeps_the_plain_matmul_bit_for_bit(weight):
    """A batch of one takes MKL's matrix-vector path, which packs nothing and is faster."""
    x = torch.randn(1, 256)
    assert torch.equal(make_linear(weight)(x), x @ weight)


def test_torch_gemm_other_dtypes_and_devices_stay_plain(weight):
    x = torch.randn(8, 256)
    plain = make_linear(weight, "torch")
    assert type(plain) is Linear and torch.equal(plain(x), x @ weight)
    half = make_linear(weight.bfloat16())
    assert type(half) is Linear  # only float32 is packed
    assert not can_pack("cuda", torch.float32)
    with pytest.raises(ValueError, match="onednn"):
        make_linear(weight, "mkl")


@needs_onednn
def test_engine_gives_the_same_greedy_tokens_with_either_gemm():
    """The whole model: packed and plain matmuls agree on every greedy token (the logit gaps
    of the tiny Llama are far above float32 rounding; test_engine_correctness compares the
    default, packed, engine with transformers)."""
    from labkit.engine.config import EngineConfig
    from labkit.engine.engine import LLMEngine
    from labkit.engine.sequence import SamplingParams
    from labkit.models import build_tiny_llama

    model = build_tiny_llama(verbose=False)
    prompts = ["def fibonacci(n):", "the of and to in is was for", "x", "import os\nimport sys"]
    params = SamplingParams(max_tokens=12, temperature=0)
    out = {}
    for gemm in ("onednn", "torch"):
        eng = LLMEngine(EngineConfig(model=str(model), kv_cache_tokens=2048, cpu_gemm=gemm,
                                     num_threads=1))
        assert isinstance(eng.runner.model.layers[0]["qkv"], PackedLinear) == (gemm == "onednn")
        out[gemm] = [r["token_ids"] for r in eng.generate(prompts, params)]
    assert out["onednn"] == out["torch"]
    assert all(len(t) == 12 for t in out["torch"])
