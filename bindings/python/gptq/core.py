"""Contexts, Hessians, layer quantization and the checkpoint tensors (<gptq/gptq.h>).

Arrays go in and out as numpy arrays. An input that is already C-contiguous with the
dtype the library reads (float32, int32, uint16) is passed by pointer, without a copy;
anything else is converted once. Arrays returned by a Result are read-only views of the
library's memory and keep the Result alive. Packing writes straight into new numpy
arrays.
"""

import ctypes
from ctypes import POINTER, byref, c_float, c_int32, c_int64, c_uint16, c_void_p

import numpy as np

from . import _lib
from .errors import check, error

_L = _lib.lib

_K = _lib.K
BACKENDS = {"auto": _K["GPTQ_BACKEND_AUTO"], "cpu": _K["GPTQ_BACKEND_CPU"],
            "cuda": _K["GPTQ_BACKEND_CUDA"]}
LOG_LEVELS = {"error": _K["GPTQ_LOG_ERROR"], "warn": _K["GPTQ_LOG_WARN"],
              "info": _K["GPTQ_LOG_INFO"], "debug": _K["GPTQ_LOG_DEBUG"]}
FORMATS = {"gptq": _K["GPTQ_FORMAT_V1"], "v1": _K["GPTQ_FORMAT_V1"],
           "gptq_v2": _K["GPTQ_FORMAT_V2"], "v2": _K["GPTQ_FORMAT_V2"]}
PACK_MODES = {"clean": _K["GPTQ_PACK_CLEAN"], "autogptq": _K["GPTQ_PACK_AUTOGPTQ"],
              "gptqmodel": _K["GPTQ_PACK_GPTQMODEL"]}
INVERSE = {"fast": _K["GPTQ_INVERSE_FAST"], "reference": _K["GPTQ_INVERSE_REFERENCE"]}


def version():
    """The version of the loaded library, e.g. "0.1.0"."""
    return _L.gptq_version().decode()


def backend_available(backend):
    """(True, "") if a backend ("cpu", "cuda", "auto") can be used here, else
    (False, reason)."""
    why = ctypes.create_string_buffer(512)
    ok = _L.gptq_backend_available(_lookup(BACKENDS, backend, "backend"), why, len(why))
    return bool(ok), why.value.decode(errors="replace")


def _lookup(table, key, what):
    try:
        return table[key]
    except KeyError:
        raise ValueError("unknown %s %r (one of %s)" % (what, key, ", ".join(table))) from None


def _ptr(a, ctype):
    return a.ctypes.data_as(POINTER(ctype))


def as_input(a, dtype, name, ndim=None):
    """`a` as a C-contiguous array of `dtype`: the same object when it already is one
    (no copy), else one converted copy."""
    arr = np.ascontiguousarray(a, dtype=dtype)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError("%s: expected %d dimensions, got shape %s" % (name, ndim, arr.shape))
    return arr


def _view(ptr, shape, dtype, owner):
    """A read-only numpy view of the memory at `ptr` (no copy) that keeps `owner`
    alive for as long as the view, or any array derived from it, exists."""
    if not ptr or int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype)
    return np.asarray(_Keep(ctypes.addressof(ptr.contents), shape, dtype, owner))


class _Keep:
    """What numpy views through __array_interface__; it becomes the array's base and
    pins its owner, so the owner's memory outlives every view of it."""

    def __init__(self, address, shape, dtype, owner):
        self._owner = owner
        owner._pin()
        self.__array_interface__ = {"version": 3, "shape": tuple(shape),
                                    "typestr": np.dtype(dtype).str,
                                    "data": (address, True)}  # True: read-only

    def __del__(self):
        self._owner._unpin()


