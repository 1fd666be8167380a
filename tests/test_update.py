"""Update manifests and their verification on the device (twinlink.update).

Every refusal is checked for its reason *and* for leaving the device untouched: the state
directory and the bundle are byte-for-byte the same, and the installer was never called.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from update_kit import CLASS, VENDOR, Kit, make_kit, pub

from twinlink import KeyFileError, keys, update
from twinlink.errors import BadSignature, StateLocked
from twinlink.update import manifest as mf


class Recorder:
    """An installer hook that remembers what it was asked to install."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, bytes]] = []
        self.fail = fail

    def __call__(self, image: Path, m: update.Manifest) -> None:
        self.calls.append((m.seq, hashlib.sha256(image.read_bytes()).digest()))
        if self.fail:
            raise RuntimeError("flash write failed")


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    k = make_kit(tmp_path / "dev")
    img = k.image(5)
    assert k.verify(k.manifest(5, img), img, Recorder()).status == "installed"
    return k


# -- format ------------------------------------------------------------------------------------

def test_manifest_size_and_fields(kit: Kit):
    img = kit.image(6)
    raw = kit.manifest(6, img)
    assert len(raw) <= 256, len(raw)
    worst = update.make_manifest(kit.seed, seq=mf.MAX_UINT, vendor_id=kit.vendor_id,
                                 class_id=kit.class_id, digest=bytes(32), size=mf.MAX_UINT)
    assert len(worst) == 183  # every field at its widest: the documented bound
    m = update.authenticate(raw, [pub(kit.seed)])
    assert (m.seq, m.size, m.digest) == (6, 5000, hashlib.sha256(img.read_bytes()).digest())
    assert (m.vendor_id, m.class_id, m.uri, m.next_keys) == (kit.vendor_id, kit.class_id, None,
                                                             ())
    assert m.raw == raw and m.key_id == update.key_id(pub(kit.seed))
    assert raw[:5] == bytes.fromhex("d2844da201")  # tag 18, array(4), protected {1: -8, ...}


def test_suit_identifiers():
    # draft-ietf-suit-manifest's examples: vendor-id = UUIDv5(DNS namespace, "arm.com")
    assert str(uuid.UUID(bytes=update.vendor_uuid("arm.com"))) == \
        "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe"
    vid = update.vendor_uuid("example.com")
    assert update.class_uuid(vid, "pump-v2") == uuid.uuid5(uuid.UUID(bytes=vid), "pump-v2").bytes
    explicit = "12345678-1234-5678-1234-567812345678"
    assert update.vendor_uuid(explicit) == uuid.UUID(explicit).bytes
    with pytest.raises(ValueError):
        update.vendor_uuid("")


def test_encoding_is_deterministic():
    assert mf.encode({-1: 0, 24: 0, 1: 0}) == bytes.fromhex("a3" "0100" "181800" "2000")
    assert mf.encode([True, False, None, b"x", "y", -300]) == \
        bytes.fromhex("86f5f4f6417861793901" "2b")
    with pytest.raises(TypeError):
        mf.encode(1.5)


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_parse_never_raises_anything_else(data: bytes):
    try:
        update.parse(data)
    except update.MalformedManifest:
        pass


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_every_mutation_of_a_manifest_is_refused(data: st.DataObject):
    seed = bytes(range(32))
    raw = update.make_manifest(seed, seq=9, vendor_id=bytes(16), class_id=bytes(16),
                               digest=bytes(32), size=10, uri="https://x.example/fw")
    b = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    i = data.draw(st.integers(0, len(b) - 1))
    if kind == "flip":
        b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        del b[i:]
    else:
        b.insert(i, data.draw(st.integers(0, 255)))
    with pytest.raises(update.UpdateRefused):
        update.authenticate(bytes(b), [pub(seed)])


# -- the checks, one bad input each: nothing changes on the device -----------------------------

def _refused(kit: Kit, exc: type[Exception], manifest: bytes, image: Path) -> Any:
    before = kit.snapshot()
    hook = Recorder()
    with pytest.raises(exc) as info:
        kit.verify(manifest, image, hook)
    assert hook.calls == []
    assert kit.snapshot() == before
    assert kit.record().seq == 5  # type: ignore[union-attr]
    return info.value


def test_bad_signature(kit: Kit):
    img = kit.image(6)
    raw = bytearray(kit.manifest(6, img))
    raw[-1] ^= 0x40
    err = _refused(kit, update.ManifestSignatureInvalid, bytes(raw), img)
    assert err.reason == "bad_signature" and isinstance(err, BadSignature)


