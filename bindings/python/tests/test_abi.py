"""The binding's view of the C ABI, checked by the C compiler against the installed
headers: every prototype in gptq._lib.API is assigned to a function pointer of the
type the binding assumes, every ctypes Structure field is checked with offsetof/sizeof
and every constant the binding uses with a static assertion. A mismatch is a compile
error (-Werror)."""

import ctypes
import shutil
import subprocess

import pytest

from gptq import _lib


def check_source():
    out = ["#include <stddef.h>", "#include <gptq/gptq.h>", "#include <gptq/model.h>", ""]
    for name, cls in _lib.STRUCTS.items():
        for field, _ in cls._fields_:
            out.append('_Static_assert(offsetof(%s, %s) == %d, "%s.%s: offset");'
                       % (name, field, getattr(cls, field).offset, name, field))
        # Structs versioned by struct_size may have grown (fields are only appended);
        # the others must match exactly.
        op = "<=" if cls._fields_[0][0] == "struct_size" else "=="
        out.append('_Static_assert(%d %s sizeof(%s), "%s: size");'
                   % (ctypes.sizeof(cls), op, name, name))
    for name, value in _lib.CONSTANTS.items():
        out.append('_Static_assert(%s == %d, "%s");' % (name, value, name))
    out.append("")
    for name, ret, args in _lib.API:
        out.append("%s (*const check_%s)(%s) = %s;"
                   % (ret, name, ", ".join(args) or "void", name))
    return "\n".join(out) + "\n"


def test_declarations_match_the_headers(tmp_path):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to check the declarations with")
    flags = subprocess.run(["pkg-config", "--cflags", "gptq"], capture_output=True,
                           text=True, check=True).stdout.split()
    src = tmp_path / "abi_check.c"
    src.write_text(check_source())
    proc = subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-c", str(src), "-o",
                           str(tmp_path / "abi_check.o")] + flags,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_declared_function_is_exported():
    for name, _, _ in _lib.API:
        assert hasattr(_lib.lib, name), name


def test_kernel_names_follow_the_constants():
    """QLinear.KERNELS is indexed by GPTQ_QLINEAR_KERNEL_* and lists every kernel the
    library names."""
    from gptq import QLinear
    for value, name in enumerate(QLinear.KERNELS):
        assert _lib.CONSTANTS["GPTQ_QLINEAR_KERNEL_" + name.upper()] == value, name
        assert _lib.lib.gptq_qlinear_kernel_name(value).decode() == name
    assert _lib.lib.gptq_qlinear_kernel_name(len(QLinear.KERNELS)) == b"unknown"
