"""Independent cross-check of trustchain's production package test vectors.

This module re-implements, from the standards and ``docs/formats.md``
("Production package"), everything a Guardian does to open and check a
``package.tcpkg``, and checks the vectors the Rust code writes under
``tests/vectors/package/<name>/`` (valid) and
``tests/vectors/package-invalid/<name>/`` (must be refused at a named stage).
It imports nothing from the Rust project; its only dependencies are
``cryptography`` and ``cbor2`` (pinned in ``requirements.txt``), and the
generic COSE / deterministic-CBOR helpers of ``test_upk_crosscheck.py``.

The format (see ``crates/formats/src/package.rs``, ``crates/oem/src/wrap.rs``):

* The package is a COSE_Encrypt (RFC 9052 §5.1, CBOR tag 96) with content
  algorithm A256GCM (RFC 9053 §4.1), its 12-byte IV in the unprotected
  header (label 5), and exactly one recipient: ECDH-ES + A256KW (RFC 9053
  §6.4) to the Guardian's key-agreement key, named by its kid (SHA-256 of
  the SEC1 point), with an ephemeral P-256 COSE_Key. The KEK is
  HKDF-SHA-256 (RFC 5869; RFC 9053 §5.1) with no salt over the
  COSE_KDF_Context (RFC 9053 §5.2); AES key wrap (RFC 3394) of the 32-byte
  content key gives 40 bytes. The AAD is the Enc_structure (RFC 9052 §5.3).
* The plaintext is a COSE_Sign1 (RFC 9052 §4.2, tag 18), ES256 (RFC 9053
  §2.1) by the OEM device CA, whose certificate is in x5chain (label 33,
  RFC 9360 §2); its payload is the manifest, a deterministically encoded
  (RFC 8949 §4.2.1) map with integer keys 1 to 22.

Run::

    python3 -m venv /tmp/pyvenv2 && /tmp/pyvenv2/bin/pip install -r tests/python/requirements.txt
    /tmp/pyvenv2/bin/python -m pytest -q tests/python

``TRUSTCHAIN_VECTORS_DIR`` overrides the vector root (default:
``<repo>/tests/vectors``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_upk_crosscheck as upk  # noqa: E402  (generic helpers; its tests are not re-collected)

# ---------------------------------------------------------------------------
# Constants of the format (crates/formats/src/package.rs)
# ---------------------------------------------------------------------------

TAG_SIGN1 = 18  # RFC 9052 §4.2
TAG_ENCRYPT = 96  # RFC 9052 §5.1

HDR_ALG = 1  # RFC 9052 §3.1
HDR_IV = 5  # RFC 9052 §3.1
HDR_KID = 4
HDR_X5CHAIN = 33  # RFC 9360 §2
HDR_EPHEMERAL_KEY = -1  # RFC 9053 §6.4.1

ALG_ES256 = -7  # RFC 9053 §2.1
ALG_A256GCM = 3  # RFC 9053 §4.1
ALG_A256KW = -5  # RFC 9053 §6.2.1
ALG_ECDH_ES_A256KW = -31  # RFC 9053 §6.4

#: ``{1: 3}``: the protected header of the content layer.
PROTECTED_A256GCM = bytes.fromhex("a10103")
#: ``{1: -31}``: the protected header of the recipient.
PROTECTED_RECIPIENT = bytes.fromhex("a101381e")
#: ``{1: -7}``: the protected header of the COSE_Sign1.
PROTECTED_ES256 = bytes.fromhex("a10126")
#: The COSE_KDF_Context bytes the Rust side hard-codes (``KDF_CONTEXT_A256KW``).
KDF_CONTEXT_BYTES = bytes.fromhex("842483f6f6f683f6f6f68219010044a101381e")
#: The Enc_structure used as AAD (``CONTENT_AAD``).
CONTENT_AAD_BYTES = bytes.fromhex("8367") + b"Encrypt" + bytes.fromhex("43a1010340")

FORMAT_VERSION = 1
IV_LEN = 12
CEK_LEN = 32
WRAPPED_KEY_LEN = 40
KID_LEN = 32
TAG_LEN = 16

# Bounds (package.rs `limits`, upk.rs `limits::MAX_UPK_LEN`).
MAX_PACKAGE_LEN = 256 * 1024 * 1024
MAX_CERT_LEN = 2048
MAX_TEMPLATE_LEN = 16 * 1024
MAX_COUNT = 1_000_000_000
MAX_DEVICE_TYPES = 64
MAX_NAME_LEN = 64
MAX_UPK_LEN = 16 * 1024
MAX_UID_LEN = 32
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

# Manifest keys (package.rs, module `key`), in their one encoding order.
K = dict(FORMAT=1, PACKAGE_ID=2, OEM_ID=3, PRODUCT_ID=4, GUARDIAN=5, CREATED=6, EXPIRES=7,
         COUNT=8, SERIAL_START=9, DEVICE_TYPES=10, UID_RANGE=11, TEMPLATE=12,
         ISSUING_CA_CERT=13, ISSUING_CA_KEY=14, DEVICE_CA_CERT=15, ROOT_CERT=16,
         PRODUCT_KEY=17, MASTERING_CERT=18, RELEASE_UPK=19, RELEASE_ENC=20, OEM_NAME=21,
         PRODUCT_NAME=22)
MANIFEST_KEYS = list(range(1, 23))
assert sorted(K.values()) == MANIFEST_KEYS

# ---------------------------------------------------------------------------
# Errors: one class per refusal stage a negative vector can name
# ---------------------------------------------------------------------------


class PackageCheckError(Exception):
    """A package was refused; ``kind`` names the stage."""

    kind = "unknown"


class Malformed(PackageCheckError):
    """Not the one allowed CBOR/COSE shape (Guardian: a format error, or
    "package refused" for the signed layer and the manifest)."""

    kind = "malformed"


class OpenFailed(PackageCheckError):
    """This Guardian cannot open the package (Guardian: NotForThisGuardian).
    ``reason`` is ``kid``, ``unwrap`` or ``decrypt``."""

    kind = "open"

    def __init__(self, reason: str, msg: str):
        super().__init__(f"{reason}: {msg}")
        self.reason = reason


class UntrustedRoot(PackageCheckError):
    kind = "untrusted-root"


class BadSignature(PackageCheckError):
    """The device CA certificate or the OEM signature does not verify."""

    kind = "signature"


class Refused(PackageCheckError):
    """Opened and signed, but refused by a later check (another Guardian,
    expired, inconsistent)."""

    kind = "refused"


EXPECTED_ERROR_KINDS = {"open", "signature"}


@contextlib.contextmanager
def _malformed():
    """Turns the UPK helpers' Malformed into this module's."""
    try:
        yield
    except upk.UpkCheckError as e:
        raise Malformed(str(e)) from e


def _tstr(v: Any, what: str, max_len: int) -> str:
    if type(v) is not str:
        raise Malformed(f"{what}: expected a text string, got {type(v).__name__}")
    if len(v.encode("utf-8")) > max_len:
        raise Malformed(f"{what}: at most {max_len} bytes")
    return v


# ---------------------------------------------------------------------------
# The outer layer: COSE_Encrypt, A256GCM, one ECDH-ES + A256KW recipient
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outer:
    iv: bytes
    ciphertext: bytes
    kid: bytes
    ephemeral_x: bytes
    ephemeral_y: bytes
    wrapped_key: bytes


def parse_package(data: bytes) -> Outer:
    """Parses ``package.tcpkg``:
    ``96([h'A10103', {5: bstr .size 12}, ciphertext: bstr,
    [[h'A101381E', {4: bstr .size 32, -1: {1: 2, -1: 1, -2: x, -3: y}},
    bstr .size 40]]])``. Raises :class:`Malformed`."""
    if len(data) > MAX_PACKAGE_LEN:
        raise Malformed(f"package is {len(data)} bytes, more than {MAX_PACKAGE_LEN}")
    with _malformed():
        item = upk.decode_deterministic(data, "package")
        if not isinstance(item, cbor2.CBORTag) or item.tag != TAG_ENCRYPT:
            raise Malformed("not a COSE_Encrypt (CBOR tag 96)")
        protected, unprotected, ciphertext, recipients = upk._array(item.value, "COSE_Encrypt", 4)
        if upk._bstr(protected, "protected header") != PROTECTED_A256GCM:
            raise Malformed("content protected header is not {1: 3} (A256GCM)")
        iv = upk._bstr(upk._map(unprotected, "unprotected header", [HDR_IV])[HDR_IV], "IV",
                       length=IV_LEN)
        ciphertext = upk._bstr(ciphertext, "ciphertext", max_len=MAX_PACKAGE_LEN)
        (rc,) = upk._array(recipients, "recipients", 1)
        r_prot, r_unprot, wrapped = upk._array(rc, "recipient", 3)
        if upk._bstr(r_prot, "recipient protected header") != PROTECTED_RECIPIENT:
            raise Malformed("recipient protected header is not {1: -31} (ECDH-ES + A256KW)")
        hdr = upk._map(r_unprot, "recipient unprotected header", [HDR_KID, HDR_EPHEMERAL_KEY])
        kid = upk._bstr(hdr[HDR_KID], "kid", length=KID_LEN)
        key = upk._map(hdr[HDR_EPHEMERAL_KEY], "ephemeral COSE_Key", [1, -1, -2, -3])
        if type(key[1]) is not int or key[1] != 2:
            raise Malformed("COSE_Key kty is not EC2 (2)")
        if type(key[-1]) is not int or key[-1] != 1:
            raise Malformed("COSE_Key crv is not P-256 (1)")
        x = upk._bstr(key[-2], "ephemeral x", length=32)
        y = upk._bstr(key[-3], "ephemeral y", length=32)
        wrapped = upk._bstr(wrapped, "wrapped key", length=WRAPPED_KEY_LEN)
    return Outer(iv, ciphertext, kid, x, y, wrapped)


def encode_package(o: Outer) -> bytes:
    """The one encoding of an outer layer (cbor2 keeps insertion order)."""
    cose_key = {1: 2, -1: 1, -2: o.ephemeral_x, -3: o.ephemeral_y}
    recipient = [PROTECTED_RECIPIENT, {HDR_KID: o.kid, HDR_EPHEMERAL_KEY: cose_key}, o.wrapped_key]
    return cbor2.dumps(cbor2.CBORTag(TAG_ENCRYPT, [PROTECTED_A256GCM, {HDR_IV: o.iv}, o.ciphertext,
                                                   [recipient]]))


def kdf_context() -> bytes:
    """The COSE_KDF_Context (RFC 9053 §5.2) of ECDH-ES + A256KW:
    ``[AlgorithmID: -5 (A256KW, the key-wrap algorithm, RFC 9053 §6.4),
    PartyUInfo: [nil, nil, nil], PartyVInfo: [nil, nil, nil],
    SuppPubInfo: [keyDataLength: 256, protected: h'A101381E']]``."""
    return cbor2.dumps([ALG_A256KW, [None, None, None], [None, None, None],
                        [256, PROTECTED_RECIPIENT]])


def content_aad() -> bytes:
    """The Enc_structure (RFC 9052 §5.3) of the content layer with empty
    external AAD: ``["Encrypt", h'A10103', h'']``."""
    return cbor2.dumps(["Encrypt", PROTECTED_A256GCM, b""])


def point_of(scalar: bytes) -> bytes:
    """The 65-byte uncompressed SEC1 point of a P-256 scalar."""
    return upk.private_key(scalar).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def derive_kek(shared_x: bytes) -> bytes:
    """KEK = HKDF-SHA-256(salt = none, IKM = ECDH x-coordinate,
    info = COSE_KDF_Context, L = 32)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=kdf_context()).derive(shared_x)


