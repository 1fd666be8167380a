"""twinlink: signed, encrypted, replay-proof CBOR telemetry for small devices and their twins.

import twinlink
dev = twinlink.Device.load("keys/pump-17.device", state_dir="state/")
frame = dev.seal({"temp": 21.5})
twin = twinlink.Twin("twin.db", twin_key="keys/twin.key")
reading = twin.open(frame)            # .device, .seq, .payload; raises TwinlinkError subclasses
"""

from __future__ import annotations

from . import backends as _backend
from .device import Device
from .errors import (
    BadSignature,
    DecryptionFailed,
    FrameTooLarge,
    KeyFileError,
    LineError,
    MalformedFrame,
    MalformedPayload,
    Replay,
    ReplayError,
    RevokedDevice,
    SequenceExhausted,
    StateError,
    StateLocked,
    TooOld,
    TopicMismatch,
    TransportError,
    TwinlinkError,
    UnknownDevice,
    WindowLost,
)
from .keys import Bundle, DeviceKey, TwinKey
from .twin import Reading, Twin

__all__ = [
    "BadSignature",
    "Bundle",
    "DecryptionFailed",
    "Device",
    "DeviceKey",
    "FrameTooLarge",
    "KeyFileError",
    "LineError",
    "MalformedFrame",
    "MalformedPayload",
    "Reading",
    "Replay",
    "ReplayError",
    "RevokedDevice",
    "SequenceExhausted",
    "StateError",
    "StateLocked",
    "TooOld",
    "TopicMismatch",
    "TransportError",
    "Twin",
    "TwinKey",
    "TwinlinkError",
    "UnknownDevice",
    "WindowLost",
    "backend",
    "__version__",
]


def backend() -> str:
    """The active frame backend: ``"native"`` (C core) or ``"python"`` (pure reference)."""
    return _backend.name()


def __getattr__(name: str) -> str:
    # The version is written once, in pyproject.toml, and read from the installed metadata on
    # first use: importlib.metadata costs ~25 ms, which a device's `import twinlink` need not pay.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib.metadata

    try:
        version = importlib.metadata.version("twinlink")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        version = "0+unknown"
    globals()["__version__"] = version
    return version
