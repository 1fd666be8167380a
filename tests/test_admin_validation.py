"""Validation at every admin boundary: device keys, device names, file types, the twin key.

What an operator types or points at (a key file, a name, a path) is checked before anything is
written or registered; a bad value is a one-line error, never a hang, a traceback, a file
outside ``--out`` or a key that crashes the ingest later.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import CLI, cli_env
from nacl import bindings as nacl

import twinlink
from twinlink import frame, keys, senml
from twinlink.errors import KeyFileError, TwinlinkError, UnknownDevice
from twinlink.keys import InvalidPublicKey
from twinlink.naming import InvalidName
from twinlink.provision import provision
from twinlink.store import RegistryError, TwinKeyMismatch

# -- Ed25519 points ---------------------------------------------------------------------------
# The eight small-order points of edwards25519 in their canonical encodings, as listed by the
# libsodium blocklist (crypto_core/ed25519/ref10), Wycheproof's eddsa tests and "Taming the
# many EdDSAs" (eprint 2020/1244, table 6b). _order() below re-derives each order.
SMALL_ORDER = {
    "identity (order 1)": "01" + "00" * 31,
    "order 2": "ec" + "ff" * 30 + "7f",
    "order 4, x even": "00" * 32,
    "order 4, x odd": "00" * 31 + "80",
    "order 8 a": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 a, x odd": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "order 8 b": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8 b, x odd": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}
# Non-canonical encodings: y >= p, or the sign bit set on a point whose x is 0.
NON_CANONICAL = {
    "identity, x sign bit set": "01" + "00" * 30 + "80",
    "order 2, x sign bit set": "ec" + "ff" * 31,
    "y = p (= 0)": "ed" + "ff" * 30 + "7f",
    "y = p + 1 (= 1)": "ee" + "ff" * 30 + "7f",
    "y = p + 1, sign bit": "ee" + "ff" * 31,
    "all ff": "ff" * 32,
}

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode(enc: bytes) -> tuple[int, int] | None:
    """RFC 8032 §5.1.3 point decoding; None if off the curve or not canonical."""
    y = int.from_bytes(enc, "little") & ((1 << 255) - 1)
    sign = enc[31] >> 7
    if y >= _P:
        return None
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * _SQRT_M1 % _P
    if v * x * x % _P != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P,
            (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P)


def _order(enc: bytes) -> int | None:
    """The order of a small-order point (1..8), or None if it is not one."""
    pt = _decode(enc)
    if pt is None:
        return None
    acc = pt
    for n in range(1, 9):
        if acc == (0, 1):
            return n
        acc = _add(acc, pt)
    return None


def _off_curve() -> list[bytes]:
    """Canonical-looking encodings that are not on the curve (found by decoding)."""
    out = []
    for y in range(2, 60):
        enc = y.to_bytes(32, "little")
        if _decode(enc) is None:
            out.append(enc)
    return out[:5]


def test_the_small_order_list_is_right():
    orders = {name: _order(bytes.fromhex(h)) for name, h in SMALL_ORDER.items()}
    assert sorted(orders.values()) == [1, 2, 4, 4, 8, 8, 8, 8], orders  # the whole torsion group
    assert all(_decode(bytes.fromhex(h)) is None for h in NON_CANONICAL.values())
    assert len(_off_curve()) == 5
    genuine = keys.DeviceKey.generate().public
    assert _decode(genuine) is not None and _order(genuine) is None


def _mixed_order() -> bytes:
    """A genuine key plus an order-8 point: on the curve, but not in the prime-order subgroup."""
    pk = keys.DeviceKey.generate().public
    return nacl.crypto_core_ed25519_add(pk, bytes.fromhex(SMALL_ORDER["order 8 a"]))


BAD_KEYS = (
    [pytest.param(bytes.fromhex(h), id=f"small-{n}") for n, h in SMALL_ORDER.items()]
    + [pytest.param(bytes.fromhex(h), id=f"noncanonical-{n}") for n, h in NON_CANONICAL.items()]
    + [pytest.param(e, id=f"off-curve-{i}") for i, e in enumerate(_off_curve())]
    + [pytest.param(_mixed_order(), id="mixed-order"),
       pytest.param(b"\x01" * 31, id="31-bytes"), pytest.param(b"\x01" * 33, id="33-bytes")]
)


@pytest.mark.parametrize("public", BAD_KEYS)
def test_registration_refuses_invalid_device_keys(rig, public: bytes):
    with pytest.raises(InvalidPublicKey):
        keys.check_device_public(public)
    with rig.twin() as twin:
        with pytest.raises(InvalidPublicKey) as e:
            twin.register("evil", public, kid=b"\x42")
        assert public.hex() not in str(e.value)
        assert twin.store.devices() == [] and twin.store.count_events() == 0


@pytest.mark.parametrize("name", ["small-identity (order 1)", "small-order 8 b",
                                  "noncanonical-y = p (= 0)", "mixed-order"])
def test_registration_refuses_invalid_keys_from_pem_and_cli(rig, name: str):
    public = next(p.values[0] for p in BAD_KEYS if p.id == name)
    pem = rig.root / "evil.pub"
    keys.write_public(pem, keys.ed25519_public_pem(public))
    with rig.twin() as twin:
        with pytest.raises(InvalidPublicKey):
            twin.register("evil", pem)
    p = _cli("twin", "register", "evil", "--pub", str(pem), "--db", str(rig.db))
    _one_line_error(p)
    assert "not a valid Ed25519 point" in p.stderr


def test_a_frame_for_a_refused_key_is_an_unknown_device(rig, backend_name):
    """Since such a key can never be registered, a frame carrying the kid it asked for cannot
    reach key conversion: it is refused as unknown, and its batch goes on."""
    good = rig.device("pump")
    attacker = keys.DeviceKey.generate()
    with rig.twin() as twin:
        for h in SMALL_ORDER.values():
            with pytest.raises(InvalidPublicKey):
                twin.register("evil", bytes.fromhex(h), kid=b"\x42")
        secret = keys.master_secret_device(attacker, rig.twin_key.public)
        ctx = twinlink.oscore.derive_context(secret, b"\x42")
        evil = frame.seal(attacker.secret64, ctx, 0, senml.encode({"x": 1}))
        res = twin.open_many([good.seal({"v": 1}), evil, good.seal({"v": 2})])
        assert isinstance(res[1], UnknownDevice)
        assert [r.seq for r in (res[0], res[2])] == [0, 1]  # type: ignore[union-attr]


@pytest.mark.parametrize("h", [SMALL_ORDER["order 4, x even"], SMALL_ORDER["order 8 a"],
                               SMALL_ORDER["identity (order 1)"]])
def test_a_small_order_key_already_in_an_old_database_is_contained(rig, backend_name, h: str):
    """twinlink 0.1 registered any 32 bytes. A database carried over may hold such a key (set
    here by hand, as 0.1 would have stored it): its frames are refused, never crash the ingest,
    and the other devices' frames in the batch are stored."""
    good = rig.device("pump")
    rig.provision("evil")
    with sqlite3.connect(rig.db) as db:
        db.execute("UPDATE devices SET public_key=? WHERE name='evil'", (bytes.fromhex(h),))
    evil = keys.Bundle.load(rig.root / "keys/evil.device")
    assert evil.device_key is not None
    forged = frame.seal(evil.device_key.secret64, evil.context(), 0, senml.encode({"x": 1}))
    with rig.twin() as twin:
        res = twin.open_many([good.seal({"v": 1}), forged, good.seal({"v": 2})])
        assert isinstance(res[1], TwinlinkError)
        assert [r.seq for r in (res[0], res[2])] == [0, 1]  # type: ignore[union-attr]
        assert twin.store.count_readings() == 2


