//! One SBM connection-protocol frame (`frame::Frame::parse`: magic,
//! version, kind, sequence, bounded length, CRC-32). An accepted frame is
//! re-sealed by both writers (`Frame::write`, `Frame::seal_in_place`) to the
//! same bytes, and `Frame::total_len` of its header is its length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::frame::{Frame, HEADER_LEN, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..HEADER_LEN) {
        let header: &[u8; HEADER_LEN] = header.try_into().expect("8 bytes");
        if let Ok(n) = Frame::total_len(header) {
            assert!(n <= MAX_FRAME);
        }
    }
    let Ok(f) = Frame::parse(data) else {
        return;
    };
    let header: &[u8; HEADER_LEN] = data[..HEADER_LEN].try_into().expect("8 bytes");
    assert_eq!(Frame::total_len(header), Ok(data.len()));
    let mut out = vec![0u8; MAX_FRAME];
    let n = Frame::write(f.kind, f.seq, f.payload, &mut out).expect("a parsed frame fits");
    assert_eq!(&out[..n], data, "Frame::write differs");
    let mut sealed = vec![0u8; MAX_FRAME];
    sealed[HEADER_LEN..HEADER_LEN + f.payload.len()].copy_from_slice(f.payload);
    let m = Frame::seal_in_place(f.kind, f.seq, f.payload.len(), &mut sealed)
        .expect("a parsed frame fits");
    assert_eq!(&sealed[..m], data, "Frame::seal_in_place differs");
    assert_eq!(Frame::parse(&out[..n]), Ok(f));
});
