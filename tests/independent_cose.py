"""An independent COSE / twinlink/1 checker that shares no code with twinlink.

Built only from the RFC text on other libraries: cbor2 decodes and encodes, ``cryptography``
does Ed25519/Ed448/ES256, X25519, HKDF-SHA256 and ChaCha20-Poly1305. The Edwards→Montgomery
map (RFC 7748 §4.1: u = (1 + y) / (1 - y) mod p) is computed here with Python integers because
``cryptography`` has no such conversion. Nothing here imports ``twinlink``: a bug shared by the
pure and native backends cannot hide from this module.

Every check raises :class:`CheckFailed` (never returns False).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# COSE labels and algorithms (RFC 9052 §3.1, RFC 9053, RFC 9864; kid context RFC 8613 §6.1)
H_ALG, H_KID, H_IV, H_PIV, H_KID_CONTEXT = 1, 4, 5, 6, 10
ALG_ES256, ALG_EDDSA, ALG_ED25519, ALG_CHACHA = -7, -8, -19, 24
TAG_SIGN1, TAG_SIGN, TAG_ENCRYPT0, TAG_ENCRYPT = 18, 98, 16, 96

P = 2**255 - 19
D = (-121665 * pow(121666, P - 2, P)) % P  # edwards25519 curve constant (RFC 8032 §5.1)


class CheckFailed(Exception):
    """The message is malformed, the signature does not verify, or the tag does not verify."""


# -- CBOR helpers ----------------------------------------------------------------------------

def _untag(obj: Any, tag: int, tagged: bool | None) -> list[Any]:
    """Strip COSE tag ``tag``; ``tagged`` True requires it, False forbids it, None allows both.

    cbor2 >= 6 returns tuples inside tags and lists outside them: accept both.
    """
    if isinstance(obj, cbor2.CBORTag):
        if tagged is False or obj.tag != tag:
            raise CheckFailed(f"unexpected CBOR tag {obj.tag} (want {tag if tagged else 'none'})")
        obj = obj.value
    elif tagged:
        raise CheckFailed(f"message is not tagged {tag}")
    if not isinstance(obj, (list, tuple)):
        raise CheckFailed("COSE message is not an array")
    return list(obj)


def _headers(protected: Any, unprotected: Any) -> dict[Any, Any]:
    """Merge protected (bstr-wrapped map, h'' = empty) and unprotected header maps.

    cbor2 >= 6 returns immutable mappings (frozendict) inside tags: accept any Mapping.
    """
    if not isinstance(protected, bytes) or not isinstance(unprotected, Mapping):
        raise CheckFailed("header buckets have the wrong types")
    prot = cbor2.loads(protected) if protected else {}
    if not isinstance(prot, Mapping):
        raise CheckFailed("protected header is not a map")
    if set(prot) & set(unprotected):
        raise CheckFailed("a label appears in both header buckets")
    return {**unprotected, **prot}


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- signatures ------------------------------------------------------------------------------

def public_key_from_jwk(jwk: dict[str, str]) -> Any:
    """A ``cryptography`` public key from a cose-wg example key (OKP or EC P-256)."""
    if jwk["kty"] == "OKP":
        raw = bytes.fromhex(jwk["x_hex"]) if "x_hex" in jwk else _b64url(jwk["x"])
        cls = {"Ed25519": ed25519.Ed25519PublicKey, "Ed448": ed448.Ed448PublicKey}[jwk["crv"]]
        return cls.from_public_bytes(raw)
    if jwk["kty"] == "EC" and jwk["crv"] == "P-256":
        x, y = (int.from_bytes(_b64url(jwk[c]), "big") for c in ("x", "y"))
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raise ValueError(f"unsupported key type {jwk['kty']}/{jwk.get('crv')}")


def _verify(alg: Any, public_key: Any, signature: bytes, to_be_signed: bytes) -> None:
    try:
        if alg in (ALG_EDDSA, ALG_ED25519) and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, to_be_signed)
        elif alg == ALG_EDDSA and isinstance(public_key, ed448.Ed448PublicKey):
            public_key.verify(signature, to_be_signed)
        elif alg == ALG_ES256 and isinstance(public_key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                raise CheckFailed("ES256 signature is not 64 bytes")
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            public_key.verify(der, to_be_signed, ec.ECDSA(hashes.SHA256()))
        else:
            raise CheckFailed(f"algorithm {alg!r} is unknown or does not fit the key")
    except InvalidSignature:
        raise CheckFailed("signature does not verify") from None


def _bucket(protected: bytes) -> bytes:
    """Protected bytes as they enter a structure: an empty map (h'a0') counts as h''.

    RFC 9052 §3: recipients MUST accept h'a0' for "no protected headers", and h'' is the form
    used in the structures that are signed or authenticated (cose-wg sign-pass-01).
    """
    return b"" if protected and not cbor2.loads(protected) else protected


def sign1_to_be_signed(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """RFC 9052 §4.4 Sig_structure for COSE_Sign1."""
    return cbor2.dumps(["Signature1", _bucket(protected), external_aad, payload])


def verify_sign1(msg_bytes: bytes, public_key: Any, external_aad: bytes = b"",
                 tagged: bool | None = True) -> bytes:
    """Verify a COSE_Sign1 (EdDSA, Ed25519 or ES256); return its payload.

    ``public_key`` is a ``cryptography`` public key or 32 raw Ed25519 bytes.
    """
    if isinstance(public_key, bytes):
        public_key = ed25519.Ed25519PublicKey.from_public_bytes(public_key)
    try:
        items = _untag(cbor2.loads(msg_bytes), TAG_SIGN1, tagged)
    except (ValueError, cbor2.CBORDecodeError) as exc:
        raise CheckFailed(f"not CBOR: {exc}") from None
    if len(items) != 4:
        raise CheckFailed("COSE_Sign1 is not a 4-element array")
    protected, unprotected, payload, signature = items
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise CheckFailed("payload or signature is not a byte string")
    alg = _headers(protected, unprotected).get(H_ALG)
    _verify(alg, public_key, signature, sign1_to_be_signed(protected, external_aad, payload))
    return payload


def verify_sign(msg_bytes: bytes, public_key: Any, external_aad: bytes = b"") -> bytes:
    """Verify every signer of a tagged COSE_Sign (RFC 9052 §4.1) with ``public_key``."""
    items = _untag(cbor2.loads(msg_bytes), TAG_SIGN, True)
    if len(items) != 4:
        raise CheckFailed("COSE_Sign is not a 4-element array")
    body_prot, body_unprot, payload, signers = items
    _headers(body_prot, body_unprot)
    if not signers:
        raise CheckFailed("COSE_Sign without signers")
    for signer in signers:
        sign_prot, sign_unprot, signature = signer
        alg = _headers(sign_prot, sign_unprot).get(H_ALG)
        tbs = cbor2.dumps(["Signature", _bucket(body_prot), _bucket(sign_prot), external_aad,
                           payload])
        _verify(alg, public_key, signature, tbs)
    return payload  # type: ignore[no-any-return]


# -- encryption ------------------------------------------------------------------------------

def _chacha_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise CheckFailed("AEAD tag does not verify") from None


def decrypt_encrypt0(msg_bytes: bytes, key: bytes, nonce: bytes | None = None,
                     external_aad: bytes = b"", tagged: bool | None = True) -> bytes:
    """Decrypt a ChaCha20/Poly1305 COSE_Encrypt0; ``nonce`` None takes the IV header (5)."""
    items = _untag(cbor2.loads(msg_bytes), TAG_ENCRYPT0, tagged)
    if len(items) != 3:
        raise CheckFailed("COSE_Encrypt0 is not a 3-element array")
    protected, unprotected, ciphertext = items
    headers = _headers(protected, unprotected)
    if headers.get(H_ALG) != ALG_CHACHA:
        raise CheckFailed("content algorithm is not ChaCha20/Poly1305 (24)")
    nonce = headers.get(H_IV) if nonce is None else nonce
    aad = cbor2.dumps(["Encrypt0", _bucket(protected), external_aad])
    return _chacha_open(key, nonce, ciphertext, aad)


def decrypt_encrypt_direct(msg_bytes: bytes, key: bytes, external_aad: bytes = b"") -> bytes:
    """Decrypt a tagged COSE_Encrypt (RFC 9052 §5.1) whose recipient uses 'direct' (-6)."""
    items = _untag(cbor2.loads(msg_bytes), TAG_ENCRYPT, True)
    if len(items) != 4:
        raise CheckFailed("COSE_Encrypt is not a 4-element array")
    protected, unprotected, ciphertext, recipients = items
    headers = _headers(protected, unprotected)
    if headers.get(H_ALG) != ALG_CHACHA:
        raise CheckFailed("content algorithm is not ChaCha20/Poly1305 (24)")
    if [_headers(r[0], r[1]).get(H_ALG) for r in recipients] != [-6]:
        raise CheckFailed("expected exactly one 'direct' recipient")
    aad = cbor2.dumps(["Encrypt", _bucket(protected), external_aad])
    return _chacha_open(key, headers[H_IV], ciphertext, aad)


# -- twinlink/1 from the specification -------------------------------------------------------

def ed25519_public_to_x25519(public: bytes) -> bytes:
    """The Montgomery u-coordinate of an Ed25519 public key: u = (1 + y) / (1 - y) mod p.

    Rejects encodings that are not points of the curve, y ≥ p, and y = 1.
    """
    if len(public) != 32:
        raise CheckFailed("an Ed25519 public key is 32 bytes")
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    if y >= P or y == 1:
        raise CheckFailed("Ed25519 public key is not a usable point")
    # x² = (y² - 1) / (d·y² + 1) must be a square mod p for the encoding to be a point.
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 and pow(x2, (P - 1) // 2, P) != 1:
        raise CheckFailed("Ed25519 public key is not on the curve")
    u = (1 + y) * pow(1 - y, P - 2, P) % P
    return u.to_bytes(32, "little")


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) from ``cryptography``; empty salt = HashLen zero bytes."""
    return HKDF(hashes.SHA256(), length, salt or None, info).derive(ikm)


