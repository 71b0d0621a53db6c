//! The OEM's append-only audit log: one JSON object per line, each carrying
//! the SHA-256 of the line before it, so an edit anywhere breaks the chain
//! from that line on. Every key generation and every mastering is logged.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::sha256;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::DirLock;

/// The hash that stands before the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3, ...
    pub seq: u64,
    /// RFC 3339 UTC.
    pub time: String,
    /// Who did it (operating-system user unless given).
    pub operator: String,
    /// What happened, with its details.
    #[serde(flatten)]
    pub event: Event,
    /// SHA-256 (hex) of the previous line, without its newline.
    pub prev: String,
}

/// What was done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Event {
    /// The hierarchy was created.
    OemInit {
        /// OEM ID.
        oem_id: u32,
        /// Root certificate SHA-256.
        root_sha256: String,
    },
    /// A product was created.
    ProductCreate {
        /// Product ID.
        product: u32,
        /// Its name.
        name: String,
        /// The product key's kid.
        product_key_kid: String,
    },
    /// A release was mastered.
    Master {
        /// Product ID.
        product: u32,
        /// Version.
        version: String,
        /// Security counter.
        security_counter: u64,
        /// Plaintext SHA-256.
        image_sha256: String,
        /// `update.enc` SHA-256.
        ciphertext_sha256: String,
        /// `update.upk` SHA-256.
        upk_sha256: String,
        /// Recipient count (product key + devices).
        recipients: usize,
        /// Whether a lower counter was forced.
        forced: bool,
        /// Output directory.
        out: String,
    },
    /// A production package was wrapped for a Guardian.
    Wrap {
        /// Product ID.
        product: u32,
        /// Package ID, hex.
        package_id: String,
        /// Target Guardian ID, hex.
        guardian: String,
        /// Production count.
        count: u64,
        /// First serial.
        serial_start: u64,
        /// Release version in the package.
        release_version: String,
        /// The per-package issuing CA certificate SHA-256.
        issuing_ca_sha256: String,
        /// The package file SHA-256.
        package_sha256: String,
    },
    /// A certificate was revoked.
    Revoke {
        /// Its serial number, hex.
        serial: String,
        /// Its subject.
        subject: String,
        /// The issuer whose CRL lists it (`device-ca` or `package <id>`).
        issuer: String,
        /// RFC 5280 reason.
        reason: String,
        /// The new CRL's number.
        crl_number: u64,
        /// The new CRL's SHA-256 (DER).
        crl_sha256: String,
    },
    /// A Guardian's report reconciled and was kept
    /// (`OEM_DIR/reports/`), for later reports to be checked against.
    Reconcile {
        /// Package ID, hex.
        package_id: String,
        /// The Guardian's job.
        job: u64,
        /// Devices certified and provisioned.
        issued: u64,
        /// Devices certified, then failed.
        failed: u64,
        /// SHA-256 of the report file.
        report_sha256: String,
    },
    /// An issuer's CRL was re-signed with the same entries and a new
    /// validity (`oem revoke --refresh`), so that it stays current.
    CrlRefresh {
        /// The issuer (`device-ca` or `package <id>`).
        issuer: String,
        /// The new CRL's number.
        crl_number: u64,
        /// How many certificates it lists (unchanged).
        revoked_count: u64,
        /// Its thisUpdate, RFC 3339.
        this_update: String,
        /// Its nextUpdate, RFC 3339.
        next_update: String,
        /// The new CRL's SHA-256 (DER).
        crl_sha256: String,
    },
}

