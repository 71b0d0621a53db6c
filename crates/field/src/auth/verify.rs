//! The host's half of the checks: path validation and revocation by
//! rustls-webpki, signatures by aws-lc-rs, certificate fields by x509-cert.
//! Nothing here is home-made cryptography or path building.
use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use trustchain_formats::{OemId, ProductId};
use trustchain_oem::pki;
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, ExpirationPolicy, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;

use super::{Error, Reason};

/// The SIGN_CHALLENGE prefix (§11.5).
const SIGN_PREFIX: &[u8] = trustchain_sbm::provision::SIGN_LABEL;

/// ECDSA P-256 with SHA-256 only, as in the SBM (§10.4, VALIDATE_PEER_CHAIN).
static ALGS: &[&dyn SignatureVerificationAlgorithm] = &[webpki::aws_lc_rs::ECDSA_P256_SHA256];

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The message SIGN_CHALLENGE signs (§11.5):
/// `"TCSBM-SIGN-1" || u8(len(label)) || label || data`.
pub fn challenge_message(label: &str, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_PREFIX.len() + 1 + label.len() + data.len());
    m.extend_from_slice(SIGN_PREFIX);
    m.push(label.len() as u8);
    m.extend_from_slice(label.as_bytes());
    m.extend_from_slice(data);
    m
}

/// Verifies a challenge signature (`r || s`) by `key` (SEC1) with aws-lc-rs.
pub(crate) fn verify_challenge(key: &[u8; 65], label: &str, th: &[u8; 32], sig: &[u8; 64]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(&challenge_message(label, th), sig)
        .is_ok()
}

/// What a leaf certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// Subject DN.
    pub subject: String,
    /// Certificate serial number, hex.
    pub serial: String,
    /// The subject's serialNumber attribute (the device UID in the default
    /// template), if any.
    pub uid: Option<String>,
    /// OEM ID extension.
    pub oem_id: Option<OemId>,
    /// Product ID extension.
    pub product_id: Option<ProductId>,
    /// The P-256 public key, SEC1.
    pub public_key: [u8; 65],
}

impl CertIdentity {
    /// As JSON: subject, serial, uid, oem_id, product_id, public_key (hex).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "subject": self.subject,
            "serial": self.serial,
            "uid": self.uid,
            "oem_id": self.oem_id.map(OemId::get),
            "product_id": self.product_id.map(ProductId::get),
            "public_key": hex::encode(self.public_key),
        })
    }

    /// Reads a leaf (DER).
    pub fn from_leaf(der: &[u8]) -> Result<Self, String> {
        let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
        let key = pki::cert_public_key(&cert).ok_or("the key is not P-256")?;
        // The subject, formatted here rather than by x509-cert's Display,
        // which looks every attribute name up in the whole OID database (a
        // third of a server's time per authentication).
        let mut parts = vec![];
        let mut uid = None;
        for rdn in cert.tbs_certificate.subject.0.iter().rev() {
            for atv in rdn.0.iter() {
                let value = text(&atv.value);
                let name = match atv.oid {
                    CN => "CN",
                    O => "O",
                    OU => "OU",
                    C => "C",
                    SERIAL_NUMBER => {
                        uid = value.clone();
                        "SERIALNUMBER"
                    }
                    _ => {
                        parts.push(atv.to_string());
                        continue;
                    }
                };
                match value {
                    Some(v) => parts.push(format!("{name}={v}")),
                    None => parts.push(atv.to_string()),
                }
            }
        }
        Ok(Self {
            subject: parts.join(","),
            serial: hex::encode(cert.tbs_certificate.serial_number.as_bytes()),
            uid,
            oem_id: pki::cert_oem_id(&cert),
            product_id: pki::cert_product_id(&cert),
            public_key: key.0,
        })
    }
}

/// The CRLs of a file: one DER CRL, or any number of PEM ones
/// (`-----BEGIN X509 CRL-----`, as in `OEM_DIR/crl.pem`). Each must parse.
pub fn read_crls(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    let ders = if bytes.starts_with(b"-----BEGIN") {
        rustls_pki_types::CertificateRevocationListDer::pem_slice_iter(bytes)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM X509 CRLs: {e}"))?
    } else {
        vec![bytes.to_vec()]
    };
    if ders.is_empty() {
        return Err("no X509 CRL in the PEM file".into());
    }
    for (i, der) in ders.iter().enumerate() {
        BorrowedCertRevocationList::from_der(der)
            .map_err(|e| format!("CRL {}: not a DER CRL: {e:?}", i + 1))?;
    }
    Ok(ders)
}

const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const C: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");

/// A UTF8String or PrintableString attribute value.
fn text(v: &x509_cert::attr::AttributeValue) -> Option<String> {
    v.decode_as::<x509_cert::der::asn1::Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            v.decode_as::<x509_cert::der::asn1::PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .ok()
}

fn time(now: u64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(now))
}

