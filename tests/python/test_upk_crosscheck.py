"""Independent cross-check of trustchain's Update Key Block (UPK) test vectors.

This module re-implements, from the standards alone, everything a reader of
``update.upk`` + ``update.enc`` has to do, and checks the vectors the Rust
code writes under ``tests/vectors/upk/<name>/`` (valid) and
``tests/vectors/upk-invalid/<name>/`` (must be rejected at a named stage).
It imports nothing from the Rust project; its only dependencies are
``cryptography`` and ``cbor2`` (pinned in ``requirements.txt``).

The format (see ``crates/formats/src/{cose,upk,stream}.rs``):

* ``update.upk`` is a COSE_Sign1 (RFC 9052 §4.2, CBOR tag 18) with ES256
  (RFC 9053 §2.1), the mastering certificate in the unprotected ``x5chain``
  header (label 33, RFC 9360 §2) and the manifest as payload.
* The manifest is a deterministically encoded (RFC 8949 §4.2.1) CBOR map
  ``{1: 1, 2: security_counter, 3: params}``, keys taken from SUIT.
* ``params[19]`` (encryption info) is a COSE_Encrypt (RFC 9052 §5.1, tag 96)
  with a detached (nil) ciphertext whose recipients are ECDH-ES + A128KW
  (RFC 9053 §6.4) with an ephemeral P-256 key; the KEK comes from
  HKDF-SHA-256 (RFC 5869, RFC 9053 §5.1) over the COSE_KDF_Context
  (RFC 9053 §5.2) and wraps the content key with AES key wrap (RFC 3394).
* ``update.enc`` is the image sealed in 4096-byte chunks with AES-128-GCM
  (NIST SP 800-38D) and the STREAM nonce (Hoang, Reyhanitabar, Rogaway and
  Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
  Misuse-Resistance", CRYPTO 2015): 88-bit big-endian counter || last flag.
  The AAD is the COSE Enc_structure (RFC 9052 §5.3).

Run::

    python3 -m venv /tmp/pyvenv && /tmp/pyvenv/bin/pip install -r tests/python/requirements.txt
    /tmp/pyvenv/bin/pytest tests/python

``TRUSTCHAIN_VECTORS_DIR`` overrides the vector root (default:
``<repo>/tests/vectors``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

# ---------------------------------------------------------------------------
# Constants of the format
# ---------------------------------------------------------------------------

TAG_SIGN1 = 18  # RFC 9052 §4.2
TAG_ENCRYPT = 96  # RFC 9052 §5.1

HDR_ALG = 1  # RFC 9052 §3.1
HDR_KID = 4  # RFC 9052 §3.1
HDR_X5CHAIN = 33  # RFC 9360 §2
HDR_EPHEMERAL_KEY = -1  # RFC 9053 §6.4.1

ALG_ES256 = -7  # RFC 9053 §2.1
ALG_A128KW = -3  # RFC 9053 §6.2.1
ALG_ECDH_ES_A128KW = -29  # RFC 9053 §6.4
ALG_A128GCM_STREAM4K = -70001  # trustchain private-use content algorithm

#: ``{1: -7}``: the only protected header of the COSE_Sign1.
PROTECTED_ES256 = bytes.fromhex("a10126")
#: ``{1: -29}``: the only protected header of a recipient.
PROTECTED_RECIPIENT = bytes.fromhex("a101381c")
#: ``{1: -70001}``: the only protected header of the content layer.
PROTECTED_CONTENT = bytes.fromhex("a1013a00011170")

#: The COSE_KDF_Context bytes the Rust side hard-codes (RFC 9053 §5.2).
KDF_CONTEXT_BYTES = bytes.fromhex("842283f6f6f683f6f6f682188044a101381c")
#: The Enc_structure bytes used as AAD of every chunk (RFC 9052 §5.3).
CONTENT_AAD_BYTES = bytes([0x83, 0x67]) + b"Encrypt" + bytes.fromhex("47a1013a0001117040")

# Manifest keys (crates/formats/src/upk.rs, module `key`).
K_FORMAT_VERSION, K_SECURITY_COUNTER, K_PARAMETERS = 1, 2, 3
P_OEM_ID = 1
P_PRODUCT_ID = 2
P_IMAGE_DIGEST = 3
P_IMAGE_SIZE = 14
P_ENCRYPTION_INFO = 19
P_DEVICE_UIDS = 24
P_VERSION = 28
P_CIPHERTEXT_DIGEST = -257
P_LOAD_ADDRESS = -258
P_CREATED = -259
DIGEST_SHA256 = -16  # SUIT_Digest algorithm id (COSE alg -16 = SHA-256)
FORMAT_VERSION = 1

# Bounds (crates/formats/src/{upk,cose}.rs, modules `limits`).
MAX_UPK_LEN = 16 * 1024
MAX_MANIFEST_LEN = 12 * 1024
MAX_ENCRYPTION_INFO_LEN = 4096
MAX_CERT_LEN = 2048
MAX_RECIPIENTS = 16
MAX_UIDS = 64
MAX_UID_LEN = 32
MAX_IMAGE_SIZE = 2**32 - 1
U64_MAX = 2**64 - 1

# STREAM layout (crates/formats/src/stream.rs).
CHUNK_SIZE = 4096
TAG_LEN = 16
KEY_LEN = 16
WRAPPED_KEY_LEN = 24
KID_LEN = 32

#: Order of the P-256 group (SEC 2 §2.4.2).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# ---------------------------------------------------------------------------
# Errors, one class per rejection stage a negative vector can name
# ---------------------------------------------------------------------------


class UpkCheckError(Exception):
    """A UPK / update.enc pair was rejected; ``kind`` names the stage."""

    kind = "unknown"


class Malformed(UpkCheckError):
    """The bytes are not the one allowed CBOR/COSE shape."""

    kind = "malformed"


class BadSignature(UpkCheckError):
    """The COSE_Sign1 does not verify under the trusted mastering certificate."""

    kind = "bad-signature"


class CiphertextDigestMismatch(UpkCheckError):
    """SHA-256 of update.enc is not the signed ciphertext digest."""

    kind = "ciphertext-digest"


class DecryptionFailed(UpkCheckError):
    """No content key could be recovered, or a chunk failed to authenticate."""

    kind = "decryption"


class ImageDigestMismatch(UpkCheckError):
    """Decryption worked but the plaintext is not the signed image digest/size.

    Not one of the kinds the Rust vectors name; a vector that ends here is a
    finding in itself.
    """

    kind = "image-digest"


EXPECTED_ERROR_KINDS = {"bad-signature", "malformed", "ciphertext-digest", "decryption"}

# ---------------------------------------------------------------------------
# Deterministic CBOR (RFC 8949 §4.2.1) with cbor2
# ---------------------------------------------------------------------------


def _check_map_key_order(obj: Any, what: str) -> None:
    """Every map's keys must be sorted by the bytewise lexicographic order of
    their deterministic encodings (RFC 8949 §4.2.1, "Core Deterministic
    Encoding Requirements"). cbor2's ``canonical=True`` uses the older
    length-first order of RFC 7049 §3.9, so this checks it by hand."""
    if isinstance(obj, cbor2.CBORTag):
        _check_map_key_order(obj.value, what)
    elif isinstance(obj, Mapping):
        encoded = [cbor2.dumps(k) for k in obj.keys()]
        if any(a >= b for a, b in zip(encoded, encoded[1:])):
            raise Malformed(f"{what}: map keys {list(obj.keys())} are not in deterministic order")
        for v in obj.values():
            _check_map_key_order(v, what)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_map_key_order(v, what)


def decode_deterministic(data: bytes, what: str) -> Any:
    """Decodes exactly one CBOR data item in deterministic encoding
    (RFC 8949 §4.2.1): definite lengths only, shortest heads, no duplicate
    map keys, sorted map keys, no trailing bytes.

    cbor2 keeps map insertion order and always writes shortest heads, so an
    item is deterministic iff re-encoding it gives back the input bytes and
    its map keys are sorted. Raises :class:`Malformed` otherwise."""
    try:
        obj = cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False)
    except Exception as e:  # cbor2 raises several types on bad input
        raise Malformed(f"{what}: not CBOR ({e})") from e
    if cbor2.dumps(obj) != data:
        raise Malformed(f"{what}: not in deterministic encoding, or trailing bytes")
    _check_map_key_order(obj, what)
    return obj


def _uint(v: Any, what: str, lo: int = 0, hi: int = U64_MAX) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise Malformed(f"{what}: expected an unsigned integer in [{lo}, {hi}], got {v!r}")
    return v


def _bstr(v: Any, what: str, length: Optional[int] = None, max_len: Optional[int] = None) -> bytes:
    if type(v) is not bytes:
        raise Malformed(f"{what}: expected a byte string, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise Malformed(f"{what}: expected {length} bytes, got {len(v)}")
    if max_len is not None and len(v) > max_len:
        raise Malformed(f"{what}: at most {max_len} bytes, got {len(v)}")
    return v


def _array(v: Any, what: str, length: Optional[int] = None) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise Malformed(f"{what}: expected an array, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise Malformed(f"{what}: expected {length} elements, got {len(v)}")
    return tuple(v)


def _map(v: Any, what: str, keys: list) -> Mapping:
    """A map with exactly ``keys``, in that (deterministic) order."""
    if not isinstance(v, Mapping):
        raise Malformed(f"{what}: expected a map, got {type(v).__name__}")
    if list(v.keys()) != keys:
        raise Malformed(f"{what}: expected keys {keys}, got {list(v.keys())}")
    return v


# ---------------------------------------------------------------------------
# COSE_Sign1 (RFC 9052 §4.2, §4.4) with ES256 (RFC 9053 §2.1)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sign1:
    protected: bytes
    x5chain: Optional[bytes]
    payload: bytes
    signature: bytes  # r || s, 64 bytes


def parse_upk(data: bytes) -> Sign1:
    """Parses ``update.upk``: a tagged COSE_Sign1 (RFC 9052 §4.2)
    ``18([protected: bstr .cbor {1: -7}, unprotected: {? 33: bstr},
    payload: bstr, signature: bstr .size 64])``; x5chain is RFC 9360 §2,
    carrying one DER certificate. Raises :class:`Malformed`."""
    if len(data) > MAX_UPK_LEN:
        raise Malformed(f"UPK is {len(data)} bytes, more than {MAX_UPK_LEN}")
    item = decode_deterministic(data, "COSE_Sign1")
    if not isinstance(item, cbor2.CBORTag) or item.tag != TAG_SIGN1:
        raise Malformed("not a COSE_Sign1 (CBOR tag 18)")
    protected, unprotected, payload, signature = _array(item.value, "COSE_Sign1", 4)
    protected = _bstr(protected, "protected header")
    if protected != PROTECTED_ES256:
        raise Malformed(f"protected header {protected.hex()} is not {{1: -7}} (ES256)")
    if isinstance(unprotected, Mapping) and len(unprotected) == 0:
        x5chain = None
    else:
        x5chain = _bstr(_map(unprotected, "unprotected header", [HDR_X5CHAIN])[HDR_X5CHAIN],
                        "x5chain certificate", max_len=MAX_CERT_LEN)
    payload = _bstr(payload, "payload", max_len=MAX_MANIFEST_LEN)
    signature = _bstr(signature, "signature", length=64)
    return Sign1(protected, x5chain, payload, signature)


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The COSE Sig_structure of a COSE_Sign1 with empty external AAD
    (RFC 9052 §4.4): ``["Signature1", body_protected, external_aad, payload]``."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def verify_sign1(sign1: Sign1, trusted_cert_der: Optional[bytes]) -> x509.Certificate:
    """Verifies an ES256 COSE_Sign1 (RFC 9052 §4.4, RFC 9053 §2.1): ECDSA
    P-256 with SHA-256 over the Sig_structure, the signature being the fixed
    32-byte ``r || s`` (RFC 9053 §2.1), with the public key of the
    certificate in x5chain (RFC 9360 §2), which must be ``trusted_cert_der``
    when that is given. Raises :class:`BadSignature`; returns the signer's
    certificate."""
    if sign1.x5chain is None:
        raise BadSignature("no mastering certificate in x5chain: nothing to verify with")
    if trusted_cert_der is not None and sign1.x5chain != trusted_cert_der:
        raise BadSignature("x5chain certificate is not the trusted mastering certificate")
    try:
        cert = x509.load_der_x509_certificate(sign1.x5chain)
        public = cert.public_key()
    except ValueError as e:
        raise BadSignature(f"x5chain certificate does not parse: {e}") from e
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise BadSignature("mastering certificate key is not ECDSA P-256")
    r = int.from_bytes(sign1.signature[:32], "big")
    s = int.from_bytes(sign1.signature[32:], "big")
    try:
        public.verify(encode_dss_signature(r, s), sig_structure(sign1.protected, sign1.payload),
                      ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise BadSignature("ES256 signature does not verify") from e
    return cert


# ---------------------------------------------------------------------------
# Manifest and encryption info
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    kid: bytes
    ephemeral_x: bytes
    ephemeral_y: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class Manifest:
    security_counter: int
    oem_id: int
    product_id: int
    image_digest: bytes
    image_size: int
    recipients: tuple
    device_uids: Optional[tuple]
    version: tuple
    ciphertext_digest: bytes
    load_address: int
    created: int


def _suit_digest(v: Any, what: str) -> bytes:
    """SUIT_Digest ``[alg: -16 (SHA-256), bytes]`` (draft-ietf-suit-manifest §8.4.1)."""
    alg, value = _array(v, what, 2)
    if type(alg) is not int or alg != DIGEST_SHA256:
        raise Malformed(f"{what}: digest algorithm {alg!r} is not SHA-256 (-16)")
    return _bstr(value, what, length=32)


def parse_encryption_info(data: bytes) -> tuple:
    """Parses the SUIT encryption info: a tagged COSE_Encrypt (RFC 9052 §5.1)
    ``96([h'A1013A00011170', {}, nil, [+ recipient]])`` whose recipients are
    ``[h'A101381C', {4: kid, -1: COSE_Key}, wrapped: bstr .size 24]``
    (ECDH-ES + A128KW, RFC 9053 §6.4), the ephemeral COSE_Key being
    ``{1: 2, -1: 1, -2: x, -3: y}`` (EC2 P-256, RFC 9053 §7.1.1).
    Raises :class:`Malformed`."""
    item = decode_deterministic(data, "encryption info")
    if not isinstance(item, cbor2.CBORTag) or item.tag != TAG_ENCRYPT:
        raise Malformed("encryption info is not a COSE_Encrypt (CBOR tag 96)")
    protected, unprotected, ciphertext, recipients = _array(item.value, "COSE_Encrypt", 4)
    if _bstr(protected, "content protected header") != PROTECTED_CONTENT:
        raise Malformed("content protected header is not {1: -70001}")
    _map(unprotected, "content unprotected header", [])
    if ciphertext is not None:
        raise Malformed("COSE_Encrypt ciphertext must be nil (detached)")
    recipients = _array(recipients, "recipients")
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise Malformed(f"{len(recipients)} recipients, expected 1 to {MAX_RECIPIENTS}")
    out = []
    for i, rc in enumerate(recipients):
        what = f"recipient {i}"
        r_prot, r_unprot, wrapped = _array(rc, what, 3)
        if _bstr(r_prot, f"{what} protected header") != PROTECTED_RECIPIENT:
            raise Malformed(f"{what}: protected header is not {{1: -29}} (ECDH-ES + A128KW)")
        hdr = _map(r_unprot, f"{what} unprotected header", [HDR_KID, HDR_EPHEMERAL_KEY])
        kid = _bstr(hdr[HDR_KID], f"{what} kid", length=KID_LEN)
        key = _map(hdr[HDR_EPHEMERAL_KEY], f"{what} ephemeral COSE_Key", [1, -1, -2, -3])
        if type(key[1]) is not int or key[1] != 2:
            raise Malformed(f"{what}: COSE_Key kty is not EC2 (2)")
        if type(key[-1]) is not int or key[-1] != 1:
            raise Malformed(f"{what}: COSE_Key crv is not P-256 (1)")
        x = _bstr(key[-2], f"{what} ephemeral x", length=32)
        y = _bstr(key[-3], f"{what} ephemeral y", length=32)
        wrapped = _bstr(wrapped, f"{what} wrapped key", length=WRAPPED_KEY_LEN)
        out.append(Recipient(kid, x, y, wrapped))
    return tuple(out)


def parse_manifest(data: bytes) -> Manifest:
    """Parses the manifest (the COSE_Sign1 payload): deterministic CBOR
    (RFC 8949 §4.2.1) ``{1: 1, 2: uint, 3: {1: oem, 2: product,
    3: SUIT_Digest, 14: size, 19: bstr .cbor COSE_Encrypt, ? 24: [+ bstr],
    28: [major, minor, patch], -257: SUIT_Digest, -258: uint, -259: uint}}``
    with SUIT code points (draft-ietf-suit-manifest §8.4.8,
    draft-ietf-suit-firmware-encryption, draft-ietf-suit-update-management).
    Raises :class:`Malformed`."""
    if len(data) > MAX_MANIFEST_LEN:
        raise Malformed(f"manifest is {len(data)} bytes, more than {MAX_MANIFEST_LEN}")
    top = _map(decode_deterministic(data, "manifest"), "manifest",
               [K_FORMAT_VERSION, K_SECURITY_COUNTER, K_PARAMETERS])
    if _uint(top[K_FORMAT_VERSION], "format version") != FORMAT_VERSION:
        raise Malformed(f"format version {top[K_FORMAT_VERSION]} is not {FORMAT_VERSION}")
    counter = _uint(top[K_SECURITY_COUNTER], "security counter")
    params = top[K_PARAMETERS]
    with_uids = isinstance(params, Mapping) and P_DEVICE_UIDS in params
    keys = [P_OEM_ID, P_PRODUCT_ID, P_IMAGE_DIGEST, P_IMAGE_SIZE, P_ENCRYPTION_INFO]
    keys += [P_DEVICE_UIDS] if with_uids else []
    keys += [P_VERSION, P_CIPHERTEXT_DIGEST, P_LOAD_ADDRESS, P_CREATED]
    p = _map(params, "parameters", keys)
    image_size = _uint(p[P_IMAGE_SIZE], "image size", 1, MAX_IMAGE_SIZE)
    uids = None
    if with_uids:
        uids = _array(p[P_DEVICE_UIDS], "UID allow-list")
        if not 1 <= len(uids) <= MAX_UIDS:
            raise Malformed(f"{len(uids)} UIDs, expected 1 to {MAX_UIDS}")
        for u in uids:
            if not 1 <= len(_bstr(u, "UID", max_len=MAX_UID_LEN)):
                raise Malformed("empty UID")
    version = tuple(_uint(v, "version part", 0, 0xFFFF) for v in _array(p[P_VERSION], "version", 3))
    load_address = _uint(p[P_LOAD_ADDRESS], "load address")
    if load_address + image_size > U64_MAX:
        raise Malformed("the image would end above 2^64")
    return Manifest(
        security_counter=counter,
        oem_id=_uint(p[P_OEM_ID], "OEM ID", 1, 2**32 - 1),
        product_id=_uint(p[P_PRODUCT_ID], "product ID", 1, 2**32 - 1),
        image_digest=_suit_digest(p[P_IMAGE_DIGEST], "image digest"),
        image_size=image_size,
        recipients=parse_encryption_info(
            _bstr(p[P_ENCRYPTION_INFO], "encryption info", max_len=MAX_ENCRYPTION_INFO_LEN)),
        device_uids=uids,
        version=version,
        ciphertext_digest=_suit_digest(p[P_CIPHERTEXT_DIGEST], "ciphertext digest"),
        load_address=load_address,
        created=_uint(p[P_CREATED], "creation time"),
    )


# ---------------------------------------------------------------------------
# ECDH-ES + A128KW (RFC 9053 §6.4, §5.2; RFC 5869; RFC 3394)
# ---------------------------------------------------------------------------


def kdf_context() -> bytes:
    """The COSE_KDF_Context (RFC 9053 §5.2) of ECDH-ES + A128KW:
    ``[AlgorithmID: -3 (A128KW), PartyUInfo: [nil, nil, nil],
    PartyVInfo: [nil, nil, nil], SuppPubInfo: [keyDataLength: 128,
    protected: h'A101381C']]`` (no SuppPrivInfo). The algorithm is the key
    wrap algorithm A128KW (RFC 9053 §6.4: "the key wrap algorithm"), the
    length is in bits, and ``protected`` is the recipient's protected header."""
    return cbor2.dumps([ALG_A128KW, [None, None, None], [None, None, None], [128, PROTECTED_RECIPIENT]])


def private_key(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from a 32-byte big-endian scalar in [1, n-1]."""
    d = int.from_bytes(scalar, "big")
    assert len(scalar) == 32 and 1 <= d < P256_ORDER, "scalar out of range"
    return ec.derive_private_key(d, ec.SECP256R1())


def kid_of(scalar: bytes) -> bytes:
    """The recipient kid: SHA-256 of the uncompressed SEC1 point
    (SEC 1 v2 §2.3.3) of the key with this scalar."""
    point = private_key(scalar).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert len(point) == 65 and point[0] == 4
    return hashlib.sha256(point).digest()


def derive_kek(shared_x: bytes) -> bytes:
    """KEK = HKDF-SHA-256(salt = none, IKM = ECDH x-coordinate,
    info = COSE_KDF_Context, L = 16) (RFC 9053 §5.1 and §6.4.1; RFC 5869 §2).
    No salt is RFC 5869's "string of HashLen zeros", which HMAC treats the
    same as an empty salt (what the Rust side passes)."""
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=kdf_context()).derive(shared_x)


def ecdh_shared(scalar: bytes, rc: Recipient) -> bytes:
    """ECDH (SEC 1 v2 §3.3.1) between the recipient's private key and the
    sender's ephemeral key: the 32-byte x-coordinate (RFC 9053 §6.3.1).
    Raises ValueError if the ephemeral point is not on P-256."""
    eph = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + rc.ephemeral_x + rc.ephemeral_y)
    shared = private_key(scalar).exchange(ec.ECDH(), eph)
    assert len(shared) == 32
    return shared


def unwrap_cek(scalar: bytes, rc: Recipient) -> bytes:
    """Recovers the 16-byte content key from an ECDH-ES + A128KW recipient
    (RFC 9053 §6.4): ECDH, HKDF to the KEK (RFC 9053 §5.1-5.2), then AES key
    unwrap (RFC 3394 §2.2.2, with the §2.2.3 integrity check). Raises
    ``cryptography``'s ``InvalidUnwrap`` for a wrong key or altered bytes."""
    cek = aes_key_unwrap(derive_kek(ecdh_shared(scalar, rc)), rc.wrapped_key)
    assert len(cek) == KEY_LEN
    return cek


def recipient_for(recipients: tuple, kid: bytes) -> Optional[Recipient]:
    """The first recipient whose kid (RFC 9052 §3.1, label 4) is ``kid``."""
    return next((r for r in recipients if r.kid == kid), None)


# ---------------------------------------------------------------------------
# The STREAM-chunked AES-128-GCM image
# ---------------------------------------------------------------------------


def content_aad() -> bytes:
    """The AAD of every chunk: the COSE Enc_structure (RFC 9052 §5.3)
    ``["Encrypt", protected: h'A1013A00011170', external_aad: h'']``."""
    return cbor2.dumps(["Encrypt", PROTECTED_CONTENT, b""])


def chunk_nonce(index: int, last: bool) -> bytes:
    """STREAM nonce (Hoang et al., CRYPTO 2015, §7; as in age): the 88-bit
    big-endian chunk index then a byte that is 1 on the last chunk only.
    Twelve bytes, the AES-GCM nonce length of NIST SP 800-38D §5.2.1.1."""
    assert 0 <= index < 2**88
    return index.to_bytes(11, "big") + bytes([1 if last else 0])


def ciphertext_size(image_size: int) -> int:
    """Size of update.enc: every chunk gains a 16-byte GCM tag."""
    assert image_size >= 1
    return image_size + TAG_LEN * (-(-image_size // CHUNK_SIZE))


def decrypt_stream(enc: bytes, cek: bytes, image_size: int) -> bytes:
    """Decrypts update.enc: chunks of ``CHUNK_SIZE`` plaintext bytes (the last
    one shorter, never empty), each ``ciphertext || tag`` of AES-128-GCM
    (NIST SP 800-38D) under ``cek`` with :func:`chunk_nonce` and
    :func:`content_aad`. Raises :class:`DecryptionFailed` (its ``__cause__``
    is ``InvalidTag`` when a chunk fails to authenticate)."""
    if len(enc) != ciphertext_size(image_size):
        raise DecryptionFailed(
            f"update.enc is {len(enc)} bytes, an image of {image_size} needs {ciphertext_size(image_size)}")
    gcm, aad = AESGCM(cek), content_aad()
    count = -(-image_size // CHUNK_SIZE)
    out, pos = [], 0
    for i in range(count):
        plain_len = min(CHUNK_SIZE, image_size - i * CHUNK_SIZE)
        sealed = enc[pos:pos + plain_len + TAG_LEN]
        pos += len(sealed)
        try:
            out.append(gcm.decrypt(chunk_nonce(i, i == count - 1), sealed, aad))
        except InvalidTag as e:
            raise DecryptionFailed(f"chunk {i} of {count} does not authenticate") from e
    assert pos == len(enc)
    return b"".join(out)


# ---------------------------------------------------------------------------
# The whole check, in the order a reader performs it
# ---------------------------------------------------------------------------


def verify_release(upk: bytes, enc: bytes, trusted_cert_der: Optional[bytes], scalars: list) -> dict:
    """Checks a UPK and its update.enc end to end, raising the
    :class:`UpkCheckError` of the first stage that fails:

    1. ``malformed``: COSE_Sign1, manifest and encryption info parse
       (as ``Upk::parse`` does, before any cryptography);
    2. ``bad-signature``: x5chain is the trusted certificate and the ES256
       signature verifies;
    3. ``ciphertext-digest``: SHA-256(update.enc) is the signed digest;
    4. ``decryption``: for every scalar, a recipient with its kid exists, the
       content key unwraps, update.enc has the size the image size implies,
       and every chunk authenticates;
    5. ``image-digest``: the plaintext has the signed size and SHA-256.

    Returns ``{"sign1", "manifest", "ceks": {scalar: cek}, "image"}``."""
    sign1 = parse_upk(upk)
    manifest = parse_manifest(sign1.payload)
    verify_sign1(sign1, trusted_cert_der)
    if hashlib.sha256(enc).digest() != manifest.ciphertext_digest:
        raise CiphertextDigestMismatch("SHA-256 of update.enc is not the signed ciphertext digest")
    ceks, image = {}, None
    for scalar in scalars:
        rc = recipient_for(manifest.recipients, kid_of(scalar))
        if rc is None:
            raise DecryptionFailed(f"no recipient for kid {kid_of(scalar).hex()}")
        try:
            cek = unwrap_cek(scalar, rc)
        except (InvalidUnwrap, ValueError) as e:
            raise DecryptionFailed(f"content key does not unwrap for kid {rc.kid.hex()}") from e
        plain = decrypt_stream(enc, cek, manifest.image_size)
        if len(plain) != manifest.image_size or hashlib.sha256(plain).digest() != manifest.image_digest:
            raise ImageDigestMismatch("plaintext does not match the signed image digest")
        ceks[scalar] = cek
        image = plain
    return {"sign1": sign1, "manifest": manifest, "ceks": ceks, "image": image}


# ---------------------------------------------------------------------------
# Vector discovery
# ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
VECTORS_DIR = Path(os.environ.get("TRUSTCHAIN_VECTORS_DIR", REPO / "tests" / "vectors"))
VALID_DIR = VECTORS_DIR / "upk"
INVALID_DIR = VECTORS_DIR / "upk-invalid"


def _subdirs(path: Path) -> list:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


VALID_VECTORS = _subdirs(VALID_DIR)
INVALID_VECTORS = _subdirs(INVALID_DIR)

# With no vectors at all, parametrize over a sentinel that fails rather than
# letting pytest skip an empty parameter set.
_MISSING = None
_valid_params = VALID_VECTORS or [pytest.param(_MISSING, id="NO-VECTORS")]


@dataclass(frozen=True)
class Vector:
    path: Path
    meta: dict
    upk: bytes
    enc: bytes

    @property
    def inputs(self) -> dict:
        return self.meta["inputs"]

    @property
    def expected(self) -> dict:
        return self.meta["expected"]

    def scalars(self) -> list:
        """The product scalar then every device scalar (bytes)."""
        out = [h(self.inputs["product_scalar"])] if self.inputs.get("product_scalar") else []
        return out + [h(s) for s in self.inputs.get("device_scalars") or []]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


@functools.lru_cache(maxsize=None)
def load_vector(path: Optional[Path]) -> Vector:
    if path is None:
        pytest.fail(f"no UPK test vectors: {VALID_DIR} has no vector directory "
                    f"(set TRUSTCHAIN_VECTORS_DIR or generate the vectors)", pytrace=False)
    for name in ("update.upk", "update.enc", "vector.json"):
        assert (path / name).is_file(), f"{path} lacks {name}"
    meta = json.loads((path / "vector.json").read_text())
    return Vector(path, meta, (path / "update.upk").read_bytes(), (path / "update.enc").read_bytes())


def _ids(paths: list) -> list:
    return [p.name for p in paths]


# ---------------------------------------------------------------------------
# Tests: the constants and primitives, independent of any vector
# ---------------------------------------------------------------------------


def test_vectors_exist():
    """Fails loudly (never skips) when there is nothing to cross-check."""
    if not VALID_VECTORS:
        pytest.fail(f"no vector directory under {VALID_DIR} (vectors root {VECTORS_DIR}, "
                    f"override with TRUSTCHAIN_VECTORS_DIR)", pytrace=False)


def test_cose_constants_are_the_cbor_they_claim():
    """Protected headers, KDF context and AAD, rebuilt with cbor2."""
    assert cbor2.dumps({HDR_ALG: ALG_ES256}) == PROTECTED_ES256
    assert cbor2.dumps({HDR_ALG: ALG_ECDH_ES_A128KW}) == PROTECTED_RECIPIENT
    assert cbor2.dumps({HDR_ALG: ALG_A128GCM_STREAM4K}) == PROTECTED_CONTENT
    assert kdf_context() == KDF_CONTEXT_BYTES
    assert KDF_CONTEXT_BYTES == bytes([0x84, 0x22, 0x83, 0xF6, 0xF6, 0xF6, 0x83, 0xF6, 0xF6, 0xF6,
                                       0x82, 0x18, 0x80, 0x44, 0xA1, 0x01, 0x38, 0x1C])
    assert content_aad() == CONTENT_AAD_BYTES
    assert CONTENT_AAD_BYTES == bytes([0x83, 0x67]) + b"Encrypt" + bytes(
        [0x47, 0xA1, 0x01, 0x3A, 0x00, 0x01, 0x11, 0x70, 0x40])
    # Sig_structure head for a short payload (RFC 9052 §4.4).
    assert sig_structure(PROTECTED_ES256, b"ab") == b"\x84\x6aSignature1\x43\xa1\x01\x26\x40\x42ab"


def test_stream_layout_matches_rust_unit_tests():
    """The same examples as crates/formats/src/stream.rs."""
    assert chunk_nonce(1, False) == bytes([0] * 10 + [1, 0])
    assert chunk_nonce(0x0102, True) == bytes([0] * 9 + [1, 2, 1])
    assert ciphertext_size(1) == 17
    assert ciphertext_size(4096) == 4096 + 16
    assert ciphertext_size(4097) == 4097 + 32


def test_primitives_known_answers():
    """cryptography's primitives used as the RFCs define them."""
    # RFC 3394 §4.1: wrap 128 bits of key data with a 128-bit KEK.
    assert aes_key_unwrap(h("000102030405060708090A0B0C0D0E0F"),
                          h("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")) == \
        h("00112233445566778899AABBCCDDEEFF")
    # RFC 5869 A.3: HKDF-SHA-256 with no salt and empty info. Shows that
    # salt=None is the zero-length salt of the Rust side.
    okm = h("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    for salt in (None, b""):
        assert HKDF(hashes.SHA256(), 42, salt, b"").derive(b"\x0b" * 22) == okm


def test_deterministic_cbor_checks():
    """The strict decoder refuses what the Rust reader (cbor.rs) refuses."""
    assert decode_deterministic(h("a201010202"), "ok") == {1: 1, 2: 2}
    for bad in ("1801",  # non-shortest head
                "9f01ff",  # indefinite length
                "a201010101",  # duplicate key
                "a202010101",  # keys out of order
                "a2200118180a",  # -1 before 24: RFC 7049 order, not RFC 8949 bytewise
                "0100"):  # trailing byte
        with pytest.raises(Malformed):
            decode_deterministic(h(bad), bad)


# ---------------------------------------------------------------------------
# Tests: the valid vectors
# ---------------------------------------------------------------------------

parametrize_valid = pytest.mark.parametrize(
    "vpath", _valid_params, ids=_ids(VALID_VECTORS) if VALID_VECTORS else None)


@parametrize_valid
def test_envelope_and_signature(vpath):
    """update.upk is a well-formed COSE_Sign1 whose x5chain is the mastering
    certificate and whose ES256 signature verifies; the payload is the
    expected manifest."""
    v = load_vector(vpath)
    sign1 = parse_upk(v.upk)
    cert_der = h(v.inputs["mastering_cert_der"])
    assert sign1.x5chain == cert_der, "x5chain is not inputs.mastering_cert_der"
    cert = verify_sign1(sign1, cert_der)
    # The PKCS#8 mastering key is the certificate's key.
    key = serialization.load_der_private_key(h(v.inputs["mastering_pkcs8"]), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert sign1.payload == h(v.expected["manifest"])
    # Flipping any bit of the signature or of the payload breaks it.
    for which in ("signature", "payload"):
        b = bytearray(getattr(sign1, which))
        b[len(b) // 2] ^= 0x01
        forged = Sign1(sign1.protected, sign1.x5chain,
                       **{"payload": sign1.payload, "signature": sign1.signature, which: bytes(b)})
        with pytest.raises(BadSignature):
            verify_sign1(forged, cert_der)


#: trustchain's certificate extensions (crates/oem/src/pki.rs), under the
#: documentation PEN 32473 (RFC 5612): OEM ID and product ID as DER INTEGERs.
OID_OEM_ID = x509.ObjectIdentifier("1.3.6.1.4.1.32473.116.1")
OID_PRODUCT_ID = x509.ObjectIdentifier("1.3.6.1.4.1.32473.116.2")


def _der_uint(value: bytes) -> int:
    """A DER INTEGER (X.690 §8.3) with a short-form length, non-negative."""
    assert len(value) >= 3 and value[0] == 0x02 and value[1] == len(value) - 2 < 0x80, value.hex()
    assert value[2] < 0x80, "negative INTEGER"
    return int.from_bytes(value[2:], "big")


@parametrize_valid
def test_mastering_certificate_chain_and_ids(vpath):
    """The mastering certificate is issued by ``inputs.root_cert_der`` (when
    the vector gives one: RFC 5280 signature check only, no path policy),
    is an end-entity ECDSA P-256 certificate, and the OEM / product IDs it
    carries in its trustchain extensions are those of the manifest."""
    v = load_vector(vpath)
    cert = x509.load_der_x509_certificate(h(v.inputs["mastering_cert_der"]))
    if v.inputs.get("root_cert_der"):
        root = x509.load_der_x509_certificate(h(v.inputs["root_cert_der"]))
        cert.verify_directly_issued_by(root)
    assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not bc.ca, "the mastering certificate must not be a CA"
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    m = parse_manifest(parse_upk(v.upk).payload)
    for oid, want in ((OID_OEM_ID, m.oem_id), (OID_PRODUCT_ID, m.product_id)):
        try:
            ext = cert.extensions.get_extension_for_oid(oid)
        except x509.ExtensionNotFound:
            continue
        assert _der_uint(ext.value.value) == want, f"{oid.dotted_string} does not match the manifest"


@parametrize_valid
def test_manifest_fields(vpath):
    """Every manifest field is the value of the inputs."""
    v = load_vector(vpath)
    m = parse_manifest(parse_upk(v.upk).payload)
    i = v.inputs
    image = h(i["image"])
    assert m.oem_id == i["oem_id"]
    assert m.product_id == i["product_id"]
    assert m.version == tuple(int(p) for p in i["version"].split("."))
    assert m.security_counter == i["security_counter"]
    assert m.load_address == i["load_address"]
    assert m.created == i["created"]
    assert m.image_size == len(image)
    if i.get("device_uids") is None:
        assert m.device_uids is None
    else:
        assert m.device_uids == tuple(h(u) for u in i["device_uids"])


@parametrize_valid
def test_digests_and_sizes(vpath):
    """Image digest = SHA-256(image); ciphertext digest = SHA-256(update.enc);
    len(update.enc) = len(image) + 16 * ceil(len(image) / 4096)."""
    v = load_vector(vpath)
    m = parse_manifest(parse_upk(v.upk).payload)
    image = h(v.inputs["image"])
    assert m.image_digest == hashlib.sha256(image).digest() == h(v.expected["image_sha256"])
    assert m.ciphertext_digest == hashlib.sha256(v.enc).digest() == h(v.expected["ciphertext_sha256"])
    assert len(v.enc) == v.expected["ciphertext_size"] == ciphertext_size(len(image))
    assert len(v.enc) == len(image) + 16 * -(-len(image) // 4096)


@parametrize_valid
def test_recipients(vpath):
    """The recipients are the expected ones, one per given key, with kids
    that are SHA-256 of each key's uncompressed point."""
    v = load_vector(vpath)
    m = parse_manifest(parse_upk(v.upk).payload)
    got = [{"kid": r.kid.hex(), "ephemeral_x": r.ephemeral_x.hex(), "ephemeral_y": r.ephemeral_y.hex(),
            "wrapped_key": r.wrapped_key.hex()} for r in m.recipients]
    want = [{k: r[k].lower() for k in ("kid", "ephemeral_x", "ephemeral_y", "wrapped_key")}
            for r in v.expected["recipients"]]
    assert got == want
    kids = [kid_of(s) for s in v.scalars()]
    assert v.inputs.get("product_scalar"), "vector has no product scalar"
    assert len(set(kids)) == len(kids), "two inputs share a key"
    assert sorted(r.kid for r in m.recipients) == sorted(kids), \
        "recipients are not exactly the product key and the device keys"
    for r in m.recipients:  # each ephemeral key is a valid P-256 point
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + r.ephemeral_x + r.ephemeral_y)


@parametrize_valid
def test_every_key_unwraps_and_decrypts(vpath):
    """For the product key and each device key: find the recipient by kid,
    unwrap the content key (= expected), decrypt update.enc (= image)."""
    v = load_vector(vpath)
    m = parse_manifest(parse_upk(v.upk).payload)
    image, cek_want = h(v.inputs["image"]), h(v.expected["content_key"])
    for scalar in v.scalars():
        rc = recipient_for(m.recipients, kid_of(scalar))
        assert rc is not None, f"no recipient for key {kid_of(scalar).hex()}"
        cek = unwrap_cek(scalar, rc)
        assert cek == cek_want
        assert decrypt_stream(v.enc, cek, m.image_size) == image


@parametrize_valid
def test_wrong_keys_do_not_unwrap(vpath):
    """scalar+1 (mod n) does not unwrap the product's recipient, and no key
    unwraps another key's recipient (RFC 3394 §2.2.3 integrity check)."""
    v = load_vector(vpath)
    m = parse_manifest(parse_upk(v.upk).payload)
    scalars = v.scalars()
    product = scalars[0]
    wrong = ((int.from_bytes(product, "big") % (P256_ORDER - 1)) + 1).to_bytes(32, "big")
    assert wrong != product
    rc = recipient_for(m.recipients, kid_of(product))
    with pytest.raises(InvalidUnwrap):
        unwrap_cek(wrong, rc)
    for s in scalars:
        for other in m.recipients:
            if other.kid != kid_of(s):
                with pytest.raises(InvalidUnwrap):
                    unwrap_cek(s, other)
    # An altered wrapped key does not unwrap either.
    bad = bytearray(rc.wrapped_key)
    bad[0] ^= 0x01
    with pytest.raises(InvalidUnwrap):
        unwrap_cek(product, Recipient(rc.kid, rc.ephemeral_x, rc.ephemeral_y, bytes(bad)))


@parametrize_valid
def test_stream_tampering_is_detected(vpath):
    """A flipped bit, a dropped final chunk (read as a shorter image) and two
    swapped chunks all fail GCM authentication."""
    v = load_vector(vpath)
    m = parse_manifest(parse_upk(v.upk).payload)
    product = v.scalars()[0]
    cek = unwrap_cek(product, recipient_for(m.recipients, kid_of(product)))
    assert decrypt_stream(v.enc, cek, m.image_size) == h(v.inputs["image"])
    flipped = bytearray(v.enc)
    flipped[-1] ^= 0x80
    with pytest.raises(DecryptionFailed) as e:
        decrypt_stream(bytes(flipped), cek, m.image_size)
    assert isinstance(e.value.__cause__, InvalidTag)
    full = CHUNK_SIZE + TAG_LEN
    n = -(-m.image_size // CHUNK_SIZE)
    if n >= 2:
        # Truncation at a chunk boundary: chunk n-2 was not sealed as last.
        with pytest.raises(DecryptionFailed) as e:
            decrypt_stream(v.enc[:(n - 1) * full], cek, (n - 1) * CHUNK_SIZE)
        assert isinstance(e.value.__cause__, InvalidTag)
    if n >= 3:
        # Reordering two full chunks.
        swapped = v.enc[full:2 * full] + v.enc[:full] + v.enc[2 * full:]
        with pytest.raises(DecryptionFailed) as e:
            decrypt_stream(swapped, cek, m.image_size)
        assert isinstance(e.value.__cause__, InvalidTag)


@parametrize_valid
def test_full_pipeline_accepts(vpath):
    """verify_release, the reader's whole check, accepts the vector, and
    rejects it at the right stage when a byte changes."""
    v = load_vector(vpath)
    cert_der = h(v.inputs["mastering_cert_der"])
    res = verify_release(v.upk, v.enc, cert_der, v.scalars())
    assert res["image"] == h(v.inputs["image"])
    assert set(res["ceks"].values()) == {h(v.expected["content_key"])}
    with pytest.raises(Malformed):
        verify_release(v.upk + b"\x00", v.enc, cert_der, v.scalars())
    sig_flip = bytearray(v.upk)
    sig_flip[-1] ^= 0x01  # last byte of the signature
    with pytest.raises(BadSignature):
        verify_release(bytes(sig_flip), v.enc, cert_der, v.scalars())
    enc_flip = bytearray(v.enc)
    enc_flip[0] ^= 0x01
    with pytest.raises(CiphertextDigestMismatch):
        verify_release(v.upk, bytes(enc_flip), cert_der, v.scalars())


# ---------------------------------------------------------------------------
# Tests: the invalid vectors
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not INVALID_VECTORS, reason=f"no negative vectors under {INVALID_DIR}")
@pytest.mark.parametrize("vpath", INVALID_VECTORS or [None], ids=_ids(INVALID_VECTORS) or None)
def test_invalid_vector_is_rejected_at_its_stage(vpath):
    """A negative vector fails, and at the stage it names."""
    v = load_vector(vpath)
    kind = v.meta.get("expected_error")
    assert kind in EXPECTED_ERROR_KINDS, f"unknown expected_error {kind!r}"
    trusted = v.inputs.get("mastering_cert_der")
    with pytest.raises(UpkCheckError) as e:
        verify_release(v.upk, v.enc, h(trusted) if trusted else None, v.scalars())
    assert e.value.kind == kind, f"rejected as {e.value.kind} ({e.value}), expected {kind}"
