//! The device certificate template (TOML) that travels in a package and
//! that the Guardian fills in for every device (`template::Template::parse`).
//! An accepted template round-trips through `to_toml`, renders with the
//! placeholders a Guardian supplies, and issues a certificate
//! (`pki::DeviceCertIssuer`) that parses, or refuses with an error.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trustchain_formats::{OemId, ProductId};
use trustchain_oem::crypto::EcdsaKey;
use trustchain_oem::pki::{self, CertSpec, DeviceCertIssuer};
use trustchain_oem::template::Template;

struct Ca {
    key: EcdsaKey,
    der: Vec<u8>,
    device: trustchain_oem::crypto::PublicKey,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let oem = OemId::new(0x1234).expect("OEM ID");
        let (key, _) = EcdsaKey::generate().expect("key");
        let mut spec = CertSpec::new("Fuzz Issuing CA".into(), "Fuzz OEM".into(), oem, 10);
        spec.ca_path_len = Some(0);
        let der = pki::self_signed(&spec, &key).expect("CA certificate").der;
        let (device, _) = EcdsaKey::generate().expect("key");
        Ca {
            key,
            der,
            device: device.public_key().clone(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Template::parse(text) else {
        return;
    };
    let back = Template::parse(&t.to_toml()).expect("to_toml of a template parses");
    assert_eq!(back, t);
    let vars: BTreeMap<&str, String> = [
        ("serial", "00000042".to_string()),
        ("uid", "d00dfeed".into()),
        ("oem_id", "4660".into()),
        ("product_id", "7".into()),
        ("oem_name", "Acme".into()),
        ("product_name", "Thermostat".into()),
    ]
    .into_iter()
    .collect();
    let _ = t.render(&vars);
    let ca = ca();
    let oem = OemId::new(0x1234).expect("OEM ID");
    let product = ProductId::new(7).expect("product ID");
    let issuer = DeviceCertIssuer::new(&t, &ca.der, ca.key.public_key(), oem, product)
        .expect("a checked template makes an issuer");
    if let Ok(cert) = issuer.issue(&vars, &ca.device, &ca.key) {
        pki::parse_cert(&cert).expect("an issued certificate parses");
    }
});