@dataclass(frozen=True)
class Context:
    """Symmetric keys of one direction (sender ``kid``) of a twinlink/1 pairwise context."""

    master_secret: bytes
    key: bytes
    common_iv: bytes
    info_key: bytes
    info_iv: bytes


def derive(master_secret: bytes, kid: bytes, master_salt: bytes = b"",
           id_context: bytes | None = None) -> Context:
    """RFC 8613 §3.2.1 key schedule with alg 24: a 32-byte key and a 12-byte Common IV."""
    info_key = cbor2.dumps([kid, id_context, ALG_CHACHA, "Key", 32])
    info_iv = cbor2.dumps([b"", id_context, ALG_CHACHA, "IV", 12])
    return Context(master_secret, hkdf(master_salt, master_secret, info_key, 32),
                   hkdf(master_salt, master_secret, info_iv, 12), info_key, info_iv)


def twin_master_secret(twin_secret: bytes, device_public: bytes) -> bytes:
    """The twin side of the key agreement: X25519(twin secret, device key's Montgomery form)."""
    peer = x25519.X25519PublicKey.from_public_bytes(ed25519_public_to_x25519(device_public))
    return x25519.X25519PrivateKey.from_private_bytes(twin_secret).exchange(peer)


def nonce(common_iv: bytes, kid: bytes, piv: bytes) -> bytes:
    """RFC 8613 §5.2 nonce for a 12-byte IV: IV XOR (len(kid) | pad6(kid) | pad5(PIV))."""
    block = bytes([len(kid)]) + bytes(6 - len(kid)) + kid + bytes(5 - len(piv)) + piv
    return bytes(a ^ b for a, b in zip(block, common_iv))


