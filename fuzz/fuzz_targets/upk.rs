//! `update.upk` as the SBM and the host read it: `Upk::parse` (COSE_Sign1
//! envelope, then the manifest). An accepted UPK re-encodes, envelope and
//! manifest, to exactly the bytes it came from: the parser accepts one
//! encoding per value, so nothing in a UPK is malleable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::cose::encode_sign1;
use trustchain_formats::upk::{ManifestSpec, Upk};

fuzz_target!(|data: &[u8]| {
    let Ok(upk) = Upk::parse(data) else {
        return;
    };
    let m = &upk.manifest;
    let _ = m.ciphertext_size();
    if let Some(uids) = m.device_uids {
        assert_eq!(uids.iter().count(), uids.len());
        for uid in uids.iter() {
            assert!(uids.contains(uid));
        }
    }
    for r in m.encryption.recipients() {
        assert!(m.encryption.recipient_for(r.kid).is_some());
    }
    let manifest = ManifestSpec::from(m).encode();
    assert_eq!(manifest, upk.sign1.payload, "manifest re-encoding differs");
    let again = encode_sign1(upk.sign1.x5chain, &manifest, upk.sign1.signature);
    assert_eq!(again, data, "UPK re-encoding differs");
    assert_eq!(Upk::parse(&again), Ok(upk));
});