def test_a_twin_key_is_not_a_device_key(rig):
    with pytest.raises(KeyFileError):
        keys.load_public(rig.root / "twin.pub", "ed25519")
    with rig.twin() as twin:
        with pytest.raises(KeyFileError):
            twin.register("evil", rig.root / "twin.pub")
    p = _cli("twin", "register", "evil", "--pub", str(rig.root / "twin.pub"), "--db", str(rig.db))
    _one_line_error(p, code=3)
    assert "Ed25519" in p.stderr
    # ... nor a device key a twin key.
    rig.provision("pump")
    with pytest.raises(KeyFileError):
        keys.load_public(rig.root / "keys/pump.pub", "x25519")
    with pytest.raises(KeyFileError):
        provision("valve", rig.root / "keys/pump.pub", rig.root / "keys", db=str(rig.db))
    assert not (rig.root / "keys/valve.device").exists()


# -- device names -----------------------------------------------------------------------------

BAD_NAMES = ["../x", "../../etc/passwd", "a/b", "/abs", "a\\b", "a b", " lead", "tab\there",
             "bell\x07", "new\nline", "\x1b[31mred\x1b[0m", "del\x7f", "x" * 65, "", ".", "..",
             ".hidden", "-dash", "pümpe", "rtl\u202eevil", "nul\x00"]


