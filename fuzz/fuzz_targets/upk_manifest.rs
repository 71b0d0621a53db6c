//! The UPK manifest alone (`upk::Manifest::parse`, the COSE_Sign1 payload),
//! so the fuzzer works on the manifest without the envelope around it. An
//! accepted manifest re-encodes through `ManifestSpec` to the same bytes and
//! parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::upk::{Manifest, ManifestSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    let _ = m.ciphertext_size();
    if let Some(uids) = m.device_uids {
        assert_eq!(uids.iter().count(), uids.len());
    }
    let spec = ManifestSpec::from(&m);
    let bytes = spec.encode();
    assert_eq!(bytes, data, "manifest re-encoding differs");
    let back = Manifest::parse(&bytes).expect("a re-encoded manifest parses");
    assert_eq!(back, m);
    assert_eq!(ManifestSpec::from(&back), spec);
});
