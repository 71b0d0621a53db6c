//! ELF firmware images as the OEM's mastering reads them (`image::load`
//! with `ImageFormat::Elf`: 32/64-bit, either byte order, `PT_LOAD` at
//! `p_paddr`). An accepted image, written back as Intel HEX and as ELF,
//! loads to the same bytes at the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_fuzz::image::check;
use trustchain_oem::image::ImageFormat;

fuzz_target!(|data: &[u8]| check(data, ImageFormat::Elf));
