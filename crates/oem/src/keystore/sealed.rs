//! The software keystore: every private key sealed at rest with AES-256-GCM
//! under a key derived from the passphrase by Argon2id (RFC 9106). The
//! format is in `docs/formats.md` ("Sealed keystore").
//!
//! ```text
//! KEYSTORE_DIR/keystore.toml   KDF parameters, salt, passphrase check
//! KEYSTORE_DIR/<label>.key     one sealed key each
//! ```
//!
//! A keystore can instead be *bound to a PKCS#11 token*
//! ([`SealedKeyStore::create_bound`]). Then every key is made and used
//! inside the token, except the keys that must travel
//! ([`KeyLabel::travels`]: product keys, which go to every device and into
//! every production package, in formats no token can produce). Those stay
//! sealed files as above, but the sealing key comes from the token instead
//! of a passphrase: ECDH between a token-resident key (`keystore-seal`,
//! never extractable) and an ephemeral point kept in `keystore.toml`, then
//! HKDF-SHA-256 (RFC 5869) on the host (SoftHSM2 has no HKDF mechanism).
//! One secret, the token's user PIN, opens both.
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::passphrase::Passphrase;
use super::pkcs11::Pkcs11KeyStore;
use super::{KeyAgreement, KeyKind, KeyLabel, KeyStore, Signer};
use crate::crypto::{Aead, EcdhKey, EcdsaKey, Entropy, PublicKey, SystemEntropy};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;

/// Magic and version at the start of every sealed key file.
pub const KEY_MAGIC: &[u8; 7] = b"TCKEY\x00\x01";
/// The plaintext sealed in `keystore.toml` to check the passphrase.
const CHECK_PLAINTEXT: &[u8] = b"trustchain keystore v1";
/// AAD of the passphrase check.
const CHECK_AAD: &[u8] = b"trustchain-keystore-check";
/// Largest sealed key file we read.
const MAX_KEY_FILE: u64 = 4096;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// RFC 9106 §4, second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const RECOMMENDED: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };

    fn check(&self) -> Option<()> {
        let ok = (8 * 1024..=4 * 1024 * 1024).contains(&self.memory_kib)
            && (1..=16).contains(&self.iterations)
            && (1..=16).contains(&self.parallelism);
        ok.then_some(())
    }
}

/// `kdf` of a passphrase keystore.
const PASSPHRASE_KDF: &str = "argon2id";
/// `kdf` of a token-bound keystore.
pub const BOUND_KDF: &str = "pkcs11-ecdh-p256-hkdf-sha256";
/// HKDF info of a token-bound keystore's sealing key (then the ephemeral point).
const BOUND_INFO: &[u8] = b"trustchain keystore kek v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    format: u32,
    kdf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_kib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parallelism: Option<u32>,
    salt: String,
    /// Token-bound: the label of the token's sealing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal_key: Option<String>,
    /// Token-bound: the ephemeral public point (SEC1 hex) ECDH runs against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ephemeral: Option<String>,
    check: String,
}

/// How a keystore's sealing key is obtained, from `keystore.toml`.
enum Unlock {
    Passphrase(KdfParams),
    Token {
        seal_key: KeyLabel,
        ephemeral: PublicKey,
    },
}

/// A parsed `keystore.toml`.
struct Description {
    unlock: Unlock,
    salt: [u8; 16],
    check: Vec<u8>,
}

