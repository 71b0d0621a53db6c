//! mTLS with the same identities (issue 5, point 2): a device certificate is
//! a TLS 1.3 client certificate, and its private key never leaves the SBM.
//!
//! rustls asks a [`rustls::sign::Signer`] for the CertificateVerify
//! signature. On the device side that signer ([`SbmKey`]) checks that the
//! message is a TLS 1.3 *client* CertificateVerify (RFC 8446 §4.4.3), takes
//! the handshake hash out of it and posts it to whoever owns the device; the
//! owner calls the SBM's `SIGN_TLS13_CLIENT` service (docs/formats.md
//! §11.5), which rebuilds the same message and signs it. A simulated device
//! is single-threaded, so the owner serves these requests on its own thread
//! while the TLS stack runs on another ([`SignRequest`]). On the server side
//! the key is an OEM keystore key ([`KeystoreKey`]).
//!
//! Both sides speak TLS 1.3 only, with ECDSA P-256/SHA-256 and rustls'
//! aws-lc-rs provider; path validation is rustls-webpki's. Device
//! certificates carry no DNS name: client certificates are validated to the
//! root (id-kp-clientAuth), never against a name. The server's certificate
//! is validated against the name or IP address in the URL.
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{RootCertStore, SignatureAlgorithm, SignatureScheme};

/// The context string of a TLS 1.3 client CertificateVerify.
const CLIENT_CONTEXT: &[u8] = b"TLS 1.3, client CertificateVerify";

/// The crypto provider: aws-lc-rs, the same library as the rest of the host side.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

use trustchain_oem::pki::ecdsa_sig_der as ecdsa_der;

/// The handshake hash of a TLS 1.3 client CertificateVerify message, or
/// `None` if `message` is anything else.
pub fn client_verify_hash(message: &[u8]) -> Option<&[u8]> {
    let prefix = 64 + CLIENT_CONTEXT.len() + 1;
    let hash = message.get(prefix..)?;
    (message[..64].iter().all(|&b| b == 0x20)
        && &message[64..64 + CLIENT_CONTEXT.len()] == CLIENT_CONTEXT
        && message[prefix - 1] == 0
        && (hash.len() == 32 || hash.len() == 48))
        .then_some(hash)
}

/// A request from the TLS stack to the device's owner: sign this handshake
/// hash with `SIGN_TLS13_CLIENT`, answer `r || s` (or why not).
pub struct SignRequest {
    /// The handshake hash (32 or 48 bytes).
    pub hash: Vec<u8>,
    /// Where the answer goes.
    pub reply: Sender<Result<[u8; 64], String>>,
}

/// The device's identity key, as rustls sees it: a mailbox to the SBM.
#[derive(Debug, Clone)]
pub struct SbmKey {
    to_owner: Arc<Mutex<Sender<SignRequest>>>,
}

impl SbmKey {
    /// A key and the receiving end its owner serves.
    pub fn new() -> (Self, Receiver<SignRequest>) {
        let (tx, rx) = mpsc::channel();
        (
            Self {
                to_owner: Arc::new(Mutex::new(tx)),
            },
            rx,
        )
    }
}

impl SigningKey for SbmKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for SbmKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let hash = client_verify_hash(message).ok_or_else(|| {
            rustls::Error::General(
                "the SBM signs only TLS 1.3 client CertificateVerify messages".into(),
            )
        })?;
        let (reply, answer) = mpsc::channel();
        self.to_owner
            .lock()
            .map_err(|_| rustls::Error::General("device owner gone".into()))?
            .send(SignRequest {
                hash: hash.to_vec(),
                reply,
            })
            .map_err(|_| rustls::Error::General("device owner gone".into()))?;
        let sig = answer
            .recv()
            .map_err(|_| rustls::Error::General("device owner gone".into()))?
            .map_err(rustls::Error::General)?;
        Ok(ecdsa_der(&sig))
    }
    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// A key of an OEM keystore (the update server's identity), for rustls.
pub struct KeystoreKey(pub Arc<dyn trustchain_oem::keystore::Signer>);

impl std::fmt::Debug for KeystoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeystoreKey")
    }
}

impl SigningKey for KeystoreKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(KeystoreKey(self.0.clone())) as Box<dyn Signer>)
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for KeystoreKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let sig = self
            .0
            .sign(message)
            .map_err(|e| rustls::Error::General(format!("keystore: {e}")))?;
        Ok(ecdsa_der(&sig))
    }
    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// Always the same certificate and key (one identity per side).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        schemes
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// One side's identity for rustls: its chain (leaf first) and its key.
fn certified(chain: &[Vec<u8>], key: impl SigningKey + 'static) -> Fixed {
    Fixed(Arc::new(CertifiedKey::new(
        chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect(),
        Arc::new(key),
    )))
}

