//! Key custody in an HSM, through PKCS#11 (the `cryptoki` crate; tested
//! against SoftHSM2). The private keys are generated inside the token and
//! never leave it: `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` and not
//! `CKA_EXTRACTABLE`.
//!
//! ```text
//! key       CKA_LABEL = the keystore label (e.g. "root-ca")
//!           CKA_ID    = SHA-256(label)[..16]
//! ECDSA     private CKA_SIGN (and nothing else), public CKA_VERIFY
//! ECDH      private CKA_DERIVE (and nothing else)
//! ```
//!
//! What happens where:
//!
//! * Signing: the message is hashed with SHA-256 on the host and the
//!   32-byte digest is signed in the token with raw `CKM_ECDSA`, the one
//!   ECDSA mechanism every EC-capable token has (SoftHSM2 included). The
//!   token returns `r || s`. Only the digest crosses to the token; the
//!   private key signs inside it.
//! * Key agreement: `CKM_ECDH1_DERIVE` with the null KDF derives the shared
//!   x coordinate into a short-lived, non-sensitive session object whose
//!   `CKA_VALUE` is read and the object destroyed. The shared secret is
//!   therefore in host memory for the time of the call (in a zeroizing
//!   buffer; the HKDF that follows runs on the host because SoftHSM2 has no
//!   HKDF mechanism). The ECDH private key itself never is. One caveat we
//!   cannot close from safe code: `cryptoki` reads the attribute into a
//!   buffer of its own, which it frees without clearing.
//! * Export: a key held here cannot be delivered to a device or put into a
//!   Guardian package, because that would take the private scalar out of
//!   the HSM; both export methods refuse with an explanation. Keys that must
//!   travel stay in the sealed keystore bound to the token
//!   ([`super::sealed::SealedKeyStore::create_bound`]).
//! * Import: a scalar that arrived inside a verified package (a job's
//!   issuing key at the Guardian) can be created in the token with
//!   `C_CreateObject`, sensitive and not extractable, and is used only
//!   there from then on ([`Pkcs11KeyStore::import_scalar`]).
//!
//! PKCS#11 logs in per application and token, not per session: a process
//! opens a given token once ([`Pkcs11KeyStore::open`] refuses a token that
//! this process is already logged in to, rather than skip the PIN check).
//! All signers and key-agreement handles of a store share its session behind
//! a mutex (a PKCS#11 session must not be used by two threads at once).
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{RawAuthPin, Ulong};
use zeroize::{Zeroize, Zeroizing};

use super::passphrase::Passphrase;
use super::{KeyAgreement, KeyKind, KeyLabel, KeyStore, Signer};
use crate::crypto::{EcdhKey, PublicKey, SystemEntropy};
use crate::error::{Error, Result};

/// DER of the named curve P-256 (OID 1.2.840.10045.3.1.7), for `CKA_EC_PARAMS`.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The module most Debian machines have once `softhsm2` is installed.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The templates of a P-256 key pair `label` of `kind` in the token: the
/// public key public, the private key private, sensitive and not
/// extractable, each allowed only what `kind` needs (sign and verify, or
/// derive). What `C_GenerateKeyPair` takes; an import adds the point and
/// the scalar.
fn key_templates(label: &KeyLabel, kind: KeyKind) -> (Vec<Attribute>, Vec<Attribute>) {
    let name = label.as_str().as_bytes().to_vec();
    let id = key_id(label).to_vec();
    let signing = kind == KeyKind::EcdsaP256;
    let public = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(name.clone()),
        Attribute::Id(id.clone()),
        Attribute::Verify(signing),
        Attribute::Derive(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
    ];
    let private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(name),
        Attribute::Id(id),
        Attribute::Sign(signing),
        Attribute::Derive(!signing),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
    ];
    (public, private)
}

/// The `CKA_ID` of a key: the first 16 bytes of SHA-256 of its label.
pub fn key_id(label: &KeyLabel) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&crate::crypto::sha256(label.as_str().as_bytes())[..16]);
    id
}