def external_aad(kid: bytes, piv: bytes, stream: bytes) -> bytes:
    """twinlink/1 external_aad: the CBOR array [1, [24, -8], kid, PIV, stream]."""
    return cbor2.dumps([1, [ALG_CHACHA, ALG_EDDSA], kid, piv, stream])


def piv_of(seq: int) -> bytes:
    return seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")


@dataclass(frozen=True)
class Opened:
    kid: bytes
    seq: int
    piv: bytes
    plaintext: bytes
    nonce: bytes
    external_aad: bytes
    kid_context: bytes | None = None


def open_twinlink(frame: bytes, device_public: bytes, twin_secret: bytes, kid: bytes,
                  stream: bytes = b"t", master_salt: bytes = b"",
                  id_context: bytes | None = None) -> Opened:
    """Open a twinlink/1 frame: verify the COSE_Sign1 with the device key, then decrypt.

    Only the device's Ed25519 public key, the twin's X25519 secret, the kid and the stream name
    are needed; every other value is derived as the specification says. A frame whose
    protected header names a kid context (label 10) is derived with that ID Context; it must
    agree with ``id_context`` when one is given.
    """
    items = _untag(cbor2.loads(frame), TAG_SIGN1, True)
    if len(items) != 4:
        raise CheckFailed("COSE_Sign1 is not a 4-element array")
    protected, unprotected, payload, _sig = items
    headers = _headers(protected, unprotected)
    if headers.get(H_KID) != kid or headers.get(H_ALG) not in (ALG_EDDSA, ALG_ED25519):
        raise CheckFailed("outer header does not carry this kid and EdDSA")
    prot_map = cbor2.loads(protected)
    kid_context = prot_map.get(H_KID_CONTEXT)
    if H_KID_CONTEXT in unprotected:
        raise CheckFailed("a kid context must be protected (covered by the signature)")
    if kid_context is not None:
        if not isinstance(kid_context, bytes) or not 1 <= len(kid_context) <= 16:
            raise CheckFailed("kid context is not a byte string of 1 to 16 bytes")
        if id_context is not None and kid_context != id_context:
            raise CheckFailed("frame names another ID Context than the expected one")
        id_context = kid_context
    enc0 = _untag(cbor2.loads(payload), TAG_ENCRYPT0, True)
    if len(enc0) != 3:
        raise CheckFailed("COSE_Encrypt0 is not a 3-element array")
    piv = _headers(enc0[0], enc0[1]).get(H_PIV)
    if not isinstance(piv, bytes) or not 1 <= len(piv) <= 5 or (len(piv) > 1 and piv[0] == 0):
        raise CheckFailed("Partial IV is missing or badly encoded")
    aad = external_aad(kid, piv, stream)
    verify_sign1(frame, device_public, aad, tagged=True)
    ctx = derive(twin_master_secret(twin_secret, device_public), kid, master_salt, id_context)
    n = nonce(ctx.common_iv, kid, piv)
    plaintext = decrypt_encrypt0(payload, ctx.key, n, aad, tagged=True)
    return Opened(kid, int.from_bytes(piv, "big"), piv, plaintext, n, aad, kid_context)


