"""Independent cross-check of trustchain's production report test vectors.

This module re-implements, from the standards and ``docs/formats.md``
("Production report"), what an OEM does with a Guardian's signed report
(``trustchain oem reconcile``), and checks the vectors the Rust code writes
under ``tests/vectors/report/<name>/`` (valid: they reconcile) and
``tests/vectors/report-invalid/<name>/`` (attack fixtures: they fail at the
check they name). It imports nothing from the Rust project; its only
dependencies are ``cryptography`` and ``cbor2`` (pinned in
``requirements.txt``), and the generic CBOR / COSE / X.509 helpers of
``test_upk_crosscheck.py`` and ``test_package_crosscheck.py``.

The format (``crates/formats/src/report.rs``, ``crates/guardian/src/report.rs``
and ``store.rs``):

* The report is a COSE_Sign1 (RFC 9052 §4.2, CBOR tag 18), ES256 (RFC 9053
  §2.1) by the Guardian's signing key, with ``x5chain`` (label 33, RFC 9360
  §2) in the unprotected header holding exactly two DER certificates: the
  Guardian's key-agreement certificate (whose SHA-256 is the Guardian ID)
  and the signing certificate that issued it.
* The payload is a deterministically encoded (RFC 8949 §4.2.1) map with
  integer keys 1 to 12: format, package ID, job, OEM ID, product ID, count,
  issued, failed, created, device records ``[serial, uid, type, status,
  cert]``, the job's log ``[n, action, serial / null, cert-sha256 / null,
  time]`` and the log head.
* The log is a hash chain: ``H_0 = SHA-256(package ID)``,
  ``H_i = SHA-256(H_{i-1} || CBOR of entry i)``; the head is ``H_n``.

The checks, their order and their names follow ``crates/oem/src/reconcile.rs``
(see ``reconcile`` below). The "wrapped" side (what the OEM's audit log and
``OEM_DIR/packages`` say about the package) is taken from the vector's
inputs. Steps 19-24 of formats.md §16.4 (the report against the reports the
OEM kept before) compare the OEM's own state, not the format, and are not
re-done here; ``crates/cli/tests/attacks.rs`` tests them end to end.

Run::

    python3 -m venv /tmp/pyvenv3 && /tmp/pyvenv3/bin/pip install -r tests/python/requirements.txt
    /tmp/pyvenv3/bin/python -m pytest -q tests/python

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_upk_crosscheck as upk  # noqa: E402  (generic helpers; its tests are not re-collected)
import test_package_crosscheck as pkg  # noqa: E402

# ---------------------------------------------------------------------------
# Constants of the format (crates/formats/src/report.rs)
# ---------------------------------------------------------------------------

TAG_SIGN1 = 18  # RFC 9052 §4.2
HDR_ALG = 1  # RFC 9052 §3.1
HDR_X5CHAIN = 33  # RFC 9360 §2
ALG_ES256 = -7  # RFC 9053 §2.1
#: ``{1: -7}``: the only protected header.
PROTECTED_ES256 = bytes.fromhex("a10126")

FORMAT_VERSION = 1
MAX_REPORT_LEN = 512 * 1024 * 1024
MAX_CERT_LEN = 2048
MAX_UID_LEN = 32
MAX_ACTION_LEN = 16
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

#: Device status (``report::status``).
STATUS_ISSUED = 0
STATUS_FAILED = 1

#: Payload keys, in their one encoding order.
K = dict(FORMAT=1, PACKAGE_ID=2, JOB=3, OEM_ID=4, PRODUCT_ID=5, COUNT=6, ISSUED=7, FAILED=8,
         CREATED=9, DEVICES=10, LOG=11, LOG_HEAD=12)
REPORT_KEYS = list(range(1, 13))
assert sorted(K.values()) == REPORT_KEYS

#: The anomaly kinds, in reconciliation order (reconcile.rs). ``signature``
#: is a hard error there; here it is one kind, so the later checks still run.
ANOMALY_KINDS = ["guardian", "guardian-chain", "signature", "job", "over-count",
                 "record-count", "serial-range", "duplicate-serial", "duplicate-uid", "issuer",
                 "status", "tally", "log-sequence", "chain", "not-logged"]
EXPECTED_ERROR_KINDS = {"signature", "chain", "duplicate-uid", "over-count"}

# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


class ReportCheckError(Exception):
    kind = "unknown"


class Malformed(ReportCheckError):
    """Not the one allowed CBOR/COSE shape (``Report::parse`` refuses it)."""

    kind = "malformed"


@contextlib.contextmanager
def _malformed():
    """Turns the helpers' errors into this module's Malformed."""
    try:
        yield
    except (upk.UpkCheckError, pkg.PackageCheckError) as e:
        raise Malformed(str(e)) from e


@dataclass(frozen=True)
class Device:
    serial: int
    uid: bytes
    device_type: int
    status: int
    cert: bytes


@dataclass(frozen=True)
class LogEntry:
    n: int
    action: str
    serial: Optional[int]
    cert_sha256: Optional[bytes]
    time: int
    raw: bytes  # the entry's CBOR, as hashed into the chain


@dataclass(frozen=True)
class Body:
    package_id: bytes
    job: int
    oem_id: int
    product_id: int
    count: int
    issued: int
    failed: int
    created: int
    devices: tuple
    log: tuple
    log_head: bytes


@dataclass(frozen=True)
class Report:
    protected: bytes
    kem_cert: bytes
    signing_cert: bytes
    payload: bytes
    signature: bytes
    body: Body


def parse_report(data: bytes) -> Report:
    """``18([h'A10126', {33: [kem-cert: bstr, signing-cert: bstr]}, payload: bstr,
    signature: bstr .size 64])``, deterministic CBOR, certificates at most
    2048 bytes. Raises :class:`Malformed`."""
    if len(data) > MAX_REPORT_LEN:
        raise Malformed(f"report is {len(data)} bytes, more than {MAX_REPORT_LEN}")
    with _malformed():
        item = upk.decode_deterministic(data, "report")
        if not isinstance(item, cbor2.CBORTag) or item.tag != TAG_SIGN1:
            raise Malformed("not a COSE_Sign1 (CBOR tag 18)")
        protected, unprotected, payload, signature = upk._array(item.value, "COSE_Sign1", 4)
        if upk._bstr(protected, "protected header") != PROTECTED_ES256:
            raise Malformed("protected header is not {1: -7} (ES256)")
        x5chain = upk._map(unprotected, "unprotected header", [HDR_X5CHAIN])[HDR_X5CHAIN]
        kem, signing = upk._array(x5chain, "x5chain [key-agreement cert, signing cert]", 2)
        kem = upk._bstr(kem, "Guardian certificate", max_len=MAX_CERT_LEN)
        signing = upk._bstr(signing, "Guardian signing certificate", max_len=MAX_CERT_LEN)
        payload = upk._bstr(payload, "payload", max_len=MAX_REPORT_LEN)
        signature = upk._bstr(signature, "signature", length=64)
    return Report(protected, kem, signing, payload, signature, parse_payload(payload))


def _opt(v: Any, parse) -> Any:
    return None if v is None else parse(v)


def parse_payload(payload: bytes) -> Body:
    """The payload: exactly keys 1..12 in order, with the value rules of
    ``Report::parse``. Raises :class:`Malformed`."""
    with _malformed():
        m = upk._map(upk.decode_deterministic(payload, "report payload"), "report", REPORT_KEYS)
        if upk._uint(m[K["FORMAT"]], "format") != FORMAT_VERSION:
            raise Malformed(f"format {m[K['FORMAT']]} is not {FORMAT_VERSION}")
        devices = []
        for d in upk._array(m[K["DEVICES"]], "devices"):
            serial, uid, ty, status, cert = upk._array(d, "a device record", 5)
            devices.append(Device(upk._uint(serial, "serial"),
                                  upk._bstr(uid, "UID", max_len=MAX_UID_LEN),
                                  upk._uint(ty, "device type"),
                                  upk._uint(status, "status"),
                                  upk._bstr(cert, "certificate", max_len=MAX_CERT_LEN)))
        log = []
        for e in upk._array(m[K["LOG"]], "log"):
            n, action, serial, cert, time = upk._array(e, "a log entry", 5)
            log.append(LogEntry(upk._uint(n, "n"),
                                pkg._tstr(action, "action", MAX_ACTION_LEN),
                                _opt(serial, lambda s: upk._uint(s, "serial")),
                                _opt(cert, lambda c: upk._bstr(c, "certificate SHA-256", length=32)),
                                upk._uint(time, "time"),
                                cbor2.dumps(e)))
        head = upk._bstr(m[K["LOG_HEAD"]], "log head", length=32)
        body = Body(upk._bstr(m[K["PACKAGE_ID"]], "package ID", length=16),
                    upk._uint(m[K["JOB"]], "job"),
                    upk._uint(m[K["OEM_ID"]], "OEM ID", 1, U32_MAX),
                    upk._uint(m[K["PRODUCT_ID"]], "product ID", 1, U32_MAX),
                    upk._uint(m[K["COUNT"]], "count"),
                    upk._uint(m[K["ISSUED"]], "issued"),
                    upk._uint(m[K["FAILED"]], "failed"),
                    upk._uint(m[K["CREATED"]], "created"),
                    tuple(devices), tuple(log), head)
    # The payload is deterministic, so each entry re-encodes to the bytes it
    # has in the payload: the log entries sit right before `0c 58 20 <head>`.
    joined = b"".join(e.raw for e in log)
    if payload[len(payload) - 35 - len(joined):len(payload) - 35] != joined or \
            payload[-35:-32] != bytes.fromhex("0c5820"):
        raise Malformed("log entries are not where the payload has them")
    return body


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 §4.4: ``["Signature1", protected, h'', payload]``."""
    return upk.sig_structure(protected, payload)


