//! Revocation at the OEM (issue 5): `trustchain oem revoke` adds a device
//! certificate (or a per-package issuing CA, which revokes everything one
//! Guardian produced under it) to the signed X.509 CRL (RFC 5280 §5) of its
//! issuer, and rewrites `OEM_DIR/crl.pem`, the bundle of every issuer's
//! current CRL that update servers and devices are given.
//!
//! Each issuer's CRL is kept in `OEM_DIR/crl/<issuer>.crl.pem` (`<issuer>`:
//! the first 16 bytes of the issuer certificate's SHA-256, hex). The CRL is
//! its own state: the next revocation parses it, keeps its entries, adds
//! one and raises the CRL number, so the list never forgets a revocation and
//! nothing outside a signed object says what is revoked. The issuer's key
//! signs: the device CA for devices provisioned in the lab and for issuing
//! CAs; the package's issuing CA key (which `wrap` keeps in the OEM keystore
//! as `package-<package id>-ca`) for devices produced from a package.
//!
//! A CRL is current from thisUpdate until nextUpdate (`--days` later, RFC
//! 5280 §5.1.2.5), and every user enforces nextUpdate (`trustchain_field`):
//! otherwise an attacker could hand a server or device an old CRL, made
//! before the latest revocation, and the revoked device would pass for ever.
//! So the OEM re-signs its CRLs before they expire, revoking or not:
//! [`refresh`] (`trustchain oem revoke OEM_DIR --refresh`) re-signs every
//! issuer's CRL with the same entries, the next CRL number and new
//! thisUpdate/nextUpdate, and rewrites the bundle.
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use time::OffsetDateTime;
use x509_cert::der::{Decode, Encode};

use crate::crypto::sha256;
use crate::error::{Error, IoContext, Result};
use crate::keystore::{KeyLabel, KeyStore};
use crate::oem::OemDir;
use crate::pki::{self, RcgenKey};

/// The bundle of current CRLs, in the OEM directory.
pub const CRL_BUNDLE: &str = "crl.pem";
/// The directory of per-issuer CRLs, in the OEM directory.
pub const CRL_DIR: &str = "crl";

/// Why a certificate is revoked (RFC 5280 §5.3.1 CRLReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// keyCompromise (1): the device's key was extracted or the device cloned.
    KeyCompromise,
    /// cACompromise (2): an issuing CA's key (a Guardian) is compromised.
    CaCompromise,
    /// superseded (4).
    Superseded,
    /// cessationOfOperation (5): the device was retired.
    CessationOfOperation,
    /// unspecified (0).
    Unspecified,
}

impl Reason {
    /// Parses the command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "key-compromise" => Self::KeyCompromise,
            "ca-compromise" => Self::CaCompromise,
            "superseded" => Self::Superseded,
            "cessation-of-operation" | "retired" => Self::CessationOfOperation,
            "unspecified" => Self::Unspecified,
            _ => return None,
        })
    }
    /// The command-line names.
    pub const NAMES: &'static str =
        "key-compromise, ca-compromise, superseded, cessation-of-operation, unspecified";
    fn rcgen(self) -> RevocationReason {
        match self {
            Self::KeyCompromise => RevocationReason::KeyCompromise,
            Self::CaCompromise => RevocationReason::CaCompromise,
            Self::Superseded => RevocationReason::Superseded,
            Self::CessationOfOperation => RevocationReason::CessationOfOperation,
            Self::Unspecified => RevocationReason::Unspecified,
        }
    }
    fn from_code(c: u32) -> Option<Self> {
        Some(match c {
            0 => Self::Unspecified,
            1 => Self::KeyCompromise,
            2 => Self::CaCompromise,
            4 => Self::Superseded,
            5 => Self::CessationOfOperation,
            _ => return None,
        })
    }
    /// The RFC 5280 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::Unspecified => "unspecified",
        }
    }
}

/// A revocation to make.
pub struct RevokeRequest {
    /// The certificate to revoke (PEM or DER bytes) and where it came from.
    pub cert: Vec<u8>,
    /// Its path, for messages.
    pub cert_path: PathBuf,
    /// Why.
    pub reason: Reason,
    /// How long the new CRL is current (nextUpdate − thisUpdate), in days.
    pub days: u32,
    /// Who does it (audit log).
    pub operator: String,
    /// The time of the revocation (tests pin it).
    pub now: OffsetDateTime,
}

