#!/usr/bin/env python3
"""Write a Llama-shaped Hugging Face model directory with random weights.

For benchmarks of the whole-model pipeline at real sizes without downloading a
model: config.json, one safetensors shard per decoder layer (plus one for the
embeddings, final norm and lm_head) with model.safetensors.index.json, and a
calibration file calib.safetensors holding random token ids (I32 [n, seqlen]).

    python3 bench/make_random_llama.py OUT_DIR [--layers 2] [--hidden 4096]
        [--intermediate 11008] [--heads 32] [--kv-heads 32] [--vocab 32000]
        [--dtype f16|bf16|f32] [--calib-sequences 128] [--calib-seqlen 2048] [--seed 0]
        [--gptq-bits B [--group-size G]]

Defaults give Llama-2-7B's shapes with 2 decoder layers (every layer has the same
shapes, so seconds per layer and peak memory do not depend on the layer count).
Weights are N(0, 0.02) as at initialisation, norms are 1. Needs numpy only.

With --gptq-bits the decoder linears are written as a GPTQ checkpoint instead (v1
format, symmetric, no act-order): random codes in qweight, the symmetric zero point
in qzeros, float16 scales of 0.02 / 2^(B-1) (so weights spread like the float ones),
g_idx = j // G, and the quantization dictionary in config.json and
quantize_config.json. No quantization runs: this is for timing the kernels and
`gptq generate` on a model of real size (e.g. all 32 layers of a 7B at 4 bits is
3.9 GB), not for accuracy.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"f16": "F16", "f32": "F32", "bf16": "BF16"}


def to_bytes(a, dtype):
    """Little-endian bytes of float32 array a in dtype (bf16: round to nearest even)."""
    if dtype == "bf16":
        u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return u.astype("<u2").tobytes()
    return np.ascontiguousarray(a).astype({"f16": "<f2", "f32": "<f4"}[dtype]).tobytes()


def pack_fields(codes, bits):
    """Pack integer codes [..., n] (n * bits a multiple of 32) along the last axis into
    little-endian int32 words, field i at bits [bits*i, bits*i + bits) of the stream."""
    c = np.asarray(codes, dtype=np.uint32)
    bitplanes = ((c[..., None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    packed = np.packbits(bitplanes.reshape(c.shape[:-1] + (-1,)), axis=-1, bitorder="little")
    return packed.view("<i4")


def gptq_tensors(rng, prefix, shape, bits, group_size):
    """qweight, qzeros, scales and g_idx of a random symmetric v1 GPTQ linear [R, C]."""
    r, c = shape
    gs = c if group_size == -1 else group_size
    ng = c // gs
    qweight = rng.integers(0, 2**32, size=(c * bits // 32, r), dtype=np.uint32)
    zero = 1 << (bits - 1)  # symmetric; v1 stores zero - 1
    qzeros = pack_fields(np.full((ng, r), zero - 1, dtype=np.uint32), bits)
    scales = np.full((ng, r), 0.02 / zero, dtype=np.float32)
    scales *= rng.uniform(0.5, 1.5, size=(ng, r)).astype(np.float32)
    g_idx = (np.arange(c) // gs).astype("<i4")
    return [(prefix + ".qweight", qweight.shape, qweight.astype("<u4").tobytes(), "I32"),
            (prefix + ".qzeros", qzeros.shape, qzeros.tobytes(), "I32"),
            (prefix + ".scales", scales.shape, scales.astype("<f2").tobytes(), "F16"),
            (prefix + ".g_idx", g_idx.shape, g_idx.tobytes(), "I32")]


def write_safetensors(path, tensors, dtype_name):
    """tensors: list of (name, shape, bytes) or (name, shape, bytes, dtype) (the
    tensor's own dtype instead of dtype_name). Written to a temporary, then renamed."""
    header, offset = {}, 0
    for name, shape, data, *own in tensors:
        header[name] = {"dtype": own[0] if own else dtype_name, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, data, *_ in tensors:
            f.write(data)
    os.replace(tmp, path)
    return offset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f16")
    ap.add_argument("--calib-sequences", type=int, default=128)
    ap.add_argument("--calib-seqlen", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gptq-bits", type=int, choices=[2, 3, 4, 8], default=None)
    ap.add_argument("--group-size", type=int, default=128)
    a = ap.parse_args()
    if a.gptq_bits and a.group_size != -1 and (a.group_size < 1 or a.hidden % a.group_size or
                                               a.intermediate % a.group_size):
        sys.exit("make_random_llama: --group-size must be -1 or divide hidden and intermediate")
    if a.gptq_bits and (a.hidden % 32 or a.intermediate % 32):
        sys.exit("make_random_llama: GPTQ packing needs hidden and intermediate multiples of 32")
    kv = a.kv_heads or a.heads
    if a.hidden % a.heads or a.heads % kv:
        sys.exit("make_random_llama: hidden must divide by heads, heads by kv-heads")
    hd = a.hidden // a.heads
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    dname = DTYPES[a.dtype]

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02)

    weight_map, total = {}, 0
    shards = a.layers + 1
    for i in range(a.layers):
        p = "model.layers.%d." % i
        t = [(p + "self_attn.q_proj.weight", (a.heads * hd, a.hidden)),
             (p + "self_attn.k_proj.weight", (kv * hd, a.hidden)),
             (p + "self_attn.v_proj.weight", (kv * hd, a.hidden)),
             (p + "self_attn.o_proj.weight", (a.hidden, a.heads * hd)),
             (p + "mlp.gate_proj.weight", (a.intermediate, a.hidden)),
             (p + "mlp.up_proj.weight", (a.intermediate, a.hidden)),
             (p + "mlp.down_proj.weight", (a.hidden, a.intermediate))]
        if a.gptq_bits:
            tensors = []
            for n, s in t:
                tensors += gptq_tensors(rng, n[:-len(".weight")], s, a.gptq_bits, a.group_size)
        else:
            tensors = [(n, s, to_bytes(rand(*s), a.dtype)) for n, s in t]
        ones = to_bytes(np.ones(a.hidden, np.float32), a.dtype)
        tensors += [(p + "input_layernorm.weight", (a.hidden,), ones),
                    (p + "post_attention_layernorm.weight", (a.hidden,), ones)]
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        total += write_safetensors(os.path.join(a.out, fname), tensors, dname)
        weight_map.update({t[0]: fname for t in tensors})
        print("layer %d/%d written" % (i + 1, a.layers), file=sys.stderr)
    tensors = [("model.embed_tokens.weight", (a.vocab, a.hidden),
                to_bytes(rand(a.vocab, a.hidden), a.dtype)),
               ("model.norm.weight", (a.hidden,), to_bytes(np.ones(a.hidden, np.float32), a.dtype)),
               ("lm_head.weight", (a.vocab, a.hidden), to_bytes(rand(a.vocab, a.hidden), a.dtype))]
    fname = "model-%05d-of-%05d.safetensors" % (shards, shards)
    total += write_safetensors(os.path.join(a.out, fname), tensors, dname)
    weight_map.update({t[0]: fname for t in tensors})
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": a.hidden, "intermediate_size": a.intermediate,
        "num_attention_heads": a.heads, "num_key_value_heads": kv,
        "num_hidden_layers": a.layers, "vocab_size": a.vocab,
        "max_position_embeddings": max(4096, a.calib_seqlen), "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "rope_scaling": None, "hidden_act": "silu",
        "tie_word_embeddings": False, "attention_bias": False,
        "torch_dtype": {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}[a.dtype],
    }
    if a.gptq_bits:
        quant = {"bits": a.gptq_bits, "group_size": a.group_size, "desc_act": False,
                 "sym": True, "true_sequential": True, "damp_percent": 0.01,
                 "static_groups": False, "quant_method": "gptq", "checkpoint_format": "gptq"}
        config["quantization_config"] = quant
        with open(os.path.join(a.out, "quantize_config.json"), "w") as f:
            json.dump(quant, f, indent=2)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    ids = rng.integers(0, a.vocab, size=(a.calib_sequences, a.calib_seqlen), dtype=np.int32)
    write_safetensors(os.path.join(a.out, "calib.safetensors"),
                      [("input_ids", ids.shape, ids.astype("<i4").tobytes())], "I32")
    print("wrote %s: %d layers, %.2f GB of weights, calib %dx%d ids"
          % (a.out, a.layers, total / 1e9, a.calib_sequences, a.calib_seqlen), file=sys.stderr)


if __name__ == "__main__":
    main()
