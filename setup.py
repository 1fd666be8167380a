"""Build hook for the optional C extension ``twinlink._native``; metadata is in pyproject.toml.

The extension is the fast path. If it cannot be built (no C compiler, no Python headers), the
install still succeeds on the pure-Python path. pip shows a build's output only when the build
fails, so the reason is also written next to the package (``twinlink/_native_build_error.txt``),
where ``twinlink doctor`` (:func:`twinlink.backends.native_error`) reads it and says why.

``TWINLINK_WERROR=1`` (CI): ``-Werror``, and a failed build fails the install.
``twinlink/_native_build.py`` is build-time only: in the sdist, never in the wheel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

BUILD_ERROR = "_native_build_error.txt"  # read by twinlink.backends.build_error()
STRICT = os.environ.get("TWINLINK_WERROR") == "1"


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a recorded warning instead of a failed
    install (unless ``TWINLINK_WERROR=1``)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any build failure means: stay pure
            self._failed(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failed(exc)
        else:
            self._record(None)

    _reason: str | None = None

    def _failed(self, exc: BaseException) -> None:
        if STRICT:
            raise exc
        if self._reason is not None:  # a follow-on error (copying the missing module): keep
            return                    # the first, which says why
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        self._reason = first if len(first) <= 300 else first[:297] + "..."
        print(f"WARNING: twinlink C extension not built ({self._reason}); "
              "using the pure-Python backend", file=sys.stderr)
        self._record(self._reason)

    def _record(self, reason: str | None) -> None:
        """Write (or, after a good build, remove) the reason file where the package will be
        imported from: the build tree (wheel) and the source tree (editable installs import
        the package from there)."""
        dirs = {Path(__file__).resolve().parent / "twinlink", Path(self.build_lib, "twinlink")}
        for d in dirs:
            path = d / BUILD_ERROR
            if reason is None:
                path.unlink(missing_ok=True)
            else:
                d.mkdir(parents=True, exist_ok=True)
                path.write_text(reason + "\n", encoding="utf-8")


class BuildPyWithoutBuilder(build_py):
    """Leave the cffi build script out of the wheel (it stays in the sdist)."""

    def find_package_modules(self, package, package_dir):  # type: ignore[no-untyped-def]
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (m[0] == "twinlink" and m[1] == "_native_build")]


setup(
    cffi_modules=["twinlink/_native_build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithoutBuilder},
)
