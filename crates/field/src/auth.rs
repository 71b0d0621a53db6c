//! Mutual authentication between two provisioned devices, or a device and a
//! server (issue 5; seed 003, section IV, "mutual authentication use case";
//! wire format in `docs/formats.md` §19, code in
//! [`trustchain_formats::auth`]).
//!
//! ```text
//! initiator                                             responder
//!   hello    [1, 1, nonce-i, chain-i]            ──►
//!                                                      checks chain-i, signs TH
//!            ◄──  [2, 1, nonce-i, nonce-r, chain-r, sig-r]   response
//!   checks nonce-i, chain-r, sig-r; signs TH
//!   finish   [3, nonce-r, sig-i]                 ──►
//!                                                      checks nonce-r, sig-i
//! TH = SHA-256(["tc-auth-1", 1, nonce-i, nonce-r, chain-i, chain-r, context])
//! ```
//!
//! Each side proves it holds the private key of the leaf of its chain by
//! signing the transcript hash `TH` through the SBM's SIGN_CHALLENGE
//! service (§11.5) with its role's label. `TH` covers the protocol version,
//! both fresh nonces and both chains, so a signature is good for one session
//! between these two identities in this role only: a replayed message
//! carries the nonce of another session ([`Reason::StaleNonce`]), a relayed
//! one was signed over another transcript ([`Reason::BadSignature`]), and a
//! reflected one shows the verifier its own certificate
//! ([`Reason::Reflected`]).
//!
//! The two ends are [`Endpoint`]s: [`SbmEndpoint`] is a device's application
//! (chain validation by the SBM's VALIDATE_PEER_CHAIN, signatures by
//! SIGN_CHALLENGE; the private key never leaves the SBM), [`KeystoreEndpoint`]
//! a server holding its key in a keystore (chain validation by
//! rustls-webpki). Both run the same states: [`Initiator`] then
//! [`AwaitResponse`], and [`Responder`] then [`AwaitFinish`]; a transition
//! consumes the state, and only the checking code makes an
//! [`Authenticated`].
//!
//! The checks, in order, on a chain received (§19.5): chain validation to
//! the OEM root this side holds (rustls-webpki, in the SBM on a device),
//! reflection, the OEM ID, the product ID, then revocation when the policy
//! holds CRLs. The SBM has no CRL support: the device's application checks
//! revocation on the host side with rustls-webpki's CRL support, against the
//! root the device holds.
use std::fmt;

use trustchain_formats::auth::{
    self as wire, message_type, msg, Finish, Hello, Response, Transcript, NONCE_LEN,
};
use trustchain_formats::{FormatError, ProductId};

mod endpoint;
pub mod sim;
mod verify;

pub use endpoint::{Endpoint, KeystoreEndpoint, SbmEndpoint};
pub use verify::{challenge_message, read_crls, CertIdentity};

