//! The programmer: the host's end of the SBM connection protocol
//! ([`client::Programmer`] over any [`client::Transport`]), and lab
//! provisioning of a device at the OEM ([`lab`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod lab;
pub mod produce;
pub mod serial;
pub mod sim;