def ecdh(scalar: bytes, x: bytes, y: bytes) -> bytes:
    """ECDH x-coordinate (SEC 1 §3.3.1) of ``scalar`` with the point (x, y);
    ValueError if the point is not on P-256."""
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    return upk.private_key(scalar).exchange(ec.ECDH(), peer)


def open_package(o: Outer, scalar: bytes, check_kid: bool = True) -> tuple:
    """Opens the outer layer with the Guardian's key-agreement scalar:
    kid, ECDH with the ephemeral key, HKDF, AES key unwrap (RFC 3394, with
    its integrity check), AES-256-GCM (NIST SP 800-38D). Returns
    ``(signed bytes, CEK)``; raises :class:`OpenFailed`."""
    if check_kid and o.kid != hashlib.sha256(point_of(scalar)).digest():
        raise OpenFailed("kid", "the recipient kid is not this Guardian's key")
    try:
        kek = derive_kek(ecdh(scalar, o.ephemeral_x, o.ephemeral_y))
        cek = aes_key_unwrap(kek, o.wrapped_key)
    except (InvalidUnwrap, ValueError) as e:
        raise OpenFailed("unwrap", "the content key does not unwrap") from e
    if len(cek) != CEK_LEN:
        raise OpenFailed("unwrap", f"the content key is {len(cek)} bytes, not {CEK_LEN}")
    try:
        plain = AESGCM(cek).decrypt(o.iv, o.ciphertext, content_aad())
    except InvalidTag as e:
        raise OpenFailed("decrypt", "the ciphertext does not authenticate") from e
    return plain, cek


