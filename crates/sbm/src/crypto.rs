//! The SBM's cryptography, from vetted crates with default features off:
//! RustCrypto's `p256`, `ecdsa`, `aes-gcm`, `aes-kw` and `hkdf`, and Frank
//! Denis' `hmac-sha256` for SHA-256. Each function names the standard
//! construction it implements; the byte formats are those of
//! `trustchain-formats`.
use aes_gcm::aead::AeadInPlace;
use aes_gcm::KeyInit;
use ecdsa::hazmat::SignPrimitive;
use p256::{NistP256, SecretKey};
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
    ec::generate_key(&mut RngAdapter(rng))
}

/// Whether `scalar` is a valid P-256 private key (32 bytes, in [1, n−1]),
/// without the scalar multiplication a public key would cost.
pub fn is_valid_scalar(scalar: &[u8]) -> bool {
    SecretKey::from_slice(scalar).is_ok()
}

/// The SEC1 public point of a scalar, if valid.
pub fn public_key(scalar: &[u8]) -> Option<[u8; 65]> {
    ec::public_key(scalar)
}

/// ECDSA P-256 over a SHA-256 digest, `r || s` (RFC 6979 nonces, HMAC-DRBG
/// over [`Hasher`]). The same call as `SigningKey::sign_prehash`, which
/// would run RFC 6979 over `sha2` and link a second SHA-256. Always
/// RustCrypto's: deterministic signatures are part of the formats' test
/// vectors, and AWS-LC signs with random nonces.
pub fn sign_prehash(scalar: &[u8], digest: &[u8; 32]) -> Option<[u8; 64]> {
    let key = SecretKey::from_slice(scalar).ok()?.to_nonzero_scalar();
    let z = ecdsa::hazmat::bits2field::<NistP256>(digest).ok()?;
    let (sig, _) = key.try_sign_prehashed_rfc6979::<Hasher>(&z, &[]).ok()?;
    Some(sig.to_bytes().into())
}

/// Verifies ECDSA P-256 `r || s` over a SHA-256 digest.
pub fn verify_prehash(public: &[u8], digest: &[u8; 32], sig: &[u8; 64]) -> bool {
    ec::verify_prehash(public, digest, sig)
}

/// ECDH P-256: the shared x coordinate.
pub fn ecdh(scalar: &[u8], peer: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    ec::ecdh(scalar, peer)
}

/// The elliptic-curve operations that cost a scalar multiplication, from
/// one of two vetted libraries with the same results (the tests below
/// compare them on valid and invalid input):
///
/// - RustCrypto's `p256` (portable, constant time, small): on the device
///   (feature `small`) and wherever feature `aws-lc` is off;
/// - AWS-LC through `aws-lc-rs` (assembly, precomputed base-point tables,
///   about ten times faster): on the host with feature `aws-lc`, which the
///   device simulator turns on. The simulated devices of a production
///   station run thousands of these per second; the rest of the host
///   (Guardian, OEM, TLS) already signs and verifies with AWS-LC.
#[cfg(any(feature = "small", not(feature = "aws-lc")))]
mod ec {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::{Signature, VerifyingKey};
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::{PublicKey, SecretKey};
    use rand_core::CryptoRngCore;
    use zeroize::Zeroizing;

    pub fn generate_key(rng: &mut impl CryptoRngCore) -> (Zeroizing<[u8; 32]>, [u8; 65]) {
        let sk = SecretKey::random(rng);
        let mut scalar = Zeroizing::new([0u8; 32]);
        scalar.copy_from_slice(&sk.to_bytes());
        (scalar, public_of(&sk))
    }

    fn public_of(sk: &SecretKey) -> [u8; 65] {
        let mut out = [0u8; 65];
        out.copy_from_slice(sk.public_key().to_encoded_point(false).as_bytes());
        out
    }

    pub fn public_key(scalar: &[u8]) -> Option<[u8; 65]> {
        SecretKey::from_slice(scalar).ok().map(|sk| public_of(&sk))
    }

    pub fn verify_prehash(public: &[u8], digest: &[u8; 32], sig: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_sec1_bytes(public) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        key.verify_prehash(digest, &sig).is_ok()
    }

