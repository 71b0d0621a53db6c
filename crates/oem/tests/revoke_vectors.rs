//! Test vectors for revocation and server identities (`docs/formats.md`
//! §20.3, §20.4): `tests/vectors/crl/` holds an OEM root and device CA,
//! two revoked device certificates, the device CA's CRL after the second
//! revocation (`crl.pem`, as `OEM_DIR/crl/<issuer>.crl.pem`), an update
//! server certificate (`server.pem`) and `expected.json`.
//!
//! This test checks the stored files against the format: the CRL parses,
//! is signed by the device CA key, names it as issuer byte for byte, lists
//! both serials with their reasons in order and carries CRL number 2;
//! rustls-webpki accepts it and finds both certificates revoked. The server
//! certificate chains to the root for server auth under its names.
//! `tests/python/test_crl_crosscheck.py` checks the same files with Python
//! `cryptography`. `TRUSTCHAIN_BLESS=1 cargo test -p trustchain-oem --test
//! revoke_vectors` makes new files through `revoke` and `create_identity`.
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use trustchain_oem::formats::{OemId, ProductId};
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::keystore::{KeyLabel, KeyStore};
use trustchain_oem::oem::OemDir;
use trustchain_oem::pki::{self, CertSpec};
use trustchain_oem::revoke::{revoke, Reason, RevokeRequest};
use x509_cert::der::{Decode, Encode};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/crl")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn der(name: &str) -> Vec<u8> {
    pki::cert_der(&read(name)).unwrap()
}

fn bless() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = Passphrase::new(zeroize::Zeroizing::new("v".to_string())).unwrap();
    let fast = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    let path = tmp.path().join("oem");
    OemDir::init(&path, OemId::new(0x7c).unwrap(), "Vector", &pass, fast, "v").unwrap();
    let oem = OemDir::open(&path).unwrap();
    let ks = oem.unlock(&pass).unwrap();
    let dca = pki::issuer_from_der(&oem.device_ca_der().unwrap()).unwrap();
    let dca_key = ks.signer(&KeyLabel::device_ca()).unwrap();
    let out = dir();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mut serials = vec![];
    for (i, reason) in [
        (1, Reason::KeyCompromise),
        (2, Reason::CessationOfOperation),
    ] {
        let (k, _) = trustchain_oem::crypto::EcdsaKey::generate().unwrap();
        let mut spec = CertSpec::new(format!("Device {i}"), "Vector".into(), oem.oem_id(), 1);
        spec.product_id = Some(ProductId::new(1).unwrap());
        let cert = pki::issue(&spec, k.public_key(), &dca, dca_key.as_ref()).unwrap();
        let name = format!("device-{i}.pem");
        std::fs::write(out.join(&name), cert.pem()).unwrap();
        let c = x509_cert::Certificate::from_der(&cert.der).unwrap();
        serials.push(json!({
            "serial": hex::encode(c.tbs_certificate.serial_number.as_bytes()),
            "reason": reason.name(),
            "file": name,
        }));
        revoke(
            &oem,
            &ks,
            &RevokeRequest {
                cert: cert.der.clone(),
                cert_path: name.into(),
                reason,
                days: 30,
                operator: "v".into(),
                now: time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + i).unwrap(),
            },
        )
        .unwrap();
    }
    let crl = trustchain_oem::revoke::crl_path(&oem, &oem.device_ca_der().unwrap());
    std::fs::copy(&crl, out.join("crl.pem")).unwrap();
    std::fs::copy(path.join("root.pem"), out.join("root.pem")).unwrap();
    std::fs::copy(path.join("device-ca.pem"), out.join("device-ca.pem")).unwrap();
    let id = tmp.path().join("server");
    trustchain_oem::server::create_identity(
        &oem,
        &ks,
        &["updates.example".into(), "127.0.0.1".into()],
        3650,
        &id,
        &pass,
        fast,
    )
    .unwrap();
    std::fs::copy(id.join("server.pem"), out.join("server.pem")).unwrap();
    let expected = json!({
        "description": "the device CA's CRL after two revocations, and an update server certificate",
        "crl_number": 2,
        "this_update": 1_800_000_002u64,
        "next_update": 1_800_000_002u64 + 30 * 86_400,
        "revoked": serials,
        "server_names": ["updates.example", "127.0.0.1"],
        "oem_id": 0x7c,
    });
    std::fs::write(
        out.join("expected.json"),
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
    )
    .unwrap();
}