def seal(signed: bytes, guardian_point: bytes, cek: bytes, iv: bytes, eph_scalar: bytes) -> bytes:
    """Seals as ``seal_for`` does, with given CEK, IV and ephemeral scalar."""
    sealed = AESGCM(cek).encrypt(iv, signed, content_aad())
    eph = point_of(eph_scalar)
    kek = derive_kek(ecdh(eph_scalar, guardian_point[1:33], guardian_point[33:]))
    return encode_package(Outer(iv, sealed, hashlib.sha256(guardian_point).digest(),
                                eph[1:33], eph[33:], aes_key_wrap(kek, cek)))


# ---------------------------------------------------------------------------
# The signed layer and the manifest
# ---------------------------------------------------------------------------


def parse_sign1(data: bytes) -> upk.Sign1:
    """``18([h'A10126', {? 33: bstr .size (0..2048)}, payload: bstr,
    signature: bstr .size 64])``. Raises :class:`Malformed`."""
    with _malformed():
        item = upk.decode_deterministic(data, "COSE_Sign1")
        if not isinstance(item, cbor2.CBORTag) or item.tag != TAG_SIGN1:
            raise Malformed("not a COSE_Sign1 (CBOR tag 18)")
        protected, unprotected, payload, signature = upk._array(item.value, "COSE_Sign1", 4)
        if upk._bstr(protected, "protected header") != PROTECTED_ES256:
            raise Malformed("protected header is not {1: -7} (ES256)")
        if isinstance(unprotected, Mapping) and len(unprotected) == 0:
            x5chain = None
        else:
            x5chain = upk._bstr(upk._map(unprotected, "unprotected header", [HDR_X5CHAIN])[HDR_X5CHAIN],
                                "x5chain", max_len=MAX_CERT_LEN)
        payload = upk._bstr(payload, "payload", max_len=MAX_PACKAGE_LEN)
        signature = upk._bstr(signature, "signature", length=64)
    return upk.Sign1(protected, x5chain, payload, signature)


