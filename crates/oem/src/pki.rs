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

/// Reads one certificate from PEM or DER bytes.
pub fn parse_cert(bytes: &[u8]) -> std::result::Result<x509_cert::Certificate, String> {
    if bytes.starts_with(b"-----BEGIN")
        || bytes.iter().take(64).any(|&b| b == b'-') && bytes.is_ascii()
    {
        x509_cert::Certificate::from_pem(bytes).map_err(|e| format!("not a PEM certificate: {e}"))
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
    let key = cert_public_key(&issuer).ok_or("the issuer key is not P-256")?;
    let tbs = child.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let sig = child.signature.raw_bytes();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &key.0,
    )
    .verify(&tbs, sig)
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

/// Issues a device certificate from a product's template.
pub fn issue_device_cert(
    template: &crate::template::Template,
    vars: &std::collections::BTreeMap<&str, String>,
    device_key: &PublicKey,
    oem_id: OemId,
    product_id: ProductId,
    issuer: &IssuerCert,
    issuer_key: &dyn Signer,
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
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc());
    p.not_before = now - Duration::hours(1);
    p.not_after = if template.validity_days == 0 {
        // RFC 5280 §4.1.2.5: no well-defined expiration date.
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    } else {
        now + Duration::days(template.validity_days.into())
    };
    let mut serial = [0u8; 16];
    SystemEntropy.fill(&mut serial).map_err(|e| e.to_string())?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
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
}
