//! In the field: devices and servers authenticate each other by certificate
//! chain to the OEM root plus challenge-response ([`auth`]), device
//! identities work as TLS 1.3 client certificates ([`tls`]), an update
//! server hands releases to devices that chain to the root and are not
//! revoked, and devices fetch them into their staging area ([`update`]);
//! the OEM revokes devices with signed CRLs ([`crl`]).
#![forbid(unsafe_code)]

pub mod auth;
pub mod crl;
pub mod tls;
pub mod update;
