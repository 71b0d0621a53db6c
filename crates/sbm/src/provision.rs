//! Provisioning (seed "Secure Production", the per-device flow): the device
//! generates its own keys, receives its certificate chain, the OEM root and
//! the OEM keys, then is locked. Every step is write-once and refused after
//! lock; the private keys never leave protected storage.
use sha2::Digest;
use zeroize::Zeroizing;

use crate::crypto;
use crate::hal::{Field, Flash, Protected, ProtectedError, Rng};
use crate::install::OEM_KEYS_LEN;
use crate::{Lifecycle, Sbm, Status};

/// Domain label of the proof of possession signed at key generation.
pub const POP_LABEL: &[u8] = b"TCSBM-POP-1";
/// Domain label of runtime challenge signatures.
pub const SIGN_LABEL: &[u8] = b"TCSBM-SIGN-1";

impl From<ProtectedError> for Status {
    fn from(e: ProtectedError) -> Self {
        match e {
            ProtectedError::AlreadyWritten => Status::AlreadyProvisioned,
            ProtectedError::Locked => Status::Locked,
            ProtectedError::TooLarge => Status::BadCertificate,
            ProtectedError::Empty => Status::NotProvisioned,
            ProtectedError::PowerLoss => Status::FlashError,
        }
    }
}

/// The digest a proof of possession signs.
pub fn pop_digest(
    nonce: &[u8; 32],
    uid: &[u8],
    identity: &[u8; 65],
    agreement: &[u8; 65],
) -> [u8; 32] {
    let mut h = crypto::Hasher::new();
    h.update(POP_LABEL);
    h.update(nonce);
    h.update([uid.len() as u8]);
    h.update(uid);
    h.update(identity);
    h.update(agreement);
    h.finalize().into()
}

/// The context string of a TLS 1.3 client CertificateVerify (RFC 8446 §4.4.3).
pub const TLS13_CLIENT_CONTEXT: &[u8] = b"TLS 1.3, client CertificateVerify";

/// The digest a TLS 1.3 client CertificateVerify signs: SHA-256 of 64
/// spaces, the context string, a zero byte and the handshake hash. The
/// message starts with a space, so it is never a challenge or a proof of
/// possession (which start with "TCSBM-").
pub fn tls13_client_digest(transcript_hash: &[u8]) -> [u8; 32] {
    let mut h = crypto::Hasher::new();
    h.update([0x20; 64]);
    h.update(TLS13_CLIENT_CONTEXT);
    h.update([0]);
    h.update(transcript_hash);
    h.finalize().into()
}

/// The digest a runtime challenge signature signs.
pub fn challenge_digest(label: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = crypto::Hasher::new();
    h.update(SIGN_LABEL);
    h.update([label.len() as u8]);
    h.update(label);
    h.update(data);
    h.finalize().into()
}

/// What `GENERATE_KEYS` returns: identity public key, key-agreement public
/// key, proof of possession.
pub type NewKeys = ([u8; 65], [u8; 65], [u8; 64]);

impl<F: Flash, P: Protected, R: Rng> Sbm<F, P, R> {
    fn refuse_if_locked(&mut self) -> Result<(), Status> {
        if self.prot.is_locked() {
            return Err(Status::Locked);
        }
        Ok(())
    }

    pub(crate) fn uid(&mut self) -> ([u8; 32], usize) {
        let mut uid = [0u8; 32];
        let n = self.prot.read(Field::Uid, &mut uid).unwrap_or(0);
        (uid, n)
    }

    /// `GENERATE_KEYS`: identity (ECDSA) and key-agreement (ECDH) keys, made
    /// here and kept here; returns the public keys and a proof of possession.
    pub(crate) fn generate_keys(&mut self, nonce: &[u8; 32]) -> Result<NewKeys, Status> {
        self.refuse_if_locked()?;
        if self.prot.is_written(Field::IdentityKey) || self.prot.is_written(Field::AgreementKey) {
            return Err(Status::AlreadyProvisioned);
        }
        let (id_scalar, id_pub) = crypto::generate_key(&mut self.rng);
        let (ka_scalar, ka_pub) = crypto::generate_key(&mut self.rng);
        // The agreement key first: lifecycle is keyed on the identity key, so
        // a device that loses power between the two writes still reads as
        // Blank; its next GENERATE_KEYS is refused (write-once) and the
        // programmer reports the part as failed, which is the safe outcome.
        self.prot.write_once(Field::AgreementKey, &ka_scalar[..])?;
        self.prot.write_once(Field::IdentityKey, &id_scalar[..])?;
        let (uid, n) = self.uid();
        let digest = pop_digest(nonce, &uid[..n], &id_pub, &ka_pub);
        let sig = crypto::sign_prehash(&id_scalar[..], &digest).ok_or(Status::FlashError)?;
        Ok((id_pub, ka_pub, sig))
    }

    fn identity_public(&mut self) -> Result<[u8; 65], Status> {
        let mut scalar = Zeroizing::new([0u8; 32]);
        if self.prot.read(Field::IdentityKey, &mut scalar[..]).ok() != Some(32) {
            return Err(Status::NotProvisioned);
        }
        crypto::public_key(&scalar[..]).ok_or(Status::NotProvisioned)
    }

