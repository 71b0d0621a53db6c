"""Independent cross-check of trustchain's mutual authentication vectors.

This module re-implements, from ``docs/formats.md`` §19 and the standards,
the checks one side of ``tc-auth-1`` makes, and runs them over the vectors
the Rust code writes under ``tests/vectors/auth/<name>/`` (``hello.cbor``,
``response.cbor``, ``finish.cbor`` and ``vector.json``). It imports nothing
from the Rust project; its only dependencies are ``cryptography`` and
``cbor2`` (pinned in ``requirements.txt``).

The protocol:

* ``hello    = [1, 1, nonce-i, chain-i]``
* ``response = [2, 1, nonce-i, nonce-r, chain-r, sig-r]``
* ``finish   = [3, nonce-r, sig-i]``
* ``chain    = [1*4 bstr]`` (DER, leaf first, each 1..2048 bytes, the array at
  most 3072 bytes); nonces 32 bytes; signatures ``r || s``, 64 bytes; every
  message deterministic CBOR (RFC 8949 §4.2.1), at most 4096 bytes.
* ``transcript = ["tc-auth-1", 1, nonce-i, nonce-r, chain-i, chain-r, context]``,
  ``TH = SHA-256(transcript)``.
* ``sig-x = ECDSA-P256-SHA256(identity key, "TCSBM-SIGN-1" || u8(len(label)) ||
  label || TH)`` with label ``"tc-auth-1 responder"`` or ``"tc-auth-1 initiator"``
  (the SBM's SIGN_CHALLENGE, §11.5), RFC 6979 nonces.

Run::

    .venv/bin/python -m pytest -q tests/python/test_auth_crosscheck.py

``TRUSTCHAIN_VECTORS_DIR`` overrides the vector root (default:
``<repo>/tests/vectors``).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ROOT = Path(
    os.environ.get(
        "TRUSTCHAIN_VECTORS_DIR", Path(__file__).resolve().parents[1] / "vectors"
    )
)
AUTH = ROOT / "auth"

PROTOCOL = "tc-auth-1"
VERSION = 1
LABEL_I = b"tc-auth-1 initiator"
LABEL_R = b"tc-auth-1 responder"
SIGN_PREFIX = b"TCSBM-SIGN-1"
OID_OEM_ID = x509.ObjectIdentifier("1.3.6.1.4.1.32473.116.1")
OID_PRODUCT_ID = x509.ObjectIdentifier("1.3.6.1.4.1.32473.116.2")
CLIENT_AUTH = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH


class Refused(Exception):
    """A check of §19.5 failed; ``reason`` is the stable name of §19.6."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# --- Strict CBOR --------------------------------------------------------------


def strict(data: bytes):
    """Decodes one deterministic CBOR item: re-encoding must give the same
    bytes (shortest heads, definite lengths), nothing may follow it."""
    if len(data) > 4096:
        raise Refused("malformed", "message above 4096 bytes")
    try:
        item = cbor2.loads(data)
    except Exception as e:  # noqa: BLE001 - any decoding failure
        raise Refused("malformed", str(e)) from e
    if cbor2.dumps(item, canonical=True) != data:
        raise Refused("malformed", "not deterministic CBOR, or trailing bytes")
    return item


def bstr(v, n=None, lo=0, hi=None, what="field"):
    if not isinstance(v, bytes):
        raise Refused("malformed", f"{what} is not a byte string")
    if n is not None and len(v) != n:
        raise Refused("malformed", f"{what} is {len(v)} bytes, not {n}")
    if len(v) < lo or (hi is not None and len(v) > hi):
        raise Refused("malformed", f"{what} length {len(v)} out of bounds")
    return v


def chain(v, what):
    if not isinstance(v, list) or not 1 <= len(v) <= 4:
        raise Refused("malformed", f"{what}: 1 to 4 certificates")
    certs = [bstr(c, lo=1, hi=2048, what="certificate") for c in v]
    if len(cbor2.dumps(certs)) > 3072:
        raise Refused("malformed", f"{what} above 3072 bytes")
    return certs


def message(data: bytes, ty: int):
    m = strict(data)
    if not isinstance(m, list) or not m or not isinstance(m[0], int):
        raise Refused("malformed", "not an authentication message")
    if m[0] != ty:
        raise Refused("unexpected-message", f"type {m[0]}, expected {ty}")
    if ty in (1, 2):
        if len(m) < 2 or m[1] != VERSION:
            raise Refused("protocol-version", repr(m[1:2]))
    if len(m) != {1: 4, 2: 6, 3: 3}[ty]:
        raise Refused("malformed", "wrong number of elements")
    return m


def parse_hello(data):
    m = message(data, 1)
    return {"nonce": bstr(m[2], 32, what="nonce-i"), "chain": chain(m[3], "chain-i")}


def parse_response(data):
    m = message(data, 2)
    return {
        "nonce_i": bstr(m[2], 32, what="nonce-i"),
        "nonce_r": bstr(m[3], 32, what="nonce-r"),
        "chain": chain(m[4], "chain-r"),
        "sig": bstr(m[5], 64, what="sig-r"),
    }


