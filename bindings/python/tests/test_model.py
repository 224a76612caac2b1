"""The bundled model: open, quantize with a progress callback, save, reload, evaluate."""

import pytest

import gptq
from conftest import TINY

# Small enough for CI: 8 calibration windows of 64 bytes, 16 evaluation windows of 256.
NSAMPLES, SEQLEN = 8, 64


@pytest.fixture
def eval_text():
    return (TINY / "eval.txt").read_bytes()[:16 * 256]


def test_tokens(ctx):
    t = gptq.Tokens.load(ctx, TINY / "calib.txt", kind="bytes")
    data = (TINY / "calib.txt").read_bytes()
    assert len(t) == 1 and t.total == len(data)
    assert bytes(t[0][:20].astype("uint8")) == data[:20]
    ids = gptq.Tokens.from_ids(ctx, [1, 2, 3])
    assert ids[-1].tolist() == [1, 2, 3]
    with pytest.raises(gptq.NotFoundError):
        gptq.Tokens.load(ctx, TINY / "missing.txt")


def test_quantize_save_reload_eval(ctx, tmp_path, eval_text):
    m = gptq.Model(ctx, TINY)
    assert m.architecture == "LlamaForCausalLM"
    assert (m.num_layers, m.vocab_size) == (4, 256) and not m.is_quantized
    before = m.eval(eval_text, seqlen=256)
    assert before.windows == 16 and before.tokens == 16 * 255

    seen = []
    calib = gptq.Tokens.load(ctx, TINY / "calib.txt")
    m.quantize(calib, nsamples=NSAMPLES, seqlen=SEQLEN, bits=4, group_size=128,
               progress=seen.append)
    assert m.is_quantized
    modules = [p for p in seen if p.module]
    assert len(modules) == 4 * 7 == modules[-1].num_steps
    assert modules[0].module == "self_attn.q_proj" and modules[0].layer == 0
    assert [p.layer for p in seen if not p.module] == [0, 1, 2, 3]
    assert all(p.loss >= 0 and p.damp_percent > 0 for p in modules)

    out = tmp_path / "tiny-gptq"
    m.save(out)
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    with pytest.raises(gptq.GptqError):
        m.save(out)  # exists, no force
    m.save(out, force=True)

    q = gptq.Model(ctx, out)
    assert q.is_quantized
    after = q.eval(eval_text, seqlen=256)
    # 4-bit g128 costs this model well under 1 % of perplexity.
    assert before.ppl < after.ppl * 1.01 and after.ppl < before.ppl * 1.01
    assert 2.5 < after.ppl < 4.5


def test_progress_can_cancel(ctx):
    m = gptq.Model(ctx, TINY)
    calls = []

    def stop_after_two(p):
        calls.append(p)
        return len(calls) < 2

    with pytest.raises(gptq.CancelledError):
        m.quantize(TINY.joinpath("calib.txt").read_bytes(), nsamples=NSAMPLES,
                   seqlen=SEQLEN, progress=stop_after_two)
    assert len(calls) == 2 and not m.is_quantized


def test_progress_exception_is_raised_to_the_caller(ctx):
    m = gptq.Model(ctx, TINY)

    class Stop(Exception):
        pass

    def boom(p):
        raise Stop(p.module)

    with pytest.raises(Stop, match="q_proj"):
        m.quantize(gptq.Tokens.load(ctx, TINY / "calib.txt"), nsamples=NSAMPLES,
                   seqlen=SEQLEN, progress=boom)
    assert not m.is_quantized


def test_model_errors(ctx, tmp_path):
    with pytest.raises(gptq.NotFoundError) as err:
        gptq.Model(ctx, tmp_path / "nothing-here")
    assert "nothing-here" in str(err.value)
    m = gptq.Model(ctx, TINY)
    with pytest.raises(gptq.InvalidArgumentError):
        m.eval(b"short", seqlen=256)


def test_generate(ctx):
    m = gptq.Model(ctx, TINY)
    greedy = m.generate(b"And God said", max_tokens=40)
    assert greedy.prompt_tokens == 12 and greedy.tokens.dtype.name == "int32"
    assert len(greedy.tokens) == 40 and all(0 <= t < 128 for t in greedy.tokens)
    assert (m.generate(b"And God said", max_tokens=40).tokens == greedy.tokens).all()
    a = m.generate(b"And", max_tokens=30, temperature=1.0, top_k=20, seed=3)
    b = m.generate(b"And", max_tokens=30, temperature=1.0, top_k=20, seed=3)
    assert (a.tokens == b.tokens).all()
    seen = []
    r = m.generate(b"And", max_tokens=30, temperature=1.0, top_k=20, seed=3,
                   on_token=lambda t: seen.append(t) or len(seen) < 5)
    assert seen == a.tokens[:5].tolist() and r.tokens.tolist() == seen
    with pytest.raises(ZeroDivisionError):
        m.generate(b"And", max_tokens=5, on_token=lambda t: 1 / 0)
    with pytest.raises(gptq.InvalidArgumentError):
        m.generate([300], max_tokens=5)
