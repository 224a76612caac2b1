"""The C ABI of libgptq as ctypes sees it: the library, its structs and prototypes.

Every prototype is written once below as the C types of <gptq/gptq.h> and
<gptq/model.h> spell them (API); the ctypes argtypes are derived from those strings.
tests/test_abi.py turns the same table, the Structure layouts and the constants into a
C file that the C compiler checks against the installed headers, so a declaration here that
drifts from the header fails the test suite instead of corrupting memory.

Nothing in this module is public; gptq/__init__.py re-exports what users need.
"""

import ctypes
import os
import subprocess
from ctypes import (POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int32,
                    c_int64, c_size_t, c_uint16, c_uint32, c_uint64, c_void_p)

SONAME = "libgptq.so.0"


def _find_library():
    """Where libgptq.so.0 is: $GPTQ_LIBRARY, else the libdir pkg-config reports for
    gptq (so PKG_CONFIG_PATH picks an installed prefix), else the loader's search."""
    path = os.environ.get("GPTQ_LIBRARY")
    if path:
        return path
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "gptq"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    if out and os.path.exists(os.path.join(out, SONAME)):
        return os.path.join(out, SONAME)
    return SONAME


lib = ctypes.CDLL(_find_library())
path = os.path.normpath(lib._name) if os.sep in lib._name else lib._name

# ---- constants (checked against the headers by tests/test_abi.py) ---------------------

CONSTANTS = {
    "GPTQ_OK": 0, "GPTQ_ERR_INVALID_ARGUMENT": -1, "GPTQ_ERR_OUT_OF_MEMORY": -2,
    "GPTQ_ERR_NOT_SUPPORTED": -3, "GPTQ_ERR_NOT_POSITIVE_DEFINITE": -4,
    "GPTQ_ERR_NUMERIC": -5, "GPTQ_ERR_IO": -6, "GPTQ_ERR_MALFORMED": -7,
    "GPTQ_ERR_SHAPE": -8, "GPTQ_ERR_DEVICE": -9, "GPTQ_ERR_CANCELLED": -10,
    "GPTQ_ERR_INTERNAL": -11, "GPTQ_ERR_NOT_FOUND": -12,
    "GPTQ_BACKEND_AUTO": 0, "GPTQ_BACKEND_CPU": 1, "GPTQ_BACKEND_CUDA": 2,
    "GPTQ_MATH_FP32": 0, "GPTQ_MATH_TF32": 1,
    "GPTQ_LOG_ERROR": 0, "GPTQ_LOG_WARN": 1, "GPTQ_LOG_INFO": 2, "GPTQ_LOG_DEBUG": 3,
    "GPTQ_INVERSE_FAST": 0, "GPTQ_INVERSE_REFERENCE": 1,
    "GPTQ_FORMAT_V1": 1, "GPTQ_FORMAT_V2": 2,
    "GPTQ_PACK_CLEAN": 0, "GPTQ_PACK_AUTOGPTQ": 1, "GPTQ_PACK_GPTQMODEL": 2,
    "GPTQ_TOKENS_AUTO": 0, "GPTQ_TOKENS_BYTES": 1, "GPTQ_TOKENS_IDS": 2,
    "GPTQ_QLINEAR_KERNEL_AUTO": 0, "GPTQ_QLINEAR_KERNEL_PORTABLE": 1,
    "GPTQ_QLINEAR_KERNEL_AVX2": 2, "GPTQ_QLINEAR_KERNEL_AVX512": 3,
    "GPTQ_QLINEAR_KERNEL_SGEMM": 4, "GPTQ_QLINEAR_KERNEL_CUDA_GEMV": 5,
    "GPTQ_QLINEAR_KERNEL_CUDA_MMA": 6, "GPTQ_QLINEAR_KERNEL_CUDA_CUBLAS": 7,
    "GPTQ_QLINEAR_DTYPE_F32": 0, "GPTQ_QLINEAR_DTYPE_F16": 1, "GPTQ_QLINEAR_DTYPE_BF16": 2,
}
K = CONSTANTS