fn read_description(dir: &Path) -> Result<Description> {
    let path = dir.join("keystore.toml");
    let corrupt = |problem: &str| Error::Corrupt {
        path: path.clone(),
        problem: problem.to_string(),
    };
    if !path.is_file() {
        return Err(Error::NotFound {
            path,
            what: "keystore description",
        });
    }
    let text = fs::read_to_string(&path).at(&path)?;
    let file: KeystoreFile = toml::from_str(&text).map_err(|e| corrupt(&e.to_string()))?;
    if file.format != 1 {
        return Err(corrupt("unsupported keystore format"));
    }
    let unlock = match (file.kdf.as_str(), file.seal_key, file.ephemeral) {
        (PASSPHRASE_KDF, None, None) => {
            let params = KdfParams {
                memory_kib: file
                    .memory_kib
                    .ok_or_else(|| corrupt("memory_kib missing"))?,
                iterations: file
                    .iterations
                    .ok_or_else(|| corrupt("iterations missing"))?,
                parallelism: file
                    .parallelism
                    .ok_or_else(|| corrupt("parallelism missing"))?,
            };
            params
                .check()
                .ok_or_else(|| corrupt("Argon2id parameters out of range"))?;
            Unlock::Passphrase(params)
        }
        (BOUND_KDF, Some(seal_key), Some(ephemeral))
            if file.memory_kib.is_none()
                && file.iterations.is_none()
                && file.parallelism.is_none() =>
        {
            Unlock::Token {
                seal_key: KeyLabel::new(&seal_key)
                    .ok_or_else(|| corrupt("seal_key is not a key label"))?,
                ephemeral: hex::decode(&ephemeral)
                    .ok()
                    .and_then(|b| PublicKey::from_sec1(&b))
                    .ok_or_else(|| corrupt("ephemeral is not a P-256 point"))?,
            }
        }
        _ => return Err(corrupt("unsupported KDF, or fields of another KDF")),
    };
    let salt = hex::decode(&file.salt).map_err(|_| corrupt("salt is not hex"))?;
    let salt: [u8; 16] = salt
        .try_into()
        .map_err(|_| corrupt("salt must be 16 bytes"))?;
    let check = hex::decode(&file.check).map_err(|_| corrupt("check is not hex"))?;
    Ok(Description {
        unlock,
        salt,
        check,
    })
}

/// A sealed software keystore, unlocked; possibly bound to a PKCS#11 token
/// that holds every key that does not travel.
pub struct SealedKeyStore {
    dir: PathBuf,
    kek: Aead,
    token: Option<Pkcs11KeyStore>,
}

/// The sealing key of a token-bound keystore: HKDF-SHA-256 (RFC 5869) with
/// the keystore's salt over the ECDH secret, info = [`BOUND_INFO`] || the
/// ephemeral point.
fn bound_kek(shared: &[u8; 32], salt: &[u8; 16], ephemeral: &PublicKey) -> Result<Aead> {
    use aws_lc_rs::hkdf;
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(shared);
    let info = [BOUND_INFO, &ephemeral.0[..]];
    let okm = prk
        .expand(&info, Len32)
        .map_err(|_| Error::Crypto("HKDF"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    okm.fill(&mut key[..]).map_err(|_| Error::Crypto("HKDF"))?;
    Aead::aes256(&key)
}

fn derive(pass: &Passphrase, salt: &[u8], p: KdfParams) -> Result<Aead> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|_| Error::Crypto("Argon2id parameters"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.expose(), salt, &mut key[..])
        .map_err(|_| Error::Crypto("Argon2id"))?;
    Aead::aes256(&key)
}

fn write_description(dir: &Path, file: &KeystoreFile) -> Result<()> {
    let text = toml::to_string(file).map_err(|e| Error::Usage(e.to_string()))?;
    fs::create_dir(dir).at(dir)?;
    fsutil::write_new(
        &dir.join("keystore.toml"),
        text.as_bytes(),
        "keystore description",
    )
}

fn seal(kek: &Aead, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    SystemEntropy.fill(&mut nonce)?;
    let mut buf = plaintext.to_vec();
    let tag = kek.seal(nonce, aad, &mut buf)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    Ok(out)
}

fn open(kek: &Aead, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 12 + 16 {
        return None;
    }
    let (nonce, rest) = sealed.split_at(12);
    let mut buf = Zeroizing::new(rest.to_vec());
    let n = kek.open(nonce.try_into().ok()?, aad, &mut buf)?;
    buf.truncate(n);
    Some(buf)
}

/// A parsed sealed key file (still sealed).
struct SealedKey<'a> {
    kind: KeyKind,
    public: PublicKey,
    header: &'a [u8],
    sealed: &'a [u8],
}