class _Handle:
    """An owned C handle. close() (or leaving a `with` block, or garbage collection
    as a safety net) ends its use at once; the C object itself is freed when nothing
    needs its memory any more: no numpy view of it and, for a context, no object made
    with it is left (the library frees objects before their context)."""

    _free = None

    def __init__(self, handle, ctx=None):
        self._h = handle
        self._open = True
        self._pins = 0
        self._ctx = ctx
        if ctx is not None:
            ctx._pin()

    @property
    def handle(self):
        if not self._open:
            raise ValueError("%s is closed" % type(self).__name__)
        return self._h

    @property
    def closed(self):
        return not self._open

    def _pin(self):
        self._pins += 1

    def _unpin(self):
        self._pins -= 1
        if not self._open and self._pins == 0:
            self._release()

    def _release(self):
        if self._h:
            type(self)._free(self._h)
            self._h = None
            if self._ctx is not None:
                self._ctx._unpin()

    def close(self):
        if self._open:
            self._open = False
            if self._pins == 0:
                self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


class Context(_Handle):
    """A libgptq context: backend, worker threads, logging and the last error.

    One context (and what is made with it) is used by one thread at a time; separate
    contexts may run in separate threads. Objects made with a context keep it alive.
    """

    _free = _L.gptq_ctx_free

    def __init__(self, backend="cpu", threads=0, device=0, log=None, log_level="warn"):
        opts = _lib.new_options(_lib.CtxOptions, _L.gptq_ctx_options_init)
        opts.backend = _lookup(BACKENDS, backend, "backend")
        opts.threads = threads
        opts.device = device
        self._log = None
        if log is not None:
            def sink(_user, level, msg, log=log):
                try:
                    log(int(level), msg.decode(errors="replace"))
                except Exception:  # a C callback cannot raise
                    pass
            self._log = _lib.LOG_FN(sink)
            opts.log = self._log
            opts.log_level = _lookup(LOG_LEVELS, log_level, "log level")
        handle = c_void_p()
        errbuf = ctypes.create_string_buffer(512)
        status = _L.gptq_ctx_create(byref(opts), byref(handle), errbuf, len(errbuf))
        if status != 0:
            raise error(status, errbuf.value.decode(errors="replace"))
        super().__init__(handle.value)

    @property
    def backend(self):
        """The backend in use: "cpu" or "cuda"."""
        return _L.gptq_backend_name(_L.gptq_ctx_backend(self.handle)).decode()

    @property
    def last_error(self):
        """The message of the last failure on this context ("" if none)."""
        return _L.gptq_ctx_last_error(self.handle).decode(errors="replace")

    def check(self, status):
        check(status, self.handle)


class Hessian(_Handle):
    """The accumulator H = 2/n * sum over samples of X_s^T X_s (see gptq_hessian_add)."""

    _free = _L.gptq_hessian_free

    def __init__(self, ctx, in_features, matrix=None, nsamples=1):
        """A zeroed accumulator, or one starting from `matrix` ([in, in]) standing for
        `nsamples` samples."""
        out = c_void_p()
        if matrix is None:
            ctx.check(_L.gptq_hessian_create(ctx.handle, in_features, byref(out)))
        else:
            m = as_input(matrix, np.float32, "matrix", 2)
            if m.shape != (in_features, in_features):
                raise ValueError("matrix: expected shape (%d, %d), got %s"
                                 % (in_features, in_features, m.shape))
            ctx.check(_L.gptq_hessian_create_from(ctx.handle, in_features, _ptr(m, c_float),
                                                  nsamples, byref(out)))
        super().__init__(out.value, ctx)

    def add(self, x, nsamples=None, seqlen=None):
        """Add calibration inputs: x of shape [nsamples, seqlen, in], or [rows, in] with
        `nsamples` sequences of `seqlen` rows (default: one sequence of all rows)."""
        x = as_input(x, np.float32, "x")
        if x.ndim == 3:
            nsamples, seqlen = x.shape[0], x.shape[1]
        elif x.ndim == 2:
            if nsamples is None:
                nsamples = 1
            if seqlen is None:
                seqlen = x.shape[0] // nsamples
            if nsamples * seqlen != x.shape[0]:
                raise ValueError("x has %d rows, not nsamples * seqlen = %d"
                                 % (x.shape[0], nsamples * seqlen))
        else:
            raise ValueError("x: expected 2 or 3 dimensions, got shape %s" % (x.shape,))
        if x.shape[-1] != self.in_features:
            raise ValueError("x has %d features, the Hessian %d"
                             % (x.shape[-1], self.in_features))
        self._ctx.check(_L.gptq_hessian_add(self._ctx.handle, self.handle, _ptr(x, c_float),
                                            nsamples, seqlen))

    def merge(self, other):
        """Add the samples of another accumulator (same in_features) to this one."""
        self._ctx.check(_L.gptq_hessian_merge(self._ctx.handle, self.handle, other.handle))

    @property
    def in_features(self):
        return _L.gptq_hessian_in_features(self.handle)

    @property
    def nsamples(self):
        return _L.gptq_hessian_nsamples(self.handle)

    def read(self):
        """H as a new float32 array [in, in]."""
        n = self.in_features
        out = np.empty((n, n), dtype=np.float32)
        self._ctx.check(_L.gptq_hessian_read(self._ctx.handle, self.handle,
                                             _ptr(out, c_float), out.size))
        return out


