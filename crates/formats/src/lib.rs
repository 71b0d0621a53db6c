//! Byte formats that cross a trust boundary in trustchain.
//!
//! Everything here is parsed from untrusted bytes on the device (the Secure
//! Boot Manager links this crate) and on the host. Parsers are bounded, take
//! no allocation, accept only the deterministic encoding (RFC 8949 §4.2.1)
//! and reject trailing bytes, unknown keys and out-of-range values. The types
//! they return can only be made by the parsers (or, with the `alloc`
//! feature, by the encoders in [`upk::ManifestSpec`]), so a value of these
//! types is always well formed.
//!
//! The byte-exact specification lives in `docs/formats.md`; the constants in
//! this crate are the single source of truth for the code.
//!
//! | module | what |
//! | --- | --- |
//! | [`ids`] | identifiers and versions: `OemId`, `ProductId`, `Version`, `SecurityCounter` |
//! | [`cose`] | the COSE (RFC 9052/9053) structures the UPK uses |
//! | [`upk`] | the Update Key Block: a COSE_Sign1 over the CBOR manifest |
//! | [`stream`] | the encrypted image (`update.enc`) layout: chunked AES-128-GCM (STREAM) |
//! | [`frame`] | the SBM connection protocol: frames, commands, status codes |
//! | [`auth`] | mutual authentication between devices and servers: messages and transcript |
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod auth;
pub mod cbor;
pub mod cose;
mod error;
pub mod frame;
pub mod ids;
pub mod package;
pub mod report;
pub mod stream;
pub mod upk;

pub use error::FormatError;
pub use ids::{OemId, ProductId, SecurityCounter, Sha256, Version};