@pytest.mark.parametrize("signer", ["twin", "device", "stranger"])
def test_valid_signature_by_a_non_update_key(kit: Kit, signer: str):
    img = kit.image(6)
    assert kit.bundle.device_key is not None
    seed = {"twin": kit.twin.secret, "device": kit.bundle.device_key.seed,
            "stranger": os.urandom(32)}[signer]
    raw = kit.manifest(6, img, seed=seed)
    update.authenticate(raw, [pub(seed)])  # a perfectly good signature ...
    assert _refused(kit, update.UntrustedKey, raw, img).reason == "untrusted_key"  # ... by whom


def test_wrong_vendor(kit: Kit):
    img = kit.image(6)
    other = update.vendor_uuid("other.example")
    raw = kit.manifest(6, img, vendor_id=other, class_id=update.class_uuid(other, CLASS))
    assert _refused(kit, update.WrongVendor, raw, img).reason == "wrong_vendor"


def test_wrong_class(kit: Kit):
    img = kit.image(6)
    raw = kit.manifest(6, img, class_id=update.class_uuid(kit.vendor_id, "valve-v1"))
    assert _refused(kit, update.WrongClass, raw, img).reason == "wrong_class"


def test_manifest_for_another_devices_class_replayed(kit: Kit, tmp_path: Path):
    valve = make_kit(tmp_path / "valve", name="valve", cls="valve-v1", seed=kit.seed,
                     twin=kit.twin)
    img = valve.image(9)
    raw = valve.manifest(9, img)
    assert valve.verify(raw, img).status == "accepted"  # genuine, for the valve
    assert _refused(kit, update.WrongClass, raw, img).reason == "wrong_class"


def test_lower_seq(kit: Kit):
    img = kit.image(4)
    assert _refused(kit, update.Rollback, kit.manifest(4, img), img).reason == "rollback"


def test_equal_seq_with_a_different_digest(kit: Kit):
    img = kit.image(55)
    assert _refused(kit, update.SeqConflict, kit.manifest(5, img), img).reason == "seq_conflict"


def test_equal_seq_same_image_is_a_no_op(kit: Kit):
    img = kit.image(5)
    before, hook = kit.snapshot(), Recorder()
    res = kit.verify(kit.manifest(5, img), img, hook)
    assert (res.status, res.seq, res.previous_seq) == ("already_installed", 5, 5)
    assert hook.calls == [] and kit.snapshot() == before


def test_digest_mismatch(kit: Kit):
    img = kit.image(6)
    raw = kit.manifest(6, img)
    data = bytearray(img.read_bytes())
    data[1234] ^= 1
    img.write_bytes(bytes(data))
    assert _refused(kit, update.DigestMismatch, raw, img).reason == "digest_mismatch"


def test_truncated_image(kit: Kit):
    img = kit.image(6)
    raw = kit.manifest(6, img)
    img.write_bytes(img.read_bytes()[:-1])
    assert _refused(kit, update.ImageSizeMismatch, raw, img).reason == "size_mismatch"


def test_oversize_image(kit: Kit):
    img = kit.image(6)
    raw = kit.manifest(6, img)
    with open(img, "ab") as fh:
        fh.write(b"\0" * 100_000)
    assert _refused(kit, update.ImageSizeMismatch, raw, img).reason == "size_mismatch"


def test_image_over_the_device_capacity(tmp_path: Path):
    k = make_kit(tmp_path / "small", max_image=4096)
    img = k.image(1, size=4097)
    with pytest.raises(update.ImageTooLarge):
        k.verify(k.manifest(1, img), img)
    assert k.record() is None


def test_unknown_critical_field(kit: Kit):
    img = kit.image(6)
    fields = mf.payload_fields(6, kit.vendor_id, kit.class_id,
                               hashlib.sha256(img.read_bytes()).digest(), 5000)
    fields[99] = 1
    raw = mf.sign_payload(kit.seed, mf.encode(fields))
    assert _refused(kit, update.UnknownCritical, raw, img).reason == "unknown_critical"
    fields.pop(99)
    fields[-99] = {"note": "ignored"}  # a negative label is an optional extension
    assert kit.verify(mf.sign_payload(kit.seed, mf.encode(fields)), img).seq == 6


def test_unreadable_image_changes_nothing(kit: Kit):
    img = kit.image(6)
    raw = kit.manifest(6, img)
    before = kit.snapshot()
    with pytest.raises(OSError):
        kit.verify(raw, kit.root / "missing.bin")
    with pytest.raises(OSError):
        kit.verify(raw, kit.root)  # a directory
    assert kit.snapshot() == before


# -- recording and the installer ---------------------------------------------------------------

