#!/usr/bin/env bash
# gpu-check: the GPU verification run, on a machine with a GPU, from what
# scripts/gpu-pack.sh prepared elsewhere (.gpu/ carried into this checkout).
#
#   bash scripts/gpu-check.sh [OUTDIR]     # OUTDIR: where the logs go (default $OUT or /tmp)
#
# 1. the GPU tests (tests/test_cuda.c: primitives, quantize_block bit for bit, every
#    reference case, the dequantize-matmul kernels against their bounds, the bundled model
#    end to end), verbose so skipped tests would show;
# 2. `gptq bench matmul --backend cuda` at 4096 x 4096 and 11008 x 4096, 4-bit g128,
#    batch 1/16/64, each GPU kernel forced once at batch 16;
# 3. `bench_layer --backend cuda` on 4096 x 4096 with and without act-order;
# 4. the main job on the GPU: `gptq quantize` of the bundled model (128 x 256 bytes,
#    4-bit g128) with --backend cuda and --eval (perplexity before and after, timed), and
#    the same for stories260K (grouped-query attention).
# Each step's output goes to OUTDIR/<step>.log; the script keeps going after a failure and
# exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
outdir=${1:-${OUT:-/tmp}}
mkdir -p "$outdir"
[[ -f .gpu/ROOT && -f .gpu/lib.tar.xz ]] || { echo "gpu-check: no .gpu/ here: run scripts/gpu-pack.sh first and carry .gpu" >&2; exit 2; }

# The binaries name files under the build machine's checkout: point that path here.
root=$(cat .gpu/ROOT)
if [[ $root != "$PWD" && ! -e $root ]]; then
    mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"
fi
mkdir -p /tmp/gptq-gpu-lib && tar -C /tmp/gptq-gpu-lib -xJf .gpu/lib.tar.xz
export LD_LIBRARY_PATH=/tmp/gptq-gpu-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
b=$root/.gpu/build
# bench_layer links the library statically: name the module for every program.
export GPTQ_CUDA_MODULE_PATH=$b/libgptq-cuda.so.0
rc=0
step() { # step NAME COMMAND...: run, log, remember a failure
    local name=$1
    shift
    echo "== $name: $*"
    "$@" >"$outdir/$name.log" 2>&1
    local r=$?
    tail -n 5 "$outdir/$name.log"
    ((r == 0)) || { echo "== $name failed ($r)"; rc=1; }
}

nvidia-smi -L 2>&1 || true
step test_cuda "$b/tests/test_cuda" --verbose --jobs 1
for out in 4096 11008; do
    for m in 1 16 64; do
        step "matmul_${out}_b$m" "$b/gptq" bench matmul --backend cuda --out "$out" --in 4096 \
            --bits 4 --group-size 128 --batch "$m" --reps 200
    done
    for k in cuda_gemv cuda_mma cuda_cublas; do
        step "matmul_${out}_b16_$k" "$b/gptq" bench matmul --backend cuda --out "$out" \
            --in 4096 --bits 4 --group-size 128 --batch 16 --kernel "$k" --reps 200
    done
done
step layer_4096 "$b/bench/bench_layer" --backend cuda --out 4096 --in 4096 --reps 5
step layer_4096_act "$b/bench/bench_layer" --backend cuda --out 4096 --in 4096 --reps 5 --act-order
step quantize_tiny "$b/gptq" quantize models/tiny-llama-bytes -o /tmp/gptq-gpu-tiny --force \
    --calib models/tiny-llama-bytes/calib.txt --nsamples 128 --seqlen 256 --bits 4 \
    --group-size 128 --eval models/tiny-llama-bytes/eval.txt --backend cuda
step quantize_stories "$b/gptq" quantize models/stories260K -o /tmp/gptq-gpu-stories --force \
    --calib models/stories260K/calib_ids.json --nsamples 128 --seqlen 256 --bits 4 \
    --group-size 32 --eval models/stories260K/eval_ids.json --backend cuda
exit $rc