def parse_finish(data):
    m = message(data, 3)
    return {"nonce_r": bstr(m[1], 32, what="nonce-r"), "sig": bstr(m[2], 64, what="sig-i")}


# --- Transcript and signatures ---------------------------------------------


def transcript(nonce_i, nonce_r, chain_i, chain_r, context) -> bytes:
    return cbor2.dumps(
        [PROTOCOL, VERSION, nonce_i, nonce_r, chain_i, chain_r, context],
        canonical=True,
    )


def challenge(label: bytes, th: bytes) -> bytes:
    return SIGN_PREFIX + bytes([len(label)]) + label + th


def verify_es256(key: ec.EllipticCurvePublicKey, msg: bytes, sig: bytes) -> bool:
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


# --- Chains -------------------------------------------------------------------


def ext_int(cert: x509.Certificate, oid) -> int | None:
    try:
        der = cert.extensions.get_extension_for_oid(oid).value.value
    except x509.ExtensionNotFound:
        return None
    # A DER INTEGER: 02 len value.
    assert der[0] == 0x02 and der[1] == len(der) - 2
    return int.from_bytes(der[2:], "big")


def validate_chain(ders, root: x509.Certificate, now: int):
    """Leaf first; each certificate signed by the next, the last by the
    root; all valid at ``now``; CAs above the leaf; clientAuth in the leaf."""
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    when = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    for c in certs + [root]:
        if not c.not_valid_before_utc <= when <= c.not_valid_after_utc:
            raise Refused("expired", c.subject.rfc4514_string())
    issuers = certs[1:] + [root]
    for c, issuer in zip(certs, issuers):
        if c.issuer != issuer.subject:
            raise Refused("unknown-root", c.subject.rfc4514_string())
        try:
            c.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as e:
            raise Refused("chain-bad-signature", str(e)) from e
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            raise Refused("invalid-chain", "issuer is not a CA")
    root.verify_directly_issued_by(root)
    leaf = certs[0]
    if not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False:
        raise Refused("invalid-chain", "the leaf is a CA")
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if CLIENT_AUTH not in eku:
        raise Refused("invalid-chain", "no clientAuth")
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    return leaf


def check_peer(ders, v, me_leaf: x509.Certificate):
    inp = v["inputs"]
    root = x509.load_der_x509_certificate(bytes.fromhex(inp["root_cert_der"]))
    leaf = validate_chain(ders, root, inp["now"])
    if leaf.public_key() == me_leaf.public_key():
        raise Refused("reflected")
    if ext_int(leaf, OID_OEM_ID) != ext_int(me_leaf, OID_OEM_ID):
        raise Refused("wrong-oem")
    if ext_int(leaf, OID_PRODUCT_ID) not in inp["allowed_products"]:
        raise Refused("wrong-product")
    return leaf


# --- The vectors ----------------------------------------------------------------


def vectors():
    return sorted(p for p in AUTH.iterdir() if p.is_dir())


def load(d: Path):
    v = json.loads((d / "vector.json").read_text())
    msgs = {n: (d / f"{n}.cbor").read_bytes() for n in ("hello", "response", "finish")}
    return v, msgs


def side_chain(v, side):
    return [bytes.fromhex(c) for c in v["inputs"][side]["chain"]]


def leaf_of(v, side):
    return x509.load_der_x509_certificate(side_chain(v, side)[0])


def run_responder_then_initiator(v, msgs):
    """Both sides' checks (§19.5) over the stored messages; returns TH."""
    inp = v["inputs"]
    nonce_i, nonce_r = bytes.fromhex(inp["nonce_i"]), bytes.fromhex(inp["nonce_r"])
    context = bytes.fromhex(inp["context"])
    me_i, me_r = leaf_of(v, "initiator"), leaf_of(v, "responder")
    # Responder on hello.
    h = parse_hello(msgs["hello"])
    peer_i = check_peer(h["chain"], v, me_r)
    # Initiator on response.
    r = parse_response(msgs["response"])
    if r["nonce_i"] != nonce_i:
        raise Refused("stale-nonce")
    peer_r = check_peer(r["chain"], v, me_i)
    th = hashlib.sha256(
        transcript(nonce_i, r["nonce_r"], side_chain(v, "initiator"), r["chain"], context)
    ).digest()
    if not verify_es256(peer_r.public_key(), challenge(LABEL_R, th), r["sig"]):
        raise Refused("bad-signature", "responder")
    # Responder on finish.
    f = parse_finish(msgs["finish"])
    if f["nonce_r"] != nonce_r:
        raise Refused("stale-nonce")
    th_r = hashlib.sha256(
        transcript(h["nonce"], nonce_r, h["chain"], side_chain(v, "responder"), context)
    ).digest()
    if not verify_es256(peer_i.public_key(), challenge(LABEL_I, th_r), f["sig"]):
        raise Refused("bad-signature", "initiator")
    assert th == th_r
    return th


