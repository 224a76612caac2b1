#!/bin/sh
# Shell test of the whole-model commands: `gptq quantize`, `gptq eval`, `gptq dequantize`.
#
#   tests/cli/test_model_cli.sh PATH/TO/gptq PATH/TO/models
#
# Quantizes the bundled tiny-llama-bytes (4-bit, groups of 128, 32 calibration windows)
# and stories260K (groups of 32, pre-tokenized calibration and evaluation), checks the
# checkpoint files, the perplexity of the result against the float model's (3.245078
# on tiny-llama-bytes/eval.txt, seqlen 256; 3.605434 on stories260K/eval_ids.json), a
# dequantize round trip, exit statuses (0 success, 1 failure, 2 bad usage), that
# failures name what failed and never touch an existing output, and Ctrl-C. Uses
# python3 (standard library only) for the JSON and SIGINT checks; those parts are
# skipped, with a note, without it.
#
# POSIX sh on purpose: CI images without bash can run it too.

set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 GPTQ_BINARY MODELS_DIR" >&2
    exit 2
fi
GPTQ=$1
MODELS=$2
TINY=$MODELS/tiny-llama-bytes
STORIES=$MODELS/stories260K

if [ ! -x "$GPTQ" ]; then
    echo "test_model_cli: $GPTQ is not an executable" >&2
    exit 1
fi
for d in "$TINY" "$STORIES"; do
    if [ ! -f "$d/config.json" ]; then
        echo "test_model_cli: no model in $d" >&2
        exit 1
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gptq_model_cli_test.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT HUP INT TERM

failures=0
passes=0

pass() {
    passes=$((passes + 1))
    echo "ok   - $1"
}

fail() {
    failures=$((failures + 1))
    echo "FAIL - $1"
    if [ -s "$TMP/stderr" ]; then
        sed 's/^/       stderr: /' "$TMP/stderr" | head -n 20
    fi
}

# run EXPECTED_STATUS DESCRIPTION ARGS...: run gptq, capture stdout/stderr in $TMP.
# A status above 128 is a signal (a crash): always a failure, whatever was expected.
run() {
    expected=$1
    what=$2
    shift 2
    t0=$(date +%s)
    "$GPTQ" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    status=$?
    t1=$(date +%s)
    if [ "$status" -eq "$expected" ]; then
        pass "$what (exit $status, $((t1 - t0))s)"
        return 0
    fi
    fail "$what: exit $status, expected $expected"
    return 1
}

# stderr_has TEXT DESCRIPTION: the last run's stderr contains TEXT.
stderr_has() {
    if grep -F -q -- "$1" "$TMP/stderr"; then
        pass "$2"
    else
        fail "$2: stderr does not contain '$1'"
    fi
}

# close A B REL: |A / B - 1| < REL (awk, so no python is needed).
close() {
    awk -v a="$1" -v b="$2" -v r="$3" \
        'BEGIN { if (a == "" || b == "" || b + 0 == 0) exit 1; d = a / b - 1;
                 if (d < 0) d = -d; exit !(d < r) }'
}

# The perplexity of the last `gptq eval` ("ppl 3.245078  nll ...").
last_ppl() {
    sed -n 's/^ppl \([0-9.eE+-]*\) .*/\1/p' "$TMP/stdout" | head -n 1
}

