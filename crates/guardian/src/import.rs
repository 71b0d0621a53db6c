//! Importing a wrapped package: it is opened only here, with the Guardian's
//! key-agreement key; the OEM's signature and chain are checked against a
//! root the operator trusts; the package must be for this Guardian, not
//! expired, and new. The job's secrets go into the Guardian's sealed
//! keystore, the rest into the database, in one transaction: a refused
//! package changes nothing.
use std::path::Path;

use aws_lc_rs::key_wrap::{self, KeyWrap};
use serde::Serialize;
use trustchain_formats::cose::{sig_structure, Sign1};
use trustchain_formats::package::{self, Encrypted, Manifest};
use trustchain_formats::upk::Upk;
use trustchain_oem::crypto::{sha256, verify_es256, Aead};
use trustchain_oem::keystore::sealed::SealedKeyStore;
use trustchain_oem::keystore::{KeyKind, KeyLabel, KeyStore};
use trustchain_oem::pki;
use zeroize::Zeroizing;

use crate::dir::{kem_label, GuardianDir};
use crate::error::{Error, Result};
use crate::store::NewJob;

/// What was imported.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    /// The new job.
    pub job: i64,
    /// Package ID (hex).
    pub package_id: String,
    /// OEM ID.
    pub oem_id: u32,
    /// Product ID.
    pub product_id: u32,
    /// Count.
    pub count: u64,
    /// Release version.
    pub release_version: String,
}

/// The keystore labels of a job's secrets.
pub fn job_labels(job: i64) -> (KeyLabel, KeyLabel) {
    let l = |s: String| KeyLabel::new(&s).unwrap_or_else(KeyLabel::root_ca);
    (
        l(format!("job-{job}-issuing")),
        l(format!("job-{job}-product")),
    )
}

/// Opens the encrypted layer with the Guardian's key-agreement key (ECDH,
/// A256KW, A256GCM): the signed manifest, or `None` if this Guardian cannot
/// open it (another recipient, or altered bytes).
pub fn open(ks: &SealedKeyStore, outer: &Encrypted<'_>) -> Option<Zeroizing<Vec<u8>>> {
    let kem = ks.key_agreement(&kem_label()).ok()?;
    if outer.kid != &kem.public_key().kid() {
        return None;
    }
    let shared = kem.agree(&outer.ephemeral.to_sec1()).ok()?;
    let kek = trustchain_oem::wrap::a256kw_kek_pub(&shared).ok()?;
    let kek = key_wrap::AesKek::new(&key_wrap::AES_256, &kek[..]).ok()?;
    let mut cek = Zeroizing::new([0u8; 32]);
    let n = kek.unwrap(outer.wrapped_key, &mut cek[..]).ok()?.len();
    if n != 32 {
        return None;
    }
    let mut plain = Zeroizing::new(outer.ciphertext.to_vec());
    let len = Aead::aes256(&cek)
        .ok()?
        .open(*outer.iv, &package::CONTENT_AAD, &mut plain)?;
    plain.truncate(len);
    Some(plain)
}