def verify_signature(sign1: upk.Sign1, device_ca_der: bytes) -> None:
    """ES256 over the Sig_structure with the key of ``device_ca_der``, which
    must be the x5chain certificate. Raises :class:`BadSignature`."""
    try:
        upk.verify_sign1(sign1, device_ca_der)
    except upk.BadSignature as e:
        raise BadSignature(str(e)) from e


def parse_manifest(data: bytes) -> dict:
    """The manifest: exactly keys 1..22 in order, with the value rules of
    ``Manifest::parse``. Returns a dict by field name. Raises :class:`Malformed`."""
    with _malformed():
        m = upk._map(upk.decode_deterministic(data, "manifest"), "manifest", MANIFEST_KEYS)
        if upk._uint(m[K["FORMAT"]], "format") != FORMAT_VERSION:
            raise Malformed(f"format {m[1]} is not {FORMAT_VERSION}")
        out = {
            "package_id": upk._bstr(m[K["PACKAGE_ID"]], "package ID", length=16),
            "oem_id": upk._uint(m[K["OEM_ID"]], "OEM ID", 1, U32_MAX),
            "product_id": upk._uint(m[K["PRODUCT_ID"]], "product ID", 1, U32_MAX),
            "guardian": upk._bstr(m[K["GUARDIAN"]], "Guardian", length=32),
            "created": upk._uint(m[K["CREATED"]], "creation time"),
            "expires": upk._uint(m[K["EXPIRES"]], "expiry"),
            "count": upk._uint(m[K["COUNT"]], "count", 1, MAX_COUNT),
            "serial_start": upk._uint(m[K["SERIAL_START"]], "first serial"),
        }
        if out["serial_start"] + out["count"] > U64_MAX:
            raise Malformed("serial range: first serial + count must stay below 2^64")
        types = upk._array(m[K["DEVICE_TYPES"]], "device types")
        if len(types) > MAX_DEVICE_TYPES:
            raise Malformed(f"{len(types)} device types, at most {MAX_DEVICE_TYPES}")
        out["device_types"] = [upk._uint(t, "device type", 0, U32_MAX) for t in types]
        rng = m[K["UID_RANGE"]]
        if rng is None:
            out["uid_range"] = None
        else:
            lo, hi = upk._array(rng, "UID range", 2)
            lo = upk._bstr(lo, "UID range low", max_len=MAX_UID_LEN)
            hi = upk._bstr(hi, "UID range high", max_len=MAX_UID_LEN)
            if len(lo) != len(hi) or not lo or lo > hi:
                raise Malformed("UID range: equal-length low <= high expected")
            out["uid_range"] = (lo, hi)
        out["template"] = _tstr(m[K["TEMPLATE"]], "template", MAX_TEMPLATE_LEN)
        out["issuing_ca_cert"] = upk._bstr(m[K["ISSUING_CA_CERT"]], "issuing CA certificate",
                                           max_len=MAX_CERT_LEN)
        out["issuing_ca_key"] = upk._bstr(m[K["ISSUING_CA_KEY"]], "issuing CA key", length=32)
        out["device_ca_cert"] = upk._bstr(m[K["DEVICE_CA_CERT"]], "device CA certificate",
                                          max_len=MAX_CERT_LEN)
        out["root_cert"] = upk._bstr(m[K["ROOT_CERT"]], "root certificate", max_len=MAX_CERT_LEN)
        out["product_key"] = upk._bstr(m[K["PRODUCT_KEY"]], "product key", length=32)
        out["mastering_cert"] = upk._bstr(m[K["MASTERING_CERT"]], "mastering certificate",
                                          max_len=MAX_CERT_LEN)
        out["release_upk"] = upk._bstr(m[K["RELEASE_UPK"]], "release UPK", max_len=MAX_UPK_LEN)
        out["release_enc"] = upk._bstr(m[K["RELEASE_ENC"]], "release image", max_len=MAX_PACKAGE_LEN)
        out["oem_name"] = _tstr(m[K["OEM_NAME"]], "OEM name", MAX_NAME_LEN)
        out["product_name"] = _tstr(m[K["PRODUCT_NAME"]], "product name", MAX_NAME_LEN)
    return out


def manifest_from_inputs(i: dict) -> bytes:
    """Encodes the manifest the inputs describe, with cbor2, key by key."""
    rng = i["uid_range"]
    m = {
        1: FORMAT_VERSION,
        2: h(i["package_id"]),
        3: i["oem_id"],
        4: i["product_id"],
        5: hashlib.sha256(h(i["guardian_kem_cert_der"])).digest(),
        6: i["created"],
        7: i["expires"],
        8: i["count"],
        9: i["serial_start"],
        10: list(i["device_types"]),
        11: None if rng is None else [h(rng[0]), h(rng[1])],
        12: i["template"],
        13: h(i["issuing_ca_cert_der"]),
        14: h(i["issuing_ca_scalar"]),
        15: h(i["device_ca_cert_der"]),
        16: h(i["root_cert_der"]),
        17: h(i["product_scalar"]),
        18: h(i["mastering_cert_der"]),
        19: h(i["release_upk"]),
        20: h(i["release_enc"]),
        21: i["oem_name"],
        22: i["product_name"],
    }
    return cbor2.dumps(m)


