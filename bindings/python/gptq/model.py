"""Whole models (<gptq/model.h>): token data, Hugging Face Llama-family directories,
sequential GPTQ with a progress callback, saving and perplexity."""

from ctypes import POINTER, byref, c_int32, c_int64, c_void_p
from collections import namedtuple

import numpy as np

from . import _lib
from .core import (FORMATS, PACK_MODES, Config, _Handle, _lookup, _view, as_input)
from .errors import CancelledError

_L = _lib.lib

TOKEN_KINDS = {"auto": _lib.K["GPTQ_TOKENS_AUTO"], "bytes": _lib.K["GPTQ_TOKENS_BYTES"],
               "ids": _lib.K["GPTQ_TOKENS_IDS"]}

Progress = namedtuple("Progress", "layer num_layers module step num_steps loss damp_percent "
                                  "seconds elapsed")
Progress.__doc__ = """What the progress callback of Model.quantize sees: once per
quantized module (module = "self_attn.q_proj", ...) and once at each layer's end
(module = ""). layer is 0-based; step counts modules done over all layers."""

EvalResult = namedtuple("EvalResult", "ppl nll tokens windows seconds")

GenerateResult = namedtuple("GenerateResult", "tokens prompt_tokens prefill_seconds "
                                              "decode_seconds")
GenerateResult.__doc__ = """What Model.generate returns: the new tokens (int32 array) and
the time of the prompt's pass and of the new tokens' passes."""


