//! The SBM's cryptography, from RustCrypto crates with default features off
//! (`p256`, `sha2`, `aes-gcm`, `aes-kw`, `hkdf`). Each function names the
//! standard construction it implements; the byte formats are those of
//! `trustchain-formats`.
use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use trustchain_formats::cose::KDF_CONTEXT_A128KW;
use zeroize::Zeroizing;

use crate::hal::Rng;

/// SHA-256, incremental.
pub type Hasher = Sha256;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `rand_core` over the board's [`Rng`].
pub(crate) struct RngAdapter<'a, R: Rng>(pub &'a mut R);

impl<R: Rng> rand_core::RngCore for RngAdapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl<R: Rng> rand_core::CryptoRng for RngAdapter<'_, R> {}

/// A fresh P-256 private scalar (32 bytes) and its SEC1 public point.
pub fn generate_key<R: Rng>(rng: &mut R) -> (Zeroizing<[u8; 32]>, [u8; 65]) {
    let sk = SecretKey::random(&mut RngAdapter(rng));
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&sk.to_bytes());
    (scalar, public_of(&sk))
}

fn public_of(sk: &SecretKey) -> [u8; 65] {
    let mut out = [0u8; 65];
    out.copy_from_slice(sk.public_key().to_encoded_point(false).as_bytes());
    out
}

/// The SEC1 public point of a scalar, if valid.
pub fn public_key(scalar: &[u8]) -> Option<[u8; 65]> {
    SecretKey::from_slice(scalar).ok().map(|sk| public_of(&sk))
}

/// ECDSA P-256 over a SHA-256 digest, `r || s` (RFC 6979 nonces).
pub fn sign_prehash(scalar: &[u8], digest: &[u8; 32]) -> Option<[u8; 64]> {
    let key = SigningKey::from_slice(scalar).ok()?;
    let sig: Signature = key.sign_prehash(digest).ok()?;
    Some(sig.to_bytes().into())
}

/// Verifies ECDSA P-256 `r || s` over a SHA-256 digest.
pub fn verify_prehash(public: &[u8], digest: &[u8; 32], sig: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_sec1_bytes(public) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(sig) else {
        return false;
    };
    key.verify_prehash(digest, &sig).is_ok()
}

/// ECDH P-256: the shared x coordinate.
pub fn ecdh(scalar: &[u8], peer: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let sk = SecretKey::from_slice(scalar).ok()?;
    let pk = PublicKey::from_sec1_bytes(peer).ok()?;
    let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(shared.raw_secret_bytes());
    Some(out)
}

/// HKDF-SHA-256 (no salt) of `shared` with `info`, 16 bytes: the KEK of
/// ECDH-ES + A128KW (RFC 9053 §6.4, §5.2).
fn kek(shared: &[u8; 32], info: &[&[u8]]) -> Option<Zeroizing<[u8; 16]>> {
    let hk = hkdf::Hkdf::<Sha256>::new(None, shared);
    let mut okm = Zeroizing::new([0u8; 16]);
    hk.expand_multi_info(info, &mut okm[..]).ok()?;
    Some(okm)
}

/// Unwraps a content key of a UPK recipient (ECDH-ES + A128KW).
pub fn unwrap_content_key(
    scalar: &[u8],
    ephemeral: &[u8; 65],
    wrapped: &[u8; 24],
) -> Option<Zeroizing<[u8; 16]>> {
    let shared = ecdh(scalar, ephemeral)?;
    let kek = kek(&shared, &[&KDF_CONTEXT_A128KW])?;
    let mut out = Zeroizing::new([0u8; 16]);
    aes_kw::KekAes128::new(&(*kek).into())
        .unwrap(wrapped, &mut out[..])
        .ok()?;
    Some(out)
}

/// Unwraps the product key delivered to this device: ECDH-ES + A128KW to
/// the device key-agreement key, KDF context with `SuppPubInfo.other =
/// "trustchain product key"` (see `docs/formats.md`).
pub fn unwrap_product_key(
    scalar: &[u8],
    ephemeral: &[u8; 65],
    wrapped: &[u8; 40],
) -> Option<Zeroizing<[u8; 32]>> {
    let shared = ecdh(scalar, ephemeral)?;
    let kek = kek(
        &shared,
        &[&trustchain_formats::cose::KDF_CONTEXT_PRODUCT_KEY],
    )?;
    let mut out = Zeroizing::new([0u8; 32]);
    aes_kw::KekAes128::new(&(*kek).into())
        .unwrap(wrapped, &mut out[..])
        .ok()?;
    Some(out)
}

/// AES-128-GCM open of one chunk in place (`buf` = ciphertext, `tag` apart).
pub fn open_chunk(
    key: &[u8; 16],
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; 16],
) -> bool {
    let cipher = aes_gcm::Aes128Gcm::new(key.into());
    cipher
        .decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
        .is_ok()
}