# ---- structs (same field order and types as the headers) ---------------------------

LOG_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int32, c_char_p)


class CtxOptions(Structure):
    _fields_ = [("struct_size", c_uint32), ("backend", c_int32), ("threads", c_int32),
                ("device", c_int32), ("log", LOG_FN), ("log_user", c_void_p),
                ("log_level", c_int32), ("math", c_int32)]


class Config(Structure):
    _fields_ = [("struct_size", c_uint32), ("bits", c_int32), ("group_size", c_int32),
                ("sym", c_int32), ("desc_act", c_int32), ("static_groups", c_int32),
                ("block_size", c_int32), ("rtn", c_int32), ("damp_percent", c_double),
                ("damp_auto_increment", c_double), ("inverse", c_int32)]


class Unpacked(Structure):
    _fields_ = [("bits", c_int32), ("group_size", c_int32), ("out_features", c_int64),
                ("in_features", c_int64), ("ngroups", c_int64),
                ("codes", POINTER(c_int32)), ("scales", POINTER(c_float)),
                ("zeros", POINTER(c_int32)), ("g_idx", POINTER(c_int32)),
                ("q", POINTER(c_float))]


class Packed(Structure):
    _fields_ = [("bits", c_int32), ("format", c_int32), ("out_features", c_int64),
                ("in_features", c_int64), ("ngroups", c_int64),
                ("qweight", POINTER(c_int32)), ("qzeros", POINTER(c_int32)),
                ("scales", POINTER(c_uint16)), ("g_idx", POINTER(c_int32))]


class Progress(Structure):
    _fields_ = [("struct_size", c_uint32), ("layer", c_int32), ("num_layers", c_int32),
                ("module", c_char_p), ("step", c_int32), ("num_steps", c_int32),
                ("loss", c_double), ("damp_percent", c_double), ("seconds", c_double),
                ("elapsed", c_double)]


PROGRESS_FN = ctypes.CFUNCTYPE(c_int, c_void_p, POINTER(Progress))


class QuantizeOptions(Structure):
    _fields_ = [("struct_size", c_uint32), ("config", Config), ("nsamples", c_int64),
                ("seqlen", c_int64), ("seed", c_uint64), ("true_sequential", c_int32),
                ("progress", PROGRESS_FN), ("progress_user", c_void_p)]


class SaveOptions(Structure):
    _fields_ = [("struct_size", c_uint32), ("format", c_int32), ("pack_mode", c_int32),
                ("max_shard_bytes", c_int64), ("force", c_int32)]


class EvalResult(Structure):
    _fields_ = [("struct_size", c_uint32), ("nll", c_double), ("ppl", c_double),
                ("tokens", c_int64), ("windows", c_int64), ("seconds", c_double)]


TOKEN_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_int32)


class GenerateOptions(Structure):
    _fields_ = [("struct_size", c_uint32), ("max_tokens", c_int64), ("temperature", c_double),
                ("top_k", c_int32), ("seed", c_uint64), ("stop_at_eos", c_int32),
                ("on_token", TOKEN_FN), ("user", c_void_p)]


class GenerateResult(Structure):
    _fields_ = [("struct_size", c_uint32), ("prompt_tokens", c_int64), ("new_tokens", c_int64),
                ("prefill_seconds", c_double), ("decode_seconds", c_double)]


# The C name of each Structure, for the layout check.
STRUCTS = {
    "gptq_ctx_options": CtxOptions, "gptq_config": Config, "gptq_unpacked": Unpacked,
    "gptq_packed": Packed, "gptq_progress": Progress,
    "gptq_quantize_options": QuantizeOptions, "gptq_save_options": SaveOptions,
    "gptq_eval_result": EvalResult, "gptq_generate_options": GenerateOptions,
    "gptq_generate_result": GenerateResult,
}

