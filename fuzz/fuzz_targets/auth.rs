//! The three mutual-authentication messages (`auth::Hello::parse`,
//! `Response::parse`, `Finish::parse`, and `auth::message_type`), each tried
//! on the input. An accepted message re-encodes (`encode_hello`,
//! `encode_response`, `encode_finish`) to the same bytes, and the transcript
//! of what was parsed encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::auth::{
    encode_finish, encode_hello, encode_response, message_type, msg, Finish, Hello, Response,
    Transcript,
};

fuzz_target!(|data: &[u8]| {
    let ty = message_type(data);
    if let Ok(h) = Hello::parse(data) {
        assert_eq!(ty, Ok(msg::HELLO));
        assert_eq!(h.chain.leaf(), h.chain.certs()[0]);
        let again = encode_hello(h.nonce, h.chain.certs()).expect("a parsed chain re-encodes");
        assert_eq!(again, data, "hello re-encoding differs");
        assert_eq!(Hello::parse(&again), Ok(h));
        let t = Transcript {
            nonce_i: h.nonce,
            nonce_r: h.nonce,
            chain_i: h.chain.certs(),
            chain_r: h.chain.certs(),
            context: &[],
        };
        assert!(!t.to_vec().is_empty());
    }
    if let Ok(r) = Response::parse(data) {
        assert_eq!(ty, Ok(msg::RESPONSE));
        let again = encode_response(r.nonce_i, r.nonce_r, r.chain.certs(), r.signature)
            .expect("a parsed chain re-encodes");
        assert_eq!(again, data, "response re-encoding differs");
        assert_eq!(Response::parse(&again), Ok(r));
    }
    if let Ok(f) = Finish::parse(data) {
        assert_eq!(ty, Ok(msg::FINISH));
        let again = encode_finish(f.nonce_r, f.signature);
        assert_eq!(again, data, "finish re-encoding differs");
        assert_eq!(Finish::parse(&again), Ok(f));
    }
});
