#!/usr/bin/env bash
# Build and test every binding, example and document against an INSTALLED libgptq,
# found only through its package files (pkg-config's gptq.pc, CMake's gptqConfig), so
# that a header missing from the install or a wrong .pc file fails here:
#
#   python   bindings/python: pytest, then the example (ctypes, numpy)
#   c++      include/gptq/gptq.hpp: the example via pkg-config (C++11 and C++17) and via
#            CMake find_package(gptq), -Wall -Wextra -Werror, run
#   rust     bindings/rust: cargo test (gptq-sys checks its declarations against the
#            header) and the example, offline, with Debian's rustc/cargo
#   go       bindings/go: go vet, go test, the example (cgo, pkg-config)
#   abi      scripts/abi-check.sh: its self-test on toy libraries, then this tree's
#            libgptq.so.0 against abi/ (abidiff)
#   docs     Doxygen reference of the public headers (warnings are errors) and the
#            gptq(1) man page (groff warnings; every command and option of the
#            installed `gptq` documented)
#
#   bash scripts/bindings-test.sh [PREFIX]
#
# PREFIX is an installed libgptq (cmake --install build --prefix PREFIX); without it,
# build-bind/ is configured (Release), built and installed into a temporary prefix.
# As root with apt-get, the Debian packages the bindings need are installed first.
# Each part prints its summary line; the last lines list them all. Exit status 0 only
# when every part passed.
#
# Environment: JOBS (default 2), ONLY (space-separated subset of the parts above).
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs=${JOBS:-2}
only=${ONLY:-python c++ rust go abi docs}
part=setup
# A command that fails under `set -e` ends the script; say where.
trap 'printf "BINDINGS FAILED: %s (scripts/bindings-test.sh line %s)\n" "$part" "$LINENO" >&2' ERR

step() {
    part=$1
    printf '\n==== bindings: %s ====\n' "$*"
}
fail() { printf 'BINDINGS FAILED: %s\n' "$*" >&2; exit 1; }
want() { [[ " $only " == *" $1 "* ]]; }

