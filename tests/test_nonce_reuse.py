"""Losing, restoring or copying a device's sequence state never encrypts two plaintexts under one
(key, nonce) pair.

The check is made from the wire alone, as an auditor with the twin's key would: every frame's
AEAD key and nonce are derived from its own header (kid, kid context, Partial IV) and the
pairwise secret, and no (key, nonce) may carry two different ciphertexts. The twin then stores
every reading of the sequential scenarios exactly once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mosquitto import twin_rig

from twinlink import Device, Twin, keys, oscore
from twinlink.frame import parse


def _key_nonce(frame: bytes, secret: bytes, salt: bytes) -> tuple[bytes, bytes]:
    p = parse(frame)
    key = oscore.derive_key(secret, salt, p.kid, p.kid_context)
    iv = oscore.derive_common_iv(secret, salt, p.kid_context)
    return key, oscore.nonce(iv, p.kid, p.piv)


def _assert_no_reuse(frames: list[bytes], rig) -> int:
    """Fail if two frames with different ciphertexts share a (key, nonce); return how many
    distinct contexts the frames used."""
    bundle = keys.Bundle.load(rig.bundle("pump"))
    secret = keys.master_secret_twin(keys.load_twin_key(rig.twin_key),
                                     keys.load_public(rig.root / "keys" / "pump.pub"))
    seen: dict[tuple[bytes, bytes], bytes] = {}
    for f in frames:
        kn = _key_nonce(f, secret, bundle.master_salt)
        ct = parse(f).ct
        assert seen.setdefault(kn, ct) == ct, "two plaintexts under one (key, nonce)"
    return len({k for k, _ in seen})


def _seal(state: Path, rig, tag: str, n: int) -> list[bytes]:
    dev = Device.load(rig.bundle("pump"), state)
    try:
        return [dev.seal({"run": tag, "i": i}) for i in range(n)]
    finally:
        dev.close()


def test_lost_and_restored_state_never_reuse_a_nonce(tmp_path: Path, backend_name: str) -> None:
    rig = twin_rig(tmp_path)
    state, backup = tmp_path / "state", tmp_path / "backup"
    frames = _seal(state, rig, "first", 5)
    shutil.copytree(state, backup)  # a backup taken after 5 frames
    frames += _seal(state, rig, "second", 5)
    shutil.rmtree(state)  # the state is lost: the next run starts again at 0
    frames += _seal(state, rig, "after-loss", 5)
    shutil.rmtree(state)
    shutil.copytree(backup, state)  # the old backup is restored: it names numbers used since
    frames += _seal(state, rig, "after-restore", 5)
    # Four runs; the first two share a context, each later run renewed its own.
    assert _assert_no_reuse(frames, rig) == 3
    with Twin(rig.db, rig.twin_key) as twin:
        results = twin.open_many(frames)
        assert [getattr(r, "reason", "stored") for r in results] == ["stored"] * len(frames)
        assert twin.store.count_readings() == len(frames)


def test_one_bundle_run_from_several_state_directories(tmp_path: Path,
                                                       backend_name: str) -> None:
    """The same bundle installed on two boards (two empty state directories) and a third copy
    started from a copy of the first one's state, all sealing at once: each renews to a context
    of its own, so the equal sequence numbers they use never share a nonce."""
    rig = twin_rig(tmp_path)
    dirs = [tmp_path / n for n in ("a", "b", "c")]
    _seal(dirs[0], rig, "setup", 3)
    shutil.copytree(dirs[0], dirs[2])
    devs = [Device.load(rig.bundle("pump"), d) for d in dirs]
    try:
        frames = [dev.seal({"from": k, "i": i}) for i in range(10) for k, dev in enumerate(devs)]
    finally:
        for dev in devs:
            dev.close()
    seqs = [{parse(f).seq for f in frames[k::3]} for k in range(3)]
    assert seqs[1] & seqs[2] == set(range(10))  # the fresh board and the copy: 0..9 both
    assert _assert_no_reuse(frames, rig) == 3
