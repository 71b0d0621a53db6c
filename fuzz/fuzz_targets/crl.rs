//! CRL files as the update server and the devices' TLS configuration load
//! them (`trustchain_field::crl::parse`: PEM blocks or one DER CRL, each
//! parsed by rustls-webpki). Every CRL of an accepted file is accepted
//! again on its own, as DER, and `crl::info` and `crl::check_current` (the
//! update server's freshness check, x509-cert's parser) read it without
//! panicking, whatever they conclude.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustchain_field::crl;

fuzz_target!(|data: &[u8]| {
    let Ok(crls) = crl::parse(data) else {
        return;
    };
    assert!(!crls.is_empty());
    for c in &crls {
        let again = crl::parse(c.as_ref()).expect("each CRL of a file parses alone");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].as_ref(), c.as_ref());
        if let Ok(info) = crl::info(c.as_ref()) {
            let _ = crl::describe_expired(&info, u64::MAX);
        }
    }
    let _ = crl::check_current("fuzz", &crls, 0);
    let _ = crl::check_current("fuzz", &crls, u64::MAX);
});
