//! Helpers shared by the fuzz targets: writers that turn parsed values back
//! into the containers the parsers read, and the simulated device the SBM
//! target starts from.
#![forbid(unsafe_code)]

pub mod device;
pub mod image;