def verify_signature(r: Report) -> bool:
    """ES256 over the Sig_structure with the key of the signing certificate
    (the second x5chain certificate)."""
    try:
        upk.verify_sign1(upk.Sign1(r.protected, r.signing_cert, r.payload, r.signature),
                         r.signing_cert)
        return True
    except upk.BadSignature:
        return False


def issued_by(child_der: bytes, issuer_der: bytes) -> bool:
    """The child names the issuer's subject as issuer and the issuer's key
    signed it (RFC 5280 signature check only, as ``pki::verify_issued_by``)."""
    try:
        x509.load_der_x509_certificate(child_der).verify_directly_issued_by(
            x509.load_der_x509_certificate(issuer_der))
        return True
    except Exception:  # ValueError, TypeError, InvalidSignature
        return False


def log_chain(package_id: bytes, raws) -> list:
    """``[H_0, H_1, …]``: ``H_0 = SHA-256(package ID)``,
    ``H_i = SHA-256(H_{i-1} || entry_i)``."""
    hs = [hashlib.sha256(package_id).digest()]
    for raw in raws:
        hs.append(hashlib.sha256(hs[-1] + raw).digest())
    return hs


# ---------------------------------------------------------------------------
# Reconciliation (crates/oem/src/reconcile.rs), in its order
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Wrapped:
    """What the OEM knows of the package: its audit log's `wrap` record and
    the issuing CA kept in ``OEM_DIR/packages``."""

    guardian_id: bytes
    oem_id: int
    product_id: int
    count: int
    serial_start: int
    issuing_ca: bytes