fn parse_key_file<'a>(path: &Path, bytes: &'a [u8], label: &KeyLabel) -> Result<SealedKey<'a>> {
    let corrupt = |problem: &str| Error::Corrupt {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let rest = bytes
        .strip_prefix(&KEY_MAGIC[..])
        .ok_or_else(|| corrupt("not a trustchain sealed key (bad magic)"))?;
    let (&kind, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
    let kind = KeyKind::from_code(kind).ok_or_else(|| corrupt("unknown key kind"))?;
    let (&label_len, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
    let label_len = label_len as usize;
    if rest.len() < label_len + 1 + 65 {
        return Err(corrupt("truncated"));
    }
    let (file_label, rest) = rest.split_at(label_len);
    if file_label != label.as_str().as_bytes() {
        return Err(corrupt(
            "the key inside is labelled differently from its file name",
        ));
    }
    let (&pub_len, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
    if pub_len != 65 {
        return Err(corrupt("bad public key length"));
    }
    let (public, sealed) = rest.split_at(65);
    let public = PublicKey(public.try_into().map_err(|_| corrupt("bad public key"))?);
    let header_len = bytes.len() - sealed.len();
    Ok(SealedKey {
        kind,
        public,
        header: &bytes[..header_len],
        sealed,
    })
}

impl SealedKeyStore {
    /// Creates a new keystore in `dir` (which must not exist).
    pub fn create(dir: &Path, pass: &Passphrase, params: KdfParams) -> Result<Self> {
        params
            .check()
            .ok_or_else(|| Error::Usage("Argon2id parameters out of range".into()))?;
        if dir.exists() {
            return Err(Error::AlreadyExists {
                path: dir.to_path_buf(),
                what: "keystore",
            });
        }
        let mut salt = [0u8; 16];
        SystemEntropy.fill(&mut salt)?;
        let kek = derive(pass, &salt, params)?;
        let check = seal(&kek, CHECK_AAD, CHECK_PLAINTEXT)?;
        let file = KeystoreFile {
            format: 1,
            kdf: PASSPHRASE_KDF.into(),
            memory_kib: Some(params.memory_kib),
            iterations: Some(params.iterations),
            parallelism: Some(params.parallelism),
            salt: hex::encode(salt),
            seal_key: None,
            ephemeral: None,
            check: hex::encode(check),
        };
        write_description(dir, &file)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            kek,
            token: None,
        })
    }

    /// Creates a new keystore in `dir` (which must not exist) bound to the
    /// logged-in `token`: a fresh `keystore-seal` key is made in the token
    /// (ECDH, sensitive, not extractable) and seals the travelling keys;
    /// every other key is generated in the token. Refuses a token that
    /// already holds a `keystore-seal` key (it belongs to another
    /// directory: one token per directory).
    pub fn create_bound(dir: &Path, mut token: Pkcs11KeyStore) -> Result<Self> {
        if dir.exists() {
            return Err(Error::AlreadyExists {
                path: dir.to_path_buf(),
                what: "keystore",
            });
        }
        let seal_key = KeyLabel::keystore_seal();
        if token.contains(&seal_key) {
            return Err(Error::Usage(format!(
                "{} already holds a '{seal_key}' key: it belongs to another trustchain \
                 directory. Use one token per OEM or Guardian directory (initialise a new one, \
                 for SoftHSM2: `softhsm2-util --init-token --free --label LABEL`)",
                token.describe()
            )));
        }
        let token_public = token.generate(&seal_key, KeyKind::EcdhP256)?;
        let made = (|| {
            let (ephemeral, _scalar) = EcdhKey::generate(&mut SystemEntropy)?;
            let shared = ephemeral.agree(&token_public.0)?;
            let mut salt = [0u8; 16];
            SystemEntropy.fill(&mut salt)?;
            let kek = bound_kek(&shared, &salt, ephemeral.public_key())?;
            let check = seal(&kek, CHECK_AAD, CHECK_PLAINTEXT)?;
            let file = KeystoreFile {
                format: 1,
                kdf: BOUND_KDF.into(),
                memory_kib: None,
                iterations: None,
                parallelism: None,
                salt: hex::encode(salt),
                seal_key: Some(seal_key.to_string()),
                ephemeral: Some(hex::encode(ephemeral.public_key().0)),
                check: hex::encode(check),
            };
            write_description(dir, &file)?;
            Ok(kek)
        })();
        match made {
            Ok(kek) => Ok(Self {
                dir: dir.to_path_buf(),
                kek,
                token: Some(token),
            }),
            Err(e) => {
                let _ = token.destroy(&seal_key);
                Err(e)
            }
        }
    }

    /// Opens the keystore in `dir` with `pass`; a wrong passphrase is
    /// [`Error::WrongPassphrase`]. A token-bound keystore is refused: it
    /// opens with [`SealedKeyStore::open_bound`].
    pub fn open(dir: &Path, pass: &Passphrase) -> Result<Self> {
        let d = read_description(dir)?;
        let Unlock::Passphrase(params) = d.unlock else {
            return Err(Error::Usage(format!(
                "the keystore {} is bound to a PKCS#11 token, not a passphrase: it opens with \
                 the token's user PIN, through the OEM or Guardian directory that records the \
                 token (oem.toml or guardian.toml)",
                dir.display()
            )));
        };
        let kek = derive(pass, &d.salt, params)?;
        match open(&kek, CHECK_AAD, &d.check) {
            Some(p) if p.as_slice() == CHECK_PLAINTEXT => Ok(Self {
                dir: dir.to_path_buf(),
                kek,
                token: None,
            }),
            _ => Err(Error::WrongPassphrase {
                path: dir.to_path_buf(),
            }),
        }
    }

    /// Opens the token-bound keystore in `dir` with the logged-in `token`.
    pub fn open_bound(dir: &Path, token: Pkcs11KeyStore) -> Result<Self> {
        let d = read_description(dir)?;
        let Unlock::Token {
            seal_key,
            ephemeral,
        } = d.unlock
        else {
            return Err(Error::Usage(format!(
                "the keystore {} is sealed under a passphrase, not bound to {}; open it with \
                 the passphrase",
                dir.display(),
                token.describe()
            )));
        };
        let not_this_token = || {
            Error::Usage(format!(
                "{} does not hold the key that seals the keystore {} (its '{seal_key}' key is \
                 missing or different): this is another token under the same label, or the \
                 token was re-initialised. Use the token the directory was made with",
                token.describe(),
                dir.display()
            ))
        };
        let ka = match token.key_agreement(&seal_key) {
            Ok(ka) => ka,
            Err(Error::NoSuchKey { .. }) => return Err(not_this_token()),
            Err(e) => return Err(e),
        };
        let shared = ka.agree(&ephemeral.0)?;
        let kek = bound_kek(&shared, &d.salt, &ephemeral)?;
        match open(&kek, CHECK_AAD, &d.check) {
            Some(p) if p.as_slice() == CHECK_PLAINTEXT => Ok(Self {
                dir: dir.to_path_buf(),
                kek,
                token: Some(token),
            }),
            _ => Err(not_this_token()),
        }
    }

    /// The token this keystore is bound to, if any.
    pub fn token(&self) -> Option<&Pkcs11KeyStore> {
        self.token.as_ref()
    }

    /// The token, mutable (to undo a failed operation's keys).
    pub fn token_mut(&mut self) -> Option<&mut Pkcs11KeyStore> {
        self.token.as_mut()
    }

    /// The token holding `label`, when this keystore is bound and the key
    /// does not travel.
    fn token_for(&self, label: &KeyLabel) -> Option<&Pkcs11KeyStore> {
        self.token.as_ref().filter(|_| !label.travels())
    }

    /// The public key of `label`, read without the passphrase.
    pub fn read_public(dir: &Path, label: &KeyLabel) -> Result<(KeyKind, PublicKey)> {
        let path = key_path(dir, label);
        let bytes = read_key_file(dir, &path, label)?;
        let k = parse_key_file(&path, &bytes, label)?;
        Ok((k.kind, k.public))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn unseal(&self, label: &KeyLabel, want: KeyKind) -> Result<Zeroizing<Vec<u8>>> {
        let path = key_path(&self.dir, label);
        let bytes = read_key_file(&self.dir, &path, label)?;
        let k = parse_key_file(&path, &bytes, label)?;
        if k.kind != want {
            return Err(Error::Corrupt {
                path,
                problem: format!("holds a {}, not a {}", k.kind.name(), want.name()),
            });
        }
        // A passphrase that opened keystore.toml but not this key means the
        // file was altered or comes from another keystore.
        open(&self.kek, k.header, k.sealed).ok_or(Error::Corrupt {
            path,
            problem: "does not open with this keystore's key (altered, or from another keystore)"
                .into(),
        })
    }

    /// Imports a secret received inside a verified package (the Guardian
    /// keeping a job's keys): an ECDH scalar, or an ECDSA scalar converted to
    /// PKCS#8. Refuses a taken label. Bound to a token, a key that does not
    /// travel (the job's issuing key) is created in the token instead.
    pub fn import_scalar(
        &mut self,
        label: &KeyLabel,
        kind: KeyKind,
        scalar: &[u8; 32],
    ) -> Result<PublicKey> {
        if let Some(t) = self.token.as_mut().filter(|_| !label.travels()) {
            return t.import_scalar(label, kind, scalar);
        }
        if self.contains(label) {
            return Err(Error::AlreadyExists {
                path: key_path(&self.dir, label),
                what: "key",
            });
        }
        match kind {
            KeyKind::EcdhP256 => {
                let key = EcdhKey::from_scalar(scalar)?;
                self.store(label, kind, key.public_key(), scalar)?;
                Ok(key.public_key().clone())
            }
            KeyKind::EcdsaP256 => {
                let public = EcdhKey::from_scalar(scalar)?.public_key().clone();
                let pkcs8 = crate::crypto::ecdsa_pkcs8_from_scalar(scalar, &public)?;
                self.store(label, kind, &public, &pkcs8)?;
                Ok(public)
            }
        }
    }

    /// Stores an already generated secret (used by `generate`).
    fn store(
        &self,
        label: &KeyLabel,
        kind: KeyKind,
        public: &PublicKey,
        secret: &[u8],
    ) -> Result<()> {
        let mut header = KEY_MAGIC.to_vec();
        header.push(kind.code());
        header.push(label.as_str().len() as u8);
        header.extend_from_slice(label.as_str().as_bytes());
        header.push(65);
        header.extend_from_slice(&public.0);
        let sealed = seal(&self.kek, &header, secret)?;
        header.extend_from_slice(&sealed);
        fsutil::write_new(&key_path(&self.dir, label), &header, "sealed key")
    }
}

fn key_path(dir: &Path, label: &KeyLabel) -> PathBuf {
    dir.join(format!("{label}.key"))
}

fn read_key_file(dir: &Path, path: &Path, label: &KeyLabel) -> Result<Vec<u8>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoSuchKey {
                path: dir.to_path_buf(),
                label: label.to_string(),
            })
        }
        Err(e) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    if meta.len() > MAX_KEY_FILE {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            problem: "too large for a sealed key".into(),
        });
    }
    fs::read(path).at(path)
}