/// Why a peer was refused. Each reason has a stable code (§19.6), shown in
/// the CLI and JSON output; the codes never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A message does not parse: not deterministic CBOR, out of bounds,
    /// truncated, trailing bytes.
    Malformed = 1,
    /// A well-formed message of another type than the one expected next.
    UnexpectedMessage = 2,
    /// The peer speaks another protocol version.
    ProtocolVersion = 3,
    /// The peer's chain does not lead to the OEM root this side holds.
    UnknownRoot = 4,
    /// A certificate of the peer's chain is expired or not yet valid.
    Expired = 5,
    /// A certificate of the peer's chain is revoked by a CRL this side holds.
    Revoked = 6,
    /// The peer's certificate is for another OEM (or names none).
    WrongOem = 7,
    /// The peer's certificate is for a product this side does not accept.
    WrongProduct = 8,
    /// The peer's transcript signature does not verify: it was made over
    /// another transcript (relay, tampering) or by another key.
    BadSignature = 9,
    /// The message answers another session's nonce (replay).
    StaleNonce = 10,
    /// The peer presented this side's own certificate (reflection).
    Reflected = 11,
    /// A certificate signature in the peer's chain does not verify.
    ChainBadSignature = 12,
    /// The peer's chain is malformed or not valid for client
    /// authentication (a certificate does not parse, wrong key usage, not
    /// P-256, a CA as leaf).
    InvalidChain = 13,
    /// A CRL this side holds does not verify, is past its nextUpdate, or
    /// does not parse: revocation cannot be checked, so the peer is refused.
    BadCrl = 14,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 14] = [
        Reason::Malformed,
        Reason::UnexpectedMessage,
        Reason::ProtocolVersion,
        Reason::UnknownRoot,
        Reason::Expired,
        Reason::Revoked,
        Reason::WrongOem,
        Reason::WrongProduct,
        Reason::BadSignature,
        Reason::StaleNonce,
        Reason::Reflected,
        Reason::ChainBadSignature,
        Reason::InvalidChain,
        Reason::BadCrl,
    ];

    /// The stable code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reason of a code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The stable name (kebab-case, for JSON).
    pub fn name(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnexpectedMessage => "unexpected-message",
            Reason::ProtocolVersion => "protocol-version",
            Reason::UnknownRoot => "unknown-root",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::WrongOem => "wrong-oem",
            Reason::WrongProduct => "wrong-product",
            Reason::BadSignature => "bad-signature",
            Reason::StaleNonce => "stale-nonce",
            Reason::Reflected => "reflected",
            Reason::ChainBadSignature => "chain-bad-signature",
            Reason::InvalidChain => "invalid-chain",
            Reason::BadCrl => "bad-crl",
        }
    }

    /// What it means.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Malformed => "the message does not parse",
            Reason::UnexpectedMessage => "the message is not the one the protocol expects next",
            Reason::ProtocolVersion => "the peer speaks another protocol version",
            Reason::UnknownRoot => "the peer's chain does not lead to our OEM root",
            Reason::Expired => "a certificate of the peer's chain is expired or not yet valid",
            Reason::Revoked => "the peer's certificate (or its issuer) is revoked",
            Reason::WrongOem => "the peer's certificate is for another OEM",
            Reason::WrongProduct => "the peer's certificate is for a product we do not accept",
            Reason::BadSignature => "the peer's signature does not cover this session's transcript",
            Reason::StaleNonce => "the message answers another session's nonce (replay)",
            Reason::Reflected => "the peer presented our own certificate (reflection)",
            Reason::ChainBadSignature => "a certificate signature in the peer's chain is bad",
            Reason::InvalidChain => {
                "the peer's chain is malformed or not valid for client authentication"
            }
            Reason::BadCrl => "a CRL we hold is invalid or out of date",
        }
    }

    /// What the operator can do.
    pub fn hint(self) -> &'static str {
        match self {
            Reason::Malformed | Reason::UnexpectedMessage | Reason::BadSignature
            | Reason::StaleNonce | Reason::Reflected => {
                "the exchange was corrupted, replayed or tampered with; start a new session, and suspect the channel if it recurs"
            }
            Reason::ProtocolVersion => "update the peer's application to protocol tc-auth-1",
            Reason::UnknownRoot => "the peer belongs to another OEM root; only devices provisioned under the same root authenticate each other",
            Reason::Expired => "check the clock (--now) and the validity of the peer's certificates",
            Reason::Revoked => "the OEM revoked this device; it must not be trusted",
            Reason::WrongOem => "the peer's certificate names another OEM ID",
            Reason::WrongProduct => "allow the peer's product with --product N, if it should talk to this one",
            Reason::ChainBadSignature | Reason::InvalidChain => {
                "the peer's certificates are damaged or were not issued by the OEM's CAs"
            }
            Reason::BadCrl => {
                "use a current CRL signed by the OEM's CA: at the OEM, `trustchain oem revoke OEM_DIR --refresh` re-signs expired CRLs; give this side the new OEM_DIR/crl.pem (--crl)"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {}, {})",
            self.describe(),
            self.code(),
            self.name()
        )
    }
}

/// Why an authentication failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer is refused; what it sent does not authenticate it. `detail`
    /// is for the operator's log (the peer learns nothing from this side
    /// but the end of the session).
    #[error("{reason}: {detail}")]
    Refused {
        /// Why.
        reason: Reason,
        /// The specifics: field, expected, found.
        detail: String,
    },
    /// This side's device refused a request or the link failed.
    #[error("this side's device: {0}")]
    Device(#[from] trustchain_programmer::client::Error),
    /// This side's key store failed to sign.
    #[error("this side's key store: {0}")]
    KeyStore(String),
    /// This side cannot take part: its own chain or root is unusable, or
    /// the policy is wrong.
    #[error("this side's identity: {0}")]
    Identity(String),
}