    /// `STORE_CERTS`: the chain (CBOR array, leaf first) and the OEM root.
    /// The leaf must certify this device's identity key.
    pub(crate) fn store_certs(
        &mut self,
        chain_cbor: &[u8],
        leaf: &[u8],
        root: &[u8],
    ) -> Result<(), Status> {
        self.refuse_if_locked()?;
        let id_pub = self.identity_public()?;
        if self.prot.is_written(Field::CertChain) || self.prot.is_written(Field::OemRoot) {
            return Err(Status::AlreadyProvisioned);
        }
        if !leaf.windows(id_pub.len()).any(|w| w == id_pub) {
            return Err(Status::BadCertificate);
        }
        if chain_cbor.len() > Field::CertChain.capacity() || root.len() > Field::OemRoot.capacity()
        {
            return Err(Status::BadCertificate);
        }
        self.prot.write_once(Field::OemRoot, root)?;
        self.prot.write_once(Field::CertChain, chain_cbor)?;
        Ok(())
    }

    /// `INSTALL_OEM_KEYS`: OEM and product IDs, the mastering public key, and
    /// the product key wrapped to this device's key-agreement key.
    pub(crate) fn install_oem_keys(
        &mut self,
        oem_id: u32,
        product_id: u32,
        mastering: &[u8; 65],
        ephemeral: &[u8; 65],
        wrapped: &[u8; 40],
    ) -> Result<(), Status> {
        self.refuse_if_locked()?;
        if self.prot.is_written(Field::OemKeys) || self.prot.is_written(Field::ProductKey) {
            return Err(Status::AlreadyProvisioned);
        }
        if oem_id == 0 || product_id == 0 || p256::PublicKey::from_sec1_bytes(mastering).is_err() {
            return Err(Status::BadRequest);
        }
        let mut ka = Zeroizing::new([0u8; 32]);
        if self.prot.read(Field::AgreementKey, &mut ka[..]).ok() != Some(32) {
            return Err(Status::NotProvisioned);
        }
        let product = crypto::unwrap_product_key(&ka[..], ephemeral, wrapped)
            .ok_or(Status::BadKeyDelivery)?;
        if !crypto::is_valid_scalar(&product[..]) {
            return Err(Status::BadKeyDelivery);
        }
        let mut keys = [0u8; OEM_KEYS_LEN];
        keys[..4].copy_from_slice(&oem_id.to_be_bytes());
        keys[4..8].copy_from_slice(&product_id.to_be_bytes());
        keys[8..].copy_from_slice(mastering);
        self.prot.write_once(Field::ProductKey, &product[..])?;
        self.prot.write_once(Field::OemKeys, &keys)?;
        Ok(())
    }

    /// `LOCK`: only a fully provisioned device can be locked.
    pub(crate) fn lock(&mut self) -> Result<(), Status> {
        match self.lifecycle() {
            Lifecycle::Locked => Err(Status::Locked),
            Lifecycle::Provisioned => Ok(self.prot.lock()?),
            _ => Err(Status::NotProvisioned),
        }
    }

    /// `SIGN_CHALLENGE`: signs `SIGN_LABEL || len(label) || label || data`
    /// with the identity key, which never leaves.
    pub(crate) fn sign_challenge(&mut self, label: &[u8], data: &[u8]) -> Result<[u8; 64], Status> {
        self.sign_with_identity(&challenge_digest(label, data))
    }

    /// Runtime service: the TLS 1.3 client CertificateVerify signature over
    /// `transcript_hash` (32 bytes for SHA-256 suites, 48 for SHA-384).
    pub(crate) fn sign_tls13_client(&mut self, transcript_hash: &[u8]) -> Result<[u8; 64], Status> {
        if transcript_hash.len() != 32 && transcript_hash.len() != 48 {
            return Err(Status::BadRequest);
        }
        self.sign_with_identity(&tls13_client_digest(transcript_hash))
    }

    fn sign_with_identity(&mut self, digest: &[u8; 32]) -> Result<[u8; 64], Status> {
        let mut scalar = Zeroizing::new([0u8; 32]);
        if self.prot.read(Field::IdentityKey, &mut scalar[..]).ok() != Some(32)
            || !self.prot.is_written(Field::CertChain)
        {
            return Err(Status::NotProvisioned);
        }
        crypto::sign_prehash(&scalar[..], digest).ok_or(Status::NotProvisioned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (i, b) in d.iter().enumerate() {
            out[2 * i] = b"0123456789abcdef"[(b >> 4) as usize];
            out[2 * i + 1] = b"0123456789abcdef"[(b & 15) as usize];
        }
        out
    }

    /// The worked examples of docs/formats.md §11.5.
    #[test]
    fn signed_messages_match_the_documented_examples() {
        assert_eq!(
            &hex(challenge_digest(b"auth", b"nonce")),
            b"6a1dd87e2b5c29e2ba840244c3a9009caa31cad1c5cad10737fd7c844f4e008b"
        );
        assert_eq!(
            &hex(tls13_client_digest(&[0x5a; 32])),
            b"41ba37d9cfd6d0917b85cd48c68661a0ff7961a414079c84f3b907006a4ae29f"
        );
    }
}
