//! The production report as the OEM reads it at reconciliation
//! (`report::Report::parse`: COSE_Sign1 with the Guardian's two
//! certificates, the body with device records and the hash-chained log).
//! An accepted report re-encodes (`ReportSpec::encode`, `encode_signed`) to
//! the same bytes, and its iterators yield every record it counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_formats::report::{encode_signed, Report, ReportSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Report::parse(data) else {
        return;
    };
    let b = &r.body;
    let devices: Vec<_> = b
        .devices()
        .map(|d| (d.serial, d.uid, d.device_type, d.status, d.cert))
        .collect();
    assert_eq!(devices.len() as u64, b.device_count());
    let log: Vec<&[u8]> = b.log().map(|e| e.raw).collect();
    let spec = ReportSpec {
        package_id: *b.package_id,
        job: b.job,
        oem_id: b.oem_id.get(),
        product_id: b.product_id.get(),
        count: b.count,
        issued: b.issued,
        failed: b.failed,
        created: b.created,
        devices,
        log,
        log_head: *b.log_head,
    };
    let payload = spec.encode();
    assert_eq!(payload, r.payload, "report body re-encoding differs");
    let again = encode_signed(r.kem_cert, r.signing_cert, &payload, r.signature);
    assert_eq!(again, data, "report re-encoding differs");
    assert!(Report::parse(&again).is_ok());
});