# ---------------------------------------------------------------------------
# The whole check, in the Guardian's order (crates/guardian/src/import.rs)
# ---------------------------------------------------------------------------


def check_package(data: bytes, guardian_scalar: bytes, trusted_root_der: bytes,
                  guardian_id: bytes, now: int) -> dict:
    """Opens and checks a package as the Guardian's import does, raising the
    :class:`PackageCheckError` of the first stage that fails:

    1. ``malformed``: the outer COSE_Encrypt parses;
    2. ``open``: the kid is this Guardian's, the CEK unwraps, GCM authenticates;
    3. ``malformed``: the COSE_Sign1 and the manifest parse;
    4. ``untrusted-root``: the manifest's root is the trusted one;
    5. ``signature``: x5chain is present and is the manifest's device CA,
       which the root signed; the ES256 signature verifies;
    6. ``refused``: the manifest names this Guardian, has not expired, the
       certificates carry its OEM ID, the issuing CA is signed by the device
       CA and matches its key, the release is for the product and its
       update.enc matches the UPK.

    Returns the parsed manifest."""
    outer = parse_package(data)
    signed, _ = open_package(outer, guardian_scalar)
    sign1 = parse_sign1(signed)
    m = parse_manifest(sign1.payload)
    if m["root_cert"] != trusted_root_der:
        raise UntrustedRoot("the manifest's root is not the trusted root")
    if sign1.x5chain is None:
        raise BadSignature("no signer certificate")
    if sign1.x5chain != m["device_ca_cert"]:
        raise BadSignature("the signer is not the package's device CA")
    root = x509.load_der_x509_certificate(trusted_root_der)
    dca = x509.load_der_x509_certificate(sign1.x5chain)
    try:
        dca.verify_directly_issued_by(root)
    except Exception as e:  # InvalidSignature, ValueError, TypeError
        raise BadSignature(f"device CA certificate: {e!r}") from e
    verify_signature(sign1, m["device_ca_cert"])
    if m["guardian"] != guardian_id:
        raise Refused("the package names another Guardian")
    if now >= m["expires"]:
        raise Refused("expired")
    for der in (m["root_cert"], m["device_ca_cert"], m["issuing_ca_cert"]):
        if oem_id_of(x509.load_der_x509_certificate(der)) != m["oem_id"]:
            raise Refused("the certificates do not carry the package's OEM ID")
    issuing = x509.load_der_x509_certificate(m["issuing_ca_cert"])
    try:
        issuing.verify_directly_issued_by(dca)
    except Exception as e:
        raise Refused(f"issuing CA certificate: {e!r}") from e
    if point_of(m["issuing_ca_key"]) != issuing.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint):
        raise Refused("the issuing CA key does not match its certificate")
    with _malformed():
        rel = upk.parse_manifest(upk.parse_upk(m["release_upk"]).payload)
    if (rel.oem_id, rel.product_id) != (m["oem_id"], m["product_id"]):
        raise Refused("the release is for another product")
    if hashlib.sha256(m["release_enc"]).digest() != rel.ciphertext_digest:
        raise Refused("the release image does not match its UPK")
    return m


