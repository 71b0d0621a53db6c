//! Test vectors for the production package (`docs/formats.md`, "Production
//! package" and "Test vectors").
//!
//! Each `tests/vectors/package/<name>/` holds `vector.json` (inputs and
//! expected values) and `package.tcpkg`. This test rebuilds, from the
//! inputs alone, the manifest, the COSE_Sign1 up to its signature and the
//! deterministic parts of the encrypted layer (content key, IV, ephemeral
//! key, wrapped key, size), and compares them byte for byte. The package
//! itself is not reproducible (ECDSA is randomized), so the stored one is
//! opened with the Guardian's key-agreement key (`import::open`), its
//! signature verified with the device CA key, its manifest compared field by
//! field with the inputs, and its plaintext re-sealed with the same entropy:
//! that must give the stored file back, byte for byte. Finally a Guardian
//! holding the vector's keys imports it.
//!
//! `tests/vectors/package-invalid/<name>/` are attack fixtures derived from
//! `basic`, each with an `expected_error`: `open` (the Guardian cannot open
//! it) or `signature` (it opens, the OEM signature does not verify).
//! `tests/python/test_package_crosscheck.py` checks the same files with an
//! independent implementation.
//!
//! `TRUSTCHAIN_BLESS=1 cargo test -p trustchain-guardian --test package_vectors`
//! rewrites the files (new certificates and signatures) after a deliberate
//! format change.
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use trustchain_formats::cose::{encode_sign1, sig_structure, Sign1, PROTECTED_ES256};
use trustchain_formats::package::{self, Encrypted, Manifest, ManifestSpec};
use trustchain_formats::upk::Upk;
use trustchain_formats::{OemId, ProductId, SecurityCounter, Version};
use trustchain_guardian::dir::kem_label;
use trustchain_guardian::import::{self, import};
use trustchain_guardian::{Error, GuardianDir};
use trustchain_oem::crypto::{
    ecdsa_pkcs8_from_scalar, sha256, verify_es256, EcdhKey, EcdsaKey, Entropy, TestVectorEntropy,
};
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::{KdfParams, SealedKeyStore};
use trustchain_oem::keystore::KeyKind;
use trustchain_oem::master::{master_stream, MasterParams};
use trustchain_oem::pki::{self, CertSpec};
use trustchain_oem::template::Template;
use trustchain_oem::wrap::seal_for;

const FAST: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn h32(v: &Value) -> [u8; 32] {
    h(v).try_into().expect("32 bytes")
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("unsigned integer")
}

fn pass() -> Passphrase {
    Passphrase::new(zeroize::Zeroizing::new("vectors".to_string())).unwrap()
}

struct Case {
    name: &'static str,
    description: &'static str,
    created: u64,
    expires: u64,
    count: u64,
    serial_start: u64,
    device_types: Vec<u32>,
    uid_range: Option<(Vec<u8>, Vec<u8>)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "basic",
            description: "UID range of 4-byte UIDs and two device types",
            created: 1_767_225_600,
            expires: 1_798_761_600,
            count: 1000,
            serial_start: 5000,
            device_types: vec![1, 0x0001_0002],
            uid_range: Some((vec![0x10, 0, 0, 0], vec![0x10, 0xff, 0xff, 0xff])),
        },
        Case {
            name: "no-restrictions",
            description: "no UID range, empty device types (any device), one device",
            created: 1_767_225_600,
            expires: 1_767_312_000,
            count: 1,
            serial_start: 0,
            device_types: vec![],
            uid_range: None,
        },
    ]
}

