//! `trustchain oem reconcile`: the OEM checks a Guardian's signed report
//! against what it wrapped: the signature and the Guardian's identity (the
//! one the package was wrapped for), issued <= count, every certificate
//! issued by the package's issuing CA and accounted for in the job's log,
//! serials in range and unique, UIDs unique, and the log's hash chain
//! intact up to the signed head.
//!
//! Then against every report reconciled before (kept in OEM_DIR/reports/):
//! one report alone cannot show a package imported twice (a replayed
//! package, or a Guardian whose database was restored to before the import)
//! or one device UID certified in two jobs or two centres (a clone). So:
//! a package's reports must all come from one job, a serial keeps its
//! certificate across them, their certificates together stay within the
//! count, and a UID certified and provisioned in one report has no other
//! certificate in another. A report that reconciles is kept there, with an
//! audit record; one with anomalies changes nothing. Reconciling the same
//! report again is not an anomaly and records nothing new.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use trustchain_formats::cose::sig_structure;
use trustchain_formats::report::{status, Report, MAX_REPORT_LEN};

use crate::audit::Event;
use crate::crypto::{sha256, verify_es256};
use crate::error::{Error, IoContext, Result};
use crate::oem::OemDir;
use crate::pki;

/// The outcome of a reconciliation.
#[derive(Debug, Serialize)]
pub struct Reconciliation {
    /// Package ID (hex).
    pub package_id: String,
    /// Job at the Guardian.
    pub job: u64,
    /// Count the OEM allowed.
    pub count: u64,
    /// Devices certified and provisioned.
    pub issued: u64,
    /// Devices certified, then failed.
    pub failed: u64,
    /// Devices listed.
    pub devices: u64,
    /// Everything wrong; empty when the report reconciles.
    pub anomalies: Vec<String>,
    /// Reports reconciled before that this one was checked against.
    pub earlier_reports: usize,
    /// Where the report was kept (new, or from an earlier reconciliation
    /// of the same file); `None` when it does not reconcile, or with
    /// [`Keep::No`] for a report not kept before.
    pub kept: Option<PathBuf>,
    /// Whether this very report had been reconciled before.
    pub already_reconciled: bool,
}

/// Where reconciled reports are kept, in the OEM directory.
pub const REPORTS_DIR: &str = "reports";

/// A report reconciled before, as kept.
struct Earlier {
    path: PathBuf,
    sha256: [u8; 32],
    package_id: [u8; 16],
    job: u64,
    /// When the Guardian made it (Unix seconds).
    created: u64,
    /// serial -> (UID, status, SHA-256 of the certificate).
    devices: BTreeMap<u64, (Vec<u8>, u64, [u8; 32])>,
}

fn earlier_reports(oem: &OemDir) -> Result<Vec<Earlier>> {
    let dir = oem.path().join(REPORTS_DIR);
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .at(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tcrep"))
        .collect();
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let bytes = crate::fsutil::read_bounded(&path, MAX_REPORT_LEN as u64, "kept report")?;
        let r = Report::parse(&bytes).map_err(|source| Error::Format {
            path: path.clone(),
            source,
        })?;
        out.push(Earlier {
            sha256: sha256(&bytes),
            package_id: *r.body.package_id,
            job: r.body.job,
            created: r.body.created,
            devices: r
                .body
                .devices()
                .map(|d| (d.serial, (d.uid.to_vec(), d.status, sha256(d.cert))))
                .collect(),
            path,
        });
    }
    Ok(out)
}

/// Whether a report that reconciles is kept for later reports to be
/// checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep it in OEM_DIR/reports/, with an audit record (the default).
    Yes,
    /// Check only: write nothing (`oem reconcile --no-keep`).
    No,
}