# ---- prototypes ---------------------------------------------------------------------

# C type (as written in API) -> ctypes type. Opaque handles travel as void pointers.
_OPAQUE = ("gptq_ctx", "gptq_hessian", "gptq_result", "gptq_model", "gptq_tokens",
           "gptq_qlinear")
CTYPES = {
    "void": None, "int": c_int, "int32_t": c_int32, "uint32_t": c_uint32,
    "int64_t": c_int64, "uint64_t": c_uint64, "uint16_t": c_uint16, "size_t": c_size_t,
    "double": c_double, "float": c_float, "const char *": c_char_p, "char *": c_char_p,
    "const void *": c_void_p, "void *": c_void_p, "double *": POINTER(c_double),
    "const uint16_t *": POINTER(c_uint16),
    "const float *": POINTER(c_float), "float *": POINTER(c_float),
    "const int32_t *": POINTER(c_int32), "int32_t *": POINTER(c_int32),
    "int64_t *": POINTER(c_int64),
    "int64_t[2]": POINTER(c_int64),
}
for _name in _OPAQUE:
    CTYPES[_name + " *"] = c_void_p
    CTYPES["const " + _name + " *"] = c_void_p
    CTYPES[_name + " **"] = POINTER(c_void_p)
for _name, _cls in STRUCTS.items():
    CTYPES[_name + " *"] = POINTER(_cls)
    CTYPES["const " + _name + " *"] = POINTER(_cls)