def reconcile(r: Report, w: Wrapped) -> list:
    """Every anomaly as ``(kind, message)``, in the order of reconcile.rs."""
    b = r.body
    out = []
    add = lambda kind, msg: out.append((kind, msg))  # noqa: E731
    if hashlib.sha256(r.kem_cert).digest() != w.guardian_id:
        add("guardian", "the report is not from the Guardian the package was wrapped for")
    if not issued_by(r.kem_cert, r.signing_cert):
        add("guardian-chain", "the Guardian's certificates do not chain")
    if not verify_signature(r):
        add("signature", "the report's signature does not verify")
    if (b.count, b.product_id, b.oem_id) != (w.count, w.product_id, w.oem_id):
        add("job", f"the report's job (count {b.count}, product {b.product_id}) is not the wrapped one")
    if b.issued + b.failed > w.count:
        add("over-count", f"over-production: {b.issued} issued + {b.failed} failed > count {w.count}")
    if len(b.devices) != b.issued + b.failed:
        add("record-count", f"{len(b.devices)} device records for {b.issued + b.failed} certificates")
    serials, uids, certs = set(), set(), set()
    issued = failed = 0
    for d in b.devices:
        if not w.serial_start <= d.serial < w.serial_start + w.count:
            add("serial-range", f"serial {d.serial} is outside {w.serial_start}..{w.serial_start + w.count}")
        if d.serial in serials:
            add("duplicate-serial", f"serial {d.serial} appears twice")
        serials.add(d.serial)
        if d.uid in uids:
            add("duplicate-uid", f"UID {d.uid.hex()} appears twice (clone?)")
        uids.add(d.uid)
        if not issued_by(d.cert, w.issuing_ca):
            add("issuer", f"serial {d.serial}: certificate not issued by the package's issuing CA")
        certs.add((d.serial, hashlib.sha256(d.cert).digest()))
        if d.status == STATUS_ISSUED:
            issued += 1
        elif d.status == STATUS_FAILED:
            failed += 1
        else:
            add("status", f"serial {d.serial}: unknown status {d.status}")
    if (issued, failed) != (b.issued, b.failed):
        add("tally", f"the records count {issued} issued / {failed} failed, "
                     f"the report says {b.issued} / {b.failed}")
    logged = set()
    expected_n = 1
    for e in b.log:
        if e.n != expected_n:
            add("log-sequence", f"log entry {e.n} out of sequence (expected {expected_n})")
        expected_n = e.n + 1
        if e.action == "issue" and e.serial is not None and e.cert_sha256 is not None:
            logged.add((e.serial, e.cert_sha256))
    if log_chain(b.package_id, (e.raw for e in b.log))[-1] != b.log_head:
        add("chain", "the log's hash chain does not lead to the signed head")
    for serial, _ in sorted(certs - logged):
        add("not-logged", f"serial {serial}: certificate not in the Guardian's log")
    assert all(kind in ANOMALY_KINDS for kind, _ in out)
    return out