/// Maps a rustls-webpki refusal to a reason.
fn reason(e: &webpki::Error) -> Reason {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => Reason::UnknownRoot,
        E::CertExpired { .. } | E::CertNotValidYet { .. } => Reason::Expired,
        E::InvalidSignatureForPublicKey => Reason::ChainBadSignature,
        E::CertRevoked => Reason::Revoked,
        E::InvalidCrlSignatureForPublicKey
        | E::CrlExpired { .. }
        | E::IssuerNotCrlSigner
        | E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedCrlIssuingDistributionPoint
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
        | E::InvalidCrlNumber
        | E::UnknownRevocationStatus => Reason::BadCrl,
        _ => Reason::InvalidChain,
    }
}

/// The SPKI of a P-256 key (id-ecPublicKey, prime256v1, BIT STRING), up to
/// the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The refusal's detail for the operator: webpki's error, or for an
/// expired CRL which one (issuer, number), when it expired and what to do.
fn detail(e: &webpki::Error, crl_ders: &[Vec<u8>]) -> String {
    let webpki::Error::CrlExpired { time, next_update } = e else {
        return format!("{e:?}");
    };
    let (now, next) = (time.as_secs(), next_update.as_secs());
    // webpki names the time, not the CRL: find the CRL that expired then.
    let expired = crl_ders
        .iter()
        .filter_map(|d| crate::crl::info(d).ok())
        .find(|i| i.next_update == next && i.expired_at(now));
    let what = match expired {
        Some(info) => crate::crl::describe_expired(&info, now),
        None => format!(
            "a CRL expired at {} (its nextUpdate), and the time here is {}",
            crate::crl::rfc3339(next),
            crate::crl::rfc3339(now)
        ),
    };
    format!(
        "{what}: a CRL past its nextUpdate may be an old one replayed, so revocation cannot be \
         checked and the peer is not trusted; {}",
        crate::crl::REFRESH_HINT
    )
}

fn verify(
    chain: &[&[u8]],
    root: &[u8],
    now: u64,
    crls: Option<(&[CertRevocationList<'_>], &[Vec<u8>])>,
) -> Result<[u8; 65], Error> {
    let root = CertificateDer::from(root);
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| Error::Identity(format!("this side's OEM root: {e}")))?;
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| Error::refused(Reason::InvalidChain, "an empty chain"))?;
    let leaf = CertificateDer::from(*leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| Error::refused(Reason::InvalidChain, format!("peer leaf: {e}")))?;
    let intermediates: Vec<CertificateDer<'_>> =
        rest.iter().map(|c| CertificateDer::from(*c)).collect();
    let (parsed, ders) = crls.unwrap_or((&[], &[]));
    let refs: Vec<&CertRevocationList<'_>> = parsed.iter().collect();
    let revocation = match RevocationOptionsBuilder::new(&refs) {
        Ok(b) => Some(
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(ExpirationPolicy::Enforce)
                .build(),
        ),
        Err(_) => None,
    };
    ee.verify_for_usage(
        ALGS,
        &[anchor],
        &intermediates,
        time(now),
        webpki::KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map_err(|e| Error::refused(reason(&e), detail(&e, ders)))?;
    // The validated leaf's key, from the SPKI webpki parsed.
    let spki = ee.subject_public_key_info();
    spki.as_ref()
        .strip_prefix(&P256_SPKI_PREFIX[..])
        .and_then(|k| <[u8; 65]>::try_from(k).ok())
        .ok_or_else(|| Error::refused(Reason::InvalidChain, "the peer's key is not P-256"))
}

/// Path validation of `chain` (leaf first) to `root` at `now`, for client
/// authentication, as the SBM's VALIDATE_PEER_CHAIN does it; returns the
/// leaf's key.
pub(crate) fn validate(chain: &[&[u8]], root: &[u8], now: u64) -> Result<[u8; 65], Error> {
    verify(chain, root, now, None)
}

/// Revocation of every certificate of `chain` (leaf and intermediates)
/// with rustls-webpki's CRL support: a CRL covers the certificates its
/// issuer issued; a certificate whose issuer has no CRL here is accepted
/// (`UnknownStatusPolicy::Allow`); a CRL past its nextUpdate at `now` (the
/// same time the chain is validated at) refuses with [`Reason::BadCrl`]
/// and a detail naming the CRL, its nextUpdate and the refresh
/// (`ExpirationPolicy::Enforce`, RFC 5280 §5.1.2.5: without it, an old CRL
/// replayed in place of a newer one would hide every later revocation for
/// ever). Path validation runs again, as webpki checks revocation along the
/// path it builds.
pub(crate) fn check_revocation(
    chain: &[&[u8]],
    root: &[u8],
    crls: &[Vec<u8>],
    now: u64,
) -> Result<(), Error> {
    let parsed = crls
        .iter()
        .enumerate()
        .map(|(i, der)| {
            BorrowedCertRevocationList::from_der(der)
                .map(CertRevocationList::from)
                .map_err(|e| {
                    Error::refused(
                        Reason::BadCrl,
                        format!("CRL {}: does not parse: {e:?}", i + 1),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    verify(chain, root, now, Some((&parsed, crls))).map(|_| ())
}
