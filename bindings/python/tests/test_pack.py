"""Checkpoint tensors: shapes, pack/unpack round trips, dequant-matmul, float16."""

import numpy as np
import pytest

import gptq
from conftest import layer_data


@pytest.fixture
def result(ctx, rng):
    w, x = layer_data(rng, out_features=64, in_features=128)
    h = gptq.Hessian(ctx, 128)
    h.add(x)
    return gptq.quantize_layer(ctx, w, h, bits=4, group_size=32, desc_act=True)


def test_packed_shape():
    assert gptq.packed_shape(4, 64, 128, 4) == ((16, 64), (4, 8))
    assert gptq.packed_shape(3, 32, 32, 1) == ((3, 32), (1, 3))
    assert gptq.num_groups(300, 128) == 3 and gptq.num_groups(300, -1) == 1
    with pytest.raises(gptq.NotSupportedError):
        gptq.packed_shape(5, 64, 128, 1)


@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
def test_pack_unpack_round_trip(ctx, result, fmt):
    p = result.pack(format=fmt)
    assert p.qweight.shape == (16, 64) and p.qweight.dtype == np.int32
    assert p.qzeros.shape == (4, 8) and p.scales.shape == (4, 64)
    np.testing.assert_array_equal(p.g_idx, result.g_idx)
    np.testing.assert_array_equal(p.scales_f16.astype(np.float32),
                                  result.scales.astype(np.float16).astype(np.float32))
    u = p.unpack(ctx=ctx)
    np.testing.assert_array_equal(u.codes, result.codes)
    np.testing.assert_array_equal(u.zeros, result.zeros)
    np.testing.assert_array_equal(u.g_idx, result.g_idx)


def test_v1_stores_zero_minus_one(result):
    v1, v2 = result.pack(format="gptq"), result.pack(format="gptq_v2")
    first_v1 = v1.qzeros[0, 0] & 0xF
    first_v2 = v2.qzeros[0, 0] & 0xF
    assert first_v1 == (first_v2 - 1) % 16
    np.testing.assert_array_equal(v1.qweight, v2.qweight)


def test_pack_from_arrays_equals_pack_result(ctx, result):
    u = gptq.UnpackedTensors(4, result.codes, result.scales, result.zeros, result.g_idx,
                             group_size=32)
    a = u.pack(ctx=ctx)
    b = result.pack()
    for name in ("qweight", "qzeros", "scales", "g_idx"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_packed_from_checkpoint_arrays(result, rng):
    p = result.pack()
    # e.g. tensors read from a checkpoint: float16 scales are accepted as they are
    q = gptq.PackedTensors(4, "gptq", 64, 128, 4, p.qweight, p.qzeros, p.scales_f16, p.g_idx)
    assert q.qweight is p.qweight  # right dtype and layout: no copy
    x = rng.standard_normal(128).astype(np.float32)
    np.testing.assert_array_equal(q.matmul(x), p.matmul(x))
    with pytest.raises(ValueError, match="qweight"):
        gptq.PackedTensors(4, "gptq", 64, 128, 4, p.qweight[:8], p.qzeros, p.scales, p.g_idx)


def test_dequant_matmul_matches_q(ctx, result, rng):
    p = result.pack()
    x = rng.standard_normal((5, 128)).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    y = p.matmul(x, bias=bias, ctx=ctx)
    q16 = (p.scales_f16.astype(np.float32)[result.g_idx, :].T *
           (result.codes - result.zeros[result.g_idx, :].T))
    np.testing.assert_allclose(y, x @ q16.T + bias, rtol=1e-4, atol=1e-4)
    assert p.matmul(x[0]).shape == (64,)


def test_errors_without_a_context_name_the_function(result):
    u = gptq.UnpackedTensors(4, result.codes + 100, result.scales, result.zeros,
                             result.g_idx)
    with pytest.raises(gptq.InvalidArgumentError, match="gptq_pack"):
        u.pack()


def test_errors_with_a_context_carry_its_message(ctx, result):
    u = gptq.UnpackedTensors(4, result.codes + 100, result.scales, result.zeros,
                             result.g_idx)
    with pytest.raises(gptq.InvalidArgumentError) as err:
        u.pack(ctx=ctx)
    assert err.value.message == ctx.last_error != ""


def test_fp16_helpers():
    assert gptq.fp32_to_fp16(1.0) == 0x3C00
    assert gptq.fp16_to_fp32(0xC000) == -2.0
    assert gptq.fp32_to_fp16(65520.0) == 0x7C00  # rounds to infinity


def test_qlinear_matches_dequant_matmul(ctx, result, rng):
    p = result.pack()
    bias = rng.standard_normal(64).astype(np.float32)
    ql = gptq.QLinear(ctx, p, bias=bias)
    assert (ql.in_features, ql.out_features, ql.bits, ql.kernel) == (128, 64, 4, "auto")
    x = rng.standard_normal((5, 128)).astype(np.float32)
    want = p.matmul(x, bias=bias, ctx=ctx)
    for kernel in gptq.QLinear.KERNELS:
        # ctx is a CPU context: the cuda_* kernels are refused (below)
        if kernel.startswith("cuda_") or not gptq.QLinear.kernel_available(kernel):
            continue
        ql.kernel = kernel
        assert ql.kernel == kernel
        np.testing.assert_allclose(ql(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(gptq.NotSupportedError, match="CPU context"):
        ql.kernel = "cuda_gemv"
    assert ql(x[0]).shape == (64,)
    with pytest.raises(ValueError, match="kernel"):
        ql.kernel = "fastest"
    with pytest.raises(ValueError, match="x"):
        ql(x[:, :100])
    ql.close()