class Config:
    """Per-layer options (gptq_config). A field left as None keeps the library's
    default (4 bits, groups of 128, sym, damp 0.01, ...), read with Config.defaults()."""

    FIELDS = ("bits", "group_size", "sym", "desc_act", "static_groups", "block_size", "rtn",
              "damp_percent", "damp_auto_increment", "inverse")

    def __init__(self, **fields):
        for name in self.FIELDS:
            setattr(self, name, fields.pop(name, None))
        if fields:
            raise TypeError("unknown config field(s): %s" % ", ".join(sorted(fields)))

    @classmethod
    def defaults(cls):
        return cls.from_c(_lib.new_options(_lib.Config, _L.gptq_config_init))

    @classmethod
    def from_c(cls, c):
        inverse = {v: k for k, v in INVERSE.items()}.get(c.inverse, c.inverse)
        return cls(bits=c.bits, group_size=c.group_size, sym=bool(c.sym),
                   desc_act=bool(c.desc_act), static_groups=bool(c.static_groups),
                   block_size=c.block_size, rtn=bool(c.rtn), damp_percent=c.damp_percent,
                   damp_auto_increment=c.damp_auto_increment, inverse=inverse)

    def fill(self, c):
        """Write the fields that are set into a gptq_config already initialised."""
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "inverse" and isinstance(value, str):
                value = _lookup(INVERSE, value, "inverse")
            setattr(c, name, type(getattr(c, name))(value))

    def to_c(self):
        c = _lib.new_options(_lib.Config, _L.gptq_config_init)
        self.fill(c)
        return c

    def __repr__(self):
        return "Config(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.FIELDS
                                        if getattr(self, n) is not None)


def _config(config, overrides):
    if config is None:
        config = Config()
    elif isinstance(config, dict):
        config = Config(**config)
    if overrides:
        merged = {n: getattr(config, n) for n in Config.FIELDS}
        merged.update(overrides)
        config = Config(**merged)
    return config.to_c()