def kinds(anomalies: list) -> list:
    return [k for k, _ in anomalies]


# ---------------------------------------------------------------------------
# Vector discovery
# ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
VECTORS_DIR = Path(os.environ.get("TRUSTCHAIN_VECTORS_DIR", REPO / "tests" / "vectors"))
VALID_DIR = VECTORS_DIR / "report"
INVALID_DIR = VECTORS_DIR / "report-invalid"


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
    report: bytes

    @property
    def inputs(self) -> dict:
        return self.meta["inputs"]

    @property
    def expected(self) -> dict:
        return self.meta["expected"]

    @property
    def attack(self) -> dict:
        return self.meta.get("attack") or {}

    @property
    def wrapped(self) -> Wrapped:
        i = self.inputs
        return Wrapped(hashlib.sha256(h(i["guardian_kem_cert_der"])).digest(), i["oem_id"],
                       i["product_id"], i["count"], i["serial_start"], h(i["issuing_ca_cert_der"]))

    def signed_log(self) -> list:
        """The input log entries that were signed (all but a removed one)."""
        removed = self.attack.get("removed_log_entry")
        return [e for e in self.inputs["log"] if e["n"] != removed]


@functools.lru_cache(maxsize=None)
def load_vector(path: Optional[Path]) -> Vector:
    if path is None:
        pytest.fail(f"no report test vectors: {VALID_DIR} has no vector directory "
                    f"(set TRUSTCHAIN_VECTORS_DIR or generate the vectors)", pytrace=False)
    for name in ("report.tcrep", "vector.json"):
        assert (path / name).is_file(), f"{path} lacks {name}"
    meta = json.loads((path / "vector.json").read_text())
    return Vector(path, meta, (path / "report.tcrep").read_bytes())


def _ids(paths: list) -> list:
    return [p.name for p in paths]


def test_vectors_exist():
    """Fails loudly (never skips) when there is nothing to cross-check."""
    if not VALID_VECTORS:
        pytest.fail(f"no vector directory under {VALID_DIR} (vectors root {VECTORS_DIR}, "
                    f"override with TRUSTCHAIN_VECTORS_DIR)", pytrace=False)
    if not INVALID_VECTORS:
        pytest.fail(f"no vector directory under {INVALID_DIR}", pytrace=False)


parametrize_valid = pytest.mark.parametrize(
    "vpath", VALID_VECTORS or [pytest.param(None, id="NO-VECTORS")],
    ids=_ids(VALID_VECTORS) if VALID_VECTORS else None)
parametrize_invalid = pytest.mark.parametrize(
    "vpath", INVALID_VECTORS or [pytest.param(None, id="NO-VECTORS")],
    ids=_ids(INVALID_VECTORS) if INVALID_VECTORS else None)
parametrize_all = pytest.mark.parametrize(
    "vpath", (VALID_VECTORS + INVALID_VECTORS) or [pytest.param(None, id="NO-VECTORS")],
    ids=[f"{p.parent.name}/{p.name}" for p in VALID_VECTORS + INVALID_VECTORS] or None)