impl Error {
    /// The refusal reason, if the peer was refused.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    pub(crate) fn refused(reason: Reason, detail: impl Into<String>) -> Self {
        Error::Refused {
            reason,
            detail: detail.into(),
        }
    }
}

/// A nonce: 32 bytes that must be fresh for every session (§19.2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// 32 bytes from the operating system's CSPRNG (aws-lc-rs).
    pub fn random() -> Result<Self, Error> {
        let mut n = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut n)
            .map_err(|_| Error::Identity("no randomness for the nonce".into()))?;
        Ok(Self(n))
    }

    /// Fixed bytes. Only for test vectors: a nonce used twice makes replays
    /// possible.
    pub fn from_bytes(bytes: [u8; NONCE_LEN]) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex::encode(self.0))
    }
}

/// What one side accepts (§19.5).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Products whose devices this side talks to. `None`: its own product
    /// only. The OEM is always this side's own (from its leaf).
    pub products: Option<Vec<ProductId>>,
    /// DER X.509 CRLs to check the peer's chain against (leaf and
    /// intermediates). Empty: no revocation check.
    pub crls: Vec<Vec<u8>>,
    /// The time, Unix seconds, at which certificates must be valid (the SBM
    /// has no clock: the application supplies it).
    pub now: u64,
    /// Channel binding both applications agree on out of band (0 to 64
    /// bytes, in the transcript, never sent): for example a hash of the
    /// transport session, so that the authentication belongs to it.
    pub context: Vec<u8>,
}

impl Policy {
    /// Own product only, no CRL, at `now`, no context.
    pub fn at(now: u64) -> Self {
        Self {
            products: None,
            crls: vec![],
            now,
            context: vec![],
        }
    }

    /// The current system time.
    pub fn now() -> Self {
        Self::at(trustchain_oem::audit::unix_now())
    }
}

/// A peer that authenticated: its validated chain and what its leaf says.
/// Only the checking code of this module makes one.
#[derive(Debug, Clone)]
pub struct Authenticated {
    peer: CertIdentity,
    chain: Vec<Vec<u8>>,
    transcript_hash: [u8; 32],
}

impl Authenticated {
    /// The peer's identity, from its validated leaf.
    pub fn peer(&self) -> &CertIdentity {
        &self.peer
    }
    /// The peer's chain, leaf first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
    /// The transcript hash both signatures cover (the same on both sides:
    /// a session identifier).
    pub fn transcript_hash(&self) -> &[u8; 32] {
        &self.transcript_hash
    }
}

/// A chain that passed every check of §19.5 but the signature: the proof
/// value the signature check requires.
struct CheckedPeer {
    identity: CertIdentity,
    chain: Vec<Vec<u8>>,
}

/// This side: its endpoint, what its own leaf says, its policy.
struct Side<'e> {
    endpoint: &'e mut dyn Endpoint,
    me: CertIdentity,
    policy: Policy,
}

impl<'e> Side<'e> {
    fn new(endpoint: &'e mut dyn Endpoint, policy: Policy) -> Result<Self, Error> {
        if policy.context.len() > wire::MAX_CONTEXT_LEN {
            return Err(Error::Identity(format!(
                "the context is {} bytes, above the maximum of {}",
                policy.context.len(),
                wire::MAX_CONTEXT_LEN
            )));
        }
        let me = endpoint.identity().clone();
        if me.oem_id.is_none() {
            return Err(Error::Identity(
                "this side's certificate carries no OEM ID".into(),
            ));
        }
        if policy.products.is_none() && me.product_id.is_none() {
            return Err(Error::Identity(
                "this side's certificate carries no product ID: give the allowed products".into(),
            ));
        }
        Ok(Self {
            endpoint,
            me,
            policy,
        })
    }

    fn chain_refs(&self) -> Vec<&[u8]> {
        self.endpoint.chain().iter().map(Vec::as_slice).collect()
    }