# (name, return type, [argument types]) as in the headers.
API = [
    # gptq.h: version, status, context
    ("gptq_version", "const char *", []),
    ("gptq_version_number", "uint32_t", []),
    ("gptq_status_str", "const char *", ["int"]),
    ("gptq_strerror", "const char *", ["int"]),
    ("gptq_ctx_options_init", "void", ["gptq_ctx_options *"]),
    ("gptq_ctx_create", "int",
     ["const gptq_ctx_options *", "gptq_ctx **", "char *", "size_t"]),
    ("gptq_ctx_free", "void", ["gptq_ctx *"]),
    ("gptq_ctx_last_error", "const char *", ["const gptq_ctx *"]),
    ("gptq_ctx_last_status", "int", ["const gptq_ctx *"]),
    ("gptq_ctx_backend", "int32_t", ["const gptq_ctx *"]),
    ("gptq_backend_name", "const char *", ["int32_t"]),
    ("gptq_backend_available", "int", ["int32_t", "char *", "size_t"]),
    ("gptq_ctx_synchronize", "int", ["gptq_ctx *"]),
    ("gptq_ctx_device_bandwidth", "int", ["gptq_ctx *", "double *"]),
    # Hessian
    ("gptq_hessian_create", "int", ["gptq_ctx *", "int64_t", "gptq_hessian **"]),
    ("gptq_hessian_create_from", "int",
     ["gptq_ctx *", "int64_t", "const float *", "int64_t", "gptq_hessian **"]),
    ("gptq_hessian_free", "void", ["gptq_hessian *"]),
    ("gptq_hessian_add", "int",
     ["gptq_ctx *", "gptq_hessian *", "const float *", "int64_t", "int64_t"]),
    ("gptq_hessian_merge", "int", ["gptq_ctx *", "gptq_hessian *", "const gptq_hessian *"]),
    ("gptq_hessian_in_features", "int64_t", ["const gptq_hessian *"]),
    ("gptq_hessian_nsamples", "int64_t", ["const gptq_hessian *"]),
    ("gptq_hessian_read", "int", ["gptq_ctx *", "const gptq_hessian *", "float *", "size_t"]),
    # configuration and layer quantization
    ("gptq_config_init", "void", ["gptq_config *"]),
    ("gptq_config_validate", "int", ["gptq_ctx *", "const gptq_config *"]),
    ("gptq_num_groups", "int64_t", ["int64_t", "int32_t"]),
    ("gptq_layer_quantize", "int",
     ["gptq_ctx *", "const float *", "int64_t", "int64_t", "const gptq_hessian *",
      "const gptq_config *", "gptq_result **"]),
    ("gptq_result_free", "void", ["gptq_result *"]),
    ("gptq_result_out_features", "int64_t", ["const gptq_result *"]),
    ("gptq_result_in_features", "int64_t", ["const gptq_result *"]),
    ("gptq_result_ngroups", "int64_t", ["const gptq_result *"]),
    ("gptq_result_config", "int", ["const gptq_result *", "gptq_config *"]),
    ("gptq_result_codes", "const int32_t *", ["const gptq_result *"]),
    ("gptq_result_scales", "const float *", ["const gptq_result *"]),
    ("gptq_result_zeros", "const int32_t *", ["const gptq_result *"]),
    ("gptq_result_g_idx", "const int32_t *", ["const gptq_result *"]),
    ("gptq_result_perm", "const int32_t *", ["const gptq_result *"]),
    ("gptq_result_q", "const float *", ["const gptq_result *"]),
    ("gptq_result_loss", "double", ["const gptq_result *"]),
    ("gptq_result_damp_percent", "double", ["const gptq_result *"]),
    ("gptq_result_damp", "double", ["const gptq_result *"]),
    ("gptq_result_dead_columns", "int64_t", ["const gptq_result *"]),
    # packing
    ("gptq_packed_shape", "int",
     ["int32_t", "int64_t", "int64_t", "int64_t", "int64_t[2]", "int64_t[2]"]),
    ("gptq_pack", "int", ["gptq_ctx *", "const gptq_unpacked *", "int32_t", "gptq_packed *"]),
    ("gptq_pack_result", "int",
     ["gptq_ctx *", "const gptq_result *", "int32_t", "gptq_packed *"]),
    ("gptq_unpack", "int", ["gptq_ctx *", "const gptq_packed *", "int32_t", "gptq_unpacked *"]),
    ("gptq_dequant_matmul", "int",
     ["gptq_ctx *", "const gptq_packed *", "const float *", "int64_t", "const float *",
      "float *"]),
    ("gptq_qlinear_create", "int",
     ["gptq_ctx *", "const gptq_packed *", "const float *", "gptq_qlinear **"]),
    ("gptq_qlinear_free", "void", ["gptq_qlinear *"]),
    ("gptq_qlinear_forward", "int",
     ["gptq_ctx *", "const gptq_qlinear *", "const float *", "int64_t", "float *"]),
    ("gptq_qlinear_forward_f16", "int",
     ["gptq_ctx *", "const gptq_qlinear *", "const uint16_t *", "int64_t", "float *"]),
    ("gptq_qlinear_forward_bf16", "int",
     ["gptq_ctx *", "const gptq_qlinear *", "const uint16_t *", "int64_t", "float *"]),
    ("gptq_qlinear_in_features", "int64_t", ["const gptq_qlinear *"]),
    ("gptq_qlinear_out_features", "int64_t", ["const gptq_qlinear *"]),
    ("gptq_qlinear_bits", "int32_t", ["const gptq_qlinear *"]),
    ("gptq_qlinear_weight_bytes", "uint64_t", ["const gptq_qlinear *"]),
    ("gptq_qlinear_set_kernel", "int", ["gptq_ctx *", "gptq_qlinear *", "int32_t"]),
    ("gptq_qlinear_kernel", "int32_t", ["const gptq_qlinear *"]),
    ("gptq_qlinear_kernel_available", "int", ["int32_t"]),
    ("gptq_qlinear_kernel_name", "const char *", ["int32_t"]),
    # x and y are device (cudaMalloc) or managed memory: addresses as integers.
    ("gptq_qlinear_forward_device", "int",
     ["gptq_ctx *", "const gptq_qlinear *", "const void *", "int32_t", "int64_t", "void *",
      "int32_t"]),
    ("gptq_qlinear_bench_device", "int",
     ["gptq_ctx *", "const gptq_qlinear *", "int64_t", "int32_t", "int32_t *", "double *",
      "double *"]),
    ("gptq_fp32_to_fp16", "uint16_t", ["float"]),
    ("gptq_fp16_to_fp32", "float", ["uint16_t"]),
    # model.h: tokens
    ("gptq_tokens_load", "int", ["gptq_ctx *", "const char *", "int32_t", "gptq_tokens **"]),
    ("gptq_tokens_from_ids", "int",
     ["gptq_ctx *", "const int32_t *", "int64_t", "gptq_tokens **"]),
    ("gptq_tokens_free", "void", ["gptq_tokens *"]),
    ("gptq_tokens_count", "int64_t", ["const gptq_tokens *"]),
    ("gptq_tokens_sequence", "const int32_t *", ["const gptq_tokens *", "int64_t", "int64_t *"]),
    ("gptq_tokens_total", "int64_t", ["const gptq_tokens *"]),
    # model
    ("gptq_model_open", "int", ["gptq_ctx *", "const char *", "gptq_model **"]),
    ("gptq_model_free", "void", ["gptq_model *"]),
    ("gptq_model_architecture", "const char *", ["const gptq_model *"]),
    ("gptq_model_num_layers", "int64_t", ["const gptq_model *"]),
    ("gptq_model_hidden_size", "int64_t", ["const gptq_model *"]),
    ("gptq_model_vocab_size", "int64_t", ["const gptq_model *"]),
    ("gptq_model_is_quantized", "int32_t", ["const gptq_model *"]),
    ("gptq_quantize_options_init", "void", ["gptq_quantize_options *"]),
    ("gptq_model_quantize", "int",
     ["gptq_ctx *", "gptq_model *", "const gptq_tokens *", "const gptq_quantize_options *"]),
    ("gptq_save_options_init", "void", ["gptq_save_options *"]),
    ("gptq_model_save", "int",
     ["gptq_ctx *", "gptq_model *", "const char *", "const gptq_save_options *"]),
    ("gptq_model_save_dequantized", "int",
     ["gptq_ctx *", "gptq_model *", "const char *", "int32_t"]),
    ("gptq_model_eval", "int",
     ["gptq_ctx *", "gptq_model *", "const gptq_tokens *", "int64_t", "gptq_eval_result *"]),
    ("gptq_generate_options_init", "void", ["gptq_generate_options *"]),
    ("gptq_model_generate", "int",
     ["gptq_ctx *", "gptq_model *", "const int32_t *", "int64_t",
      "const gptq_generate_options *", "int32_t *", "int64_t", "gptq_generate_result *"]),
]

for _name, _ret, _args in API:
    _fn = getattr(lib, _name)
    _fn.restype = CTYPES[_ret]
    _fn.argtypes = [CTYPES[a] for a in _args]

# ---- option structs with room to grow ----------------------------------------------

# A newer library's _init() fills its own, possibly longer, struct (fields are only
# appended). The structs handed to it therefore live in a buffer with this much spare
# room, and keep the struct_size the library wrote, so fields this binding does not know
# keep the library's defaults.
_SPARE = 1024


def new_options(cls, init):
    """A `cls` initialised by the library function `init`, in a roomy buffer."""
    buf = ctypes.create_string_buffer(ctypes.sizeof(cls) + _SPARE)
    init(ctypes.cast(buf, POINTER(cls)))
    opts = cls.from_buffer(buf)  # the view keeps buf alive
    if opts.struct_size > len(buf):
        raise RuntimeError("%s: the library's struct is %d bytes, more than this binding "
                           "allows for" % (cls.__name__, opts.struct_size))
    return opts