# A fingerprint of every file in a directory, to show it was not touched.
fingerprint() {
    (cd "$1" && ls -lid --time-style=full-iso . && ls -li --time-style=full-iso &&
        cksum ./*) 2>&1
}

PY=python3
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; fi
have_python=no
if command -v "$PY" >/dev/null 2>&1; then
    have_python=yes
fi

FLOAT_PPL=3.245078   # tiny-llama-bytes/README.md, eval.txt, seqlen 256
STORIES_PPL=3.605434 # stories260K/README.md, eval_ids.json

# ---- help ---------------------------------------------------------------------------
for cmd in quantize eval dequantize generate; do
    run 0 "gptq $cmd --help" "$cmd" --help
    if grep -q "^Usage: gptq $cmd" "$TMP/stdout"; then pass "$cmd --help prints its usage"
    else fail "$cmd --help prints its usage"; fi
    run 0 "gptq help $cmd" help "$cmd"
done
run 0 "gptq --help" --help
for cmd in quantize eval dequantize generate; do
    if grep -q "^  $cmd " "$TMP/stdout"; then pass "gptq --help lists $cmd"
    else fail "gptq --help lists $cmd"; fi
done

# ---- bad usage: exit 2, nothing written -----------------------------------------------
X=$TMP/x-out
CAL=$TINY/calib.txt
run 2 "quantize without arguments" quantize
run 2 "quantize without -o" quantize "$TINY" --calib "$CAL"
run 2 "quantize without --calib" quantize "$TINY" -o "$X"
run 2 "quantize: unknown option" quantize "$TINY" -o "$X" --calib "$CAL" --frobnicate
run 2 "quantize: abbreviated option" quantize "$TINY" -o "$X" --calib "$CAL" --nsamp 8
run 2 "quantize: two model directories" quantize "$TINY" "$STORIES" -o "$X" --calib "$CAL"
run 2 "quantize: --bits 5" quantize "$TINY" -o "$X" --calib "$CAL" --bits 5
run 2 "quantize: --nsamples 0" quantize "$TINY" -o "$X" --calib "$CAL" --nsamples 0
run 2 "quantize: --seqlen 12x" quantize "$TINY" -o "$X" --calib "$CAL" --seqlen 12x
run 2 "quantize: --damp 1" quantize "$TINY" -o "$X" --calib "$CAL" --damp 1
run 2 "quantize: --group-size 0" quantize "$TINY" -o "$X" --calib "$CAL" --group-size 0
run 2 "quantize: --format v3" quantize "$TINY" -o "$X" --calib "$CAL" --format v3
run 2 "quantize: --calib-format words" quantize "$TINY" -o "$X" --calib "$CAL" --calib-format words
run 2 "quantize: --max-shard-size 4XB" quantize "$TINY" -o "$X" --calib "$CAL" --max-shard-size 4XB
run 2 "quantize: --max-shard-size 0" quantize "$TINY" -o "$X" --calib "$CAL" --max-shard-size 0
run 2 "quantize: --eval-seqlen without --eval" quantize "$TINY" -o "$X" --calib "$CAL" --eval-seqlen 256
run 2 "quantize: --pack autogptq with --format gptq_v2" \
    quantize "$TINY" -o "$X" --calib "$CAL" --pack autogptq --format gptq_v2
run 2 "quantize: --json=1" quantize "$TINY" -o "$X" --calib "$CAL" --json=1
run 2 "quantize: --threads -1" quantize "$TINY" -o "$X" --calib "$CAL" --threads -1
run 2 "eval without --text" eval "$TINY"
run 2 "eval without a model" eval --text "$TINY/eval.txt"
run 2 "eval: --seqlen 1" eval "$TINY" --text "$TINY/eval.txt" --seqlen 1
run 2 "eval: --text-format words" eval "$TINY" --text "$TINY/eval.txt" --text-format words
run 2 "dequantize without -o" dequantize "$TINY"
run 2 "dequantize without a directory" dequantize -o "$X"
if [ -e "$X" ]; then fail "usage errors wrote an output"
else pass "usage errors write no output"; fi

# ---- failures: exit 1 with a message naming what failed ------------------------------
MISSING=$TMP/no-such-model
run 1 "quantize: missing model directory" quantize "$MISSING" -o "$X" --calib "$CAL"
stderr_has "$MISSING" "missing model directory: message names it"
run 1 "quantize: missing calibration file" quantize "$TINY" -o "$X" --calib "$TMP/no-such.txt"
stderr_has "$TMP/no-such.txt" "missing calibration file: message names it"
run 1 "quantize: output is the model directory" quantize "$TINY" -o "$TINY" --calib "$CAL" --force
run 1 "quantize: --rtn with --act-order" quantize "$TINY" -o "$X" --calib "$CAL" --rtn --act-order
stderr_has "gptq: " "--rtn with --act-order: message"
printf 'too short' >"$TMP/short.txt"
run 1 "quantize: calibration shorter than one window" \
    quantize "$TINY" -o "$X" --calib "$TMP/short.txt" --seqlen 256
run 1 "eval: missing model directory" eval "$MISSING" --text "$TINY/eval.txt"
stderr_has "$MISSING" "eval of a missing model: message names it"
run 1 "eval: text shorter than one window" eval "$TINY" --text "$TMP/short.txt" --seqlen 256
run 1 "dequantize: a float model" dequantize "$TINY" -o "$X"
stderr_has "$TINY" "dequantize of a float model: message names it"
if [ -e "$X" ]; then fail "failed runs wrote an output"
else pass "failed runs write no output"; fi

# ---- tiny-llama-bytes: 4-bit g128 --------------------------------------------------
Q=$TMP/tiny-gptq-4bit-g128
if run 0 "quantize tiny-llama-bytes 4-bit g128 (32 samples of 256)" \
    quantize "$TINY" -o "$Q" --calib "$CAL" --nsamples 32 --seqlen 256 --bits 4 \
    --group-size 128; then
    for f in config.json quantize_config.json model.safetensors; do
        if [ -s "$Q/$f" ]; then pass "tiny: $f written"
        else fail "tiny: $f missing"; fi
    done
    if grep -q '"quantization_config"' "$Q/config.json"; then
        pass "tiny: config.json has quantization_config"
    else
        fail "tiny: config.json has no quantization_config"
    fi
    if grep -q '"bits": *4' "$Q/quantize_config.json" &&
        grep -q '"group_size": *128' "$Q/quantize_config.json"; then
        pass "tiny: quantize_config.json says 4 bits, group 128"
    else
        fail "tiny: quantize_config.json: $(cat "$Q/quantize_config.json")"
    fi
    n=$(grep -c '^layer [1-4]/4: loss q=.* k=.* v=.* o=.* gate=.* up=.* down=.*  damp .*s$' \
        "$TMP/stdout")
    if [ "$n" -eq 4 ]; then pass "tiny: one summary line per layer"
    else fail "tiny: per-layer lines: $(cat "$TMP/stdout")"; fi
    if grep -q '^quantized 4 layers in .* -> ' "$TMP/stdout"; then pass "tiny: final line"
    else fail "tiny: final line: $(tail -n 1 "$TMP/stdout")"; fi
fi

QPPL=
if [ -d "$Q" ] && run 0 "eval the quantized tiny-llama-bytes" \
    eval "$Q" --text "$TINY/eval.txt" --seqlen 256; then
    QPPL=$(last_ppl)
    if grep -q '^ppl [0-9.]*  nll [0-9.]*  tokens 197370  windows 774  [0-9.]*s$' \
        "$TMP/stdout"; then
        pass "eval line: ppl, nll, 197370 tokens, 774 windows"
    else
        fail "eval line: $(cat "$TMP/stdout")"
    fi
    if close "$QPPL" "$FLOAT_PPL" 0.01; then
        pass "quantized ppl $QPPL within 1% of the float $FLOAT_PPL"
    else
        fail "quantized ppl '$QPPL' not within 1% of the float $FLOAT_PPL"
    fi
fi

# The existing checkpoint survives a run without --force, byte for byte.
if [ -d "$Q" ]; then
    fingerprint "$Q" >"$TMP/before.fp"
    run 1 "quantize into an existing output without --force" \
        quantize "$TINY" -o "$Q" --calib "$CAL" --nsamples 32 --seqlen 256
    stderr_has "--force" "existing output: message mentions --force"
    run 1 "quantize an already quantized model" \
        quantize "$Q" -o "$TMP/twice" --calib "$CAL" --nsamples 4 --seqlen 256
    fingerprint "$Q" >"$TMP/after.fp"
    if cmp -s "$TMP/before.fp" "$TMP/after.fp"; then
        pass "existing output untouched without --force"
    else
        fail "existing output was modified"
    fi
    if [ -e "$TMP/twice" ]; then fail "quantizing a GPTQ model wrote an output"
    else pass "quantizing a GPTQ model writes nothing"; fi
fi

# Dequantize round trip: float16 weights equal to the quantized ones (scales are
# float16 already), so the perplexity agrees to float16 rounding of the rest.
DQ=$TMP/tiny-dequantized
if [ -d "$Q" ] && run 0 "dequantize the tiny checkpoint" dequantize "$Q" -o "$DQ"; then
    if [ -s "$DQ/config.json" ] && ! grep -q quantization_config "$DQ/config.json"; then
        pass "dequantized config.json has no quantization_config"
    else
        fail "dequantized config.json"
    fi
    run 1 "dequantize into an existing output without --force" dequantize "$Q" -o "$DQ"
    if run 0 "eval the dequantized model" eval "$DQ" --text "$TINY/eval.txt" --seqlen 256; then
        DPPL=$(last_ppl)
        if close "$DPPL" "$QPPL" 0.001; then
            pass "dequantized ppl $DPPL within 1e-3 of the quantized $QPPL"
        else
            fail "dequantized ppl '$DPPL' vs quantized '$QPPL'"
        fi
    fi
fi

# ---- stories260K: ids, GQA, in_features 64 and 172, groups of 32, --json --eval -----
S=$TMP/stories-gptq-4bit-g32
if run 0 "quantize stories260K 4-bit g32 --json --eval" \
    quantize "$STORIES" -o "$S" --calib "$STORIES/calib_ids.json" --seqlen 256 \
    --group-size 32 --json --eval "$STORIES/eval_ids.json"; then
    cp "$TMP/stdout" "$TMP/stories.json"
    if [ -s "$S/model.safetensors" ] && grep -q quantization_config "$S/config.json"; then
        pass "stories: checkpoint written"
    else
        fail "stories: checkpoint files"
    fi
    if [ "$have_python" = yes ]; then
        if "$PY" -c '
import json, math, sys
o = json.load(open(sys.argv[1]))
for k in ("model", "output", "bits", "group_size", "desc_act", "sym", "format",
          "seconds", "layers", "ppl_before", "ppl_after"):
    assert k in o, k
assert o["output"] == sys.argv[2] and o["bits"] == 4 and o["group_size"] == 32, o
assert o["sym"] is True and o["desc_act"] is False and o["format"] == "gptq", o
assert len(o["layers"]) == 5, o["layers"]
# gate/up (172 outputs) and down (172 inputs) do not pack for other loaders: kept float
names = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}
q = json.load(open(sys.argv[2] + "/quantize_config.json"))
assert sorted(q["dynamic"]) == ["-:model\\.layers\\.\\d+\\.mlp\\.%s" % n
                                for n in ("down_proj", "gate_proj", "up_proj")], q
for i, l in enumerate(o["layers"]):
    assert l["layer"] == i and set(l["modules"]) == names, l
    for m in l["modules"].values():
        assert m["loss"] >= 0 and 0 < m["damp_percent"] < 1 and m["seconds"] >= 0, m
before, after = o["ppl_before"], o["ppl_after"]
assert abs(before / float(sys.argv[3]) - 1) < 1e-5, before
assert before < after < 1.2 * before, (before, after)
print("ppl before %.6f after %.6f" % (before, after))
' "$TMP/stories.json" "$S" "$STORIES_PPL" >"$TMP/py.out" 2>&1; then
            pass "stories --json: one object, every layer and module, $(cat "$TMP/py.out")"
        else
            fail "stories --json: $(cat "$TMP/py.out")"
        fi
    else
        echo "skip - JSON checks (no python3)"
    fi
fi
if [ -d "$S" ] && run 0 "eval the stories checkpoint on eval_ids.json" \
    eval "$S" --text "$STORIES/eval_ids.json" --seqlen 256 --json; then
    if [ "$have_python" = yes ]; then
        if "$PY" -c '
import json, sys
o = json.load(open(sys.argv[1]))
for k in ("ppl", "nll", "tokens", "windows", "seconds"):
    assert k in o, k
assert o["windows"] == 300 and o["tokens"] == 75468, o
assert float(sys.argv[2]) < o["ppl"] < 1.2 * float(sys.argv[2]), o
# quantize evaluates the model in memory (float32 embeddings and norms); the
# checkpoint stores them as float16, as the references do: equal to about 1e-5.
s = json.load(open(sys.argv[3]))
assert abs(o["ppl"] / s["ppl_after"] - 1) < 1e-4, (o["ppl"], s["ppl_after"])
' "$TMP/stdout" "$STORIES_PPL" "$TMP/stories.json" >"$TMP/py.out" 2>&1; then
            pass "stories eval --json: 300 windows, ppl agrees with quantize's ppl_after"
        else
            fail "stories eval --json: $(cat "$TMP/py.out") $(cat "$TMP/stdout")"
        fi
    fi
fi
# --force replaces; --quiet prints nothing; --rtn is the quick way to get there.
if [ -d "$S" ] && run 0 "quantize --force --quiet --rtn over an existing output" \
    quantize "$STORIES" -o "$S" --calib "$STORIES/calib_ids.json" --seqlen 256 \
    --group-size 32 --nsamples 8 --rtn --force --quiet; then
    if [ ! -s "$TMP/stdout" ]; then pass "--quiet prints nothing"
    else fail "--quiet printed: $(cat "$TMP/stdout")"; fi
    if grep -q quantization_config "$S/config.json"; then pass "--force wrote a checkpoint"
    else fail "--force: no checkpoint"; fi
fi

# ---- generate: float and GPTQ, bytes and llama2.c pieces, --json, bad usage ------------
if run 0 "generate with the float tiny model" generate "$TINY" --prompt "In the beginning" \
    --max-tokens 40; then
    if [ "$(head -c 16 "$TMP/stdout")" = "In the beginning" ] &&
        [ "$(wc -c <"$TMP/stdout")" -eq 57 ]; then
        pass "generate: the prompt, then 40 bytes and a newline"
    else
        fail "generate output: $(cat "$TMP/stdout")"
    fi
    stderr_has "40 tokens in" "generate: tokens/s on stderr"
fi
if [ -d "$Q" ] && run 0 "generate with the 4-bit checkpoint, --json" generate "$Q" \
    --prompt "And God said" --max-tokens 24 --temperature 0.7 --top-k 20 --seed 5 --json; then
    if [ "$have_python" = yes ] && "$PY" -c '
import json, sys
o = json.load(open(sys.argv[1]))
assert o["prompt_tokens"] == 12 and o["new_tokens"] == 24 and len(o["tokens"]) == 24, o
assert o["text"] == "".join(chr(t) for t in o["tokens"]), o
assert o["tokens_per_second"] > 0 and o["decode_seconds"] > 0, o
' "$TMP/stdout" >"$TMP/py.out" 2>&1; then
        pass "generate --json: tokens, text, speed"
    elif [ "$have_python" = yes ]; then
        fail "generate --json: $(cat "$TMP/py.out") $(cat "$TMP/stdout")"
    fi
fi
if run 0 "generate with stories260K from ids" generate "$STORIES" --prompt-ids "1, 403" \
    --max-tokens 30; then
    if grep -q "^Once upon a time" "$TMP/stdout"; then
        pass "generate: llama2.c pieces decoded ('Once upon a time...')"
    else
        fail "generate stories output: $(cat "$TMP/stdout")"
    fi
fi
run 2 "generate: text prompt for a non-byte vocabulary" generate "$STORIES" --prompt "Once" &&
    stderr_has "--prompt-ids" "generate: says to give --prompt-ids"
run 2 "generate: no prompt" generate "$TINY"
run 2 "generate: both prompts" generate "$TINY" --prompt a --prompt-ids 1
run 2 "generate: bad ids" generate "$TINY" --prompt-ids "1,x"
run 1 "generate: past max_position_embeddings" generate "$TINY" --prompt a --max-tokens 600 &&
    stderr_has "max_position_embeddings" "generate: names the limit"

# ---- --device: checked as a count; with no GPU, --backend cuda fails with a message --
run 2 "eval: --device -1" eval "$STORIES" --text "$STORIES/eval_ids.json" --device -1 &&
    stderr_has "--device" "eval: names the bad --device"
run 2 "quantize: --device x" quantize "$STORIES" -o "$TMP/dev" --calib "$STORIES/calib_ids.json" \
    --device x
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "skip - --backend cuda failure check (this machine has a GPU)"
else
    run 1 "eval --backend cuda --device 1 without a GPU" eval "$STORIES" \
        --text "$STORIES/eval_ids.json" --seqlen 256 --backend cuda --device 1 &&
        stderr_has "CUDA" "eval --backend cuda: says why CUDA is not usable"
    run 0 "generate --backend auto --device 1 falls back to the CPU" generate "$STORIES" \
        --prompt-ids 1 --max-tokens 3 --backend auto --device 1
fi

# ---- Ctrl-C: exit 1, "gptq: cancelled", nothing written ------------------------------
# The signal is sent once the first layer's summary line is out, so it lands while
# layers 2-4 are being quantized.
if [ "$have_python" = yes ]; then
    C=$TMP/cancelled
    "$PY" - "$GPTQ" "$TINY" "$C" >"$TMP/sig.out" 2>&1 <<'PYEOF'
import signal, subprocess, sys
gptq, tiny, out = sys.argv[1:4]
p = subprocess.Popen([gptq, "quantize", tiny, "-o", out, "--calib", tiny + "/calib.txt",
                      "--nsamples", "32", "--seqlen", "256"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
first = p.stdout.readline().decode()
p.send_signal(signal.SIGINT)
_, err = p.communicate()
print("status %d first %r stderr %r" % (p.returncode, first, err.decode()))
PYEOF
    if grep -q "^status 1 first 'layer 1/4.*gptq: cancelled" "$TMP/sig.out"; then
        pass "SIGINT during quantization: exit 1, 'gptq: cancelled'"
        if [ -e "$C" ]; then fail "a cancelled run wrote $C"
        else pass "a cancelled run writes nothing"; fi
    elif grep -q "^status 0 " "$TMP/sig.out"; then
        echo "skip - SIGINT arrived after the quantization had finished"
    else
        fail "SIGINT: $(cat "$TMP/sig.out")"
    fi
else
    echo "skip - SIGINT check (no python3)"
fi

echo "# $passes passed, $failures failed"
[ "$failures" -eq 0 ]
