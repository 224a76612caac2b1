#!/usr/bin/env python3
"""Turn a CUDA source into C++ for the host emulation (tests/cuda_emu/cuda_emu.h).

The only non-C++ syntax libgptq's .cu files use is the launch `k<<<g, b, smem, s>>>(args)`;
it becomes `gptq_emu_launch(k, g, b, smem, s)(args)` on the same line, so compiler
messages keep the original line numbers (a #line directive names the original file).

usage: cu2cpp.py IN.cu OUT.cpp
"""
import re
import sys

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path, encoding="utf-8") as f:
        src = f.read()
    out, n = LAUNCH.subn(lambda m: "gptq_emu_launch(%s, %s)(" % (m.group(1), m.group(2)), src)
    if "<<<" in out:
        sys.exit("cu2cpp.py: a launch in %s was not rewritten" % src_path)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write('#include "cuda_emu.h"\n#line 1 "%s"\n' % src_path)
        f.write(out)
    print("cu2cpp.py: %s: %d launch(es) rewritten" % (src_path, n))


if __name__ == "__main__":
    main()
