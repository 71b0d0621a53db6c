//! The production package's outer layer as the Guardian reads it before
//! decrypting (`package::Encrypted::parse`: COSE_Encrypt, one ECDH-ES +
//! A256KW recipient). An accepted layer re-encodes with `encode_encrypted`
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::package::{encode_encrypted, Encrypted};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Encrypted::parse(data) else {
        return;
    };
    let again = encode_encrypted(p.iv, p.ciphertext, p.kid, &p.ephemeral, p.wrapped_key);
    assert_eq!(again, data, "package re-encoding differs");
    assert_eq!(Encrypted::parse(&again), Ok(p));
});