/// A `CKA_EC_POINT` value as a SEC1 point: the DER OCTET STRING PKCS#11
/// prescribes (`04 41 || point`), or the bare point some tokens return.
pub fn ec_point_to_sec1(ec_point: &[u8]) -> Option<PublicKey> {
    let sec1 = match ec_point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        raw if raw.len() == 65 => raw,
        _ => return None,
    };
    PublicKey::from_sec1(sec1)
}

/// The open session and what names it in messages.
struct Token {
    module: PathBuf,
    label: String,
    session: Mutex<Session>,
}

impl Token {
    /// Refuses a label that names any object already (private or public).
    fn ensure_free(&self, s: &Session, label: &KeyLabel) -> Result<()> {
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            if self.find(s, label, class)?.is_some() {
                return Err(Error::AlreadyExists {
                    path: self.uri(Some(label)),
                    what: "key",
                });
            }
        }
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Session>> {
        self.session
            .lock()
            .map_err(|_| Error::Crypto("PKCS#11 session lock poisoned by a panic"))
    }

    /// RFC 7512 URI of the token (or of one object in it), for messages.
    fn uri(&self, object: Option<&KeyLabel>) -> PathBuf {
        let mut s = format!("pkcs11:token={}", pct(&self.label));
        if let Some(o) = object {
            s.push_str(";object=");
            s.push_str(o.as_str());
        }
        PathBuf::from(s)
    }

    /// A PKCS#11 failure during `what`, naming module and token.
    fn fail(&self, what: &str, e: &CkError) -> Error {
        Error::Usage(format!(
            "PKCS#11 module {}, token '{}': {what} failed: {}",
            self.module.display(),
            self.label,
            describe(e)
        ))
    }

    fn find(
        &self,
        s: &Session,
        label: &KeyLabel,
        class: ObjectClass,
    ) -> Result<Option<ObjectHandle>> {
        let template = [
            Attribute::Class(class),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
        ];
        let found = s
            .find_objects(&template)
            .map_err(|e| self.fail("C_FindObjects", &e))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(Error::Corrupt {
                path: self.uri(Some(label)),
                problem: format!(
                    "{} {class} objects carry this label; remove the extra ones with the HSM's tools",
                    many.len()
                ),
            }),
        }
    }

    fn public_key(&self, s: &Session, label: &KeyLabel) -> Result<PublicKey> {
        let handle = self
            .find(s, label, ObjectClass::PUBLIC_KEY)?
            .ok_or_else(|| Error::NoSuchKey {
                path: self.uri(None),
                label: label.to_string(),
            })?;
        let attrs = s
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(|e| self.fail("C_GetAttributeValue(CKA_EC_POINT)", &e))?;
        attrs
            .iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => ec_point_to_sec1(p),
                _ => None,
            })
            .ok_or_else(|| Error::Corrupt {
                path: self.uri(Some(label)),
                problem: "the public key object holds no P-256 point (CKA_EC_POINT)".into(),
            })
    }

    /// The private key `label`, checked to be a P-256 key of `kind`.
    fn private_key(&self, s: &Session, label: &KeyLabel, kind: KeyKind) -> Result<ObjectHandle> {
        let handle = self
            .find(s, label, ObjectClass::PRIVATE_KEY)?
            .ok_or_else(|| Error::NoSuchKey {
                path: self.uri(None),
                label: label.to_string(),
            })?;
        let attrs = s
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                    AttributeType::Sign,
                    AttributeType::Derive,
                ],
            )
            .map_err(|e| self.fail("C_GetAttributeValue", &e))?;
        let (mut ec, mut p256, mut sign, mut derive) = (false, false, false, false);
        for a in &attrs {
            match a {
                Attribute::KeyType(t) => ec = *t == KeyType::EC,
                Attribute::EcParams(p) => p256 = p.as_slice() == P256_PARAMS,
                Attribute::Sign(b) => sign = *b,
                Attribute::Derive(b) => derive = *b,
                _ => {}
            }
        }
        let corrupt = |problem: String| Error::Corrupt {
            path: self.uri(Some(label)),
            problem,
        };
        if !ec || !p256 {
            return Err(corrupt("not a P-256 elliptic-curve key".into()));
        }
        let held = match (sign, derive) {
            (true, false) => KeyKind::EcdsaP256,
            (false, true) => KeyKind::EcdhP256,
            _ => return Err(corrupt(
                "the key allows both or neither of signing and derivation (not made by trustchain)"
                    .into(),
            )),
        };
        if held != kind {
            return Err(corrupt(format!(
                "holds a {}, not a {}",
                held.name(),
                kind.name()
            )));
        }
        Ok(handle)
    }

    fn sign_digest(&self, key: ObjectHandle, digest: &[u8; 32]) -> Result<[u8; 64]> {
        let sig = {
            let s = self.lock()?;
            s.sign(&Mechanism::Ecdsa, key, digest)
                .map_err(|e| self.fail("C_Sign(CKM_ECDSA)", &e))?
        };
        sig.as_slice().try_into().map_err(|_| {
            Error::Usage(format!(
                "PKCS#11 module {}, token '{}': C_Sign(CKM_ECDSA) returned {} bytes, not the 64 of r || s",
                self.module.display(),
                self.label,
                sig.len()
            ))
        })
    }

    fn derive(&self, key: ObjectHandle, peer: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let len = Ulong::try_from(32usize).map_err(|_| Error::Crypto("CK_ULONG"))?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(len),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
        let s = self.lock()?;
        let secret = s
            .derive_key(&Mechanism::Ecdh1Derive(params), key, &template)
            .map_err(|e| self.fail("C_DeriveKey(CKM_ECDH1_DERIVE)", &e))?;
        let read = s.get_attributes(secret, &[AttributeType::Value]);
        // The derived object goes whatever happened to the read.
        let destroyed = s.destroy_object(secret);
        let mut attrs = read.map_err(|e| self.fail("C_GetAttributeValue(CKA_VALUE)", &e))?;
        let mut out = Zeroizing::new([0u8; 32]);
        let mut ok = false;
        for a in attrs.iter_mut() {
            if let Attribute::Value(v) = a {
                if v.len() == 32 {
                    out.copy_from_slice(v);
                    ok = true;
                }
                v.zeroize();
            }
        }
        destroyed.map_err(|e| self.fail("C_DestroyObject(derived secret)", &e))?;
        if !ok {
            return Err(Error::Usage(format!(
                "PKCS#11 module {}, token '{}': the ECDH-derived secret could not be read as 32 bytes",
                self.module.display(),
                self.label
            )));
        }
        Ok(out)
    }
}