/// What `revoke` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevokeReport {
    /// The revoked certificate's serial number, hex.
    pub serial: String,
    /// Its subject, as text.
    pub subject: String,
    /// The issuer that signed the CRL: `device-ca` or `package <id>`.
    pub issuer: String,
    /// The issuer's CRL file.
    pub crl: PathBuf,
    /// Its CRL number.
    pub crl_number: u64,
    /// How many certificates that CRL lists.
    pub revoked_count: usize,
    /// The bundle of all current CRLs.
    pub bundle: PathBuf,
    /// RFC 5280 reason.
    pub reason: &'static str,
}

/// An issuer of the OEM's that a certificate can chain to.
struct KnownIssuer {
    der: Vec<u8>,
    key: KeyLabel,
    name: String,
    /// Its certificate's file in OEM_DIR, for messages.
    path: PathBuf,
}

fn known_issuers(oem: &OemDir) -> Result<Vec<KnownIssuer>> {
    let mut out = vec![KnownIssuer {
        der: oem.device_ca_der()?,
        key: KeyLabel::device_ca(),
        name: "device-ca".into(),
        path: oem.path().join("device-ca.pem"),
    }];
    let kept = oem.path().join("packages");
    if kept.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&kept)
            .at(&kept)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".issuing-ca.pem"))
            else {
                continue;
            };
            let bytes = std::fs::read(&path).at(&path)?;
            let der = pki::cert_der(&bytes).map_err(|problem| Error::Corrupt {
                path: path.clone(),
                problem,
            })?;
            out.push(KnownIssuer {
                der,
                key: package_ca_label(id).ok_or_else(|| Error::Corrupt {
                    path: path.clone(),
                    problem: "the file name is not <package id>.issuing-ca.pem".into(),
                })?,
                name: format!("package {id}"),
                path,
            });
        }
    }
    Ok(out)
}

/// The keystore label of a package's issuing CA key.
pub fn package_ca_label(package_id_hex: &str) -> Option<KeyLabel> {
    (package_id_hex.len() == 32 && package_id_hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| {
            KeyLabel::new(&format!(
                "package-{}-ca",
                package_id_hex.to_ascii_lowercase()
            ))
        })
        .flatten()
}

/// The per-issuer CRL file of `issuer_der`.
pub fn crl_path(oem: &OemDir, issuer_der: &[u8]) -> PathBuf {
    oem.path().join(CRL_DIR).join(format!(
        "{}.crl.pem",
        hex::encode(&sha256(issuer_der)[..16])
    ))
}

/// One entry of an existing CRL.
struct Entry {
    serial: Vec<u8>,
    when: OffsetDateTime,
    reason: Option<Reason>,
}

/// Reads an existing CRL of ours: its entries and number. It must be signed
/// by `issuer_der`'s key (a CRL that does not verify is corrupt, not state).
fn read_crl(path: &Path, issuer_der: &[u8]) -> Result<(Vec<Entry>, u64)> {
    read_crl_full(path, issuer_der).map(|c| (c.entries, c.number))
}

/// An existing CRL of ours, as read back.
struct ReadCrl {
    entries: Vec<Entry>,
    number: u64,
    next_update: Option<OffsetDateTime>,
}

