#!/usr/bin/env python3
"""Quantize one random linear layer, then a whole model, with libgptq from Python.

    python3 quantize_model.py [MODEL_DIR] [--nsamples N] [--seqlen N] [-o OUT_DIR]

MODEL_DIR defaults to the bundled models/tiny-llama-bytes; its calib.txt and eval.txt
(bytes are tokens) are the calibration and evaluation data.
"""

import argparse
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import gptq  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[3]


def quantize_layer(ctx):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((256, 512)) * 0.05).astype(np.float32)
    x = rng.standard_normal((16, 32, 512)).astype(np.float32)
    h = gptq.Hessian(ctx, 512)
    h.add(x)
    r = gptq.quantize_layer(ctx, w, h, bits=4, group_size=128, desc_act=True)
    packed = r.pack(format="gptq")
    y = packed.matmul(x[0], ctx=ctx)
    err = np.abs(y - x[0] @ r.q.T).max()
    print("layer 256x512: loss %.4g, qweight %s, qzeros %s, matmul max error %.2g"
          % (r.loss, packed.qweight.shape, packed.qzeros.shape, err))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "models" / "tiny-llama-bytes"))
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=64)
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    model_dir = pathlib.Path(args.model)

    with gptq.Context() as ctx:
        print("libgptq %s (%s)" % (gptq.version(), gptq.library_path))
        quantize_layer(ctx)

        model = gptq.Model(ctx, model_dir)
        text = (model_dir / "eval.txt").read_bytes()[:64 * 256]
        before = model.eval(text, seqlen=256)

        def progress(p):
            if not p.module:
                print("layer %d/%d done  %.2fs" % (p.layer + 1, p.num_layers, p.elapsed))
        calib = gptq.Tokens.load(ctx, model_dir / "calib.txt")
        model.quantize(calib, nsamples=args.nsamples, seqlen=args.seqlen, progress=progress)

        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(args.output or pathlib.Path(tmp) / "gptq")
            model.save(out, force=True)
            after = gptq.Model(ctx, out).eval(text, seqlen=256)
        print("model %s: ppl before %.4f after %.4f (%d windows of 256)"
              % (model_dir.name, before.ppl, after.ppl, after.windows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
