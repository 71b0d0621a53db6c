//! The host's cryptography, all from aws-lc-rs: SHA-256, ECDSA P-256, ECDH
//! P-256 with HKDF-SHA-256 and AES key wrap (COSE ECDH-ES + A128KW), and
//! AES-GCM. Nothing here invents a construction; each function names the
//! standard it implements.
use aws_lc_rs::{aead, agreement, digest, hkdf, key_wrap, signature};
use trustchain_formats::cose::{self, EcPoint, RecipientSpec, KDF_CONTEXT_A128KW};
use trustchain_formats::stream::KEY_LEN;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An uncompressed SEC1 P-256 public point (65 bytes, `04 || x || y`).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 65]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl PublicKey {
    /// From SEC1 uncompressed bytes, checking the point is on the curve.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 65] = bytes.try_into().ok()?;
        // aws-lc validates the point when it is used for ECDH.
        let probe = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &arr[..]);
        let scratch =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &[1u8; 32]).ok()?;
        agreement::agree(&scratch, probe, (), |_| Ok(())).ok()?;
        Some(Self(arr))
    }
    /// The COSE `kid` that names this key as a recipient: SHA-256 of the point.
    pub fn kid(&self) -> [u8; 32] {
        sha256(&self.0)
    }
    /// As a COSE EC point.
    pub fn point(&self) -> EcPoint {
        // Always 65 bytes starting with 04, so this cannot fail.
        EcPoint::from_sec1(&self.0).unwrap_or(EcPoint {
            x: [0; 32],
            y: [0; 32],
        })
    }
}

/// Where randomness comes from. Production uses [`SystemEntropy`]; test
/// vectors use a fixed seed so that every byte but the ECDSA signatures is
/// reproducible.
pub trait Entropy {
    /// Fills `out` with random bytes.
    fn fill(&mut self, out: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG, through aws-lc.
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        aws_lc_rs::rand::fill(out).map_err(|_| Error::Crypto("random number generator"))
    }
}

/// A deterministic stream for test vectors ONLY: SHA-256(seed || counter).
/// It is not a secure generator for real keys; nothing outside tests and
/// the vector generator constructs one.
pub struct TestVectorEntropy {
    seed: [u8; 32],
    counter: u64,
}

impl TestVectorEntropy {
    /// From a seed.
    pub fn new(seed: [u8; 32]) -> Self {
        Self { seed, counter: 0 }
    }
}

impl Entropy for TestVectorEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        for block in out.chunks_mut(32) {
            let mut ctx = digest::Context::new(&digest::SHA256);
            ctx.update(&self.seed);
            ctx.update(&self.counter.to_be_bytes());
            self.counter += 1;
            block.copy_from_slice(&ctx.finish().as_ref()[..block.len()]);
        }
        Ok(())
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// Incremental SHA-256.
pub struct Sha256Stream(digest::Context);

impl Default for Sha256Stream {
    fn default() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }
}

impl Sha256Stream {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// Verifies an ECDSA P-256 / SHA-256 signature `r || s` over `msg`.
pub fn verify_es256(public: &[u8], msg: &[u8], sig: &[u8; 64]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public)
        .verify(msg, sig)
        .is_ok()
}

/// An ECDSA P-256 signing key held in memory (aws-lc clears it when freed).
pub struct EcdsaKey {
    key: signature::EcdsaKeyPair,
    public: PublicKey,
}

impl EcdsaKey {
    /// From a PKCS#8 v1 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        use aws_lc_rs::signature::KeyPair;
        let key =
            signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                .map_err(|_| Error::Crypto("ECDSA P-256 private key"))?;
        let public = PublicKey(
            key.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| Error::Crypto("ECDSA public key encoding"))?,
        );
        Ok(Self { key, public })
    }

    /// A fresh key; returns it with its PKCS#8 v1 encoding (to be sealed).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let key = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| Error::Crypto("ECDSA key generation"))?;
        let doc = key
            .to_pkcs8v1()
            .map_err(|_| Error::Crypto("PKCS#8 encoding"))?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// The public point.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `msg` (hashed with SHA-256 inside), returning `r || s`.
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; 64]> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = self
            .key
            .sign(&rng, msg)
            .map_err(|_| Error::Crypto("ECDSA signing"))?;
        sig.as_ref()
            .try_into()
            .map_err(|_| Error::Crypto("ECDSA signature length"))
    }
}

/// PKCS#8 v1 of an ECDSA P-256 key given as a scalar and its public point.
pub fn ecdsa_pkcs8_from_scalar(
    scalar: &[u8; 32],
    public: &PublicKey,
) -> Result<Zeroizing<Vec<u8>>> {
    let key = signature::EcdsaKeyPair::from_private_key_and_public_key(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        scalar,
        &public.0,
    )
    .map_err(|_| Error::Crypto("ECDSA P-256 private key"))?;
    let doc = key
        .to_pkcs8v1()
        .map_err(|_| Error::Crypto("PKCS#8 encoding"))?;
    Ok(Zeroizing::new(doc.as_ref().to_vec()))
}