fn read_crl_full(path: &Path, issuer_der: &[u8]) -> Result<ReadCrl> {
    use x509_cert::crl::CertificateList;
    let corrupt = |problem: String| Error::Corrupt {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).at(path)?;
    let (label, der) =
        x509_cert::der::pem::decode_vec(text.as_bytes()).map_err(|e| corrupt(e.to_string()))?;
    if label != "X509 CRL" {
        return Err(corrupt(format!("a PEM '{label}', not an X509 CRL")));
    }
    let crl = CertificateList::from_der(&der).map_err(|e| corrupt(e.to_string()))?;
    let issuer =
        x509_cert::Certificate::from_der(issuer_der).map_err(|e| corrupt(e.to_string()))?;
    let tbs = crl
        .tbs_cert_list
        .to_der()
        .map_err(|e| corrupt(e.to_string()))?;
    pki::verify_signed_by(&issuer, &tbs, crl.signature.raw_bytes())
        .map_err(|e| corrupt(format!("the issuer's key: {e}")))?;
    let mut number = 0u64;
    for ext in crl.tbs_cert_list.crl_extensions.iter().flatten() {
        if ext.extn_id.to_string() == "2.5.29.20" {
            let n = x509_cert::der::asn1::Uint::from_der(ext.extn_value.as_bytes())
                .map_err(|e| corrupt(format!("CRL number: {e}")))?;
            let b = n.as_bytes();
            if b.len() > 8 {
                return Err(corrupt("CRL number too large".into()));
            }
            number = b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        }
    }
    let mut entries = Vec::new();
    for rc in crl.tbs_cert_list.revoked_certificates.iter().flatten() {
        let when = rc.revocation_date.to_system_time();
        let when = OffsetDateTime::from(when);
        // Only what `revoke` writes: a reasonCode this module knows. Anything
        // else would be dropped when the CRL is re-signed, so it is refused.
        let serial_hex = hex::encode(rc.serial_number.as_bytes());
        let mut reason = None;
        for ext in rc.crl_entry_extensions.iter().flatten() {
            // CRLReason ::= ENUMERATED: 0a 01 nn.
            let v = ext.extn_value.as_bytes();
            reason = match (ext.extn_id.to_string().as_str(), v) {
                ("2.5.29.21", [0x0a, 1, code]) => {
                    Some(Reason::from_code((*code).into()).ok_or_else(|| {
                        corrupt(format!(
                            "entry {serial_hex}: reason code {code}, not one trustchain writes"
                        ))
                    })?)
                }
                (oid, _) => {
                    return Err(corrupt(format!(
                        "entry {serial_hex}: entry extension {oid}, not one trustchain writes"
                    )))
                }
            };
        }
        entries.push(Entry {
            serial: rc.serial_number.as_bytes().to_vec(),
            when,
            reason,
        });
    }
    let next_update = crl
        .tbs_cert_list
        .next_update
        .map(|t| OffsetDateTime::from(t.to_system_time()));
    Ok(ReadCrl {
        entries,
        number,
        next_update,
    })
}

/// Revokes a certificate: signs its issuer's next CRL and rewrites the bundle.
pub fn revoke(oem: &OemDir, keystore: &dyn KeyStore, req: &RevokeRequest) -> Result<RevokeReport> {
    // Held from reading the CRL (its number, its entries) to the audit record.
    let lock = oem.lock()?;
    let der = pki::cert_der(&req.cert).map_err(|problem| Error::Corrupt {
        path: req.cert_path.clone(),
        problem,
    })?;
    let cert = x509_cert::Certificate::from_der(&der).map_err(|e| Error::Corrupt {
        path: req.cert_path.clone(),
        problem: e.to_string(),
    })?;
    check_days(req.days)?;
    let issuer = known_issuers(oem)?
        .into_iter()
        .find(|i| pki::verify_issued_by(&der, &i.der).is_ok())
        .ok_or_else(|| Error::Chain {
            path: req.cert_path.clone(),
            problem: "was not issued by this OEM's device CA nor by the issuing CA of any package \
                      wrapped from this OEM directory"
                .into(),
        })?;
    if der == issuer.der {
        return Err(Error::Usage("a CA cannot revoke itself".into()));
    }
    if !keystore.contains(&issuer.key) {
        return Err(Error::NoCrlKey {
            path: req.cert_path.clone(),
            issuer: issuer.name.clone(),
            label: issuer.key.as_str().to_string(),
        });
    }
    let serial = cert.tbs_certificate.serial_number.as_bytes().to_vec();
    let path = crl_path(oem, &issuer.der);
    let (mut entries, number) = if path.exists() {
        read_crl(&path, &issuer.der)?
    } else {
        (Vec::new(), 0)
    };
    if let Some(e) = entries.iter().find(|e| e.serial == serial) {
        return Err(Error::AlreadyRevoked {
            path: req.cert_path.clone(),
            serial: hex::encode(&serial),
            since: e.when.unix_timestamp(),
        });
    }
    let now = req.now.replace_nanosecond(0).unwrap_or(req.now);
    entries.push(Entry {
        serial: serial.clone(),
        when: now,
        reason: Some(req.reason),
    });
    let crl = sign_crl(keystore, &issuer, &entries, number + 1, now, req.days)?;
    // The new bundle is made before anything is written: the other
    // issuers' CRLs as they are, this one as it will be.
    let mut files = crl_files(oem)?;
    if !files.contains(&path) {
        files.push(path.clone());
        files.sort();
    }
    let mut bundle_text = String::new();
    for f in &files {
        if *f == path {
            bundle_text.push_str(&crl.pem);
        } else {
            bundle_text.push_str(&std::fs::read_to_string(f).at(f)?);
        }
    }
    let dir = oem.path().join(CRL_DIR);
    if !dir.is_dir() {
        std::fs::create_dir(&dir).at(&dir)?;
    }
    let bundle = oem.path().join(CRL_BUNDLE);
    crate::fsutil::replace_all(&[
        (&path, crl.pem.as_bytes()),
        (&bundle, bundle_text.as_bytes()),
    ])?;
    oem.audit().append(
        &lock,
        &req.operator,
        crate::audit::Event::Revoke {
            serial: hex::encode(&serial),
            subject: cert.tbs_certificate.subject.to_string(),
            issuer: issuer.name.clone(),
            reason: req.reason.name().into(),
            crl_number: number + 1,
            crl_sha256: hex::encode(sha256(&crl.der)),
        },
    )?;
    Ok(RevokeReport {
        serial: hex::encode(&serial),
        subject: cert.tbs_certificate.subject.to_string(),
        issuer: issuer.name,
        crl: path,
        crl_number: number + 1,
        revoked_count: entries.len(),
        bundle,
        reason: req.reason.name(),
    })
}

