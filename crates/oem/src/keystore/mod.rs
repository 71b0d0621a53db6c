//! Key custody. Private keys live behind the [`KeyStore`] trait: the sealed
//! software keystore ([`sealed::SealedKeyStore`]) is the default; a PKCS#11
//! backend (an HSM) fits behind the same trait. Callers get [`Signer`]s and
//! [`KeyAgreement`]s, never key bytes.
pub mod passphrase;
pub mod pkcs11;
pub mod sealed;

use std::fmt;

use zeroize::Zeroizing;

use crate::crypto::PublicKey;
use crate::error::Result;

/// A key's name in a keystore: 1 to 64 of `a-z 0-9 -`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyLabel(String);

impl KeyLabel {
    /// Checks and makes a label.
    pub fn new(s: &str) -> Option<Self> {
        let ok = (1..=64).contains(&s.len())
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| Self(s.to_string()))
    }
    /// The root CA key.
    pub fn root_ca() -> Self {
        Self("root-ca".into())
    }
    /// The device-issuing CA key.
    pub fn device_ca() -> Self {
        Self("device-ca".into())
    }
    /// The mastering (image-signing) key.
    pub fn mastering() -> Self {
        Self("mastering".into())
    }
    /// A product's key-agreement key (image encryption).
    pub fn product_kek(product: u32) -> Self {
        Self(format!("product-{product}-kek"))
    }
    /// The token key that seals a token-bound keystore's travelling keys
    /// (see [`sealed::SealedKeyStore::create_bound`]).
    pub fn keystore_seal() -> Self {
        Self("keystore-seal".into())
    }
    /// As text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Whether the key must leave its keystore, wrapped: a product key
    /// (`product-N-kek` at the OEM, `job-N-product` at the Guardian) goes
    /// into every device of its product and into every production package.
    /// A token-bound keystore keeps these sealed beside the token, and every
    /// other key inside it.
    pub fn travels(&self) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let between = |prefix: &str, suffix: &str| {
            self.0
                .strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                .is_some_and(digits)
        };
        between("product-", "-kek") || between("job-", "-product")
    }
}

/// Where a directory's keys are held when they are in a PKCS#11 token, as
/// recorded in its metadata (`oem.toml`, `guardian.toml`). Never the PIN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRef {
    /// The token's PKCS#11 library.
    pub module: std::path::PathBuf,
    /// The token's label.
    pub token: String,
}

impl fmt::Display for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PKCS#11 token '{}' (module {})",
            self.token,
            self.module.display()
        )
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key may do. Key separation: one key, one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256 signing (certificates, UPKs).
    EcdsaP256,
    /// ECDH P-256 key agreement (content-key wrapping).
    EcdhP256,
}

impl KeyKind {
    /// As in file formats.
    pub fn code(self) -> u8 {
        match self {
            KeyKind::EcdsaP256 => 1,
            KeyKind::EcdhP256 => 2,
        }
    }
    /// From [`KeyKind::code`].
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(KeyKind::EcdsaP256),
            2 => Some(KeyKind::EcdhP256),
            _ => None,
        }
    }
    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ECDSA P-256 signing key",
            KeyKind::EcdhP256 => "ECDH P-256 key-agreement key",
        }
    }
}

/// Signs with a key that stays in its keystore.
pub trait Signer: Send + Sync {
    /// The public key.
    fn public_key(&self) -> &PublicKey;
    /// ECDSA P-256 over SHA-256(`msg`), as `r || s`.
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64]>;
}

/// Agrees on a secret with a key that stays in its keystore.
pub trait KeyAgreement: Send + Sync {
    /// The public key.
    fn public_key(&self) -> &PublicKey;
    /// The ECDH shared secret (x coordinate) with `peer` (SEC1 point).
    fn agree(&self, peer: &[u8]) -> Result<Zeroizing<[u8; 32]>>;
}

/// A place that holds private keys and uses them on request.
pub trait KeyStore {
    /// Generates a key under `label`; refuses if the label is taken.
    fn generate(&mut self, label: &KeyLabel, kind: KeyKind) -> Result<PublicKey>;
    /// Whether `label` exists.
    fn contains(&self, label: &KeyLabel) -> bool;
    /// The public key of `label`.
    fn public_key(&self, label: &KeyLabel) -> Result<PublicKey>;
    /// A signer for the ECDSA key `label`.
    fn signer(&self, label: &KeyLabel) -> Result<Box<dyn Signer>>;
    /// A key-agreement handle for the ECDH key `label`.
    fn key_agreement(&self, label: &KeyLabel) -> Result<Box<dyn KeyAgreement>>;
    /// The ECDH private key `label`, wrapped for a device's key-agreement key
    /// (ECDH-ES + A128KW, product-key context): one of the two ways a product
    /// key leaves its keystore (see `export_for_package`). Returns the ephemeral point and the wrapped key.
    fn export_wrapped_for_device(
        &self,
        label: &KeyLabel,
        device_ka: &PublicKey,
    ) -> Result<([u8; 65], [u8; 40])>;
    /// The ECDH private scalar `label`, for the secret wrapping tool only: it
    /// goes straight into a package encrypted for one Guardian. A backend
    /// that cannot export (an HSM) refuses, and the wrap happens inside it.
    fn export_for_package(&self, label: &KeyLabel) -> Result<Zeroizing<[u8; 32]>>;
    /// Keeps a private scalar made outside the keystore under `label`
    /// (refuses a taken label): the Guardian taking a job's keys from a
    /// package, the OEM keeping a package's issuing CA key to sign that CA's
    /// CRLs. An ECDSA scalar becomes a signing key, an ECDH one a
    /// key-agreement key; in a token it is sensitive and not extractable.
    fn import_scalar(
        &mut self,
        label: &KeyLabel,
        kind: KeyKind,
        scalar: &[u8; 32],
    ) -> Result<PublicKey>;
}

impl Signer for crate::crypto::EcdsaKey {
    fn public_key(&self) -> &PublicKey {
        crate::crypto::EcdsaKey::public_key(self)
    }
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64]> {
        crate::crypto::EcdsaKey::sign(self, msg)
    }
}

impl KeyAgreement for crate::crypto::EcdhKey {
    fn public_key(&self) -> &PublicKey {
        crate::crypto::EcdhKey::public_key(self)
    }
    fn agree(&self, peer: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        crate::crypto::EcdhKey::agree(self, peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(KeyLabel::new("product-7-kek").is_some());
        for bad in ["", "7abc", "Root", "a/b", "a..b", &"a".repeat(65)] {
            assert!(KeyLabel::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn only_product_keys_travel() {
        for l in ["product-7-kek", "job-12-product"] {
            assert!(KeyLabel::new(l).unwrap().travels(), "{l}");
        }
        for l in [
            "root-ca",
            "device-ca",
            "mastering",
            "guardian-sign",
            "guardian-kem",
            "job-12-issuing",
            "keystore-seal",
            "product--kek",
            "product-x-kek",
            "job-1-product-2",
        ] {
            assert!(!KeyLabel::new(l).unwrap().travels(), "{l}");
        }
    }
}