def test_seq_is_recorded_before_the_installer_runs(kit: Kit):
    img = kit.image(7)
    seen: list[Any] = []
    kit.verify(kit.manifest(7, img), img, lambda path, m: seen.append(kit.record()))
    assert seen[0].seq == 7 and seen[0].installed is False  # persisted first ...
    rec = kit.record()
    assert rec is not None and rec.installed and rec.seq == 7  # ... then marked installed


def test_failed_installer_keeps_the_seq_and_retries(kit: Kit):
    img = kit.image(7)
    raw = kit.manifest(7, img)
    with pytest.raises(update.InstallFailed):
        kit.verify(raw, img, Recorder(fail=True))
    rec = kit.record()
    assert rec is not None and (rec.seq, rec.installed) == (7, False)
    old = kit.image(6)
    with pytest.raises(update.Rollback):  # the floor moved even though the install failed
        kit.verify(kit.manifest(6, old), old)
    hook = Recorder()
    assert kit.verify(raw, img, hook).status == "installed"
    assert [s for s, _ in hook.calls] == [7]
    assert kit.verify(raw, img, hook).status == "already_installed"


def test_no_installer_accepts(kit: Kit):
    img = kit.image(8)
    res = kit.verify(kit.manifest(8, img), img)
    assert res.status == "accepted" and res.to_json()["ok"] is True
    assert kit.record().installed  # type: ignore[union-attr]