/// Fresh certificates (keys from a fixed seed where they are scalars) for
/// blessing: one OEM hierarchy, one Guardian, one release, and per vector a
/// package ID and an issuing CA.
fn bless() {
    let oem = OemId::new(0x1234).unwrap();
    let product = ProductId::new(7).unwrap();
    let (oem_name, product_name) = ("Vector OEM", "Vector Thermostat");
    let mut keys = TestVectorEntropy::new([0x50; 32]);
    let (kem, kem_scalar) = EcdhKey::generate(&mut keys).unwrap();
    let (_, other_kem_scalar) = EcdhKey::generate(&mut keys).unwrap();
    let (product_key, product_scalar) = EcdhKey::generate(&mut keys).unwrap();
    let (dca_ecdh, dca_scalar) = EcdhKey::generate(&mut keys).unwrap();
    let dca_pkcs8 = ecdsa_pkcs8_from_scalar(&dca_scalar, dca_ecdh.public_key()).unwrap();
    let dca_key = EcdsaKey::from_pkcs8(&dca_pkcs8).unwrap();
    let (root_key, _) = EcdsaKey::generate().unwrap();
    let (m_key, _) = EcdsaKey::generate().unwrap();
    let (g_key, _) = EcdsaKey::generate().unwrap();

    let start = time::macros::datetime!(2025-01-01 0:00 UTC);
    let end = start + time::Duration::days(365 * 100);
    let spec = |cn: String, org: &str, id: OemId| {
        let mut s = CertSpec::new(cn, org.to_string(), id, 1);
        s.not_before = start;
        s.not_after = end;
        s
    };
    let mut root_spec = spec(format!("{oem_name} Root CA"), oem_name, oem);
    root_spec.ca_path_len = Some(2);
    let root = pki::self_signed(&root_spec, &root_key).unwrap();
    let mut dca_spec = spec(format!("{oem_name} Device CA"), oem_name, oem);
    dca_spec.ca_path_len = Some(1);
    let dca = pki::issue(&dca_spec, dca_key.public_key(), &root, &root_key).unwrap();
    let mut m_spec = spec(format!("{oem_name} Mastering"), oem_name, oem);
    m_spec.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    m_spec.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    let mastering = pki::issue(&m_spec, m_key.public_key(), &root, &root_key).unwrap();
    // The Guardian's identity as `guardian init` makes it (no OEM: u32::MAX).
    let no_oem = OemId::new(u32::MAX).unwrap();
    let mut gs_spec = spec("Vector Guardian Signing".into(), "Vector Guardian", no_oem);
    gs_spec.ca_path_len = Some(0);
    let g_signing = pki::self_signed(&gs_spec, &g_key).unwrap();
    let mut gk_spec = spec("Vector Guardian".into(), "Vector Guardian", no_oem);
    gk_spec.key_usages = vec![rcgen::KeyUsagePurpose::KeyAgreement];
    let g_kem = pki::issue(&gk_spec, kem.public_key(), &g_signing, &g_key).unwrap();

    // A small release of the product, encrypted to the product key.
    let mut image = vec![0u8; 300];
    keys.fill(&mut image).unwrap();
    let params = MasterParams {
        oem_id: oem,
        product_id: product,
        version: "1.0.0".parse::<Version>().unwrap(),
        security_counter: SecurityCounter(1 << 32),
        load_address: 0x0800_0000,
        created: 1_767_225_600,
        recipients: vec![product_key.public_key().clone()],
        device_uids: None,
        mastering_cert_der: mastering.der.clone(),
    };
    let mut release_enc = Vec::new();
    let release = master_stream(
        &params,
        &image[..],
        image.len() as u64,
        &mut release_enc,
        &m_key,
        &mut TestVectorEntropy::new([0x51; 32]),
        &|_| {},
    )
    .unwrap();

    for (i, c) in cases().into_iter().enumerate() {
        let mut package_id = [0u8; 16];
        keys.fill(&mut package_id).unwrap();
        let (issuing, issuing_scalar) = EcdhKey::generate(&mut keys).unwrap();
        let mut i_spec = spec(
            format!("{oem_name} Issuing CA {}", hex::encode(&package_id[..4])),
            oem_name,
            oem,
        );
        i_spec.ca_path_len = Some(0);
        i_spec.product_id = Some(product);
        let issuing_cert = pki::issue(
            &i_spec,
            issuing.public_key(),
            &pki::issuer_from_der(&dca.der).unwrap(),
            &dca_key,
        )
        .unwrap();
        let inputs = json!({
            "root_cert_der": hex::encode(&root.der),
            "device_ca_pkcs8": hex::encode(&dca_pkcs8[..]),
            "device_ca_cert_der": hex::encode(&dca.der),
            "mastering_cert_der": hex::encode(&mastering.der),
            "guardian_kem_scalar": hex::encode(&kem_scalar[..]),
            "guardian_kem_cert_der": hex::encode(&g_kem.der),
            "guardian_signing_cert_der": hex::encode(&g_signing.der),
            "issuing_ca_scalar": hex::encode(&issuing_scalar[..]),
            "issuing_ca_cert_der": hex::encode(&issuing_cert.der),
            "product_scalar": hex::encode(&product_scalar[..]),
            "release_upk": hex::encode(&release.upk),
            "release_enc": hex::encode(&release_enc),
            "package_id": hex::encode(package_id),
            "oem_id": oem.get(),
            "product_id": product.get(),
            "oem_name": oem_name,
            "product_name": product_name,
            "created": c.created,
            "expires": c.expires,
            "count": c.count,
            "serial_start": c.serial_start,
            "device_types": c.device_types,
            "uid_range": c.uid_range.as_ref().map(|(lo, hi)| vec![hex::encode(lo), hex::encode(hi)]),
            "template": Template::default().to_toml(),
            "entropy_seed": hex::encode([0x60 + i as u8; 32]),
        });
        let expected = expected_from(&inputs);
        // Sign (randomized) and seal (deterministic given the signature).
        let signed = sign(&inputs);
        let sealed = seal(&inputs, &signed);
        let dir = vectors_dir().join("package").join(c.name);
        std::fs::create_dir_all(&dir).unwrap();
        let v = json!({ "description": c.description, "inputs": inputs, "expected": expected });
        write_vector(&dir, &v, &sealed);
        if c.name == "basic" {
            bless_invalid(&v, &signed, &sealed, &other_kem_scalar);
        }
    }
}