impl KeyStore for SealedKeyStore {
    fn import_scalar(
        &mut self,
        label: &KeyLabel,
        kind: KeyKind,
        scalar: &[u8; 32],
    ) -> Result<PublicKey> {
        SealedKeyStore::import_scalar(self, label, kind, scalar)
    }
    fn generate(&mut self, label: &KeyLabel, kind: KeyKind) -> Result<PublicKey> {
        if let Some(t) = self.token.as_mut().filter(|_| !label.travels()) {
            return t.generate(label, kind);
        }
        if self.contains(label) {
            return Err(Error::AlreadyExists {
                path: key_path(&self.dir, label),
                what: "key",
            });
        }
        match kind {
            KeyKind::EcdsaP256 => {
                let (key, pkcs8) = EcdsaKey::generate()?;
                self.store(label, kind, key.public_key(), &pkcs8)?;
                Ok(key.public_key().clone())
            }
            KeyKind::EcdhP256 => {
                let (key, scalar) = EcdhKey::generate(&mut SystemEntropy)?;
                self.store(label, kind, key.public_key(), &scalar[..])?;
                Ok(key.public_key().clone())
            }
        }
    }

    fn contains(&self, label: &KeyLabel) -> bool {
        match self.token_for(label) {
            Some(t) => t.contains(label),
            None => key_path(&self.dir, label).exists(),
        }
    }

