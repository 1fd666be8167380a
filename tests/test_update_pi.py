"""The Raspberry Pi A/B update example (firmware_examples/raspberry_pi/ab_update.py), run as a
real process: install into the idle slot, switch, health-check, roll back; a SIGKILL during
the health check is rolled back by ``recover``; hostile archives never leave the root."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from update_kit import Kit, make_kit

ROOT = Path(__file__).resolve().parents[1]
AB = ROOT / "firmware_examples" / "raspberry_pi" / "ab_update.py"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlinks and SIGKILL")

HEALTHY = "import sys\nsys.exit(0)\n"


def tar_image(path: Path, files: dict[str, str], gz: bool = False,
              extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def ab(*args: str, timeout: float = 60) -> tuple[int, dict]:
    res = subprocess.run([sys.executable, str(AB), *args], capture_output=True, text=True,
                         timeout=timeout)
    lines = res.stdout.strip().splitlines()
    return res.returncode, json.loads(lines[-1]) if lines else {"stderr": res.stderr}


@pytest.fixture
def pi(tmp_path: Path) -> Kit:
    kit = make_kit(tmp_path / "pi")
    factory = tmp_path / "factory"
    factory.mkdir()
    (factory / "app.py").write_text("VERSION = 1\n")
    (factory / "health.py").write_text(HEALTHY)
    assert ab("init", "--root", str(kit.root / "ab"), "--from", str(factory))[0] == 0
    return kit


def apply(kit: Kit, seq: int, files: dict[str, str], **kw: object) -> tuple[int, dict]:
    img = tar_image(kit.root / f"v{seq}.tar", files, **kw)  # type: ignore[arg-type]
    mpath = kit.root / f"v{seq}.manifest"
    mpath.write_bytes(kit.manifest(seq, img))
    return ab("apply", "--root", str(kit.root / "ab"), "--bundle", str(kit.bundle_path),
              "--state", str(kit.state), str(mpath), str(img))


def current(kit: Kit) -> tuple[str, str]:
    link = kit.root / "ab" / "current"
    return os.readlink(link), (link / "app.py").read_text()


def test_healthy_update_switches_slots(pi: Kit):
    rc, out = apply(pi, 2, {"app.py": "VERSION = 2\n", "health.py": HEALTHY,
                            "lib/util.py": "X = 1\n"}, gz=True)
    assert rc == 0 and out["status"] == "installed" and out["active"] == "b", out
    assert current(pi) == ("slots/b", "VERSION = 2\n")
    assert (pi.root / "ab" / "current" / "lib" / "util.py").exists()
    assert pi.record().installed and pi.record().seq == 2  # type: ignore[union-attr]
    rc, out = apply(pi, 3, {"app.py": "VERSION = 3\n", "health.py": HEALTHY})
    assert rc == 0 and current(pi) == ("slots/a", "VERSION = 3\n")


def test_failed_health_check_rolls_back(pi: Kit):
    rc, out = apply(pi, 2, {"app.py": "VERSION = 2\n", "health.py": "raise SystemExit(3)\n"})
    assert rc == 4 and out["reason"] == "rolled_back", out
    assert current(pi) == ("slots/a", "VERSION = 1\n")
    state = json.loads((pi.root / "ab" / "ab-state.json").read_text())
    assert state["active"] == "a" and state["trial"] is None
    assert state["last"]["result"] == "rolled_back" and "status 3" in state["last"]["why"]
    rec = pi.record()
    assert rec is not None and (rec.seq, rec.installed) == (2, False)  # the floor moved
    rc, out = apply(pi, 3, {"app.py": "VERSION = 3\n", "health.py": HEALTHY})  # the fix
    assert rc == 0 and current(pi) == ("slots/b", "VERSION = 3\n")


def test_missing_health_check_fails_closed(pi: Kit):
    rc, _ = apply(pi, 2, {"app.py": "VERSION = 2\n"})
    assert rc == 4 and current(pi) == ("slots/a", "VERSION = 1\n")


def test_sigkill_during_the_trial_is_rolled_back(pi: Kit):
    marker, release = pi.root / "health-started", pi.root / "never"
    health = (f"import os, time\nopen({str(marker)!r}, 'w').close()\n"
              f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.05)\n")
    img = tar_image(pi.root / "v2.tar", {"app.py": "VERSION = 2\n", "health.py": health})
    mpath = pi.root / "v2.manifest"
    mpath.write_bytes(pi.manifest(2, img))
    proc = subprocess.Popen([sys.executable, str(AB), "apply", "--root", str(pi.root / "ab"),
                             "--bundle", str(pi.bundle_path), "--state", str(pi.state),
                             str(mpath), str(img)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # the trial is running in the new slot
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert current(pi) == ("slots/b", "VERSION = 2\n")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: updater + check
        proc.wait(timeout=30)
    state = json.loads((pi.root / "ab" / "ab-state.json").read_text())
    assert state["trial"]["slot"] == "b"  # unconfirmed
    rc, out = ab("recover", "--root", str(pi.root / "ab"))
    assert rc == 0 and out["trial"] is None and out["last"]["result"] == "rolled_back"
    assert current(pi) == ("slots/a", "VERSION = 1\n")
    assert ab("recover", "--root", str(pi.root / "ab"))[1]["active"] == "a"  # idempotent


@pytest.mark.parametrize("evil", ["../escape.py", "/tmp/abs.py", "symlink", "hardlink",
                                  "device"])
def test_hostile_archive_changes_nothing(pi: Kit, evil: str):
    info = tarfile.TarInfo(evil if evil.endswith(".py") else "x")
    if evil == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif evil == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "app.py"
    elif evil == "device":
        info.type = tarfile.CHRTYPE
    else:
        info.size = 1
    before = sorted(p.name for p in (pi.root / "ab" / "slots").iterdir())
    rc, out = apply(pi, 2, {"app.py": "VERSION = 2\n", "health.py": HEALTHY}, extra=[info])
    assert rc == 1 and out["reason"] == "install_failed", out
    assert current(pi) == ("slots/a", "VERSION = 1\n")
    assert sorted(p.name for p in (pi.root / "ab" / "slots").iterdir()) == before
    assert not (pi.root / "ab" / "escape.py").exists() and not Path("/tmp/abs.py").exists()


def test_refused_manifest_touches_nothing(pi: Kit):
    img = tar_image(pi.root / "v2.tar", {"app.py": "VERSION = 2\n", "health.py": HEALTHY})
    from twinlink import update

    other = update.class_uuid(pi.vendor_id, "valve-v1")
    mpath = pi.root / "v2.manifest"
    mpath.write_bytes(pi.manifest(2, img, class_id=other))
    state_before = (pi.root / "ab" / "ab-state.json").read_bytes()
    rc, out = ab("apply", "--root", str(pi.root / "ab"), "--bundle", str(pi.bundle_path),
                 "--state", str(pi.state), str(mpath), str(img))
    assert rc == 1 and out["reason"] == "wrong_class"
    assert (pi.root / "ab" / "ab-state.json").read_bytes() == state_before
    assert current(pi) == ("slots/a", "VERSION = 1\n") and pi.record() is None
