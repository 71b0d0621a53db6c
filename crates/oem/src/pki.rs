//! The OEM's X.509 hierarchy: issuing certificates with rcgen (signatures
//! come from a [`Signer`], so the key may sit in any keystore), reading them
//! with x509-cert, and validating chains with rustls-webpki.
//!
//! ```text
//! root CA (self-signed, pathLen 2, keyCertSign+cRLSign)
//! ├── device CA (pathLen 1): issues per-package issuing CAs / device certs
//! └── mastering certificate (end entity, digitalSignature, EKU codeSigning)
//! ```
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use trustchain_formats::{OemId, ProductId};
use x509_cert::der::{Decode, DecodePem, Encode};

use crate::crypto::{sha256, Entropy, PublicKey, SystemEntropy};
use crate::error::{Error, Result};
use crate::keystore::Signer;

/// The arc of trustchain's private X.509 extensions. trustchain has no IANA
/// Private Enterprise Number yet; until it has, the arc is under RFC 5612's
/// documentation PEN 32473. It is this one constant.
pub const OID_ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 32473, 116];
/// Extension carrying the OEM ID (DER INTEGER): `OID_ARC.1`.
pub const OID_OEM_ID: [u64; 9] = [1, 3, 6, 1, 4, 1, 32473, 116, 1];
/// Extension carrying the product ID (DER INTEGER): `OID_ARC.2`.
pub const OID_PRODUCT_ID: [u64; 9] = [1, 3, 6, 1, 4, 1, 32473, 116, 2];
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER content bytes.
pub const EKU_CODE_SIGNING_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Validity periods (years) of the hierarchy.
pub mod validity {
    /// Root CA.
    pub const ROOT_YEARS: i64 = 20;
    /// Device CA.
    pub const DEVICE_CA_YEARS: i64 = 15;
    /// Mastering certificate.
    pub const MASTERING_YEARS: i64 = 5;
}

/// DER of a non-negative INTEGER.
pub(crate) fn der_uint(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(7);
    let mut body = bytes[first..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0);
    }
    let mut out = vec![0x02, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

/// DER ECDSA-Sig-Value (RFC 3279 §2.2.3) from a fixed `r || s` signature.
pub fn ecdsa_sig_der(fixed: &[u8; 64]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let first = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
        let mut body = v[first..].to_vec();
        if body[0] & 0x80 != 0 {
            body.insert(0, 0);
        }
        let mut out = vec![0x02, body.len() as u8];
        out.extend_from_slice(&body);
        out
    }
    let mut seq = int(&fixed[..32]);
    seq.extend(int(&fixed[32..]));
    let mut out = vec![0x30, seq.len() as u8];
    out.extend(seq);
    out
}

/// Adapts a keystore [`Signer`] to rcgen.
pub(crate) struct RcgenKey<'a>(pub(crate) &'a dyn Signer);

impl rcgen::PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.0.public_key().0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let fixed = self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(ecdsa_sig_der(&fixed))
    }
}

/// A public key rcgen can certify.
struct RcgenPublic<'a>(&'a PublicKey);

impl rcgen::PublicKeyData for RcgenPublic<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.0 .0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// What goes into one certificate of the hierarchy.
pub struct CertSpec {
    /// Subject common name.
    pub common_name: String,
    /// Subject organization.
    pub organization: String,
    /// CA with this path length, or an end entity.
    pub ca_path_len: Option<u8>,
    /// Key usages of an end entity (a CA always gets keyCertSign + cRLSign).
    pub key_usages: Vec<KeyUsagePurpose>,
    /// Extended key usages.
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    /// OEM ID extension.
    pub oem_id: OemId,
    /// Product ID extension, if any.
    pub product_id: Option<ProductId>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// subjectAltName entries (DNS names, IP addresses) of an end entity.
    pub subject_alt_names: Vec<rcgen::SanType>,
}

impl CertSpec {
    /// A CA or end entity valid from an hour ago (clock skew) for `years`.
    pub fn new(common_name: String, organization: String, oem_id: OemId, years: i64) -> Self {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        Self {
            common_name,
            organization,
            ca_path_len: None,
            key_usages: vec![],
            extended_key_usages: vec![],
            oem_id,
            product_id: None,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365 * years + years / 4),
            subject_alt_names: vec![],
        }
    }

    fn params(&self) -> Result<CertificateParams> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        dn.push(DnType::OrganizationName, self.organization.as_str());
        p.distinguished_name = dn;
        p.not_before = self.not_before;
        p.not_after = self.not_after;
        let mut serial = [0u8; 16];
        SystemEntropy.fill(&mut serial)?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        match self.ca_path_len {
            Some(n) => {
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(n));
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            }
            None => {
                p.is_ca = IsCa::ExplicitNoCa;
                p.key_usages = self.key_usages.clone();
            }
        }
        p.extended_key_usages = self.extended_key_usages.clone();
        p.subject_alt_names = self.subject_alt_names.clone();
        p.use_authority_key_identifier_extension = true;
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &OID_OEM_ID,
            der_uint(self.oem_id.get().into()),
        ));
        if let Some(pid) = self.product_id {
            p.custom_extensions.push(CustomExtension::from_oid_content(
                &OID_PRODUCT_ID,
                der_uint(pid.get().into()),
            ));
        }
        Ok(p)
    }
}

/// A certificate together with what an issuer needs to sign under it.
pub struct IssuerCert {
    /// DER of the certificate.
    pub der: Vec<u8>,
    pub(crate) params: CertificateParams,
}

impl IssuerCert {
    /// PEM of the certificate.
    pub fn pem(&self) -> String {
        to_pem(&self.der)
    }
}

/// PEM of a DER certificate.
pub fn to_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

