"""Why an update was refused: one class per reason, each a :class:`~twinlink.TwinlinkError`.

The ``reason`` strings are stable (the CLI prints them, the future ``update.rejected``
telemetry carries them) and each matches one C error code of ``native/tl_update.h``
(:data:`C_CODES`). A refusal never changes anything on the device.
"""

from __future__ import annotations

from ..errors import BadSignature, StateError, TwinlinkError


class UpdateRefused(TwinlinkError):
    """Base of every refusal of a manifest or an image; nothing on the device changed."""

    reason = "update_refused"


class MalformedManifest(UpdateRefused, ValueError):
    """The manifest is not a strict, deterministically encoded twinlink update manifest."""

    reason = "malformed_manifest"


class UnknownCritical(MalformedManifest):
    """The manifest carries a critical field (a non-negative label), a version or an algorithm
    this device does not understand: fail closed."""

    reason = "unknown_critical"


class UntrustedKey(UpdateRefused, PermissionError):
    """The manifest names a signing key that is not one of the device's update keys."""

    reason = "untrusted_key"


class ManifestSignatureInvalid(UpdateRefused, BadSignature):
    """The Ed25519 signature does not verify under the named update key."""

    reason = "bad_signature"


class WrongVendor(UpdateRefused):
    """The manifest's vendor-id is not this device's."""

    reason = "wrong_vendor"


class WrongClass(UpdateRefused):
    """The manifest's class-id is not this device's (an image for another model)."""

    reason = "wrong_class"


class Rollback(UpdateRefused):
    """The manifest's sequence number is below the installed one."""

    reason = "rollback"


class SeqConflict(UpdateRefused):
    """The manifest repeats the installed sequence number for a different image."""

    reason = "seq_conflict"


class ImageTooLarge(UpdateRefused):
    """The manifest announces an image larger than the device accepts."""

    reason = "image_too_large"


class ImageSizeMismatch(UpdateRefused):
    """The image is shorter (truncated) or longer (oversize) than the manifest says."""

    reason = "size_mismatch"


class DigestMismatch(UpdateRefused):
    """The image's SHA-256 is not the manifest's digest."""

    reason = "digest_mismatch"


class InstallFailed(TwinlinkError):
    """The installer hook failed after the update was verified and recorded. The recorded
    sequence number stays (it never decreases); the same manifest runs the installer again."""

    reason = "install_failed"


class UpdateStateError(StateError):
    """The device's update record is unreadable or corrupt: refuse rather than forget what was
    installed (forgetting would re-open rollbacks)."""

    reason = "update_state"


#: reason -> C error code of native/tl_update.h (1 and 2 are tl_error.h's MALFORMED and
#: BAD_SIGNATURE).
C_CODES: dict[str, int] = {
    "malformed_manifest": 1,
    "bad_signature": 2,
    "untrusted_key": 32,
    "wrong_vendor": 33,
    "wrong_class": 34,
    "rollback": 35,
    "seq_conflict": 36,
    "digest_mismatch": 37,
    "size_mismatch": 38,
    "image_too_large": 39,
    "unknown_critical": 40,
}


class ChunkGap(TwinlinkError):
    """An image chunk starts past the end of what was received: a chunk is missing."""

    reason = "chunk_gap"
