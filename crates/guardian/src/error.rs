//! Errors of the Guardian. Toward an attacker's package they stay coarse
//! ("cannot be opened by this Guardian"); toward the operator they say what
//! to do.
use std::path::PathBuf;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong at the Guardian.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the shared OEM-side library (files, keystore, PKI).
    #[error(transparent)]
    Oem(#[from] trustchain_oem::Error),
    /// The database.
    #[error("{path}: database: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The directory is not a Guardian's.
    #[error("{path} is not a trustchain Guardian directory: {problem}")]
    NotAGuardian {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The package is not for this Guardian, or was altered.
    #[error("{path}: the package cannot be opened by this Guardian")]
    NotForThisGuardian {
        /// The package.
        path: PathBuf,
    },
    /// The package opened but is refused.
    #[error("{path}: package refused: {problem}")]
    PackageRefused {
        /// The package.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// The package was imported before.
    #[error("{path}: package {package_id} was already imported (job {job})")]
    Replay {
        /// The package.
        path: PathBuf,
        /// Its ID.
        package_id: String,
        /// The job made from it.
        job: i64,
    },
    /// The package's OEM root is not trusted here.
    #[error("{path}: the package's OEM root (SHA-256 {root}) is not trusted by this Guardian")]
    UntrustedRoot {
        /// The package.
        path: PathBuf,
        /// The root's fingerprint.
        root: String,
    },
    /// The audit log does not verify.
    #[error("{path}: the audit log does not verify: {problem}")]
    AuditBroken {
        /// The database.
        path: PathBuf,
        /// The first problem.
        problem: String,
    },
    /// No such job.
    #[error("job {0} does not exist")]
    NoSuchJob(i64),
    /// A device the job does not allow.
    #[error("device UID {uid} type {device_type} is not allowed by job {job}")]
    DeviceNotAllowed {
        /// UID (hex).
        uid: String,
        /// Type.
        device_type: u32,
        /// Job.
        job: i64,
    },
    /// A UID already has a certificate in this job (a clone?).
    #[error("device UID {uid} already has a certificate in job {job}")]
    DuplicateUid {
        /// UID (hex).
        uid: String,
        /// Job.
        job: i64,
    },
    /// The job's count is used up.
    #[error("job {0} has no devices left to produce")]
    JobExhausted(i64),
    /// The job expired.
    #[error("job {0} has expired")]
    JobExpired(i64),
}

impl Error {
    /// What the operator can do.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Oem(e) => return e.hint(),
            Error::NotForThisGuardian { .. } => {
                "the OEM must wrap the package with this Guardian's identity.pem (trustchain wrap --guardian); nothing was imported".into()
            }
            Error::UntrustedRoot { .. } => {
                "check the fingerprint with the OEM out of band, then `trustchain guardian trust GUARDIAN_DIR ROOT.pem`".into()
            }
            Error::Replay { .. } => "each package is imported once; ask the OEM for a new package for more devices".into(),
            Error::PackageRefused { .. } => "ask the OEM for a new package; nothing was imported".into(),
            Error::NotAGuardian { .. } => "pass the directory made by `trustchain guardian init`".into(),
            Error::NoSuchJob(_) => "list jobs with `trustchain guardian jobs GUARDIAN_DIR`".into(),
            Error::JobExhausted(_) | Error::JobExpired(_) => "ask the OEM for a new package".into(),
            Error::DeviceNotAllowed { .. } => "use devices of the types and UID range the OEM allowed for this job".into(),
            Error::DuplicateUid { .. } => "a UID is certified once per job; investigate the part (clone?)".into(),
            Error::AuditBroken { .. } => "the Guardian's records were altered; stop production and investigate".into(),
            Error::Db { .. } => return None,
        })
    }
}
