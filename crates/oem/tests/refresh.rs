//! `trustchain_oem::revoke::refresh` (`oem revoke --refresh`): every
//! issuer's CRL is re-signed with the same entries, the next CRL number and
//! a new validity, the bundle rewritten in file-name order; and when
//! anything is wrong, nothing in the OEM directory changes.
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};
use trustchain_oem::crypto::EcdsaKey;
use trustchain_oem::formats::{OemId, ProductId};
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::{KdfParams, SealedKeyStore};
use trustchain_oem::keystore::{KeyKind, KeyLabel, KeyStore};
use trustchain_oem::oem::OemDir;
use trustchain_oem::pki::{self, CertSpec};
use trustchain_oem::revoke::{
    package_ca_label, refresh, revoke, Reason, RefreshRequest, RevokeRequest,
};
use x509_cert::der::Decode;

const FAST: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};

struct World {
    _tmp: tempfile::TempDir,
    oem: OemDir,
    ks: SealedKeyStore,
    /// A certificate issued by the device CA.
    lab_device: Vec<u8>,
    /// A certificate issued by a package's issuing CA, whose key the OEM kept.
    package_device: Vec<u8>,
}

/// An OEM directory with the device CA and one package issuing CA (as
/// `wrap` leaves it: the CA certificate in `packages/`, its key in the
/// keystore), and one device certificate under each.
fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("oem");
    let pass = Passphrase::new(zeroize::Zeroizing::new("t".to_string())).unwrap();
    OemDir::init(&path, OemId::new(0x42).unwrap(), "Acme", &pass, FAST, "t").unwrap();
    let oem = OemDir::open(&path).unwrap();
    let mut ks = oem.unlock(&pass).unwrap();
    let dca = pki::issuer_from_der(&oem.device_ca_der().unwrap()).unwrap();
    let dca_key = ks.signer(&KeyLabel::device_ca()).unwrap();
    let leaf = |n: &str, issuer: &pki::IssuerCert, key: &dyn trustchain_oem::keystore::Signer| {
        let (k, _) = EcdsaKey::generate().unwrap();
        let mut spec = CertSpec::new(n.into(), "Acme".into(), oem.oem_id(), 1);
        spec.product_id = Some(ProductId::new(7).unwrap());
        pki::issue(&spec, k.public_key(), issuer, key).unwrap().der
    };
    let lab_device = leaf("Lab device", &dca, dca_key.as_ref());
    let id = "00112233445566778899aabbccddeeff";
    let label = package_ca_label(id).unwrap();
    let ca_pub = ks.generate(&label, KeyKind::EcdsaP256).unwrap();
    let mut spec = CertSpec::new("Package CA".into(), "Acme".into(), oem.oem_id(), 1);
    spec.ca_path_len = Some(0);
    let package_ca = pki::issue(&spec, &ca_pub, &dca, dca_key.as_ref()).unwrap();
    std::fs::create_dir(path.join("packages")).unwrap();
    std::fs::write(
        path.join("packages").join(format!("{id}.issuing-ca.pem")),
        package_ca.pem(),
    )
    .unwrap();
    let ca_key = ks.signer(&label).unwrap();
    let package_device = leaf("Produced device", &package_ca, ca_key.as_ref());
    World {
        _tmp: tmp,
        oem,
        ks,
        lab_device,
        package_device,
    }
}

fn revoke_now(w: &World, cert: &[u8], reason: Reason, now: OffsetDateTime) -> PathBuf {
    revoke(
        &w.oem,
        &w.ks,
        &RevokeRequest {
            cert: cert.to_vec(),
            cert_path: "cert.pem".into(),
            reason,
            days: 7,
            operator: "t".into(),
            now,
        },
    )
    .unwrap()
    .crl
}