fn roots(root_der: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    store
        .add(CertificateDer::from(root_der.to_vec()))
        .map_err(|e| format!("the OEM root is not a usable trust anchor: {e}"))?;
    Ok(Arc::new(store))
}

/// The device's TLS client: trusts only `root_der` for the server, and
/// authenticates with `chain` (leaf first) and the SBM's key.
pub fn client_config(
    root_der: &[u8],
    chain: &[Vec<u8>],
    key: SbmKey,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(root_der)?, provider())
            .build()
            .map_err(|e| e.to_string())?;
    let certified = certified(chain, key);
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(certified));
    Ok(Arc::new(config))
}

/// The server's TLS configuration: requires a client certificate chaining to
/// `root_der` (id-kp-clientAuth), not revoked by any of `crls`; presents
/// `chain` with `key`.
///
/// Revocation is checked for every certificate of the client's chain that
/// has a CRL from its issuer in `crls` (so revoking a package's issuing CA
/// refuses all its devices); a certificate whose issuer published no CRL
/// is not refused for that (an OEM that never revoked has no CRL).
///
/// A CRL is honoured only until its nextUpdate
/// (`enforce_revocation_expiration`): once it has expired, every client
/// whose chain that CRL covers is refused, so that an old CRL cannot stand
/// in for a newer one for ever. A CRL already expired now is refused here,
/// naming its issuer and nextUpdate ([`crate::crl::check_current`]); the
/// operator refreshes the CRLs before nextUpdate and restarts the server.
pub fn server_config(
    root_der: &[u8],
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: &[Vec<u8>],
    key: KeystoreKey,
) -> Result<Arc<rustls::ServerConfig>, String> {
    crate::crl::check_current(
        "the server's CRLs",
        &crls,
        trustchain_oem::audit::unix_now(),
    )?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(root_der)?, provider())
        .with_crls(crls)
        .allow_unknown_revocation_status()
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| e.to_string())?;
    let certified = certified(chain, key);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(certified));
    Ok(Arc::new(config))
}

/// Why a TLS peer was refused, in words, from a rustls error.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::Revoked) => "the certificate is revoked".into(),
        E::InvalidCertificate(C::UnknownIssuer) => {
            "the certificate does not chain to the trusted OEM root".into()
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the certificate is expired".into()
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for this name".into()
        }
        E::InvalidCertificate(C::ExpiredRevocationListContext { next_update, .. }) => format!(
            "this side's CRL for the certificate's issuer expired at {} (its nextUpdate), so \
             revocation cannot be checked; {}",
            crate::crl::rfc3339(next_update.as_secs()),
            crate::crl::REFRESH_HINT
        ),
        E::InvalidCertificate(C::ExpiredRevocationList) => format!(
            "this side's CRL for the certificate's issuer is past its nextUpdate, so revocation \
             cannot be checked; {}",
            crate::crl::REFRESH_HINT
        ),
        E::NoCertificatesPresented => "the client presented no certificate".into(),
        E::AlertReceived(A::CertificateRevoked) => {
            "the server refused this device's certificate: revoked".into()
        }
        E::AlertReceived(A::UnknownCA) => {
            "the server refused this device's certificate: it does not chain to the server's \
             root (or the server's CRL for its issuer has expired)"
                .into()
        }
        E::AlertReceived(A::CertificateExpired) => {
            "the server refused this device's certificate: expired".into()
        }
        E::AlertReceived(a) => format!("the peer refused the handshake ({a:?})"),
        other => other.to_string(),
    }
}

/// The rustls error inside an I/O error, if that is what it is.
pub fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_certificate_verify_messages_yield_a_hash() {
        let mut m = vec![0x20u8; 64];
        m.extend_from_slice(CLIENT_CONTEXT);
        m.push(0);
        m.extend_from_slice(&[7; 32]);
        assert_eq!(client_verify_hash(&m), Some(&[7u8; 32][..]));
        let mut m48 = m[..98].to_vec();
        m48.extend_from_slice(&[8; 48]);
        assert_eq!(client_verify_hash(&m48), Some(&[8u8; 48][..]));
        // A server CertificateVerify, a short hash, a changed prefix.
        let mut server = vec![0x20u8; 64];
        server.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
        server.extend_from_slice(&[7; 32]);
        assert_eq!(client_verify_hash(&server), None);
        assert_eq!(client_verify_hash(&m[..m.len() - 1]), None);
        let mut bad = m.clone();
        bad[3] = 0x21;
        assert_eq!(client_verify_hash(&bad), None);
        assert_eq!(client_verify_hash(b"TCSBM-SIGN-1"), None);
    }
}
