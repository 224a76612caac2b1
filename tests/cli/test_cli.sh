#!/bin/sh
# Shell test of the `gptq` command.
#
#   tests/cli/test_cli.sh PATH/TO/gptq PATH/TO/tests/data
#
# Runs `gptq layer` on reference cases, checks exit statuses (0 success, 1 failure,
# 2 bad usage), that failures print a message naming the file, never crash, and never
# touch an existing output file. Uses python3 (standard library only) where it needs
# to build a malformed input, and tests/data/gptq-reference/tools/check_result.py
# when python3 has numpy; each of those parts is skipped, with a note, otherwise.
#
# POSIX sh on purpose: CI images without bash can run it too.

set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 GPTQ_BINARY TESTS_DATA_DIR" >&2
    exit 2
fi
GPTQ=$1
DATA=$2
REF=$DATA/gptq-reference

if [ ! -x "$GPTQ" ]; then
    echo "test_cli: $GPTQ is not an executable" >&2
    exit 1
fi
if [ ! -d "$REF" ]; then
    echo "test_cli: no reference cases in $REF" >&2
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gptq_cli_test.XXXXXX") || exit 1
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
        sed 's/^/       stderr: /' "$TMP/stderr"
    fi
}

# run EXPECTED_STATUS DESCRIPTION ARGS...: run gptq, capture stdout/stderr in $TMP.
# A status above 128 is a signal (a crash): always a failure, whatever was expected.
run() {
    expected=$1
    what=$2
    shift 2
    "$GPTQ" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    status=$?
    if [ "$status" -eq "$expected" ]; then
        pass "$what (exit $status)"
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

# Prefer the system python3 (Debian's python3-numpy) over one earlier on PATH.
PY=python3
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; fi
have_python=no
if command -v "$PY" >/dev/null 2>&1; then
    have_python=yes
fi
have_numpy=no
if [ "$have_python" = yes ] && "$PY" -c 'import numpy' >/dev/null 2>&1; then
    have_numpy=yes
fi

# ---- help and version ---------------------------------------------------------------
run 0 "gptq --help" --help
run 0 "gptq --version" --version
if grep -q '^gptq [0-9]' "$TMP/stdout"; then pass "--version prints a version"
else fail "--version prints a version"; fi
run 0 "gptq layer --help" layer --help
run 0 "gptq help layer" help layer

# ---- reference cases ----------------------------------------------------------------
P01=$REF/p01_64x128_b4_gNone_sym.safetensors
P07=$REF/p07_128x256_b4_g128_sym_act_dead.safetensors
P12=$REF/p12_64x128_b4_g32_sym_act_compact.safetensors

for case in "$P01" "$P07" "$P12"; do
    name=$(basename "$case" .safetensors)
    out=$TMP/$name.out.safetensors
    if run 0 "layer $name" layer "$case" -o "$out"; then
        if [ -s "$out" ]; then pass "$name: output written"
        else fail "$name: no output file"; fi
        if grep -q "^$name: .*loss=.* -> " "$TMP/stdout"; then pass "$name: summary line"
        else fail "$name: summary line missing: $(cat "$TMP/stdout")"; fi
    fi
done

# Options: AutoGPTQ bytes, v2 zero points, RTN (which needs no Hessian), JSON, quiet.
run 0 "layer --pack autogptq" layer "$P01" -o "$TMP/p01_autogptq.safetensors" --pack autogptq
run 0 "layer --format v2" layer "$P01" -o "$TMP/p01_v2.safetensors" --format v2 --quiet
run 0 "layer --rtn --bits 8 --group-size 32 --asym" \
    layer "$P12" -o "$TMP/p12_rtn.safetensors" --rtn --bits 8 --group-size 32 --asym
run 1 "--rtn with an explicit --act-order" \
    layer "$P12" -o "$TMP/x.safetensors" --rtn --act-order
run 0 "layer --quiet" layer "$P01" -o "$TMP/quiet.safetensors" --quiet
if [ ! -s "$TMP/stdout" ]; then pass "--quiet prints nothing"
else fail "--quiet printed: $(cat "$TMP/stdout")"; fi
run 0 "layer --json" layer "$P07" -o "$TMP/p07_json.safetensors" --json --threads 1
if [ "$have_python" = yes ]; then
    if "$PY" -c '
import json, sys
o = json.load(open(sys.argv[1]))
assert o["codes_shape"] == [128, 256], o
assert o["output"] == sys.argv[2], o
assert o["loss"] > 0 and 0 < o["damp_percent"] < 1 and o["seconds"] >= 0, o
' "$TMP/stdout" "$TMP/p07_json.safetensors"; then
        pass "--json prints one JSON object with the expected fields"
    else
        fail "--json output: $(cat "$TMP/stdout")"
    fi

    # The result file holds the documented tensors and metadata.
    if "$PY" -c '
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
m = h.pop("__metadata__")
want = {"qweight": "I32", "qzeros": "I32", "scales": "F16", "g_idx": "I32",
        "codes": "I32", "zeros": "I32", "Q": "F32", "perm": "I32"}
for k, dt in want.items():
    assert k in h and h[k]["dtype"] == dt, (k, h.get(k))
assert h["codes"]["shape"] == [128, 256] and h["perm"]["shape"] == [256]
for k in ("bits", "group_size", "sym", "desc_act", "static_groups", "damp_percent",
          "damp_used", "blocksize", "checkpoint_format", "loss", "seconds"):
    assert k in m, k
assert m["desc_act"] == "true" and m["checkpoint_format"] == "gptq", m
' "$TMP/p07_json.safetensors"; then
        pass "result file has the documented tensors and metadata"
    else
        fail "result file contents"
    fi
else
    echo "skip - JSON and result-file checks (no python3)"
fi

# ---- bad usage: exit 2 --------------------------------------------------------------
run 2 "no arguments"
run 2 "unknown command" frobnicate
run 2 "unknown option" layer "$P01" -o "$TMP/x.safetensors" --frobnicate
run 2 "missing -o" layer "$P01"
run 2 "missing input" layer -o "$TMP/x.safetensors"
run 2 "-o without a value" layer "$P01" -o
run 2 "--bits not a number" layer "$P01" -o "$TMP/x.safetensors" --bits four
run 2 "--bits trailing text" layer "$P01" -o "$TMP/x.safetensors" --bits 4x
run 2 "--bits out of range" layer "$P01" -o "$TMP/x.safetensors" --bits 5
run 2 "--damp not a number" layer "$P01" -o "$TMP/x.safetensors" --damp 0.01abc
run 2 "--damp empty" layer "$P01" -o "$TMP/x.safetensors" --damp=
run 2 "--group-size 0" layer "$P01" -o "$TMP/x.safetensors" --group-size 0
run 2 "--format v3" layer "$P01" -o "$TMP/x.safetensors" --format v3
run 2 "--backend tpu" layer "$P01" -o "$TMP/x.safetensors" --backend tpu
run 2 "--pack autogptq with --format v2" \
    layer "$P01" -o "$TMP/x.safetensors" --pack autogptq --format v2
run 2 "two inputs" layer "$P01" "$P07" -o "$TMP/x.safetensors"
if [ -e "$TMP/x.safetensors" ]; then fail "usage errors wrote an output file"
else pass "usage errors write no output"; fi

# ---- failures: exit 1 with a message naming the file --------------------------------
MISSING=$TMP/does-not-exist.safetensors
run 1 "missing input file" layer "$MISSING" -o "$TMP/x.safetensors"
stderr_has "$MISSING" "missing file: message names the file"

TRUNC=$TMP/truncated.safetensors
head -c 1000 "$P01" >"$TRUNC"
run 1 "truncated file" layer "$TRUNC" -o "$TMP/x.safetensors"
stderr_has "$TRUNC" "truncated file: message names the file"

NOTST=$TMP/not-safetensors.safetensors
printf 'this is not a safetensors file at all\n' >"$NOTST"
run 1 "not a safetensors file" layer "$NOTST" -o "$TMP/x.safetensors"

# An existing output must survive a failed run byte for byte.
KEEP=$TMP/keep.safetensors
printf 'previous result\n' >"$KEEP"
cp "$KEEP" "$TMP/keep.orig"
run 1 "failed run with an existing output" layer "$TRUNC" -o "$KEEP"
if cmp -s "$KEEP" "$TMP/keep.orig"; then pass "existing output untouched after a failure"
else fail "existing output was modified by a failed run"; fi

# Hand-made inputs: a tiny safetensors writer using only the standard library.
if [ "$have_python" = yes ]; then
    "$PY" - "$TMP" <<'PYEOF'
import json, math, struct, sys

def write(path, tensors, meta=None):
    """tensors: name -> (dtype, shape, list of numbers)"""
    header, blobs, off = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dtype, shape, values) in tensors.items():
        fmt = {"F32": "f", "I32": "i"}[dtype]
        blob = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