fn refresh_at(w: &World, days: u32, now: OffsetDateTime) -> trustchain_oem::Result<PathBuf> {
    refresh(
        &w.oem,
        &w.ks,
        &RefreshRequest {
            days,
            operator: "t".into(),
            now,
        },
    )
    .map(|r| r.bundle)
}

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// (number, thisUpdate, nextUpdate, entries as DER) of a PEM CRL file.
fn crl(path: &Path) -> (u64, u64, u64, Vec<Vec<u8>>) {
    use x509_cert::der::Encode;
    let (_, der) = x509_cert::der::pem::decode_vec(&std::fs::read(path).unwrap()).unwrap();
    let c = x509_cert::crl::CertificateList::from_der(&der).unwrap();
    let t = &c.tbs_cert_list;
    let number = t
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == "2.5.29.20")
        .map(|e| x509_cert::der::asn1::Uint::from_der(e.extn_value.as_bytes()).unwrap())
        .unwrap();
    let n = number
        .as_bytes()
        .iter()
        .fold(0u64, |a, &b| (a << 8) | u64::from(b));
    (
        n,
        t.this_update.to_unix_duration().as_secs(),
        t.next_update.unwrap().to_unix_duration().as_secs(),
        t.revoked_certificates
            .iter()
            .flatten()
            .map(|r| r.to_der().unwrap())
            .collect(),
    )
}

#[test]
fn refresh_re_signs_every_issuers_crl_and_rewrites_the_bundle() {
    let w = world();
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::days(3);
    let lab_crl = revoke_now(&w, &w.lab_device, Reason::KeyCompromise, t0);
    let pkg_crl = revoke_now(&w, &w.package_device, Reason::CessationOfOperation, t0);
    assert_ne!(lab_crl, pkg_crl, "one CRL per issuer");
    let (lab_before, pkg_before) = (crl(&lab_crl), crl(&pkg_crl));
    let audit_before = w.oem.audit().records().unwrap().len();

    let t1 = t0 + Duration::days(2);
    let bundle = refresh_at(&w, 10, t1).unwrap();
    for (path, before) in [(&lab_crl, &lab_before), (&pkg_crl, &pkg_before)] {
        let after = crl(path);
        assert_eq!(after.0, before.0 + 1, "CRL number + 1");
        assert_eq!(after.1, t1.unix_timestamp() as u64, "thisUpdate = now");
        assert_eq!(after.2, (t1 + Duration::days(10)).unix_timestamp() as u64);
        assert_eq!(after.3, before.3, "the same entries, byte for byte");
    }
    // The bundle: both CRLs, in file-name order.
    let mut files = [lab_crl.clone(), pkg_crl.clone()];
    files.sort();
    let expected: Vec<u8> = files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(std::fs::read(&bundle).unwrap(), expected);
    // One audit record per CRL, chained.
    let records = w.oem.audit().records().unwrap();
    assert_eq!(records.len(), audit_before + 2);
    for r in &records[audit_before..] {
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["action"], "crl_refresh", "{v}");
        assert_eq!(v["crl_number"], 2, "{v}");
        assert_eq!(v["revoked_count"], 1, "{v}");
    }
    // The next revocation continues from the refreshed CRL.
    let lab_device2 = {
        let dca = pki::issuer_from_der(&w.oem.device_ca_der().unwrap()).unwrap();
        let (k, _) = EcdsaKey::generate().unwrap();
        let spec = CertSpec::new("Lab 2".into(), "Acme".into(), w.oem.oem_id(), 1);
        let key = w.ks.signer(&KeyLabel::device_ca()).unwrap();
        pki::issue(&spec, k.public_key(), &dca, key.as_ref())
            .unwrap()
            .der
    };
    let r = revoke(
        &w.oem,
        &w.ks,
        &RevokeRequest {
            cert: lab_device2,
            cert_path: "lab2.pem".into(),
            reason: Reason::Superseded,
            days: 7,
            operator: "t".into(),
            now: t1,
        },
    )
    .unwrap();
    assert_eq!((r.crl_number, r.revoked_count), (3, 2));
}