def _ext_uint(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> Optional[int]:
    try:
        return upk._der_uint(cert.extensions.get_extension_for_oid(oid).value.value)
    except x509.ExtensionNotFound:
        return None


def oem_id_of(cert: x509.Certificate) -> Optional[int]:
    return _ext_uint(cert, upk.OID_OEM_ID)


# ---------------------------------------------------------------------------
# Vector discovery
# ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
VECTORS_DIR = Path(os.environ.get("TRUSTCHAIN_VECTORS_DIR", REPO / "tests" / "vectors"))
VALID_DIR = VECTORS_DIR / "package"
INVALID_DIR = VECTORS_DIR / "package-invalid"


def _subdirs(path: Path) -> list:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


VALID_VECTORS = _subdirs(VALID_DIR)
INVALID_VECTORS = _subdirs(INVALID_DIR)


def h(s: str) -> bytes:
    return bytes.fromhex(s)


@dataclass(frozen=True)
class Vector:
    path: Path
    meta: dict
    package: bytes

    @property
    def inputs(self) -> dict:
        return self.meta["inputs"]

    @property
    def expected(self) -> dict:
        return self.meta["expected"]

    @property
    def scalar(self) -> bytes:
        return h(self.inputs["guardian_kem_scalar"])

    @property
    def guardian_id(self) -> bytes:
        return hashlib.sha256(h(self.inputs["guardian_kem_cert_der"])).digest()

    def check(self, data: Optional[bytes] = None) -> dict:
        return check_package(self.package if data is None else data, self.scalar,
                             h(self.inputs["root_cert_der"]), self.guardian_id,
                             self.inputs["created"])


@functools.lru_cache(maxsize=None)
def load_vector(path: Optional[Path]) -> Vector:
    if path is None:
        pytest.fail(f"no package test vectors: {VALID_DIR} has no vector directory "
                    f"(set TRUSTCHAIN_VECTORS_DIR or generate the vectors)", pytrace=False)
    for name in ("package.tcpkg", "vector.json"):
        assert (path / name).is_file(), f"{path} lacks {name}"
    meta = json.loads((path / "vector.json").read_text())
    return Vector(path, meta, (path / "package.tcpkg").read_bytes())


def _ids(paths: list) -> list:
    return [p.name for p in paths]


def test_vectors_exist():
    """Fails loudly (never skips) when there is nothing to cross-check."""
    if not VALID_VECTORS:
        pytest.fail(f"no vector directory under {VALID_DIR} (vectors root {VECTORS_DIR}, "
                    f"override with TRUSTCHAIN_VECTORS_DIR)", pytrace=False)
    if not INVALID_VECTORS:
        pytest.fail(f"no vector directory under {INVALID_DIR}", pytrace=False)


# With no vectors, parametrize over a sentinel that fails instead of skipping.
parametrize_valid = pytest.mark.parametrize(
    "vpath", VALID_VECTORS or [pytest.param(None, id="NO-VECTORS")],
    ids=_ids(VALID_VECTORS) if VALID_VECTORS else None)
parametrize_invalid = pytest.mark.parametrize(
    "vpath", INVALID_VECTORS or [pytest.param(None, id="NO-VECTORS")],
    ids=_ids(INVALID_VECTORS) if INVALID_VECTORS else None)

# ---------------------------------------------------------------------------
# Tests: constants and primitives
# ---------------------------------------------------------------------------


def test_constants_are_the_cbor_they_claim():
    """Protected headers, KDF context and AAD, rebuilt with cbor2."""
    assert cbor2.dumps({HDR_ALG: ALG_A256GCM}) == PROTECTED_A256GCM
    assert cbor2.dumps({HDR_ALG: ALG_ECDH_ES_A256KW}) == PROTECTED_RECIPIENT
    assert cbor2.dumps({HDR_ALG: ALG_ES256}) == PROTECTED_ES256
    assert kdf_context() == KDF_CONTEXT_BYTES
    assert KDF_CONTEXT_BYTES == bytes([0x84, 0x24, 0x83, 0xF6, 0xF6, 0xF6, 0x83, 0xF6, 0xF6, 0xF6,
                                       0x82, 0x19, 0x01, 0x00, 0x44, 0xA1, 0x01, 0x38, 0x1E])
    assert content_aad() == CONTENT_AAD_BYTES
    assert CONTENT_AAD_BYTES == bytes([0x83, 0x67, 0x45, 0x6E, 0x63, 0x72, 0x79, 0x70, 0x74,
                                       0x43, 0xA1, 0x01, 0x03, 0x40])


def test_primitives_known_answers():
    """AES-256 key wrap of a 256-bit key (RFC 3394 §4.6) and P-256 points."""
    kek = bytes(range(32))
    data = h("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
    wrapped = h("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
    assert aes_key_wrap(kek, data) == wrapped
    assert aes_key_unwrap(kek, wrapped) == data
    # SEC 2 generator: the point of scalar 1.
    assert point_of((1).to_bytes(32, "big")).hex() == (
        "04" "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")


def test_manifest_parser_refuses_bad_values():
    """The value rules of Manifest::parse, on the basic vector's manifest."""
    v = load_vector(VALID_VECTORS[0] if VALID_VECTORS else None)
    good = cbor2.loads(h(v.expected["manifest"]))
    assert parse_manifest(cbor2.dumps(good))["count"] == v.inputs["count"]
    for key, bad in ((1, 2), (8, 0), (8, MAX_COUNT + 1), (9, U64_MAX), (10, [2**32]),
                     (10, list(range(65))), (11, [b"\x02", b"\x01"]), (11, [b"", b""]),
                     (11, [b"\x01", b"\x01\x02"]), (2, b"\x00" * 15), (14, b"\x00" * 31),
                     (21, "x" * 65), (12, b"bytes")):
        m = dict(good)
        m[key] = bad
        with pytest.raises(Malformed):
            parse_manifest(cbor2.dumps(m))
    m = dict(good)
    del m[22]
    with pytest.raises(Malformed):
        parse_manifest(cbor2.dumps(m))
    with pytest.raises(Malformed):
        parse_manifest(cbor2.dumps(good) + b"\x00")


# ---------------------------------------------------------------------------
# Tests: the valid vectors
# ---------------------------------------------------------------------------


@parametrize_valid
def test_entropy_stream(vpath):
    """The documented test entropy: block k = SHA-256(seed || BE64(k));
    seal_for draws the CEK (block 0), the IV (first 12 bytes of block 1)
    and the ephemeral scalar (block 2, drawn again while not in [1, n-1])."""
    v = load_vector(vpath)
    seed = h(v.inputs["entropy_seed"])
    block = [hashlib.sha256(seed + k.to_bytes(8, "big")).digest() for k in range(3)]
    assert block[0] == h(v.expected["content_key"])
    assert block[1][:IV_LEN] == h(v.expected["iv"])
    assert 1 <= int.from_bytes(block[2], "big") < upk.P256_ORDER
    assert block[2] == h(v.expected["ephemeral_scalar"])


@parametrize_valid
def test_outer_layer(vpath):
    """The COSE_Encrypt parses strictly; kid, IV, ephemeral key and wrapped
    key are the expected ones; the ephemeral point is the expected scalar's."""
    v = load_vector(vpath)
    o = parse_package(v.package)
    e = v.expected
    assert len(v.package) == e["package_size"]
    assert o.kid == hashlib.sha256(point_of(v.scalar)).digest() == h(e["kid"])
    assert o.iv == h(e["iv"])
    assert (o.ephemeral_x, o.ephemeral_y) == (h(e["ephemeral_x"]), h(e["ephemeral_y"]))
    assert b"\x04" + o.ephemeral_x + o.ephemeral_y == point_of(h(e["ephemeral_scalar"]))
    assert o.wrapped_key == h(e["wrapped_key"])
    assert encode_package(o) == v.package
    # The byte layout of docs/formats.md: 22-byte head, ciphertext, 161-byte recipient.
    n = len(o.ciphertext)
    head = {True: 3, False: 5}[n <= 0xFFFF]
    assert v.package[:10] == bytes.fromhex("d86084 43a10103 a1054c".replace(" ", ""))
    assert len(v.package) == 22 + head + n + 161


@parametrize_valid
def test_open_and_reseal(vpath):
    """ECDH + HKDF + AES-KW recover the expected CEK, AES-256-GCM opens the
    ciphertext, and sealing the plaintext again with the vector's CEK, IV and
    ephemeral scalar gives the package file back, byte for byte."""
    v = load_vector(vpath)
    o = parse_package(v.package)
    signed, cek = open_package(o, v.scalar)
    assert cek == h(v.expected["content_key"])
    assert len(o.ciphertext) == len(signed) + TAG_LEN
    assert signed[:-64] == h(v.expected["signed_without_signature"])
    again = seal(signed, point_of(v.scalar), cek, o.iv, h(v.expected["ephemeral_scalar"]))
    assert again == v.package
    # Another key does not open it, even past the kid check.
    other = ((int.from_bytes(v.scalar, "big") % (upk.P256_ORDER - 1)) + 1).to_bytes(32, "big")
    with pytest.raises(OpenFailed) as err:
        open_package(o, other)
    assert err.value.reason == "kid"
    with pytest.raises(OpenFailed) as err:
        open_package(o, other, check_kid=False)
    assert err.value.reason == "unwrap"


@parametrize_valid
def test_signature(vpath):
    """The COSE_Sign1 parses strictly, x5chain is the device CA certificate,
    ES256 verifies with its key (which is the PKCS#8 key of the inputs), the
    device CA is signed by the root, and any flipped bit breaks it."""
    v = load_vector(vpath)
    signed, _ = open_package(parse_package(v.package), v.scalar)
    s = parse_sign1(signed)
    dca_der = h(v.inputs["device_ca_cert_der"])
    assert s.x5chain == dca_der
    assert cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [PROTECTED_ES256, {HDR_X5CHAIN: dca_der}, s.payload,
                                                s.signature])) == signed
    verify_signature(s, dca_der)
    dca = x509.load_der_x509_certificate(dca_der)
    key = serialization.load_der_private_key(h(v.inputs["device_ca_pkcs8"]), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key().public_numbers() == dca.public_key().public_numbers()
    dca.verify_directly_issued_by(x509.load_der_x509_certificate(h(v.inputs["root_cert_der"])))
    for which in ("signature", "payload"):
        b = bytearray(getattr(s, which))
        b[len(b) // 2] ^= 0x01
        forged = upk.Sign1(s.protected, s.x5chain, **{"payload": s.payload, "signature": s.signature,
                                                      which: bytes(b)})
        with pytest.raises(BadSignature):
            verify_signature(forged, dca_der)


@parametrize_valid
def test_manifest_fields(vpath):
    """The manifest is the expected bytes, is what cbor2 encodes from the
    inputs, and each parsed field is the inputs' value."""
    v = load_vector(vpath)
    i = v.inputs
    signed, _ = open_package(parse_package(v.package), v.scalar)
    payload = parse_sign1(signed).payload
    assert payload == h(v.expected["manifest"]) == manifest_from_inputs(i)
    m = parse_manifest(payload)
    assert m["package_id"] == h(i["package_id"])
    assert (m["oem_id"], m["product_id"]) == (i["oem_id"], i["product_id"])
    assert m["guardian"] == v.guardian_id == h(v.expected["guardian_id"])
    assert (m["created"], m["expires"]) == (i["created"], i["expires"])
    assert (m["count"], m["serial_start"]) == (i["count"], i["serial_start"])
    assert m["device_types"] == i["device_types"]
    assert m["uid_range"] == (None if i["uid_range"] is None else tuple(h(x) for x in i["uid_range"]))
    assert m["template"] == i["template"]
    assert m["issuing_ca_cert"] == h(i["issuing_ca_cert_der"])
    assert m["issuing_ca_key"] == h(i["issuing_ca_scalar"])
    assert m["device_ca_cert"] == h(i["device_ca_cert_der"])
    assert m["root_cert"] == h(i["root_cert_der"])
    assert m["product_key"] == h(i["product_scalar"])
    assert m["mastering_cert"] == h(i["mastering_cert_der"])
    assert m["release_upk"] == h(i["release_upk"])
    assert m["release_enc"] == h(i["release_enc"])
    assert (m["oem_name"], m["product_name"]) == (i["oem_name"], i["product_name"])


@parametrize_valid
def test_certificates_and_keys(vpath):
    """The issuing CA scalar is its certificate's key, the issuing CA is
    signed by the device CA, the mastering certificate by the root, the
    Guardian's key-agreement certificate (whose SHA-256 is its ID) by its
    signing certificate and for its scalar; OEM and product IDs and path
    lengths are as wrap.rs and oem.rs issue them."""
    v = load_vector(vpath)
    i = v.inputs
    cert = lambda k: x509.load_der_x509_certificate(h(i[k]))  # noqa: E731
    root, dca, issuing = cert("root_cert_der"), cert("device_ca_cert_der"), cert("issuing_ca_cert_der")
    mastering = cert("mastering_cert_der")
    issuing.verify_directly_issued_by(dca)
    mastering.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert point_of(h(i["issuing_ca_scalar"])) == issuing.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    for c in (root, dca, issuing, mastering):
        assert oem_id_of(c) == i["oem_id"]
    assert _ext_uint(issuing, upk.OID_PRODUCT_ID) == i["product_id"]
    for c, path_len in ((root, 2), (dca, 1), (issuing, 0)):
        bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca and bc.path_length == path_len
    assert x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in \
        mastering.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    kem, signing = cert("guardian_kem_cert_der"), cert("guardian_signing_cert_der")
    kem.verify_directly_issued_by(signing)
    assert kem.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    assert point_of(v.scalar) == kem.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


@parametrize_valid
def test_release_opens_with_the_product_key(vpath):
    """The release in the manifest is signed by the mastering certificate,
    is for the package's product, and the product key in the manifest
    unwraps its content key and decrypts update.enc."""
    v = load_vector(vpath)
    m = v.check()
    res = upk.verify_release(m["release_upk"], m["release_enc"], m["mastering_cert"],
                             [m["product_key"]])
    rel = res["manifest"]
    assert (rel.oem_id, rel.product_id) == (m["oem_id"], m["product_id"])
    assert len(res["image"]) == rel.image_size


@parametrize_valid
def test_full_check_accepts_and_refuses_at_the_right_stage(vpath):
    """check_package accepts the vector, and refuses it at the right stage
    when it is expired, for another Guardian, or altered."""
    v = load_vector(vpath)
    i = v.inputs
    assert v.check()["package_id"] == h(i["package_id"])
    root = h(i["root_cert_der"])
    with pytest.raises(Refused):
        check_package(v.package, v.scalar, root, v.guardian_id, i["expires"])
    with pytest.raises(Refused):
        check_package(v.package, v.scalar, root, b"\x00" * 32, i["created"])
    with pytest.raises(UntrustedRoot):
        check_package(v.package, v.scalar, h(i["mastering_cert_der"]), v.guardian_id, i["created"])
    with pytest.raises(Malformed):
        v.check(v.package + b"\x00")
    for at in (30, len(v.package) // 2, len(v.package) - 170, len(v.package) - 5):
        bad = bytearray(v.package)
        bad[at] ^= 0x01
        with pytest.raises((OpenFailed, Malformed)):
            v.check(bytes(bad))


# ---------------------------------------------------------------------------
# Tests: the invalid vectors
# ---------------------------------------------------------------------------


@parametrize_invalid
def test_invalid_vector_is_refused_at_its_stage(vpath):
    """An attack fixture fails, at the stage it names, for the reason its
    name says; undoing the attack gives a package that passes."""
    v = load_vector(vpath)
    kind = v.meta.get("expected_error")
    assert kind in EXPECTED_ERROR_KINDS, f"unknown expected_error {kind!r}"
    with pytest.raises(PackageCheckError) as e:
        v.check()
    assert e.value.kind == kind, f"refused as {e.value.kind} ({e.value}), expected {kind}"
    attack, name = v.meta["attack"], vpath.name
    o = parse_package(v.package)
    if name == "wrong-guardian":
        assert e.value.reason == "kid"
        with pytest.raises(OpenFailed) as e2:
            open_package(o, v.scalar, check_kid=False)
        assert e2.value.reason == "unwrap"
        other = h(attack["sealed_to_scalar"])
        signed, _ = open_package(o, other)
        verify_signature(parse_sign1(signed), h(v.inputs["device_ca_cert_der"]))
    elif name == "tampered":
        assert e.value.reason == "decrypt"
        assert isinstance(e.value.__cause__, InvalidTag)
        fixed = bytearray(v.package)
        fixed[attack["package_offset"]] ^= attack["xor"]
        assert v.check(bytes(fixed))["package_id"] == h(v.inputs["package_id"])
    elif name == "bad-signature":
        signed, _ = open_package(o, v.scalar)
        m = parse_manifest(parse_sign1(signed).payload)
        assert m["package_id"] == h(v.inputs["package_id"])
        fixed = bytearray(signed)
        assert attack["signed_offset"] == len(signed) - 1
        fixed[attack["signed_offset"]] ^= attack["xor"]
        verify_signature(parse_sign1(bytes(fixed)), h(v.inputs["device_ca_cert_der"]))
    else:
        pytest.fail(f"unknown attack fixture {name}")