/// Percent-encodes what RFC 7512 does not allow bare in a path attribute.
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A PKCS#11 error in a line: `C_Login returned PinIncorrect`.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("C_{f:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// The process's context for `module`, loaded and initialised once.
///
/// `C_Initialize` is called once per module and process, under a lock: two
/// threads initialising SoftHSM2 at the same time each build its internal
/// state, and the sessions opened under the first are lost
/// (`CKR_SESSION_HANDLE_INVALID` later). The context is kept for the life
/// of the process (the module stays loaded; `C_Finalize` is never called,
/// as sessions of other stores may still be open).
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let m = module.display();
    // The same library under two names (a symlink) is one library.
    let key = module
        .canonicalize()
        .unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Crypto("PKCS#11 context lock poisoned by a panic"))?;
    if let Some(ctx) = contexts.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        Error::Usage(format!(
            "cannot load PKCS#11 module {m}: {e}; check that it is the HSM's PKCS#11 library \
             built for this machine"
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in the process initialised it: fine, it is shared.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::Usage(format!(
                "PKCS#11 module {m}: C_Initialize failed: {}; check the module's configuration \
                 (for SoftHSM2: the file named by SOFTHSM2_CONF and its token directory)",
                describe(&e)
            )))
        }
    }
    contexts.insert(key, ctx.clone());
    Ok(ctx)
}

/// A PKCS#11 token holding trustchain keys, logged in as the user.
pub struct Pkcs11KeyStore {
    token: Arc<Token>,
}

impl fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11KeyStore")
            .field("module", &self.token.module)
            .field("token", &self.token.label)
            .finish()
    }
}

