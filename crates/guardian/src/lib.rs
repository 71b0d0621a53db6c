//! The Guardian: the programming center's HSM appliance (seeds "Secure
//! Production" and "So just how do you embed security"). It holds an
//! identity the OEM wraps secrets for, the OEM roots its operator trusts,
//! and the jobs created from imported packages, with their counts. Secrets
//! are unwrapped only inside it and kept sealed in its keystore.
//!
//! ```text
//! GUARDIAN_DIR/
//!   guardian.toml        name, creation
//!   identity.pem         key-agreement certificate, then the signing certificate
//!   keystore/            sealed keys: guardian-sign, guardian-kem, job-<n>-issuing, job-<n>-product
//!   trusted-roots/       <sha256>.pem: OEM roots the operator accepted
//!   guardian.db          SQLite (WAL, full sync): packages seen, jobs, counts
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dir;
pub mod error;
pub mod import;
pub mod issue;
pub mod report;
pub mod store;

pub use dir::GuardianDir;
pub use error::{Error, Result};