/// The per-issuer CRL files of OEM_DIR/crl/, sorted by file name (the
/// bundle's order); none if the directory does not exist yet.
fn crl_files(oem: &OemDir) -> Result<Vec<PathBuf>> {
    let dir = oem.path().join(CRL_DIR);
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .at(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    files.sort();
    Ok(files)
}

fn check_days(days: u32) -> Result<()> {
    if days == 0 || days > 3650 {
        return Err(Error::Usage("--days must be 1 to 3650".into()));
    }
    Ok(())
}

/// A signed CRL.
struct SignedCrl {
    pem: String,
    der: Vec<u8>,
}

/// Signs `issuer`'s CRL number `number` listing `entries`, current from
/// `now` (whole seconds) for `days` days.
fn sign_crl(
    keystore: &dyn KeyStore,
    issuer: &KnownIssuer,
    entries: &[Entry],
    number: u64,
    now: OffsetDateTime,
    days: u32,
) -> Result<SignedCrl> {
    let issuer_cert = pki::issuer_from_der(&issuer.der).map_err(|problem| Error::Corrupt {
        path: issuer.path.clone(),
        problem,
    })?;
    let signer = keystore.signer(&issuer.key)?;
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(days.into()),
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&e.serial),
                revocation_time: e.when,
                reason_code: e.reason.map(Reason::rcgen),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let rkey = RcgenKey(signer.as_ref());
    let iss = Issuer::from_params(&issuer_cert.params, rkey);
    let crl = params
        .signed_by(&iss)
        .map_err(|e| Error::Usage(format!("CRL: {e}")))?;
    let pem = crl.pem().map_err(|e| Error::Usage(format!("CRL: {e}")))?;
    Ok(SignedCrl {
        pem,
        der: crl.der().to_vec(),
    })
}

/// A refresh of every CRL the OEM has made.
pub struct RefreshRequest {
    /// How long the new CRLs are current (nextUpdate − thisUpdate), in days.
    pub days: u32,
    /// Who does it (audit log).
    pub operator: String,
    /// The time of the refresh: the new thisUpdate (tests pin it).
    pub now: OffsetDateTime,
}

/// One re-signed CRL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshedCrl {
    /// The issuer that signed it: `device-ca` or `package <id>`.
    pub issuer: String,
    /// Its file.
    pub crl: PathBuf,
    /// Its new CRL number (the previous one + 1).
    pub crl_number: u64,
    /// How many certificates it lists (as before).
    pub revoked_count: usize,
    /// The previous nextUpdate, RFC 3339.
    pub previous_next_update: Option<String>,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate, RFC 3339: refresh again before then.
    pub next_update: String,
}

