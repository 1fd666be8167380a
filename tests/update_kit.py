"""Shared set-up for the update tests: a provisioned device that trusts an update key, images,
manifests, and a snapshot of everything the device keeps (to prove a refusal changed nothing)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl import bindings as nacl

from twinlink import keys, update
from twinlink.provision import provision

VENDOR, CLASS = "example.com", "pump-v2"


def pub(seed: bytes) -> bytes:
    return nacl.crypto_sign_seed_keypair(seed)[0]


def image_bytes(seq: int, size: int = 5000) -> bytes:
    """Deterministic image content for a seq (different per seq)."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"image {seq} block {block}".encode()).digest()
        block += 1
    return bytes(out[:size])


@dataclass
class Kit:
    root: Path
    bundle_path: Path
    bundle: keys.Bundle
    state: Path
    seed: bytes
    twin: keys.TwinKey
    vendor_id: bytes = field(init=False)
    class_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.vendor_id = update.vendor_uuid(VENDOR)
        self.class_id = update.class_uuid(self.vendor_id, CLASS)

    def image(self, seq: int, size: int = 5000, name: str | None = None) -> Path:
        path = self.root / (name or f"image-{seq}.bin")
        path.write_bytes(image_bytes(seq, size))
        return path

    def manifest(self, seq: int, image: Path | bytes, *, seed: bytes | None = None,
                 **kw: Any) -> bytes:
        data = image.read_bytes() if isinstance(image, Path) else image
        args: dict[str, Any] = {"vendor_id": self.vendor_id, "class_id": self.class_id,
                                "digest": hashlib.sha256(data).digest(), "size": len(data)}
        args.update(kw)
        return update.make_manifest(seed or self.seed, seq=seq, **args)

    def verify(self, manifest: bytes, image: Path, installer: Any = None
               ) -> update.UpdateResult:
        return update.verify_and_record(self.bundle, self.state, manifest, image, installer)

    def record(self) -> update.InstallRecord | None:
        return update.RecordStore(self.state, self.bundle).load()

    def snapshot(self) -> dict[str, bytes]:
        """Every file the device keeps (state dir, bundle) with its bytes."""
        files = {str(p.relative_to(self.root)): p.read_bytes()
                 for p in sorted(self.state.rglob("*")) if p.is_file()}
        files["bundle"] = self.bundle_path.read_bytes()
        return files


def make_kit(root: Path, name: str = "pump", cls: str = CLASS, max_image: int | None = None,
             seed: bytes | None = None, twin: keys.TwinKey | None = None) -> Kit:
    """A device ``name`` of class ``cls`` trusting one update key (``seed``, new if None)."""
    twin = twin or keys.TwinKey.generate()
    seed = seed or os.urandom(32)
    root.mkdir(parents=True, exist_ok=True)
    settings = update.add_update_trust({}, [pub(seed)], VENDOR, cls, max_image)
    provision(name, twin.public, root / "keys", settings=dict(settings), force=True)
    path = root / "keys" / f"{name}.device"
    kit = Kit(root, path, keys.Bundle.load(path), root / "state", seed, twin)
    kit.class_id = update.class_uuid(kit.vendor_id, cls)
    return kit
