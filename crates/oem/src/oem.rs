//! The OEM directory: the key hierarchy, its keystore, products and the
//! audit log, all in one folder the OEM keeps on its secure desk.
//!
//! ```text
//! OEM_DIR/
//!   oem.toml                       OEM ID, name
//!   root.pem device-ca.pem mastering.pem
//!   keystore/                      sealed private keys (see keystore::sealed);
//!                                  bound to a PKCS#11 token when oem.toml names one
//!   products/<id>/product.toml     product ID, name, product key (public)
//!   products/<id>/product-key.pem  the product key-agreement key (public, SPKI)
//!   products/<id>/template.toml    device certificate template
//!   audit.log                      hash-chained log of every key and mastering
//! ```
use std::path::{Path, PathBuf};

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde::{Deserialize, Serialize};
use trustchain_formats::{OemId, ProductId};

use crate::audit::{self, AuditLog, Event};
use crate::crypto::{sha256, PublicKey};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, DirLock, StagedDir};
use crate::keystore::passphrase::Passphrase;
use crate::keystore::pkcs11::Pkcs11KeyStore;
use crate::keystore::sealed::{KdfParams, SealedKeyStore};
use crate::keystore::{KeyKind, KeyLabel, KeyStore, TokenRef};
use crate::pki::{self, validity, CertSpec};
use crate::product::Product;

/// `oem.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OemConfig {
    /// Format version, 1.
    pub format: u32,
    /// OEM ID.
    pub oem_id: u32,
    /// OEM name.
    pub name: String,
    /// Creation time.
    pub created: String,
    /// The PKCS#11 token holding the keys, if not the passphrase keystore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<TokenRef>,
}

/// The keys `oem init` makes: in the token when there is one.
fn oem_keys() -> [KeyLabel; 3] {
    [
        KeyLabel::root_ca(),
        KeyLabel::device_ca(),
        KeyLabel::mastering(),
    ]
}

/// Refuses a token that holds any of `labels` or a keystore seal: it
/// belongs to another directory, and nothing may be changed in it.
pub fn check_token_is_free(token: &Pkcs11KeyStore, labels: &[KeyLabel]) -> Result<()> {
    let taken: Vec<String> = labels
        .iter()
        .chain(std::iter::once(&KeyLabel::keystore_seal()))
        .filter(|l| token.contains(l))
        .map(|l| format!("'{l}'"))
        .collect();
    if taken.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} already holds key(s) {}: they belong to another trustchain directory and are left \
         alone. Use one token per OEM or Guardian directory (initialise a new one, for SoftHSM2: \
         `softhsm2-util --init-token --free --label LABEL`)",
        token.describe(),
        taken.join(", ")
    )))
}

/// Opens the keystore of a directory: with the passphrase, or, when the
/// directory records a token, by logging in to the token with `secret` as
/// its user PIN. Errors name the directory and the token.
pub fn open_keystore(
    dir: &Path,
    keystore: &Path,
    custody: Option<&TokenRef>,
    secret: &Passphrase,
) -> Result<SealedKeyStore> {
    let Some(t) = custody else {
        return SealedKeyStore::open(keystore, secret);
    };
    let in_context = |e: Error| match e {
        Error::Usage(m) => Error::Usage(format!("{}: {m}", dir.display())),
        other => other,
    };
    let token = Pkcs11KeyStore::open(&t.module, &t.token, secret).map_err(in_context)?;
    SealedKeyStore::open_bound(keystore, token).map_err(in_context)
}

/// An opened OEM directory.
#[derive(Debug)]
pub struct OemDir {
    path: PathBuf,
    config: OemConfig,
    oem_id: OemId,
}

/// What `oem init` made.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The directory.
    pub dir: PathBuf,
    /// OEM ID.
    pub oem_id: u32,
    /// Files written.
    pub files: Vec<String>,
    /// SHA-256 of the root certificate: the fingerprint to publish.
    pub root_sha256: String,
    /// The token holding the root CA, device CA and mastering keys, if any.
    pub pkcs11: Option<TokenRef>,
}

/// SPKI DER prefix of a P-256 public key (id-ecPublicKey, prime256v1).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// PEM `PUBLIC KEY` of a P-256 point.
pub fn public_key_pem(key: &PublicKey) -> String {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&key.0);
    pki::pem_encode("PUBLIC KEY", &der)
}

/// Reads a P-256 public key from SPKI PEM or DER.
pub fn parse_public_key(bytes: &[u8]) -> Option<PublicKey> {
    let der = if bytes.starts_with(b"-----BEGIN PUBLIC KEY-----") {
        let text = std::str::from_utf8(bytes).ok()?;
        let (label, der) = x509_cert::der::pem::decode_vec(text.as_bytes()).ok()?;
        (label == "PUBLIC KEY").then_some(der)?
    } else {
        bytes.to_vec()
    };
    let point = der.strip_prefix(&P256_SPKI_PREFIX[..])?;
    PublicKey::from_sec1(point)
}

