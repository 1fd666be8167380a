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

__version__ = "0.1.0"

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
