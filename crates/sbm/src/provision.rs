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
        if crypto::public_key(&product[..]).is_none() {
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
        let mut scalar = Zeroizing::new([0u8; 32]);
        if self.prot.read(Field::IdentityKey, &mut scalar[..]).ok() != Some(32)
            || !self.prot.is_written(Field::CertChain)
        {
            return Err(Status::NotProvisioned);
        }
        crypto::sign_prehash(&scalar[..], &challenge_digest(label, data))
            .ok_or(Status::NotProvisioned)
    }
}
