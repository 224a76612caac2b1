#!/usr/bin/env bash
# The main job, end to end: install the dependencies if missing, build libgptq and the
# `gptq` command (Release), then quantize one linear layer with GPTQ (4 bits, groups of
# 128, act-order) and write an AutoGPTQ-compatible checkpoint of it.
#
#   bash scripts/demo.sh
#
# The layer file holds the weight W and the calibration inputs X (safetensors).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The layer to quantize: a bundled reference case (256 x 512, with 128 calibration
# sequences in X).
LAYER=tests/data/gptq-reference/p11_256x512_b4_g128_asym_act_dead.safetensors
OUT_DIR=/tmp/gptq-demo

jobs=${JOBS:-2}
build=${BUILD_DIR:-build}

bash scripts/deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$jobs" --target gptq_cli >/dev/null

mkdir -p "$OUT_DIR"
echo "+ $build/gptq layer $LAYER -o $OUT_DIR/result.safetensors --bits 4 --group-size 128 --act-order"
"$build/gptq" layer "$LAYER" -o "$OUT_DIR/result.safetensors" \
    --bits 4 --group-size 128 --act-order
echo "demo: wrote $OUT_DIR/result.safetensors"