/// The log file.
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log at `path` (created on first append).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Reads and verifies every record.
    pub fn records(&self) -> Result<Vec<Record>> {
        if !self.path.exists() {
            return Ok(vec![]);
        }
        let text = std::fs::read_to_string(&self.path).at(&self.path)?;
        let mut prev = GENESIS.to_string();
        let mut out = vec![];
        for (i, line) in text.lines().enumerate() {
            let rec: Record = serde_json::from_str(line).map_err(|_| Error::AuditChain {
                path: self.path.clone(),
                line: i + 1,
            })?;
            if rec.prev != prev || rec.seq != i as u64 + 1 {
                return Err(Error::AuditChain {
                    path: self.path.clone(),
                    line: i + 1,
                });
            }
            prev = hex::encode(sha256(line.as_bytes()));
            out.push(rec);
        }
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(Error::AuditChain {
                path: self.path.clone(),
                line: out.len(),
            });
        }
        Ok(out)
    }

    /// Appends a record (after verifying the chain) and syncs it to disk.
    /// Only under the lock of the log's directory ([`OemDir::lock`]), which
    /// the caller took before reading what the record is about.
    ///
    /// [`OemDir::lock`]: crate::oem::OemDir::lock
    pub fn append(&self, _held: &DirLock, operator: &str, event: Event) -> Result<Record> {
        let records = self.records()?;
        let prev = match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .lines()
                .last()
                .map(|l| hex::encode(sha256(l.as_bytes())))
                .unwrap_or(GENESIS.into()),
            Err(_) => GENESIS.to_string(),
        };
        let rec = Record {
            seq: records.len() as u64 + 1,
            time: now_rfc3339(),
            operator: operator.to_string(),
            event,
            prev,
        };
        let line = serde_json::to_string(&rec).map_err(|e| Error::Usage(e.to_string()))?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .at(&self.path)?;
        f.write_all(format!("{line}\n").as_bytes()).at(&self.path)?;
        f.sync_all().at(&self.path)?;
        Ok(rec)
    }

    /// The highest security counter mastered for `product`, if any.
    pub fn last_counter(&self, product: u32) -> Result<Option<u64>> {
        Ok(self
            .records()?
            .iter()
            .filter_map(|r| match &r.event {
                Event::Master {
                    product: p,
                    security_counter,
                    ..
                } if *p == product => Some(*security_counter),
                _ => None,
            })
            .max())
    }
}

/// Now, Unix seconds (0 if the system clock is before 1970): the one
/// reading of the clock that expiries, reports and logs use.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, RFC 3339 UTC, seconds precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The operator name from the environment.
pub fn default_operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(product: u32, counter: u64) -> Event {
        Event::Master {
            product,
            version: "1.0.0".into(),
            security_counter: counter,
            image_sha256: "aa".into(),
            ciphertext_sha256: "bb".into(),
            upk_sha256: "cc".into(),
            recipients: 1,
            forced: false,
            out: "x".into(),
        }
    }

    #[test]
    fn chain_holds_and_detects_edits() {
        let tmp = tempfile::tempdir().unwrap();
        let log = AuditLog::new(&tmp.path().join("audit.log"));
        let lock = DirLock::acquire(tmp.path()).unwrap();
        log.append(&lock, "alice", master(1, 5)).unwrap();
        log.append(&lock, "alice", master(2, 9)).unwrap();
        log.append(&lock, "bob", master(1, 7)).unwrap();
        assert_eq!(log.records().unwrap().len(), 3);
        assert_eq!(log.last_counter(1).unwrap(), Some(7));
        assert_eq!(log.last_counter(3).unwrap(), None);
        // Lower the counter of line 3 by hand: the chain still ends there,
        // so edit line 2 instead, which breaks line 3's `prev`.
        let p = tmp.path().join("audit.log");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            text.replacen("\"security_counter\":9", "\"security_counter\":1", 1),
        )
        .unwrap();
        assert!(matches!(
            log.records(),
            Err(Error::AuditChain { line: 3, .. })
        ));
        assert!(log.append(&lock, "eve", master(1, 1)).is_err());
    }

    /// Writers that each take the directory's lock before appending, from
    /// several threads (each its own open file, as separate processes
    /// would have): every record lands once, in one unbroken chain.
    #[test]
    fn concurrent_writers_under_the_lock_keep_one_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (threads, each) = (4u64, 25u64);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..each {
                        let lock = DirLock::acquire(&dir).unwrap();
                        AuditLog::new(&dir.join("audit.log"))
                            .append(&lock, "w", master(t as u32 + 1, i))
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let records = AuditLog::new(&dir.join("audit.log")).records().unwrap();
        assert_eq!(records.len() as u64, threads * each);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1);
        }
        // Each writer's records are all there, in its order.
        for t in 0..threads {
            let counters: Vec<u64> = records
                .iter()
                .filter_map(|r| match &r.event {
                    Event::Master {
                        product,
                        security_counter,
                        ..
                    } if u64::from(*product) == t + 1 => Some(*security_counter),
                    _ => None,
                })
                .collect();
            assert_eq!(counters, (0..each).collect::<Vec<_>>());
        }
    }

    /// While one holds the lock, another waits for it.
    #[test]
    fn the_lock_excludes_a_second_holder_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(tmp.path()).unwrap();
        let f = std::fs::File::open(tmp.path()).unwrap();
        assert!(matches!(
            f.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(first);
        f.try_lock().unwrap();
    }
}