/// PEM with the given label (RFC 7468), 64-column base64.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use x509_cert::der::pem::LineEnding;
    x509_cert::der::pem::encode_string(label, LineEnding::LF, der).unwrap_or_default()
}

/// Self-signs a root CA certificate.
pub fn self_signed(spec: &CertSpec, key: &dyn Signer) -> Result<IssuerCert> {
    let params = spec.params()?;
    let cert = params
        .self_signed(&RcgenKey(key))
        .map_err(|e| Error::Usage(format!("certificate: {e}")))?;
    Ok(IssuerCert {
        der: cert.der().to_vec(),
        params,
    })
}

/// Issues a certificate for `subject_key` under `issuer`.
pub fn issue(
    spec: &CertSpec,
    subject_key: &PublicKey,
    issuer: &IssuerCert,
    issuer_key: &dyn Signer,
) -> Result<IssuerCert> {
    let params = spec.params()?;
    let iss = Issuer::from_params(&issuer.params, RcgenKey(issuer_key));
    let cert = params
        .signed_by(&RcgenPublic(subject_key), &iss)
        .map_err(|e| Error::Usage(format!("certificate: {e}")))?;
    Ok(IssuerCert {
        der: cert.der().to_vec(),
        params,
    })
}

/// Reads one certificate from PEM or DER bytes. PEM may have blank lines
/// or spaces around it (as editors and mail leave them); a PEM file with
/// more than one certificate is refused by name.
pub fn parse_cert(bytes: &[u8]) -> std::result::Result<x509_cert::Certificate, String> {
    if bytes.starts_with(b"-----BEGIN")
        || bytes.iter().take(64).any(|&b| b == b'-') && bytes.is_ascii()
    {
        let text = bytes.trim_ascii();
        let begins = text
            .windows(b"-----BEGIN ".len())
            .filter(|w| w == b"-----BEGIN ")
            .count();
        if begins > 1 {
            return Err(format!(
                "holds {begins} PEM blocks where one certificate is expected (a chain or a bundle?)"
            ));
        }
        x509_cert::Certificate::from_pem(text).map_err(|e| format!("not a PEM certificate: {e}"))
    } else {
        x509_cert::Certificate::from_der(bytes).map_err(|e| format!("not a DER certificate: {e}"))
    }
}

/// The DER of a certificate read from PEM or DER.
pub fn cert_der(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    parse_cert(bytes)?.to_der().map_err(|e| e.to_string())
}

/// The subject public key of a P-256 certificate.
pub fn cert_public_key(cert: &x509_cert::Certificate) -> Option<PublicKey> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    PublicKey::from_sec1(spki.subject_public_key.raw_bytes())
}

fn ext_uint(cert: &x509_cert::Certificate, arc: &[u64]) -> Option<u64> {
    let want: Vec<String> = arc.iter().map(|a| a.to_string()).collect();
    let want = want.join(".");
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id.to_string() == want)
        .and_then(|e| {
            let v = x509_cert::der::asn1::Uint::from_der(e.extn_value.as_bytes()).ok()?;
            let b = v.as_bytes();
            if b.len() > 8 {
                return None;
            }
            Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
        })
}

/// The OEM ID a certificate carries.
pub fn cert_oem_id(cert: &x509_cert::Certificate) -> Option<OemId> {
    ext_uint(cert, &OID_OEM_ID)
        .and_then(|v| u32::try_from(v).ok())
        .and_then(OemId::new)
}

/// The product ID a certificate carries.
pub fn cert_product_id(cert: &x509_cert::Certificate) -> Option<ProductId> {
    ext_uint(cert, &OID_PRODUCT_ID)
        .and_then(|v| u32::try_from(v).ok())
        .and_then(ProductId::new)
}

