"""What an installed twinlink promises about itself: one version, type information, its platform.

Run from a source checkout these check the editable install; CI also runs them against an install
built from the sdist (.ci/run), where they check what a user's ``pip install`` gets.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

from conftest import CLI, cli_env

import twinlink

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def test_one_version_everywhere():
    """``twinlink.__version__``, the installed distribution's metadata and ``--version`` agree."""
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[abc]\d+|\.dev\d+|\.post\d+)?", twinlink.__version__)
    assert importlib.metadata.version("twinlink") == twinlink.__version__
    out = subprocess.run([*CLI, "--version"], capture_output=True, text=True, env=cli_env(),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"twinlink {twinlink.__version__},")


def test_version_is_written_once():
    """pyproject.toml holds it; the package reads its own metadata instead of repeating it."""
    meta = tomllib.loads(PYPROJECT.read_text())
    assert meta["project"]["version"] == twinlink.__version__
    init = Path(twinlink.__file__).read_text()  # the package under test (maybe installed)
    assert meta["project"]["version"] not in init and "dynamic" not in meta["project"]


def test_type_information_is_installed():
    """PEP 561: the marker ships next to the installed package, so users' mypy reads our hints."""
    assert (Path(twinlink.__file__).parent / "py.typed").is_file()


def test_mypy_checks_for_the_oldest_supported_python():
    meta = tomllib.loads(PYPROJECT.read_text())
    floor = re.fullmatch(r">=\s*(\d+\.\d+)", meta["project"]["requires-python"])
    assert floor, meta["project"]["requires-python"]
    assert meta["tool"]["mypy"]["python_version"] == floor.group(1)
    assert meta["tool"]["ruff"]["target-version"] == "py" + floor.group(1).replace(".", "")
    classifiers = meta["project"]["classifiers"]
    assert f"Programming Language :: Python :: {floor.group(1)}" in classifiers


def test_test_and_lint_tools_are_separate_extras():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    names = {k: {re.split(r"[<>=!~;\s\[]", d, maxsplit=1)[0] for d in v} for k, v in extras.items()}
    assert {"pytest", "hypothesis"} <= names["test"] and not {"ruff", "mypy"} & names["test"]
    assert names["lint"] == {"ruff", "mypy", "cyclonedx-bom"}  # + the SBOM CI writes
    assert extras["dev"] == ["twinlink[test,lint]"]


def test_platform_is_declared_posix_only():
    meta = tomllib.loads(PYPROJECT.read_text())["project"]
    systems = [c for c in meta["classifiers"] if c.startswith("Operating System")]
    assert systems and all(c.startswith("Operating System :: POSIX") for c in systems)
    assert "POSIX" in (ROOT / "README.md").read_text()

