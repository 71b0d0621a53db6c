//! Test vectors for the release format (`docs/formats.md`, "Test vectors").
//!
//! Each `tests/vectors/upk/<name>/` holds `vector.json` (inputs and
//! expected values), `update.upk` and `update.enc`. This test re-masters
//! every vector from its inputs with the deterministic test entropy and
//! checks the manifest and `update.enc` byte for byte; it verifies the
//! stored UPK's signature (ECDSA is randomized, so signatures are checked by
//! verification), unwraps the content key with every recipient key and
//! decrypts. `tests/vectors/upk-invalid/<name>/` are attack fixtures that
//! must be refused at the stated stage. `tests/python/test_upk_crosscheck.py`
//! checks the same files with an independent implementation.
//!
//! `TRUSTCHAIN_BLESS=1 cargo test -p trustchain-oem --test vectors`
//! rewrites the files (new keys and certificates) after a deliberate format
//! change.
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use trustchain_oem::crypto::{sha256, EcdhKey, EcdsaKey, Entropy, TestVectorEntropy};
use trustchain_oem::formats::upk::Upk;
use trustchain_oem::formats::{OemId, ProductId, SecurityCounter, Version};
use trustchain_oem::master::{master_stream, MasterParams};
use trustchain_oem::pki::{self, CertSpec};
use trustchain_oem::release;
use trustchain_oem::Error;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

struct Case {
    name: &'static str,
    description: &'static str,
    image_len: usize,
    devices: usize,
    uids: Option<Vec<Vec<u8>>>,
    version: &'static str,
    counter: u64,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "basic",
            description: "one product recipient, image of 2.5 chunks",
            image_len: 10_000,
            devices: 0,
            uids: None,
            version: "1.2.3",
            counter: (1 << 32) | (2 << 16) | 3,
        },
        Case {
            name: "one-byte",
            description: "smallest image: one chunk of one byte",
            image_len: 1,
            devices: 0,
            uids: None,
            version: "0.0.1",
            counter: 1,
        },
        Case {
            name: "exact-chunks",
            description: "image of exactly two chunks",
            image_len: 8192,
            devices: 0,
            uids: None,
            version: "2.0.0",
            counter: 2 << 32,
        },
        Case {
            name: "devices-and-uids",
            description: "product + two device recipients and a UID allow-list",
            image_len: 5000,
            devices: 2,
            uids: Some(vec![vec![0x11; 16], vec![0xa5, 0x5a, 0x01]]),
            version: "3.1.4",
            counter: 99,
        },
    ]
}

