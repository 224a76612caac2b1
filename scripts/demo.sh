#!/usr/bin/env bash
# The main job, end to end: install the dependencies if missing, build libgptq and the
# `gptq` command (Release), then quantize a whole model with GPTQ and measure what it
# cost in perplexity.
#
#   bash scripts/demo.sh          # the model: tiny-llama-bytes -> 4-bit GPTQ checkpoint
#   bash scripts/demo.sh layer    # the older demo: one linear layer
#
# The model is the bundled models/tiny-llama-bytes (a trained 4-layer byte-level Llama,
# see its README). It is quantized to 4 bits with groups of 128 on 128 windows of 256
# bytes of its calib.txt, written as a GPTQ checkpoint (config.json with
# quantization_config, quantize_config.json, model.safetensors) that transformers,
# vLLM and TGI load, and evaluated on its eval.txt (windows of 256) before and after.
#
# Environment: JOBS (parallel build jobs, default 2), BUILD_DIR (default build),
# OUT_DIR (default /tmp/gptq-demo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

what=${1:-model}
case "$what" in
model | layer) ;;
*)
    echo "usage: bash scripts/demo.sh [model|layer]" >&2
    exit 2
    ;;
esac

OUT_DIR=${OUT_DIR:-/tmp/gptq-demo}
jobs=${JOBS:-2}
build=${BUILD_DIR:-build}

bash scripts/deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$jobs" --target gptq_cli >/dev/null
mkdir -p "$OUT_DIR"

if [[ "$what" == layer ]]; then
    # One linear layer: a bundled reference case (256 x 512, with 128 calibration
    # sequences in X), 4 bits, groups of 128, act-order.
    LAYER=tests/data/gptq-reference/p11_256x512_b4_g128_asym_act_dead.safetensors
    echo "+ $build/gptq layer $LAYER -o $OUT_DIR/result.safetensors --bits 4 --group-size 128 --act-order"
    "$build/gptq" layer "$LAYER" -o "$OUT_DIR/result.safetensors" \
        --bits 4 --group-size 128 --act-order
    echo "demo: wrote $OUT_DIR/result.safetensors"
    exit 0
fi

MODEL=models/tiny-llama-bytes
OUT=$OUT_DIR/tiny-llama-bytes-gptq-4bit-g128
args=(quantize "$MODEL" -o "$OUT" --calib "$MODEL/calib.txt" --nsamples 128 --seqlen 256
      --bits 4 --group-size 128 --eval "$MODEL/eval.txt" --eval-seqlen 256 --force)
echo "+ $build/gptq ${args[*]}"
"$build/gptq" "${args[@]}"
echo "demo: wrote $OUT:"
ls -l "$OUT"