/// What `refresh` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefreshReport {
    /// Each issuer's CRL, in file-name order (the bundle's order).
    pub crls: Vec<RefreshedCrl>,
    /// The bundle of all current CRLs, rewritten.
    pub bundle: PathBuf,
    /// The nextUpdate of the new CRLs, RFC 3339.
    pub next_update: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Re-signs every CRL in `OEM_DIR/crl/` with the same entries, the next CRL
/// number, thisUpdate = `now` and nextUpdate = `now` + `days`, rewrites the
/// bundle and records one `crl_refresh` audit event per CRL.
///
/// Everything is read, checked (each CRL's signature by its issuer, every
/// entry one that `revoke` writes, the issuer's key present) and signed
/// before the first file is written; the new files are written to synced
/// temporary files first and then renamed over the old ones, CRLs first and
/// the bundle last. An error before the renames changes nothing; each
/// rename replaces one whole file, so even a crash between them leaves only
/// valid, signed CRLs, and running `refresh` again completes it. With no
/// CRL yet there is nothing to refresh: an error, and nothing is written.
pub fn refresh(
    oem: &OemDir,
    keystore: &dyn KeyStore,
    req: &RefreshRequest,
) -> Result<RefreshReport> {
    let lock = oem.lock()?;
    check_days(req.days)?;
    let dir = oem.path().join(CRL_DIR);
    let files = crl_files(oem)?;
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no CRL to refresh: this OEM directory has not revoked anything yet, so there \
             is no CRL to re-sign and nothing was written; `trustchain oem revoke {} --cert \
             CERT` makes the first one",
            dir.display(),
            oem.path().display()
        )));
    }
    let issuers = known_issuers(oem)?;
    let now = req.now.replace_nanosecond(0).unwrap_or(req.now);
    let next_update = now + time::Duration::days(req.days.into());
    // Read, check and sign everything before anything is written.
    let mut signed = Vec::with_capacity(files.len());
    for path in &files {
        let issuer = issuers
            .iter()
            .find(|i| &crl_path(oem, &i.der) == path)
            .ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                problem: "matches no issuer of this OEM directory (a CRL file is named after the \
                          SHA-256 of its issuer's certificate: the device CA or a package's \
                          issuing CA); remove it if it is not the OEM's, then refresh again"
                    .into(),
            })?;
        if !keystore.contains(&issuer.key) {
            return Err(Error::Usage(format!(
                "{}: the CRL of {} is signed with the key '{}', which this keystore does not \
                 hold; nothing was refreshed",
                path.display(),
                issuer.name,
                issuer.key.as_str()
            )));
        }
        let old = read_crl_full(path, &issuer.der)?;
        let number = old.number.checked_add(1).ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            problem: "the CRL number cannot be raised any further".into(),
        })?;
        let crl = sign_crl(keystore, issuer, &old.entries, number, now, req.days)?;
        signed.push((path.clone(), issuer, old, number, crl));
    }
    let bundle_text: String = signed
        .iter()
        .map(|(_, _, _, _, c)| c.pem.as_str())
        .collect();
    let bundle = oem.path().join(CRL_BUNDLE);
    let mut writes: Vec<(&Path, &[u8])> = signed
        .iter()
        .map(|(path, _, _, _, crl)| (path.as_path(), crl.pem.as_bytes()))
        .collect();
    writes.push((&bundle, bundle_text.as_bytes()));
    crate::fsutil::replace_all(&writes)?;
    let mut crls = Vec::with_capacity(signed.len());
    for (path, issuer, old, number, crl) in signed {
        oem.audit().append(
            &lock,
            &req.operator,
            crate::audit::Event::CrlRefresh {
                issuer: issuer.name.clone(),
                crl_number: number,
                revoked_count: old.entries.len() as u64,
                this_update: rfc3339(now),
                next_update: rfc3339(next_update),
                crl_sha256: hex::encode(sha256(&crl.der)),
            },
        )?;
        crls.push(RefreshedCrl {
            issuer: issuer.name.clone(),
            crl: path,
            crl_number: number,
            revoked_count: old.entries.len(),
            previous_next_update: old.next_update.map(rfc3339),
            this_update: rfc3339(now),
            next_update: rfc3339(next_update),
        });
    }
    Ok(RefreshReport {
        crls,
        bundle,
        next_update: rfc3339(next_update),
    })
}