/// A fresh ECDSA P-256 key as a scalar (for a per-package issuing CA whose
/// key travels, encrypted, to one Guardian).
pub fn generate_ecdsa_scalar(
    entropy: &mut dyn Entropy,
) -> Result<(Zeroizing<[u8; 32]>, PublicKey)> {
    let (k, scalar) = EcdhKey::generate(entropy)?;
    Ok((scalar, k.public_key().clone()))
}

/// An ECDH P-256 private key held in memory.
pub struct EcdhKey {
    key: agreement::PrivateKey,
    public: PublicKey,
}

impl EcdhKey {
    /// From a 32-byte big-endian scalar.
    pub fn from_scalar(scalar: &[u8]) -> Result<Self> {
        let key = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar)
            .map_err(|_| Error::Crypto("ECDH P-256 private key"))?;
        let public = key
            .compute_public_key()
            .map_err(|_| Error::Crypto("ECDH public key"))?;
        let public = PublicKey(
            public
                .as_ref()
                .try_into()
                .map_err(|_| Error::Crypto("ECDH public key encoding"))?,
        );
        Ok(Self { key, public })
    }

    /// A fresh key drawn from `entropy`; returns it with its scalar (to be sealed).
    pub fn generate(entropy: &mut dyn Entropy) -> Result<(Self, Zeroizing<[u8; 32]>)> {
        for _ in 0..16 {
            let mut scalar = Zeroizing::new([0u8; 32]);
            entropy.fill(&mut scalar[..])?;
            // A scalar outside [1, n-1] is refused by aws-lc; draw again.
            if let Ok(key) = Self::from_scalar(&scalar[..]) {
                return Ok((key, scalar));
            }
        }
        Err(Error::Crypto("ECDH key generation"))
    }

    /// The public point.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The ECDH shared secret (x coordinate) with `peer`.
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer);
        agreement::agree(
            &self.key,
            peer,
            Error::Crypto("ECDH with an invalid public key"),
            |z| {
                let mut out = Zeroizing::new([0u8; 32]);
                out.copy_from_slice(z);
                Ok(out)
            },
        )
    }
}

/// The KEK of ECDH-ES + A128KW (RFC 9053 §6.4): HKDF-SHA-256 with no salt
/// over the shared secret, info = the COSE_KDF_Context, 16 bytes.
fn a128kw_kek(shared: &[u8; 32]) -> Result<Zeroizing<[u8; 16]>> {
    kek_with_context(shared, &KDF_CONTEXT_A128KW)
}

fn kek_with_context(shared: &[u8; 32], context: &[u8]) -> Result<Zeroizing<[u8; 16]>> {
    struct Len16;
    impl hkdf::KeyType for Len16 {
        fn len(&self) -> usize {
            16
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(shared);
    let info = [context];
    let okm = prk
        .expand(&info, Len16)
        .map_err(|_| Error::Crypto("HKDF"))?;
    let mut kek = Zeroizing::new([0u8; 16]);
    okm.fill(&mut kek[..]).map_err(|_| Error::Crypto("HKDF"))?;
    Ok(kek)
}

/// Wraps `cek` for `recipient` with a fresh ephemeral key (ECDH-ES + A128KW).
pub fn wrap_for(
    recipient: &PublicKey,
    cek: &[u8; KEY_LEN],
    entropy: &mut dyn Entropy,
) -> Result<RecipientSpec> {
    use aws_lc_rs::key_wrap::KeyWrap;
    let (ephemeral, _scalar) = EcdhKey::generate(entropy)?;
    let shared = ephemeral.agree(&recipient.0)?;
    let kek = a128kw_kek(&shared)?;
    let kek = key_wrap::AesKek::new(&key_wrap::AES_128, &kek[..])
        .map_err(|_| Error::Crypto("AES-KW key"))?;
    let mut wrapped = [0u8; cose::limits::WRAPPED_KEY_LEN];
    kek.wrap(cek, &mut wrapped)
        .map_err(|_| Error::Crypto("AES-KW wrap"))?;
    Ok(RecipientSpec {
        kid: recipient.kid(),
        ephemeral: ephemeral.public_key().point(),
        wrapped_key: wrapped,
    })
}

/// Delivers a product key (32-byte scalar) to a device's key-agreement key:
/// ECDH-ES + A128KW with the product-key KDF context
/// (`trustchain_formats::cose::KDF_CONTEXT_PRODUCT_KEY`). Returns the
/// ephemeral public point and the 40 wrapped bytes.
pub fn wrap_product_key(
    device_ka: &PublicKey,
    product_scalar: &[u8; 32],
    entropy: &mut dyn Entropy,
) -> Result<([u8; 65], [u8; 40])> {
    use aws_lc_rs::key_wrap::KeyWrap;
    let (ephemeral, _scalar) = EcdhKey::generate(entropy)?;
    let shared = ephemeral.agree(&device_ka.0)?;
    let kek = kek_with_context(&shared, &cose::KDF_CONTEXT_PRODUCT_KEY)?;
    let kek = key_wrap::AesKek::new(&key_wrap::AES_128, &kek[..])
        .map_err(|_| Error::Crypto("AES-KW key"))?;
    let mut wrapped = [0u8; 40];
    kek.wrap(product_scalar, &mut wrapped)
        .map_err(|_| Error::Crypto("AES-KW wrap"))?;
    Ok((ephemeral.public_key().0, wrapped))
}

/// Recovers the content key from a recipient with the matching private key.
/// `None` when the unwrap fails (wrong key or altered bytes).
pub fn unwrap_with(
    key: &EcdhKey,
    ephemeral: &EcPoint,
    wrapped: &[u8; cose::limits::WRAPPED_KEY_LEN],
) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let shared = key.agree(&ephemeral.to_sec1()).ok()?;
    unwrap_shared(&shared, wrapped)
}

/// The A128KW unwrap half of ECDH-ES + A128KW, from the shared secret.
pub fn unwrap_shared(
    shared: &[u8; 32],
    wrapped: &[u8; cose::limits::WRAPPED_KEY_LEN],
) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    use aws_lc_rs::key_wrap::KeyWrap;
    let kek = a128kw_kek(shared).ok()?;
    let kek = key_wrap::AesKek::new(&key_wrap::AES_128, &kek[..]).ok()?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    let n = kek.unwrap(wrapped, &mut out[..]).ok()?.len();
    (n == KEY_LEN).then_some(out)
}

