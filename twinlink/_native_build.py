"""cffi (API mode) build of ``twinlink._native``: the C core in ``native/`` and its binding side
``native/tl_py.c``, with the PyNaCl crypto adapter (no ``sodium.h``, no ``-lsodium``: the
binding hands it PyNaCl's libsodium at import, see ``native/tl_crypto_pynacl.h``).

The declarations cffi reads are the headers themselves (``HEADERS``), with comments and
preprocessor lines dropped and integer ``#define`` constants kept; no C lives here. Run by
``setup.py`` (``cffi_modules``), or directly for an in-place build. Build-time only: this
file is in the sdist, not in the wheel.

``TWINLINK_WERROR=1`` (CI) adds ``-Werror``; a user's newer compiler may warn where ours does
not, and a warning must not silently drop an install to the pure-Python path.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE = os.path.join(ROOT, "native")
SOURCES = ["tl_frame.c", "tl_oscore.c", "tl_window.c", "tl_cobs.c", "tl_crc.c",
           "tl_cbor_check.c", "tl_crypto_pynacl.c", "tl_py.c"]
#: What the binding calls: the whole-frame operations, and the core's extras it exposes.
HEADERS = ["tl_error.h", "tl_crypto_pynacl.h", "tl_window.h", "tl_crc.h", "tl_cobs.h",
           "tl_oscore.h", "tl_cbor_check.h", "tl_py.h"]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-O2"]
if os.environ.get("TWINLINK_WERROR") == "1":
    CFLAGS.append("-Werror")

_INT_DEFINE = re.compile(r"#\s*define\s+(\w+)\s+(-?(?:0x[0-9a-fA-F]+|\d+)[uUlL]*)\s*(/\*.*)?$")


def cdef_of(text: str) -> str:
    """A C header as cffi's cdef reads it: preprocessor lines dropped except integer
    constants (``#define NAME 42``); cffi strips the comments itself."""
    out, continued = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if continued or stripped.startswith("#"):
            m = None if continued else _INT_DEFINE.match(stripped)
            out.append(f"#define {m[1]} {m[2]}" if m else "")
            continued = stripped.endswith("\\")
        else:
            out.append(line)
    return "\n".join(out)


def _read(name: str) -> str:
    with open(os.path.join(NATIVE, name), encoding="utf-8") as f:
        return f.read()


ffibuilder = FFI()
ffibuilder.cdef("\n".join(cdef_of(_read(h)) for h in HEADERS))
ffibuilder.set_source(
    "twinlink._native",
    "".join(f'#include "{h}"\n' for h in HEADERS),
    # Relative paths: setuptools wants them relative to setup.py (the project root).
    sources=[os.path.relpath(os.path.join(NATIVE, s), ROOT) for s in SOURCES],
    include_dirs=[os.path.relpath(NATIVE, ROOT)],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":  # in-place build for development: python twinlink/_native_build.py
    os.chdir(ROOT)
    ffibuilder.compile(tmpdir=os.path.join(ROOT, "build", "cffi"), target=None, verbose=False)
