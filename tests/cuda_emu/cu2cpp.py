#!/usr/bin/env python3
"""Turn a CUDA source into C++ for the host emulation (tests/cuda_emu/cuda_emu.h).

The non-C++ syntax libgptq's .cu files use: the launch `k<<<g, b, smem, s>>>(args)`
becomes `gptq_emu_launch(k, g, b, smem, s)(args)`, and `extern __shared__ T name[];` (the
dynamic shared memory) becomes `T *const name = (T *)gptq_emu_dynamic_smem();`, each on
the same line, so compiler messages keep the original line numbers (a #line directive
names the original file).

usage: cu2cpp.py IN.cu OUT.cpp
"""
import re
import sys

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
# `extern __shared__ T name[];` (the dynamic shared memory, possibly with an alignment
# attribute after __shared__) becomes a pointer to the emulation's block of it.
DYN_SMEM = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?"
                      r"([A-Za-z_][\w\s]*?)\s+([A-Za-z_]\w*)\s*\[\s*\]\s*;")


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path, encoding="utf-8") as f:
        src = f.read()
    out, n = LAUNCH.subn(lambda m: "gptq_emu_launch(%s, %s)(" % (m.group(1), m.group(2)), src)
    out = DYN_SMEM.sub(lambda m: "%s *const %s = (%s *)gptq_emu_dynamic_smem();"
                       % (m.group(1), m.group(2), m.group(1)), out)
    if "<<<" in out:
        sys.exit("cu2cpp.py: a launch in %s was not rewritten" % src_path)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write('#include "cuda_emu.h"\n#line 1 "%s"\n' % src_path)
        f.write(out)
    print("cu2cpp.py: %s: %d launch(es) rewritten" % (src_path, n))


if __name__ == "__main__":
    main()
