//! The OEM Secret Wrapping Tool (paper, section III and V; seed "So just
//! how do you embed security"): everything one Guardian needs to produce
//! devices of a product, signed by the OEM device CA and encrypted to that
//! Guardian's key-agreement key, so only it can open the package and a
//! package re-encrypted to another Guardian no longer verifies (the
//! signature binds the target Guardian's certificate hash).
//!
//! The package carries a per-package issuing CA (its key is fresh, travels
//! only in this package, and stays at the OEM as `package-<id>-ca` to sign
//! that CA's CRLs), certified by the OEM device CA: one compromised
//! Guardian is revoked by revoking its issuing CA alone, one device by the
//! CRL of its package's CA (`trustchain oem revoke`).
use std::path::{Path, PathBuf};

use aws_lc_rs::key_wrap::KeyWrap;
use aws_lc_rs::{hkdf, key_wrap};
use serde::Serialize;
use trustchain_formats::cose::{encode_sign1, sig_structure, PROTECTED_ES256};
use trustchain_formats::package::{self, ManifestSpec};
use trustchain_formats::{ProductId, Sha256};
use zeroize::Zeroizing;

use crate::crypto::{sha256, Aead, EcdhKey, Entropy, PublicKey, SystemEntropy};
use crate::error::{Error, IoContext, Result};
use crate::keystore::{KeyKind, KeyLabel, KeyStore};
use crate::oem::OemDir;
use crate::pki::{self, validity, CertSpec};

/// A Guardian as the OEM sees it: its identity certificate (key agreement)
/// and the certificate that signed it.
#[derive(Debug, Clone)]
pub struct GuardianIdentity {
    /// The key-agreement certificate (DER); its SHA-256 is the Guardian's ID.
    pub kem_cert: Vec<u8>,
    /// The Guardian's signing certificate (DER, self-signed).
    pub signing_cert: Vec<u8>,
    /// The key-agreement public key.
    pub kem_key: PublicKey,
    /// SHA-256 of `kem_cert`.
    pub id: [u8; 32],
}

impl GuardianIdentity {
    /// Reads `identity.pem` (key-agreement certificate, then signing
    /// certificate) and checks that the first is signed by the second.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |problem: String| Error::BadKeyInput {
            path: path.to_path_buf(),
            problem,
        };
        let text = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_path_buf(),
                what: "Guardian identity certificate",
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        let certs = x509_cert::Certificate::load_pem_chain(&text)
            .map_err(|e| bad(format!("not a PEM certificate chain: {e}")))?;
        use x509_cert::der::Encode;
        let [kem, signing] = certs.as_slice() else {
            return Err(bad(format!(
                "expected 2 certificates (key agreement, signing), found {}",
                certs.len()
            )));
        };
        let kem_der = kem.to_der().map_err(|e| bad(e.to_string()))?;
        let signing_der = signing.to_der().map_err(|e| bad(e.to_string()))?;
        if !pki::allows_key_agreement(kem) {
            return Err(bad(
                "the first certificate is not a key-agreement certificate".into(),
            ));
        }
        pki::verify_issued_by(&kem_der, &signing_der).map_err(|p| {
            bad(format!(
                "the identity certificate is not signed by the Guardian's signing certificate: {p}"
            ))
        })?;
        let kem_key = pki::cert_public_key(kem).ok_or_else(|| bad("not a P-256 key".into()))?;
        Ok(Self {
            id: sha256(&kem_der),
            kem_cert: kem_der,
            signing_cert: signing_der,
            kem_key,
        })
    }
}

/// What to wrap.
#[derive(Debug, Clone)]
pub struct WrapRequest {
    /// Product.
    pub product: ProductId,
    /// Target Guardian.
    pub guardian: PathBuf,
    /// Production count.
    pub count: u64,
    /// The mastered release to program.
    pub release: PathBuf,
    /// Output file (must not exist).
    pub out: PathBuf,
    /// First serial number.
    pub serial_start: u64,
    /// Inclusive UID range (equal-length big-endian byte strings).
    pub uid_range: Option<(Vec<u8>, Vec<u8>)>,
    /// Allowed device types (empty: any).
    pub device_types: Vec<u32>,
    /// Expiry (Unix seconds).
    pub expires: u64,
    /// Who wraps.
    pub operator: String,
}

