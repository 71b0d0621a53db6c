//! The Guardian's database (SQLite, WAL, `synchronous=FULL`): the packages
//! it has seen (replay protection) and the jobs made from them, with their
//! counts. A job's secrets are not here: they are sealed in the keystore.
//! Behind this one type, so a PostgreSQL store for multi-station centres
//! can replace it.
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS packages (
    package_id  BLOB PRIMARY KEY,
    job         INTEGER NOT NULL,
    imported    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    package_id      BLOB NOT NULL UNIQUE,
    oem_id          INTEGER NOT NULL,
    product_id      INTEGER NOT NULL,
    oem_name        TEXT NOT NULL,
    product_name    TEXT NOT NULL,
    count           INTEGER NOT NULL,
    issued          INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    serial_start    INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    expires         INTEGER NOT NULL,
    device_types    TEXT NOT NULL,
    uid_low         BLOB,
    uid_high        BLOB,
    template        TEXT NOT NULL,
    issuing_ca_cert BLOB NOT NULL,
    device_ca_cert  BLOB NOT NULL,
    root_cert       BLOB NOT NULL,
    mastering_cert  BLOB NOT NULL,
    release_upk     BLOB NOT NULL,
    release_enc     BLOB NOT NULL,
    imported        TEXT NOT NULL,
    CHECK (issued + failed <= count)
);
CREATE TABLE IF NOT EXISTS devices (
    job          INTEGER NOT NULL REFERENCES jobs(id),
    serial       INTEGER NOT NULL,
    uid          BLOB NOT NULL,
    device_type  INTEGER NOT NULL,
    cert_sha256  BLOB NOT NULL,
    cert         BLOB NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('issued', 'failed')),
    reason       TEXT,
    time         TEXT NOT NULL,
    PRIMARY KEY (job, serial),
    UNIQUE (job, uid)
);
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY,
    entry   BLOB NOT NULL,
    hash    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq        INTEGER PRIMARY KEY REFERENCES audit(seq),
    head       BLOB NOT NULL,
    signature  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    job    INTEGER NOT NULL REFERENCES jobs(id),
    n      INTEGER NOT NULL,
    entry  BLOB NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (job, n)
);
";

/// The Guardian-wide audit log: every action, chained. Entry = CBOR
/// `[seq, action, detail, time]`; `H_0` = 32 zero bytes, `H_n` =
/// SHA-256(`H_{n-1}` || entry). Checkpoints sign (seq, head) with the
/// Guardian's signing key.
fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    action: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    let mut head = AuditHead::load(tx)?;
    head.append(tx, action, detail)
}

/// The last (seq, hash) of the audit log, read once per transaction and
/// carried forward in memory as entries are appended inside it (the
/// transaction holds the write lock, so nobody else appends meanwhile).
struct AuditHead {
    seq: i64,
    hash: Vec<u8>,
}