class Tokens(_Handle):
    """Token data: sequences of int32 ids."""

    _free = _L.gptq_tokens_free

    @classmethod
    def load(cls, ctx, path, kind="auto"):
        """From a file: "bytes" (the file's bytes are the tokens), "ids" (a JSON array
        of ids or of id arrays, or a safetensors I32/I64 tensor), or "auto"."""
        out = c_void_p()
        ctx.check(_L.gptq_tokens_load(ctx.handle, str(path).encode(),
                                      _lookup(TOKEN_KINDS, kind, "token kind"), byref(out)))
        return cls(out.value, ctx)

    @classmethod
    def from_ids(cls, ctx, ids):
        """One sequence from an array of ids (or from bytes: one token per byte)."""
        if isinstance(ids, (bytes, bytearray)):
            ids = np.frombuffer(ids, dtype=np.uint8)
        arr = as_input(ids, np.int32, "ids", 1)
        out = c_void_p()
        ctx.check(_L.gptq_tokens_from_ids(ctx.handle, arr.ctypes.data_as(POINTER(c_int32)),
                                          arr.shape[0], byref(out)))
        return cls(out.value, ctx)

    def __len__(self):
        return _L.gptq_tokens_count(self.handle)

    def __getitem__(self, i):
        """Sequence i as a read-only int32 view."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("sequence %d of %d" % (i, len(self)))
        n = c_int64()
        ptr = _L.gptq_tokens_sequence(self.handle, i, byref(n))
        return _view(ptr, (n.value,), np.int32, self)

    @property
    def total(self):
        """Tokens over all sequences."""
        return _L.gptq_tokens_total(self.handle)


def _tokens(ctx, data):
    if isinstance(data, Tokens):
        return data
    return Tokens.from_ids(ctx, data)


class Model(_Handle):
    """A Hugging Face model directory (LlamaForCausalLM, MistralForCausalLM,
    Qwen2ForCausalLM; float or GPTQ), memory-mapped."""

    _free = _L.gptq_model_free

    def __init__(self, ctx, path):
        out = c_void_p()
        ctx.check(_L.gptq_model_open(ctx.handle, str(path).encode(), byref(out)))
        super().__init__(out.value, ctx)

    @property
    def architecture(self):
        return _L.gptq_model_architecture(self.handle).decode()

    @property
    def num_layers(self):
        return _L.gptq_model_num_layers(self.handle)

    @property
    def hidden_size(self):
        return _L.gptq_model_hidden_size(self.handle)

    @property
    def vocab_size(self):
        return _L.gptq_model_vocab_size(self.handle)

    @property
    def is_quantized(self):
        return bool(_L.gptq_model_is_quantized(self.handle))

    def quantize(self, calib, nsamples=None, seqlen=None, seed=None, true_sequential=None,
                 progress=None, config=None, **overrides):
        """Sequential GPTQ over every decoder-layer linear. `calib` is Tokens (or ids,
        or bytes); None arguments keep the library defaults. `progress(p)` is called
        with a Progress after every module and layer; returning False cancels
        (CancelledError), and an exception it raises cancels and is re-raised here.
        Layer options come from `config` and keyword overrides as in quantize_layer."""
        ctx = self._ctx
        tokens = _tokens(ctx, calib)
        opts = _lib.new_options(_lib.QuantizeOptions, _L.gptq_quantize_options_init)
        cfg = config if isinstance(config, Config) else Config(**(config or {}))
        for name, value in overrides.items():
            if name not in Config.FIELDS:
                raise TypeError("unknown config field %r" % name)
            setattr(cfg, name, value)
        cfg.fill(opts.config)
        for name, value in (("nsamples", nsamples), ("seqlen", seqlen), ("seed", seed)):
            if value is not None:
                setattr(opts, name, value)
        if true_sequential is not None:
            opts.true_sequential = int(bool(true_sequential))
        raised = []
        if progress is not None:
            def on_progress(_user, p):
                q = p.contents
                try:
                    go_on = progress(Progress(q.layer, q.num_layers, q.module.decode(),
                                              q.step, q.num_steps, q.loss, q.damp_percent,
                                              q.seconds, q.elapsed))
                except BaseException as exc:  # noqa: B902 - handed back to the caller
                    raised.append(exc)
                    return 1
                return 1 if go_on is False else 0
            opts.progress = _lib.PROGRESS_FN(on_progress)
        try:
            ctx.check(_L.gptq_model_quantize(ctx.handle, self.handle, tokens.handle,
                                             byref(opts)))
        except CancelledError as exc:
            if raised:
                raise raised[0] from exc
            raise

    def save(self, path, format="gptq", pack="clean", max_shard_bytes=None, force=False):
        """Write the quantized model as a GPTQ checkpoint directory."""
        opts = _lib.new_options(_lib.SaveOptions, _L.gptq_save_options_init)
        opts.format = _lookup(FORMATS, format, "format")
        opts.pack_mode = _lookup(PACK_MODES, pack, "pack mode")
        if max_shard_bytes is not None:
            opts.max_shard_bytes = max_shard_bytes
        opts.force = int(bool(force))
        self._ctx.check(_L.gptq_model_save(self._ctx.handle, self.handle, str(path).encode(),
                                           byref(opts)))

    def save_dequantized(self, path, force=False):
        """Write a quantized model back as a float16 checkpoint."""
        self._ctx.check(_L.gptq_model_save_dequantized(self._ctx.handle, self.handle,
                                                       str(path).encode(), int(bool(force))))

    def generate(self, prompt, max_tokens=128, temperature=0.0, top_k=0, seed=0,
                 stop_at_eos=True, on_token=None):
        """Continue `prompt` (ids, or bytes for a byte-level model) with up to
        `max_tokens` new tokens: greedy with temperature 0, else sampled (among the
        `top_k` most likely, 0 = all) reproducibly for a `seed`. `on_token(id)` is
        called with each new token; returning False stops early, and an exception it
        raises stops and is re-raised here."""
        if isinstance(prompt, (bytes, bytearray)):
            prompt = np.frombuffer(prompt, dtype=np.uint8)
        ids = as_input(prompt, np.int32, "prompt", 1)
        opts = _lib.new_options(_lib.GenerateOptions, _L.gptq_generate_options_init)
        opts.max_tokens = max_tokens
        opts.temperature = temperature
        opts.top_k = top_k
        opts.seed = seed
        opts.stop_at_eos = int(bool(stop_at_eos))
        raised = []
        if on_token is not None:
            def call(_user, token):
                try:
                    return 1 if on_token(token) is False else 0
                except BaseException as exc:  # noqa: B902 - handed back to the caller
                    raised.append(exc)
                    return 1
            opts.on_token = _lib.TOKEN_FN(call)
        out = np.empty(max(int(max_tokens), 1), dtype=np.int32)
        buf = _lib.ctypes.create_string_buffer(_lib.ctypes.sizeof(_lib.GenerateResult) + 1024)
        res = _lib.GenerateResult.from_buffer(buf)
        res.struct_size = len(buf)
        self._ctx.check(_L.gptq_model_generate(
            self._ctx.handle, self.handle, ids.ctypes.data_as(POINTER(c_int32)), ids.shape[0],
            byref(opts), out.ctypes.data_as(POINTER(c_int32)), out.shape[0], byref(res)))
        if raised:
            raise raised[0]
        return GenerateResult(out[:res.new_tokens].copy(), res.prompt_tokens,
                              res.prefill_seconds, res.decode_seconds)

    def eval(self, text, seqlen=2048):
        """Perplexity on `text` (Tokens, ids or bytes) in windows of `seqlen` tokens."""
        tokens = _tokens(self._ctx, text)
        # A newer library may know more fields; give it room and say so in struct_size.
        buf = _lib.ctypes.create_string_buffer(_lib.ctypes.sizeof(_lib.EvalResult) + 1024)
        res = _lib.EvalResult.from_buffer(buf)
        res.struct_size = len(buf)
        self._ctx.check(_L.gptq_model_eval(self._ctx.handle, self.handle, tokens.handle,
                                           seqlen, byref(res)))
        return EvalResult(res.ppl, res.nll, res.tokens, res.windows, res.seconds)
