"""Shared fixtures: backend parametrization and a provisioned twin with devices on disk."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import twinlink
from twinlink import backends, keys
from twinlink.provision import provision

BACKENDS = ["python", "native"]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest):
    """Run the test once per backend; a missing native backend skips with its real import error."""
    previous = backends.name()
    try:
        backends.use(request.param)
    except ImportError:
        msg = f"native backend not built: {backends.native_error()}"
        if os.environ.get("TWINLINK_REQUIRE_NATIVE"):
            pytest.fail(msg + " (TWINLINK_REQUIRE_NATIVE is set)")
        pytest.skip(msg)
    yield request.param
    backends.use(previous)


@dataclass
class Rig:
    """A twin database and key with registered devices, all in a temp dir."""

    root: Path
    db: Path
    twin_key_path: Path
    twin_key: keys.TwinKey

    def provision(self, name: str, **kw) -> Path:
        provision(name, self.root / "twin.pub", self.root / "keys", db=str(self.db), **kw)
        return self.root / "keys" / f"{name}.device"

    def device(self, name: str, **kw) -> twinlink.Device:
        bundle = self.root / "keys" / f"{name}.device"
        if not bundle.exists():
            self.provision(name)
        return twinlink.Device.load(bundle, self.root / "state", **kw)

    def twin(self) -> twinlink.Twin:
        return twinlink.Twin(self.db, self.twin_key_path)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    tk = keys.TwinKey.generate()
    keys.write_private(tmp_path / "twin.key", tk.to_pem())
    keys.write_public(tmp_path / "twin.pub", tk.public_pem())
    return Rig(tmp_path, tmp_path / "twin.db", tmp_path / "twin.key", tk)


def cli_env() -> dict[str, str]:
    """Environment for running ``python -m twinlink`` in a subprocess from the source tree."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


CLI = [sys.executable, "-m", "twinlink"]


@pytest.fixture(autouse=True)
def no_leaked_link_threads():
    """A test must close every link it opens: a leaked reader or MQTT thread keeps retrying
    (with random jitter) into later tests."""
    import threading
    import time

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t.name for t in threading.enumerate()
                  if t not in before and t.is_alive()
                  and t.name.startswith(("twinlink-", "paho-mqtt-client-"))]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {leaked}"
