"""Shared set-up for the update delivery tests: a twin with registered devices whose bundles
trust an update key, signed manifests, an installer that records its calls, and an in-process
"wire" that carries downlink frames to a device and its telemetry back to the twin."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosquitto import TwinRig, twin_rig
from nacl import bindings as nacl
from update_kit import image_bytes

from twinlink import Device, Twin, keys, update
from twinlink.errors import TwinlinkError
from twinlink.ingest.downlink import Downlinker

VENDOR, CLASS = "example.com", "pump-v2"


@dataclass
class UpdateRig:
    rig: TwinRig
    seed: bytes
    vendor_id: bytes = field(init=False)
    class_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.vendor_id = update.vendor_uuid(VENDOR)
        self.class_id = update.class_uuid(self.vendor_id, CLASS)

    def image(self, seq: int, size: int) -> bytes:
        return image_bytes(seq, size)

    def manifest(self, seq: int, image: bytes, *, seed: bytes | None = None,
                 **kw: Any) -> bytes:
        args: dict[str, Any] = {"vendor_id": self.vendor_id, "class_id": self.class_id,
                                "digest": hashlib.sha256(image).digest(), "size": len(image)}
        args.update(kw)
        return update.make_manifest(seed or self.seed, seq=seq, **args)

    def files(self, name: str, seq: int, size: int) -> tuple[Path, Path]:
        """(manifest file, image file) of update ``seq`` in the rig's directory."""
        img = self.image(seq, size)
        mpath, ipath = self.rig.root / f"fw-{seq}.manifest", self.rig.root / f"fw-{seq}.bin"
        mpath.write_bytes(self.manifest(seq, img))
        ipath.write_bytes(img)
        return mpath, ipath

    def bundle(self, name: str) -> Path:
        return self.rig.bundle(name)

    def snapshot(self) -> dict[str, bytes]:
        """The device's update state (record, staging) — what a refusal must not change."""
        return {p.name: p.read_bytes() for p in sorted(self.rig.state.glob("*"))
                if p.is_file() and (p.suffix in (".update", ".staging", ".manifest"))}


def update_rig(root: Path, names: tuple[str, ...] = ("pump",), window: int = 512) -> UpdateRig:
    """twin_rig's devices, each bundle trusting one fresh update key for VENDOR/CLASS."""
    rig = twin_rig(root, names, window)
    seed = os.urandom(32)
    pub = nacl.crypto_sign_seed_keypair(seed)[0]
    for name in names:
        path = rig.bundle(name)
        b = keys.Bundle.load(path)
        update.add_update_trust(b.settings, [pub], VENDOR, CLASS)
        b.save(path, overwrite=True)
    return UpdateRig(rig, seed)


class Installer:
    """Copies the verified image and records each call (the staging file goes afterwards)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.calls: list[int] = []

    def __call__(self, path: Path, m: Any) -> None:
        self.out.write_bytes(path.read_bytes())
        self.calls.append(m.seq)


class Collect:
    """A device link that keeps the frames the device sends (the wire hands them on)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


class Wire:
    """Moves downlink frames from ``twin`` to ``dev`` and telemetry back, in-process, with an
    optional ``tamper(frames) -> frames`` on the way down (drop, duplicate, reorder, corrupt)."""

    def __init__(self, twin: Twin, dev: Device, tamper: Any = None) -> None:
        self.twin, self.dev, self.tamper = twin, dev, tamper
        self.down = Downlinker(twin, resend_after=0.3, poll=0.0)
        self.link = Collect()
        dev.link = self.link
        self.refused: list[str] = []

    def up(self) -> None:
        frames, self.link.frames[:] = list(self.link.frames), []
        for f in frames:
            self.twin.open(f)

    def step(self) -> int:
        """One round: due frames down (tampered), the device's reports up; frames moved."""
        self.up()
        frames = [f for _kid, f in self.down.due(kids=[self.dev.kid])]
        if self.tamper is not None:
            frames = self.tamper(frames)
        for f in frames:
            try:
                self.dev.handle_downlink(f)
            except TwinlinkError as exc:
                self.refused.append(exc.reason)
        self.up()
        return len(frames)

    def run(self, name: str, rounds: int = 2000) -> dict[str, Any]:
        """Step until the twin shows the transfer applied or rejected; return its view."""
        import time

        for _ in range(rounds):
            view = self.twin.store.update_view(name)
            assert view is not None
            if view["status"] in ("applied", "rejected"):
                return view
            if not self.step():
                time.sleep(0.05)  # waiting for the twin's resend timer (0.3 s)
        raise AssertionError(f"update did not finish: {self.twin.store.update_view(name)}")
