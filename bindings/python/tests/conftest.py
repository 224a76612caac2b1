"""Shared fixtures: a context, seeded random data, and the bundled model."""

import os
import pathlib
import sys

import numpy as np
import pytest

# Run from a checkout without installing the package.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import gptq  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY = ROOT / "models" / "tiny-llama-bytes"


@pytest.fixture
def ctx():
    with gptq.Context(threads=int(os.environ.get("GPTQ_TEST_THREADS", "0"))) as c:
        yield c


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def layer_data(rng, out_features=64, in_features=256, nsamples=8, seqlen=32):
    """Weights [out, in] and calibration inputs [nsamples, seqlen, in], float32."""
    w = (rng.standard_normal((out_features, in_features)) * 0.05).astype(np.float32)
    x = rng.standard_normal((nsamples, seqlen, in_features)).astype(np.float32)
    return w, x
