//! The OEM side of trustchain: the key hierarchy (root CA, device-issuing
//! CA, mastering key), the sealed keystore, products (key-agreement key and
//! device certificate template), secure mastering of firmware into
//! `update.upk` + `update.enc`, and the checks on a release (`verify`,
//! `decrypt`, `inspect`).
//!
//! Seeds: "Secure Development" (OEM keys and certificates, the SBM that
//! only accepts mastered images) and "Secure Mastering" (the image is
//! encrypted under an AES key; the UPK carries that key and version info,
//! is signed with the mastering key and encrypted for product keys; only
//! authorized personnel master).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod crypto;
pub mod error;
pub mod fsutil;
pub mod image;
pub mod inspect;
pub mod keystore;
pub mod master;
pub mod oem;
pub mod pki;
pub mod product;
pub mod reconcile;
pub mod release;
pub mod revoke;
pub mod server;
pub mod template;
pub mod wrap;

pub use error::{Error, Result};
pub use trustchain_formats as formats;
