"""The process tests/test_update_crash.py kills: stages images chunk by chunk, verifies and
installs them, and says each step on stdout (no pytest import: it starts fast)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from update_kit import Kit, image_bytes

from twinlink import keys, update
from twinlink.fileio import fsync_dir

PER_WORKER = 2
IMAGE_SIZE = 16 * 1024
CHUNK = 1024
#: Lines a worker prints per update: staged and install-chunk per chunk, verify, installed, done.
STEPS_PER_UPDATE = IMAGE_SIZE // CHUNK * 2 + 3


def manifest(kit: Kit, seq: int) -> bytes:
    return kit.manifest(seq, image_bytes(seq, IMAGE_SIZE))


def _say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def _installer(root: Path) -> update.Installer:
    def install(image: Path, m: update.Manifest) -> None:
        tmp, dest = root / "installed.tmp", root / "installed.bin"
        with open(image, "rb") as src, open(tmp, "wb") as out:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                out.write(chunk)
                _say("install-chunk", m.seq)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        fsync_dir(root)
        _say("installed", m.seq)

    return install


def stage_and_verify(kit: Kit, seq: int, say: bool) -> update.UpdateResult:
    raw = manifest(kit, seq)
    data = image_bytes(seq, IMAGE_SIZE)
    # What a delivery does first: authenticate and check the manifest, then take chunks.
    m, _ = update.check_manifest(update.trust_from_bundle(kit.bundle), kit.record(), raw)
    with update.ImageStaging(kit.root / "staging.bin", m) as stg:
        for off in range(stg.offset, len(data), CHUNK):
            stg.write(off, data[off:off + CHUNK])
            if say:
                _say("staged", seq, off)
        path = stg.finish()
    if say:
        _say("verify", seq)
    return kit.verify(raw, path, _installer(kit.root))


def worker(root: str, seed_hex: str, first: int, count: int) -> None:
    """Entry point of the process the test kills."""
    kit = _kit(Path(root), bytes.fromhex(seed_hex))
    for seq in range(first, first + count):
        stage_and_verify(kit, seq, True)
        _say("done", seq)


def _kit(root: Path, seed: bytes) -> Kit:
    path = root / "keys" / "pump.device"
    return Kit(root, path, keys.Bundle.load(path), root / "state", seed, keys.TwinKey(bytes(32)))