    pub fn ecdh(scalar: &[u8], peer: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let sk = SecretKey::from_slice(scalar).ok()?;
        let pk = PublicKey::from_sec1_bytes(peer).ok()?;
        let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(shared.raw_secret_bytes());
        Some(out)
    }
}

#[cfg(all(feature = "aws-lc", not(feature = "small")))]
mod ec {
    use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256};
    use aws_lc_rs::digest::{Digest, SHA256};
    use aws_lc_rs::signature::{self, ECDSA_P256_SHA256_FIXED};
    use p256::SecretKey;
    use rand_core::CryptoRngCore;
    use zeroize::Zeroizing;

    pub fn generate_key(rng: &mut impl CryptoRngCore) -> (Zeroizing<[u8; 32]>, [u8; 65]) {
        loop {
            // Rejection sampling from the board's RNG, as on the device
            // (`SecretKey::random`); a scalar it returns is in [1, n−1], so
            // it has a public key and the loop runs once.
            let sk = SecretKey::random(rng);
            let mut scalar = Zeroizing::new([0u8; 32]);
            scalar.copy_from_slice(&sk.to_bytes());
            if let Some(public) = public_key(&scalar[..]) {
                return (scalar, public);
            }
        }
    }

    /// The SEC1 encodings `p256` accepts: compressed and uncompressed.
    /// AWS-LC also takes the hybrid form (0x06 / 0x07), which nothing in
    /// the formats produces and the firmware refuses.
    fn sec1_as_p256(point: &[u8]) -> bool {
        matches!(
            (point.first(), point.len()),
            (Some(2 | 3), 33) | (Some(4), 65)
        )
    }

    pub fn public_key(scalar: &[u8]) -> Option<[u8; 65]> {
        let sk = PrivateKey::from_private_key(&ECDH_P256, scalar).ok()?;
        let public = sk.compute_public_key().ok()?;
        public.as_ref().try_into().ok()
    }

    pub fn verify_prehash(public: &[u8], digest: &[u8; 32], sig: &[u8; 64]) -> bool {
        if !sec1_as_p256(public) {
            return false;
        }
        let Ok(digest) = Digest::import_less_safe(digest, &SHA256) else {
            return false;
        };
        signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify_digest(&digest, sig)
            .is_ok()
    }

    pub fn ecdh(scalar: &[u8], peer: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        if !sec1_as_p256(peer) {
            return None;
        }
        let sk = PrivateKey::from_private_key(&ECDH_P256, scalar).ok()?;
        agreement::agree(&sk, UnparsedPublicKey::new(&ECDH_P256, peer), (), |x| {
            let mut out = Zeroizing::new([0u8; 32]);
            if x.len() != 32 {
                return Err(());
            }
            out.copy_from_slice(x);
            Ok(out)
        })
        .ok()
    }
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
    use p256::ecdsa::Signature;

    /// 0, the group order n, 2^256 − 1, n − 1 and 1: the scalars at the
    /// edges of [1, n − 1].
    const EDGE_SCALARS: [[u8; 32]; 5] = {
        let n = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        let mut n_minus_1 = n;
        n_minus_1[31] -= 1;
        let mut one = [0u8; 32];
        one[31] = 1;
        [[0; 32], n, [0xff; 32], n_minus_1, one]
    };

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
        let [_, n, _, n_minus_1, one] = EDGE_SCALARS;
        for s in EDGE_SCALARS.into_iter().chain([[0x42; 32]]) {
            assert_eq!(is_valid_scalar(&s), public_key(&s).is_some(), "{s:02x?}");
        }
        assert!(!is_valid_scalar(&n) && is_valid_scalar(&n_minus_1) && is_valid_scalar(&one));
        assert!(!is_valid_scalar(&one[..31]));
    }

    /// The AWS-LC backend against `p256` on the same inputs, valid and
    /// invalid: the host's devices must accept and refuse exactly what the
    /// firmware does.
    #[cfg(all(feature = "aws-lc", not(feature = "small")))]
    #[test]
    fn aws_lc_backend_agrees_with_p256() {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use p256::ecdsa::VerifyingKey;
        use p256::elliptic_curve::sec1::ToEncodedPoint;

        fn ref_public(scalar: &[u8]) -> Option<[u8; 65]> {
            let sk = SecretKey::from_slice(scalar).ok()?;
            sk.public_key()
                .to_encoded_point(false)
                .as_bytes()
                .try_into()
                .ok()
        }
        fn ref_ecdh(scalar: &[u8], peer: &[u8]) -> Option<[u8; 32]> {
            let sk = SecretKey::from_slice(scalar).ok()?;
            let pk = p256::PublicKey::from_sec1_bytes(peer).ok()?;
            let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Some((*shared.raw_secret_bytes()).into())
        }
        fn ref_verify(public: &[u8], digest: &[u8; 32], sig: &[u8]) -> bool {
            let (Ok(key), Ok(sig)) = (
                VerifyingKey::from_sec1_bytes(public),
                Signature::from_slice(sig),
            ) else {
                return false;
            };
            key.verify_prehash(digest, &sig).is_ok()
        }
        let compressed = |public: &[u8; 65]| {
            let mut c = [0u8; 33];
            c[0] = 2 + (public[64] & 1);
            c[1..].copy_from_slice(&public[1..33]);
            c
        };

        let [_, n, _, _, one] = EDGE_SCALARS;
        let mut scalars = [[0u8; 32]; 17];
        scalars[..5].copy_from_slice(&EDGE_SCALARS);
        for (i, s) in scalars[5..].iter_mut().enumerate() {
            *s = sha256(&[i as u8]);
        }
        for s in &scalars {
            assert_eq!(public_key(s), ref_public(s), "public key of {s:02x?}");
        }
        assert_eq!(public_key(&one[..31]), None);
        let mut long = [0u8; 33];
        long[..32].copy_from_slice(&one);
        assert_eq!(public_key(&long), None);

        let mut valid = [[0u8; 32]; 17];
        let mut nv = 0;
        for s in scalars.iter().filter(|s| is_valid_scalar(&s[..])) {
            valid[nv] = *s;
            nv += 1;
        }
        let valid = &valid[..nv];
        let mut checked = 0;
        for pair in valid.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let pb = public_key(&b).unwrap();
            let shared = ecdh(&a, &pb).map(|k| *k);
            assert!(shared.is_some());
            assert_eq!(shared, ref_ecdh(&a, &pb));
            assert_eq!(shared, ecdh(&b, &public_key(&a).unwrap()).map(|k| *k));
            // Other encodings of the same point, and points that are not.
            let mut off_curve = pb;
            off_curve[64] ^= 1;
            let mut x_too_big = pb;
            x_too_big[1..33].fill(0xff);
            let mut hybrid = pb;
            hybrid[0] = 6 + (pb[64] & 1);
            let bad: [&[u8]; 6] = [
                &compressed(&pb),
                &off_curve,
                &x_too_big,
                &hybrid,
                &[0u8],
                &pb[..64],
            ];
            for peer in bad {
                assert_eq!(
                    ecdh(&a, peer).map(|k| *k),
                    ref_ecdh(&a, peer),
                    "ECDH with {peer:02x?}"
                );
            }

            let digest = sha256(&b);
            let sig = sign_prehash(&a, &digest).unwrap();
            let pa = public_key(&a).unwrap();
            let parsed = Signature::from_slice(&sig).unwrap();
            let (r, s) = parsed.split_scalars();
            let high_s = Signature::from_scalars(r, -*s).unwrap().to_bytes();
            let mut flipped = digest;
            flipped[0] ^= 1;
            let mut r_is_n = sig;
            r_is_n[..32].copy_from_slice(&n);
            let mut s_zero = sig;
            s_zero[32..].fill(0);
            let sigs: [([u8; 64], [u8; 32]); 5] = [
                (sig, digest),
                (high_s.into(), digest),
                (sig, flipped),
                (r_is_n, digest),
                (s_zero, digest),
            ];
            let mut pa_hybrid = pa;
            pa_hybrid[0] = 6 + (pa[64] & 1);
            let keys: [&[u8]; 5] = [&pa, &compressed(&pa), &pa_hybrid, &off_curve, &pb];
            for key in keys {
                for (sig, digest) in &sigs {
                    let ours = verify_prehash(key, digest, sig);
                    assert_eq!(ours, ref_verify(key, digest, sig), "{key:02x?} {sig:02x?}");
                    checked += ours as usize;
                }
            }
        }
        // Each pair: the signature and its high-S twin, under the
        // uncompressed and the compressed key.
        assert_eq!(checked, 4 * (valid.len() - 1));
    }
}
