//! The SBM's cryptography, from vetted crates with default features off:
//! RustCrypto's `p256`, `ecdsa`, `aes-gcm`, `aes-kw` and `hkdf`, and Frank
//! Denis' `hmac-sha256` for SHA-256. Each function names the standard
//! construction it implements; the byte formats are those of
//! `trustchain-formats`.
use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use ecdsa::hazmat::SignPrimitive;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{NistP256, PublicKey, SecretKey};
use sha2::Digest;
use trustchain_formats::cose::KDF_CONTEXT_A128KW;
use zeroize::Zeroizing;

use crate::hal::Rng;

/// SHA-256 (FIPS 180-4), incremental, behind RustCrypto's `Digest` traits
/// so that HKDF and RFC 6979 run on it too: `sha2` on the host (where it
/// uses the CPU's SHA extensions: the simulator and the production station
/// hash every image several times), and with the `small` feature (the
/// Cortex-M4 firmware) [`small::Hasher`], built for flash size.
#[cfg(not(feature = "small"))]
pub type Hasher = sha2::Sha256;
#[cfg(feature = "small")]
pub use small::Hasher;

#[cfg(feature = "small")]
mod small {
    use sha2::digest::{self, consts};

    /// SHA-256 (FIPS 180-4) for the device.
    ///
    /// The compression function is `hmac-sha256`'s rather than `sha2`'s: it
    /// keeps sixteen rounds unrolled in one function that runs four times per
    /// block, where `sha2` unrolls all 64 (7 KiB of the Cortex-M4 firmware) or,
    /// built for size, keeps a round loop that shuffles the eight working
    /// variables every round (~50 instructions per byte against ~37). Lengths
    /// are counted in `usize`: on a 32-bit target, correct up to 512 MiB of
    /// input, far more than the SBM ever hashes (its flash).
    #[derive(Clone, Default)]
    pub struct Hasher(hmac_sha256::Hash);

    impl digest::HashMarker for Hasher {}

    impl digest::OutputSizeUser for Hasher {
        type OutputSize = consts::U32;
    }

    impl digest::core_api::BlockSizeUser for Hasher {
        type BlockSize = consts::U64;
    }

    impl digest::Update for Hasher {
        fn update(&mut self, data: &[u8]) {
            self.0.update(data);
        }
    }

    impl digest::FixedOutput for Hasher {
        fn finalize_into(self, out: &mut digest::Output<Self>) {
            out.copy_from_slice(&self.0.finalize());
        }
    }

    impl digest::Reset for Hasher {
        fn reset(&mut self) {
            *self = Self::default();
        }
    }

    impl digest::FixedOutputReset for Hasher {
        fn finalize_into_reset(&mut self, out: &mut digest::Output<Self>) {
            out.copy_from_slice(&core::mem::take(&mut self.0).finalize());
        }
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Hasher::digest(data).into()
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

/// Whether `scalar` is a valid P-256 private key (32 bytes, in [1, n−1]),
/// without the scalar multiplication a public key would cost.
pub fn is_valid_scalar(scalar: &[u8]) -> bool {
    SecretKey::from_slice(scalar).is_ok()
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

/// ECDSA P-256 over a SHA-256 digest, `r || s` (RFC 6979 nonces, HMAC-DRBG
/// over [`Hasher`]). The same call as `SigningKey::sign_prehash`, which
/// would run RFC 6979 over `sha2` and link a second SHA-256.
pub fn sign_prehash(scalar: &[u8], digest: &[u8; 32]) -> Option<[u8; 64]> {
    let key = SecretKey::from_slice(scalar).ok()?.to_nonzero_scalar();
    let z = ecdsa::hazmat::bits2field::<NistP256>(digest).ok()?;
    let (sig, _) = key.try_sign_prehashed_rfc6979::<Hasher>(&z, &[]).ok()?;
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
    let hk = hkdf::SimpleHkdf::<Hasher>::new(None, shared);
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

#[cfg(test)]
mod tests {
    //! [`Hasher`] replaced `sha2::Sha256` inside HKDF and RFC 6979: every
    //! output must stay the same bytes as with `sha2`.
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner;

    fn input(len: usize) -> [u8; 300] {
        let mut buf = [0u8; 300];
        for (i, b) in buf.iter_mut().enumerate().take(len) {
            *b = (i as u8).wrapping_mul(31).wrapping_add(7);
        }
        buf
    }

    #[test]
    fn sha256_matches_sha2_at_every_padding_boundary() {
        for len in (0..=130).chain([191, 192, 200, 255, 256, 300]) {
            let data = &input(len)[..len];
            let expected: [u8; 32] = sha2::Sha256::digest(data).into();
            assert_eq!(sha256(data), expected, "one shot, {len} bytes");
            // Split into uneven updates, as the flash reads and the
            // protocol's digests feed it.
            for split in [1, 3, 63, 64, 65] {
                let mut h = Hasher::new();
                for part in data.chunks(split) {
                    h.update(part);
                }
                let got: [u8; 32] = h.finalize().into();
                assert_eq!(got, expected, "{len} bytes in parts of {split}");
            }
        }
        // FIPS 180-4 example "abc".
        assert_eq!(
            sha256(b"abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }

    #[test]
    fn hkdf_matches_sha2() {
        let shared = [0x5au8; 32];
        let got = kek(&shared, &[&KDF_CONTEXT_A128KW]).unwrap();
        let mut expected = [0u8; 16];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &shared)
            .expand(&KDF_CONTEXT_A128KW, &mut expected)
            .unwrap();
        assert_eq!(*got, expected);
    }

    #[test]
    fn rfc6979_signatures_match_sha2() {
        for seed in 1u8..=8 {
            let scalar = [seed; 32];
            let digest = sha256(&[seed]);
            let ours = sign_prehash(&scalar, &digest).unwrap();
            let key = p256::ecdsa::SigningKey::from_slice(&scalar).unwrap();
            let theirs: Signature = key.sign_prehash(&digest).unwrap();
            assert_eq!(ours[..], theirs.to_bytes()[..], "key {seed}");
            assert!(verify_prehash(
                &public_key(&scalar).unwrap(),
                &digest,
                &ours
            ));
        }
        assert!(sign_prehash(&[0u8; 32], &[1; 32]).is_none(), "zero scalar");
        // Valid scalars are exactly those a public key exists for.
        let n = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        let mut n_minus_1 = n;
        n_minus_1[31] -= 1;
        let mut one = [0u8; 32];
        one[31] = 1;
        for s in [[0u8; 32], n, [0xff; 32], n_minus_1, one, [0x42; 32]] {
            assert_eq!(is_valid_scalar(&s), public_key(&s).is_some(), "{s:02x?}");
        }
        assert!(!is_valid_scalar(&n) && is_valid_scalar(&n_minus_1) && is_valid_scalar(&one));
        assert!(!is_valid_scalar(&one[..31]));
    }
}