impl AuditHead {
    fn load(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Self> {
        let last: Option<(i64, Vec<u8>)> = tx
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(match last {
            Some((seq, hash)) => Self { seq, hash },
            None => Self {
                seq: 0,
                hash: vec![0u8; 32],
            },
        })
    }

    fn append(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        action: &str,
        detail: &str,
    ) -> rusqlite::Result<()> {
        let seq = self.seq + 1;
        let time = trustchain_oem::audit::unix_now();
        let mut e = minicbor::Encoder::new(Vec::new());
        let _ = e
            .array(4)
            .and_then(|e| e.i64(seq))
            .and_then(|e| e.str(action))
            .and_then(|e| e.str(detail))
            .and_then(|e| e.u64(time));
        let entry = e.into_writer();
        let mut h = std::mem::take(&mut self.hash);
        h.extend_from_slice(&entry);
        let hash = trustchain_oem::crypto::sha256(&h);
        tx.prepare_cached("INSERT INTO audit (seq, entry, hash) VALUES (?1, ?2, ?3)")?
            .execute(params![seq, entry, &hash[..]])?;
        self.seq = seq;
        self.hash = hash.to_vec();
        Ok(())
    }
}

/// The message a checkpoint signature covers.
pub fn checkpoint_message(seq: i64, head: &[u8]) -> Vec<u8> {
    let mut m = b"trustchain guardian checkpoint v1\0".to_vec();
    m.extend_from_slice(&(seq as u64).to_be_bytes());
    m.extend_from_slice(head);
    m
}

/// Appends to a job's hash-chained log inside the caller's transaction:
/// `H_0 = SHA-256(package ID)`, `H_n = SHA-256(H_{n-1} || entry_n)`.
fn append_log(
    tx: &rusqlite::Transaction<'_>,
    job: i64,
    action: &str,
    serial: Option<u64>,
    cert_sha256: Option<&[u8; 32]>,
) -> rusqlite::Result<()> {
    LogHeads::load(tx, job)?.append(tx, action, serial, cert_sha256)
}

/// A job's log head and the audit head, read once per transaction and
/// carried forward in memory, so that a group commit appends N entries
/// with N inserts and no re-reads.
struct LogHeads {
    job: i64,
    n: i64,
    hash: Vec<u8>,
    audit: AuditHead,
}

impl LogHeads {
    fn load(tx: &rusqlite::Transaction<'_>, job: i64) -> rusqlite::Result<Self> {
        let last: Option<(i64, Vec<u8>)> = tx
            .prepare_cached("SELECT n, hash FROM log WHERE job = ?1 ORDER BY n DESC LIMIT 1")?
            .query_row(params![job], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (n, hash) = match last {
            Some(last) => last,
            None => {
                let pid: Vec<u8> = tx
                    .prepare_cached("SELECT package_id FROM jobs WHERE id = ?1")?
                    .query_row(params![job], |r| r.get(0))?;
                (0, trustchain_oem::crypto::sha256(&pid).to_vec())
            }
        };
        Ok(Self {
            job,
            n,
            hash,
            audit: AuditHead::load(tx)?,
        })
    }

    fn append(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        action: &str,
        serial: Option<u64>,
        cert_sha256: Option<&[u8; 32]>,
    ) -> rusqlite::Result<()> {
        let (job, n) = (self.job, self.n + 1);
        let time = trustchain_oem::audit::unix_now();
        let detail = format!(
            "job {job}{}",
            serial.map(|s| format!(" serial {s}")).unwrap_or_default()
        );
        self.audit.append(tx, action, &detail)?;
        let entry = trustchain_formats::report::encode_log_entry(
            n as u64,
            action,
            serial,
            cert_sha256,
            time,
        );
        let mut h = std::mem::take(&mut self.hash);
        h.extend_from_slice(&entry);
        let hash = trustchain_oem::crypto::sha256(&h);
        tx.prepare_cached("INSERT INTO log (job, n, entry, hash) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![job, n, entry, &hash[..]])?;
        self.n = n;
        self.hash = hash.to_vec();
        Ok(())
    }
}

/// The database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A job as listed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JobSummary {
    /// Job ID.
    pub id: i64,
    /// Package ID (hex).
    pub package_id: String,
    /// OEM ID.
    pub oem_id: u32,
    /// Product ID.
    pub product_id: u32,
    /// Product name.
    pub product_name: String,
    /// Production count.
    pub count: u64,
    /// Certificates issued to devices that were then provisioned.
    pub issued: u64,
    /// Certificates issued to devices that then failed.
    pub failed: u64,
    /// What may still be produced.
    pub remaining: u64,
    /// Expiry (Unix seconds).
    pub expires: u64,
}

/// One device's outcome in a group commit: (serial, certificate DER) or why not.
pub type Issued = Result<(u64, Vec<u8>)>;

/// Everything about a job but its secrets.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct JobRecord {
    pub id: i64,
    pub oem_id: u32,
    pub product_id: u32,
    pub oem_name: String,
    pub product_name: String,
    pub count: u64,
    pub issued: u64,
    pub failed: u64,
    pub serial_start: u64,
    pub expires: u64,
    pub device_types: Vec<u32>,
    pub uid_range: Option<(Vec<u8>, Vec<u8>)>,
    pub template: String,
    pub issuing_ca_cert: Vec<u8>,
    pub device_ca_cert: Vec<u8>,
    pub root_cert: Vec<u8>,
    pub mastering_cert: Vec<u8>,
    pub release_upk: Vec<u8>,
    pub release_enc: Vec<u8>,
}

impl JobRecord {
    /// What may still be produced.
    pub fn remaining(&self) -> u64 {
        self.count.saturating_sub(self.issued + self.failed)
    }
}

/// A device a job issued a certificate to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Serial number.
    pub serial: u64,
    /// UID (hex).
    pub uid: String,
    /// Device type.
    pub device_type: u32,
    /// SHA-256 of its certificate (hex).
    pub cert_sha256: String,
    /// `issued` or `failed`.
    pub status: String,
    /// Why it failed.
    pub reason: Option<String>,
}