/// Fresh keys and a 100-year hierarchy for blessing.
fn bless() {
    let oem = OemId::new(0x1234).unwrap();
    let (root_key, _) = EcdsaKey::generate().unwrap();
    let (m_key, m_pkcs8) = EcdsaKey::generate().unwrap();
    let years = time::Duration::days(365 * 100);
    let start = time::macros::datetime!(2025-01-01 0:00 UTC);
    let mut root_spec = CertSpec::new("Vector Root CA".into(), "trustchain vectors".into(), oem, 1);
    root_spec.ca_path_len = Some(2);
    root_spec.not_before = start;
    root_spec.not_after = start + years;
    let root = pki::self_signed(&root_spec, &root_key).unwrap();
    let mut m_spec = CertSpec::new(
        "Vector Mastering".into(),
        "trustchain vectors".into(),
        oem,
        1,
    );
    m_spec.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    m_spec.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    m_spec.not_before = start;
    m_spec.not_after = start + years;
    let mastering = pki::issue(&m_spec, m_key.public_key(), &root, &root_key).unwrap();

    for (i, c) in cases().into_iter().enumerate() {
        let mut e = TestVectorEntropy::new([i as u8 + 1; 32]);
        let (_, product_scalar) = EcdhKey::generate(&mut e).unwrap();
        let device_scalars: Vec<_> = (0..c.devices)
            .map(|_| EcdhKey::generate(&mut e).unwrap().1)
            .collect();
        let mut image = vec![0u8; c.image_len];
        e.fill(&mut image).unwrap();
        let inputs = json!({
            "root_cert_der": hex::encode(&root.der),
            "mastering_cert_der": hex::encode(&mastering.der),
            "mastering_pkcs8": hex::encode(&m_pkcs8[..]),
            "product_scalar": hex::encode(&product_scalar[..]),
            "device_scalars": device_scalars.iter().map(|s| hex::encode(&s[..])).collect::<Vec<_>>(),
            "image": hex::encode(&image),
            "oem_id": 0x1234,
            "product_id": 7,
            "version": c.version,
            "security_counter": c.counter,
            "load_address": 0x0800_0000u64,
            "created": 1_767_225_600u64,
            "device_uids": c.uids.as_ref().map(|u| u.iter().map(hex::encode).collect::<Vec<_>>()),
            "entropy_seed": hex::encode([0xc0 + i as u8; 32]),
        });
        let (upk, enc, expected) = master_from(&inputs);
        let dir = vectors_dir().join("upk").join(c.name);
        std::fs::create_dir_all(&dir).unwrap();
        let v = json!({ "description": c.description, "inputs": inputs, "expected": expected });
        std::fs::write(
            dir.join("vector.json"),
            serde_json::to_string_pretty(&v).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(dir.join("update.upk"), &upk).unwrap();
        std::fs::write(dir.join("update.enc"), &enc).unwrap();
        if c.name == "basic" {
            bless_invalid(&v, &upk, &enc);
        }
    }
}

/// Attack fixtures derived from the basic vector.
fn bless_invalid(v: &Value, upk: &[u8], enc: &[u8]) {
    let mut bad_sig = upk.to_vec();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    let mut bad_enc = enc.to_vec();
    bad_enc[100] ^= 0x80;
    let truncated = upk[..upk.len() / 2].to_vec();
    for (name, what, u, e) in [
        (
            "bad-signature",
            "the last byte of the signature flipped",
            bad_sig,
            enc.to_vec(),
        ),
        (
            "ciphertext-digest",
            "one bit of update.enc flipped",
            upk.to_vec(),
            bad_enc,
        ),
        (
            "malformed",
            "update.upk truncated to half",
            truncated,
            enc.to_vec(),
        ),
    ] {
        let dir = vectors_dir().join("upk-invalid").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = v.clone();
        v["description"] = json!(format!("attack fixture: {what}"));
        v["expected_error"] = json!(name);
        std::fs::write(
            dir.join("vector.json"),
            serde_json::to_string_pretty(&v).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(dir.join("update.upk"), u).unwrap();
        std::fs::write(dir.join("update.enc"), e).unwrap();
    }
}

/// Masters from vector inputs: returns (update.upk, update.enc, expected).
fn master_from(inputs: &Value) -> (Vec<u8>, Vec<u8>, Value) {
    let signer = EcdsaKey::from_pkcs8(&h(&inputs["mastering_pkcs8"])).unwrap();
    let product = EcdhKey::from_scalar(&h(&inputs["product_scalar"])).unwrap();
    let devices: Vec<_> = inputs["device_scalars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| EcdhKey::from_scalar(&h(s)).unwrap())
        .collect();
    let mut recipients = vec![product.public_key().clone()];
    recipients.extend(devices.iter().map(|d| d.public_key().clone()));
    let image = h(&inputs["image"]);
    let params = MasterParams {
        oem_id: OemId::new(inputs["oem_id"].as_u64().unwrap() as u32).unwrap(),
        product_id: ProductId::new(inputs["product_id"].as_u64().unwrap() as u32).unwrap(),
        version: inputs["version"]
            .as_str()
            .unwrap()
            .parse::<Version>()
            .unwrap(),
        security_counter: SecurityCounter(inputs["security_counter"].as_u64().unwrap()),
        load_address: inputs["load_address"].as_u64().unwrap(),
        created: inputs["created"].as_u64().unwrap(),
        recipients,
        device_uids: inputs["device_uids"]
            .as_array()
            .map(|a| a.iter().map(h).collect()),
        mastering_cert_der: h(&inputs["mastering_cert_der"]),
    };
    let seed: [u8; 32] = h(&inputs["entropy_seed"]).try_into().unwrap();
    let mut enc = Vec::new();
    let m = master_stream(
        &params,
        &image[..],
        image.len() as u64,
        &mut enc,
        &signer,
        &mut TestVectorEntropy::new(seed),
        &|_| {},
    )
    .unwrap();
    let mut cek = [0u8; 16];
    TestVectorEntropy::new(seed).fill(&mut cek).unwrap();
    let payload = Upk::parse(&m.upk).unwrap().sign1.payload.to_vec();
    let expected = json!({
        "manifest": hex::encode(&payload),
        "content_key": hex::encode(cek),
        "image_sha256": hex::encode(sha256(&image)),
        "ciphertext_sha256": hex::encode(sha256(&enc)),
        "ciphertext_size": enc.len(),
        "recipients": m.manifest.recipients.iter().map(|r| json!({
            "kid": hex::encode(r.kid),
            "ephemeral_x": hex::encode(r.ephemeral.x),
            "ephemeral_y": hex::encode(r.ephemeral.y),
            "wrapped_key": hex::encode(r.wrapped_key),
        })).collect::<Vec<_>>(),
    });
    (m.upk, enc, expected)
}

fn load(dir: &Path) -> (Value, Vec<u8>, Vec<u8>) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vector.json")).unwrap()).unwrap();
    (
        v,
        std::fs::read(dir.join("update.upk")).unwrap(),
        std::fs::read(dir.join("update.enc")).unwrap(),
    )
}

fn dirs(kind: &str) -> Vec<PathBuf> {
    let mut d: Vec<_> = std::fs::read_dir(vectors_dir().join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    d.sort();
    d
}

#[test]
fn valid_vectors_reproduce_verify_and_decrypt() {
    if std::env::var_os("TRUSTCHAIN_BLESS").is_some() {
        bless();
    }
    let all = dirs("upk");
    assert_eq!(all.len(), cases().len(), "one directory per case");
    for dir in all {
        let (v, upk_bytes, enc) = load(&dir);
        let (inputs, expected) = (&v["inputs"], &v["expected"]);
        // Re-master: every deterministic byte must match.
        let (_, enc_again, expected_again) = master_from(inputs);
        assert_eq!(
            &expected_again,
            expected,
            "{}: expected values",
            dir.display()
        );
        assert_eq!(enc_again, enc, "{}: update.enc", dir.display());
        // The stored UPK: payload, signature, chain, ciphertext.
        let upk = Upk::parse(&upk_bytes).unwrap();
        assert_eq!(upk.sign1.payload, &h(&expected["manifest"])[..]);
        let info = release::verify_release(&dir, &h(&inputs["root_cert_der"])).unwrap();
        assert_eq!(info.version, inputs["version"].as_str().unwrap());
        assert_eq!(
            info.image_sha256,
            expected["image_sha256"].as_str().unwrap()
        );
        // Every recipient key recovers the content key; the plaintext is the image.
        let mut keys = vec![h(&inputs["product_scalar"])];
        keys.extend(inputs["device_scalars"].as_array().unwrap().iter().map(h));
        for scalar in keys {
            let key = EcdhKey::from_scalar(&scalar).unwrap();
            let r = upk
                .manifest
                .encryption
                .recipient_for(&key.public_key().kid())
                .expect("a recipient for the key");
            let cek = trustchain_oem::crypto::unwrap_with(&key, &r.ephemeral, r.wrapped_key)
                .expect("unwrap");
            assert_eq!(hex::encode(*cek), expected["content_key"].as_str().unwrap());
            let mut plain = Vec::new();
            release::decrypt_stream(&cek, &dir.join("update.enc"), &upk, &mut plain).unwrap();
            assert_eq!(plain, h(&inputs["image"]));
        }
    }
}

#[test]
fn attack_fixtures_are_refused_at_their_stage() {
    let all = dirs("upk-invalid");
    assert_eq!(all.len(), 3);
    for dir in all {
        let (v, _, _) = load(&dir);
        let root = h(&v["inputs"]["root_cert_der"]);
        let err =
            release::verify_release(&dir, &root).expect_err("an attack fixture must be refused");
        match v["expected_error"].as_str().unwrap() {
            "bad-signature" => assert!(matches!(err, Error::BadSignature { .. }), "{err}"),
            "ciphertext-digest" => assert!(matches!(err, Error::ReleaseMismatch { .. }), "{err}"),
            "malformed" => assert!(matches!(err, Error::Format { .. }), "{err}"),
            other => panic!("unknown expected_error {other}"),
        }
    }
}