impl Pkcs11KeyStore {
    /// Loads `module`, finds the token labelled `token_label`, opens a
    /// read-write session and logs in as the user with `pin`.
    pub fn open(module: &Path, token_label: &str, pin: &Passphrase) -> Result<Self> {
        let m = module.display();
        if !module.is_file() {
            return Err(Error::Usage(format!(
                "PKCS#11 module {m} does not exist; install the HSM's PKCS#11 library \
                 (for SoftHSM2: `apt-get install softhsm2`, module {SOFTHSM2_MODULE}) \
                 and pass its path"
            )));
        }
        let ctx = context(module)?;
        let slots = ctx.get_slots_with_token().map_err(|e| {
            Error::Usage(format!(
                "PKCS#11 module {m}: C_GetSlotList failed: {}",
                describe(&e)
            ))
        })?;
        let mut seen = Vec::new();
        let mut matching = Vec::new();
        for slot in slots {
            // SoftHSM2 always shows one more, uninitialised token: skip it.
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            if !info.token_initialized() {
                continue;
            }
            if info.label() == token_label {
                matching.push((slot, info));
            } else {
                seen.push(format!("'{}'", info.label()));
            }
        }
        let (slot, info) = match matching.len() {
            1 => matching.remove(0),
            0 => {
                let seen = if seen.is_empty() {
                    "it has no initialised token".to_string()
                } else {
                    format!("it has {}", seen.join(", "))
                };
                return Err(Error::Usage(format!(
                    "PKCS#11 module {m} has no token labelled '{token_label}' ({seen}); initialise \
                     one with the HSM's tools, for SoftHSM2: `softhsm2-util --init-token --free \
                     --label {token_label}` (check SOFTHSM2_CONF points to the right token directory)"
                )));
            }
            n => {
                return Err(Error::Usage(format!(
                    "PKCS#11 module {m} has {n} tokens labelled '{token_label}'; relabel or remove \
                     all but one"
                )))
            }
        };
        if !info.user_pin_initialized() {
            return Err(Error::Usage(format!(
                "PKCS#11 module {m}, token '{token_label}': the user PIN is not set; set it with the \
                 HSM's tools (SoftHSM2: `softhsm2-util --init-token ... --pin PIN`)"
            )));
        }
        if info.user_pin_locked() {
            return Err(Error::Usage(format!(
                "PKCS#11 module {m}, token '{token_label}': the user PIN is locked after too many \
                 wrong attempts; the token's security officer must unlock it"
            )));
        }
        let session = ctx.open_rw_session(slot).map_err(|e| {
            Error::Usage(format!(
                "PKCS#11 module {m}, token '{token_label}': cannot open a read-write session: {}",
                describe(&e)
            ))
        })?;
        let raw = RawAuthPin::new(Box::new(pin.expose().to_vec()));
        match session.login_with_raw(UserType::User, &raw) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(Error::Usage(format!(
                    "wrong PIN for token '{token_label}' of PKCS#11 module {m}: the token refused \
                     the login. Give the token's user PIN (--pin-file or --passphrase-file FILE, \
                     first line; or TRUSTCHAIN_PASSPHRASE; or at the prompt). Nothing was changed; \
                     the token counts failed logins and may lock the PIN"
                )))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(Error::Usage(format!(
                    "PKCS#11 module {m}, token '{token_label}': the user PIN is locked; the \
                     token's security officer must unlock it"
                )))
            }
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                return Err(Error::Usage(format!(
                    "PKCS#11 module {m}, token '{token_label}': this process is already logged in \
                     to the token (PKCS#11 logs in per application); open it once and share the \
                     key store"
                )))
            }
            Err(e) => {
                return Err(Error::Usage(format!(
                    "PKCS#11 module {m}, token '{token_label}': login failed: {}",
                    describe(&e)
                )))
            }
        }
        Ok(Self {
            token: Arc::new(Token {
                module: module.to_path_buf(),
                label: token_label.to_string(),
                session: Mutex::new(session),
            }),
        })
    }

    /// The module's path.
    pub fn module(&self) -> &Path {
        &self.token.module
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// "PKCS#11 token 'LABEL' (module PATH)", for messages to the operator.
    pub fn describe(&self) -> String {
        format!(
            "PKCS#11 token '{}' (module {})",
            self.token.label,
            self.token.module.display()
        )
    }

    /// The RFC 7512 URI of the token, as used in messages.
    pub fn uri(&self) -> String {
        self.token.uri(None).display().to_string()
    }

    fn not_exportable(&self, label: &KeyLabel) -> Error {
        Error::Usage(format!(
            "the key '{label}' is held in an HSM (PKCS#11 token '{}', module {}) and is not \
             exportable (sensitive, not extractable): delivering it to a device or packaging it \
             for a Guardian would take the private key out of the HSM. Keys that must travel \
             (product keys) are kept sealed beside the token (docs/architecture.md, 'Key \
             custody'); a key made inside the token stays there",
            self.token.label,
            self.token.module.display()
        ))
    }

    /// Imports a private scalar received inside a verified package (the
    /// Guardian taking a job's issuing key into its HSM): it is created in
    /// the token as sensitive and not extractable, with its public key
    /// beside it, and from then on used only there. Refuses a taken label.
    pub fn import_scalar(
        &mut self,
        label: &KeyLabel,
        kind: KeyKind,
        scalar: &[u8; 32],
    ) -> Result<PublicKey> {
        let public = EcdhKey::from_scalar(scalar)?.public_key().clone();
        let t = &self.token;
        let s = t.lock()?;
        t.ensure_free(&s, label)?;
        let mut point = vec![0x04, 0x41];
        point.extend_from_slice(&public.0);
        let (mut public_template, mut private_template) = key_templates(label, kind);
        public_template.push(Attribute::EcPoint(point));
        let value = Zeroizing::new(scalar.to_vec());
        private_template.extend([
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Value(value.to_vec()),
        ]);
        let pub_h = s
            .create_object(&public_template)
            .map_err(|e| t.fail("C_CreateObject(EC public key)", &e))?;
        // `Attribute::Value` holds its own copy of the scalar, which
        // `cryptoki` frees without clearing (as for derived secrets).
        let priv_h = match s.create_object(&private_template) {
            Ok(h) => h,
            Err(e) => {
                let _ = s.destroy_object(pub_h);
                return Err(t.fail("C_CreateObject(EC private key)", &e));
            }
        };
        match t.public_key(&s, label) {
            Ok(p) if p == public => Ok(p),
            other => {
                let _ = s.destroy_object(priv_h);
                let _ = s.destroy_object(pub_h);
                Err(other.err().unwrap_or_else(|| Error::Corrupt {
                    path: t.uri(Some(label)),
                    problem: "the token changed the imported public key".into(),
                }))
            }
        }
    }

    /// Destroys the key pair `label` (both objects, whichever exist): the
    /// undo of a `generate` or `import_scalar` whose surrounding operation
    /// failed, so that a retry does not find a half-made directory's keys.
    pub fn destroy(&mut self, label: &KeyLabel) -> Result<()> {
        let t = &self.token;
        let s = t.lock()?;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            if let Some(h) = t.find(&s, label, class)? {
                s.destroy_object(h)
                    .map_err(|e| t.fail("C_DestroyObject", &e))?;
            }
        }
        Ok(())
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn import_scalar(
        &mut self,
        label: &KeyLabel,
        kind: KeyKind,
        scalar: &[u8; 32],
    ) -> Result<PublicKey> {
        Pkcs11KeyStore::import_scalar(self, label, kind, scalar)
    }
    fn generate(&mut self, label: &KeyLabel, kind: KeyKind) -> Result<PublicKey> {
        let t = &self.token;
        let s = t.lock()?;
        t.ensure_free(&s, label)?;
        let (public, private) = key_templates(label, kind);
        let (pub_h, priv_h) = s
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| t.fail("C_GenerateKeyPair(CKM_EC_KEY_PAIR_GEN, P-256)", &e))?;
        match t.public_key(&s, label) {
            Ok(p) => Ok(p),
            Err(e) => {
                // Leave no half-made key behind under the label.
                let _ = s.destroy_object(priv_h);
                let _ = s.destroy_object(pub_h);
                Err(e)
            }
        }
    }

    fn contains(&self, label: &KeyLabel) -> bool {
        let t = &self.token;
        let Ok(s) = t.lock() else {
            return false;
        };
        [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY]
            .into_iter()
            .any(|c| !matches!(t.find(&s, label, c), Ok(None)))
    }

    fn public_key(&self, label: &KeyLabel) -> Result<PublicKey> {
        let s = self.token.lock()?;
        self.token.public_key(&s, label)
    }

    fn signer(&self, label: &KeyLabel) -> Result<Box<dyn Signer>> {
        let t = &self.token;
        let (key, public) = {
            let s = t.lock()?;
            (
                t.private_key(&s, label, KeyKind::EcdsaP256)?,
                t.public_key(&s, label)?,
            )
        };
        let signer = Pkcs11Signer {
            token: Arc::clone(t),
            key,
            public,
        };
        // The public key object is a separate object: check it belongs to
        // the private key before anything gets certified under it.
        let probe = b"trustchain pkcs11 key pair check";
        let sig = signer.sign(probe)?;
        if !crate::crypto::verify_es256(&signer.public.0, probe, &sig) {
            return Err(Error::Corrupt {
                path: t.uri(Some(label)),
                problem: "the public key object does not match the private key".into(),
            });
        }
        Ok(Box::new(signer))
    }

    fn key_agreement(&self, label: &KeyLabel) -> Result<Box<dyn KeyAgreement>> {
        let t = &self.token;
        let (key, public) = {
            let s = t.lock()?;
            (
                t.private_key(&s, label, KeyKind::EcdhP256)?,
                t.public_key(&s, label)?,
            )
        };
        let ka = Pkcs11KeyAgreement {
            token: Arc::clone(t),
            key,
            public,
        };
        // As for signers: the public key object must match the private key.
        let (probe, _scalar) = EcdhKey::generate(&mut SystemEntropy)?;
        let ours = probe.agree(&ka.public.0)?;
        let theirs = ka.agree(&probe.public_key().0)?;
        if *ours != *theirs {
            return Err(Error::Corrupt {
                path: t.uri(Some(label)),
                problem: "the public key object does not match the private key".into(),
            });
        }
        Ok(Box::new(ka))
    }

    fn export_wrapped_for_device(
        &self,
        label: &KeyLabel,
        _device_ka: &PublicKey,
    ) -> Result<([u8; 65], [u8; 40])> {
        Err(self.not_exportable(label))
    }

    fn export_for_package(&self, label: &KeyLabel) -> Result<Zeroizing<[u8; 32]>> {
        Err(self.not_exportable(label))
    }
}