/// A new job, from a verified package.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Package ID.
    pub package_id: &'a [u8; 16],
    /// OEM ID.
    pub oem_id: u32,
    /// Product ID.
    pub product_id: u32,
    /// OEM name.
    pub oem_name: &'a str,
    /// Product name.
    pub product_name: &'a str,
    /// Count.
    pub count: u64,
    /// First serial.
    pub serial_start: u64,
    /// Created.
    pub created: u64,
    /// Expires.
    pub expires: u64,
    /// Allowed device types.
    pub device_types: Vec<u32>,
    /// UID range.
    pub uid_range: Option<(&'a [u8], &'a [u8])>,
    /// Template (TOML).
    pub template: &'a str,
    /// Issuing CA certificate.
    pub issuing_ca_cert: &'a [u8],
    /// Device CA certificate.
    pub device_ca_cert: &'a [u8],
    /// Root certificate.
    pub root_cert: &'a [u8],
    /// Mastering certificate.
    pub mastering_cert: &'a [u8],
    /// Release UPK.
    pub release_upk: &'a [u8],
    /// Release ciphertext.
    pub release_enc: &'a [u8],
}

impl Store {
    fn db_err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn connect(path: &Path) -> Result<Self> {
        let err = |source| Error::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Creates the database.
    pub fn create(path: &Path) -> Result<Self> {
        let s = Self::connect(path)?;
        s.conn.execute_batch(SCHEMA).map_err(s.db_err())?;
        Ok(s)
    }

    /// Opens the database.
    pub fn open(path: &Path) -> Result<Self> {
        let s = Self::connect(path)?;
        s.conn.execute_batch(SCHEMA).map_err(s.db_err())?;
        Ok(s)
    }

    /// The job made from `package_id`, if it was imported.
    pub fn job_for_package(&self, package_id: &[u8; 16]) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT job FROM packages WHERE package_id = ?1",
                params![&package_id[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())
    }

    /// Records a package and its job in one transaction; `seal` runs inside
    /// it (the job's secrets go into the keystore) and aborts the whole
    /// import if it fails. Returns the job ID.
    pub fn insert_job(
        &mut self,
        job: &NewJob<'_>,
        seal: impl FnOnce(i64) -> Result<()>,
    ) -> Result<i64> {
        let path = self.path.clone();
        let err = |source| Error::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let now = trustchain_oem::audit::now_rfc3339();
        let types = serde_json::to_string(&job.device_types).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO jobs (package_id, oem_id, product_id, oem_name, product_name, count, serial_start, created, expires,
                device_types, uid_low, uid_high, template, issuing_ca_cert, device_ca_cert, root_cert, mastering_cert,
                release_upk, release_enc, imported)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            params![
                &job.package_id[..],
                job.oem_id,
                job.product_id,
                job.oem_name,
                job.product_name,
                job.count as i64,
                job.serial_start as i64,
                job.created as i64,
                job.expires as i64,
                types,
                job.uid_range.map(|r| r.0.to_vec()),
                job.uid_range.map(|r| r.1.to_vec()),
                job.template,
                job.issuing_ca_cert,
                job.device_ca_cert,
                job.root_cert,
                job.mastering_cert,
                job.release_upk,
                job.release_enc,
                now,
            ],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO packages (package_id, job, imported) VALUES (?1, ?2, ?3)",
            params![&job.package_id[..], id, now],
        )
        .map_err(err)?;
        append_log(&tx, id, "import", None, None).map_err(err)?;
        seal(id)?;
        tx.commit().map_err(err)?;
        Ok(id)
    }

