//! The Guardian directory: identity, keystore, trusted roots, database.
//!
//! The identity keys (`guardian-sign`, `guardian-kem`) are made in the
//! sealed keystore, or inside a PKCS#11 token ([`GuardianDir::init_in_token`])
//! where they are sensitive and never extractable. With a token, each job's
//! issuing key is imported into the token too, and only the job's product
//! key (which must go to every device, wrapped) stays a sealed file, under a
//! sealing key the token holds (see `keystore::sealed`).
use std::path::{Path, PathBuf};

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde::{Deserialize, Serialize};
use trustchain_formats::OemId;
use trustchain_oem::crypto::sha256;
use trustchain_oem::fsutil::{self, StagedDir};
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::pkcs11::Pkcs11KeyStore;
use trustchain_oem::keystore::sealed::{KdfParams, SealedKeyStore};
use trustchain_oem::keystore::{KeyKind, KeyLabel, KeyStore, TokenRef};
use trustchain_oem::pki::{self, CertSpec};

use crate::error::{Error, Result};
use crate::store::Store;

/// The Guardian's signing key (reports, log checkpoints, its certificate).
pub fn sign_label() -> KeyLabel {
    KeyLabel::new("guardian-sign").unwrap_or_else(KeyLabel::root_ca)
}

/// The Guardian's key-agreement key (packages are encrypted to it).
pub fn kem_label() -> KeyLabel {
    KeyLabel::new("guardian-kem").unwrap_or_else(KeyLabel::root_ca)
}

/// `guardian.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianConfig {
    /// Format version, 1.
    pub format: u32,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: String,
    /// SHA-256 of the identity (key-agreement) certificate, hex: the ID OEMs wrap for.
    pub id: String,
    /// The PKCS#11 token holding the keys, if not the passphrase keystore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<TokenRef>,
}

/// What `guardian init` made.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The directory.
    pub dir: PathBuf,
    /// The Guardian ID (hex).
    pub id: String,
    /// The identity certificate file to give to OEMs.
    pub identity: PathBuf,
    /// The token holding the identity keys, if any.
    pub pkcs11: Option<TokenRef>,
}

/// An opened Guardian directory.
#[derive(Debug)]
pub struct GuardianDir {
    path: PathBuf,
    config: GuardianConfig,
}

/// Placeholder OEM ID of the Guardian's own certificates (they belong to no OEM).
const NO_OEM: u32 = u32::MAX;

fn check_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.len() > 48 {
        return Err(
            trustchain_oem::Error::Usage("--name must be 1 to 48 characters".into()).into(),
        );
    }
    Ok(name)
}

impl GuardianDir {
    /// Creates a Guardian in `path` (must not exist).
    pub fn init(path: &Path, name: &str, pass: &Passphrase, kdf: KdfParams) -> Result<InitReport> {
        let name = check_name(name)?;
        let staged = StagedDir::new(path, "Guardian directory")?;
        let mut ks = SealedKeyStore::create(&staged.path().join("keystore"), pass, kdf)?;
        Self::init_keys(staged, &mut ks, name, None)
    }

    /// Creates a Guardian in `path` (must not exist) whose identity keys are
    /// generated inside the logged-in `token`, sensitive and never
    /// extractable; `guardian.toml` records the module and token label
    /// (never the PIN). Refuses a token that already holds trustchain keys;
    /// on failure nothing is left behind, in the directory or the token.
    pub fn init_in_token(path: &Path, name: &str, token: Pkcs11KeyStore) -> Result<InitReport> {
        let name = check_name(name)?;
        let custody = TokenRef {
            module: token.module().to_path_buf(),
            token: token.token_label().to_string(),
        };
        let ours = [sign_label(), kem_label(), KeyLabel::keystore_seal()];
        trustchain_oem::oem::check_token_is_free(&token, &ours[..2])?;
        let staged = StagedDir::new(path, "Guardian directory")?;
        let mut ks = SealedKeyStore::create_bound(&staged.path().join("keystore"), token)?;
        let r = Self::init_keys(staged, &mut ks, name, Some(custody));
        if r.is_err() {
            if let Some(t) = ks.token_mut() {
                for l in &ours {
                    let _ = t.destroy(l);
                }
            }
        }
        r
    }

    fn init_keys(
        staged: StagedDir,
        ks: &mut SealedKeyStore,
        name: &str,
        custody: Option<TokenRef>,
    ) -> Result<InitReport> {
        let dir = staged.path();
        ks.generate(&sign_label(), KeyKind::EcdsaP256)?;
        let kem = ks.generate(&kem_label(), KeyKind::EcdhP256)?;
        let signer = ks.signer(&sign_label())?;
        let oem = OemId::new(NO_OEM).ok_or(trustchain_oem::Error::Crypto("OEM ID"))?;
        let mut sspec = CertSpec::new(
            format!("{name} Guardian Signing"),
            format!("{name} Guardian"),
            oem,
            10,
        );
        sspec.ca_path_len = Some(0);
        let signing = pki::self_signed(&sspec, signer.as_ref())?;
        let mut kspec = CertSpec::new(
            format!("{name} Guardian"),
            format!("{name} Guardian"),
            oem,
            10,
        );
        kspec.key_usages = vec![KeyUsagePurpose::KeyAgreement];
        kspec.extended_key_usages = Vec::<ExtendedKeyUsagePurpose>::new();
        let kem_cert = pki::issue(&kspec, &kem, &signing, signer.as_ref())?;
        let identity = format!("{}{}", kem_cert.pem(), signing.pem());
        fsutil::write_new(
            &dir.join("identity.pem"),
            identity.as_bytes(),
            "identity certificate",
        )?;
        std::fs::create_dir(dir.join("trusted-roots")).map_err(|e| trustchain_oem::Error::Io {
            path: dir.join("trusted-roots"),
            source: e,
        })?;
        let id = hex::encode(sha256(&kem_cert.der));
        let config = GuardianConfig {
            format: 1,
            name: name.to_string(),
            created: trustchain_oem::audit::now_rfc3339(),
            id: id.clone(),
            pkcs11: custody.clone(),
        };
        let text =
            toml::to_string(&config).map_err(|e| trustchain_oem::Error::Usage(e.to_string()))?;
        fsutil::write_new(
            &dir.join("guardian.toml"),
            text.as_bytes(),
            "Guardian description",
        )?;
        Store::create(&dir.join("guardian.db"))?;
        let dir = staged.commit()?;
        Ok(InitReport {
            identity: dir.join("identity.pem"),
            dir,
            id,
            pkcs11: custody,
        })
    }