    fn public_key(&self, label: &KeyLabel) -> Result<PublicKey> {
        match self.token_for(label) {
            Some(t) => t.public_key(label),
            None => Ok(Self::read_public(&self.dir, label)?.1),
        }
    }

    fn signer(&self, label: &KeyLabel) -> Result<Box<dyn Signer>> {
        if let Some(t) = self.token_for(label) {
            return t.signer(label);
        }
        let pkcs8 = self.unseal(label, KeyKind::EcdsaP256)?;
        Ok(Box::new(EcdsaKey::from_pkcs8(&pkcs8)?))
    }

    fn export_wrapped_for_device(
        &self,
        label: &KeyLabel,
        device_ka: &PublicKey,
    ) -> Result<([u8; 65], [u8; 40])> {
        if let Some(t) = self.token_for(label) {
            return t.export_wrapped_for_device(label, device_ka);
        }
        let scalar = self.unseal(label, KeyKind::EcdhP256)?;
        let scalar: &[u8; 32] = scalar[..]
            .try_into()
            .map_err(|_| Error::Crypto("product key length"))?;
        crate::crypto::wrap_product_key(device_ka, scalar, &mut SystemEntropy)
    }

    fn export_for_package(&self, label: &KeyLabel) -> Result<Zeroizing<[u8; 32]>> {
        if let Some(t) = self.token_for(label) {
            return t.export_for_package(label);
        }
        let scalar = self.unseal(label, KeyKind::EcdhP256)?;
        let mut out = Zeroizing::new([0u8; 32]);
        if scalar.len() != 32 {
            return Err(Error::Crypto("product key length"));
        }
        out.copy_from_slice(&scalar);
        Ok(out)
    }

