//! `trustchain report`: the Guardian signs, for the OEM, what a job
//! produced: one record per certified device (serial, UID, type, status,
//! certificate) and the job's hash-chained log. The signature by the
//! Guardian's signing key is the signed checkpoint of that log.
use std::path::Path;

use serde::Serialize;
use trustchain_formats::cose::{sig_structure, PROTECTED_ES256};
use trustchain_formats::report::{encode_signed, status, ReportSpec};
use trustchain_oem::crypto::sha256;
use trustchain_oem::keystore::sealed::SealedKeyStore;
use trustchain_oem::keystore::KeyStore;

use crate::dir::{sign_label, GuardianDir};
use crate::error::Result;

/// What was reported.
#[derive(Debug, Serialize)]
pub struct ReportSummary {
    /// Job.
    pub job: i64,
    /// Devices listed.
    pub devices: usize,
    /// Log entries.
    pub log_entries: usize,
    /// Log head (hex).
    pub log_head: String,
    /// SHA-256 of the report file.
    pub sha256: String,
}

/// Writes the signed report of `job` to `out` (must not exist).
pub fn write_report(
    g: &GuardianDir,
    ks: &SealedKeyStore,
    job: i64,
    out: &Path,
) -> Result<ReportSummary> {
    if out.exists() {
        return Err(trustchain_oem::Error::AlreadyExists {
            path: out.to_path_buf(),
            what: "report file",
        }
        .into());
    }
    let store = g.store()?;
    let rec = store.job(job)?;
    let package_id = store.package_id(job)?;
    let (devices, log, head) = store.report_data(job)?;
    let created = trustchain_oem::audit::unix_now();
    let spec = ReportSpec {
        package_id,
        job: job as u64,
        oem_id: rec.oem_id,
        product_id: rec.product_id,
        count: rec.count,
        issued: rec.issued,
        failed: rec.failed,
        created,
        devices: devices
            .iter()
            .map(|(serial, uid, ty, failed, cert)| {
                (
                    *serial,
                    &uid[..],
                    *ty as u64,
                    if *failed {
                        status::FAILED
                    } else {
                        status::ISSUED
                    },
                    &cert[..],
                )
            })
            .collect(),
        log: log.iter().map(|e| &e[..]).collect(),
        log_head: head,
    };
    let payload = spec.encode();
    let mut tbs = Vec::with_capacity(payload.len() + 32);
    sig_structure(&PROTECTED_ES256, &payload, |b| tbs.extend_from_slice(b));
    let signature = ks.signer(&sign_label())?.sign(&tbs)?;
    let identity = g.identity()?;
    let signed = encode_signed(
        &identity.kem_cert,
        &identity.signing_cert,
        &payload,
        &signature,
    );
    trustchain_oem::fsutil::write_new(out, &signed, "report file")?;
    let mut store = store;
    store.audit(
        "report",
        &format!(
            "job {job} {} devices sha256 {}",
            devices.len(),
            hex::encode(sha256(&signed))
        ),
    )?;
    g.checkpoint(ks)?;
    Ok(ReportSummary {
        job,
        devices: devices.len(),
        log_entries: log.len(),
        log_head: hex::encode(head),
        sha256: hex::encode(sha256(&signed)),
    })
}