    /// One job's full record.
    pub fn job(&self, id: i64) -> Result<JobRecord> {
        self.conn
            .query_row(
                "SELECT id, oem_id, product_id, oem_name, product_name, count, issued, failed, serial_start, expires,
                        device_types, uid_low, uid_high, template, issuing_ca_cert, device_ca_cert, root_cert,
                        mastering_cert, release_upk, release_enc FROM jobs WHERE id = ?1",
                params![id],
                |r| {
                    let types: String = r.get(10)?;
                    Ok(JobRecord {
                        id: r.get(0)?,
                        oem_id: r.get(1)?,
                        product_id: r.get(2)?,
                        oem_name: r.get(3)?,
                        product_name: r.get(4)?,
                        count: r.get::<_, i64>(5)? as u64,
                        issued: r.get::<_, i64>(6)? as u64,
                        failed: r.get::<_, i64>(7)? as u64,
                        serial_start: r.get::<_, i64>(8)? as u64,
                        expires: r.get::<_, i64>(9)? as u64,
                        device_types: serde_json::from_str(&types).unwrap_or_default(),
                        uid_range: match (r.get::<_, Option<Vec<u8>>>(11)?, r.get::<_, Option<Vec<u8>>>(12)?) {
                            (Some(lo), Some(hi)) => Some((lo, hi)),
                            _ => None,
                        },
                        template: r.get(13)?,
                        issuing_ca_cert: r.get(14)?,
                        device_ca_cert: r.get(15)?,
                        root_cert: r.get(16)?,
                        mastering_cert: r.get(17)?,
                        release_upk: r.get(18)?,
                        release_enc: r.get(19)?,
                    })
                },
            )
            .optional()
            .map_err(self.db_err())?
            .ok_or(Error::NoSuchJob(id))
    }