    fn key_agreement(&self, label: &KeyLabel) -> Result<Box<dyn KeyAgreement>> {
        if let Some(t) = self.token_for(label) {
            return t.key_agreement(label);
        }
        let scalar = self.unseal(label, KeyKind::EcdhP256)?;
        Ok(Box::new(EcdhKey::from_scalar(&scalar)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(Zeroizing::new(s.to_string())).unwrap()
    }

    #[test]
    fn keys_round_trip_and_are_never_in_the_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ks");
        let mut ks = SealedKeyStore::create(&dir, &pass("correct horse"), FAST).unwrap();
        let label = KeyLabel::mastering();
        let public = ks.generate(&label, KeyKind::EcdsaP256).unwrap();
        let kek_label = KeyLabel::product_kek(1);
        ks.generate(&kek_label, KeyKind::EcdhP256).unwrap();
        assert!(matches!(
            ks.generate(&label, KeyKind::EcdsaP256),
            Err(Error::AlreadyExists { .. })
        ));

        let ks = SealedKeyStore::open(&dir, &pass("correct horse")).unwrap();
        let signer = ks.signer(&label).unwrap();
        assert_eq!(signer.public_key(), &public);
        let sig = signer.sign(b"m").unwrap();
        assert!(crate::crypto::verify_es256(&public.0, b"m", &sig));
        // Kind separation: a signing key cannot be used for ECDH and back.
        assert!(ks.key_agreement(&label).is_err());
        assert!(ks.signer(&kek_label).is_err());
        // The file does not hold the PKCS#8 private key in the clear: the
        // only cleartext is the header (magic, kind, label, public key).
        let file = fs::read(dir.join("mastering.key")).unwrap();
        assert!(file.len() > KEY_MAGIC.len() + 2 + 9 + 1 + 65 + 12 + 16 + 100);
        assert!(
            !file.windows(4).any(|w| w == [0x30, 0x81, 0x87, 0x02]),
            "PKCS#8 header visible"
        );
    }

    #[test]
    fn wrong_passphrase_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ks");
        SealedKeyStore::create(&dir, &pass("right"), FAST).unwrap();
        assert!(matches!(
            SealedKeyStore::open(&dir, &pass("wrong")),
            Err(Error::WrongPassphrase { .. })
        ));
    }

    #[test]
    fn tampered_key_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ks");
        let mut ks = SealedKeyStore::create(&dir, &pass("p"), FAST).unwrap();
        ks.generate(&KeyLabel::root_ca(), KeyKind::EcdsaP256)
            .unwrap();
        let path = dir.join("root-ca.key");
        let orig = fs::read(&path).unwrap();
        // Flip a bit of the public key in the header (bound as AAD).
        let mut bad = orig.clone();
        bad[KEY_MAGIC.len() + 2 + "root-ca".len() + 5] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            ks.signer(&KeyLabel::root_ca()),
            Err(Error::Corrupt { .. })
        ));
        // Swap it under another label.
        fs::write(&path, &orig).unwrap();
        fs::copy(&path, dir.join("device-ca.key")).unwrap();
        assert!(matches!(
            ks.signer(&KeyLabel::device_ca()),
            Err(Error::Corrupt { .. })
        ));
    }
}
