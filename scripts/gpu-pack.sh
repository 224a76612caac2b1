#!/usr/bin/env bash
# gpu-pack: prepare, on a build machine without a GPU, what a GPU machine needs to run
# the GPU tests and benchmarks (scripts/gpu-check.sh) when it has no package registry
# and none of the project's build dependencies (the project's `device` machines).
#
#   bash scripts/gpu-pack.sh [ARCH]      # ARCH: CUDA architecture, default 90 (H100/H200)
#
# Writes .gpu/ (git-ignored through .git/info/exclude):
#   .gpu/build/      a Release build with the CUDA module for ARCH only, object files and
#                    CMake's bookkeeping removed, binaries stripped;
#   .gpu/lib.tar.xz  the shared libraries those binaries need beyond the C/C++ runtime
#                    and CUDA's own (OpenBLAS, LAPACKE, Criterion and their dependencies);
#   .gpu/ROOT        this checkout's absolute path: the binaries carry paths under it
#                    (test data, the module), which gpu-check.sh recreates with a link.
# Then run gpu-check.sh there with `.gpu` carried along; the whole must stay under the
# device tool's 64 MiB (the script prints the size).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
arch=${1:-90}
root=$PWD
out=.gpu

grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >>.git/info/exclude; }
rm -rf "$out"
mkdir -p "$out"
cmake -S . -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DGPTQ_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
cmake --build "$out/build" -j"$(nproc)" --target gptq_cuda gptq_cli test_cuda bench_layer >/dev/null

# Keep what runs: drop objects and CMake's files, strip the rest.
find "$out/build" \( -name '*.o' -o -name '*.a' -o -name 'CMakeFiles' -o -name '*.cmake' \
    -o -name 'Makefile' -o -name 'CMakeCache.txt' \) -prune -exec rm -rf {} +
find "$out/build" -type f \( -name '*.so*' -o -perm -u+x \) -exec strip --strip-unneeded {} + \
    2>/dev/null || true

# The libraries they load, minus glibc, the C++ runtime and CUDA's (the GPU image has them).
mkdir -p "$out/lib"
for bin in "$out/build/tests/test_cuda" "$out/build/gptq" "$out/build/bench/bench_layer" \
    "$out"/build/libgptq.so.0; do
    ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt|libcusolver|libgptq)[.-]' |
    while read -r lib; do cp -L "$lib" "$out/lib/"; done
tar -C "$out/lib" -cJf "$out/lib.tar.xz" .
rm -rf "${out:?}/lib"
echo "$root" >"$out/ROOT"
echo "gpu-pack: $(du -sh "$out" | cut -f1) in $out (arch sm_$arch); tracked files: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes"