def _name_id(n: str) -> str:
    return repr(n)[1:-1][:20] or "empty"


@pytest.mark.parametrize("name", BAD_NAMES, ids=_name_id)
def test_bad_device_names_are_refused_everywhere(rig, name: str):
    out = rig.root / "out"
    with pytest.raises(InvalidName):
        provision(name, rig.root / "twin.pub", out, db=str(rig.db))
    with rig.twin() as twin:
        with pytest.raises(InvalidName):
            twin.register(name, keys.DeviceKey.generate().public)
        assert twin.store.devices() == []
    assert not out.exists() or list(out.iterdir()) == []
    assert not (rig.root / "x.device").exists()
    # A bundle whose name was edited to a bad one does not load.
    rig.provision("good")
    doc = json.loads((rig.root / "keys/good.device").read_text())
    doc["name"] = name
    bad = rig.root / "keys/bad.device"
    keys.write_private(bad, json.dumps(doc), overwrite=True)
    with pytest.raises(KeyFileError):
        keys.Bundle.load(bad)
    with pytest.raises(KeyFileError):
        twinlink.Device.load(bad, rig.root / "state")


@pytest.mark.parametrize("name", ["../x", "a/b", "\x1b[31mred\x1b[0m", "x" * 65, ""],
                         ids=_name_id)
def test_bad_device_names_are_refused_by_the_cli(rig, name: str):
    out = rig.root / "out"
    p = _cli("provision", name, "--twin-pub", str(rig.root / "twin.pub"), "--out", str(out),
             "--db", str(rig.db))
    _one_line_error(p)
    assert "invalid device name" in p.stderr
    assert not out.exists() or list(out.iterdir()) == []
    assert not (rig.root / "x.device").exists() and not (rig.root / "x.key").exists()
    dk = keys.DeviceKey.generate()
    keys.write_public(rig.root / "d.pub", dk.public_pem(), overwrite=True)
    p = _cli("twin", "register", name, "--pub", str(rig.root / "d.pub"), "--db", str(rig.db))
    _one_line_error(p)
    with rig.twin() as twin:
        assert twin.store.devices() == []


def test_longest_valid_name_works(rig):
    name = "A" + "b.-_9" * 12 + "xyz"
    assert len(name) == 64
    bundle = rig.provision(name)
    assert keys.Bundle.load(bundle).name == name


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_provision_force_never_destroys_a_working_bundle(rig, backend_name):
    rig.provision("pump")
    keydir = rig.root / "keys"
    before = _files(keydir)
    with pytest.raises(RegistryError):  # the name is registered: nothing may change
        provision("pump", rig.root / "twin.pub", keydir, db=str(rig.db), force=True)
    assert _files(keydir) == before
    p = _cli("provision", "pump", "--twin-pub", str(rig.root / "twin.pub"), "--out", str(keydir),
             "--db", str(rig.db), "--force")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert _files(keydir) == before  # byte-identical, and no temp files left behind
    dev = rig.device("pump")
    with rig.twin() as twin:
        assert twin.open(dev.seal({"v": 1})).device == "pump"  # the bundle still works