fn check_name(name: &str) -> Result<&str> {
    let name = name.trim();
    // The longest subject is "NAME Mastering"; X.520 bounds a CN at 64.
    if name.is_empty() || name.len() > 48 {
        return Err(Error::Usage(
            "--name must be 1 to 48 characters (certificate common names are at most 64)".into(),
        ));
    }
    Ok(name)
}

impl OemDir {
    /// Creates the hierarchy in `path` (which must not exist). Nothing is
    /// left behind on failure.
    pub fn init(
        path: &Path,
        oem_id: OemId,
        name: &str,
        pass: &Passphrase,
        kdf: KdfParams,
        operator: &str,
    ) -> Result<InitReport> {
        let name = check_name(name)?;
        let staged = StagedDir::new(path, "OEM directory")?;
        let mut ks = SealedKeyStore::create(&staged.path().join("keystore"), pass, kdf)?;
        Self::init_keys(staged, &mut ks, oem_id, name, None, operator)
    }

    /// Creates the hierarchy in `path` (which must not exist) with the root
    /// CA, device CA and mastering keys generated inside the logged-in
    /// `token` (sensitive, never extractable): CA signing and mastering
    /// happen in the HSM. Product keys, which must travel, are sealed in
    /// `keystore/` under a key the token holds. `oem.toml` records the module
    /// and token label (never the PIN). Refuses a token that already holds
    /// trustchain keys; on failure nothing is left behind, in the directory
    /// or the token.
    pub fn init_in_token(
        path: &Path,
        oem_id: OemId,
        name: &str,
        token: Pkcs11KeyStore,
        operator: &str,
    ) -> Result<InitReport> {
        let name = check_name(name)?;
        let custody = TokenRef {
            module: token.module().to_path_buf(),
            token: token.token_label().to_string(),
        };
        check_token_is_free(&token, &oem_keys())?;
        let staged = StagedDir::new(path, "OEM directory")?;
        let mut ks = SealedKeyStore::create_bound(&staged.path().join("keystore"), token)?;
        let r = Self::init_keys(staged, &mut ks, oem_id, name, Some(custody), operator);
        if r.is_err() {
            if let Some(t) = ks.token_mut() {
                for l in oem_keys()
                    .iter()
                    .chain(std::iter::once(&KeyLabel::keystore_seal()))
                {
                    let _ = t.destroy(l);
                }
            }
        }
        r
    }

    fn init_keys(
        staged: StagedDir,
        ks: &mut SealedKeyStore,
        oem_id: OemId,
        name: &str,
        custody: Option<TokenRef>,
        operator: &str,
    ) -> Result<InitReport> {
        let dir = staged.path();
        ks.generate(&KeyLabel::root_ca(), KeyKind::EcdsaP256)?;
        ks.generate(&KeyLabel::device_ca(), KeyKind::EcdsaP256)?;
        let m_pub = ks.generate(&KeyLabel::mastering(), KeyKind::EcdsaP256)?;
        let root_key = ks.signer(&KeyLabel::root_ca())?;
        let dca_key = ks.signer(&KeyLabel::device_ca())?;

        let mut root_spec = CertSpec::new(
            format!("{name} Root CA"),
            name.to_string(),
            oem_id,
            validity::ROOT_YEARS,
        );
        root_spec.ca_path_len = Some(2);
        let root = pki::self_signed(&root_spec, root_key.as_ref())?;
        let mut dca_spec = CertSpec::new(
            format!("{name} Device CA"),
            name.to_string(),
            oem_id,
            validity::DEVICE_CA_YEARS,
        );
        dca_spec.ca_path_len = Some(1);
        let dca = pki::issue(&dca_spec, dca_key.public_key(), &root, root_key.as_ref())?;
        let mut m_spec = CertSpec::new(
            format!("{name} Mastering"),
            name.to_string(),
            oem_id,
            validity::MASTERING_YEARS,
        );
        m_spec.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        m_spec.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let mastering = pki::issue(&m_spec, &m_pub, &root, root_key.as_ref())?;

        fsutil::write_new(
            &dir.join("root.pem"),
            root.pem().as_bytes(),
            "root certificate",
        )?;
        fsutil::write_new(
            &dir.join("device-ca.pem"),
            dca.pem().as_bytes(),
            "device CA certificate",
        )?;
        fsutil::write_new(
            &dir.join("mastering.pem"),
            mastering.pem().as_bytes(),
            "mastering certificate",
        )?;
        std::fs::create_dir(dir.join("products")).at(dir.join("products"))?;
        let config = OemConfig {
            format: 1,
            oem_id: oem_id.get(),
            name: name.to_string(),
            created: audit::now_rfc3339(),
            pkcs11: custody.clone(),
        };
        let text = toml::to_string(&config).map_err(|e| Error::Usage(e.to_string()))?;
        fsutil::write_new(&dir.join("oem.toml"), text.as_bytes(), "OEM description")?;
        let root_sha256 = hex::encode(sha256(&root.der));
        AuditLog::new(&dir.join("audit.log")).append(
            &DirLock::acquire(dir)?,
            operator,
            Event::OemInit {
                oem_id: oem_id.get(),
                root_sha256: root_sha256.clone(),
            },
        )?;
        let dir = staged.commit()?;
        Ok(InitReport {
            dir,
            oem_id: oem_id.get(),
            files: [
                "oem.toml",
                "root.pem",
                "device-ca.pem",
                "mastering.pem",
                "keystore/",
                "products/",
                "audit.log",
            ]
            .map(String::from)
            .to_vec(),
            root_sha256,
            pkcs11: custody,
        })
    }