    /// Opens a Guardian directory.
    pub fn open(path: &Path) -> Result<Self> {
        let not = |problem: String| Error::NotAGuardian {
            path: path.to_path_buf(),
            problem,
        };
        if !path.is_dir() {
            return Err(trustchain_oem::Error::NotFound {
                path: path.to_path_buf(),
                what: "Guardian directory",
            }
            .into());
        }
        let text = std::fs::read_to_string(path.join("guardian.toml"))
            .map_err(|_| not("guardian.toml is missing".into()))?;
        let config: GuardianConfig =
            toml::from_str(&text).map_err(|e| not(format!("guardian.toml: {e}")))?;
        for f in [
            "identity.pem",
            "keystore/keystore.toml",
            "guardian.db",
            "trusted-roots",
        ] {
            if !path.join(f).exists() {
                return Err(not(format!("{f} is missing")));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The configuration.
    pub fn config(&self) -> &GuardianConfig {
        &self.config
    }
    /// The PKCS#11 token holding the keys, if the Guardian was made with one.
    pub fn custody(&self) -> Option<&TokenRef> {
        self.config.pkcs11.as_ref()
    }
    /// Unlocks the keystore: `secret` is the keystore passphrase, or the
    /// token's user PIN when the keys are in a token (the token is then
    /// opened, once for this process).
    pub fn unlock(&self, secret: &Passphrase) -> Result<SealedKeyStore> {
        Ok(trustchain_oem::oem::open_keystore(
            &self.path,
            &self.path.join("keystore"),
            self.custody(),
            secret,
        )?)
    }
    /// The database.
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.path.join("guardian.db"))
    }
    /// The identity: (key-agreement certificate DER, its SHA-256).
    pub fn identity(&self) -> Result<trustchain_oem::wrap::GuardianIdentity> {
        Ok(trustchain_oem::wrap::GuardianIdentity::load(
            &self.path.join("identity.pem"),
        )?)
    }

    /// Trusts an OEM root (the operator's decision, after checking its
    /// fingerprint with the OEM out of band). Returns the fingerprint.
    pub fn trust_root(&self, root_pem: &Path) -> Result<String> {
        let bytes = std::fs::read(root_pem).map_err(|e| trustchain_oem::Error::Io {
            path: root_pem.to_path_buf(),
            source: e,
        })?;
        let der = pki::cert_der(&bytes).map_err(|problem| trustchain_oem::Error::Corrupt {
            path: root_pem.to_path_buf(),
            problem,
        })?;
        let cert = pki::parse_cert(&der).map_err(|problem| trustchain_oem::Error::Corrupt {
            path: root_pem.to_path_buf(),
            problem,
        })?;
        let info = pki::describe(&cert);
        if !info.self_issued || info.ca.is_none() || info.oem_id.is_none() {
            return Err(trustchain_oem::Error::Corrupt {
                path: root_pem.to_path_buf(),
                problem: "not a trustchain OEM root (self-issued CA with an OEM ID)".into(),
            }
            .into());
        }
        let fp = hex::encode(sha256(&der));
        let dst = self.path.join("trusted-roots").join(format!("{fp}.pem"));
        if !dst.exists() {
            fsutil::write_new(&dst, pki::to_pem(&der).as_bytes(), "trusted root")?;
            self.store()?.audit(
                "trust_root",
                &format!("OEM {} root {fp}", info.oem_id.unwrap_or(0)),
            )?;
        }
        Ok(fp)
    }

    /// Signs a checkpoint of the audit log with the Guardian signing key.
    pub fn checkpoint(&self, ks: &SealedKeyStore) -> Result<(i64, [u8; 32])> {
        let signer = ks.signer(&sign_label())?;
        self.store()?.checkpoint(|m| Ok(signer.sign(m)?))
    }

    /// Verifies the audit log's chain and checkpoint signatures (with the
    /// Guardian's signing certificate). Returns (entries, checkpoints).
    pub fn verify_audit(&self) -> Result<std::result::Result<(u64, u64), String>> {
        let id = self.identity()?;
        let key = pki::parse_cert(&id.signing_cert)
            .ok()
            .and_then(|c| pki::cert_public_key(&c));
        self.store()?.verify_audit(|m, s| {
            key.as_ref()
                .is_some_and(|k| trustchain_oem::crypto::verify_es256(&k.0, m, s))
        })
    }

    /// The trusted root with this fingerprint, if trusted.
    pub fn trusted_root(&self, fingerprint: &[u8; 32]) -> Option<Vec<u8>> {
        let p = self
            .path
            .join("trusted-roots")
            .join(format!("{}.pem", hex::encode(fingerprint)));
        let bytes = std::fs::read(p).ok()?;
        let der = pki::cert_der(&bytes).ok()?;
        (sha256(&der) == *fingerprint).then_some(der)
    }
}