/// Validates `ee_der` as a code-signing certificate chaining to `root_der`
/// (rustls-webpki: signatures, validity at `now`, CA constraints, EKU).
pub fn validate_code_signing(ee_der: &[u8], root_der: &[u8]) -> std::result::Result<(), String> {
    let root = CertificateDer::from(root_der);
    let anchor =
        webpki::anchor_from_trusted_cert(&root).map_err(|e| format!("root certificate: {e}"))?;
    let ee = CertificateDer::from(ee_der);
    let ee =
        webpki::EndEntityCert::try_from(&ee).map_err(|e| format!("mastering certificate: {e}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::required(EKU_CODE_SIGNING_DER),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

/// A certificate described for people and scripts.
#[derive(Debug, Serialize)]
pub struct CertInfo {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Whether it is a CA, and its path length.
    pub ca: Option<Option<u8>>,
    /// Key usages.
    pub key_usage: Vec<&'static str>,
    /// Extended key usages (OIDs).
    pub extended_key_usage: Vec<String>,
    /// The OEM ID extension.
    pub oem_id: Option<u32>,
    /// The product ID extension.
    pub product_id: Option<u32>,
    /// SHA-256 of the DER.
    pub sha256_fingerprint: String,
    /// The public key, SEC1 hex.
    pub public_key: Option<String>,
    /// Whether subject == issuer.
    pub self_issued: bool,
}

fn rfc3339(t: x509_cert::time::Time) -> String {
    let secs = t.to_unix_duration().as_secs() as i64;
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// Describes a certificate.
pub fn describe(cert: &x509_cert::Certificate) -> CertInfo {
    use x509_cert::ext::pkix::{BasicConstraints as Bc, ExtendedKeyUsage, KeyUsage};
    let tbs = &cert.tbs_certificate;
    let mut ca = None;
    let mut key_usage = vec![];
    let mut eku = vec![];
    for ext in tbs.extensions.iter().flatten() {
        match ext.extn_id.to_string().as_str() {
            "2.5.29.19" => {
                if let Ok(bc) = Bc::from_der(ext.extn_value.as_bytes()) {
                    ca = bc.ca.then_some(bc.path_len_constraint);
                }
            }
            "2.5.29.15" => {
                if let Ok(ku) = KeyUsage::from_der(ext.extn_value.as_bytes()) {
                    let names = [
                        (ku.digital_signature(), "digitalSignature"),
                        (ku.non_repudiation(), "nonRepudiation"),
                        (ku.key_encipherment(), "keyEncipherment"),
                        (ku.data_encipherment(), "dataEncipherment"),
                        (ku.key_agreement(), "keyAgreement"),
                        (ku.key_cert_sign(), "keyCertSign"),
                        (ku.crl_sign(), "cRLSign"),
                    ];
                    key_usage = names
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, n)| *n)
                        .collect();
                }
            }
            "2.5.29.37" => {
                if let Ok(e) = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()) {
                    eku = e.0.iter().map(|o| o.to_string()).collect();
                }
            }
            _ => {}
        }
    }
    let der = cert.to_der().unwrap_or_default();
    CertInfo {
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        serial: hex::encode(tbs.serial_number.as_bytes()),
        not_before: rfc3339(tbs.validity.not_before),
        not_after: rfc3339(tbs.validity.not_after),
        ca,
        key_usage,
        extended_key_usage: eku,
        oem_id: cert_oem_id(cert).map(OemId::get),
        product_id: cert_product_id(cert).map(ProductId::get),
        sha256_fingerprint: hex::encode(sha256(&der)),
        public_key: cert_public_key(cert).map(|k| hex::encode(k.0)),
        self_issued: tbs.subject == tbs.issuer,
    }
}

/// Checks that `child_der` is signed by the key of `issuer_der` and names it
/// as issuer (no validity or usage checks: the caller pins the issuer).
pub fn verify_issued_by(child_der: &[u8], issuer_der: &[u8]) -> std::result::Result<(), String> {
    use x509_cert::der::Encode;
    let child = x509_cert::Certificate::from_der(child_der).map_err(|e| e.to_string())?;
    let issuer = x509_cert::Certificate::from_der(issuer_der).map_err(|e| e.to_string())?;
    if child.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err("issuer name differs".into());
    }
    let tbs = child.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    verify_signed_by(&issuer, &tbs, child.signature.raw_bytes())
}

/// Checks a DER ECDSA-with-SHA256 signature over `tbs` (a certificate's or
/// a CRL's to-be-signed part) with `issuer`'s P-256 key.
pub fn verify_signed_by(
    issuer: &x509_cert::Certificate,
    tbs: &[u8],
    signature: &[u8],
) -> std::result::Result<(), String> {
    let key = cert_public_key(issuer).ok_or("the issuer key is not P-256")?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &key.0,
    )
    .verify(tbs, signature)
    .map_err(|_| "signature does not verify".to_string())
}

/// Whether the certificate allows key agreement.
pub fn allows_key_agreement(cert: &x509_cert::Certificate) -> bool {
    describe(cert).key_usage.contains(&"keyAgreement")
}

/// Rebuilds what rcgen needs to issue under an existing CA certificate of
/// ours (subject CN and O, in order, as rcgen wrote them), so that the
/// child's issuer name is byte-identical to the CA's subject.
pub fn issuer_from_der(der: &[u8]) -> std::result::Result<IssuerCert, String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = atv
                .value
                .decode_as::<x509_cert::der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    atv.value
                        .decode_as::<x509_cert::der::asn1::PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                })
                .map_err(|e| format!("issuer name: {e}"))?;
            match atv.oid.to_string().as_str() {
                "2.5.4.3" => dn.push(DnType::CommonName, value),
                "2.5.4.10" => dn.push(DnType::OrganizationName, value),
                other => {
                    return Err(format!(
                        "issuer name has an attribute trustchain does not write ({other})"
                    ))
                }
            }
        }
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(IssuerCert {
        der: der.to_vec(),
        params,
    })
}

/// Issues a device certificate from a product's template (§14 of
/// `docs/formats.md`). One certificate; a Guardian issuing many for a job
/// prepares a [`DeviceCertIssuer`] once instead.
pub fn issue_device_cert(
    template: &crate::template::Template,
    vars: &std::collections::BTreeMap<&str, String>,
    device_key: &PublicKey,
    oem_id: OemId,
    product_id: ProductId,
    issuer: &IssuerCert,
    issuer_key: &dyn Signer,
) -> std::result::Result<Vec<u8>, String> {
    DeviceCertIssuer::new(
        template,
        &issuer.der,
        issuer_key.public_key(),
        oem_id,
        product_id,
    )?
    .issue(vars, device_key, issuer_key)
}

