"""Independent check of tests/vectors/crl (docs/formats.md §20.3, §20.4)
with Python `cryptography`: the device CA's CRL and the update server's
certificate, as `trustchain oem revoke` and `trustchain oem server-cert`
make them."""
import datetime
import ipaddress
import json
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

D = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "crl"


def cert(name):
    return x509.load_pem_x509_certificate((D / name).read_bytes())


def expected():
    return json.loads((D / "expected.json").read_text())


def test_crl_is_signed_by_the_device_ca_and_lists_both_devices():
    e = expected()
    dca = cert("device-ca.pem")
    crl = x509.load_pem_x509_crl((D / "crl.pem").read_bytes())
    assert crl.issuer.public_bytes() == dca.subject.public_bytes()
    assert crl.is_signature_valid(dca.public_key())
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    assert crl.last_update_utc == datetime.datetime.fromtimestamp(e["this_update"], datetime.timezone.utc)
    assert crl.next_update_utc == datetime.datetime.fromtimestamp(e["next_update"], datetime.timezone.utc)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == e["crl_number"]
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = dca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    entries = list(crl)
    assert [format(r.serial_number, "x").zfill(32) for r in entries] == [r["serial"] for r in e["revoked"]]
    names = {"keyCompromise": x509.ReasonFlags.key_compromise,
             "cessationOfOperation": x509.ReasonFlags.cessation_of_operation}
    for r, want in zip(entries, e["revoked"]):
        assert r.extensions.get_extension_for_class(x509.CRLReason).value.reason == names[want["reason"]]
        device = cert(want["file"])
        assert crl.get_revoked_certificate_by_serial_number(device.serial_number) is not None
        device.verify_directly_issued_by(dca)


def test_a_changed_crl_byte_breaks_its_signature():
    dca = cert("device-ca.pem")
    der = x509.load_pem_x509_crl((D / "crl.pem").read_bytes()).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)
    # Flip a bit inside the first revoked serial (well inside the TBS).
    i = der.find(bytes.fromhex(expected()["revoked"][0]["serial"]))
    assert i > 0
    bad = bytearray(der)
    bad[i + 3] ^= 1
    crl = x509.load_der_x509_crl(bytes(bad))
    assert not crl.is_signature_valid(dca.public_key())


def test_server_certificate_profile():
    e = expected()
    root = cert("root.pem")
    s = cert("server.pem")
    s.verify_directly_issued_by(root)
    assert isinstance(s.public_key(), ec.EllipticCurvePublicKey)
    assert s.public_key().curve.name == "secp256r1"
    ku = s.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = s.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = s.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    san = s.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    got = [str(n.value) for n in san]
    assert got == e["server_names"]
    assert isinstance(san.get_values_for_type(x509.IPAddress)[0], ipaddress.IPv4Address)
    oem = s.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.4.1.32473.116.1")).value
    assert oem.value == bytes([0x02, 0x01, e["oem_id"]])
    assert s.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == e["server_names"][0]