# ---------------------------------------------------------------------------
# Encoding from the inputs, with cbor2
# ---------------------------------------------------------------------------


def log_entry_cbor(e: dict) -> bytes:
    """``[n, action, serial / null, cert-sha256 / null, time]``."""
    return cbor2.dumps([e["n"], e["action"], e["serial"],
                        None if e["cert_sha256"] is None else h(e["cert_sha256"]), e["time"]])


def payload_from_inputs(v: Vector) -> bytes:
    """The payload the inputs describe (the head over the whole input log,
    the log as signed), encoded key by key with cbor2."""
    i = v.inputs
    head = log_chain(h(i["package_id"]), [log_entry_cbor(e) for e in i["log"]])[-1]
    m = {
        1: FORMAT_VERSION,
        2: h(i["package_id"]),
        3: i["job"],
        4: i["oem_id"],
        5: i["product_id"],
        6: i["count"],
        7: i["issued"],
        8: i["failed"],
        9: i["created"],
        10: [[d["serial"], h(d["uid"]), d["device_type"], d["status"], h(d["cert_der"])]
             for d in i["devices"]],
        11: [cbor2.loads(log_entry_cbor(e)) for e in v.signed_log()],
        12: head,
    }
    return cbor2.dumps(m)


def encode_report(kem: bytes, signing: bytes, payload: bytes, signature: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [PROTECTED_ES256, {HDR_X5CHAIN: [kem, signing]},
                                                payload, signature]))


