"""libgptq from Python: GPTQ post-training quantization over the library's C ABI
(ctypes, no compiled extension).

    import numpy as np, gptq

    with gptq.Context() as ctx:
        h = gptq.Hessian(ctx, in_features=512)
        h.add(x)                                   # [nsamples, seqlen, 512] float32
        r = gptq.quantize_layer(ctx, w, h, bits=4, group_size=128)
        packed = r.pack()                          # qweight, qzeros, scales, g_idx
        y = packed.matmul(inputs, ctx=ctx)

        m = gptq.Model(ctx, "models/tiny-llama-bytes")
        calib = gptq.Tokens.load(ctx, "models/tiny-llama-bytes/calib.txt")
        m.quantize(calib, nsamples=128, seqlen=256, progress=print)
        m.save("out-dir")

The library is found through $GPTQ_LIBRARY, then pkg-config's libdir for gptq, then the
dynamic loader's search path. Failures raise GptqError subclasses carrying the status
and the context's message.
"""

from ._lib import path as library_path
from .core import (Context, Config, Hessian, PackedTensors, QLinear, Result, UnpackedTensors,
                   backend_available, fp16_to_fp32, fp32_to_fp16, num_groups, packed_shape,
                   quantize_layer, version)
from .errors import (CancelledError, DeviceError, GptqError, GptqIOError, InternalError,
                     InvalidArgumentError, MalformedError, NotFoundError,
                     NotPositiveDefiniteError, NotSupportedError, NumericError,
                     OutOfMemoryError, ShapeError)
from .model import EvalResult, Model, Progress, Tokens

__all__ = [
    "library_path", "Context", "Config", "Hessian", "PackedTensors", "QLinear", "Result",
    "UnpackedTensors", "backend_available", "fp16_to_fp32", "fp32_to_fp16", "num_groups",
    "packed_shape", "quantize_layer", "version", "CancelledError", "DeviceError",
    "GptqError", "GptqIOError", "InternalError", "InvalidArgumentError", "MalformedError",
    "NotFoundError", "NotPositiveDefiniteError", "NotSupportedError", "NumericError",
    "OutOfMemoryError", "ShapeError", "EvalResult", "Model", "Progress", "Tokens",
]