class Result(_Handle):
    """A quantized layer (gptq_result). The array properties are read-only views of
    the library's memory, valid as long as any of them (or the Result) is alive."""

    _free = _L.gptq_result_free

    @property
    def out_features(self):
        return _L.gptq_result_out_features(self.handle)

    @property
    def in_features(self):
        return _L.gptq_result_in_features(self.handle)

    @property
    def ngroups(self):
        return _L.gptq_result_ngroups(self.handle)

    @property
    def config(self):
        c = _lib.new_options(_lib.Config, _L.gptq_config_init)
        self._ctx.check(_L.gptq_result_config(self.handle, byref(c)))
        return Config.from_c(c)

    def _rows(self, fn, dtype, shape):
        return _view(fn(self.handle), shape, dtype, self)

    @property
    def codes(self):
        """int32 [out, in], values in [0, 2^bits - 1], original column order."""
        return self._rows(_L.gptq_result_codes, np.int32, (self.out_features, self.in_features))

    @property
    def scales(self):
        """float32 [ngroups, out]."""
        return self._rows(_L.gptq_result_scales, np.float32, (self.ngroups, self.out_features))

    @property
    def zeros(self):
        """int32 [ngroups, out], true zero points."""
        return self._rows(_L.gptq_result_zeros, np.int32, (self.ngroups, self.out_features))

    @property
    def g_idx(self):
        return self._rows(_L.gptq_result_g_idx, np.int32, (self.in_features,))

    @property
    def perm(self):
        return self._rows(_L.gptq_result_perm, np.int32, (self.in_features,))

    @property
    def q(self):
        """Dequantized weights, float32 [out, in]."""
        return self._rows(_L.gptq_result_q, np.float32, (self.out_features, self.in_features))

    @property
    def loss(self):
        return _L.gptq_result_loss(self.handle)

    @property
    def damp_percent(self):
        return _L.gptq_result_damp_percent(self.handle)

    @property
    def damp(self):
        return _L.gptq_result_damp(self.handle)

    @property
    def dead_columns(self):
        return _L.gptq_result_dead_columns(self.handle)

    def pack(self, format="gptq", mode="clean"):
        """The checkpoint tensors of this layer (PackedTensors)."""
        bits = self.config.bits
        dst = PackedTensors.empty(bits, format, self.out_features, self.in_features,
                                  self.ngroups)
        c = dst._c()
        self._ctx.check(_L.gptq_pack_result(self._ctx.handle, self.handle,
                                            _lookup(PACK_MODES, mode, "pack mode"), byref(c)))
        return dst


def quantize_layer(ctx, w, hessian=None, config=None, **overrides):
    """Quantize one linear layer. `w` is [out, in] float32 (nn.Linear layout);
    `hessian` a Hessian of its inputs (None only with rtn=True); `config` a Config, a
    dict or None, and keyword arguments override single fields:
    quantize_layer(ctx, w, h, bits=4, group_size=128, desc_act=True)."""
    w = as_input(w, np.float32, "w", 2)
    cfg = _config(config, overrides)
    out = c_void_p()
    ctx.check(_L.gptq_layer_quantize(ctx.handle, _ptr(w, c_float), w.shape[0], w.shape[1],
                                     hessian.handle if hessian is not None else None,
                                     byref(cfg), byref(out)))
    return Result(out.value, ctx)


def num_groups(in_features, group_size):
    return _L.gptq_num_groups(in_features, group_size)


def packed_shape(bits, out_features, in_features, ngroups):
    """(qweight shape, qzeros shape) of a layer's checkpoint tensors."""
    qw = (c_int64 * 2)()
    qz = (c_int64 * 2)()
    status = _L.gptq_packed_shape(bits, out_features, in_features, ngroups, qw, qz)
    if status != 0:
        raise error(status, "packed_shape(bits=%d, out=%d, in=%d, ngroups=%d)"
                    % (bits, out_features, in_features, ngroups))
    return (qw[0], qw[1]), (qz[0], qz[1])


def _check_array(a, dtype, shape, name):
    arr = as_input(a, dtype, name)
    if arr.shape != tuple(shape):
        raise ValueError("%s: expected shape %s, got %s" % (name, tuple(shape), arr.shape))
    return arr


