#!/usr/bin/env bash
# Make sure the build dependencies of libgptq are there.
#
#   bash scripts/deps.sh [EXTRA-DEBIAN-PACKAGE...]
#
# Checks the tools and pkg-config modules the build needs (works on any distribution
# that already has them). When something is missing on Debian/Ubuntu and this runs as
# root, it installs the Debian packages with apt-get; otherwise it prints what to
# install and exits 1. Extra package names given as arguments are checked with dpkg
# and installed the same way (e.g. g++ for the C++ header test).
# scripts/test.sh and scripts/demo.sh call it; you may run it on its own.
set -euo pipefail

# The Debian 12 packages the build needs (cmake >= 3.25, gcc, OpenBLAS, LAPACKE,
# jansson, Criterion, pkg-config).
packages=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev libjansson-dev
          libcriterion-dev)
extra=("$@")

missing=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }

for tool in cc make cmake pkg-config; do
    have_cmd "$tool" || missing+=("$tool")
done
if have_cmd pkg-config; then
    for mod in openblas lapacke jansson criterion; do
        pkg-config --exists "$mod" || missing+=("pkg-config module $mod")
    done
fi
if have_cmd cmake; then
    # CMakeLists.txt needs 3.25 (Debian 12 ships 3.25.1).
    ver=$(cmake --version | sed -n 's/^cmake version \([0-9]*\.[0-9]*\).*/\1/p')
    if [[ -n "$ver" ]] && ! printf '3.25\n%s\n' "$ver" | sort -V -C; then
        missing+=("cmake >= 3.25 (found $ver)")
    fi
fi
if ((${#extra[@]})); then
    for p in "${extra[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        if [[ $status != *"ok installed"* ]]; then
            missing+=("$p")
        fi
    done
fi

if ((${#missing[@]} == 0)); then
    exit 0
fi

printf 'deps: missing: %s\n' "$(printf '%s, ' "${missing[@]}" | sed 's/, $//')" >&2
if [[ $(id -u) -eq 0 ]] && have_cmd apt-get; then
    echo "deps: installing with apt-get: ${packages[*]}${extra[*]:+ ${extra[*]}}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" "${extra[@]}" >/dev/null
    exit 0
fi

cat >&2 <<MSG
deps: install the build dependencies first, e.g. on Debian 12 / Ubuntu:
    sudo apt-get install ${packages[*]}${extra[*]:+ ${extra[*]}}
(elsewhere: a C11 compiler, CMake >= 3.25, pkg-config, and the pkg-config modules
 openblas, lapacke, jansson and criterion)
MSG
exit 1