/// DER of the signatureAlgorithm ecdsa-with-SHA256 (RFC 5758 §3.2, no parameters).
const ECDSA_WITH_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// The P-256 SubjectPublicKeyInfo up to the 65-byte point (RFC 5480 §2):
/// id-ecPublicKey, prime256v1, BIT STRING of 66 bytes with 0 unused bits.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Universal tags used below (X.690 §8).
mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0]` EXPLICIT (the TBSCertificate version).
    pub const CONTEXT_0: u8 = 0xa0;
    /// `[3]` EXPLICIT (the TBSCertificate extensions).
    pub const CONTEXT_3: u8 = 0xa3;
}

/// Appends a DER definite length (X.690 §8.1.3: short form below 128,
/// else the minimal long form).
fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(7);
        out.push(0x80 | (8 - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
}

/// Appends the TLV `tag`, `content`.
fn der_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    der_len(out, content.len());
    out.extend_from_slice(content);
}

/// The 91-byte SubjectPublicKeyInfo of a P-256 point.
fn p256_spki(key: &PublicKey) -> [u8; 91] {
    let mut spki = [0u8; 91];
    spki[..26].copy_from_slice(&P256_SPKI_PREFIX);
    spki[26..].copy_from_slice(&key.0);
    spki
}

/// The key identifier of §7: the first 20 bytes of SHA-256 over the whole SPKI.
fn key_identifier(key: &PublicKey) -> [u8; 20] {
    let mut ki = [0u8; 20];
    ki.copy_from_slice(&sha256(&p256_spki(key))[..20]);
    ki
}

/// An Extension (RFC 5280 §4.1): `oid` is the DER content of the OID.
fn der_extension(out: &mut Vec<u8>, oid: &[u8], critical: bool, value: &[u8]) {
    let mut ext = Vec::with_capacity(oid.len() + value.len() + 8);
    der_tlv(&mut ext, tag::OID, oid);
    if critical {
        ext.extend_from_slice(&[0x01, 0x01, 0xff]);
    }
    der_tlv(&mut ext, tag::OCTET_STRING, value);
    der_tlv(out, tag::SEQUENCE, &ext);
}

/// The DER content bytes of an OID under [`OID_ARC`] (X.690 §8.19).
fn arc_oid_content(arc: &[u64]) -> Vec<u8> {
    let mut out = vec![(arc[0] * 40 + arc[1]) as u8];
    for &n in &arc[2..] {
        let mut groups = vec![(n & 0x7f) as u8];
        let mut v = n >> 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        out.extend(groups.iter().rev());
    }
    out
}

/// A Time (RFC 5280 §4.1.2.5): UTCTime for 1950 to 2049, GeneralizedTime otherwise.
fn der_time(out: &mut Vec<u8>, t: OffsetDateTime) {
    let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
    let (hh, mm, ss) = (t.hour(), t.minute(), t.second());
    if (1950..2050).contains(&y) {
        let s = format!("{:02}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z", y % 100);
        der_tlv(out, tag::UTC_TIME, s.as_bytes());
    } else {
        let s = format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z");
        der_tlv(out, tag::GENERALIZED_TIME, s.as_bytes());
    }
}

/// Whether `v` is a PrintableString (X.680 §41.4: letters, digits, space and `'()+,-./:=?`).
fn is_printable(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

/// A job's device certificates, prepared once: everything of §14 that is
/// the same for every device of the job (issuer name, key usages, the
/// authority key identifier, the OEM and product extensions) is encoded
/// here, so that issuing one certificate encodes only the device's fields
/// (serial, validity, subject, key, its key identifier) and signs.
#[derive(Debug, Clone)]
pub struct DeviceCertIssuer {
    template: crate::template::Template,
    /// The issuer Name: the issuing CA's subject re-encoded (§14).
    issuer_name: Vec<u8>,
    /// AKI, keyUsage, extKeyUsage (if any), encoded.
    ext_before_ski: Vec<u8>,
    /// basicConstraints, OEM ID, product ID, encoded.
    ext_after_ski: Vec<u8>,
    issuer_key: PublicKey,
}

impl DeviceCertIssuer {
    /// Prepares issuance under the CA certificate `issuer_der`, whose key
    /// is `issuer_key` (refused if the certificate holds another key).
    pub fn new(
        template: &crate::template::Template,
        issuer_der: &[u8],
        issuer_key: &PublicKey,
        oem_id: OemId,
        product_id: ProductId,
    ) -> std::result::Result<Self, String> {
        template.check()?;
        let ca = x509_cert::Certificate::from_der(issuer_der).map_err(|e| e.to_string())?;
        if cert_public_key(&ca).as_ref() != Some(issuer_key) {
            return Err("the issuing key is not the key of the issuing CA certificate".into());
        }
        // The issuer name, as rcgen re-encoded it: CN and O, each its own
        // RDN, UTF8String (§14).
        let mut rdns = Vec::new();
        for rdn in ca.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                let value = atv
                    .value
                    .decode_as::<x509_cert::der::asn1::Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_string())
                    .or_else(|_| {
                        atv.value
                            .decode_as::<x509_cert::der::asn1::PrintableStringRef<'_>>()
                            .map(|s| s.as_str().to_string())
                    })
                    .map_err(|e| format!("issuer name: {e}"))?;
                let oid = match atv.oid.to_string().as_str() {
                    "2.5.4.3" => [0x55, 0x04, 0x03],
                    "2.5.4.10" => [0x55, 0x04, 0x0a],
                    other => {
                        return Err(format!(
                            "issuer name has an attribute trustchain does not write ({other})"
                        ))
                    }
                };
                push_rdn(&mut rdns, &oid, tag::UTF8_STRING, &value);
            }
        }
        let mut issuer_name = Vec::with_capacity(rdns.len() + 4);
        der_tlv(&mut issuer_name, tag::SEQUENCE, &rdns);

        let mut before = Vec::new();
        // authorityKeyIdentifier: SEQUENCE { [0] keyIdentifier }.
        let mut aki = vec![0x30, 0x16, 0x80, 0x14];
        aki.extend_from_slice(&key_identifier(issuer_key));
        der_extension(&mut before, &[0x55, 0x1d, 0x23], false, &aki);
        // keyUsage (critical): digitalSignature (bit 0), keyAgreement (bit 4).
        let ka = template.key_usages.iter().any(|k| k == "key_agreement");
        let ku: &[u8] = if ka {
            &[0x03, 0x02, 0x03, 0x88]
        } else {
            &[0x03, 0x02, 0x07, 0x80]
        };
        der_extension(&mut before, &[0x55, 0x1d, 0x0f], true, ku);
        if !template.extended_key_usages.is_empty() {
            let mut purposes = Vec::new();
            for k in &template.extended_key_usages {
                // id-kp-serverAuth 1.3.6.1.5.5.7.3.1, id-kp-clientAuth .2.
                let last = if k == "server_auth" { 0x01 } else { 0x02 };
                der_tlv(
                    &mut purposes,
                    tag::OID,
                    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, last],
                );
            }
            let mut eku = Vec::new();
            der_tlv(&mut eku, tag::SEQUENCE, &purposes);
            der_extension(&mut before, &[0x55, 0x1d, 0x25], false, &eku);
        }
        let mut after = Vec::new();
        // basicConstraints (critical), cA FALSE: an empty SEQUENCE.
        der_extension(&mut after, &[0x55, 0x1d, 0x13], true, &[0x30, 0x00]);
        der_extension(
            &mut after,
            &arc_oid_content(&OID_OEM_ID),
            false,
            &der_uint(oem_id.get().into()),
        );
        der_extension(
            &mut after,
            &arc_oid_content(&OID_PRODUCT_ID),
            false,
            &der_uint(product_id.get().into()),
        );
        Ok(Self {
            template: template.clone(),
            issuer_name,
            ext_before_ski: before,
            ext_after_ski: after,
            issuer_key: issuer_key.clone(),
        })
    }

    /// Issues the certificate of `device_key` with the template's
    /// placeholders filled from `vars`: a fresh random serial, valid from
    /// an hour ago, signed by `issuer_key` (which must be this issuer's).
    pub fn issue(
        &self,
        vars: &std::collections::BTreeMap<&str, String>,
        device_key: &PublicKey,
        issuer_key: &dyn Signer,
    ) -> std::result::Result<Vec<u8>, String> {
        if issuer_key.public_key() != &self.issuer_key {
            return Err("the signing key is not the issuing CA's key".into());
        }
        let mut serial = [0u8; 16];
        SystemEntropy.fill(&mut serial).map_err(|e| e.to_string())?;
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        let tbs = self.tbs(vars, device_key, &serial, now)?;
        let sig = issuer_key.sign(&tbs).map_err(|e| e.to_string())?;
        let sig = ecdsa_sig_der(&sig);
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
        let mut body = Vec::with_capacity(tbs.len() + ECDSA_WITH_SHA256.len() + sig.len() + 4);
        body.extend_from_slice(&tbs);
        body.extend_from_slice(ECDSA_WITH_SHA256);
        body.push(tag::BIT_STRING);
        der_len(&mut body, sig.len() + 1);
        body.push(0);
        body.extend_from_slice(&sig);
        let mut cert = Vec::with_capacity(body.len() + 4);
        der_tlv(&mut cert, tag::SEQUENCE, &body);
        Ok(cert)
    }

    /// The TBSCertificate (RFC 5280 §4.1) of one device, in the field and
    /// extension order of §14.
    fn tbs(
        &self,
        vars: &std::collections::BTreeMap<&str, String>,
        device_key: &PublicKey,
        serial: &[u8; 16],
        now: OffsetDateTime,
    ) -> std::result::Result<Vec<u8>, String> {
        let subject = self.template.render(vars)?;
        let mut rdns = Vec::with_capacity(160);
        push_rdn(
            &mut rdns,
            &[0x55, 0x04, 0x03],
            tag::UTF8_STRING,
            &subject.common_name,
        );
        if let Some(o) = &subject.organization {
            push_rdn(&mut rdns, &[0x55, 0x04, 0x0a], tag::UTF8_STRING, o);
        }
        if let Some(ou) = &subject.organizational_unit {
            push_rdn(&mut rdns, &[0x55, 0x04, 0x0b], tag::UTF8_STRING, ou);
        }
        // RFC 5280 (X.520): serialNumber and countryName are PrintableString.
        let printable = |field: &str, v: &str| {
            if is_printable(v) {
                Ok(())
            } else {
                Err(format!("subject.{field} '{v}' is not a PrintableString (letters, digits, space and '()+,-./:=?)"))
            }
        };
        if let Some(sn) = &subject.serial_number {
            printable("serial_number", sn)?;
            push_rdn(&mut rdns, &[0x55, 0x04, 0x05], tag::PRINTABLE_STRING, sn);
        }
        if let Some(c) = &subject.country {
            printable("country", c)?;
            push_rdn(&mut rdns, &[0x55, 0x04, 0x06], tag::PRINTABLE_STRING, c);
        }

        let mut validity = Vec::with_capacity(34);
        der_time(&mut validity, now - Duration::hours(1));
        der_time(
            &mut validity,
            if self.template.validity_days == 0 {
                // RFC 5280 §4.1.2.5: no well-defined expiration date.
                time::macros::datetime!(9999-12-31 23:59:59 UTC)
            } else {
                now + Duration::days(self.template.validity_days.into())
            },
        );

        let mut exts = Vec::with_capacity(256);
        exts.extend_from_slice(&self.ext_before_ski);
        let mut ski = vec![tag::OCTET_STRING, 20];
        ski.extend_from_slice(&key_identifier(device_key));
        der_extension(&mut exts, &[0x55, 0x1d, 0x0e], false, &ski);
        exts.extend_from_slice(&self.ext_after_ski);

        let mut body = Vec::with_capacity(512);
        // version [0] EXPLICIT v3(2)
        body.extend_from_slice(&[tag::CONTEXT_0, 0x03, tag::INTEGER, 0x01, 0x02]);
        der_tlv(&mut body, tag::INTEGER, serial);
        body.extend_from_slice(ECDSA_WITH_SHA256);
        body.extend_from_slice(&self.issuer_name);
        der_tlv(&mut body, tag::SEQUENCE, &validity);
        der_tlv(&mut body, tag::SEQUENCE, &rdns);
        body.extend_from_slice(&p256_spki(device_key));
        let mut seq = Vec::with_capacity(exts.len() + 4);
        der_tlv(&mut seq, tag::SEQUENCE, &exts);
        der_tlv(&mut body, tag::CONTEXT_3, &seq);
        let mut tbs = Vec::with_capacity(body.len() + 4);
        der_tlv(&mut tbs, tag::SEQUENCE, &body);
        Ok(tbs)
    }
}