    /// §19.5, steps 4 to 8: the peer's chain, before any signature.
    fn check_peer(&mut self, chain: &[&[u8]]) -> Result<CheckedPeer, Error> {
        // Step 4: path validation to the OEM root this side holds (the
        // SBM's VALIDATE_PEER_CHAIN on a device, rustls-webpki on a server).
        let key = self.endpoint.validate_chain(chain, self.policy.now)?;
        let identity = CertIdentity::from_leaf(chain[0])
            .map_err(|e| Error::refused(Reason::InvalidChain, format!("peer leaf: {e}")))?;
        if identity.public_key != key {
            return Err(Error::refused(
                Reason::InvalidChain,
                "the validated key is not the leaf's",
            ));
        }
        // Step 5: reflection. Our own certificate coming back is our own
        // message (or signature) being played back to us.
        if identity.public_key == self.me.public_key {
            return Err(Error::refused(
                Reason::Reflected,
                "the peer's leaf carries this side's own public key",
            ));
        }
        // Step 6: same OEM.
        if identity.oem_id != self.me.oem_id {
            return Err(Error::refused(
                Reason::WrongOem,
                format!(
                    "the peer's certificate names OEM {}, this side is OEM {}",
                    show(identity.oem_id),
                    show(self.me.oem_id)
                ),
            ));
        }
        // Step 7: an allowed product.
        let allowed: Vec<ProductId> = match &self.policy.products {
            Some(p) => p.clone(),
            None => self.me.product_id.into_iter().collect(),
        };
        if !identity.product_id.is_some_and(|p| allowed.contains(&p)) {
            return Err(Error::refused(
                Reason::WrongProduct,
                format!(
                    "the peer's certificate names product {}, allowed: {}",
                    show(identity.product_id),
                    allowed
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // Step 8: revocation, by the application (the SBM has no CRLs).
        if !self.policy.crls.is_empty() {
            verify::check_revocation(
                chain,
                self.endpoint.root(),
                &self.policy.crls,
                self.policy.now,
            )?;
        }
        Ok(CheckedPeer {
            identity,
            chain: chain.iter().map(|c| c.to_vec()).collect(),
        })
    }

    /// Step 9: the peer's signature over this session's transcript hash.
    fn check_signature(
        &self,
        peer: CheckedPeer,
        label: &str,
        th: [u8; 32],
        signature: &[u8; 64],
    ) -> Result<Authenticated, Error> {
        if !verify::verify_challenge(&peer.identity.public_key, label, &th, signature) {
            return Err(Error::refused(
                Reason::BadSignature,
                format!("the {label} signature does not verify over this session's transcript"),
            ));
        }
        Ok(Authenticated {
            peer: peer.identity,
            chain: peer.chain,
            transcript_hash: th,
        })
    }
}

fn show<T: fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

/// Steps 1 to 3: the type, then the version, then the rest.
fn parse<'a, T>(
    bytes: &'a [u8],
    expected: u64,
    parse: fn(&'a [u8]) -> Result<T, FormatError>,
) -> Result<T, Error> {
    let ty = message_type(bytes).map_err(|e| Error::refused(Reason::Malformed, e.to_string()))?;
    if ty != expected {
        return Err(Error::refused(
            Reason::UnexpectedMessage,
            format!("message type {ty}, expected {expected}"),
        ));
    }
    parse(bytes).map_err(|e| match e {
        FormatError::UnsupportedVersion { found } => Error::refused(
            Reason::ProtocolVersion,
            format!("version {found}, this side speaks {}", wire::VERSION),
        ),
        e => Error::refused(Reason::Malformed, e.to_string()),
    })
}

fn transcript_hash(
    nonce_i: &[u8; NONCE_LEN],
    nonce_r: &[u8; NONCE_LEN],
    chain_i: &[&[u8]],
    chain_r: &[&[u8]],
    context: &[u8],
) -> [u8; 32] {
    let t = Transcript {
        nonce_i,
        nonce_r,
        chain_i,
        chain_r,
        context,
    };
    verify::sha256(&t.to_vec())
}

fn encode_err(e: FormatError) -> Error {
    Error::Identity(format!("this side's chain cannot be sent: {e}"))
}

/// The initiator, before it sends `hello`.
pub struct Initiator;

impl Initiator {
    /// Starts a session: returns the state awaiting the response and the
    /// `hello` to send.
    pub fn start(
        endpoint: &mut dyn Endpoint,
        policy: Policy,
        nonce: Nonce,
    ) -> Result<(AwaitResponse<'_>, Vec<u8>), Error> {
        let side = Side::new(endpoint, policy)?;
        let hello = wire::encode_hello(nonce.bytes(), &side.chain_refs()).map_err(encode_err)?;
        Ok((AwaitResponse { side, nonce }, hello))
    }
}

/// The initiator, `hello` sent, awaiting `response`.
pub struct AwaitResponse<'e> {
    side: Side<'e>,
    nonce: Nonce,
}

impl AwaitResponse<'_> {
    /// Checks the `response` (§19.5) and signs: returns the authenticated
    /// responder and the `finish` to send. Any error ends the session.
    pub fn receive(mut self, response: &[u8]) -> Result<(Authenticated, Vec<u8>), Error> {
        let r = parse(response, msg::RESPONSE, Response::parse)?;
        if r.nonce_i != self.nonce.bytes() {
            return Err(Error::refused(
                Reason::StaleNonce,
                "the response answers another initiator nonce",
            ));
        }
        let peer = self.side.check_peer(r.chain.certs())?;
        let mine = self.side.chain_refs();
        let th = transcript_hash(
            self.nonce.bytes(),
            r.nonce_r,
            &mine,
            r.chain.certs(),
            &self.side.policy.context,
        );
        let done = self
            .side
            .check_signature(peer, wire::LABEL_RESPONDER, th, r.signature)?;
        let sig = self.side.endpoint.sign(wire::LABEL_INITIATOR, &th)?;
        Ok((done, wire::encode_finish(r.nonce_r, &sig)))
    }
}

impl fmt::Debug for AwaitResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwaitResponse")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// The responder, on receiving `hello`.
pub struct Responder;

impl Responder {
    /// Checks the `hello` (§19.5) and signs: returns the state awaiting
    /// `finish` and the `response` to send.
    pub fn receive<'e>(
        endpoint: &'e mut dyn Endpoint,
        policy: Policy,
        nonce: Nonce,
        hello: &[u8],
    ) -> Result<(AwaitFinish<'e>, Vec<u8>), Error> {
        let mut side = Side::new(endpoint, policy)?;
        let h = parse(hello, msg::HELLO, Hello::parse)?;
        let peer = side.check_peer(h.chain.certs())?;
        let mine: Vec<Vec<u8>> = side.endpoint.chain().to_vec();
        let mine: Vec<&[u8]> = mine.iter().map(Vec::as_slice).collect();
        let th = transcript_hash(
            h.nonce,
            nonce.bytes(),
            h.chain.certs(),
            &mine,
            &side.policy.context,
        );
        let sig = side.endpoint.sign(wire::LABEL_RESPONDER, &th)?;
        let response =
            wire::encode_response(h.nonce, nonce.bytes(), &mine, &sig).map_err(encode_err)?;
        Ok((
            AwaitFinish {
                side,
                nonce,
                peer,
                th,
            },
            response,
        ))
    }
}

/// The responder, `response` sent, awaiting `finish`.
pub struct AwaitFinish<'e> {
    side: Side<'e>,
    nonce: Nonce,
    peer: CheckedPeer,
    th: [u8; 32],
}

impl fmt::Debug for AwaitFinish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwaitFinish")
            .field("nonce", &self.nonce)
            .field("peer", &self.peer.identity)
            .finish_non_exhaustive()
    }
}

impl AwaitFinish<'_> {
    /// Checks the `finish`: returns the authenticated initiator.
    pub fn receive(self, finish: &[u8]) -> Result<Authenticated, Error> {
        let f = parse(finish, msg::FINISH, Finish::parse)?;
        if f.nonce_r != self.nonce.bytes() {
            return Err(Error::refused(
                Reason::StaleNonce,
                "the finish answers another responder nonce",
            ));
        }
        self.side
            .check_signature(self.peer, wire::LABEL_INITIATOR, self.th, f.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_distinct() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.code() as usize, i + 1);
            assert_eq!(Reason::from_code(r.code()), Some(*r));
        }
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(Reason::from_code(15), None);
    }
}
