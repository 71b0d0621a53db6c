//! The SBM's handling of whatever arrives on its connection
//! (`Sbm::handle_frame`, through `SimLink`), on a simulated device that is
//! provisioned, locked and runs release 1.0.0. The input is a script of
//! requests, each starting with a byte that says what it is:
//!
//! * `0`: a well-formed frame: kind (1 byte), payload length (2 bytes BE),
//!   payload; the harness adds header, sequence number and CRC, so the
//!   fuzzer reaches the payload parsers of every command;
//! * `1`: raw bytes as they come: length (2 bytes BE), bytes;
//! * `2`: `IMAGE_BEGIN` with the UPK of release 2.0.0 (mastered for this
//!   device), mode from the next byte, and a length from the next 4;
//! * `3`: `IMAGE_DATA` with a piece of that release's `update.enc`: offset
//!   (4 bytes BE), length (2 bytes BE);
//! * `4`: all of that `update.enc`, in order;
//! * `5`: a reset (the SBM boots).
//!
//! Checked: the SBM never panics; every answer is a valid response frame
//! echoing the request's kind and sequence number with a known status; and
//! the locked device's protected storage never changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::frame::{cmd, Frame, MAX_FRAME, MAX_PAYLOAD, RESPONSE};
use trustchain_fuzz::device::{fixture, Fixture};
use trustchain_programmer::client::Transport;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::Status;

/// Takes `n` bytes from the front of `data` (fewer if it runs out).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = data.split_at(n.min(data.len()));
    *data = tail;
    head
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
}

fn cbor(
    f: impl FnOnce(
        &mut minicbor::Encoder<Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>>,
) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    f(&mut e).expect("encoding into a Vec");
    e.into_writer()
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut dev = fx.device();
    {
        let mut link = SimLink::new(&mut dev).expect("link");
        let mut data = data;
        let mut seq: u16 = 0;
        // (request bytes, the kind and sequence number the answer must echo)
        let mut requests: Vec<(Vec<u8>, u8, u16)> = Vec::new();
        let frame = |kind: u8, payload: &[u8], seq: &mut u16| {
            *seq = seq.wrapping_add(1);
            let mut buf = vec![0u8; MAX_FRAME];
            let n = Frame::write(kind, *seq, payload, &mut buf).expect("bounded payload");
            buf.truncate(n);
            (buf, kind, *seq)
        };
        while let Some((&op, rest)) = data.split_first() {
            data = rest;
            requests.clear();
            match op % 6 {
                0 => {
                    let kind = take(&mut data, 1).first().copied().unwrap_or(0);
                    let len = be(take(&mut data, 2)) as usize;
                    let payload = take(&mut data, len.min(MAX_PAYLOAD));
                    requests.push(frame(kind, payload, &mut seq));
                }
                1 => {
                    let len = be(take(&mut data, 2)) as usize;
                    let raw = take(&mut data, len).to_vec();
                    // What the SBM echoes: the frame's, or 0 for a bad one.
                    let (kind, s) = Frame::parse(&raw)
                        .map(|f| (f.kind, f.seq))
                        .unwrap_or((0, 0));
                    requests.push((raw, kind, s));
                }
                2 => {
                    let mode = take(&mut data, 1).first().copied().unwrap_or(0);
                    let len = be(take(&mut data, 4));
                    let p = cbor(|e| {
                        e.array(3)?.u8(mode)?.bytes(&fx.upk)?.u64(len)?;
                        Ok(())
                    });
                    requests.push(frame(cmd::IMAGE_BEGIN, &p, &mut seq));
                }
                3 => {
                    let off = be(take(&mut data, 4)) as usize;
                    let len = be(take(&mut data, 2)) as usize;
                    let piece = fx.enc.get(off.min(fx.enc.len())..).unwrap_or_default();
                    let piece = &piece[..len.min(piece.len()).min(MAX_PAYLOAD - 16)];
                    let p = cbor(|e| {
                        e.array(2)?.u64(off as u64)?.bytes(piece)?;
                        Ok(())
                    });
                    requests.push(frame(cmd::IMAGE_DATA, &p, &mut seq));
                }
                4 => {
                    for (i, part) in fx.enc.chunks(MAX_PAYLOAD - 16).enumerate() {
                        let p = cbor(|e| {
                            e.array(2)?
                                .u64((i * (MAX_PAYLOAD - 16)) as u64)?
                                .bytes(part)?;
                            Ok(())
                        });
                        requests.push(frame(cmd::IMAGE_DATA, &p, &mut seq));
                    }
                }
                _ => {
                    link.boot();
                }
            }
            for (request, kind, s) in &requests {
                let answer = link
                    .exchange(request)
                    .expect("the simulator always answers");
                let f = Frame::parse(&answer).expect("the SBM answers with a valid frame");
                assert_eq!(f.kind, RESPONSE | kind, "the answer echoes the kind");
                assert_eq!(f.seq, *s, "the answer echoes the sequence number");
                let status = f.payload.first().copied().expect("a status byte");
                assert!(
                    Status::from_u8(status).is_some(),
                    "unknown status {status:#04x}"
                );
            }
        }
    }
    assert!(dev.protected().lock_bit(), "the device stays locked");
    assert!(
        Fixture::fields_of(&dev) == fx.fields,
        "the locked device's protected storage changed"
    );
});
