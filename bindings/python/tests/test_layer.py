"""One linear layer: Hessian, GPTQ, the result's arrays, errors."""

import gc

import numpy as np
import pytest

import gptq
from gptq.core import as_input
from conftest import layer_data


def test_version_matches_the_loaded_library():
    assert gptq.version().startswith("0.")
    assert gptq.library_path.endswith("libgptq.so.0")


def test_config_defaults_come_from_the_library():
    d = gptq.Config.defaults()
    assert (d.bits, d.group_size, d.sym, d.desc_act, d.block_size) == (4, 128, True, False, 128)
    assert d.damp_percent == pytest.approx(0.01)
    assert d.inverse == "fast"


def test_hessian_matches_numpy(ctx, rng):
    _, x = layer_data(rng, in_features=48, nsamples=4, seqlen=16)
    h = gptq.Hessian(ctx, 48)
    h.add(x)
    assert (h.in_features, h.nsamples) == (48, 4)
    flat = x.reshape(-1, 48).astype(np.float64)
    np.testing.assert_allclose(h.read(), 2.0 / 4 * flat.T @ flat, rtol=1e-4, atol=1e-3)


def test_hessian_add_2d_and_merge(ctx, rng):
    _, x = layer_data(rng, in_features=32, nsamples=6, seqlen=8)
    whole = gptq.Hessian(ctx, 32)
    whole.add(x.reshape(48, 32), nsamples=6, seqlen=8)
    a, b = gptq.Hessian(ctx, 32), gptq.Hessian(ctx, 32)
    a.add(x[:2])
    b.add(x[2:])
    a.merge(b)
    assert a.nsamples == 6
    np.testing.assert_allclose(a.read(), whole.read(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        whole.add(x.reshape(48, 32), nsamples=5, seqlen=8)


def test_hessian_from_matrix_round_trips(ctx):
    m = np.eye(16, dtype=np.float32) * 3
    h = gptq.Hessian(ctx, 16, matrix=m, nsamples=10)
    assert h.nsamples == 10
    np.testing.assert_array_equal(h.read(), m)


def test_quantize_layer_gives_consistent_tensors(ctx, rng):
    w, x = layer_data(rng)
    h = gptq.Hessian(ctx, 256)
    h.add(x)
    r = gptq.quantize_layer(ctx, w, h, bits=4, group_size=64)
    assert (r.out_features, r.in_features, r.ngroups) == (64, 256, 4)
    assert r.config.bits == 4 and r.config.group_size == 64
    codes, scales, zeros, g_idx = r.codes, r.scales, r.zeros, r.g_idx
    assert codes.dtype == np.int32 and codes.shape == (64, 256)
    assert codes.min() >= 0 and codes.max() <= 15
    np.testing.assert_array_equal(g_idx, np.arange(256) // 64)
    np.testing.assert_array_equal(r.perm, np.arange(256))
    # Q = scale * (code - zero), per group, as the header states.
    q = scales[g_idx, :].T * (codes - zeros[g_idx, :].T)
    np.testing.assert_allclose(r.q, q, rtol=1e-6, atol=1e-7)
    assert r.loss > 0 and r.damp_percent == pytest.approx(0.01)
    # GPTQ beats the identity but stays close to the float weights.
    assert np.abs(r.q - w).max() < 0.05


def test_act_order_and_config_object(ctx, rng):
    w, x = layer_data(rng)
    h = gptq.Hessian(ctx, 256)
    h.add(x)
    cfg = gptq.Config(bits=3, group_size=32, desc_act=True, sym=False)
    r = gptq.quantize_layer(ctx, w, h, cfg)
    assert r.config.desc_act and not r.config.sym and r.config.bits == 3
    assert sorted(r.perm.tolist()) == list(range(256))
    assert not np.array_equal(r.perm, np.arange(256))
    assert r.codes.max() <= 7


def test_rtn_needs_no_hessian(ctx, rng):
    w, _ = layer_data(rng)
    r = gptq.quantize_layer(ctx, w, rtn=True)
    assert r.loss == 0
    assert np.abs(r.q - w).max() < 0.05


def test_inputs_are_passed_without_copy():
    a = np.zeros((4, 8), dtype=np.float32)
    assert as_input(a, np.float32, "a") is a
    t = a.T  # not C-contiguous: one converted copy
    b = as_input(t, np.float32, "t")
    assert b is not t and b.flags.c_contiguous


def test_result_arrays_are_read_only_views_that_keep_the_result(rng):
    w, x = layer_data(rng)
    with gptq.Context() as ctx:
        h = gptq.Hessian(ctx, 256)
        h.add(x)
        r = gptq.quantize_layer(ctx, w, h)
        codes = r.codes
        expected = codes.copy()
        assert not codes.flags.writeable and not codes.flags.owndata
        with pytest.raises(ValueError):
            codes[0, 0] = 1
        r.close()
        with pytest.raises(ValueError, match="closed"):
            r.loss
    del r, h
    gc.collect()
    # The context and the result are closed, but this view still pins their memory.
    np.testing.assert_array_equal(codes, expected)


def test_errors_carry_the_library_message(ctx, rng):
    w, x = layer_data(rng)
    h = gptq.Hessian(ctx, 256)
    h.add(x)
    with pytest.raises(gptq.ShapeError) as err:
        gptq.quantize_layer(ctx, w[:, :128], h)
    assert err.value.status == -8
    assert "Hessian" in err.value.message
    assert ctx.last_error == err.value.message
    with pytest.raises(gptq.NotSupportedError):
        gptq.quantize_layer(ctx, w, h, bits=5)
    with pytest.raises(gptq.NumericError):
        bad = w.copy()
        bad[0, 0] = np.nan
        gptq.quantize_layer(ctx, bad, h)
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        gptq.Hessian(ctx, 0)


def test_context_options_and_log():
    logged = []
    with gptq.Context(threads=1, log=lambda level, msg: logged.append((level, msg)),
                      log_level="info") as ctx:
        assert ctx.backend == "cpu"
        # Not positive definite until damp_percent > 0.015: the first Cholesky fails,
        # the library retries with more damping and logs a warning.
        m = np.eye(64, dtype=np.float32)
        m[0, 1] = m[1, 0] = 1.015
        h = gptq.Hessian(ctx, 64, matrix=m)
        w = (np.random.default_rng(0).standard_normal((32, 64)) * 0.1).astype(np.float32)
        r = gptq.quantize_layer(ctx, w, h, group_size=-1)
        assert r.damp_percent == pytest.approx(0.02)
    warnings = [msg for level, msg in logged if level == 1]  # GPTQ_LOG_WARN
    assert any("Cholesky" in msg and "0.02" in msg for msg in warnings), logged
    ok, why = gptq.backend_available("cpu")
    assert ok and why == ""
    with pytest.raises(ValueError, match="unknown backend"):
        gptq.Context(backend="tpu")
