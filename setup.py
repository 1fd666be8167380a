"""Build hook for the optional C extension ``twinlink._native``; metadata is in pyproject.toml.

The extension is the fast path. If it cannot be built (no C compiler, no Python headers), the
install still succeeds on the pure-Python path: the build step prints one warning line and
carries on; ``twinlink doctor`` / ``twinlink.backend.explain()`` then says why.
"""

from __future__ import annotations

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any build failure means: stay pure
            self._warn(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"WARNING: twinlink C extension not built ({first}); "
              "using the pure-Python backend", file=sys.stderr)


setup(
    cffi_modules=["twinlink/_native_build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
