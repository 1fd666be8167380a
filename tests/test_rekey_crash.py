"""`twin rekey` is crash-safe, and `inspect` says what `open` will do.

The re-key crash tests kill the real CLI with SIGKILL at random points and, systematically,
stop the CLI's own re-key function between its atomic steps (announce in the store, rewrite
the bundle, switch the store). Afterwards the bundle always parses, the device's frames open,
a further re-key succeeds, and once it has the device's frames open under exactly one context.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLI, cli_env

import twinlink
from twinlink import frame, keys, senml
from twinlink.cli import twin_cmds
from twinlink.errors import TwinlinkError
from twinlink.store import SQLiteStore, TwinStore
from twinlink.twin import Reading, Twin

NAME = "pump"


class _Crash(BaseException):
    """Stands for the process dying between two atomic steps."""


def _device_with_salt(bundle_path: Path, salt: bytes, state: Path) -> twinlink.Device:
    """The device as it would run from its bundle, with ``salt`` instead (a fresh counter)."""
    b = keys.Bundle.load(bundle_path)
    b.settings["master_salt"] = salt.hex()
    b.settings["id_context"] = None
    return twinlink.Device(b, state)


class Checker:
    """Checks the device's frames against the twin after each crash.

    Frames are sealed by a freshly loaded Device each time, as a restarted device would; its
    sequence state (one counter per context) persists, as it must: sealing seq 0 twice under
    one context would be a nonce reuse, which the twin rightly refuses as a conflict.
    """

    def __init__(self, root: Path, db: Path, twin_key: Path, bundle: Path) -> None:
        self.root, self.db, self.twin_key, self.bundle = root, db, twin_key, bundle
        self.salts: set[bytes] = {b""}  # every Master Salt the device ever had

    def frame(self, salt: bytes, value: int) -> bytes:
        dev = _device_with_salt(self.bundle, salt, self.root / "check-state")
        try:
            return dev.seal({"round": value})
        finally:
            dev.close()

    def after_crash(self, value: int) -> str:
        """The bundle parses and its frames open; another context opens only if it is the one
        an interrupted re-key announced. Returns how the crash left the store (for stats)."""
        bundle = keys.Bundle.load(self.bundle)  # always parses
        assert (bundle.name, bundle.id_context) == (NAME, None)
        salt = bundle.master_salt
        self.salts.add(salt)
        with Twin(str(self.db), self.twin_key) as twin:
            before = twin.store.device(NAME)
            if before.pending_salt is not None:
                self.salts.add(before.pending_salt)
            outcome = ("complete" if before.pending_salt is None and before.master_salt == salt
                       else "pending" if before.master_salt == salt else "bundle-ahead")
            r = twin.open(self.frame(salt, value))  # the device is never stranded
            assert isinstance(r, Reading)
            rec = twin.store.device(NAME)
            assert rec.master_salt == salt  # its frame settled the store on its context
            for other in self.salts - {salt}:
                verdict = twin.check(self.frame(other, value))
                if other == rec.pending_salt:
                    # Announced, the bundle not yet rewritten: by design acceptable until the
                    # next re-key replaces the announcement (checked strictly below).
                    assert isinstance(verdict, Reading)
                else:
                    assert isinstance(verdict, TwinlinkError), other.hex()
        return outcome

    def after_complete_rekey(self, value: int) -> None:
        """After a re-key ran to completion: exactly one context opens."""
        bundle = keys.Bundle.load(self.bundle)
        salt = bundle.master_salt
        self.salts.add(salt)
        with Twin(str(self.db), self.twin_key) as twin:
            rec = twin.store.device(NAME)
            assert (rec.master_salt, rec.pending_salt) == (salt, None)
            for other in self.salts - {salt}:
                res = twin.open_many([self.frame(other, value)])[0]
                assert isinstance(res, TwinlinkError), other.hex()
            assert isinstance(twin.open(self.frame(salt, value)), Reading)


@pytest.fixture
def rekey_rig(rig):
    bundle = rig.provision(NAME)
    return rig, bundle, Checker(rig.root, rig.db, rig.twin_key_path, bundle)


def _rekey_cmd(rig, bundle: Path) -> list[str]:
    return [*CLI, "twin", "rekey", NAME, "--db", str(rig.db), "--bundle", str(bundle)]


def _run_rekey(rig, bundle: Path) -> None:
    p = subprocess.run(_rekey_cmd(rig, bundle), capture_output=True, text=True, env=cli_env(),
                       timeout=60)
    assert p.returncode == 0, p.stderr


def _kill_rekey(rig, bundle: Path, rng: random.Random, typical: float) -> None:
    """Start `twin rekey`, SIGKILL it at a random point. Half the kills wait for the fact that
    the new salt was announced and land just after it (the critical stretch is a few ms long
    at the end of a run that is mostly interpreter start-up)."""
    proc = subprocess.Popen(_rekey_cmd(rig, bundle), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=cli_env())
    try:
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.0, typical))
        else:
            with SQLiteStore(str(rig.db), readonly=True) as watch:
                before = watch.device(NAME).pending_salt
                while proc.poll() is None and watch.device(NAME).pending_salt in (None, before):
                    time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert proc.returncode in (0, -signal.SIGKILL), err


@pytest.mark.slow
def test_sigkill_during_rekey_never_strands_the_device(rekey_rig):
    rig, bundle, check = rekey_rig
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    t0 = time.monotonic()
    _run_rekey(rig, bundle)  # also measures a typical run
    typical = time.monotonic() - t0
    check.after_complete_rekey(0)
    outcomes: dict[str, int] = {}
    for rnd in range(1, 41):
        for _ in range(rng.choice((1, 1, 2))):  # sometimes two interrupted runs in a row
            _kill_rekey(rig, bundle, rng, typical)
        out = check.after_crash(rnd)
        outcomes[out] = outcomes.get(out, 0) + 1
        _run_rekey(rig, bundle)  # a further re-key succeeds...
        check.after_complete_rekey(rnd)  # ... and leaves exactly one context
    print(f"rekey crash outcomes over 40 rounds: {outcomes}")
    with Twin(str(rig.db), rig.twin_key_path) as twin:
        assert twin.store.count_readings(NAME) == 1 + 2 * 40  # history kept across re-keys


def _rekey_args(bundle: Path) -> argparse.Namespace:
    """What `twinlink twin rekey pump --device BUNDLE` parses to."""
    return argparse.Namespace(name=NAME, salt=None, device=str(bundle), json=False)


def _interrupted_rekey(store: TwinStore, bundle: Path, monkeypatch, after: int | None) -> None:
    """Run the CLI's re-key and stop it (like a kill) after ``after`` of its atomic steps (the
    store's announce_rekey and rekey, the bundle's save); None runs it to completion."""
    done = [0]

    def step(real):
        def wrapped(*a, **kw):
            if after is not None and done[0] >= after:
                raise _Crash
            out = real(*a, **kw)
            done[0] += 1
            return out
        return wrapped

    with monkeypatch.context() as m:
        m.setattr(store, "announce_rekey", step(store.announce_rekey))
        m.setattr(store, "rekey", step(store.rekey))
        m.setattr(keys.Bundle, "save", step(keys.Bundle.save))
        try:
            twin_cmds.cmd_rekey(store, _rekey_args(bundle))
        except _Crash:
            pass
    assert after is None or done[0] <= after


_CUTS = [0, 1, 2, 3, None]


@pytest.mark.parametrize("first", _CUTS, ids=lambda k: f"first-after-{k}")
@pytest.mark.parametrize("second", _CUTS, ids=lambda k: f"then-after-{k}")
def test_rekey_interrupted_between_any_two_steps_twice(rekey_rig, monkeypatch,
                                                       first: int | None, second: int | None):
    """Every way two consecutive `twin rekey` runs can be cut between their atomic steps (a
    run has three, four when it first finishes an earlier interrupted one)."""
    rig, bundle, check = rekey_rig
    with Twin(str(rig.db), rig.twin_key_path) as twin:
        assert twin.open(check.frame(b"", 0)).seq == 0
    with SQLiteStore(str(rig.db)) as store:
        _interrupted_rekey(store, bundle, monkeypatch, first)
        _interrupted_rekey(store, bundle, monkeypatch, second)
    check.after_crash(1)
    with SQLiteStore(str(rig.db)) as store:
        _interrupted_rekey(store, bundle, monkeypatch, None)  # the operator runs it again
    check.after_complete_rekey(2)


def test_rekey_completed_by_the_devices_first_frame_meanwhile(rekey_rig, monkeypatch, capsys):
    """The device restarts with its new bundle and its first frame completes the re-key before
    `twin rekey` gets to: the command still succeeds."""
    rig, bundle, check = rekey_rig
    store = SQLiteStore(str(rig.db))
    real = store.rekey

    def device_first(*a, **kw):
        with Twin(str(rig.db), rig.twin_key_path) as twin:
            twin.open(check.frame(keys.Bundle.load(bundle).master_salt, 1))
        return real(*a, **kw)

    monkeypatch.setattr(store, "rekey", device_first)
    try:
        twin_cmds.cmd_rekey(store, _rekey_args(bundle))
    finally:
        store.close()
    assert "re-keyed" in capsys.readouterr().err
    check.after_complete_rekey(2)


# -- inspect agrees with open -----------------------------------------------------------------


def _cli(args: list[str], backend: str, stdin: str = "") -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True,
                       env={**cli_env(), "TWINLINK_BACKEND": backend}, timeout=60)
    assert p.returncode == 0, p.stderr
    return p


def test_inspect_verdict_equals_what_open_then_does(rig, backend_name):
    pump = rig.device("pump")
    old = rig.device("old")
    lite_dev = twinlink.Device.load(rig.provision("tiny", lite=True), rig.root / "state")
    stray = twinlink.Device(
        twinlink.provision.provision("stray", rig.root / "twin.pub", rig.root / "unregistered"),
        rig.root / "state")
    frames = pump.seal_many([{"i": i} for i in range(101)])  # seq 0..100
    bundle = pump.bundle
    assert bundle.device_key is not None
    # The device names its own (renewed) ID Context in every frame; hand-made frames do too.
    sk, idc, ctx = bundle.device_key.secret64, pump.id_context, bundle.context(pump.id_context)
    with rig.twin() as twin:
        twin.open_many(frames[95:])
        twin.store.revoke("old", "retired from service")
    fresh = pump.seal({"i": 101})
    forged = bytearray(pump.seal({"i": 102}))
    forged[-1] ^= 0x01
    salted = _device_with_salt(rig.root / "keys/pump.device", b"\x99", rig.root / "st2")
    other_ctx = salted.bundle.context(idc)

    def seal(c, seq: int, pt: bytes, kid_context: bytes | None = idc) -> bytes:
        return frame.seal(sk, c, seq, pt, kid_context=kid_context)

    cases = {
        "fresh": (fresh, "ok"),
        "replay": (frames[97], "replay"),
        "conflict": (seal(ctx, 98, senml.encode({"i": -98})), "conflict"),
        "too old": (frames[20], "too_old"),
        "revoked device": (old.seal({"x": 1}), "revoked"),
        "lite frame from a signed device": (frame.seal_lite(ctx, 103, senml.encode({"i": 1})),
                                            "bad_signature"),
        "forged": (bytes(forged), "bad_signature"),
        "unknown kid": (stray.seal({"x": 1}), "unknown_device"),
        "bad payload": (seal(ctx, 104, b"\xff\xfe"), "bad_payload"),
        "wrong salt, same ID Context": (seal(other_ctx, 200, senml.encode({"x": 1})),
                                        "decrypt_failed"),
        "wrong salt, its own ID Context": (salted.seal({"x": 1}), "decrypt_failed"),
        "retired base context": (seal(bundle.context(None), 105, senml.encode({"x": 1}), None),
                                 "context_retired"),
        "lite device": (lite_dev.seal({"x": 1}), "ok"),
        "not a frame": (bytes.fromhex("d2840102"), "malformed"),
    }
    with rig.twin() as twin:
        before = (twin.store.count_readings(), twin.store.count_events(),
                  twin.store.lookup(pump.kid).window.top)
    verdicts = {}
    for name, (fr, _) in cases.items():
        out = json.loads(_cli(["inspect", fr.hex(), "--db", str(rig.db), "--twin-key",
                               str(rig.twin_key_path), "--json"], backend_name).stdout)
        v = out["verdict"]
        verdicts[name] = "ok" if v["ok"] else v["error"]
    with rig.twin() as twin:  # a dry run: nothing stored, no event, the window unmoved
        assert (twin.store.count_readings(), twin.store.count_events(),
                twin.store.lookup(pump.kid).window.top) == before
    opened = _cli(["open", "--db", str(rig.db), "--twin-key", str(rig.twin_key_path)],
                  backend_name, "".join(fr.hex() + "\n" for fr, _ in cases.values())).stdout
    results = [json.loads(line) for line in opened.splitlines()]
    assert len(results) == len(cases)
    said = {name: ("ok" if r["ok"] else r["error"]) for name, r in zip(cases, results)}
    assert verdicts == said  # inspect predicted every verdict open then gave
    assert said == {name: want for name, (_, want) in cases.items()}
    for d in (pump, old, lite_dev, stray, salted):
        d.close()
