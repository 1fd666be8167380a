"""The exception hierarchy: one base, one class per way a frame or an operation can fail.

Every error that bytes from a wire can cause is a :class:`TwinlinkError` subclass; callers may
catch the base and switch on :attr:`TwinlinkError.reason`, the stable string that the CLI prints
and the twin store records as a security event. Messages never contain key material.
"""

from __future__ import annotations


class TwinlinkError(Exception):
    """Base of every error twinlink raises on purpose."""

    #: Stable machine-readable reason, used by the CLI's JSON output and the security-event log.
    reason = "error"


class MalformedFrame(TwinlinkError, ValueError):
    """The bytes are not a well-formed, deterministically encoded twinlink/1 frame."""

    reason = "malformed"


class UnknownDevice(TwinlinkError, LookupError):
    """The frame's kid (or the topic) names no device registered with this twin."""

    reason = "unknown_device"


class RevokedDevice(TwinlinkError, PermissionError):
    """The device is registered but has been revoked: its frames are refused."""

    reason = "revoked"


class BadSignature(TwinlinkError, ValueError):
    """The Ed25519 signature does not verify under the registered device key."""

    reason = "bad_signature"


class DecryptionFailed(TwinlinkError, ValueError):
    """The ChaCha20-Poly1305 tag does not verify: wrong key, wrong nonce or altered ciphertext."""

    reason = "decrypt_failed"


class ReplayError(TwinlinkError):
    """Base of the replay-window refusals."""

    reason = "replay"


class Replay(ReplayError):
    """The sequence number was already accepted from this device."""

    reason = "replay"


class TooOld(ReplayError):
    """The sequence number lies below the device's replay window; it can no longer be checked."""

    reason = "too_old"


class WindowLost(ReplayError):
    """The device's replay-window state is missing; an operator must re-anchor it."""

    reason = "window_lost"


class Conflict(ReplayError):
    """The sequence number was already stored with *different* content: evidence of a cloned
    device or a lost sender state (a nonce reuse on the wire). Never acknowledged."""

    reason = "conflict"


class ContextRetired(TwinlinkError):
    """The frame was sealed under a security context the twin has retired (the device renewed
    its context, or an operator re-keyed it)."""

    reason = "context_retired"


class InternalError(TwinlinkError):
    """Something unexpected failed while processing one frame (a bug, or a resource failure):
    the frame is refused and the failure logged with its traceback; the batch goes on."""

    reason = "internal_error"


class MalformedPayload(TwinlinkError, ValueError):
    """The authenticated plaintext is not valid CBOR (or not a valid SenML pack)."""

    reason = "bad_payload"


class TopicMismatch(TwinlinkError):
    """A transport's address (MQTT topic) names another device than the frame's kid."""

    reason = "topic_mismatch"


class KeyFileError(TwinlinkError, ValueError):
    """A key or bundle file cannot be read, is malformed, or has unsafe permissions."""

    reason = "key_file"


class StateError(TwinlinkError):
    """Persistent sender state is unusable (corrupt, or locked by another process)."""

    reason = "state"


class StateLocked(StateError):
    """Another process holds the sequence-number lock of this device identity."""

    reason = "state_locked"


class SequenceExhausted(TwinlinkError):
    """The sender reached the last sequence number (2**40 - 1) of this security context."""

    reason = "seq_exhausted"


class FrameTooLarge(TwinlinkError, ValueError):
    """A reading or frame exceeds the configured maximum size."""

    reason = "too_large"


class TransportError(TwinlinkError, OSError):
    """A link could not be opened, read or written within its timeout."""

    reason = "transport"


class LineError(TwinlinkError, ValueError):
    """A serial record failed COBS decoding or its CRC: line noise, not an attack."""

    reason = "line"


class RecordTooLong(LineError):
    """A serial record longer than the link's maximum frame: discarded unread. The twin's
    serial ingest refuses it as ``too_large`` (``frame.oversize``), not as line noise."""