class PackedTensors:
    """A layer's checkpoint tensors: qweight, qzeros (int32), scales (float16 bit
    patterns, uint16; `scales_f16` views them as float16) and g_idx (int32)."""

    def __init__(self, bits, format, out_features, in_features, ngroups, qweight, qzeros,
                 scales, g_idx):
        self.bits = int(bits)
        self.format = _lookup(FORMATS, format, "format") if isinstance(format, str) else format
        self.out_features, self.in_features = int(out_features), int(in_features)
        self.ngroups = int(ngroups)
        qw_shape, qz_shape = packed_shape(self.bits, self.out_features, self.in_features,
                                          self.ngroups)
        self.qweight = _check_array(qweight, np.int32, qw_shape, "qweight")
        self.qzeros = _check_array(qzeros, np.int32, qz_shape, "qzeros")
        if isinstance(scales, np.ndarray) and scales.dtype == np.float16:
            scales = scales.view(np.uint16)
        self.scales = _check_array(scales, np.uint16, (self.ngroups, self.out_features),
                                   "scales")
        self.g_idx = _check_array(g_idx, np.int32, (self.in_features,), "g_idx")

    @classmethod
    def empty(cls, bits, format, out_features, in_features, ngroups):
        qw_shape, qz_shape = packed_shape(bits, out_features, in_features, ngroups)
        return cls(bits, format, out_features, in_features, ngroups,
                   np.zeros(qw_shape, np.int32), np.zeros(qz_shape, np.int32),
                   np.zeros((ngroups, out_features), np.uint16),
                   np.zeros(in_features, np.int32))

    @property
    def scales_f16(self):
        return self.scales.view(np.float16)

    def _c(self):
        return _lib.Packed(self.bits, self.format, self.out_features, self.in_features,
                           self.ngroups, _ptr(self.qweight, c_int32),
                           _ptr(self.qzeros, c_int32), _ptr(self.scales, c_uint16),
                           _ptr(self.g_idx, c_int32))

    def unpack(self, mode="clean", ctx=None):
        """Codes, float32 scales, true zero points and g_idx (UnpackedTensors)."""
        dst = UnpackedTensors.empty(self.bits, self.out_features, self.in_features,
                                    self.ngroups)
        c = dst._c()
        _call(ctx, _L.gptq_unpack, byref(self._c()), _lookup(PACK_MODES, mode, "pack mode"),
              byref(c))
        return dst

    def matmul(self, x, bias=None, ctx=None):
        """y = x * Wq^T (+ bias) straight from the packed tensors; x is [batch, in]
        (or [in]), y float32 [batch, out] (or [out])."""
        x2, y, vector = _matmul_buffers(x, self.in_features, self.out_features)
        b = None
        if bias is not None:
            b = _check_array(bias, np.float32, (self.out_features,), "bias")
        _call(ctx, _L.gptq_dequant_matmul, byref(self._c()), _ptr(x2, c_float), x2.shape[0],
              _ptr(b, c_float) if b is not None else None, _ptr(y, c_float))
        return y[0] if vector else y


def _matmul_buffers(x, in_features, out_features):
    """x as float32 [batch, in] (a vector [in] is one row), a new y [batch, out], and
    whether x was a vector."""
    x = as_input(x, np.float32, "x")
    vector = x.ndim == 1
    x2 = x.reshape(1, -1) if vector else x
    if x2.ndim != 2 or x2.shape[1] != in_features:
        raise ValueError("x: expected [batch, %d], got shape %s" % (in_features, x.shape))
    return x2, np.empty((x2.shape[0], out_features), dtype=np.float32), vector


