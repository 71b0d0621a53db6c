//! For the image targets: the loader's limits for fuzzing, and two small
//! writers that turn a flat image back into the containers the loader
//! reads.
use trustchain_oem::image::{self, FlatImage, ImageFormat, LoadOptions};

/// Small bounds: every code path of the loader is reachable with them, and
/// the fuzzer does not spend its time filling 64 MiB buffers.
pub fn opts() -> LoadOptions {
    LoadOptions {
        max_gap: 4096,
        max_size: 1 << 20,
        raw_load_address: 0,
    }
}

/// Intel HEX of `bytes` at `address`: type 04 records for the upper 16 bits,
/// data records of 16 bytes, the EOF record. `None` beyond 4 GiB.
pub fn to_ihex(address: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    fn record(out: &mut Vec<u8>, offset: u16, kind: u8, data: &[u8]) {
        let mut body = vec![data.len() as u8];
        body.extend_from_slice(&offset.to_be_bytes());
        body.push(kind);
        body.extend_from_slice(data);
        let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        body.push(sum.wrapping_neg());
        out.push(b':');
        for b in body {
            out.extend_from_slice(format!("{b:02X}").as_bytes());
        }
        out.extend_from_slice(b"\n");
    }
    let end = address.checked_add(bytes.len() as u64)?;
    if end > 1 << 32 {
        return None;
    }
    let mut out = Vec::new();
    let mut upper = None;
    let mut at = address;
    for chunk in bytes.chunks(16) {
        // A record never crosses a 64 KiB boundary.
        let room = (0x1_0000 - (at & 0xffff)) as usize;
        for piece in [
            &chunk[..room.min(chunk.len())],
            &chunk[room.min(chunk.len())..],
        ] {
            if piece.is_empty() {
                continue;
            }
            let hi = (at >> 16) as u16;
            if upper != Some(hi) {
                record(&mut out, 0, 4, &hi.to_be_bytes());
                upper = Some(hi);
            }
            record(&mut out, at as u16, 0, piece);
            at += piece.len() as u64;
        }
    }
    record(&mut out, 0, 1, &[]);
    Some(out)
}

/// A minimal ELF64 little-endian executable: one `PT_LOAD` segment with
/// `p_paddr = address` holding `bytes`.
pub fn to_elf64(address: u64, bytes: &[u8]) -> Vec<u8> {
    const EHSIZE: u16 = 64;
    const PHENTSIZE: u16 = 56;
    let data_at = u64::from(EHSIZE + PHENTSIZE);
    let mut out = Vec::new();
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    out.extend_from_slice(&0x28u16.to_le_bytes()); // e_machine: ARM
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&address.to_le_bytes()); // e_entry
    out.extend_from_slice(&u64::from(EHSIZE).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&EHSIZE.to_le_bytes());
    out.extend_from_slice(&PHENTSIZE.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    out.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    out.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R X
    out.extend_from_slice(&data_at.to_le_bytes()); // p_offset
    out.extend_from_slice(&address.to_le_bytes()); // p_vaddr
    out.extend_from_slice(&address.to_le_bytes()); // p_paddr
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes()); // p_filesz
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes()); // p_memsz
    out.extend_from_slice(&4u64.to_le_bytes()); // p_align
    out.extend_from_slice(bytes);
    out
}

/// Loads `data` as `format`; an accepted image, written back as Intel HEX
/// and as ELF, loads to the same bytes at the same address.
pub fn check(data: &[u8], format: ImageFormat) {
    let _ = ImageFormat::detect(data);
    let opts = opts();
    let Ok(img) = image::load(data, format, &opts) else {
        return;
    };
    assert_eq!(img.format, format);
    assert!(!img.bytes.is_empty());
    assert!(img.bytes.len() as u64 <= opts.max_size);
    assert!(img.segments >= 1);
    let same = |again: FlatImage, via: &str| {
        assert_eq!(again.load_address, img.load_address, "address via {via}");
        assert_eq!(again.bytes, img.bytes, "bytes via {via}");
    };
    if let Some(hex) = to_ihex(img.load_address, &img.bytes) {
        assert_eq!(ImageFormat::detect(&hex), ImageFormat::IntelHex);
        same(
            image::load(&hex, ImageFormat::IntelHex, &opts).expect("re-encoded Intel HEX loads"),
            "Intel HEX",
        );
    }
    let elf = to_elf64(img.load_address, &img.bytes);
    assert_eq!(ImageFormat::detect(&elf), ImageFormat::Elf);
    same(
        image::load(&elf, ImageFormat::Elf, &opts).expect("re-encoded ELF loads"),
        "ELF",
    );
}