# -- FIFOs and directories where a key or bundle belongs ------------------------------------


def _within(seconds: float, fn):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it blocks."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture(params=["fifo", "directory"])
def not_a_file(request, tmp_path: Path):
    path = tmp_path / "special.key"
    if request.param == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path.mkdir(mode=0o700)
    yield path
    if request.param == "fifo":  # release a reader a regression left blocked
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            pass
        else:
            os.close(fd)


LOADERS = {
    "load_device_key": keys.load_device_key,
    "load_twin_key": keys.load_twin_key,
    "load_public": lambda p: keys.load_public(p, "ed25519"),
    "Bundle.load": keys.Bundle.load,
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_key_and_bundle_paths_must_be_regular_files(not_a_file: Path, loader: str):
    with pytest.raises(KeyFileError):
        _within(10, lambda: LOADERS[loader](not_a_file))


def test_special_files_are_refused_by_the_library_entry_points(rig, not_a_file: Path):
    with pytest.raises(KeyFileError):
        _within(10, lambda: twinlink.Device.load(not_a_file, rig.root / "state"))
    with pytest.raises(KeyFileError):
        _within(10, lambda: twinlink.Twin(rig.db, not_a_file))
    with pytest.raises(KeyFileError):
        _within(10, lambda: provision("pump", not_a_file, rig.root / "keys", db=str(rig.db)))


def test_special_files_are_refused_by_the_cli(rig, not_a_file: Path):
    rig.provision("pump")
    bundle = str(rig.root / "keys/pump.device")
    f = str(not_a_file)
    cases = [
        (["seal", "--device", f, "--state", str(rig.root / "st")], '{"v": 1}\n'),
        (["open", "--db", str(rig.db), "--twin-key", f], ""),
        (["provision", "valve", "--twin-pub", f, "--out", str(rig.root / "o")], ""),
        (["twin", "register", "valve", "--pub", f, "--db", str(rig.db)], ""),
        (["twin", "rekey", "pump", "--db", str(rig.db), "--bundle", f], ""),
        (["inspect", "00", "--db", str(rig.db), "--twin-key", f], ""),
    ]
    for args, stdin in cases:
        p = _cli(*args, stdin=stdin, timeout=30)  # a regression hangs: TimeoutExpired fails
        _one_line_error(p, code=3)
    assert keys.Bundle.load(bundle).master_salt == b""  # the failed rekey changed nothing
    with rig.twin() as twin:
        rec = twin.store.device("pump")
        assert rec.epoch == 0 and rec.pending_salt is None


# -- the twin key -----------------------------------------------------------------------------


def test_twin_with_another_key_is_refused_with_the_expected_fingerprint(rig, backend_name):
    dev = rig.device("pump")
    expected = keys.fingerprint(rig.twin_key.public)
    other = keys.TwinKey.generate()
    with pytest.raises(TwinKeyMismatch) as e:
        twinlink.Twin(rig.db, other)
    msg = str(e.value)
    assert expected in msg and keys.fingerprint(other.public) in msg and "\n" not in msg
    with rig.twin() as twin:  # the right key still works, nothing was rebound
        assert twin.open(dev.seal({"v": 1})).seq == 0
        assert twin.store.twin_fingerprint() == expected


@pytest.fixture
def wrong_key(rig) -> Path:
    path = rig.root / "other.key"
    keys.write_private(path, keys.TwinKey.generate().to_pem())
    return path


def test_cli_ingests_refuse_the_wrong_twin_key_before_reading_input(rig, wrong_key, backend_name):
    dev = rig.device("pump")
    expected = keys.fingerprint(rig.twin_key.public)
    env = {"TWINLINK_BACKEND": backend_name}
    line = dev.seal({"v": 1}).hex() + "\n"
    runs = [
        _cli("open", "--db", str(rig.db), "--twin-key", str(wrong_key), stdin=line, env=env),
        _cli("serve", "--mqtt", "mqtt://127.0.0.1:9", "--db", str(rig.db), "--twin-key",
             str(wrong_key), "--ready-timeout", "5", env=env, timeout=60),
        _cli("monitor", "loop://", "--db", str(rig.db), "--twin-key", str(wrong_key),
             "--duration", "30", env=env, timeout=60),
        _cli("inspect", line.strip(), "--db", str(rig.db), "--twin-key", str(wrong_key), env=env),
    ]
    for p in runs:
        _one_line_error(p)
        assert expected in p.stderr and p.stdout == ""
    with rig.twin() as twin:
        assert twin.store.count_readings() == 0
        assert twin.store.events(audit=False) == []  # not logged as decrypt_failed attacks
        assert twin.open(bytes.fromhex(line)).seq == 0  # nothing consumed it


# -- helpers ----------------------------------------------------------------------------------


def _cli(*args: str, stdin: str = "", timeout: float = 60, env: dict | None = None):
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True,
                          env={**cli_env(), **(env or {})}, timeout=timeout)


