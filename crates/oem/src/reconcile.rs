//! `trustchain oem reconcile`: the OEM checks a Guardian's signed report
//! against what it wrapped: the signature and the Guardian's identity (the
//! one the package was wrapped for), issued <= count, every certificate
//! issued by the package's issuing CA and accounted for in the job's log,
//! serials in range and unique, UIDs unique, and the log's hash chain
//! intact up to the signed head.
use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use trustchain_formats::cose::sig_structure;
use trustchain_formats::report::{status, Report};

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
}

/// Reconciles `report` against the OEM directory.
pub fn reconcile(oem: &OemDir, report_path: &Path) -> Result<Reconciliation> {
    let bytes = std::fs::read(report_path).at(report_path)?;
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
        certs.insert((d.serial, sha256(d.cert)));
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
    Ok(Reconciliation {
        package_id: pid,
        job: b.job,
        count,
        issued: b.issued,
        failed: b.failed,
        devices: b.device_count(),
        anomalies,
    })
}