    /// Opens an existing OEM directory (no passphrase needed).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
                what: "OEM directory",
            });
        }
        let not_oem = |problem: String| Error::NotAnOemDir {
            path: path.to_path_buf(),
            problem,
        };
        let cfg_path = path.join("oem.toml");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|_| not_oem("oem.toml is missing".into()))?;
        let config: OemConfig =
            toml::from_str(&text).map_err(|e| not_oem(format!("oem.toml: {e}")))?;
        if config.format != 1 {
            return Err(not_oem(format!(
                "oem.toml format {} is not supported",
                config.format
            )));
        }
        let oem_id =
            OemId::new(config.oem_id).ok_or_else(|| not_oem("oem.toml: oem_id is 0".into()))?;
        for f in [
            "root.pem",
            "device-ca.pem",
            "mastering.pem",
            "keystore/keystore.toml",
        ] {
            if !path.join(f).exists() {
                return Err(not_oem(format!("{f} is missing")));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            config,
            oem_id,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// OEM ID.
    pub fn oem_id(&self) -> OemId {
        self.oem_id
    }
    /// OEM name.
    pub fn name(&self) -> &str {
        &self.config.name
    }
    /// The keystore directory.
    pub fn keystore_dir(&self) -> PathBuf {
        self.path.join("keystore")
    }
    /// The PKCS#11 token holding the keys, if the directory was made with one.
    pub fn custody(&self) -> Option<&TokenRef> {
        self.config.pkcs11.as_ref()
    }
    /// Unlocks the keystore: `secret` is the keystore passphrase, or the
    /// token's user PIN when the keys are in a token (the token is then
    /// opened, once for this process).
    pub fn unlock(&self, secret: &Passphrase) -> Result<SealedKeyStore> {
        open_keystore(&self.path, &self.keystore_dir(), self.custody(), secret)
    }
    /// Waits for, then holds, this directory's lock ([`DirLock`]): taken by
    /// every command that changes it, before it reads what it will change.
    pub fn lock(&self) -> Result<DirLock> {
        DirLock::acquire(&self.path)
    }
    /// The audit log.
    pub fn audit(&self) -> AuditLog {
        AuditLog::new(&self.path.join("audit.log"))
    }

    fn cert(&self, file: &str) -> Result<Vec<u8>> {
        let path = self.path.join(file);
        let bytes = std::fs::read(&path).at(&path)?;
        pki::cert_der(&bytes).map_err(|problem| Error::Corrupt { path, problem })
    }
    /// The root certificate (DER).
    pub fn root_der(&self) -> Result<Vec<u8>> {
        self.cert("root.pem")
    }
    /// The mastering certificate (DER).
    pub fn mastering_der(&self) -> Result<Vec<u8>> {
        self.cert("mastering.pem")
    }
    /// The device CA certificate (DER).
    pub fn device_ca_der(&self) -> Result<Vec<u8>> {
        self.cert("device-ca.pem")
    }

    /// The directory of product `id`.
    pub fn product_dir(&self, id: ProductId) -> PathBuf {
        self.path.join("products").join(id.get().to_string())
    }

    /// Loads product `id`.
    pub fn product(&self, id: ProductId) -> Result<Product> {
        Product::load(self, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_pem_round_trips() {
        let (k, _) = crate::crypto::EcdhKey::generate(&mut crate::crypto::SystemEntropy).unwrap();
        let pem = public_key_pem(k.public_key());
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(
            parse_public_key(pem.as_bytes()).as_ref(),
            Some(k.public_key())
        );
        assert!(parse_public_key(b"garbage").is_none());
    }
}