def _one_line_error(p: subprocess.CompletedProcess, code: int | None = None) -> None:
    assert p.returncode != 0, p.stdout
    if code is not None:
        assert p.returncode == code, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twinlink: "), p.stderr
    assert "Traceback" not in p.stderr
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr  # no raw escapes reach a terminal


# -- reanchor from the command line -----------------------------------------------------------


def test_reanchor_floor_is_validated_and_forcing_warns(rig, backend_name):
    dev = rig.device("pump")
    frames = dev.seal_many([{"v": i} for i in range(5)])
    with rig.twin() as twin:
        twin.open_many(frames)
    db = str(rig.db)
    for floor in ("-1", str(2**40), "1e3", "0x10", ""):
        p = _cli("twin", "reanchor", "pump", "--db", db, "--floor", floor, "--force")
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    p = _cli("twin", "reanchor", "pump", "--db", db, "--floor", "2")
    _one_line_error(p)
    assert "not above sequence number 4" in p.stderr
    p = _cli("twin", "reanchor", "pump", "--db", db, "--floor", "2", "--force")
    assert p.returncode == 0, p.stderr
    warning, done = p.stderr.strip().splitlines()
    assert warning.startswith("twinlink: warning: ") and "sequence number 4" in warning
    assert done == "twinlink: re-anchored pump: accepting seq >= 2"
    # The window top is 1 now, but readings up to 4 are stored: 3 is still refused.
    _one_line_error(_cli("twin", "reanchor", "pump", "--db", db, "--floor", "3"))
    p = _cli("twin", "reanchor", "pump", "--db", db, "--floor", "5")
    assert p.returncode == 0 and "warning" not in p.stderr
    p = _cli("twin", "reanchor", "pump", "--db", db, "--floor", "2", "--force")
    assert p.returncode == 0 and "warning" in p.stderr
    out = _cli("open", "--db", db, "--twin-key", str(rig.twin_key_path),
               stdin=frames[3].hex() + "\n" + frames[4].hex() + "\n",
               env={"TWINLINK_BACKEND": backend_name})
    assert [json.loads(x)["error"] for x in out.stdout.splitlines()] == ["replay", "replay"]


def test_rekey_refuses_a_lite_device_with_or_without_its_bundle(rig, backend_name):
    """A lite bundle holds keys derived from the current context: re-keying the store alone
    would strand the device, and the hint to edit its Master Salt would not help."""
    bundle = rig.provision("tiny", lite=True)
    for extra in ([], ["--bundle", str(bundle)]):
        p = _cli("twin", "rekey", "tiny", "--db", str(rig.db), *extra)
        _one_line_error(p, code=2)
        assert "re-provision" in p.stderr
    dev = twinlink.Device.load(bundle, rig.root / "state")
    with rig.twin() as twin:
        rec = twin.store.device("tiny")
        assert (rec.epoch, rec.pending_salt) == (0, None)
        assert twin.open(dev.seal({"v": 1})).provenance == "aead-only"
    dev.close()
