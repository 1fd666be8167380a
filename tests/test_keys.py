"""Key files and bundles: formats other tools read, permissions, no secrets in reprs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from twinlink import keys
from twinlink.errors import KeyFileError


def test_device_key_pem_is_standard(tmp_path):
    dk = keys.DeviceKey.generate()
    keys.write_private(tmp_path / "d.key", dk.to_pem())
    keys.write_public(tmp_path / "d.pub", dk.public_pem())
    priv = serialization.load_pem_private_key((tmp_path / "d.key").read_bytes(), None)
    assert isinstance(priv, ed25519.Ed25519PrivateKey)
    raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == dk.public
    pub = serialization.load_pem_public_key((tmp_path / "d.pub").read_bytes())
    assert isinstance(pub, ed25519.Ed25519PublicKey)
    assert keys.load_device_key(tmp_path / "d.key").seed == dk.seed
    assert keys.load_public(tmp_path / "d.pub") == dk.public


def test_twin_key_pem_is_standard(tmp_path):
    tk = keys.TwinKey.generate()
    keys.write_private(tmp_path / "t.key", tk.to_pem())
    priv = serialization.load_pem_private_key((tmp_path / "t.key").read_bytes(), None)
    assert isinstance(priv, x25519.X25519PrivateKey)
    raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == tk.public
    assert keys.parse_x25519_public(tk.public_pem()) == tk.public


def test_key_written_by_cryptography_loads(tmp_path):
    priv = ed25519.Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    p = tmp_path / "c.key"
    keys.write_private(p, pem.decode())
    seed = priv.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert keys.load_device_key(p).seed == seed


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_openssl_reads_the_files(tmp_path):
    dk, tk = keys.DeviceKey.generate(), keys.TwinKey.generate()
    keys.write_private(tmp_path / "d.key", dk.to_pem())
    keys.write_private(tmp_path / "t.key", tk.to_pem())
    keys.write_public(tmp_path / "d.pub", dk.public_pem())
    for f, kind in (("d.key", "ED25519"), ("t.key", "X25519")):
        out = subprocess.run(
            ["openssl", "pkey", "-in", str(tmp_path / f), "-noout", "-text"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert kind in out
    out = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(tmp_path / "d.pub"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ED25519" in out


def test_private_files_are_0600_and_unsafe_ones_refused(tmp_path):
    dk = keys.DeviceKey.generate()
    p = tmp_path / "d.key"
    keys.write_private(p, dk.to_pem())
    assert os.stat(p).st_mode & 0o777 == 0o600
    os.chmod(p, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        keys.load_device_key(p)


def test_refuses_to_overwrite(tmp_path):
    keys.write_private(tmp_path / "k", "x")
    with pytest.raises(KeyFileError):
        keys.write_private(tmp_path / "k", "y")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
        keys.TwinKey(bytes(32)).to_pem(),
    ],
)
def test_malformed_device_key_is_key_file_error(tmp_path, text):
    p = tmp_path / "bad.key"
    keys.write_private(p, text)
    with pytest.raises(KeyFileError):
        keys.load_device_key(p)


def test_bundle_round_trip_and_errors(tmp_path):
    dk, tk = keys.DeviceKey.generate(), keys.TwinKey.generate()
    b = keys.Bundle("pump", b"\x01\x02", tk.public, dk, {"sequence_chunk": 64})
    b.save(tmp_path / "pump.device")
    b2 = keys.Bundle.load(tmp_path / "pump.device")
    assert (b2.name, b2.kid, b2.twin_public, b2.device_key.seed, b2.settings) == (
        "pump",
        b"\x01\x02",
        tk.public,
        dk.seed,
        {"sequence_chunk": 64},
    )
    assert b.context() == b2.context()
    (tmp_path / "bad.device").write_text('{"format": "something else"}')
    os.chmod(tmp_path / "bad.device", 0o600)
    with pytest.raises(KeyFileError):
        keys.Bundle.load(tmp_path / "bad.device")
    assert dk.seed.hex() not in repr(b2)


def test_missing_file_is_key_file_error(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read"):
        keys.load_twin_key(tmp_path / "nope.key")
