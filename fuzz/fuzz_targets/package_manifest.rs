//! The production package's decrypted content as the Guardian reads it:
//! the OEM's COSE_Sign1 (`cose::Sign1::parse`) and the package manifest in
//! it (`package::Manifest::parse`). The input is tried both as the signed
//! layer and as a bare manifest. Whatever is accepted re-encodes
//! (`encode_sign1`, `package::ManifestSpec::encode`) to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::cose::{encode_sign1, Sign1};
use trustchain_formats::package::{self, Manifest, ManifestSpec};

fn spec(m: &Manifest<'_>) -> ManifestSpec {
    ManifestSpec {
        package_id: *m.package_id,
        oem_id: m.oem_id,
        product_id: m.product_id,
        guardian: *m.guardian,
        created: m.created,
        expires: m.expires,
        count: m.count,
        serial_start: m.serial_start,
        device_types: m.device_types().collect(),
        uid_range: m.uid_range.map(|(lo, hi)| (lo.to_vec(), hi.to_vec())),
        template: m.template.to_string(),
        issuing_ca_cert: m.issuing_ca_cert.to_vec(),
        issuing_ca_key: *m.issuing_ca_key,
        device_ca_cert: m.device_ca_cert.to_vec(),
        root_cert: m.root_cert.to_vec(),
        product_key: *m.product_key,
        mastering_cert: m.mastering_cert.to_vec(),
        release_upk: m.release_upk.to_vec(),
        release_enc: m.release_enc.to_vec(),
        oem_name: m.oem_name.to_string(),
        product_name: m.product_name.to_string(),
    }
}

fn manifest(bytes: &[u8]) {
    let Ok(m) = Manifest::parse(bytes) else {
        return;
    };
    let again = spec(&m).encode();
    assert_eq!(again, bytes, "package manifest re-encoding differs");
    assert_eq!(Manifest::parse(&again), Ok(m));
}

fuzz_target!(|data: &[u8]| {
    manifest(data);
    let Ok(s) = Sign1::parse(data, package::limits::MAX_PACKAGE_LEN) else {
        return;
    };
    let again = encode_sign1(s.x5chain, s.payload, s.signature);
    assert_eq!(again, data, "signed layer re-encoding differs");
    manifest(s.payload);
});