class QLinear(_Handle):
    """A quantized linear layer prepared once for the fast fused kernels
    (gptq_qlinear_create): y = x * Wq^T + bias, many times over. The packed tensors may
    be dropped after preparing."""

    _free = _L.gptq_qlinear_free

    # Indexed by GPTQ_QLINEAR_KERNEL_* (tests/test_abi.py checks the order). The cuda_*
    # kernels need a layer created with a CUDA context.
    KERNELS = ("auto", "portable", "avx2", "avx512", "sgemm", "cuda_gemv", "cuda_mma",
               "cuda_cublas")

    def __init__(self, ctx, packed, bias=None):
        out = c_void_p()
        b = None
        if bias is not None:
            b = _check_array(bias, np.float32, (packed.out_features,), "bias")
        ctx.check(_L.gptq_qlinear_create(ctx.handle, byref(packed._c()),
                                         _ptr(b, c_float) if b is not None else None,
                                         byref(out)))
        super().__init__(out.value, ctx)

    @property
    def in_features(self):
        return _L.gptq_qlinear_in_features(self.handle)

    @property
    def out_features(self):
        return _L.gptq_qlinear_out_features(self.handle)

    @property
    def bits(self):
        return _L.gptq_qlinear_bits(self.handle)

    @property
    def kernel(self):
        """The kernel forced on this layer ("auto" unless set)."""
        return _L.gptq_qlinear_kernel_name(_L.gptq_qlinear_kernel(self.handle)).decode()

    @kernel.setter
    def kernel(self, name):
        kernel = _lookup({k: i for i, k in enumerate(self.KERNELS)}, name, "kernel")
        self._ctx.check(_L.gptq_qlinear_set_kernel(self._ctx.handle, self.handle, kernel))

    @classmethod
    def kernel_available(cls, name):
        return bool(_L.gptq_qlinear_kernel_available(cls.KERNELS.index(name)))

    def __call__(self, x):
        """x [batch, in] (or [in]) -> float32 [batch, out] (or [out])."""
        x2, y, vector = _matmul_buffers(x, self.in_features, self.out_features)
        self._ctx.check(_L.gptq_qlinear_forward(self._ctx.handle, self.handle,
                                                _ptr(x2, c_float), x2.shape[0],
                                                _ptr(y, c_float)))
        return y[0] if vector else y


class UnpackedTensors:
    """A layer's quantized tensors, unpacked: codes [out, in], scales float32
    [ngroups, out], zeros [ngroups, out] (true zero points), g_idx [in]; q (float32
    [out, in]) only for pack mode "autogptq"."""

    def __init__(self, bits, codes, scales, zeros, g_idx, q=None, group_size=-1):
        self.bits = int(bits)
        self.group_size = int(group_size)
        zeros = as_input(zeros, np.int32, "zeros", 2)
        self.ngroups, self.out_features = zeros.shape
        g_idx = as_input(g_idx, np.int32, "g_idx", 1)
        self.in_features = g_idx.shape[0]
        rc = (self.out_features, self.in_features)
        self.codes = None if codes is None else _check_array(codes, np.int32, rc, "codes")
        self.scales = _check_array(scales, np.float32, zeros.shape, "scales")
        self.zeros, self.g_idx = zeros, g_idx
        self.q = None if q is None else _check_array(q, np.float32, rc, "q")

    @classmethod
    def empty(cls, bits, out_features, in_features, ngroups):
        return cls(bits, np.zeros((out_features, in_features), np.int32),
                   np.zeros((ngroups, out_features), np.float32),
                   np.zeros((ngroups, out_features), np.int32),
                   np.zeros(in_features, np.int32))

    def _c(self):
        def p(a, t):
            return _ptr(a, t) if a is not None else None
        return _lib.Unpacked(self.bits, self.group_size, self.out_features, self.in_features,
                             self.ngroups, p(self.codes, c_int32), p(self.scales, c_float),
                             p(self.zeros, c_int32), p(self.g_idx, c_int32),
                             p(self.q, c_float))

    def pack(self, format="gptq", mode="clean", ctx=None):
        dst = PackedTensors.empty(self.bits, format, self.out_features, self.in_features,
                                  self.ngroups)
        _call(ctx, _L.gptq_pack, byref(self._c()), _lookup(PACK_MODES, mode, "pack mode"),
              byref(dst._c()))
        return dst


def _call(ctx, fn, *args):
    """Call a function whose context may be NULL. Without a context the library
    records no message, so the exception names the function."""
    handle = ctx.handle if ctx is not None else None
    status = fn(handle, *args)
    if status != 0:
        if ctx is not None:
            ctx.check(status)
        raise error(status, "%s failed (pass ctx= for the library's message)" % fn.__name__)


def fp32_to_fp16(f):
    return _L.gptq_fp32_to_fp16(f)


def fp16_to_fp32(h):
    return _L.gptq_fp16_to_fp32(h)
