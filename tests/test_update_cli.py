"""``twinlink update`` as a user runs it: keygen, trust, make, inspect, verify, install hook."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import CLI, cli_env


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, env=cli_env(), timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{args}: rc={p.returncode}\n{p.stderr}")
    return p


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    k = tmp_path / "keys"
    run("keygen", "twin", "--out", str(k))
    run("provision", "pump-17", "--twin-pub", str(k / "twin.pub"), "--out", str(k))
    run("update", "keygen", "--out", str(k))
    run("update", "trust", "--device", str(k / "pump-17.device"), "--pub", str(k / "update.pub"),
        "--vendor", "example.com", "--class", "pump-v2")
    (tmp_path / "fw.bin").write_bytes(bytes(range(256)) * 40)
    return tmp_path


def make(d: Path, seq: int, cls: str = "pump-v2", key: str = "update.key") -> Path:
    out = d / f"m{seq}-{cls}.cbor"
    p = run("update", "make", "--key", str(d / "keys" / key), "--image", str(d / "fw.bin"),
            "--seq", str(seq), "--vendor", "example.com", "--class", cls, "--out", str(out),
            "--json")
    info = json.loads(p.stdout)
    assert info["seq"] == seq and info["bytes"] == out.stat().st_size <= 256
    return out


def verify(d: Path, manifest: Path, *extra: str, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    return run("update", "verify", "--device", str(d / "keys/pump-17.device"), "--state",
               str(d / "st"), "--json", *extra, str(manifest), str(d / "fw.bin"), check=check)


def test_group_help_and_human_output(dev: Path):
    p = run("update")
    assert "keygen" in p.stdout and "verify" in p.stdout
    m = dev / "m1.cbor"
    run("update", "make", "--key", str(dev / "keys" / "update.key"), "--image",
        str(dev / "fw.bin"), "--seq", "1", "--vendor", "example.com", "--class", "pump-v2",
        "--out", str(m))
    p = run("update", "verify", "--device", str(dev / "keys/pump-17.device"), "--state",
            str(dev / "st"), str(m), str(dev / "fw.bin"))
    assert p.stdout == "" and "update seq 1 accepted" in p.stderr
    assert "seq        1" in run("update", "inspect", str(m)).stdout


def test_keygen_writes_a_private_key_0600(dev: Path):
    assert stat.S_IMODE((dev / "keys" / "update.key").stat().st_mode) == 0o600
    p = run("update", "keygen", "--out", str(dev / "keys"), check=False)
    assert p.returncode == 3 and "refusing to overwrite" in p.stderr  # never clobbers a key
    bundle = json.loads((dev / "keys" / "pump-17.device").read_text())
    assert bundle["settings"]["update"]["vendor"] == "example.com"
    assert stat.S_IMODE((dev / "keys" / "pump-17.device").stat().st_mode) == 0o600


def test_make_verify_and_refusals(dev: Path):
    m3 = make(dev, 3)
    out = json.loads(verify(dev, m3).stdout)
    assert out == {**out, "ok": True, "status": "accepted", "seq": 3}
    assert json.loads(verify(dev, m3).stdout)["status"] == "already_installed"
    for manifest, reason in ((make(dev, 2), "rollback"),
                             (make(dev, 4, cls="valve-v1"), "wrong_class")):
        p = verify(dev, manifest, check=False)
        assert p.returncode == 1, p.stderr
        assert json.loads(p.stdout)["reason"] == reason
        assert p.stderr.startswith("twinlink: ") and len(p.stderr.strip().splitlines()) == 1
        assert "nothing was changed" in p.stderr


def test_device_key_cannot_sign_updates(dev: Path):
    m = make(dev, 5, key="pump-17.key")
    p = verify(dev, m, check=False)
    assert p.returncode == 1 and json.loads(p.stdout)["reason"] == "untrusted_key"


def test_inspect(dev: Path):
    m = make(dev, 7)
    info = json.loads(run("update", "inspect", str(m), "--json", "--pub",
                          str(dev / "keys" / "update.pub")).stdout)
    assert info["signature"] == "verified" and info["size"] == 10240
    p = run("update", "inspect", str(m), "--pub", str(dev / "keys" / "pump-17.pub"), check=False)
    assert p.returncode == 1 and "not one of this device's update keys" in p.stderr
    (dev / "junk").write_bytes(b"\xd2\x84junk")
    p = run("update", "inspect", str(dev / "junk"), check=False)
    assert p.returncode == 1 and "malformed manifest" in p.stderr


def test_install_command(dev: Path):
    hook = dev / "install.sh"
    log = dev / "installed.log"
    hook.write_text(f'#!/bin/sh\necho "$TWINLINK_UPDATE_SEQ $1" >> {log}\n'
                    f'[ "$TWINLINK_UPDATE_SEQ" != 9 ]\n')
    hook.chmod(0o755)
    out = json.loads(verify(dev, make(dev, 8), "--install-cmd", str(hook)).stdout)
    assert out["status"] == "installed" and log.read_text().split()[0] == "8"
    p = verify(dev, make(dev, 9), "--install-cmd", str(hook), check=False)
    assert p.returncode == 1 and json.loads(p.stdout)["reason"] == "install_failed"
    assert "run the same manifest again" in p.stderr
    assert json.loads(verify(dev, make(dev, 9)).stdout)["status"] == "accepted"