    /// Group commit: issues certificates for several devices in one
    /// transaction (one fsync), each consuming one unit of the count and
    /// recorded (device row, job log, audit log) before any is returned.
    /// Per device: the certificate, or why not (used up, duplicate UID).
    pub fn issue_batch(
        &mut self,
        job: i64,
        devices: &[(&[u8], u32)],
        mut sign: impl FnMut(u64, usize) -> Result<Vec<u8>>,
    ) -> Result<Vec<Issued>> {
        let path = self.path.clone();
        let err = |source| Error::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let row: Option<(i64, i64, i64, i64)> = tx
            .prepare_cached("SELECT count, issued, failed, serial_start FROM jobs WHERE id = ?1")
            .map_err(err)?
            .query_row(params![job], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(err)?;
        let (count, issued, failed, serial_start) = row.ok_or(Error::NoSuchJob(job))?;
        let mut used = issued + failed;
        let mut made = 0i64;
        let mut out = Vec::with_capacity(devices.len());
        let now = trustchain_oem::audit::now_rfc3339();
        let mut heads = LogHeads::load(&tx, job).map_err(err)?;
        for (i, (uid, device_type)) in devices.iter().enumerate() {
            if used >= count {
                out.push(Err(Error::JobExhausted(job)));
                continue;
            }
            let taken: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM devices WHERE job = ?1 AND uid = ?2)")
                .map_err(err)?
                .query_row(params![job, uid], |r| r.get(0))
                .map_err(err)?;
            if taken {
                out.push(Err(Error::DuplicateUid {
                    uid: hex::encode(uid),
                    job,
                }));
                continue;
            }
            let serial = (serial_start + used) as u64;
            let cert = match sign(serial, i) {
                Ok(c) => c,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let fp = trustchain_oem::crypto::sha256(&cert);
            tx.prepare_cached("INSERT INTO devices (job, serial, uid, device_type, cert_sha256, cert, status, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'issued', ?7)").map_err(err)?.execute(params![job, serial as i64, uid, device_type, &fp[..], &cert, now],
            )
            .map_err(err)?;
            heads
                .append(&tx, "issue", Some(serial), Some(&fp))
                .map_err(err)?;
            used += 1;
            made += 1;
            out.push(Ok((serial, cert)));
        }
        if made > 0 {
            tx.prepare_cached("UPDATE jobs SET issued = issued + ?2 WHERE id = ?1")
                .map_err(err)?
                .execute(params![job, made])
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(out)
    }

    /// Records that the device with `serial` failed after its certificate
    /// was issued (it still counts against the job, as failed).
    pub fn mark_failed(&mut self, job: i64, serial: u64, reason: &str) -> Result<()> {
        let path = self.path.clone();
        let err = |source| Error::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let n = tx
            .execute(
                "UPDATE devices SET status = 'failed', reason = ?3 WHERE job = ?1 AND serial = ?2 AND status = 'issued'",
                params![job, serial as i64, reason],
            )
            .map_err(err)?;
        if n == 1 {
            tx.execute(
                "UPDATE jobs SET issued = issued - 1, failed = failed + 1 WHERE id = ?1",
                params![job],
            )
            .map_err(err)?;
            append_log(&tx, job, "fail", Some(serial), None).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// A job's devices with their certificates, and its log (entries, head).
    #[allow(clippy::type_complexity)]
    pub fn report_data(
        &self,
        job: i64,
    ) -> Result<(
        Vec<(u64, Vec<u8>, u32, bool, Vec<u8>)>,
        Vec<Vec<u8>>,
        [u8; 32],
    )> {
        let mut st = self
            .conn
            .prepare("SELECT serial, uid, device_type, status, cert FROM devices WHERE job = ?1 ORDER BY serial")
            .map_err(self.db_err())?;
        let devices = st
            .query_map(params![job], |r| {
                let status: String = r.get(3)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get(1)?,
                    r.get(2)?,
                    status == "failed",
                    r.get(4)?,
                ))
            })
            .map_err(self.db_err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.db_err())?;
        let mut st = self
            .conn
            .prepare("SELECT entry, hash FROM log WHERE job = ?1 ORDER BY n")
            .map_err(self.db_err())?;
        let rows = st
            .query_map(params![job], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(self.db_err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.db_err())?;
        let head = rows
            .last()
            .and_then(|(_, h)| <[u8; 32]>::try_from(&h[..]).ok())
            .unwrap_or([0; 32]);
        Ok((devices, rows.into_iter().map(|(e, _)| e).collect(), head))
    }

    /// Records an action outside a job (trusting a root, writing a report).
    pub fn audit(&mut self, action: &str, detail: &str) -> Result<()> {
        let path = self.path.clone();
        let err = |source| Error::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        append_audit(&tx, action, detail).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Signs the current head of the audit log with `sign` and stores the
    /// checkpoint. Returns (seq, head).
    pub fn checkpoint(
        &mut self,
        sign: impl FnOnce(&[u8]) -> Result<[u8; 64]>,
    ) -> Result<(i64, [u8; 32])> {
        let path = self.path.clone();
        let err = |source| Error::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let (seq, head): (i64, Vec<u8>) = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?
            .unwrap_or((0, vec![0u8; 32]));
        let head: [u8; 32] = head.try_into().unwrap_or([0; 32]);
        if seq == 0 {
            return Ok((0, head));
        }
        let sig = sign(&checkpoint_message(seq, &head))?;
        tx.execute(
            "INSERT OR REPLACE INTO checkpoints (seq, head, signature) VALUES (?1, ?2, ?3)",
            params![seq, &head[..], &sig[..]],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((seq, head))
    }

    /// Every row of a `(integer, blob, blob)` query.
    #[allow(clippy::type_complexity)]
    fn seq_blob_rows(&self, sql: &str) -> Result<Vec<(i64, Vec<u8>, Vec<u8>)>> {
        let mut st = self.conn.prepare(sql).map_err(self.db_err())?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.db_err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.db_err())?;
        Ok(rows)
    }

    /// Verifies the audit chain and every checkpoint signature against
    /// `verify(message, signature)`. Returns (entries, checkpoints), or the
    /// first problem.
    pub fn verify_audit(
        &self,
        verify: impl Fn(&[u8], &[u8; 64]) -> bool,
    ) -> Result<std::result::Result<(u64, u64), String>> {
        let rows = self.seq_blob_rows("SELECT seq, entry, hash FROM audit ORDER BY seq")?;
        let mut prev = vec![0u8; 32];
        let mut heads = std::collections::BTreeMap::new();
        for (i, (seq, entry, hash)) in rows.iter().enumerate() {
            if *seq != i as i64 + 1 {
                return Ok(Err(format!("audit entry {seq} out of sequence")));
            }
            let mut h = prev.clone();
            h.extend_from_slice(entry);
            let want = trustchain_oem::crypto::sha256(&h);
            if want[..] != hash[..] {
                return Ok(Err(format!("audit chain broken at entry {seq}")));
            }
            heads.insert(*seq, want);
            prev = want.to_vec();
        }
        let cps =
            self.seq_blob_rows("SELECT seq, head, signature FROM checkpoints ORDER BY seq")?;
        for (seq, head, sig) in &cps {
            let Some(h) = heads.get(seq) else {
                return Ok(Err(format!("checkpoint {seq} names an entry that is gone")));
            };
            let sig: Option<&[u8; 64]> = sig.as_slice().try_into().ok();
            if h[..] != head[..] || !sig.is_some_and(|s| verify(&checkpoint_message(*seq, head), s))
            {
                return Ok(Err(format!(
                    "checkpoint {seq} does not match the log or its signature"
                )));
            }
        }
        Ok(Ok((rows.len() as u64, cps.len() as u64)))
    }

    /// The package ID of a job.
    pub fn package_id(&self, job: i64) -> Result<[u8; 16]> {
        let v: Vec<u8> = self
            .conn
            .query_row(
                "SELECT package_id FROM jobs WHERE id = ?1",
                params![job],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db_err())?
            .ok_or(Error::NoSuchJob(job))?;
        v.try_into().map_err(|_| Error::NoSuchJob(job))
    }

    /// The devices of a job, by serial.
    pub fn devices(&self, job: i64) -> Result<Vec<DeviceRecord>> {
        let mut st = self
            .conn
            .prepare("SELECT serial, uid, device_type, cert_sha256, status, reason FROM devices WHERE job = ?1 ORDER BY serial")
            .map_err(self.db_err())?;
        let rows = st
            .query_map(params![job], |r| {
                Ok(DeviceRecord {
                    serial: r.get::<_, i64>(0)? as u64,
                    uid: hex::encode(r.get::<_, Vec<u8>>(1)?),
                    device_type: r.get(2)?,
                    cert_sha256: hex::encode(r.get::<_, Vec<u8>>(3)?),
                    status: r.get(4)?,
                    reason: r.get(5)?,
                })
            })
            .map_err(self.db_err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.db_err())
    }

    /// Every job.
    pub fn jobs(&self) -> Result<Vec<JobSummary>> {
        let mut st = self
            .conn
            .prepare("SELECT id, package_id, oem_id, product_id, product_name, count, issued, failed, expires FROM jobs ORDER BY id")
            .map_err(self.db_err())?;
        let rows = st
            .query_map([], |r| {
                let count: i64 = r.get(5)?;
                let issued: i64 = r.get(6)?;
                let failed: i64 = r.get(7)?;
                Ok(JobSummary {
                    id: r.get(0)?,
                    package_id: hex::encode(r.get::<_, Vec<u8>>(1)?),
                    oem_id: r.get(2)?,
                    product_id: r.get(3)?,
                    product_name: r.get(4)?,
                    count: count as u64,
                    issued: issued as u64,
                    failed: failed as u64,
                    remaining: (count - issued - failed).max(0) as u64,
                    expires: r.get::<_, i64>(8)? as u64,
                })
            })
            .map_err(self.db_err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.db_err())
    }
}