/// What was wrapped.
#[derive(Debug, Serialize)]
pub struct WrapReport {
    /// The package file.
    pub out: PathBuf,
    /// Package ID (hex).
    pub package_id: String,
    /// Target Guardian ID (SHA-256 of its identity certificate, hex).
    pub guardian: String,
    /// Count.
    pub count: u64,
    /// Serial range.
    pub serials: (u64, u64),
    /// The per-package issuing CA certificate's SHA-256.
    pub issuing_ca_sha256: String,
    /// Release version.
    pub release_version: String,
    /// Size of the package.
    pub size: u64,
}

/// HKDF-SHA-256 to the 32-byte KEK of ECDH-ES + A256KW.
pub(crate) fn a256kw_kek(shared: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(shared);
    let info = [&package::KDF_CONTEXT_A256KW[..]];
    let okm = prk
        .expand(&info, Len32)
        .map_err(|_| Error::Crypto("HKDF"))?;
    let mut kek = Zeroizing::new([0u8; 32]);
    okm.fill(&mut kek[..]).map_err(|_| Error::Crypto("HKDF"))?;
    Ok(kek)
}

/// The KEK of the package recipient, for the Guardian's side.
pub fn a256kw_kek_pub(shared: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    a256kw_kek(shared)
}

/// Encrypts `plaintext` (the signed manifest) to the Guardian key.
pub fn seal_for(kem: &PublicKey, plaintext: &[u8], entropy: &mut dyn Entropy) -> Result<Vec<u8>> {
    let mut cek = Zeroizing::new([0u8; 32]);
    entropy.fill(&mut cek[..])?;
    let mut iv = [0u8; 12];
    entropy.fill(&mut iv)?;
    let mut buf = plaintext.to_vec();
    let tag = Aead::aes256(&cek)?.seal(iv, &package::CONTENT_AAD, &mut buf)?;
    buf.extend_from_slice(&tag);
    let (eph, _scalar) = EcdhKey::generate(entropy)?;
    let shared = eph.agree(&kem.0)?;
    let kek = a256kw_kek(&shared)?;
    let kek = key_wrap::AesKek::new(&key_wrap::AES_256, &kek[..])
        .map_err(|_| Error::Crypto("AES-KW key"))?;
    let mut wrapped = [0u8; 40];
    kek.wrap(&cek[..], &mut wrapped)
        .map_err(|_| Error::Crypto("AES-KW wrap"))?;
    Ok(package::encode_encrypted(
        &iv,
        &buf,
        &kem.kid(),
        &eph.public_key().point(),
        &wrapped,
    ))
}

