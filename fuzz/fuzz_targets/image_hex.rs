//! Intel HEX firmware images as the OEM's mastering reads them
//! (`image::load` with `ImageFormat::IntelHex`). An accepted image, written
//! back as Intel HEX and as ELF, loads to the same bytes at the same
//! address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_fuzz::image::check;
use trustchain_oem::image::ImageFormat;

fuzz_target!(|data: &[u8]| check(data, ImageFormat::IntelHex));