@pytest.mark.parametrize("d", vectors(), ids=lambda d: d.name)
def test_valid_exchange(d):
    v, msgs = load(d)
    inp, exp = v["inputs"], v["expected"]
    th = run_responder_then_initiator(v, msgs)
    # The transcript and both challenge messages as the vector states them.
    t = transcript(
        bytes.fromhex(inp["nonce_i"]),
        bytes.fromhex(inp["nonce_r"]),
        side_chain(v, "initiator"),
        side_chain(v, "responder"),
        bytes.fromhex(inp["context"]),
    )
    assert t.hex() == exp["transcript"]
    assert th.hex() == exp["transcript_hash"] == hashlib.sha256(t).hexdigest()
    assert challenge(LABEL_R, th).hex() == exp["challenge_message_responder"]
    assert challenge(LABEL_I, th).hex() == exp["challenge_message_initiator"]
    # The messages, re-encoded from the inputs.
    ni, nr = bytes.fromhex(inp["nonce_i"]), bytes.fromhex(inp["nonce_r"])
    sig_r, sig_i = bytes.fromhex(exp["responder_signature"]), bytes.fromhex(exp["initiator_signature"])
    assert cbor2.dumps([1, 1, ni, side_chain(v, "initiator")]) == msgs["hello"]
    assert cbor2.dumps([2, 1, ni, nr, side_chain(v, "responder"), sig_r]) == msgs["response"]
    assert cbor2.dumps([3, nr, sig_i]) == msgs["finish"]
    # The identity keys are the leaves' keys, and the SBM's RFC 6979
    # signatures are reproduced by an independent deterministic signer.
    for side, label, sig in (("responder", LABEL_R, sig_r), ("initiator", LABEL_I, sig_i)):
        k = ec.derive_private_key(
            int.from_bytes(bytes.fromhex(inp[side]["identity_scalar"]), "big"), ec.SECP256R1()
        )
        assert k.public_key() == leaf_of(v, side).public_key()
        der = k.sign(
            challenge(label, th), ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        )
        r, s = decode_dss_signature(der)
        assert r.to_bytes(32, "big") + s.to_bytes(32, "big") == sig


def test_there_are_vectors():
    assert [d.name for d in vectors()] == ["basic", "with-context"]


def flipped(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1 :]


@pytest.mark.parametrize("d", vectors(), ids=lambda d: d.name)
def test_attacks_are_refused_with_their_reason(d):
    v, msgs = load(d)

    def refusal(**changed):
        with pytest.raises(Refused) as e:
            run_responder_then_initiator(v, {**msgs, **changed})
        return e.value.reason

    h, r, f = msgs["hello"], msgs["response"], msgs["finish"]
    # Replay: the response echoes another nonce-i; the finish another nonce-r.
    assert refusal(response=r[:5] + b"\x33" * 32 + r[37:]) == "stale-nonce"
    assert refusal(finish=f[:4] + b"\x33" * 32 + f[36:]) == "stale-nonce"
    # Tampered signatures, nonce-r, and message types.
    assert refusal(response=flipped(r, len(r) - 1)) == "bad-signature"
    assert refusal(finish=flipped(f, len(f) - 1)) == "bad-signature"
    assert refusal(response=flipped(r, 40)) == "bad-signature"
    assert refusal(hello=flipped(h, 1)) == "unexpected-message"
    assert refusal(hello=h[:2] + b"\x02" + h[3:]) == "protocol-version"
    assert refusal(finish=f + b"\x00") == "malformed"
    assert refusal(finish=f[:-1]) == "malformed"
    # A relayed response: the responder's signature over a transcript with
    # another initiator chain (here: the responder's own chain).
    inp = v["inputs"]
    other = side_chain(v, "responder")
    t = transcript(
        bytes.fromhex(inp["nonce_i"]), bytes.fromhex(inp["nonce_r"]), other, other,
        bytes.fromhex(inp["context"]),
    )
    k = ec.derive_private_key(
        int.from_bytes(bytes.fromhex(inp["responder"]["identity_scalar"]), "big"), ec.SECP256R1()
    )
    der = k.sign(challenge(LABEL_R, hashlib.sha256(t).digest()), ec.ECDSA(hashes.SHA256()))
    rr, ss = decode_dss_signature(der)
    relayed = r[:-64] + rr.to_bytes(32, "big") + ss.to_bytes(32, "big")
    assert refusal(response=relayed) == "bad-signature"
    # Reflection: the initiator's own chain in the response.
    mirror = cbor2.dumps(
        [2, 1, bytes.fromhex(inp["nonce_i"]), bytes.fromhex(inp["nonce_r"]),
         side_chain(v, "initiator"), b"\x01" * 64]
    )
    assert refusal(response=mirror) == "reflected"
    # A certificate byte changed: the chain no longer verifies.
    leaf_at = h.index(side_chain(v, "initiator")[0])
    assert refusal(hello=flipped(h, leaf_at + 200)) in ("chain-bad-signature", "malformed")