/// An AES-GCM key for sealing (keystore: 256-bit; images: 128-bit).
pub struct Aead(aead::LessSafeKey);

impl Aead {
    /// AES-128-GCM.
    pub fn aes128(key: &[u8; 16]) -> Result<Self> {
        Self::new(&aead::AES_128_GCM, key)
    }
    /// AES-256-GCM.
    pub fn aes256(key: &[u8; 32]) -> Result<Self> {
        Self::new(&aead::AES_256_GCM, key)
    }
    fn new(alg: &'static aead::Algorithm, key: &[u8]) -> Result<Self> {
        let k = aead::UnboundKey::new(alg, key).map_err(|_| Error::Crypto("AES-GCM key"))?;
        Ok(Self(aead::LessSafeKey::new(k)))
    }
    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                buf,
            )
            .map_err(|_| Error::Crypto("AES-GCM seal"))?;
        tag.as_ref()
            .try_into()
            .map_err(|_| Error::Crypto("AES-GCM tag"))
    }
    /// Decrypts `buf` (ciphertext || tag) in place; returns the plaintext length.
    pub fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> Option<usize> {
        self.0
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                buf,
            )
            .ok()
            .map(|p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip_and_wrong_key_fails() {
        let mut e = TestVectorEntropy::new([7; 32]);
        let (product, _) = EcdhKey::generate(&mut e).unwrap();
        let (other, _) = EcdhKey::generate(&mut e).unwrap();
        let cek = [0x42u8; 16];
        let r = wrap_for(product.public_key(), &cek, &mut e).unwrap();
        assert_eq!(r.kid, product.public_key().kid());
        assert_eq!(
            *unwrap_with(&product, &r.ephemeral, &r.wrapped_key).unwrap(),
            cek
        );
        assert!(unwrap_with(&other, &r.ephemeral, &r.wrapped_key).is_none());
        let mut bad = r.wrapped_key;
        bad[0] ^= 1;
        assert!(unwrap_with(&product, &r.ephemeral, &bad).is_none());
    }

    #[test]
    fn ecdsa_sign_verify() {
        let (k, pkcs8) = EcdsaKey::generate().unwrap();
        let again = EcdsaKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(k.public_key(), again.public_key());
        let sig = k.sign(b"hello").unwrap();
        assert!(verify_es256(&k.public_key().0, b"hello", &sig));
        assert!(!verify_es256(&k.public_key().0, b"hellO", &sig));
    }

    #[test]
    fn public_key_rejects_points_off_the_curve() {
        let (k, _) = EcdhKey::generate(&mut SystemEntropy).unwrap();
        assert!(PublicKey::from_sec1(&k.public_key().0).is_some());
        let mut bad = k.public_key().0;
        bad[64] ^= 1;
        assert!(PublicKey::from_sec1(&bad).is_none());
        assert!(PublicKey::from_sec1(&bad[..64]).is_none());
    }

    #[test]
    fn test_entropy_is_deterministic() {
        let mut a = TestVectorEntropy::new([1; 32]);
        let mut b = TestVectorEntropy::new([1; 32]);
        let (mut x, mut y) = ([0u8; 50], [0u8; 50]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        assert_eq!(x, y);
        assert_ne!(x[..18], x[32..50], "blocks must differ");
    }
}
