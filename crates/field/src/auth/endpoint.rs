//! The two kinds of end: a device's application talking to its SBM, and a
//! server holding its key in a keystore.
use trustchain_oem::keystore::Signer;
use trustchain_programmer::client::{Error as LinkError, Programmer, Transport};
use trustchain_sbm::Status;

use super::verify::{self, challenge_message, CertIdentity};
use super::{Error, Reason};

/// One end of an authentication: its certificate chain, its trust anchor,
/// its signing key and its chain validator.
pub trait Endpoint {
    /// This side's chain, leaf first (as GET_CERT_CHAIN returns it).
    fn chain(&self) -> &[Vec<u8>];
    /// What this side's leaf says (read once, when the endpoint is made).
    fn identity(&self) -> &CertIdentity;
    /// The OEM root this side trusts (DER).
    fn root(&self) -> &[u8];
    /// Signs `th` under `label` as SIGN_CHALLENGE does (§11.5): ECDSA P-256
    /// over `"TCSBM-SIGN-1" || u8(len(label)) || label || th`.
    fn sign(&mut self, label: &str, th: &[u8; 32]) -> Result<[u8; 64], Error>;
    /// Validates a peer's chain (leaf first) to [`Endpoint::root`] at `now`
    /// for client authentication; returns the leaf's public key (SEC1).
    fn validate_chain(&mut self, chain: &[&[u8]], now: u64) -> Result<[u8; 65], Error>;
}

/// A device's application: the SBM behind `prog` validates and signs; the
/// identity key never leaves it.
pub struct SbmEndpoint<'p, T: Transport> {
    prog: &'p mut Programmer<T>,
    chain: Vec<Vec<u8>>,
    identity: CertIdentity,
    root: Vec<u8>,
}

fn own_identity(chain: &[Vec<u8>]) -> Result<CertIdentity, Error> {
    let leaf = chain
        .first()
        .ok_or_else(|| Error::Identity("no certificate".into()))?;
    CertIdentity::from_leaf(leaf).map_err(|e| Error::Identity(format!("own certificate: {e}")))
}

impl<'p, T: Transport> SbmEndpoint<'p, T> {
    /// Reads the device's chain and root (GET_CERT_CHAIN).
    pub fn new(prog: &'p mut Programmer<T>) -> Result<Self, Error> {
        let (chain, root) = prog.cert_chain()?;
        let identity = own_identity(&chain)?;
        Ok(Self {
            prog,
            chain,
            identity,
            root,
        })
    }

    /// The device's link.
    pub fn programmer(&mut self) -> &mut Programmer<T> {
        self.prog
    }
}

/// Maps the SBM's VALIDATE_PEER_CHAIN refusals (§10.4) to reasons.
fn peer_status(e: LinkError) -> Error {
    let reason = match &e {
        LinkError::Refused(Status::PeerUnknownIssuer) => Reason::UnknownRoot,
        LinkError::Refused(Status::PeerExpired) => Reason::Expired,
        LinkError::Refused(Status::PeerBadSignature) => Reason::ChainBadSignature,
        LinkError::Refused(Status::PeerInvalid) | LinkError::Refused(Status::BadRequest) => {
            Reason::InvalidChain
        }
        _ => return Error::Device(e),
    };
    Error::refused(reason, format!("VALIDATE_PEER_CHAIN: {e}"))
}

impl<T: Transport> Endpoint for SbmEndpoint<'_, T> {
    fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
    fn identity(&self) -> &CertIdentity {
        &self.identity
    }
    fn root(&self) -> &[u8] {
        &self.root
    }
    fn sign(&mut self, label: &str, th: &[u8; 32]) -> Result<[u8; 64], Error> {
        Ok(self.prog.sign_challenge(label, th)?)
    }
    fn validate_chain(&mut self, chain: &[&[u8]], now: u64) -> Result<[u8; 65], Error> {
        let owned: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
        self.prog
            .validate_peer_chain(&owned, now)
            .map_err(peer_status)
    }
}

/// A server: its key in a keystore (any [`Signer`]: sealed, PKCS#11), its
/// chain, and the OEM root it trusts; chains are validated by rustls-webpki
/// with the same rules as the SBM.
pub struct KeystoreEndpoint {
    signer: Box<dyn Signer>,
    chain: Vec<Vec<u8>>,
    identity: CertIdentity,
    root: Vec<u8>,
}

impl KeystoreEndpoint {
    /// `chain` is leaf first; its leaf must certify `signer`'s key.
    pub fn new(signer: Box<dyn Signer>, chain: Vec<Vec<u8>>, root: Vec<u8>) -> Result<Self, Error> {
        let identity = own_identity(&chain)?;
        if identity.public_key != signer.public_key().0 {
            return Err(Error::Identity(
                "the leaf certificate is not for the keystore key".into(),
            ));
        }
        Ok(Self {
            signer,
            chain,
            identity,
            root,
        })
    }
}

impl Endpoint for KeystoreEndpoint {
    fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
    fn identity(&self) -> &CertIdentity {
        &self.identity
    }
    fn root(&self) -> &[u8] {
        &self.root
    }
    fn sign(&mut self, label: &str, th: &[u8; 32]) -> Result<[u8; 64], Error> {
        self.signer
            .sign(&challenge_message(label, th))
            .map_err(|e| Error::KeyStore(e.to_string()))
    }
    fn validate_chain(&mut self, chain: &[&[u8]], now: u64) -> Result<[u8; 65], Error> {
        verify::validate(chain, &self.root, now)
    }
}