#[test]
fn refresh_changes_nothing_when_anything_is_wrong() {
    let w = world();
    // No CRL yet: an error, and no crl/ or crl.pem appears.
    let before = snapshot(w.oem.path());
    let err = refresh_at(&w, 30, OffsetDateTime::now_utc()).unwrap_err();
    assert!(err.to_string().contains("no CRL to refresh"), "{err}");
    assert_eq!(snapshot(w.oem.path()), before);

    let now = OffsetDateTime::now_utc();
    let a = revoke_now(&w, &w.lab_device, Reason::KeyCompromise, now);
    let b = revoke_now(&w, &w.package_device, Reason::KeyCompromise, now);
    // Bad --days.
    let before = snapshot(w.oem.path());
    for days in [0, 3651] {
        assert!(refresh_at(&w, days, now).is_err());
        assert_eq!(snapshot(w.oem.path()), before);
    }
    // The CRL that sorts last is damaged (its signature no longer verifies):
    // the one before it, signed first, must not be written either.
    let last = if a > b { &a } else { &b };
    let pem = std::fs::read_to_string(last).unwrap();
    let (_, mut der) = x509_cert::der::pem::decode_vec(pem.as_bytes()).unwrap();
    let n = der.len();
    der[n - 5] ^= 1;
    let bad =
        x509_cert::der::pem::encode_string("X509 CRL", x509_cert::der::pem::LineEnding::LF, &der)
            .unwrap();
    std::fs::write(last, bad).unwrap();
    let before = snapshot(w.oem.path());
    let err = refresh_at(&w, 30, now).unwrap_err();
    assert!(
        err.to_string().contains(&last.display().to_string()),
        "names the file: {err}"
    );
    assert_eq!(snapshot(w.oem.path()), before, "a file changed");
    // A PEM file in crl/ that belongs to no issuer of this OEM: refused by name.
    std::fs::write(last, pem).unwrap();
    let stray = w.oem.path().join("crl").join("zzzz.pem");
    std::fs::copy(&a, &stray).unwrap();
    let before = snapshot(w.oem.path());
    let err = refresh_at(&w, 30, now).unwrap_err();
    assert!(err.to_string().contains("zzzz.pem"), "{err}");
    assert_eq!(snapshot(w.oem.path()), before, "a file changed");
}

/// `revoke` makes the new bundle before it writes anything: when another
/// issuer's CRL cannot be read, the revoked device's CRL is not written
/// either (it used to be, leaving a bundle without it and no audit record).
/// Once that CRL reads again, the revocation goes through whole.
#[test]
fn revoke_changes_nothing_when_the_bundle_cannot_be_made() {
    let w = world();
    let now = OffsetDateTime::now_utc();
    let package_crl = revoke_now(&w, &w.package_device, Reason::KeyCompromise, now);
    let pem = std::fs::read(&package_crl).unwrap();
    // Unreadable as a file: a directory where the package CA's CRL was.
    std::fs::remove_file(&package_crl).unwrap();
    std::fs::create_dir(&package_crl).unwrap();
    let before = snapshot(w.oem.path());
    let err = revoke(
        &w.oem,
        &w.ks,
        &RevokeRequest {
            cert: w.lab_device.clone(),
            cert_path: "lab.pem".into(),
            reason: Reason::KeyCompromise,
            days: 7,
            operator: "t".into(),
            now,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(&package_crl.display().to_string()),
        "names the file: {err}"
    );
    assert_eq!(snapshot(w.oem.path()), before, "a file changed");
    std::fs::remove_dir(&package_crl).unwrap();
    std::fs::write(&package_crl, &pem).unwrap();
    let lab_crl = revoke_now(&w, &w.lab_device, Reason::KeyCompromise, now);
    let bundle = std::fs::read_to_string(w.oem.path().join("crl.pem")).unwrap();
    let expected: String = [&lab_crl, &package_crl]
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(
        bundle, expected,
        "the bundle is both CRLs in file-name order"
    );
}
