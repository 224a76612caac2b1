#!/usr/bin/env bash
# bench_llama7b: the whole-model pipeline at Llama-2-7B's shapes (hidden 4096,
# intermediate 11008, 32 heads, vocabulary 32000) on a model with random weights that
# bench/make_random_llama.py writes, so no download is needed. Reports seconds per
# decoder layer and the peak resident memory of `gptq quantize`.
#
#   bash bench/bench_llama7b.sh [--layers N] [--nsamples N] [--seqlen N] [--dtype f16]
#                               [--dir DIR] [--keep] [--backend cpu|cuda|auto]
#
# Defaults: 2 layers (every layer has the same shapes, so the per-layer time and the
# peak do not depend on the count: run --layers 4 to see it), 16 samples of 2048 tokens.
# The model goes to DIR (default /tmp/gptq-llama7b-L<layers>), the checkpoint to
# DIR-gptq; both are removed at the end unless --keep. Needs python3 with numpy, GNU
# time (/usr/bin/time) and a Release build in build/ (BUILD_DIR to change it).
# Last line:
#   bench_llama7b layers=2 tokens=32768 s_per_layer=98.1 quantize_s=196.2 peak_rss_gb=7.55
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

layers=2 nsamples=16 seqlen=2048 dtype=f16 dir="" keep=0 backend=cpu
while (($#)); do
    case $1 in
    --layers) layers=$2; shift 2 ;;
    --nsamples) nsamples=$2; shift 2 ;;
    --seqlen) seqlen=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --backend) backend=$2; shift 2 ;;
    *) echo "bench_llama7b: unknown option $1" >&2; exit 2 ;;
    esac
done
dir=${dir:-/tmp/gptq-llama7b-L$layers}
gptq=${BUILD_DIR:-build}/gptq
py=python3
[[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
[[ -x $gptq ]] || { echo "bench_llama7b: no $gptq: build first (bash scripts/test.sh)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "bench_llama7b: needs GNU time (apt-get install time)" >&2; exit 1; }

if [[ ! -f $dir/config.json ]]; then
    "$py" bench/make_random_llama.py "$dir" --layers "$layers" --dtype "$dtype" \
        --calib-sequences "$nsamples" --calib-seqlen "$seqlen"
fi
log=$(mktemp)
trap 'rm -f "$log"; ((keep)) || rm -rf "$dir" "$dir-gptq"' EXIT

/usr/bin/time -v -o "$log.time" "$gptq" quantize "$dir" -o "$dir-gptq" \
    --calib "$dir/calib.safetensors" --nsamples "$nsamples" --seqlen "$seqlen" --force --json \
    --backend "$backend" \
    >"$log"
peak_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log.time")
rm -f "$log.time"
"$py" - "$log" "$layers" "$((nsamples * seqlen))" "$peak_kb" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
layers, tokens, peak_kb = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for l in o["layers"]:
    mods = " ".join("%s=%.1fs" % (k.split(".")[1].replace("_proj", ""), v["seconds"])
                    for k, v in l["modules"].items())
    print("layer %d: %.1f s (GPTQ of the linears: %s)" % (l["layer"], l["seconds"], mods))
per = o["seconds"] / layers
print("bench_llama7b layers=%d tokens=%d s_per_layer=%.1f quantize_s=%.1f peak_rss_gb=%.2f"
      % (layers, tokens, per, o["seconds"], peak_kb * 1024 / 1e9))
EOF
