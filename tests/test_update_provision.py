"""Provisioning puts firmware-update trust into the bundle; Device.verify_update uses it."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import CLI, cli_env

import twinlink
from twinlink import update


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=cli_env(),
                          timeout=120, check=True)


def test_provision_with_update_key_then_verify_update(rig, tmp_path):
    _run("update", "keygen", "--out", str(tmp_path / "offline"))
    _run("provision", "pump", "--twin-pub", str(rig.root / "twin.pub"), "--out",
         str(rig.root / "keys"), "--db", str(rig.db), "--update-key",
         str(tmp_path / "offline" / "update.pub"), "--vendor", "acme", "--class", "pump-v2")
    settings = json.loads((rig.root / "keys" / "pump.device").read_text())["settings"]
    assert settings["update"]["vendor"] == "acme" and len(settings["update"]["keys"]) == 1
    image = tmp_path / "fw.bin"
    image.write_bytes(b"firmware " * 1000)
    _run("update", "make", "--key", str(tmp_path / "offline" / "update.key"), "--image",
         str(image), "--seq", "3", "--vendor", "acme", "--class", "pump-v2", "--out",
         str(tmp_path / "fw.manifest"))
    installed = []
    with twinlink.Device.load(rig.root / "keys" / "pump.device", rig.root / "state") as dev:
        result = dev.verify_update((tmp_path / "fw.manifest").read_bytes(), image,
                                   lambda m, path: installed.append(path))
        assert installed and result is not None
        # a newer manifest, but the image handed over is not the one it names
        _run("update", "make", "--key", str(tmp_path / "offline" / "update.key"), "--image",
             str(image), "--seq", "4", "--vendor", "acme", "--class", "pump-v2", "--out",
             str(tmp_path / "fw4.manifest"))
        evil = tmp_path / "evil.bin"
        evil.write_bytes(b"evil " * 1800)
        with pytest.raises(update.UpdateRefused):
            dev.verify_update((tmp_path / "fw4.manifest").read_bytes(), evil)
        assert len(installed) == 1


def test_update_key_needs_vendor_and_class(rig, tmp_path):
    _run("update", "keygen", "--out", str(tmp_path / "offline"))
    p = subprocess.run([*CLI, "provision", "x", "--twin-pub", str(rig.root / "twin.pub"),
                        "--out", str(rig.root / "keys"), "--update-key",
                        str(tmp_path / "offline" / "update.pub")],
                       capture_output=True, text=True, env=cli_env(), timeout=120)
    assert p.returncode == 2 and "--vendor" in p.stderr