fn write_vector(dir: &Path, v: &Value, package: &[u8]) {
    std::fs::write(
        dir.join("vector.json"),
        serde_json::to_string_pretty(v).unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(dir.join("package.tcpkg"), package).unwrap();
}

/// Attack fixtures derived from the basic vector, each with its own seed.
fn bless_invalid(v: &Value, signed: &[u8], sealed: &[u8], other_kem: &[u8; 32]) {
    let fixture = |what: &str, error: &str, seed: u8, attack: Value| {
        let mut v = v.clone();
        v["description"] = json!(format!("attack fixture: {what}"));
        v["expected_error"] = json!(error);
        v["attack"] = attack;
        v.as_object_mut().unwrap().remove("expected");
        if seed != 0 {
            v["inputs"]["entropy_seed"] = json!(hex::encode([seed; 32]));
        }
        v
    };
    let dir = |name: &str| {
        let d = vectors_dir().join("package-invalid").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    // Sealed to another Guardian's key-agreement key.
    let other = EcdhKey::from_scalar(other_kem).unwrap();
    let v1 = fixture(
        "the valid signed manifest of basic sealed to another key-agreement key",
        "open",
        0x71,
        json!({ "sealed_to_scalar": hex::encode(other_kem) }),
    );
    let seed: [u8; 32] = h32(&v1["inputs"]["entropy_seed"]);
    let p1 = seal_for(
        other.public_key(),
        signed,
        &mut TestVectorEntropy::new(seed),
    )
    .unwrap();
    write_vector(&dir("wrong-guardian"), &v1, &p1);

    // The last signature byte flipped before sealing.
    let mut bad = signed.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let v2 = fixture(
        "the last byte of the OEM signature flipped before sealing",
        "signature",
        0x72,
        json!({ "signed_offset": last, "xor": 1 }),
    );
    let p2 = seal(&v2["inputs"], &bad);
    write_vector(&dir("bad-signature"), &v2, &p2);

    // One ciphertext byte of the basic package flipped.
    let outer = Encrypted::parse(sealed).unwrap();
    let at =
        outer.ciphertext.as_ptr() as usize - sealed.as_ptr() as usize + outer.ciphertext.len() / 2;
    let mut p3 = sealed.to_vec();
    p3[at] ^= 0x80;
    let v3 = fixture(
        "one byte in the middle of the ciphertext of basic flipped",
        "open",
        0,
        json!({ "package_offset": at, "xor": 0x80 }),
    );
    write_vector(&dir("tampered"), &v3, &p3);
}

fn guardian_key(inputs: &Value) -> EcdhKey {
    EcdhKey::from_scalar(&h(&inputs["guardian_kem_scalar"])).unwrap()
}

fn seed(inputs: &Value) -> [u8; 32] {
    h32(&inputs["entropy_seed"])
}

/// The manifest the inputs describe.
fn spec_from(inputs: &Value) -> ManifestSpec {
    ManifestSpec {
        package_id: h(&inputs["package_id"]).try_into().unwrap(),
        oem_id: OemId::new(u(&inputs["oem_id"]) as u32).unwrap(),
        product_id: ProductId::new(u(&inputs["product_id"]) as u32).unwrap(),
        guardian: sha256(&h(&inputs["guardian_kem_cert_der"])),
        created: u(&inputs["created"]),
        expires: u(&inputs["expires"]),
        count: u(&inputs["count"]),
        serial_start: u(&inputs["serial_start"]),
        device_types: inputs["device_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| u(t) as u32)
            .collect(),
        uid_range: inputs["uid_range"].as_array().map(|r| (h(&r[0]), h(&r[1]))),
        template: inputs["template"].as_str().unwrap().to_string(),
        issuing_ca_cert: h(&inputs["issuing_ca_cert_der"]),
        issuing_ca_key: h32(&inputs["issuing_ca_scalar"]),
        device_ca_cert: h(&inputs["device_ca_cert_der"]),
        root_cert: h(&inputs["root_cert_der"]),
        product_key: h32(&inputs["product_scalar"]),
        mastering_cert: h(&inputs["mastering_cert_der"]),
        release_upk: h(&inputs["release_upk"]),
        release_enc: h(&inputs["release_enc"]),
        oem_name: inputs["oem_name"].as_str().unwrap().to_string(),
        product_name: inputs["product_name"].as_str().unwrap().to_string(),
    }
}

/// The COSE_Sign1 over the manifest, signed by the device CA (as `wrap` does).
fn sign(inputs: &Value) -> Vec<u8> {
    let payload = spec_from(inputs).encode();
    let mut tbs = Vec::new();
    sig_structure(&PROTECTED_ES256, &payload, |b| tbs.extend_from_slice(b));
    let key = EcdsaKey::from_pkcs8(&h(&inputs["device_ca_pkcs8"])).unwrap();
    let signature = key.sign(&tbs).unwrap();
    encode_sign1(
        Some(&h(&inputs["device_ca_cert_der"])),
        &payload,
        &signature,
    )
}

/// The package: `signed` sealed to the Guardian with the vector's entropy.
fn seal(inputs: &Value, signed: &[u8]) -> Vec<u8> {
    let kem = guardian_key(inputs);
    seal_for(
        kem.public_key(),
        signed,
        &mut TestVectorEntropy::new(seed(inputs)),
    )
    .unwrap()
}

/// Every value the inputs determine.
fn expected_from(inputs: &Value) -> Value {
    let payload = spec_from(inputs).encode();
    let unsigned = encode_sign1(Some(&h(&inputs["device_ca_cert_der"])), &payload, &[0; 64]);
    let signed_prefix = &unsigned[..unsigned.len() - 64];
    // seal_for draws the CEK (32 bytes), the IV (12 bytes) and the
    // ephemeral scalar, in that order.
    let mut e = TestVectorEntropy::new(seed(inputs));
    let mut cek = [0u8; 32];
    e.fill(&mut cek).unwrap();
    let mut iv = [0u8; 12];
    e.fill(&mut iv).unwrap();
    let (eph, eph_scalar) = EcdhKey::generate(&mut e).unwrap();
    // Everything in the encrypted layer but the ciphertext is independent of
    // the signature: seal the unsigned bytes and read it back.
    let sealed = seal(inputs, &unsigned);
    let outer = Encrypted::parse(&sealed).unwrap();
    assert_eq!(outer.iv, &iv);
    assert_eq!(outer.ephemeral.to_sec1(), eph.public_key().0);
    json!({
        "guardian_id": hex::encode(sha256(&h(&inputs["guardian_kem_cert_der"]))),
        "manifest": hex::encode(&payload),
        "signed_without_signature": hex::encode(signed_prefix),
        "content_key": hex::encode(cek),
        "iv": hex::encode(iv),
        "ephemeral_scalar": hex::encode(&eph_scalar[..]),
        "kid": hex::encode(outer.kid),
        "ephemeral_x": hex::encode(outer.ephemeral.x),
        "ephemeral_y": hex::encode(outer.ephemeral.y),
        "wrapped_key": hex::encode(outer.wrapped_key),
        "package_size": sealed.len(),
    })
}

/// A keystore holding only the Guardian key-agreement key of the vector.
fn guardian_keystore(tmp: &Path, inputs: &Value) -> SealedKeyStore {
    let mut ks = SealedKeyStore::create(&tmp.join("ks"), &pass(), FAST).unwrap();
    let public = ks
        .import_scalar(
            &kem_label(),
            KeyKind::EcdhP256,
            &h32(&inputs["guardian_kem_scalar"]),
        )
        .unwrap();
    assert_eq!(&public, guardian_key(inputs).public_key());
    ks
}

/// A Guardian directory whose identity and key-agreement key are the
/// vector's, trusting the vector's root. `guardian init` makes its own
/// keys, so the test swaps them in (its key files and identity.pem).
fn vector_guardian(tmp: &Path, inputs: &Value) -> (GuardianDir, SealedKeyStore) {
    let path = tmp.join("guardian");
    GuardianDir::init(&path, "Vector Center", &pass(), FAST).unwrap();
    let g = GuardianDir::open(&path).unwrap();
    std::fs::remove_file(path.join("keystore").join(format!("{}.key", kem_label()))).unwrap();
    let mut ks = g.unlock(&pass()).unwrap();
    ks.import_scalar(
        &kem_label(),
        KeyKind::EcdhP256,
        &h32(&inputs["guardian_kem_scalar"]),
    )
    .unwrap();
    let identity = pki::to_pem(&h(&inputs["guardian_kem_cert_der"]))
        + &pki::to_pem(&h(&inputs["guardian_signing_cert_der"]));
    std::fs::write(path.join("identity.pem"), identity).unwrap();
    assert_eq!(
        g.identity().unwrap().id,
        sha256(&h(&inputs["guardian_kem_cert_der"]))
    );
    let root_pem = tmp.join("root.pem");
    std::fs::write(&root_pem, pki::to_pem(&h(&inputs["root_cert_der"]))).unwrap();
    g.trust_root(&root_pem).unwrap();
    (g, ks)
}

fn load(dir: &Path) -> (Value, Vec<u8>) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vector.json")).unwrap()).unwrap();
    (v, std::fs::read(dir.join("package.tcpkg")).unwrap())
}

fn dirs(kind: &str) -> Vec<PathBuf> {
    let root = vectors_dir().join(kind);
    let mut d: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (bless the vectors)", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    d.sort();
    d
}

/// Verifies the signed layer with the device CA key of the inputs.
fn signature_verifies(inputs: &Value, signed: &[u8]) -> bool {
    let sign1 = Sign1::parse(signed, package::limits::MAX_PACKAGE_LEN).unwrap();
    let key = EcdsaKey::from_pkcs8(&h(&inputs["device_ca_pkcs8"])).unwrap();
    verify_es256(&key.public_key().0, &sign1.to_be_signed(), sign1.signature)
}

/// Every manifest field is the inputs' value.
fn check_manifest(m: &Manifest<'_>, inputs: &Value) {
    let s = spec_from(inputs);
    assert_eq!(m.package_id, &s.package_id);
    assert_eq!(m.oem_id, s.oem_id);
    assert_eq!(m.product_id, s.product_id);
    assert_eq!(m.guardian, &s.guardian);
    assert_eq!(
        (m.created, m.expires, m.count, m.serial_start),
        (s.created, s.expires, s.count, s.serial_start)
    );
    assert_eq!(m.device_types().collect::<Vec<_>>(), s.device_types);
    assert_eq!(
        m.uid_range,
        s.uid_range.as_ref().map(|(l, h)| (&l[..], &h[..]))
    );
    assert_eq!(m.template, s.template);
    assert_eq!(m.issuing_ca_cert, &s.issuing_ca_cert[..]);
    assert_eq!(m.issuing_ca_key, &s.issuing_ca_key);
    assert_eq!(m.device_ca_cert, &s.device_ca_cert[..]);
    assert_eq!(m.root_cert, &s.root_cert[..]);
    assert_eq!(m.product_key, &s.product_key);
    assert_eq!(m.mastering_cert, &s.mastering_cert[..]);
    assert_eq!(m.release_upk, &s.release_upk[..]);
    assert_eq!(m.release_enc, &s.release_enc[..]);
    assert_eq!(m.oem_name, s.oem_name);
    assert_eq!(m.product_name, s.product_name);
}

/// With `TRUSTCHAIN_BLESS` set, rewrites the vectors once, before either
/// test reads them.
fn maybe_bless() {
    static BLESS: std::sync::Once = std::sync::Once::new();
    BLESS.call_once(|| {
        if std::env::var_os("TRUSTCHAIN_BLESS").is_some() {
            bless();
        }
    });
}

#[test]
fn valid_vectors_reproduce_open_verify_and_import() {
    maybe_bless();
    let all = dirs("package");
    assert_eq!(all.len(), cases().len(), "one directory per case");
    for dir in all {
        let what = dir.display().to_string();
        let (v, bytes) = load(&dir);
        let (inputs, expected) = (&v["inputs"], &v["expected"]);
        // Every deterministic value, rebuilt from the inputs.
        assert_eq!(&expected_from(inputs), expected, "{what}: expected values");
        assert_eq!(bytes.len() as u64, u(&expected["package_size"]), "{what}");

        // The outer layer, as stored.
        let outer = Encrypted::parse(&bytes).unwrap();
        let kem = guardian_key(inputs);
        assert_eq!(outer.kid, &kem.public_key().kid(), "{what}: kid");
        assert_eq!(hex::encode(outer.iv), expected["iv"].as_str().unwrap());
        assert_eq!(
            hex::encode(outer.wrapped_key),
            expected["wrapped_key"].as_str().unwrap()
        );

        // Open it as the Guardian does.
        let tmp = tempfile::tempdir().unwrap();
        let ks = guardian_keystore(tmp.path(), inputs);
        let signed = import::open(&ks, &outer).expect("the Guardian opens the package");
        assert_eq!(
            &signed[..signed.len() - 64],
            &h(&expected["signed_without_signature"])[..],
            "{what}: COSE_Sign1 without its signature"
        );
        // The same CEK, recovered with the recipient's key.
        let shared = kem.agree(&outer.ephemeral.to_sec1()).unwrap();
        let kek = trustchain_oem::wrap::a256kw_kek_pub(&shared).unwrap();
        let mut cek = [0u8; 32];
        {
            use aws_lc_rs::key_wrap::{AesKek, KeyWrap, AES_256};
            let kek = AesKek::new(&AES_256, &kek[..]).unwrap();
            assert_eq!(kek.unwrap(outer.wrapped_key, &mut cek).unwrap().len(), 32);
        }
        assert_eq!(hex::encode(cek), expected["content_key"].as_str().unwrap());

        // Re-sealing the stored signed bytes with the same entropy gives the file back.
        assert_eq!(seal(inputs, &signed), bytes, "{what}: re-sealed package");

        // The signature, by the device CA in x5chain.
        let sign1 = Sign1::parse(&signed, package::limits::MAX_PACKAGE_LEN).unwrap();
        let dca_der = h(&inputs["device_ca_cert_der"]);
        assert_eq!(sign1.x5chain, Some(&dca_der[..]));
        let dca_key = EcdsaKey::from_pkcs8(&h(&inputs["device_ca_pkcs8"])).unwrap();
        let cert_key = pki::cert_public_key(&pki::parse_cert(&dca_der).unwrap()).unwrap();
        assert_eq!(
            &cert_key,
            dca_key.public_key(),
            "{what}: PKCS#8 vs certificate"
        );
        assert!(signature_verifies(inputs, &signed), "{what}: signature");
        pki::verify_issued_by(&dca_der, &h(&inputs["root_cert_der"])).unwrap();

        // The manifest, field by field.
        assert_eq!(sign1.payload, &h(&expected["manifest"])[..]);
        let m = Manifest::parse(sign1.payload).unwrap();
        check_manifest(&m, inputs);
        assert_eq!(
            hex::encode(m.guardian),
            expected["guardian_id"].as_str().unwrap()
        );
        let issuing = EcdhKey::from_scalar(m.issuing_ca_key).unwrap();
        let issuing_cert = pki::parse_cert(m.issuing_ca_cert).unwrap();
        assert_eq!(
            pki::cert_public_key(&issuing_cert).as_ref(),
            Some(issuing.public_key())
        );
        let upk = Upk::parse(m.release_upk).unwrap();
        assert_eq!(sha256(m.release_enc), upk.manifest.ciphertext_digest.0);
        let product = EcdhKey::from_scalar(m.product_key).unwrap();
        assert!(
            upk.manifest
                .encryption
                .recipient_for(&product.public_key().kid())
                .is_some(),
            "{what}: the release is encrypted to the product key"
        );

        // A Guardian holding the vector's keys imports it, once.
        let (g, mut gks) = vector_guardian(tmp.path(), inputs);
        let path = dir.join("package.tcpkg");
        let created = u(&inputs["created"]);
        let r = import(&g, &mut gks, &path, created).expect("import");
        assert_eq!(r.package_id, inputs["package_id"].as_str().unwrap());
        assert_eq!(r.count, u(&inputs["count"]));
        assert!(matches!(
            import(&g, &mut gks, &path, created),
            Err(Error::Replay { .. })
        ));
        // ... and not once it has expired.
        let late = tmp.path().join("late");
        std::fs::create_dir(&late).unwrap();
        let (g2, mut gks2) = vector_guardian(&late, inputs);
        assert!(matches!(
            import(&g2, &mut gks2, &path, u(&inputs["expires"])),
            Err(Error::PackageRefused { .. })
        ));
    }
}

#[test]
fn attack_fixtures_are_refused_at_their_stage() {
    maybe_bless();
    let all = dirs("package-invalid");
    assert_eq!(
        all.iter()
            .map(|d| d.file_name().unwrap().to_str().unwrap())
            .collect::<Vec<_>>(),
        ["bad-signature", "tampered", "wrong-guardian"]
    );
    for dir in all {
        let what = dir.display().to_string();
        let (v, bytes) = load(&dir);
        let inputs = &v["inputs"];
        let attack = &v["attack"];
        let tmp = tempfile::tempdir().unwrap();
        let ks = guardian_keystore(tmp.path(), inputs);
        let outer = Encrypted::parse(&bytes).expect("the outer layer parses");
        let name = dir.file_name().unwrap().to_str().unwrap();
        let (g, mut gks) = vector_guardian(tmp.path(), inputs);
        let err = import(
            &g,
            &mut gks,
            &dir.join("package.tcpkg"),
            u(&inputs["created"]),
        )
        .expect_err("an attack fixture must be refused");
        match v["expected_error"].as_str().unwrap() {
            "open" => {
                assert!(import::open(&ks, &outer).is_none(), "{what} opened");
                assert!(matches!(err, Error::NotForThisGuardian { .. }), "{err}");
            }
            "signature" => {
                let signed = import::open(&ks, &outer).expect("it opens");
                let m = Manifest::parse(
                    Sign1::parse(&signed, package::limits::MAX_PACKAGE_LEN)
                        .unwrap()
                        .payload,
                )
                .unwrap();
                check_manifest(&m, inputs);
                assert!(!signature_verifies(inputs, &signed), "{what} verifies");
                assert!(
                    matches!(&err, Error::PackageRefused { problem, .. } if problem.contains("signature")),
                    "{err}"
                );
            }
            other => panic!("unknown expected_error {other}"),
        }
        // Each fixture is exactly the attack it claims: undoing it gives a
        // package that opens and verifies.
        match name {
            "wrong-guardian" => {
                let other = EcdhKey::from_scalar(&h(&attack["sealed_to_scalar"])).unwrap();
                assert_ne!(outer.kid, &guardian_key(inputs).public_key().kid());
                assert_eq!(outer.kid, &other.public_key().kid());
                let tmp2 = tempfile::tempdir().unwrap();
                let mut oks =
                    SealedKeyStore::create(&tmp2.path().join("ks"), &pass(), FAST).unwrap();
                oks.import_scalar(
                    &kem_label(),
                    KeyKind::EcdhP256,
                    &h32(&attack["sealed_to_scalar"]),
                )
                .unwrap();
                let signed = import::open(&oks, &outer).expect("opens with the other key");
                assert!(signature_verifies(inputs, &signed));
                let again = seal_for(
                    other.public_key(),
                    &signed,
                    &mut TestVectorEntropy::new(seed(inputs)),
                )
                .unwrap();
                assert_eq!(again, bytes, "{what}: re-sealed");
            }
            "bad-signature" => {
                let mut signed = import::open(&ks, &outer).unwrap().to_vec();
                assert_eq!(seal(inputs, &signed), bytes, "{what}: re-sealed");
                let at = u(&attack["signed_offset"]) as usize;
                assert_eq!(at, signed.len() - 1);
                signed[at] ^= u(&attack["xor"]) as u8;
                assert!(signature_verifies(inputs, &signed), "{what}: undone");
            }
            "tampered" => {
                let mut fixed = bytes.clone();
                fixed[u(&attack["package_offset"]) as usize] ^= u(&attack["xor"]) as u8;
                let outer = Encrypted::parse(&fixed).unwrap();
                let at = u(&attack["package_offset"]) as usize;
                let ct = outer.ciphertext.as_ptr() as usize - fixed.as_ptr() as usize;
                assert!((ct..ct + outer.ciphertext.len()).contains(&at));
                let signed = import::open(&ks, &outer).expect("undone, it opens");
                assert!(signature_verifies(inputs, &signed));
            }
            other => panic!("unexpected fixture {other}"),
        }
    }
}
