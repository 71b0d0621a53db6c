//! Runtime service: validate a peer's certificate chain against the OEM root
//! provisioned in this device (seed "Secure Development": "enable
//! certificate access, validation and authentication for customer
//! applications"). Path validation is rustls-webpki's, without allocation;
//! only the signature check is ours to supply, from the same P-256 code as
//! the rest of the SBM.
use p256::ecdsa::Signature;
use rustls_pki_types::{
    alg_id, AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
    UnixTime,
};
use sha2::Digest;

use crate::{crypto, Status};

/// ECDSA P-256 with SHA-256 for webpki.
#[derive(Debug)]
struct EcdsaP256Sha256;

impl SignatureVerificationAlgorithm for EcdsaP256Sha256 {
    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P256
    }
    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA256
    }
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let sig = Signature::from_der(signature).map_err(|_| InvalidSignature)?;
        let digest: [u8; 32] = crypto::Hasher::digest(message).into();
        let fixed: [u8; 64] = sig.to_bytes().into();
        crypto::verify_prehash(public_key, &digest, &fixed)
            .then_some(())
            .ok_or(InvalidSignature)
    }
}

static ALGS: &[&dyn SignatureVerificationAlgorithm] = &[&EcdsaP256Sha256];

/// The SPKI prefix of a P-256 key (id-ecPublicKey, prime256v1, BIT STRING).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The P-256 public key of a (validated) certificate.
pub fn leaf_key(der: &[u8]) -> Option<[u8; 65]> {
    let at = der
        .windows(P256_SPKI_PREFIX.len())
        .position(|w| w == P256_SPKI_PREFIX)?
        + P256_SPKI_PREFIX.len();
    der.get(at..at + 65)?.try_into().ok()
}

/// Validates `chain` (leaf first, then intermediates) against `root` at
/// `now` (Unix seconds, supplied by the application: the SBM has no clock),
/// for client authentication (a device certificate's EKU); returns the
/// leaf's public key.
pub fn validate(chain: &[&[u8]], root: &[u8], now: u64) -> Result<[u8; 65], Status> {
    let (leaf, intermediates) = chain.split_first().ok_or(Status::BadRequest)?;
    let root = CertificateDer::from(root);
    let anchor = webpki::anchor_from_trusted_cert(&root).map_err(|_| Status::NotProvisioned)?;
    let leaf_der = CertificateDer::from(*leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|_| Status::PeerInvalid)?;
    let mut inter = [
        CertificateDer::from(&[][..]),
        CertificateDer::from(&[][..]),
        CertificateDer::from(&[][..]),
    ];
    if intermediates.len() > inter.len() {
        return Err(Status::PeerInvalid);
    }
    for (slot, der) in inter.iter_mut().zip(intermediates) {
        *slot = CertificateDer::from(*der);
    }
    let time = UnixTime::since_unix_epoch(core::time::Duration::from_secs(now));
    ee.verify_for_usage(
        ALGS,
        &[anchor],
        &inter[..intermediates.len()],
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => Status::PeerUnknownIssuer,
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            Status::PeerExpired
        }
        webpki::Error::InvalidSignatureForPublicKey => Status::PeerBadSignature,
        _ => Status::PeerInvalid,
    })?;
    leaf_key(leaf).ok_or(Status::PeerInvalid)
}