/// Opens and checks a package; creates its job.
pub fn import(
    g: &GuardianDir,
    ks: &mut SealedKeyStore,
    package_path: &Path,
    now: u64,
) -> Result<ImportReport> {
    let refuse = |problem: String| Error::PackageRefused {
        path: package_path.to_path_buf(),
        problem,
    };
    let not_ours = || Error::NotForThisGuardian {
        path: package_path.to_path_buf(),
    };
    let bytes = trustchain_oem::fsutil::read_bounded(
        package_path,
        package::limits::MAX_PACKAGE_LEN as u64,
        "package",
    )?;
    if bytes.len() > package::limits::MAX_PACKAGE_LEN {
        return Err(refuse(format!(
            "larger than {} bytes",
            package::limits::MAX_PACKAGE_LEN
        )));
    }
    let outer = Encrypted::parse(&bytes).map_err(|source| trustchain_oem::Error::Format {
        path: package_path.to_path_buf(),
        source,
    })?;

    let plain = open(ks, &outer).ok_or_else(not_ours)?;

    // The OEM's signature, by its device CA, chaining to a trusted root.
    let sign1 = Sign1::parse(&plain, package::limits::MAX_PACKAGE_LEN)
        .map_err(|e| refuse(format!("signed layer: {e}")))?;
    let m = Manifest::parse(sign1.payload).map_err(|e| refuse(format!("manifest: {e}")))?;
    let root_fp = sha256(m.root_cert);
    let root = g
        .trusted_root(&root_fp)
        .ok_or_else(|| Error::UntrustedRoot {
            path: package_path.to_path_buf(),
            root: hex::encode(root_fp),
        })?;
    let signer_der = sign1
        .x5chain
        .ok_or_else(|| refuse("no signer certificate".into()))?;
    if signer_der != m.device_ca_cert {
        return Err(refuse("the signer is not the package's device CA".into()));
    }
    pki::verify_issued_by(signer_der, &root)
        .map_err(|p| refuse(format!("device CA certificate: {p}")))?;
    let signer = pki::parse_cert(signer_der).map_err(refuse)?;
    let signer_key =
        pki::cert_public_key(&signer).ok_or_else(|| refuse("device CA key is not P-256".into()))?;
    let mut tbs = Vec::new();
    sig_structure(sign1.protected, sign1.payload, |b| tbs.extend_from_slice(b));
    if !verify_es256(&signer_key.0, &tbs, sign1.signature) {
        return Err(refuse("the OEM signature does not verify".into()));
    }

    // Bound to this Guardian, in time, new.
    let identity = g.identity()?;
    if m.guardian != &identity.id {
        return Err(refuse(
            "the package names another Guardian (it was re-encrypted to this one)".into(),
        ));
    }
    if now >= m.expires {
        return Err(refuse(format!("expired at {} (Unix time)", m.expires)));
    }
    let store = g.store()?;
    if let Some(job) = store.job_for_package(m.package_id)? {
        return Err(Error::Replay {
            path: package_path.to_path_buf(),
            package_id: hex::encode(m.package_id),
            job,
        });
    }
    // Consistency: the OEM ID everywhere, the issuing CA under the device CA
    // and matching its key, the release for this product and signed by the
    // OEM's mastering certificate.
    let oem_of = |der: &[u8]| pki::parse_cert(der).ok().and_then(|c| pki::cert_oem_id(&c));
    if oem_of(m.root_cert) != Some(m.oem_id)
        || oem_of(signer_der) != Some(m.oem_id)
        || oem_of(m.issuing_ca_cert) != Some(m.oem_id)
    {
        return Err(refuse(
            "the certificates do not carry the package's OEM ID".into(),
        ));
    }
    if pki::parse_cert(m.issuing_ca_cert)
        .ok()
        .and_then(|c| pki::cert_product_id(&c))
        != Some(m.product_id)
    {
        return Err(refuse(
            "the issuing CA certificate is not for the package's product".into(),
        ));
    }
    pki::verify_issued_by(m.issuing_ca_cert, signer_der)
        .map_err(|p| refuse(format!("issuing CA certificate: {p}")))?;
    let issuing = pki::parse_cert(m.issuing_ca_cert).map_err(refuse)?;
    let issuing_pub = pki::cert_public_key(&issuing)
        .ok_or_else(|| refuse("issuing CA key is not P-256".into()))?;
    let derived = trustchain_oem::crypto::EcdhKey::from_scalar(m.issuing_ca_key)
        .map_err(|_| refuse("issuing CA key is invalid".into()))?;
    if derived.public_key() != &issuing_pub {
        return Err(refuse(
            "the issuing CA key does not match its certificate".into(),
        ));
    }
    pki::validate_code_signing(m.mastering_cert, m.root_cert)
        .map_err(|p| refuse(format!("mastering certificate: {p}")))?;
    let upk = Upk::parse(m.release_upk).map_err(|e| refuse(format!("release UPK: {e}")))?;
    if upk.manifest.product_id != m.product_id || upk.manifest.oem_id != m.oem_id {
        return Err(refuse("the release is for another product".into()));
    }
    if sha256(m.release_enc) != upk.manifest.ciphertext_digest.0 {
        return Err(refuse("the release image does not match its UPK".into()));
    }
    // The release is signed by the package's mastering certificate.
    if upk.sign1.x5chain != Some(m.mastering_cert) {
        return Err(refuse(
            "the release UPK is not signed by the package's mastering certificate".into(),
        ));
    }
    let mastering = pki::parse_cert(m.mastering_cert)
        .ok()
        .and_then(|c| pki::cert_public_key(&c))
        .ok_or_else(|| refuse("mastering key is not P-256".into()))?;
    let mut utbs = Vec::new();
    sig_structure(upk.sign1.protected, upk.sign1.payload, |b| {
        utbs.extend_from_slice(b)
    });
    if !verify_es256(&mastering.0, &utbs, upk.sign1.signature) {
        return Err(refuse("the release UPK signature does not verify".into()));
    }
    trustchain_oem::template::Template::parse(m.template)
        .map_err(|p| refuse(format!("template: {p}")))?;

    let types: Vec<u32> = m.device_types().collect();
    let job = NewJob {
        package_id: m.package_id,
        oem_id: m.oem_id.get(),
        product_id: m.product_id.get(),
        oem_name: m.oem_name,
        product_name: m.product_name,
        count: m.count,
        serial_start: m.serial_start,
        created: m.created,
        expires: m.expires,
        device_types: types,
        uid_range: m.uid_range,
        template: m.template,
        issuing_ca_cert: m.issuing_ca_cert,
        device_ca_cert: m.device_ca_cert,
        root_cert: m.root_cert,
        mastering_cert: m.mastering_cert,
        release_upk: m.release_upk,
        release_enc: m.release_enc,
    };
    let mut store = store;
    let id = store.insert_job(&job, |id| {
        let (issuing_label, product_label) = job_labels(id);
        ks.import_scalar(&issuing_label, KeyKind::EcdsaP256, m.issuing_ca_key)?;
        if let Err(e) = ks.import_scalar(&product_label, KeyKind::EcdhP256, m.product_key) {
            let _ = std::fs::remove_file(ks.dir().join(format!("{issuing_label}.key")));
            return Err(e.into());
        }
        Ok(())
    })?;
    g.checkpoint(ks)?;
    Ok(ImportReport {
        job: id,
        package_id: hex::encode(m.package_id),
        oem_id: m.oem_id.get(),
        product_id: m.product_id.get(),
        count: m.count,
        release_version: upk.manifest.version.to_string(),
    })
}
