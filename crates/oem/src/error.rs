//! Errors of the OEM side. Each names what failed and where, and
//! [`Error::hint`] says what the operator can do about it. Toward the bytes
//! of an attacker the messages stay coarse (one "signature does not verify",
//! one "decryption failed"); toward the operator they name file and field.
use std::path::PathBuf;

use trustchain_formats::FormatError;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on the OEM side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A path that must not exist yet does.
    #[error("{path} already exists")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
        /// What the path was going to be.
        what: &'static str,
    },
    /// A path that must exist does not.
    #[error("{path} does not exist")]
    NotFound {
        /// The path.
        path: PathBuf,
        /// What was expected there.
        what: &'static str,
    },
    /// An OEM directory is missing a piece or holds something unexpected.
    #[error("{path} is not a trustchain OEM directory: {problem}")]
    NotAnOemDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A file of ours is corrupt or of the wrong kind.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A binary structure (UPK, ...) does not parse.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        source: FormatError,
    },
    /// The passphrase does not open the keystore.
    #[error("wrong passphrase for the keystore in {path}")]
    WrongPassphrase {
        /// The keystore directory.
        path: PathBuf,
    },
    /// No passphrase could be obtained.
    #[error("no passphrase: {reason}")]
    NoPassphrase {
        /// Why.
        reason: String,
    },
    /// A key label is not in the keystore.
    #[error("key '{label}' is not in the keystore {path}")]
    NoSuchKey {
        /// The keystore.
        path: PathBuf,
        /// The label.
        label: String,
    },
    /// A product is not defined in the OEM directory.
    #[error("product {product} does not exist in {oem_dir}")]
    NoSuchProduct {
        /// The OEM directory.
        oem_dir: PathBuf,
        /// The product ID.
        product: u32,
    },
    /// The certificate template is invalid.
    #[error("{path}: {problem}")]
    Template {
        /// The template file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The firmware image could not be loaded.
    #[error("{path}: {source}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why.
        source: crate::image::ImageError,
    },
    /// The security counter would go backwards.
    #[error(
        "security counter {requested} for product {product} is below {last}, the counter of the last release mastered for it"
    )]
    CounterRollback {
        /// The product.
        product: u32,
        /// The counter asked for.
        requested: u64,
        /// The last one mastered.
        last: u64,
    },
    /// A certificate or public key given on the command line is unusable.
    #[error("{path}: {problem}")]
    BadKeyInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A certificate chain does not validate.
    #[error("{path}: certificate chain does not validate: {problem}")]
    Chain {
        /// The file holding the end certificate.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// A signature does not verify.
    #[error("{path}: signature does not verify")]
    BadSignature {
        /// The signed file.
        path: PathBuf,
    },
    /// A release does not match its UPK.
    #[error("{path}: {problem}")]
    ReleaseMismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        problem: String,
    },
    /// No recipient of the release can be opened with the keys at hand.
    #[error("{path}: none of the {recipients} recipient(s) is this product's key")]
    NotARecipient {
        /// The UPK.
        path: PathBuf,
        /// How many recipients it has.
        recipients: usize,
    },
    /// Authenticated decryption failed.
    #[error("{path}: decryption failed")]
    DecryptionFailed {
        /// The file.
        path: PathBuf,
    },
    /// The audit log's hash chain is broken.
    #[error("{path}: audit log hash chain broken at line {line}")]
    AuditChain {
        /// The log.
        path: PathBuf,
        /// The first bad line.
        line: usize,
    },
    /// The file is not an artifact this project writes.
    #[error("{path}: not a trustchain artifact ({problem})")]
    UnknownArtifact {
        /// The file.
        path: PathBuf,
        /// What was seen.
        problem: String,
    },
    /// A production report does not reconcile.
    #[error("{path}: the report does not reconcile: {count} anomalies")]
    NotReconciled {
        /// The report.
        path: PathBuf,
        /// How many anomalies.
        count: usize,
    },
    /// A certificate is already on its issuer's CRL.
    #[error("{path}: serial {serial} is already revoked (since Unix time {since})")]
    AlreadyRevoked {
        /// The certificate.
        path: PathBuf,
        /// Its serial, hex.
        serial: String,
        /// When it was revoked.
        since: i64,
    },
    /// The key that signs an issuer's CRLs is not in the keystore.
    #[error("{path}: its issuer ({issuer}) has no CRL-signing key '{label}' in this keystore")]
    NoCrlKey {
        /// The certificate to revoke.
        path: PathBuf,
        /// The issuer.
        issuer: String,
        /// The missing key.
        label: String,
    },
    /// A cryptographic operation of the library failed unexpectedly.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// A usage error (bad combination of arguments).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// What the operator can do about it, if there is something to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::AlreadyExists { what, .. } => {
                format!("choose a new path for the {what}, or remove the old one if it is no longer needed")
            }
            Error::NotFound { what, .. } => format!("check the path of the {what}"),
            Error::NotAnOemDir { .. } => {
                "pass the directory made by `trustchain oem init`".to_string()
            }
            Error::WrongPassphrase { .. } => {
                "check TRUSTCHAIN_PASSPHRASE or the --passphrase-file; nothing was changed".to_string()
            }
            Error::NoPassphrase { .. } => {
                "set TRUSTCHAIN_PASSPHRASE, pass --passphrase-file FILE, or run in a terminal to be asked".to_string()
            }
            Error::NoSuchProduct { .. } => {
                "create it with `trustchain oem product OEM_DIR --product-id N --name NAME`".to_string()
            }
            Error::Template { .. } => {
                "see docs/formats.md, section 'Device certificate template', for the fields and placeholders".to_string()
            }
            Error::Image { .. } => {
                "check that the file is the build output you meant (raw binary, Intel HEX or ELF); --format forces one".to_string()
            }
            Error::CounterRollback { .. } => {
                "devices that installed the newer release will refuse this one; raise --version or --security-counter, or pass --force if you really mean to master an older counter".to_string()
            }
            Error::BadKeyInput { .. } => {
                "pass a PEM or DER X.509 certificate whose key is P-256 with keyAgreement usage, or a PEM/DER P-256 public key".to_string()
            }
            Error::AlreadyRevoked { .. } => {
                "nothing to do: OEM_DIR/crl.pem already lists it; hand that file to update \
                 servers and devices"
                    .into()
            }
            Error::NoCrlKey { .. } => {
                "the package was wrapped before trustchain kept issuing-CA keys; revoke the \
                 package's issuing CA instead (`trustchain oem revoke OEM_DIR --cert \
                 OEM_DIR/packages/<id>.issuing-ca.pem`): the device CA signs that CRL, and it \
                 revokes every device of the package"
                    .into()
            }
            Error::Chain { .. } => {
                "check that --root is the OEM root certificate that issued the mastering certificate, and that it has not expired".to_string()
            }
            Error::BadSignature { .. } | Error::ReleaseMismatch { .. } | Error::DecryptionFailed { .. } => {
                "the release was altered or corrupted after mastering; fetch it again from the OEM".to_string()
            }
            Error::Format { .. } => {
                "the file is truncated, corrupted or not what it should be; fetch it again".to_string()
            }
            Error::NotARecipient { .. } => {
                "decrypt with the OEM directory that mastered this release".to_string()
            }
            Error::NotReconciled { .. } => {
                "treat devices not accounted for as untrusted; investigate with the programming center (the anomalies are listed above)".to_string()
            }
            Error::AuditChain { .. } => {
                "the audit log was edited; restore it from a backup and investigate".to_string()
            }
            Error::UnknownArtifact { .. } => {
                "inspect reads UPKs (update.upk), certificates and public keys (PEM/DER), sealed keys, keystores, templates, audit logs, production packages and reports".to_string()
            }
            _ => return None,
        })
    }
}

/// Attaches a path to an I/O error.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] with `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