/// Reconciles `report` against the OEM directory.
pub fn reconcile(
    oem: &OemDir,
    report_path: &Path,
    operator: &str,
    keep: Keep,
) -> Result<Reconciliation> {
    // Held from reading the reports kept before to keeping this one.
    let lock = oem.lock()?;
    let bytes = crate::fsutil::read_bounded(report_path, MAX_REPORT_LEN as u64, "report")?;
    let r = Report::parse(&bytes).map_err(|source| Error::Format {
        path: report_path.to_path_buf(),
        source,
    })?;
    let b = &r.body;
    let pid = hex::encode(b.package_id);
    // What the OEM wrapped, from its own audit log.
    let wrapped = oem
        .audit()
        .records()?
        .into_iter()
        .find_map(|rec| match rec.event {
            Event::Wrap {
                package_id,
                guardian,
                count,
                serial_start,
                product,
                issuing_ca_sha256,
                ..
            } if package_id == pid => {
                Some((guardian, count, serial_start, product, issuing_ca_sha256))
            }
            _ => None,
        })
        .ok_or_else(|| Error::ReleaseMismatch {
            path: report_path.to_path_buf(),
            problem: format!("package {pid} was not wrapped by this OEM"),
        })?;
    let (guardian_id, count, serial_start, product, issuing_sha) = wrapped;
    let mut anomalies = vec![];
    // Signature by the Guardian the package was wrapped for.
    if hex::encode(sha256(r.kem_cert)) != guardian_id {
        anomalies
            .push("the report is not from the Guardian the package was wrapped for".to_string());
    }
    if let Err(p) = pki::verify_issued_by(r.kem_cert, r.signing_cert) {
        anomalies.push(format!("the Guardian's certificates do not chain: {p}"));
    }
    let signing = pki::parse_cert(r.signing_cert)
        .ok()
        .and_then(|c| pki::cert_public_key(&c));
    let mut tbs = Vec::new();
    sig_structure(r.protected, r.payload, |x| tbs.extend_from_slice(x));
    if !signing.is_some_and(|k| verify_es256(&k.0, &tbs, r.signature)) {
        return Err(Error::BadSignature {
            path: report_path.to_path_buf(),
        });
    }
    // Counts.
    if b.count != count || b.product_id.get() != product || b.oem_id != oem.oem_id() {
        anomalies.push(format!("the report's job (count {}, product {}) is not the wrapped one (count {count}, product {product})", b.count, b.product_id));
    }
    let certified = b.issued.saturating_add(b.failed);
    if certified > count {
        anomalies.push(format!(
            "over-production: {} issued + {} failed > count {count}",
            b.issued, b.failed
        ));
    }
    if b.device_count() != certified {
        anomalies.push(format!(
            "{} device records for {certified} certificates",
            b.device_count()
        ));
    }
    // Every certificate: issued by this package's CA, serial in range, unique.
    let issuing = std::fs::read(
        oem.path()
            .join("packages")
            .join(format!("{pid}.issuing-ca.pem")),
    )
    .ok()
    .and_then(|p| pki::cert_der(&p).ok())
    .filter(|der| hex::encode(sha256(der)) == issuing_sha);
    if issuing.is_none() {
        anomalies.push("the package's issuing CA record in OEM_DIR/packages is missing or does not match the wrap record".into());
    }
    let (mut serials, mut uids, mut certs) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    // serial -> (UID, status, SHA-256 of the certificate), for the checks
    // against earlier reports below.
    let mut this: BTreeMap<u64, (&[u8], u64, [u8; 32])> = BTreeMap::new();
    let (mut issued, mut failed) = (0, 0);
    for d in b.devices() {
        if d.serial < serial_start || d.serial >= serial_start.saturating_add(count) {
            anomalies.push(format!(
                "serial {} is outside {serial_start}..{}",
                d.serial,
                serial_start + count
            ));
        }
        if !serials.insert(d.serial) {
            anomalies.push(format!("serial {} appears twice", d.serial));
        }
        if !uids.insert(d.uid.to_vec()) {
            anomalies.push(format!("UID {} appears twice (clone?)", hex::encode(d.uid)));
        }
        if let Some(ca) = &issuing {
            if pki::verify_issued_by(d.cert, ca).is_err() {
                anomalies.push(format!(
                    "serial {}: certificate not issued by the package's issuing CA",
                    d.serial
                ));
            }
        }
        let cert_sha = sha256(d.cert);
        certs.insert((d.serial, cert_sha));
        this.insert(d.serial, (d.uid, d.status, cert_sha));
        match d.status {
            status::ISSUED => issued += 1,
            status::FAILED => failed += 1,
            s => anomalies.push(format!("serial {}: unknown status {s}", d.serial)),
        }
    }
    if (issued, failed) != (b.issued, b.failed) {
        anomalies.push(format!(
            "the records count {issued} issued / {failed} failed, the report says {} / {}",
            b.issued, b.failed
        ));
    }
    // The log: chain intact to the signed head, every certificate issued in it.
    let mut h = sha256(b.package_id);
    let mut logged = BTreeSet::new();
    let mut expected_n = 1;
    for e in b.log() {
        if e.n != expected_n {
            anomalies.push(format!(
                "log entry {} out of sequence (expected {expected_n})",
                e.n
            ));
        }
        expected_n = e.n.saturating_add(1);
        let mut buf = h.to_vec();
        buf.extend_from_slice(e.raw);
        h = sha256(&buf);
        match (e.action, e.serial, e.cert_sha256) {
            ("issue", Some(s), Some(c)) => {
                logged.insert((s, *c));
            }
            ("issue", _, _) => anomalies.push(format!(
                "log entry {}: an issue without serial or certificate",
                e.n
            )),
            ("import" | "fail", _, _) => {}
            (other, _, _) => anomalies.push(format!("log entry {}: unknown action '{other}'", e.n)),
        }
    }
    if &h != b.log_head {
        anomalies.push(
            "the log's hash chain does not lead to the signed head (entries removed or altered)"
                .into(),
        );
    }
    for c in certs.difference(&logged) {
        anomalies.push(format!(
            "serial {}: certificate not in the Guardian's log",
            c.0
        ));
    }

    // Against the reports reconciled before: each kept report is looked
    // up by serial and by UID, not scanned per device.
    let report_sha = sha256(&bytes);
    let earlier = earlier_reports(oem)?;
    let same = earlier.iter().find(|e| e.sha256 == report_sha);
    let mut all_certs = certs.clone();
    for e in earlier.iter().filter(|e| e.sha256 != report_sha) {
        let name = e.path.display();
        if e.package_id == *b.package_id {
            if e.job != b.job {
                anomalies.push(format!(
                    "package {pid} was imported twice at the Guardian: job {} ({name}) and job {} \
                     (a replayed package, or a Guardian database restored to before the import)",
                    e.job, b.job
                ));
            }
            // Of two reports of one job, the later lists every device the
            // earlier did: a Guardian that rewrote its log between them
            // (dropping a certificate it had reported) shows here.
            if e.job == b.job {
                let before: BTreeSet<u64> = e.devices.keys().copied().collect();
                let now: BTreeSet<u64> = this.keys().copied().collect();
                let (earlier_set, later_set, later_name) = if e.created <= b.created {
                    (&before, &now, "this report".to_string())
                } else {
                    (&now, &before, name.to_string())
                };
                for serial in earlier_set.difference(later_set) {
                    anomalies.push(format!(
                        "serial {serial} of job {} is missing from {later_name}, the later \
                         of two reports of the job (with {name}): the Guardian's log lost \
                         a certificate it had reported",
                        b.job
                    ));
                }
            }
            for (serial, (_, _, cert)) in &this {
                if e.devices.get(serial).is_some_and(|(_, _, c)| c != cert) {
                    anomalies.push(format!(
                        "serial {serial}: another certificate than in {name} (the serial was \
                         issued twice: a replayed package, or a restored Guardian database)"
                    ));
                }
            }
            all_certs.extend(e.devices.iter().map(|(s, (_, _, c))| (*s, *c)));
        }
        let issued_there: BTreeMap<&[u8], (u64, &[u8; 32])> = e
            .devices
            .iter()
            .filter(|(_, (_, st, _))| *st == status::ISSUED)
            .map(|(serial, (uid, _, cert))| (uid.as_slice(), (*serial, cert)))
            .collect();
        for (uid, _, cert) in this.values().filter(|(_, st, _)| *st == status::ISSUED) {
            if let Some((serial, _)) = issued_there.get(uid).filter(|(_, c)| *c != cert) {
                anomalies.push(format!(
                    "UID {} already has a certificate, serial {serial} of package {} job {} \
                     ({name}): one device provisioned twice, or a clone",
                    hex::encode(uid),
                    hex::encode(e.package_id),
                    e.job
                ));
            }
        }
    }
    let certified_overall = all_certs.len() as u64;
    if certified_overall > count && certified_overall > certified {
        anomalies.push(format!(
            "over-production across reports: {certified_overall} certificates for package {pid} \
             in this and earlier reports, count {count}"
        ));
    }

    let mut kept = same.map(|e| e.path.clone());
    if anomalies.is_empty() && same.is_none() && keep == Keep::Yes {
        let dir = oem.path().join(REPORTS_DIR);
        if !dir.is_dir() {
            std::fs::create_dir(&dir).at(&dir)?;
        }
        let path = dir.join(format!(
            "{pid}-job{}-{}.tcrep",
            b.job,
            hex::encode(&report_sha[..8])
        ));
        oem.audit().append(
            &lock,
            operator,
            Event::Reconcile {
                package_id: pid.clone(),
                job: b.job,
                issued: b.issued,
                failed: b.failed,
                report_sha256: hex::encode(report_sha),
            },
        )?;
        crate::fsutil::write_new(&path, &bytes, "kept report")?;
        kept = Some(path);
    }
    Ok(Reconciliation {
        package_id: pid,
        job: b.job,
        count,
        issued: b.issued,
        failed: b.failed,
        devices: b.device_count(),
        earlier_reports: earlier.len() - usize::from(same.is_some()),
        already_reconciled: same.is_some(),
        kept: if anomalies.is_empty() { kept } else { None },
        anomalies,
    })
}
