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
";

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
        seal(id)?;
        tx.commit().map_err(err)?;
        Ok(id)
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