out, inp = 8, 32
w = [((i * 37) % 17 - 8) / 64.0 for i in range(out * inp)]
eye = [1.0 if i // inp == i % inp else 0.0 for i in range(inp * inp)]
meta = {"bits": "4", "group_size": "-1", "sym": "true"}
tmp = sys.argv[1]

w_nan = list(w)
w_nan[5] = math.nan
write(tmp + "/nan_w.safetensors", {"W": ("F32", [out, inp], w_nan), "H": ("F32", [inp, inp], eye)}, meta)
write(tmp + "/no_w.safetensors", {"H": ("F32", [inp, inp], eye)}, meta)
write(tmp + "/bad_h.safetensors", {"W": ("F32", [out, inp], w), "H": ("F32", [inp - 1, inp - 1], eye[:(inp - 1) ** 2])}, meta)
write(tmp + "/bad_x.safetensors", {"W": ("F32", [out, inp], w), "X": ("F32", [3, inp - 1], [0.5] * (3 * (inp - 1)))}, meta)
write(tmp + "/no_h.safetensors", {"W": ("F32", [out, inp], w)}, meta)
write(tmp + "/w_1d.safetensors", {"W": ("F32", [out * inp], w), "H": ("F32", [inp, inp], eye)}, meta)
write(tmp + "/bad_meta.safetensors", {"W": ("F32", [out, inp], w), "H": ("F32", [inp, inp], eye)}, {"bits": "four"})
write(tmp + "/good.safetensors", {"W": ("F32", [out, inp], w), "H": ("F32", [inp, inp], eye)}, meta)
# X without nsamples/seqlen metadata: one sample.
write(tmp + "/x_only.safetensors", {"W": ("F32", [out, inp], w), "X": ("F32", [16, inp], [((i * 13) % 7 - 3) / 4.0 for i in range(16 * inp)])}, meta)
PYEOF

    run 1 "NaN in W" layer "$TMP/nan_w.safetensors" -o "$KEEP"
    stderr_has "nan_w.safetensors" "NaN in W: message names the file"
    if cmp -s "$KEEP" "$TMP/keep.orig"; then pass "existing output untouched after NaN input"
    else fail "existing output was modified by the NaN run"; fi

    run 1 "no tensor W" layer "$TMP/no_w.safetensors" -o "$TMP/x.safetensors"
    stderr_has "no tensor 'W'" "missing W: message"
    run 1 "H of the wrong shape" layer "$TMP/bad_h.safetensors" -o "$TMP/x.safetensors"
    stderr_has "bad_h.safetensors" "wrong H shape: message names the file"
    run 1 "X of the wrong shape" layer "$TMP/bad_x.safetensors" -o "$TMP/x.safetensors"
    run 1 "neither H nor X" layer "$TMP/no_h.safetensors" -o "$TMP/x.safetensors"
    run 0 "neither H nor X but --rtn" layer "$TMP/no_h.safetensors" -o "$TMP/rtn.safetensors" --rtn
    run 1 "W with one dimension" layer "$TMP/w_1d.safetensors" -o "$TMP/x.safetensors"
    run 1 "malformed metadata" layer "$TMP/bad_meta.safetensors" -o "$TMP/x.safetensors"
    run 0 "bad metadata overridden by --bits" \
        layer "$TMP/bad_meta.safetensors" -o "$TMP/x.safetensors" --bits 4 --quiet
    run 0 "small hand-made layer" layer "$TMP/good.safetensors" -o "$TMP/good.out.safetensors"
    run 0 "X without sequence metadata" layer "$TMP/x_only.safetensors" -o "$TMP/x_only.out.safetensors"
    # AutoGPTQ's pack needs dimensions that are multiples of 32 (this layer is 8x32).
    run 1 "--pack autogptq on an 8-row layer" \
        layer "$TMP/good.safetensors" -o "$TMP/x2.safetensors" --pack autogptq
else
    echo "skip - hand-made malformed inputs (no python3)"
fi

# ---- bench matmul: a small CPU run, usage errors, --backend cuda without a GPU --------
run 0 "bench --help" bench --help
if grep -q -- "--device N" "$TMP/stdout" && grep -q "cuda_cublas" "$TMP/stdout"; then
    pass "bench --help lists --device and the CUDA kernels"
else
    fail "bench --help: no --device or CUDA kernels: $(cat "$TMP/stdout")"
fi
if run 0 "bench matmul on the CPU (64 x 128, warm)" \
    bench matmul --out 64 --in 128 --reps 3 --warm --stream-mb 1 --threads 1; then
    if tail -n 1 "$TMP/stdout" |
        grep -Eq '^gbps=[0-9.]+ bw_share=[0-9.]+ speedup_vs_sgemv=[0-9.]+$'; then
        pass "bench matmul: machine-readable last line"
    else
        fail "bench matmul last line: $(tail -n 1 "$TMP/stdout")"
    fi
fi
run 2 "bench: a CUDA kernel with --backend cpu" bench matmul --backend cpu --kernel cuda_gemv &&
    stderr_has "--backend cuda" "bench: says a CUDA kernel needs --backend cuda"
run 2 "bench: a CPU kernel with --backend cuda" bench matmul --backend cuda --kernel avx2 &&
    stderr_has "CPU kernel" "bench: says avx2 is a CPU kernel"
run 2 "bench: --warm with --backend cuda" bench matmul --backend cuda --warm
run 2 "bench: unknown --kernel" bench matmul --kernel fastest &&
    stderr_has "cuda_mma" "bench: lists the kernels, CUDA ones included"
run 2 "bench: --device -1" bench matmul --device -1
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "skip - bench --backend cuda failure check (this machine has a GPU)"
else
    run 1 "bench --backend cuda without a GPU" \
        bench matmul --backend cuda --device 1 --out 64 --in 128 --reps 1 &&
        stderr_has "CUDA" "bench --backend cuda: says why CUDA is not usable"
    if [ -s "$TMP/stdout" ]; then fail "bench --backend cuda without a GPU printed results"
    else pass "bench --backend cuda without a GPU prints no results"; fi
fi

# ---- second opinion: the reference judge --------------------------------------------
JUDGE=$REF/tools/check_result.py
if [ "$have_numpy" = yes ] && [ -f "$JUDGE" ]; then
    for case in "$P01" "$P07" "$P12"; do
        name=$(basename "$case" .safetensors)
        if "$PY" "$JUDGE" "$case" "$TMP/$name.out.safetensors" >"$TMP/judge" 2>&1; then
            pass "check_result $name: $(tail -n 1 "$TMP/judge")"
        else
            fail "check_result $name: $(tail -n 1 "$TMP/judge")"
        fi
    done
else
    echo "skip - check_result.py (needs $PY with numpy and $JUDGE)"
fi

echo "# $passes passed, $failures failed"
[ "$failures" -eq 0 ]