def seal_twinlink(device_seed: bytes, twin_public: bytes, kid: bytes, seq: int, plaintext: bytes,
                  stream: bytes = b"t", master_salt: bytes = b"",
                  id_context: bytes | None = None, kid_context: bool = False) -> bytes:
    """Build a twinlink/1 frame from the specification alone (the device side).

    ``kid_context``: name the ID Context in the protected header (label 10)."""
    sk = ed25519.Ed25519PrivateKey.from_private_bytes(device_seed)
    public = sk.public_key().public_bytes_raw()
    # The device's X25519 secret is the clamped first half of SHA-512(seed) (RFC 8032 §5.1.5);
    # X25519 clamps it again, so the SHA-512 half can be used as is.
    digest = hashes.Hash(hashes.SHA512())
    digest.update(device_seed)
    xsk = x25519.X25519PrivateKey.from_private_bytes(digest.finalize()[:32])
    secret = xsk.exchange(x25519.X25519PublicKey.from_public_bytes(twin_public))
    assert ed25519_public_to_x25519(public) == xsk.public_key().public_bytes_raw()
    ctx = derive(secret, kid, master_salt, id_context)
    piv = piv_of(seq)
    aad = external_aad(kid, piv, stream)
    enc_prot = cbor2.dumps({H_ALG: ALG_CHACHA})
    ct = ChaCha20Poly1305(ctx.key).encrypt(nonce(ctx.common_iv, kid, piv), plaintext,
                                           cbor2.dumps(["Encrypt0", enc_prot, aad]))
    enc0 = cbor2.dumps(cbor2.CBORTag(TAG_ENCRYPT0, [enc_prot, {H_PIV: piv}, ct]))
    headers: dict[int, Any] = {H_ALG: ALG_EDDSA, H_KID: kid}
    if kid_context:
        if id_context is None:
            raise CheckFailed("a kid context needs an ID Context")
        headers[H_KID_CONTEXT] = id_context
    prot = cbor2.dumps(headers)  # insertion order 1, 4, 10: the deterministic order
    sig = sk.sign(sign1_to_be_signed(prot, aad, enc0))
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [prot, {}, enc0, sig]))