/// Appends one single-attribute RDN: SET { SEQUENCE { type, value } }.
fn push_rdn(out: &mut Vec<u8>, oid: &[u8], string_tag: u8, value: &str) {
    let mut atv = Vec::with_capacity(value.len() + oid.len() + 6);
    der_tlv(&mut atv, tag::OID, oid);
    der_tlv(&mut atv, string_tag, value.as_bytes());
    let mut seq = Vec::with_capacity(atv.len() + 3);
    der_tlv(&mut seq, tag::SEQUENCE, &atv);
    der_tlv(out, tag::SET, &seq);
}

/// The rcgen construction the fast path replaced, kept as the reference
/// the tests compare it with (same serial and time).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn issue_device_cert_rcgen(
    template: &crate::template::Template,
    vars: &std::collections::BTreeMap<&str, String>,
    device_key: &PublicKey,
    oem_id: OemId,
    product_id: ProductId,
    issuer: &IssuerCert,
    issuer_key: &dyn Signer,
    serial: [u8; 16],
    now: OffsetDateTime,
) -> std::result::Result<Vec<u8>, String> {
    let subject = template.render(vars)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject.common_name.as_str());
    if let Some(o) = &subject.organization {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    if let Some(ou) = &subject.organizational_unit {
        dn.push(DnType::OrganizationalUnitName, ou.as_str());
    }
    // RFC 5280 (X.520): serialNumber and countryName are PrintableString.
    let printable = |field: &str, v: &str| {
        rcgen::string::PrintableString::try_from(v)
            .map(rcgen::DnValue::PrintableString)
            .map_err(|_| format!("subject.{field} '{v}' is not a PrintableString (letters, digits, space and '()+,-./:=?)"))
    };
    if let Some(sn) = &subject.serial_number {
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            printable("serial_number", sn)?,
        );
    }
    if let Some(c) = &subject.country {
        dn.push(DnType::CountryName, printable("country", c)?);
    }
    p.distinguished_name = dn;
    p.not_before = now - Duration::hours(1);
    p.not_after = if template.validity_days == 0 {
        // RFC 5280 §4.1.2.5: no well-defined expiration date.
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    } else {
        now + Duration::days(template.validity_days.into())
    };
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = template
        .key_usages
        .iter()
        .map(|k| {
            if k == "key_agreement" {
                KeyUsagePurpose::KeyAgreement
            } else {
                KeyUsagePurpose::DigitalSignature
            }
        })
        .collect();
    p.extended_key_usages = template
        .extended_key_usages
        .iter()
        .map(|k| {
            if k == "server_auth" {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }
        })
        .collect();
    p.use_authority_key_identifier_extension = true;
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &OID_OEM_ID,
        der_uint(oem_id.get().into()),
    ));
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &OID_PRODUCT_ID,
        der_uint(product_id.get().into()),
    ));
    let iss = Issuer::from_params(&issuer.params, RcgenKey(issuer_key));
    let cert = p
        .signed_by(&RcgenPublic(device_key), &iss)
        .map_err(|e| format!("certificate: {e}"))?;
    Ok(cert.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::EcdsaKey;

    #[test]
    fn der_helpers() {
        assert_eq!(der_uint(0), vec![2, 1, 0]);
        assert_eq!(der_uint(0x80), vec![2, 2, 0, 0x80]);
        assert_eq!(der_uint(0x1234), vec![2, 2, 0x12, 0x34]);
        // A fixed signature converted to DER verifies with the ASN.1 verifier.
        let (k, _) = EcdsaKey::generate().unwrap();
        for i in 0..20u8 {
            let msg = [i; 7];
            let sig = k.sign(&msg).unwrap();
            let der = ecdsa_sig_der(&sig);
            let v = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                &k.public_key().0,
            );
            assert!(v.verify(&msg, &der).is_ok());
        }
    }

    #[test]
    fn hierarchy_validates_and_carries_the_oem_id() {
        let oem = OemId::new(0xabcd).unwrap();
        let (root_key, _) = EcdsaKey::generate().unwrap();
        let (m_key, _) = EcdsaKey::generate().unwrap();
        let mut root_spec = CertSpec::new("Acme Root CA".into(), "Acme".into(), oem, 20);
        root_spec.ca_path_len = Some(2);
        let root = self_signed(&root_spec, &root_key).unwrap();
        let mut m_spec = CertSpec::new("Acme Mastering".into(), "Acme".into(), oem, 5);
        m_spec.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        m_spec.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let m = issue(&m_spec, m_key.public_key(), &root, &root_key).unwrap();
        validate_code_signing(&m.der, &root.der).unwrap();
        let parsed = parse_cert(m.pem().as_bytes()).unwrap();
        assert_eq!(cert_oem_id(&parsed), Some(oem));
        // Blank lines, spaces and CRLF around the PEM are accepted; two
        // certificates are refused by name; garbage after END is refused.
        let pem = m.pem();
        let crlf = pem.replace('\n', "\r\n");
        for padded in [
            format!("{pem}\n\n"),
            format!("\n\n{pem}"),
            format!("  {pem}  \n\t\n"),
            format!("{crlf}\r\n"),
        ] {
            assert_eq!(parse_cert(padded.as_bytes()).unwrap(), parsed, "{padded:?}");
        }
        let two = format!("{pem}{}", root.pem());
        let err = parse_cert(two.as_bytes()).unwrap_err();
        assert!(err.contains("2 PEM blocks"), "{err}");
        assert!(parse_cert(format!("{pem}x").as_bytes()).is_err());
        assert_eq!(cert_public_key(&parsed).as_ref(), Some(m_key.public_key()));
        let info = describe(&parsed);
        assert_eq!(info.ca, None);
        assert_eq!(info.key_usage, vec!["digitalSignature"]);
        // Another root does not validate it.
        let (other_key, _) = EcdsaKey::generate().unwrap();
        let other = self_signed(&root_spec, &other_key).unwrap();
        assert!(validate_code_signing(&m.der, &other.der).is_err());
        // A certificate without the code-signing EKU does not either.
        let mut plain = CertSpec::new("x".into(), "Acme".into(), oem, 1);
        plain.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let p = issue(&plain, m_key.public_key(), &root, &root_key).unwrap();
        assert!(validate_code_signing(&p.der, &root.der).is_err());
    }

    /// A root, and an issuing CA under it as `wrap` makes one (§15.7).
    fn issuing_ca(oem: OemId) -> (EcdsaKey, IssuerCert) {
        let (root_key, _) = EcdsaKey::generate().unwrap();
        let mut root_spec = CertSpec::new("Acme Root CA".into(), "Acme".into(), oem, 20);
        root_spec.ca_path_len = Some(2);
        let root = self_signed(&root_spec, &root_key).unwrap();
        let (ca_key, _) = EcdsaKey::generate().unwrap();
        let mut ca_spec = CertSpec::new("Acme Device CA".into(), "Acme".into(), oem, 15);
        ca_spec.ca_path_len = Some(1);
        let ca = issue(&ca_spec, ca_key.public_key(), &root, &root_key).unwrap();
        // What the Guardian has: the DER only.
        (ca_key, issuer_from_der(&ca.der).unwrap())
    }

    fn vars(serial: u64, uid: &str) -> std::collections::BTreeMap<&'static str, String> {
        [
            ("serial", format!("{serial:08}")),
            ("uid", uid.to_string()),
            ("oem_id", "4660".to_string()),
            ("product_id", "7".to_string()),
            ("oem_name", "Acme".to_string()),
            ("product_name", "Thermostat".to_string()),
        ]
        .into_iter()
        .collect()
    }

    fn templates() -> Vec<crate::template::Template> {
        use crate::template::{Subject, Template};
        let full = Template {
            format: 1,
            validity_days: 365,
            key_usages: vec!["digital_signature".into(), "key_agreement".into()],
            extended_key_usages: vec!["client_auth".into(), "server_auth".into()],
            subject: Subject {
                common_name: "{product_name} {serial} of {oem_name} ({oem_id}/{product_id})".into(),
                organization: Some("{oem_name}".into()),
                organizational_unit: Some("Line 3 é".into()),
                serial_number: Some("{uid}".into()),
                country: Some("FR".into()),
            },
        };
        let bare = Template {
            format: 1,
            validity_days: 30_000, // notAfter past 2049: GeneralizedTime
            key_usages: vec!["digital_signature".into()],
            extended_key_usages: vec![],
            subject: Subject {
                common_name: "{uid}".into(),
                organization: None,
                organizational_unit: None,
                serial_number: None,
                country: None,
            },
        };
        vec![Template::default(), full, bare]
    }

    #[test]
    fn device_cert_fast_path_is_byte_for_byte_the_rcgen_certificate() {
        let oem = OemId::new(0x1234).unwrap();
        let product = ProductId::new(7).unwrap();
        let (ca_key, ca) = issuing_ca(oem);
        let (dev, _) = EcdsaKey::generate().unwrap();
        let now = time::macros::datetime!(2026-11-22 10:11:12 UTC);
        for (i, t) in templates().iter().enumerate() {
            let v = vars(i as u64 + 1, "0a0b0c0d");
            let mut serial = [0u8; 16];
            SystemEntropy.fill(&mut serial).unwrap();
            serial[0] = (serial[0] & 0x7f) | 0x01;
            let reference = issue_device_cert_rcgen(
                t,
                &v,
                dev.public_key(),
                oem,
                product,
                &ca,
                &ca_key,
                serial,
                now,
            )
            .unwrap();
            let reference = x509_cert::Certificate::from_der(&reference).unwrap();
            let fast =
                DeviceCertIssuer::new(t, &ca.der, ca_key.public_key(), oem, product).unwrap();
            let tbs = fast.tbs(&v, dev.public_key(), &serial, now).unwrap();
            assert_eq!(
                hex::encode(&tbs),
                hex::encode(reference.tbs_certificate.to_der().unwrap()),
                "template {i}"
            );
            // The whole certificate: parses, re-encodes to itself, verifies under the CA.
            let cert = fast.issue(&v, dev.public_key(), &ca_key).unwrap();
            let parsed = x509_cert::Certificate::from_der(&cert).unwrap();
            assert_eq!(parsed.to_der().unwrap(), cert);
            assert_eq!(parsed.signature_algorithm, reference.signature_algorithm);
            verify_issued_by(&cert, &ca.der).unwrap();
            assert_eq!(cert_public_key(&parsed).as_ref(), Some(dev.public_key()));
            assert_eq!(cert_oem_id(&parsed), Some(oem));
            assert_eq!(cert_product_id(&parsed), Some(product));
        }
    }

    #[test]
    fn device_cert_has_the_bytes_formats_md_14_lists() {
        let oem = OemId::new(0x1234).unwrap();
        let product = ProductId::new(7).unwrap();
        let (ca_key, ca) = issuing_ca(oem);
        let (dev, _) = EcdsaKey::generate().unwrap();
        let fast = DeviceCertIssuer::new(
            &crate::template::Template::default(),
            &ca.der,
            ca_key.public_key(),
            oem,
            product,
        )
        .unwrap();
        let v = vars(1, "01020304");
        let cert = fast.issue(&v, dev.public_key(), &ca_key).unwrap();
        let parsed = x509_cert::Certificate::from_der(&cert).unwrap();
        let tbs = &parsed.tbs_certificate;
        let h = |b: &[u8]| hex::encode(b);
        // Version v3; a positive 16-byte serial whose first byte is (b & 0x7f) | 0x01.
        assert_eq!(tbs.version, x509_cert::Version::V3);
        let serial = tbs.serial_number.as_bytes();
        assert_eq!(serial.len(), 16);
        assert_eq!(serial[0] & 0x81, 0x01);
        // Issuer: the CA's subject; subject from the default template.
        let ca_cert = x509_cert::Certificate::from_der(&ca.der).unwrap();
        assert_eq!(
            h(&tbs.issuer.to_der().unwrap()),
            h(&ca_cert.tbs_certificate.subject.to_der().unwrap())
        );
        assert_eq!(
            h(&tbs.issuer.to_der().unwrap()),
            h(b"\x30\x28\x31\x17\x30\x15\x06\x03\x55\x04\x03\x0c\x0eAcme Device CA\x31\x0d\x30\x0b\x06\x03\x55\x04\x0a\x0c\x04Acme")
        );
        assert_eq!(
            h(&tbs.subject.to_der().unwrap()),
            h(&[
                &b"\x30\x40\x31\x1c\x30\x1a\x06\x03\x55\x04\x03\x0c\x13Thermostat 00000001"[..],
                b"\x31\x0d\x30\x0b\x06\x03\x55\x04\x0a\x0c\x04Acme",
                b"\x31\x11\x30\x0f\x06\x03\x55\x04\x05\x13\x0801020304",
            ]
            .concat())
        );
        // notBefore one hour before notAfter's "no well-defined expiry".
        let nb = tbs.validity.not_before.to_unix_duration().as_secs();
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - nb;
        assert!((3599..3700).contains(&age), "{age}");
        assert!(h(&tbs.validity.not_after.to_der().unwrap()) == h(b"\x18\x0f99991231235959Z"));
        assert_eq!(
            h(&tbs.subject_public_key_info.to_der().unwrap()),
            h(&p256_spki(dev.public_key()))
        );
        // Extensions, in order, byte for byte.
        let ki = |k: &PublicKey| sha256(&p256_spki(k))[..20].to_vec();
        let want: Vec<Vec<u8>> = vec![
            [
                &hex::decode("301f0603551d23041830168014").unwrap()[..],
                &ki(ca_key.public_key()),
            ]
            .concat(),
            hex::decode("300e0603551d0f0101ff040403020780").unwrap(),
            hex::decode("30130603551d25040c300a06082b06010505070302").unwrap(),
            [
                &hex::decode("301d0603551d0e04160414").unwrap()[..],
                &ki(dev.public_key()),
            ]
            .concat(),
            hex::decode("300c0603551d130101ff04023000").unwrap(),
            hex::decode("3012060a2b0601040181fd5974010404020212 34".replace(' ', "")).unwrap(),
            hex::decode("3011060a2b0601040181fd597402040302 0107".replace(' ', "")).unwrap(),
        ];
        let got: Vec<Vec<u8>> = tbs
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.to_der().unwrap())
            .collect();
        assert_eq!(
            got.iter().map(|g| h(g)).collect::<Vec<_>>(),
            want.iter().map(|w| h(w)).collect::<Vec<_>>()
        );
        // The outer signature algorithm and a DER ECDSA-Sig-Value that verifies.
        assert_eq!(
            h(&parsed.signature_algorithm.to_der().unwrap()),
            h(ECDSA_WITH_SHA256)
        );
        verify_issued_by(&cert, &ca.der).unwrap();
    }

    #[test]
    fn device_cert_issuer_refuses_a_key_that_is_not_the_cas() {
        let oem = OemId::new(1).unwrap();
        let product = ProductId::new(1).unwrap();
        let (ca_key, ca) = issuing_ca(oem);
        let (other, _) = EcdsaKey::generate().unwrap();
        let t = crate::template::Template::default();
        assert!(DeviceCertIssuer::new(&t, &ca.der, other.public_key(), oem, product).is_err());
        let fast = DeviceCertIssuer::new(&t, &ca.der, ca_key.public_key(), oem, product).unwrap();
        assert!(fast
            .issue(&vars(1, "01"), other.public_key(), &other)
            .is_err());
        // A serialNumber that is not a PrintableString is refused.
        assert!(fast
            .issue(&vars(1, "0_1"), other.public_key(), &ca_key)
            .unwrap_err()
            .contains("PrintableString"));
    }

    #[test]
    fn der_lengths_are_minimal() {
        for (len, want) in [
            (0usize, "00"),
            (0x7f, "7f"),
            (0x80, "8180"),
            (0xff, "81ff"),
            (0x100, "820100"),
            (0xffff, "82ffff"),
            (0x10000, "83010000"),
        ] {
            let mut out = vec![];
            der_len(&mut out, len);
            assert_eq!(hex::encode(out), want);
        }
        assert_eq!(
            hex::encode(arc_oid_content(&OID_OEM_ID)),
            "2b0601040181fd597401"
        );
    }
}