def test_damaged_record_is_refused_not_forgotten(kit: Kit):
    store = update.RecordStore(kit.state, kit.bundle)
    text = store.path.read_text()
    store.path.write_text(text.replace('"seq": 5', '"seq": 1'))
    img = kit.image(6)
    with pytest.raises(update.UpdateStateError):
        kit.verify(kit.manifest(6, img), img)
    store.path.write_text(text[: len(text) // 2])  # torn
    with pytest.raises(update.UpdateStateError):
        store.load()


def test_leftover_temp_file_is_ignored(kit: Kit):
    store = update.RecordStore(kit.state, kit.bundle)
    (store.path.parent / f".{store.path.name}.99999.tmp").write_text('{"seq": 0')
    assert store.load().seq == 5  # type: ignore[union-attr]


def test_second_process_is_locked_out(kit: Kit):
    store = update.RecordStore(kit.state, kit.bundle)
    fd = os.open(f"{store.path}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        img = kit.image(6)
        with pytest.raises(StateLocked):
            kit.verify(kit.manifest(6, img), img)
    finally:
        os.close(fd)


# -- trust and key rotation --------------------------------------------------------------------

def test_key_rotation(kit: Kit):
    new_seed = os.urandom(32)
    img = kit.image(6)
    res = kit.verify(kit.manifest(6, img, next_keys=[pub(new_seed)]), img)
    assert res.keys_rotated
    assert kit.record().keys == (pub(new_seed),)  # type: ignore[union-attr]
    img7 = kit.image(7)
    with pytest.raises(update.UntrustedKey):  # the old key is retired
        kit.verify(kit.manifest(7, img7), img7)
    assert kit.verify(kit.manifest(7, img7, seed=new_seed), img7).seq == 7
    assert kit.record().keys == (pub(new_seed),)  # type: ignore[union-attr]


def test_rotation_must_be_signed_by_a_trusted_key(kit: Kit):
    img = kit.image(6)
    attacker = os.urandom(32)
    raw = kit.manifest(6, img, seed=attacker, next_keys=[pub(attacker)])
    _refused(kit, update.UntrustedKey, raw, img)


def test_add_update_trust_validates(tmp_path: Path):
    s: dict[str, Any] = {"stream": "t"}
    out = update.add_update_trust(s, [pub(b"\1" * 32)], VENDOR, CLASS, 1 << 20)
    assert out is s and s["update"]["vendor"] == VENDOR and s["update"]["max_image"] == 1 << 20
    with pytest.raises(ValueError):
        update.add_update_trust({}, [], VENDOR, CLASS)
    with pytest.raises(ValueError):
        update.add_update_trust({}, [pub(b"\1" * 32)] * 2, VENDOR, CLASS)
    with pytest.raises(keys.InvalidPublicKey):
        update.add_update_trust({}, [bytes(32)], VENDOR, CLASS)
    with pytest.raises(ValueError):
        update.add_update_trust({}, [pub(b"\1" * 32)], VENDOR, "")


def test_bundle_without_trust_or_trusting_its_own_key(tmp_path: Path):
    k = make_kit(tmp_path / "d")
    img = k.image(1)
    raw = k.manifest(1, img)
    k.bundle.settings.pop("update")
    with pytest.raises(KeyFileError, match="no update keys"):
        k.verify(raw, img)
    assert k.bundle.device_key is not None
    update.add_update_trust(k.bundle.settings, [k.bundle.device_key.public], VENDOR, CLASS)
    with pytest.raises(KeyFileError, match="own key"):
        k.verify(raw, img)
    assert k.record() is None


def test_generate_key(tmp_path: Path):
    key_path, pub_path, public = update.generate_key(tmp_path / "k")
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert keys.load_public(pub_path, "ed25519") == public
    assert pub(update.load_update_key(key_path)) == public
    with pytest.raises(KeyFileError):
        update.generate_key(tmp_path / "k")  # never overwrites a key


# -- streaming and staging (what the chunked delivery will feed) -------------------------------

def _staging_manifest(kit: Kit, data: bytes) -> update.Manifest:
    return update.authenticate(kit.manifest(6, data), [pub(kit.seed)])


def test_staging_in_chunks_with_duplicates_and_gaps(kit: Kit):
    data = os.urandom(10_000)
    m = _staging_manifest(kit, data)
    path = kit.root / "stage.bin"
    with update.ImageStaging(path, m) as stg:
        assert stg.write(0, data[:4000]) is True
        assert stg.write(0, data[:4000]) is False  # duplicate
        with pytest.raises(update.ChunkGap):
            stg.write(5000, data[5000:6000])
        assert stg.write(3000, data[3000:6000]) is True  # overlap: only the new tail
        assert stg.offset == 6000
        with pytest.raises(update.ImageSizeMismatch):
            stg.write(6000, data[6000:] + b"x")  # past the signed size: refused whole
        assert stg.offset == 6000 and path.stat().st_size == 6000
        stg.write(6000, data[6000:])
        assert stg.finish() == path
    assert path.read_bytes() == data
    assert kit.verify(m.raw, path).seq == 6


def test_staging_resumes_after_a_restart(kit: Kit):
    data = os.urandom(10_000)
    m = _staging_manifest(kit, data)
    path = kit.root / "stage.bin"
    with update.ImageStaging(path, m) as stg:
        stg.write(0, data[:7000])
        stg.sync()
    with update.ImageStaging(path, m) as stg:  # the device restarted
        assert stg.offset == 7000
        stg.write(7000, data[7000:])
        stg.finish()
    other = _staging_manifest(kit, data[:5000])
    with update.ImageStaging(path, other) as stg:  # another manifest starts over
        assert stg.offset == 0
        stg.discard()
    assert not path.exists()


def test_staging_corrupted_chunk_fails_at_finish(kit: Kit):
    data = os.urandom(3000)
    m = _staging_manifest(kit, data)
    with update.ImageStaging(kit.root / "s.bin", m) as stg:
        stg.write(0, data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
        with pytest.raises(update.DigestMismatch):
            stg.finish()
        with pytest.raises(update.ImageSizeMismatch):
            update.ImageVerifier.for_manifest(m).finish()  # nothing received


def test_reasons_match_the_c_codes():
    classes = [update.MalformedManifest, update.ManifestSignatureInvalid, update.UntrustedKey,
               update.WrongVendor, update.WrongClass, update.Rollback, update.SeqConflict,
               update.DigestMismatch, update.ImageSizeMismatch, update.ImageTooLarge,
               update.UnknownCritical]
    assert sorted(c.reason for c in classes) == sorted(update.C_CODES)
    header = (Path(__file__).parents[1] / "native" / "tl_update.h").read_text()
    for reason, code in update.C_CODES.items():
        if code > 2:
            assert re.search(rf"#define TL_E_UPDATE_\w+ {code}\s+/\* \"{reason}\"", header), reason


def test_pynacl_adapter_sha256_streams_like_hashlib():
    """The CPython build binds tl_crypto_sha256_* to PyNaCl's libsodium (native/
    tl_crypto_pynacl.c); hashed in uneven pieces it must equal hashlib."""
    import ctypes

    from twinlink import backends

    previous = backends.name()
    try:
        backends.use("native")  # imports and binds the extension
    except ImportError:
        pytest.skip(f"native backend not built: {backends.native_error()}")
    finally:
        backends.use(previous)
    from twinlink import _native  # type: ignore[attr-defined]

    lib = ctypes.CDLL(_native.__file__)  # the loaded extension: its adapter is bound
    data = os.urandom(10_000)
    state, out = ctypes.create_string_buffer(128), ctypes.create_string_buffer(32)
    assert lib.tl_crypto_sha256_init(state) == 0
    for a, b in ((0, 1), (1, 64), (64, 65), (65, 9000), (9000, 10_000)):
        assert lib.tl_crypto_sha256_update(state, data[a:b], ctypes.c_size_t(b - a)) == 0
    assert lib.tl_crypto_sha256_final(state, out) == 0
    assert out.raw == hashlib.sha256(data).digest()
