//! Reading the CRLs the OEM publishes (`trustchain oem revoke` writes them,
//! see `trustchain_oem::revoke`): a file of one or more PEM `X509 CRL`
//! blocks (`OEM_DIR/crl.pem`), or one DER CRL. Each is parsed by
//! rustls-webpki before it is used, so a damaged file is refused at start,
//! naming the file, rather than silently revoking nothing.
//!
//! A CRL is current until its nextUpdate (RFC 5280 §5.1.2.5), and every use
//! enforces it: an old CRL replayed in place of a newer one (one without the
//! latest revocations) is only accepted while it is itself current, so the
//! OEM's `--days` bounds how long a revocation can be hidden. Mutual
//! authentication refuses the peer with `bad-crl` (rustls-webpki's
//! `ExpirationPolicy::Enforce`); the update server refuses to start with an
//! expired CRL ([`check_current`]) and, running, refuses the clients of an
//! issuer whose CRL has expired (rustls' `enforce_revocation_expiration`).
//! The OEM keeps them current with `trustchain oem revoke OEM_DIR --refresh`.
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;

/// At most this many bytes of CRLs are read (a revocation list of ~100k devices).
pub const MAX_CRL_FILE: u64 = 8 << 20;

/// Loads and checks the CRLs in `path`.
pub fn load(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_CRL_FILE {
        return Err(format!(
            "{}: {len} bytes, more than the {MAX_CRL_FILE} a CRL file may have",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses CRLs from PEM (one or more blocks) or one DER CRL, and checks each.
pub fn parse(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.first() == Some(&0x30) {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    } else {
        CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not a PEM CRL file: {e:?}"))?
    };
    if crls.is_empty() {
        return Err("holds no X509 CRL".into());
    }
    for (i, crl) in crls.iter().enumerate() {
        webpki::BorrowedCertRevocationList::from_der(crl.as_ref())
            .map_err(|e| format!("CRL {}: does not parse ({e:?})", i + 1))?;
    }
    Ok(crls)
}

/// What a CRL says about itself: whose it is, which one, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// The issuer's name (RFC 4514 text).
    pub issuer: String,
    /// The cRLNumber extension, if present (and at most 8 bytes).
    pub number: Option<u64>,
    /// thisUpdate, Unix seconds.
    pub this_update: u64,
    /// nextUpdate, Unix seconds: after this, the CRL is no longer current
    /// (RFC 5280 §5.1.2.5) and revocation cannot be checked with it.
    pub next_update: u64,
    /// The certificates it lists, in order.
    pub entries: Vec<CrlEntry>,
}

/// One revoked certificate of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// Serial number, hex.
    pub serial: String,
    /// revocationDate, Unix seconds.
    pub revoked_at: u64,
    /// The reasonCode entry extension (RFC 5280 §5.3.1), if any.
    pub reason: Option<u8>,
}

impl CrlInfo {
    /// Whether the CRL is past its nextUpdate at `now` (Unix seconds): the
    /// same test as rustls-webpki's `ExpirationPolicy::Enforce`
    /// (`now >= nextUpdate`).
    pub fn expired_at(&self, now: u64) -> bool {
        now >= self.next_update
    }
}

/// Reads a DER CRL's issuer, number, times and entry count. RFC 5280 §5.1.2.5
/// makes nextUpdate mandatory in our profile (rustls-webpki refuses a CRL
/// without it too).
pub fn info(der: &[u8]) -> Result<CrlInfo, String> {
    use x509_cert::der::Decode;
    let crl = x509_cert::crl::CertificateList::from_der(der)
        .map_err(|e| format!("does not parse as an X.509 CRL ({e})"))?;
    let tbs = &crl.tbs_cert_list;
    let next_update = tbs
        .next_update
        .as_ref()
        .ok_or("has no nextUpdate: a CRL must say until when it is current")?
        .to_unix_duration()
        .as_secs();
    let number = tbs
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == CRL_NUMBER)
        .and_then(|e| x509_cert::der::asn1::Uint::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|n| {
            let b = n.as_bytes();
            (b.len() <= 8).then(|| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        });
    Ok(CrlInfo {
        issuer: tbs.issuer.to_string(),
        number,
        this_update: tbs.this_update.to_unix_duration().as_secs(),
        next_update,
        entries: tbs
            .revoked_certificates
            .iter()
            .flatten()
            .map(|rc| CrlEntry {
                serial: hex::encode(rc.serial_number.as_bytes()),
                revoked_at: rc.revocation_date.to_unix_duration().as_secs(),
                reason: rc
                    .crl_entry_extensions
                    .iter()
                    .flatten()
                    .find(|e| e.extn_id == CRL_REASON)
                    .and_then(|e| match e.extn_value.as_bytes() {
                        // CRLReason ::= ENUMERATED: 0a 01 nn.
                        [0x0a, 1, code] => Some(*code),
                        _ => None,
                    }),
            })
            .collect(),
    })
}

const CRL_NUMBER: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.29.20");
const CRL_REASON: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.29.21");

/// What to do about an expired CRL, in every message that reports one.
pub const REFRESH_HINT: &str = "at the OEM, `trustchain oem revoke OEM_DIR --refresh` re-signs \
     every CRL with a new nextUpdate (same entries, higher CRL number); give the new \
     OEM_DIR/crl.pem where this one was used";

/// Unix seconds as RFC 3339 UTC (the number itself if out of range).
pub fn rfc3339(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("Unix time {t}"))
}

/// "the CRL of ISSUER (CRL number N) expired at T (its nextUpdate); the
/// time here is NOW": the common part of every expired-CRL message.
pub fn describe_expired(info: &CrlInfo, now: u64) -> String {
    let number = info
        .number
        .map(|n| format!(", CRL number {n}"))
        .unwrap_or_default();
    format!(
        "the CRL of {}{number} expired at {} (its nextUpdate), and the time here is {}",
        info.issuer,
        rfc3339(info.next_update),
        rfc3339(now)
    )
}

/// Checks that every CRL of `crls` (as read from `source`, for messages) is
/// current at `now` (Unix seconds); returns the earliest nextUpdate, if any.
///
/// An update server calls this at start: rustls refuses every client whose
/// issuer's CRL has expired (`enforce_revocation_expiration`), so a server
/// started with an expired CRL would turn away every device of that issuer
/// while it looked healthy. Refusing to start names the problem instead.
pub fn check_current(
    source: &str,
    crls: &[CertificateRevocationListDer<'_>],
    now: u64,
) -> Result<Option<u64>, String> {
    let mut earliest: Option<u64> = None;
    for (i, crl) in crls.iter().enumerate() {
        let info = info(crl.as_ref()).map_err(|e| format!("{source}: CRL {}: {e}", i + 1))?;
        if info.expired_at(now) {
            return Err(format!(
                "{source}: CRL {} of {}: {}: a stale CRL may be an old one replayed, so \
                 revocation cannot be checked with it, and the server would refuse every device \
                 of that issuer; {REFRESH_HINT}",
                i + 1,
                crls.len(),
                describe_expired(&info, now)
            ));
        }
        earliest = Some(earliest.map_or(info.next_update, |e| e.min(info.next_update)));
    }
    Ok(earliest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_files_are_refused() {
        assert!(parse(b"").is_err());
        assert!(parse(b"hello").is_err());
        assert!(parse(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(parse(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").is_err());
    }
}