tmp=$(mktemp -d /tmp/gptq-bindings.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
summary=()

# ---- dependencies -------------------------------------------------------------------
step "dependencies"
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    [[ -n ${GPTQ_APT_UPDATED:-} ]] || apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 \
        build-essential cmake pkg-config g++ python3 python3-numpy python3-pytest python3-pip \
        python3-setuptools \
        rustc cargo golang-go abigail-tools doxygen groff-base >/dev/null
else
    echo "not root or no apt-get: using what is installed"
fi
# Debian's toolchains, also where a user-level one (rustup, a newer Go) comes first.
export PATH=/usr/bin:/usr/lib/go/bin:$PATH

# ---- the installed library -----------------------------------------------------------
if (($#)); then
    prefix=$(realpath "$1")
else
    step "build and install into a temporary prefix"
    cmake -S . -B build-bind -DCMAKE_BUILD_TYPE=Release -DGPTQ_BUILD_TESTS=OFF \
        -DGPTQ_BUILD_BENCH=OFF >/dev/null
    cmake --build build-bind -j"$jobs" >/dev/null
    prefix=$tmp/prefix
    cmake --install build-bind --prefix "$prefix" >/dev/null
fi
part="installed library"
so=$(find "$prefix" -name 'libgptq.so.0' 2>/dev/null | head -n1 || true)
pc=$(find "$prefix" -name gptq.pc 2>/dev/null | head -n1 || true)
[[ -n $so && -n $pc ]] || fail "no libgptq.so.0 or gptq.pc under $prefix"
libdir=$(dirname "$so")
# Only the installed copy: no fallback to a system libgptq or the build tree.
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
export LD_LIBRARY_PATH=$libdir
unset GPTQ_LIBRARY
echo "libgptq: $so"
echo "pkg-config: $(pkg-config --cflags --libs gptq)"

# Whether a program loads the installed library.
uses_installed() {
    local deps
    deps=$(ldd "$1")
    [[ $deps == *"$libdir/libgptq.so.0"* ]] || fail "$1 is not linked to $libdir/libgptq.so.0"
}

# ---- python ---------------------------------------------------------------------------
if want python; then
    step "python (pytest)"
    py=/usr/bin/python3
    [[ -x $py ]] || py=python3
    rc=0
    # -p no:cacheprovider: no .pytest_cache in the source tree.
    "$py" -m pytest -p no:cacheprovider -q bindings/python/tests 2>&1 | tee "$tmp/pytest.log" ||
        rc=$?
    line=$(grep -E '[0-9]+ (passed|failed|error)' "$tmp/pytest.log" | tail -n1 || true)
    ((rc == 0)) || fail "pytest exited with status $rc: ${line:-no summary}"
    [[ $line == *passed* && $line != *failed* ]] || fail "pytest: unexpected summary '$line'"
    "$py" bindings/python/examples/quantize_model.py | tee "$tmp/py-example.log"
    grep -q '^model tiny-llama-bytes: ppl before' "$tmp/py-example.log" || fail "python example"
    [[ $(cd bindings/python && "$py" -c 'import gptq; print(gptq.library_path)') == "$libdir"/* ]] ||
        fail "the python package did not load the installed library"
    # pip installs the package (from a copy: building writes into the source directory).
    cp -r bindings/python "$tmp/py-src"
    "$py" -m pip install -q --no-build-isolation --no-deps --target "$tmp/py-site" \
        "$tmp/py-src" >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; fail "pip install"; }
    installed=$(cd "$tmp" && PYTHONPATH=$tmp/py-site "$py" -c 'import gptq; print(gptq.__file__, gptq.version())')
    [[ $installed == "$tmp/py-site/gptq/__init__.py "* ]] || fail "pip install of bindings/python: $installed"
    summary+=("python: pytest $line; example ok; pip install ok")
fi

# ---- c++ ----------------------------------------------------------------------------
if want c++; then
    step "c++ (gptq.hpp)"
    for std in c++11 c++17; do
        # shellcheck disable=SC2046
        c++ -std=$std -Wall -Wextra -pedantic -Werror bindings/cpp/quantize_model.cpp \
            $(pkg-config --cflags --libs gptq) -o "$tmp/cpp_$std"
    done
    uses_installed "$tmp/cpp_c++17"
    "$tmp/cpp_c++11"
    cmake -S bindings/cpp -B "$tmp/cpp-cmake" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$tmp/cpp-cmake" -j"$jobs" >/dev/null
    uses_installed "$tmp/cpp-cmake/quantize_model"
    "$tmp/cpp-cmake/quantize_model" >"$tmp/cpp-cmake.log" || fail "c++ example (CMake build)"
    summary+=("c++: example built with pkg-config (C++11, C++17) and CMake, -Werror, ran ok")
fi

# ---- rust -----------------------------------------------------------------------------
if want rust; then
    step "rust (cargo $(cargo --version | cut -d' ' -f2), rustc $(rustc --version | cut -d' ' -f2))"
    export CARGO_HOME=$tmp/cargo-home CARGO_TARGET_DIR=$tmp/cargo-target CARGO_NET_OFFLINE=true
    manifest=bindings/rust/Cargo.toml
    cargo test --offline --manifest-path "$manifest" 2>&1 | tee "$tmp/cargo.log"
    passed=$(awk '/^test result: ok\./ { n += $4 } END { print n + 0 }' "$tmp/cargo.log")
    ! grep -q '^test result: FAILED' "$tmp/cargo.log" || fail "cargo test"
    ((passed > 0)) || fail "cargo test ran no tests"
    cargo run --offline --manifest-path "$manifest" --example quantize_model | tee "$tmp/rs.log"
    grep -q '^model LlamaForCausalLM: ppl before' "$tmp/rs.log" || fail "rust example"
    uses_installed "$(find "$CARGO_TARGET_DIR" -path '*examples/quantize_model' -type f | head -n1)"
    summary+=("rust: cargo test $passed passed; example ok")
fi

# ---- go ---------------------------------------------------------------------------------
if want go; then
    step "go ($(go version | cut -d' ' -f3))"
    export GOFLAGS=-mod=mod GOPROXY=off GOCACHE=$tmp/go-cache GOPATH=$tmp/go-path
    (
        cd bindings/go
        unformatted=$(gofmt -l .)
        [[ -z $unformatted ]] || fail "not gofmt-formatted: $unformatted"
        go vet ./...
        go test -count=1 -v ./... 2>&1 | tee "$tmp/go.log"
        go run ./examples/quantize_model | tee "$tmp/go-example.log"
    )
    if ! grep -q '^ok ' "$tmp/go.log" || grep -q -- '--- FAIL' "$tmp/go.log"; then
        fail "go test"
    fi
    grep -q '^model LlamaForCausalLM: ppl before' "$tmp/go-example.log" || fail "go example"
    summary+=("go: go test $(grep -c -- '--- PASS' "$tmp/go.log") passed; example ok")
fi

# ---- abi ----------------------------------------------------------------------------------
if want abi; then
    step "abi (abidiff against abi/)"
    bash scripts/abi-check.sh --self-test
    ABI_BUILD_DIR=$tmp/build-abi JOBS=$jobs bash scripts/abi-check.sh | tee "$tmp/abi.log"
    summary+=("abi: $(tail -n1 "$tmp/abi.log" | sed 's/^abi-check: //')")
fi

# ---- docs -----------------------------------------------------------------------------------
if want docs; then
    step "docs (doxygen $(doxygen --version), gptq(1))"
    (cat docs/Doxyfile; echo "OUTPUT_DIRECTORY = $tmp/doxygen") | doxygen - 2>&1 |
        tee "$tmp/doxygen.log"
    [[ ! -s $tmp/doxygen.log ]] || fail "doxygen warnings (docs/Doxyfile)"
    [[ -f $tmp/doxygen/html/gptq_8h.html ]] || fail "doxygen wrote no page for gptq.h"

    man=$(find "$prefix" -name gptq.1 | head -n1)
    [[ -n $man ]] || fail "gptq.1 is not installed under $prefix"
    groff -man -ww -z "$man" 2>"$tmp/groff.log"
    [[ ! -s $tmp/groff.log ]] || { cat "$tmp/groff.log" >&2; fail "groff warnings in gptq.1"; }
    # Every command and every option the installed program prints must be in the page
    # (troff writes - as \-; fonts are \fB..\fR).
    gptq=$prefix/bin/gptq
    page=$(sed -e 's/\\-/-/g; s/\\f[BIRP]//g; s/\\(em/-/g' "$man")
    cmds=$("$gptq" --help | awk '/^Commands:/ { on = 1; next } on && NF == 0 { on = 0 }
                                 on && $1 != "help" { print $1 }')
    missing=()
    for cmd in $cmds; do
        grep -q "gptq $cmd " <<<"$page" || missing+=("command $cmd")
        for opt in $("$gptq" "$cmd" --help | grep -oE '(^|[ ,|])--?[a-z][a-z0-9-]*' |
            sed 's/^[ ,|]//' | sort -u); do
            grep -qE -- "(^|[^a-z0-9-])$opt([^a-z0-9-]|\$)" <<<"$page" || missing+=("$cmd $opt")
        done
    done
    ((${#missing[@]} == 0)) || fail "gptq.1 does not document: ${missing[*]}"
    summary+=("docs: doxygen without warnings; gptq.1 covers $(wc -w <<<"$cmds") commands and their options")
fi

step "done"
printf '%s\n' "${summary[@]}"
echo "bindings passed: ${only}"