#[test]
fn crl_and_server_certificate_vectors() {
    if std::env::var_os("TRUSTCHAIN_BLESS").is_some() {
        bless();
    }
    let expected: Value = serde_json::from_slice(&read("expected.json")).unwrap();
    let dca_der = der("device-ca.pem");
    let dca = x509_cert::Certificate::from_der(&dca_der).unwrap();
    let crl_pem = read("crl.pem");
    let (label, crl_der) = x509_cert::der::pem::decode_vec(&crl_pem).expect("one PEM block");
    assert_eq!(label, "X509 CRL");
    let crl = x509_cert::crl::CertificateList::from_der(&crl_der).unwrap();
    // Issuer byte for byte, signature by the device CA key.
    assert_eq!(
        crl.tbs_cert_list.issuer.to_der().unwrap(),
        dca.tbs_certificate.subject.to_der().unwrap()
    );
    let key = pki::cert_public_key(&dca).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &key.0,
    )
    .verify(
        &crl.tbs_cert_list.to_der().unwrap(),
        crl.signature.raw_bytes(),
    )
    .expect("the CRL is signed by the device CA");
    // Times, number, entries in order with their reason codes.
    let t = |x: &x509_cert::time::Time| x.to_unix_duration().as_secs();
    assert_eq!(
        t(&crl.tbs_cert_list.this_update),
        expected["this_update"].as_u64().unwrap()
    );
    assert_eq!(
        t(crl.tbs_cert_list.next_update.as_ref().unwrap()),
        expected["next_update"].as_u64().unwrap()
    );
    let number = crl
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == "2.5.29.20")
        .map(|e| x509_cert::der::asn1::Uint::from_der(e.extn_value.as_bytes()).unwrap())
        .expect("a CRL number");
    assert_eq!(
        number.as_bytes(),
        [expected["crl_number"].as_u64().unwrap() as u8]
    );
    let entries: Vec<_> = crl
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .collect();
    let revoked = expected["revoked"].as_array().unwrap();
    assert_eq!(entries.len(), revoked.len());
    for (e, want) in entries.iter().zip(revoked) {
        assert_eq!(
            hex::encode(e.serial_number.as_bytes()),
            want["serial"].as_str().unwrap()
        );
        let code = e
            .crl_entry_extensions
            .iter()
            .flatten()
            .find(|x| x.extn_id.to_string() == "2.5.29.21")
            .map(|x| x.extn_value.as_bytes().to_vec())
            .expect("a reason code");
        let want_code = match want["reason"].as_str().unwrap() {
            "keyCompromise" => 1,
            "cessationOfOperation" => 5,
            other => panic!("{other}"),
        };
        assert_eq!(code, [0x0a, 1, want_code]);
        // rustls-webpki finds the certificate revoked by this CRL.
        let cert = der(want["file"].as_str().unwrap());
        let parsed = webpki::BorrowedCertRevocationList::from_der(&crl_der).unwrap();
        let c = x509_cert::Certificate::from_der(&cert).unwrap();
        assert!(webpki::CertRevocationList::from(parsed)
            .find_serial(c.tbs_certificate.serial_number.as_bytes())
            .unwrap()
            .is_some());
    }
    // The server certificate: issued by the root, server auth under its names.
    let root = der("root.pem");
    let server = der("server.pem");
    pki::verify_issued_by(&server, &root).unwrap();
    let anchor = rustls_pki_types::CertificateDer::from(root.as_slice());
    let anchors = [webpki::anchor_from_trusted_cert(&anchor)
        .unwrap()
        .to_owned()];
    let ee_der = rustls_pki_types::CertificateDer::from(server.as_slice());
    let ee = webpki::EndEntityCert::try_from(&ee_der).unwrap();
    let now = rustls_pki_types::UnixTime::now();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .expect("the server certificate validates to the root for server auth");
    for n in expected["server_names"].as_array().unwrap() {
        let name = rustls_pki_types::ServerName::try_from(n.as_str().unwrap()).unwrap();
        ee.verify_is_valid_for_subject_name(&name).unwrap();
    }
    assert!(ee
        .verify_is_valid_for_subject_name(
            &rustls_pki_types::ServerName::try_from("other.example").unwrap()
        )
        .is_err());
}