/// Signs in the token: SHA-256 on the host, raw `CKM_ECDSA` inside.
struct Pkcs11Signer {
    token: Arc<Token>,
    key: ObjectHandle,
    public: PublicKey,
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64]> {
        let mut d = [0u8; 32];
        d.copy_from_slice(digest::digest(&digest::SHA256, msg).as_ref());
        self.token.sign_digest(self.key, &d)
    }
}

/// ECDH in the token; the shared secret comes back to the host.
struct Pkcs11KeyAgreement {
    token: Arc<Token>,
    key: ObjectHandle,
    public: PublicKey,
}

impl KeyAgreement for Pkcs11KeyAgreement {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn agree(&self, peer: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        // Checked on the host too: an off-curve point must never reach a
        // token that might not check it (invalid-curve attacks).
        let peer =
            PublicKey::from_sec1(peer).ok_or(Error::Crypto("ECDH with an invalid public key"))?;
        self.token.derive(self.key, &peer.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_unwrapping() {
        let (k, _) = EcdhKey::generate(&mut SystemEntropy).unwrap();
        let p = k.public_key().0;
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&p);
        assert_eq!(ec_point_to_sec1(&der).unwrap().0, p);
        assert_eq!(ec_point_to_sec1(&p).unwrap().0, p);
        assert!(ec_point_to_sec1(&der[..66]).is_none());
        assert!(ec_point_to_sec1(&[0x04, 0x41]).is_none());
    }

    #[test]
    fn ids_and_uris() {
        let id = key_id(&KeyLabel::root_ca());
        assert_eq!(id[..], crate::crypto::sha256(b"root-ca")[..16]);
        assert_eq!(pct("a b/é"), "a%20b%2F%C3%A9");
    }
}
