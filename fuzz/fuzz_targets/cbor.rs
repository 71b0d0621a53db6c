//! The strict CBOR reader every parser is built on (`cbor::Reader`). The
//! first bytes of the input are a program (which reads to make, with which
//! bounds and keys), the rest is the CBOR it reads. Every read that
//! succeeds consumed exactly the bytes minicbor's encoder writes for the
//! value it returned (the shortest, deterministic encoding, RFC 8949
//! §4.2.1): the reader accepts one encoding per value and nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minicbor::data::Tag;
use minicbor::Encoder;
use trustchain_formats::cbor::{MapKeys, Reader};

fn encoded(
    f: impl FnOnce(
        &mut Encoder<Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>>,
) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    f(&mut e).expect("encoding into a Vec");
    e.into_writer()
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 32);
    if rest.len() < n {
        return;
    }
    let (program, input) = rest.split_at(n);
    let mut r = Reader::new(input);
    let mut maps: Vec<MapKeys> = Vec::new();
    for &op in program {
        let start = r.position();
        // The argument of the op: a bound or a map key, small and signed.
        let arg = i64::from((op >> 4) as i8 - 8);
        let expect = match op & 0x0f {
            0 => r.uint("uint").ok().map(|v| encoded(|e| e.u64(v).map(drop))),
            1 => r.int("int").ok().map(|v| encoded(|e| e.i64(v).map(drop))),
            2 => {
                let max = if arg < 0 {
                    usize::MAX
                } else {
                    (arg as usize) * 8
                };
                r.bstr("bstr", max).ok().map(|b| {
                    assert!(b.len() <= max);
                    encoded(|e| e.bytes(b).map(drop))
                })
            }
            3 => {
                let max = if arg < 0 {
                    usize::MAX
                } else {
                    (arg as usize) * 8
                };
                r.tstr("tstr", max).ok().map(|s| {
                    assert!(s.len() <= max);
                    encoded(|e| e.str(s).map(drop))
                })
            }
            4 => r
                .bool("bool")
                .ok()
                .map(|b| encoded(|e| e.bool(b).map(drop))),
            5 => match r.null_if_next() {
                Ok(true) => Some(encoded(|e| e.null().map(drop))),
                _ => None,
            },
            6 => r
                .array("array")
                .ok()
                .map(|len| encoded(|e| e.array(len).map(drop))),
            7 => r.map("map").ok().map(|keys| {
                let len = {
                    // The map head's length is what the head encodes.
                    let bytes = r.slice_from(start);
                    let mut d = minicbor::Decoder::new(bytes);
                    d.map().ok().flatten().expect("a map head")
                };
                maps.push(keys);
                encoded(|e| e.map(len).map(drop))
            }),
            8 => r
                .tag(18, "tag 18")
                .ok()
                .map(|()| encoded(|e| e.tag(Tag::new(18)).map(drop))),
            9 => r
                .null("null")
                .ok()
                .map(|()| encoded(|e| e.null().map(drop))),
            10 => match maps.last_mut() {
                Some(keys) => match r.key(keys, arg) {
                    Ok(true) => Some(encoded(|e| e.i64(arg).map(drop))),
                    Ok(false) => {
                        assert_eq!(r.position(), start, "a key that is not taken is not read");
                        None
                    }
                    Err(_) => None,
                },
                None => None,
            },
            11 => match maps.last_mut() {
                Some(keys) => r
                    .required_key(keys, arg, "key")
                    .ok()
                    .map(|()| encoded(|e| e.i64(arg).map(drop))),
                None => None,
            },
            12 => {
                if let Some(keys) = maps.pop() {
                    let _ = r.end_map(keys);
                }
                None
            }
            13 => {
                if r.finish().is_ok() {
                    assert_eq!(r.position(), input.len());
                }
                None
            }
            14 => r
                .bstr_exact::<32>("bstr32")
                .ok()
                .map(|b| encoded(|e| e.bytes(b).map(drop))),
            _ => {
                assert!(r.position() <= input.len());
                None
            }
        };
        if let Some(expect) = expect {
            assert_eq!(r.slice_from(start), &expect[..], "op {op:#04x} at {start}");
        }
        if r.position() < start || r.position() > input.len() {
            panic!("the reader moved from {start} to {}", r.position());
        }
    }
});