/// Wraps a production package.
pub fn wrap(oem: &OemDir, keystore: &mut dyn KeyStore, req: &WrapRequest) -> Result<WrapReport> {
    let lock = oem.lock()?;
    if req.out.exists() {
        return Err(Error::AlreadyExists {
            path: req.out.clone(),
            what: "package file",
        });
    }
    if req.count == 0 || req.count > package::limits::MAX_COUNT {
        return Err(Error::Usage(format!(
            "--count must be 1 to {}",
            package::limits::MAX_COUNT
        )));
    }
    if req.device_types.len() as u64 > package::limits::MAX_DEVICE_TYPES {
        return Err(Error::Usage(format!(
            "at most {} --device-type values",
            package::limits::MAX_DEVICE_TYPES
        )));
    }
    if let Some((lo, hi)) = &req.uid_range {
        if lo.is_empty() || lo.len() != hi.len() || lo.len() > 32 || lo > hi {
            return Err(Error::Usage(
                "--uid-range: LOW..HIGH, equal lengths of 1 to 32 bytes, LOW <= HIGH".into(),
            ));
        }
    }
    if req.serial_start.checked_add(req.count).is_none() {
        return Err(Error::Usage("--serial-start + --count overflows".into()));
    }
    let guardian = GuardianIdentity::load(&req.guardian)?;
    let product = oem.product(req.product)?;
    // The release must be this OEM's, for this product, and intact.
    let info = crate::release::verify_release(&req.release, &oem.root_der()?)?;
    if info.product_id != req.product.get() {
        return Err(Error::ReleaseMismatch {
            path: req.release.join("update.upk"),
            problem: format!("is for product {}, not {}", info.product_id, req.product),
        });
    }
    let release_upk = crate::release::read_upk(&req.release.join("update.upk"))?;
    let enc_path = req.release.join("update.enc");
    let release_enc = std::fs::read(&enc_path).at(&enc_path)?;

    let mut entropy = SystemEntropy;
    let mut package_id = [0u8; 16];
    entropy.fill(&mut package_id)?;
    // The per-package issuing CA.
    let (issuing_scalar, issuing_pub) = crate::crypto::generate_ecdsa_scalar(&mut entropy)?;
    let dca_der = oem.device_ca_der()?;
    let dca = pki::issuer_from_der(&dca_der).map_err(|problem| Error::Corrupt {
        path: oem.path().join("device-ca.pem"),
        problem,
    })?;
    let dca_key = keystore.signer(&KeyLabel::device_ca())?;
    let mut spec = CertSpec::new(
        format!(
            "{} Issuing CA {}",
            oem.name(),
            hex::encode(&package_id[..4])
        ),
        oem.name().to_string(),
        oem.oem_id(),
        validity::DEVICE_CA_YEARS,
    );
    spec.ca_path_len = Some(0);
    spec.product_id = Some(req.product);
    let issuing = pki::issue(&spec, &issuing_pub, &dca, dca_key.as_ref())?;
    let product_key = keystore.export_for_package(&product.key_label())?;

    let now = crate::audit::unix_now();
    if req.expires <= now {
        return Err(Error::Usage("--expires is in the past".into()));
    }
    let manifest = ManifestSpec {
        package_id,
        oem_id: oem.oem_id(),
        product_id: req.product,
        guardian: guardian.id,
        created: now,
        expires: req.expires,
        count: req.count,
        serial_start: req.serial_start,
        device_types: req.device_types.clone(),
        uid_range: req.uid_range.clone(),
        template: product.template.to_toml(),
        issuing_ca_cert: issuing.der.clone(),
        issuing_ca_key: *issuing_scalar,
        device_ca_cert: dca_der.clone(),
        root_cert: oem.root_der()?,
        product_key: *product_key,
        mastering_cert: oem.mastering_der()?,
        release_upk,
        release_enc,
        oem_name: oem.name().to_string(),
        product_name: product.config.name.clone(),
    };
    let payload = Zeroizing::new(manifest.encode());
    drop(manifest);
    let mut tbs = Vec::with_capacity(payload.len() + 64);
    sig_structure(&PROTECTED_ES256, &payload, |b| tbs.extend_from_slice(b));
    let signature = dca_key.sign(&tbs)?;
    drop(tbs);
    let signed = Zeroizing::new(encode_sign1(Some(&dca_der), &payload, &signature));
    let sealed = seal_for(&guardian.kem_key, &signed, &mut entropy)?;
    // Kept at the OEM (in its keystore, or its token) to sign this issuing
    // CA's CRLs: `trustchain oem revoke` of one produced device.
    let ca_label = crate::revoke::package_ca_label(&hex::encode(package_id))
        .ok_or(Error::Crypto("package CA label"))?;
    keystore.import_scalar(&ca_label, KeyKind::EcdsaP256, &issuing_scalar)?;
    crate::fsutil::write_new(&req.out, &sealed, "package file")?;
    // Kept for reconciliation: which issuing CA this package's devices chain to.
    let kept = oem.path().join("packages");
    if !kept.is_dir() {
        std::fs::create_dir(&kept).at(&kept)?;
    }
    crate::fsutil::write_new(
        &kept.join(format!("{}.issuing-ca.pem", hex::encode(package_id))),
        issuing.pem().as_bytes(),
        "issuing CA record",
    )?;
    oem.audit().append(
        &lock,
        &req.operator,
        crate::audit::Event::Wrap {
            product: req.product.get(),
            package_id: hex::encode(package_id),
            guardian: hex::encode(guardian.id),
            count: req.count,
            serial_start: req.serial_start,
            release_version: info.version.clone(),
            issuing_ca_sha256: hex::encode(sha256(&issuing.der)),
            package_sha256: Sha256(sha256(&sealed)).to_string(),
        },
    )?;
    Ok(WrapReport {
        out: req.out.clone(),
        package_id: hex::encode(package_id),
        guardian: hex::encode(guardian.id),
        count: req.count,
        serials: (req.serial_start, req.serial_start + req.count - 1),
        issuing_ca_sha256: hex::encode(sha256(&issuing.der)),
        release_version: info.version,
        size: sealed.len() as u64,
    })
}