def sign_es256(pkcs8: bytes, protected: bytes, payload: bytes) -> bytes:
    """ES256 with the PKCS#8 key: ``r || s``, 32 bytes each."""
    key = serialization.load_der_private_key(pkcs8, password=None)
    r, s = decode_dss_signature(key.sign(sig_structure(protected, payload),
                                         ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def resign(v: Vector, payload: bytes) -> bytes:
    """A report of ``payload`` signed with the vector's Guardian key."""
    i = v.inputs
    sig = sign_es256(h(i["guardian_signing_pkcs8"]), PROTECTED_ES256, payload)
    return encode_report(h(i["guardian_kem_cert_der"]), h(i["guardian_signing_cert_der"]),
                         payload, sig)


# ---------------------------------------------------------------------------
# Tests: constants and the worked example
# ---------------------------------------------------------------------------


def test_constants_and_worked_example():
    """The protected header, the log entry and chain step of docs/formats.md."""
    assert cbor2.dumps({HDR_ALG: ALG_ES256}) == PROTECTED_ES256
    entry = cbor2.dumps([1, "import", None, None, 1767225660])
    assert entry.hex() == "850166696d706f7274f6f61a6955b93c"
    issue = cbor2.dumps([2, "issue", 5000, b"\xab" * 32, 1767225720])
    assert issue.hex() == "85026569737375651913885820" + "ab" * 32 + "1a6955b978"
    fail = cbor2.dumps([5, "fail", 1, None, 1767225900])
    assert fail.hex() == "8505646661696c01f61a6955ba2c"
    # The chain step: H_1 = SHA-256(H_0 || entry_1).
    pid = bytes(16)
    h0 = hashlib.sha256(pid).digest()
    assert log_chain(pid, [entry]) == [h0, hashlib.sha256(h0 + entry).digest()]


# ---------------------------------------------------------------------------
# Tests: every vector (valid and attack fixtures)
# ---------------------------------------------------------------------------


@parametrize_all
def test_envelope(vpath):
    """The report parses strictly, re-encodes to itself with cbor2, and
    without its signature is the expected bytes."""
    v = load_vector(vpath)
    r = parse_report(v.report)
    assert len(v.report) == v.expected["report_size"]
    assert r.kem_cert == h(v.inputs["guardian_kem_cert_der"])
    assert r.signing_cert == h(v.inputs["guardian_signing_cert_der"])
    assert encode_report(r.kem_cert, r.signing_cert, r.payload, r.signature) == v.report
    fixed = bytearray(v.report)
    if "report_offset" in v.attack:
        fixed[v.attack["report_offset"]] ^= v.attack["xor"]
    assert bytes(fixed[:-64]) == h(v.expected["signed_without_signature"])
    # The byte layout: tag, array, protected, {33: [kem, signing]}.
    assert v.report[:10] == bytes.fromhex("d28443a10126a1182182")
    for bad in (v.report + b"\x00", v.report[:-1], v.report[:len(v.report) // 2]):
        with pytest.raises(Malformed):
            parse_report(bad)


@parametrize_all
def test_log_entries_and_chain(vpath):
    """Each input log entry encodes (cbor2) to the expected bytes; the chain
    over them is the expected one and ends at the signed head; the report's
    log entries are those signed, byte for byte."""
    v = load_vector(vpath)
    entries = [log_entry_cbor(e) for e in v.inputs["log"]]
    assert [e.hex() for e in entries] == v.expected["log_entries"]
    hs = log_chain(h(v.inputs["package_id"]), entries)
    assert [x.hex() for x in hs] == v.expected["log_chain"]
    assert hs[-1].hex() == v.expected["log_head"]
    r = parse_report(v.report)
    assert r.body.log_head == hs[-1]
    assert [e.raw for e in r.body.log] == [log_entry_cbor(e) for e in v.signed_log()]


@parametrize_all
def test_payload_and_fields(vpath):
    """The payload is the expected bytes and what cbor2 encodes from the
    inputs; each decoded field is the inputs' value."""
    v = load_vector(vpath)
    i = v.inputs
    r = parse_report(v.report)
    if "report_offset" not in v.attack:
        assert r.payload == h(v.expected["payload"])
    assert payload_from_inputs(v) == h(v.expected["payload"])
    b = r.body
    assert b.package_id == h(i["package_id"])
    assert (b.job, b.oem_id, b.product_id) == (i["job"], i["oem_id"], i["product_id"])
    assert (b.count, b.issued, b.failed) == (i["count"], i["issued"], i["failed"])
    assert b.created == i["created"] ^ v.attack.get("xor", 0)
    assert b.devices == tuple(Device(d["serial"], h(d["uid"]), d["device_type"], d["status"],
                                     h(d["cert_der"])) for d in i["devices"])
    assert [(e.n, e.action, e.serial, None if e.cert_sha256 is None else e.cert_sha256.hex(), e.time)
            for e in b.log] == [(e["n"], e["action"], e["serial"], e["cert_sha256"], e["time"])
                                for e in v.signed_log()]


@parametrize_all
def test_certificates(vpath):
    """The Guardian's key-agreement certificate is signed by its
    (self-signed) signing certificate, whose key is the PKCS#8 key of the
    inputs; the Guardian ID is SHA-256 of the key-agreement certificate. The
    issuing CA chains to the root through the device CA; every device
    certificate is issued by the issuing CA, carries the OEM and product IDs,
    and its SHA-256 is in an ``issue`` entry with its serial."""
    v = load_vector(vpath)
    i = v.inputs
    cert = lambda k: x509.load_der_x509_certificate(h(i[k]))  # noqa: E731
    kem, signing = cert("guardian_kem_cert_der"), cert("guardian_signing_cert_der")
    kem.verify_directly_issued_by(signing)
    signing.verify_directly_issued_by(signing)
    assert kem.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    key = serialization.load_der_private_key(h(i["guardian_signing_pkcs8"]), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key().public_numbers() == signing.public_key().public_numbers()
    assert hashlib.sha256(h(i["guardian_kem_cert_der"])).digest().hex() == v.expected["guardian_id"]
    root, dca, issuing = cert("root_cert_der"), cert("device_ca_cert_der"), cert("issuing_ca_cert_der")
    root.verify_directly_issued_by(root)
    dca.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(dca)
    issue_entries = {(e["serial"], e["cert_sha256"]) for e in i["log"] if e["action"] == "issue"}
    for d in i["devices"]:
        der = h(d["cert_der"])
        c = x509.load_der_x509_certificate(der)
        c.verify_directly_issued_by(issuing)
        assert pkg.oem_id_of(c) == i["oem_id"]
        assert pkg._ext_uint(c, upk.OID_PRODUCT_ID) == i["product_id"]
        assert (d["serial"], hashlib.sha256(der).hexdigest()) in issue_entries


# ---------------------------------------------------------------------------
# Tests: the valid vectors
# ---------------------------------------------------------------------------


@parametrize_valid
def test_signature(vpath):
    """ES256 verifies with the signing certificate's key; any flipped bit of
    the signature or the payload, or another key, breaks it."""
    v = load_vector(vpath)
    r = parse_report(v.report)
    assert verify_signature(r)
    for which in ("signature", "payload"):
        b = bytearray(getattr(r, which))
        b[len(b) // 2] ^= 0x01
        forged = Report(**{**r.__dict__, which: bytes(b)})
        assert not verify_signature(forged)
    other = ec.generate_private_key(ec.SECP256R1())
    der = encode_dss_signature(int.from_bytes(r.signature[:32], "big"),
                               int.from_bytes(r.signature[32:], "big"))
    with pytest.raises(InvalidSignature):
        other.public_key().verify(der, sig_structure(r.protected, r.payload),
                                  ec.ECDSA(hashes.SHA256()))


@parametrize_valid
def test_reconciles(vpath):
    """Nothing is wrong: counts, statuses, serials, UIDs, issuance, log."""
    v = load_vector(vpath)
    r = parse_report(v.report)
    assert reconcile(r, v.wrapped) == []
    b = r.body
    assert b.issued + b.failed == len(b.devices) <= b.count
    assert sum(d.status == STATUS_FAILED for d in b.devices) == b.failed
    assert len({d.serial for d in b.devices}) == len({d.uid for d in b.devices}) == len(b.devices)
    assert [e.n for e in b.log] == list(range(1, len(b.log) + 1))
    assert b.log[0].action == "import"
    fails = [e.serial for e in b.log if e.action == "fail"]
    assert sorted(fails) == sorted(d.serial for d in b.devices if d.status == STATUS_FAILED)


@parametrize_valid
def test_reconcile_detects_each_change(vpath):
    """Re-signed in Python with the Guardian's key, each altered report is
    found by the check that names the change."""
    v = load_vector(vpath)
    r = parse_report(v.report)
    good = cbor2.loads(r.payload)
    assert reconcile(parse_report(resign(v, cbor2.dumps(good))), v.wrapped) == []

    def found(change) -> list:
        m = cbor2.loads(r.payload)
        change(m)
        return kinds(reconcile(parse_report(resign(v, cbor2.dumps(m))), v.wrapped))

    def set_(key, value):
        return lambda m: m.__setitem__(key, value)

    assert found(set_(K["PRODUCT_ID"], v.inputs["product_id"] + 1)) == ["job"]
    assert found(set_(K["ISSUED"], good[K["ISSUED"]] + 1)) == ["record-count", "tally"]
    assert found(set_(K["LOG_HEAD"], bytes(32))) == ["chain"]
    if len(good[K["LOG"]]) > 1:
        assert found(lambda m: m[K["LOG"]].reverse())[:2] == ["log-sequence", "log-sequence"]
        assert "chain" in found(lambda m: m[K["LOG"]].reverse())
    if good[K["DEVICES"]]:
        def dup_serial(m):
            m[K["DEVICES"]][-1][0] = m[K["DEVICES"]][0][0]
        assert "duplicate-serial" in found(dup_serial)

        def status(m):
            m[K["DEVICES"]][0][3] = 2
        assert found(status) == ["status", "tally"]

        def other_cert(m):
            m[K["DEVICES"]][0][4] = h(v.inputs["issuing_ca_cert_der"])
        assert found(other_cert) == ["issuer", "not-logged"]

        def drop_issue(m):
            # Hide the first issue entry (n = 2), the head unchanged.
            del m[K["LOG"]][1]
        assert found(drop_issue) == ["log-sequence", "chain", "not-logged"]
    # A Guardian that recomputes the head over an altered log is caught
    # only by what the log says, not by the chain.
    m = cbor2.loads(r.payload)
    m[K["LOG"]] = m[K["LOG"]][:1]
    m[K["LOG_HEAD"]] = log_chain(m[K["PACKAGE_ID"]], [cbor2.dumps(e) for e in m[K["LOG"]]])[-1]
    assert kinds(reconcile(parse_report(resign(v, cbor2.dumps(m))), v.wrapped)) == \
        ["not-logged"] * len(good[K["DEVICES"]])
    # Another Guardian, or a package it was not wrapped for.
    w = v.wrapped
    assert kinds(reconcile(r, Wrapped(bytes(32), w.oem_id, w.product_id, w.count, w.serial_start,
                                      w.issuing_ca))) == ["guardian"]


def test_parser_refuses_bad_values():
    """The value rules of Report::parse, on the first valid vector's payload."""
    v = load_vector(VALID_VECTORS[0] if VALID_VECTORS else None)
    good = cbor2.loads(h(v.expected["payload"]))
    assert parse_payload(cbor2.dumps(good)).job == v.inputs["job"]
    for key, bad in ((1, 2), (2, bytes(15)), (4, 0), (4, 2**32), (5, 0), (12, bytes(31)),
                     (10, [[1, b"", 1, 0]]), (10, [[1, bytes(33), 1, 0, b""]]),
                     (10, [[1, b"\x01", 1, 0, bytes(2049)]]), (11, [[1, "import", None, None]]),
                     (11, [[1, "x" * 17, None, None, 0]]), (11, [[1, "issue", 5, bytes(31), 0]]),
                     (11, [[1, b"import", None, None, 0]]), (7, -1)):
        m = dict(good)
        m[key] = bad
        with pytest.raises(Malformed):
            parse_payload(cbor2.dumps(m))
    m = dict(good)
    del m[12]
    with pytest.raises(Malformed):
        parse_payload(cbor2.dumps(m))
    with pytest.raises(Malformed):  # keys out of order
        parse_payload(cbor2.dumps({k: good[k] for k in reversed(REPORT_KEYS)}))
    # A non-shortest head: the job (key 3, at offset 21) as 18 xx.
    p = cbor2.dumps(good)
    assert p[21] == 0x03 and p[22] < 24
    with pytest.raises(Malformed):
        parse_payload(p[:22] + b"\x18" + p[22:])
    r = parse_report(v.report)
    for unprot in ({}, {33: r.kem_cert}, {33: [r.kem_cert]}, {33: [r.kem_cert, r.signing_cert], 4: b""}):
        with pytest.raises(Malformed):
            parse_report(cbor2.dumps(cbor2.CBORTag(18, [PROTECTED_ES256, unprot, r.payload,
                                                        r.signature])))
    with pytest.raises(Malformed):
        parse_report(cbor2.dumps(cbor2.CBORTag(18, [bytes.fromhex("a10127"),
                                                    {33: [r.kem_cert, r.signing_cert]},
                                                    r.payload, r.signature])))


# ---------------------------------------------------------------------------
# Tests: the attack fixtures
# ---------------------------------------------------------------------------


@parametrize_invalid
def test_invalid_vector_fails_at_its_check(vpath):
    """An attack fixture parses, and reconciliation finds exactly its
    ``expected_anomalies``, the first being its ``expected_error``; the
    fixture is exactly the attack its name says."""
    v = load_vector(vpath)
    error = v.meta.get("expected_error")
    assert error in EXPECTED_ERROR_KINDS, f"unknown expected_error {error!r}"
    r = parse_report(v.report)
    found = kinds(reconcile(r, v.wrapped))
    assert found == v.meta["expected_anomalies"], found
    assert found[0] == error
    name, attack = vpath.name, v.attack
    if name == "bad-signature":
        assert not verify_signature(r)
        at = attack["report_offset"]
        start = len(v.report) - 66 - len(r.payload)
        assert start <= at < start + len(r.payload)
        fixed = bytearray(v.report)
        fixed[at] ^= attack["xor"]
        r2 = parse_report(bytes(fixed))
        assert verify_signature(r2) and r2.payload == h(v.expected["payload"])
        assert reconcile(r2, v.wrapped) == []
    elif name == "broken-chain":
        assert verify_signature(r)
        hs = log_chain(r.body.package_id, [e.raw for e in r.body.log])
        assert hs[-1] != r.body.log_head
        full = [log_entry_cbor(e) for e in v.inputs["log"]]
        assert log_chain(r.body.package_id, full)[-1] == r.body.log_head
        removed = attack["removed_log_entry"]
        assert len(r.body.log) + 1 == len(full)
        assert full[removed - 1] not in [e.raw for e in r.body.log]
        # Re-inserted, the chain reaches the head again.
        m = cbor2.loads(r.payload)
        m[K["LOG"]].insert(removed - 1, cbor2.loads(full[removed - 1]))
        assert reconcile(parse_report(resign(v, cbor2.dumps(m))), v.wrapped) == []
    elif name == "duplicate-uid":
        assert verify_signature(r)
        uids = [d.uid for d in r.body.devices]
        assert len(set(uids)) + 1 == len(uids)
        assert len({d.serial for d in r.body.devices}) == len(uids)
    elif name == "over-count":
        assert verify_signature(r)
        b = r.body
        assert b.issued + b.failed > b.count == v.wrapped.count
        assert len(b.devices) == b.issued + b.failed
    else:
        pytest.fail(f"unknown attack fixture {name}")
