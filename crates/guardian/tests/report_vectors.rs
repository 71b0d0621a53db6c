//! Test vectors for the production report (`docs/formats.md`, "Production
//! report" and "Test vectors").
//!
//! Each `tests/vectors/report/<name>/` holds `vector.json` (inputs and
//! expected values) and `report.tcrep`. The inputs are what a Guardian's
//! store holds for one job (package ID, job, counts, device records with
//! real certificates issued by the vector's issuing CA, the job's log) and
//! the Guardian's signing key and identity; the expected values are the log
//! entries' CBOR, the hash chain `H_0 .. H_n`, the payload and the
//! COSE_Sign1 without its signature. This test rebuilds the expected values
//! from the inputs with the format code (`encode_log_entry`,
//! `ReportSpec::encode`, `encode_signed`) and compares them byte for byte.
//! ECDSA is randomized, so the stored report is checked by verification
//! with the signing certificate's key; it is parsed with `Report::parse` and
//! compared field by field with the inputs, its chain is recomputed, and
//! the OEM's reconciliation (`crates/oem/src/reconcile.rs`) is re-done here
//! against the inputs (which stand for what the OEM wrapped): it must find
//! nothing.
//!
//! `tests/vectors/report-invalid/<name>/` are attack fixtures, each with an
//! `expected_error` (the first check that fails) and `expected_anomalies`
//! (every check that fails, in reconciliation order): `bad-signature`,
//! `broken-chain`, `duplicate-uid` and `over-count`.
//! `tests/python/test_report_crosscheck.py` checks the same files with an
//! independent implementation.
//!
//! `TRUSTCHAIN_BLESS=1 cargo test -p trustchain-guardian --test report_vectors`
//! rewrites the files (new certificates and signatures) after a deliberate
//! format change.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use trustchain_formats::cose::{sig_structure, PROTECTED_ES256};
use trustchain_formats::report::{encode_log_entry, encode_signed, status, Report, ReportSpec};
use trustchain_formats::{OemId, ProductId};
use trustchain_oem::crypto::{
    ecdsa_pkcs8_from_scalar, sha256, verify_es256, EcdhKey, EcdsaKey, Entropy, PublicKey,
    TestVectorEntropy,
};
use trustchain_oem::pki::{self, CertSpec};
use trustchain_oem::template::Template;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("unsigned integer")
}

/// The time of the import, and the step between two log entries.
const T0: u64 = 1_767_225_660;
const STEP: u64 = 60;

struct Case {
    name: &'static str,
    description: &'static str,
    job: u64,
    count: u64,
    serial_start: u64,
    /// (UID, device type) of each device certified, in serial order.
    devices: Vec<(Vec<u8>, u32)>,
    /// Indices (into `devices`) of the devices that then failed.
    failed: Vec<usize>,
}

fn uid4(n: u8) -> Vec<u8> {
    vec![0x10, 0x00, 0x00, n]
}

fn uid12(n: u8) -> Vec<u8> {
    let mut u = vec![
        0x20, 0x36, 0x47, 0x58, 0x31, 0x30, 0x50, 0x14, 0x00, 0x2a, 0x00, n,
    ];
    u[8] = n.wrapping_mul(3);
    u
}

fn valid_cases() -> Vec<Case> {
    vec![
        Case {
            name: "basic",
            description: "three devices certified and provisioned",
            job: 1,
            count: 1000,
            serial_start: 5000,
            devices: vec![(uid4(1), 1), (uid4(2), 0x0001_0002), (uid4(3), 1)],
            failed: vec![],
        },
        Case {
            name: "with-failure",
            description: "three devices certified, the second then failed",
            job: 2,
            count: 10,
            serial_start: 0,
            devices: vec![(uid12(1), 3), (uid12(2), 3), (uid12(3), 3)],
            failed: vec![1],
        },
        Case {
            name: "no-devices",
            description: "a job imported and reported before any device",
            job: 3,
            count: 5,
            serial_start: 100,
            devices: vec![],
            failed: vec![],
        },
    ]
}

/// Attack fixtures built from their own inputs (signed as they are).
fn signed_attack_cases() -> Vec<(Case, &'static str, Vec<&'static str>)> {
    vec![
        (
            Case {
                name: "duplicate-uid",
                description: "attack fixture: the third device has the UID of the first (a clone), properly signed",
                job: 1,
                count: 1000,
                serial_start: 5000,
                devices: vec![(uid4(1), 1), (uid4(2), 1), (uid4(1), 1)],
                failed: vec![],
            },
            "duplicate-uid",
            vec!["duplicate-uid"],
        ),
        (
            Case {
                name: "over-count",
                description: "attack fixture: three devices issued on a count of 2, properly signed",
                job: 4,
                count: 2,
                serial_start: 5000,
                devices: vec![(uid4(1), 1), (uid4(2), 1), (uid4(3), 1)],
                failed: vec![],
            },
            "over-count",
            // Three distinct serials cannot fit a range of two.
            vec!["over-count", "serial-range"],
        ),
    ]
}

fn ecdsa(keys: &mut TestVectorEntropy) -> (EcdsaKey, Vec<u8>) {
    let (k, scalar) = EcdhKey::generate(keys).unwrap();
    let pkcs8 = ecdsa_pkcs8_from_scalar(&scalar, k.public_key()).unwrap();
    (EcdsaKey::from_pkcs8(&pkcs8).unwrap(), pkcs8.to_vec())
}

/// Fresh certificates (keys from a fixed seed) for blessing: one OEM
/// hierarchy, one Guardian, and per job a package ID, its issuing CA, the device
/// certificates and the log.
fn bless() {
    let oem = OemId::new(0x1234).unwrap();
    let product = ProductId::new(7).unwrap();
    let (oem_name, product_name) = ("Vector OEM", "Vector Thermostat");
    let mut keys = TestVectorEntropy::new([0x80; 32]);
    let (root_key, _) = ecdsa(&mut keys);
    let (dca_key, _) = ecdsa(&mut keys);
    let (g_key, g_pkcs8) = ecdsa(&mut keys);
    let (kem, _) = EcdhKey::generate(&mut keys).unwrap();

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
    // The Guardian's identity as `guardian init` makes it (no OEM: u32::MAX).
    let no_oem = OemId::new(u32::MAX).unwrap();
    let mut gs_spec = spec("Vector Guardian Signing".into(), "Vector Guardian", no_oem);
    gs_spec.ca_path_len = Some(0);
    let g_signing = pki::self_signed(&gs_spec, &g_key).unwrap();
    let mut gk_spec = spec("Vector Guardian".into(), "Vector Guardian", no_oem);
    gk_spec.key_usages = vec![rcgen::KeyUsagePurpose::KeyAgreement];
    let g_kem = pki::issue(&gk_spec, kem.public_key(), &g_signing, &g_key).unwrap();

    // The Guardian issues under the job's issuing CA as `JobIssuer` does.
    let template = Template::default();
    let device_cert = |serial: u64,
                       uid: &[u8],
                       key: &PublicKey,
                       issuer: &pki::IssuerCert,
                       issuing_key: &EcdsaKey| {
        let vars: BTreeMap<&str, String> = [
            ("serial", format!("{serial:08}")),
            ("uid", hex::encode(uid)),
            ("oem_id", oem.to_string()),
            ("product_id", product.to_string()),
            ("oem_name", oem_name.to_string()),
            ("product_name", product_name.to_string()),
        ]
        .into_iter()
        .collect();
        pki::issue_device_cert(&template, &vars, key, oem, product, issuer, issuing_key).unwrap()
    };

    let common = json!({
        "guardian_signing_pkcs8": hex::encode(&g_pkcs8),
        "guardian_signing_cert_der": hex::encode(&g_signing.der),
        "guardian_kem_cert_der": hex::encode(&g_kem.der),
        "root_cert_der": hex::encode(&root.der),
        "device_ca_cert_der": hex::encode(&dca.der),
        "oem_id": oem.get(),
        "product_id": product.get(),
    });
    // Per job: its package ID and the package's issuing CA (as `wrap`
    // makes them), then its devices and log.
    let mut inputs_of = |c: &Case| {
        let mut package_id = [0u8; 16];
        keys.fill(&mut package_id).unwrap();
        let (issuing_key, _) = ecdsa(&mut keys);
        let mut i_spec = spec(
            format!("{oem_name} Issuing CA {}", hex::encode(&package_id[..4])),
            oem_name,
            oem,
        );
        i_spec.ca_path_len = Some(0);
        i_spec.product_id = Some(product);
        let issuing = pki::issue(&i_spec, issuing_key.public_key(), &dca, &dca_key).unwrap();
        let issuer = pki::issuer_from_der(&issuing.der).unwrap();
        let mut devices = vec![];
        let mut log = vec![
            json!({ "n": 1, "action": "import", "serial": null, "cert_sha256": null, "time": T0 }),
        ];
        for (i, (uid, ty)) in c.devices.iter().enumerate() {
            let serial = c.serial_start + i as u64;
            let (device_key, _) = EcdhKey::generate(&mut keys).unwrap();
            let cert = device_cert(serial, uid, device_key.public_key(), &issuer, &issuing_key);
            let n = log.len() as u64 + 1;
            log.push(json!({ "n": n, "action": "issue", "serial": serial,
                             "cert_sha256": hex::encode(sha256(&cert)), "time": T0 + STEP * (n - 1) }));
            let st = if c.failed.contains(&i) {
                status::FAILED
            } else {
                status::ISSUED
            };
            devices.push(
                json!({ "serial": serial, "uid": hex::encode(uid), "device_type": ty,
                                 "status": st, "cert_der": hex::encode(&cert) }),
            );
        }
        for &i in &c.failed {
            let n = log.len() as u64 + 1;
            log.push(
                json!({ "n": n, "action": "fail", "serial": c.serial_start + i as u64,
                             "cert_sha256": null, "time": T0 + STEP * (n - 1) }),
            );
        }
        let mut inputs = common.clone();
        let o = inputs.as_object_mut().unwrap();
        o.insert(
            "issuing_ca_cert_der".into(),
            json!(hex::encode(&issuing.der)),
        );
        o.insert("package_id".into(), json!(hex::encode(package_id)));
        o.insert("job".into(), json!(c.job));
        o.insert("count".into(), json!(c.count));
        o.insert("serial_start".into(), json!(c.serial_start));
        o.insert(
            "issued".into(),
            json!((c.devices.len() - c.failed.len()) as u64),
        );
        o.insert("failed".into(), json!(c.failed.len() as u64));
        o.insert("created".into(), json!(T0 + STEP * log.len() as u64));
        o.insert("devices".into(), json!(devices));
        o.insert("log".into(), json!(log));
        inputs
    };

    let mut by_name = BTreeMap::new();
    for c in valid_cases() {
        let inputs = inputs_of(&c);
        let signed = sign(&inputs, &Value::Null);
        let v = json!({ "description": c.description, "inputs": inputs,
                        "expected": expected_from(&inputs, &Value::Null) });
        write_vector(&vectors_dir().join("report").join(c.name), &v, &signed);
        by_name.insert(c.name, (v, signed));
    }
    let invalid = |name: &str| vectors_dir().join("report-invalid").join(name);
    let fixture =
        |description: &str, inputs: &Value, attack: Value, error: &str, anomalies: &[&str]| {
            json!({ "description": description, "inputs": inputs, "attack": attack,
                "expected_error": error, "expected_anomalies": anomalies,
                "expected": expected_from(inputs, &attack) })
        };

    // One payload byte changed after signing: the low byte of `created`.
    let (basic, signed) = &by_name["basic"];
    let inputs = &basic["inputs"];
    let payload = h(&basic["expected"]["payload"]);
    let payload_at = signed.len() - 64 - 2 - payload.len();
    let mut needle = vec![0x09, 0x1a];
    needle.extend_from_slice(&(u(&inputs["created"]) as u32).to_be_bytes());
    let in_payload = payload
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len()
        - 1;
    let at = payload_at + in_payload;
    let mut bad = signed.clone();
    bad[at] ^= 0x01;
    let attack = json!({ "report_offset": at, "xor": 1 });
    let v = fixture(
        "attack fixture: the report of basic with the low byte of `created` (in the payload) XOR 01 after signing",
        inputs,
        attack,
        "signature",
        &["signature"],
    );
    write_vector(&invalid("bad-signature"), &v, &bad);

    // The last log entry (the `fail`) removed before signing; the head is
    // still that of the whole log.
    let (wf, _) = &by_name["with-failure"];
    let inputs = &wf["inputs"];
    let last = inputs["log"].as_array().unwrap().len() as u64;
    let attack = json!({ "removed_log_entry": last });
    let v = fixture(
        "attack fixture: the report of with-failure signed with its last log entry (the fail) removed, the head unchanged",
        inputs,
        attack.clone(),
        "chain",
        &["chain"],
    );
    write_vector(&invalid("broken-chain"), &v, &sign(inputs, &attack));

    for (c, error, anomalies) in signed_attack_cases() {
        let inputs = inputs_of(&c);
        let v = fixture(c.description, &inputs, json!({}), error, &anomalies);
        write_vector(&invalid(c.name), &v, &sign(&inputs, &Value::Null));
    }
}

fn write_vector(dir: &Path, v: &Value, report: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("vector.json"),
        serde_json::to_string_pretty(v).unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(dir.join("report.tcrep"), report).unwrap();
}

fn opt_u(v: &Value) -> Option<u64> {
    (!v.is_null()).then(|| u(v))
}

/// The CBOR of each log entry of the inputs, as the store writes them.
fn log_entries(inputs: &Value) -> Vec<Vec<u8>> {
    inputs["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let cert: Option<[u8; 32]> =
                (!e["cert_sha256"].is_null()).then(|| h(&e["cert_sha256"]).try_into().unwrap());
            encode_log_entry(
                u(&e["n"]),
                e["action"].as_str().unwrap(),
                opt_u(&e["serial"]),
                cert.as_ref(),
                u(&e["time"]),
            )
        })
        .collect()
}

/// `H_0 = SHA-256(package ID)`, `H_i = SHA-256(H_{i-1} || entry_i)` (the
/// store's `append_log`): every `H_i`, from `H_0`.
fn chain<'a>(package_id: &[u8], entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<[u8; 32]> {
    let mut hs = vec![sha256(package_id)];
    for e in entries {
        let mut buf = hs.last().unwrap().to_vec();
        buf.extend_from_slice(e);
        hs.push(sha256(&buf));
    }
    hs
}

/// The payload the inputs describe; `attack.removed_log_entry` (an `n`)
/// leaves that entry out of the payload but not out of the head.
fn payload_from(inputs: &Value, attack: &Value) -> Vec<u8> {
    let entries = log_entries(inputs);
    let head = *chain(&h(&inputs["package_id"]), entries.iter().map(|e| &e[..]))
        .last()
        .unwrap();
    let removed = opt_u(&attack["removed_log_entry"]);
    let devices: Vec<_> = inputs["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (h(&d["uid"]), h(&d["cert_der"]), d))
        .collect();
    ReportSpec {
        package_id: h(&inputs["package_id"]).try_into().unwrap(),
        job: u(&inputs["job"]),
        oem_id: u(&inputs["oem_id"]) as u32,
        product_id: u(&inputs["product_id"]) as u32,
        count: u(&inputs["count"]),
        issued: u(&inputs["issued"]),
        failed: u(&inputs["failed"]),
        created: u(&inputs["created"]),
        devices: devices
            .iter()
            .map(|(uid, cert, d)| {
                (
                    u(&d["serial"]),
                    &uid[..],
                    u(&d["device_type"]),
                    u(&d["status"]),
                    &cert[..],
                )
            })
            .collect(),
        log: entries
            .iter()
            .zip(1u64..)
            .filter(|(_, n)| Some(*n) != removed)
            .map(|(e, _)| &e[..])
            .collect(),
        log_head: head,
    }
    .encode()
}

/// The signed report, as `write_report` makes it.
fn sign(inputs: &Value, attack: &Value) -> Vec<u8> {
    let payload = payload_from(inputs, attack);
    let mut tbs = Vec::new();
    sig_structure(&PROTECTED_ES256, &payload, |b| tbs.extend_from_slice(b));
    let key = EcdsaKey::from_pkcs8(&h(&inputs["guardian_signing_pkcs8"])).unwrap();
    encode_signed(
        &h(&inputs["guardian_kem_cert_der"]),
        &h(&inputs["guardian_signing_cert_der"]),
        &payload,
        &key.sign(&tbs).unwrap(),
    )
}

/// Every value the inputs (and the attack) determine.
fn expected_from(inputs: &Value, attack: &Value) -> Value {
    let entries = log_entries(inputs);
    let hs = chain(&h(&inputs["package_id"]), entries.iter().map(|e| &e[..]));
    let payload = payload_from(inputs, attack);
    let unsigned = encode_signed(
        &h(&inputs["guardian_kem_cert_der"]),
        &h(&inputs["guardian_signing_cert_der"]),
        &payload,
        &[0; 64],
    );
    json!({
        "guardian_id": hex::encode(sha256(&h(&inputs["guardian_kem_cert_der"]))),
        "log_entries": entries.iter().map(hex::encode).collect::<Vec<_>>(),
        "log_chain": hs.iter().map(hex::encode).collect::<Vec<_>>(),
        "log_head": hex::encode(hs.last().unwrap()),
        "payload": hex::encode(&payload),
        "signed_without_signature": hex::encode(&unsigned[..unsigned.len() - 64]),
        "report_size": unsigned.len(),
    })
}

fn load(dir: &Path) -> (Value, Vec<u8>) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vector.json")).unwrap()).unwrap();
    (v, std::fs::read(dir.join("report.tcrep")).unwrap())
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

fn names(d: &[PathBuf]) -> Vec<String> {
    d.iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

/// ES256 over the Sig_structure with the key of the signing certificate.
fn signature_verifies(r: &Report<'_>) -> bool {
    let Some(key) = pki::parse_cert(r.signing_cert)
        .ok()
        .and_then(|c| pki::cert_public_key(&c))
    else {
        return false;
    };
    let mut tbs = Vec::new();
    sig_structure(r.protected, r.payload, |b| tbs.extend_from_slice(b));
    verify_es256(&key.0, &tbs, r.signature)
}

/// The head the report's own log leads to.
fn recomputed_head(r: &Report<'_>) -> [u8; 32] {
    let log: Vec<_> = r.body.log().collect();
    *chain(r.body.package_id, log.iter().map(|e| e.raw))
        .last()
        .unwrap()
}

/// The OEM's reconciliation (`crates/oem/src/reconcile.rs`), re-done
/// against the inputs, which stand for what the OEM wrapped (its audit
/// log's `wrap` record and `OEM_DIR/packages/<id>.issuing-ca.pem`): the
/// kinds of every anomaly, in reconcile's order. The signature, a hard
/// error in reconcile, is one kind here so that the checks after it still
/// run.
fn anomalies(r: &Report<'_>, inputs: &Value) -> Vec<&'static str> {
    let b = &r.body;
    let mut a = vec![];
    let count = u(&inputs["count"]);
    let serial_start = u(&inputs["serial_start"]);
    if sha256(r.kem_cert) != sha256(&h(&inputs["guardian_kem_cert_der"])) {
        a.push("guardian");
    }
    if pki::verify_issued_by(r.kem_cert, r.signing_cert).is_err() {
        a.push("guardian-chain");
    }
    if !signature_verifies(r) {
        a.push("signature");
    }
    if b.count != count
        || u64::from(b.product_id.get()) != u(&inputs["product_id"])
        || u64::from(b.oem_id.get()) != u(&inputs["oem_id"])
    {
        a.push("job");
    }
    if b.issued.checked_add(b.failed).is_none_or(|n| n > count) {
        a.push("over-count");
    }
    if b.issued.checked_add(b.failed) != Some(b.device_count()) {
        a.push("record-count");
    }
    let issuing = h(&inputs["issuing_ca_cert_der"]);
    let (mut serials, mut uids, mut certs) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let (mut issued, mut failed) = (0, 0);
    for d in b.devices() {
        if d.serial < serial_start || d.serial >= serial_start.saturating_add(count) {
            a.push("serial-range");
        }
        if !serials.insert(d.serial) {
            a.push("duplicate-serial");
        }
        if !uids.insert(d.uid.to_vec()) {
            a.push("duplicate-uid");
        }
        if pki::verify_issued_by(d.cert, &issuing).is_err() {
            a.push("issuer");
        }
        certs.insert((d.serial, sha256(d.cert)));
        match d.status {
            status::ISSUED => issued += 1,
            status::FAILED => failed += 1,
            _ => a.push("status"),
        }
    }
    if (issued, failed) != (b.issued, b.failed) {
        a.push("tally");
    }
    let mut logged = BTreeSet::new();
    let mut expected_n = 1u64;
    for e in b.log() {
        if e.n != expected_n {
            a.push("log-sequence");
        }
        expected_n = e.n.wrapping_add(1);
        if e.action == "issue" {
            if let (Some(s), Some(c)) = (e.serial, e.cert_sha256) {
                logged.insert((s, *c));
            }
        }
    }
    if &recomputed_head(r) != b.log_head {
        a.push("chain");
    }
    if certs.difference(&logged).next().is_some() {
        a.push("not-logged");
    }
    a
}

/// Every field of the report is the inputs' value (the log as it was
/// signed: without the removed entry, if any).
fn check_fields(r: &Report<'_>, inputs: &Value, attack: &Value, what: &str) {
    let b = &r.body;
    assert_eq!(
        r.kem_cert,
        &h(&inputs["guardian_kem_cert_der"])[..],
        "{what}"
    );
    assert_eq!(
        r.signing_cert,
        &h(&inputs["guardian_signing_cert_der"])[..],
        "{what}"
    );
    assert_eq!(r.protected, &PROTECTED_ES256[..]);
    assert_eq!(&b.package_id[..], &h(&inputs["package_id"])[..], "{what}");
    assert_eq!(
        (
            b.job,
            u64::from(b.oem_id.get()),
            u64::from(b.product_id.get())
        ),
        (
            u(&inputs["job"]),
            u(&inputs["oem_id"]),
            u(&inputs["product_id"])
        ),
        "{what}"
    );
    assert_eq!(
        (b.count, b.issued, b.failed, b.created),
        (
            u(&inputs["count"]),
            u(&inputs["issued"]),
            u(&inputs["failed"]),
            u(&inputs["created"])
        ),
        "{what}"
    );
    let devices = inputs["devices"].as_array().unwrap();
    assert_eq!(b.device_count(), devices.len() as u64, "{what}");
    let parsed: Vec<_> = b.devices().collect();
    assert_eq!(parsed.len(), devices.len(), "{what}");
    for (d, want) in parsed.iter().zip(devices) {
        assert_eq!(d.serial, u(&want["serial"]), "{what}");
        assert_eq!(d.uid, &h(&want["uid"])[..], "{what}");
        assert_eq!(d.device_type, u(&want["device_type"]), "{what}");
        assert_eq!(d.status, u(&want["status"]), "{what}");
        assert_eq!(d.cert, &h(&want["cert_der"])[..], "{what}");
    }
    let removed = opt_u(&attack["removed_log_entry"]);
    let want: Vec<_> = inputs["log"]
        .as_array()
        .unwrap()
        .iter()
        .zip(log_entries(inputs))
        .filter(|(e, _)| Some(u(&e["n"])) != removed)
        .collect();
    let log: Vec<_> = b.log().collect();
    assert_eq!(log.len(), want.len(), "{what}");
    for (e, (w, raw)) in log.iter().zip(&want) {
        assert_eq!(e.n, u(&w["n"]), "{what}");
        assert_eq!(e.action, w["action"].as_str().unwrap(), "{what}");
        assert_eq!(e.serial, opt_u(&w["serial"]), "{what}");
        assert_eq!(
            e.cert_sha256.map(hex::encode),
            w["cert_sha256"].as_str().map(str::to_string),
            "{what}"
        );
        assert_eq!(e.time, u(&w["time"]), "{what}");
        assert_eq!(e.raw, &raw[..], "{what}");
    }
}

/// The Guardian's and the OEM's certificates: the signing key is the
/// signing certificate's, which signed the key-agreement certificate; the
/// issuing CA chains to the root; every device certificate is the issuing
/// CA's and its log entry names its SHA-256.
fn check_certificates(inputs: &Value, what: &str) {
    let signing = h(&inputs["guardian_signing_cert_der"]);
    let key = EcdsaKey::from_pkcs8(&h(&inputs["guardian_signing_pkcs8"])).unwrap();
    let cert_key = pki::cert_public_key(&pki::parse_cert(&signing).unwrap()).unwrap();
    assert_eq!(&cert_key, key.public_key(), "{what}: PKCS#8 vs certificate");
    pki::verify_issued_by(&h(&inputs["guardian_kem_cert_der"]), &signing).unwrap();
    pki::verify_issued_by(&signing, &signing).unwrap();
    let issuing = h(&inputs["issuing_ca_cert_der"]);
    let dca = h(&inputs["device_ca_cert_der"]);
    let root = h(&inputs["root_cert_der"]);
    pki::verify_issued_by(&issuing, &dca).unwrap();
    pki::verify_issued_by(&dca, &root).unwrap();
    for d in inputs["devices"].as_array().unwrap() {
        let cert = h(&d["cert_der"]);
        pki::verify_issued_by(&cert, &issuing).unwrap();
        let c = pki::parse_cert(&cert).unwrap();
        assert_eq!(
            pki::cert_product_id(&c).map(|p| u64::from(p.get())),
            Some(u(&inputs["product_id"]))
        );
        let fp = hex::encode(sha256(&cert));
        assert!(
            inputs["log"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "issue"
                    && e["serial"] == d["serial"]
                    && e["cert_sha256"] == json!(fp)),
            "{what}: serial {} has no issue entry",
            d["serial"]
        );
    }
}

/// With `TRUSTCHAIN_BLESS` set, rewrites the vectors once, before any test
/// reads them.
fn maybe_bless() {
    static BLESS: std::sync::Once = std::sync::Once::new();
    BLESS.call_once(|| {
        if std::env::var_os("TRUSTCHAIN_BLESS").is_some() {
            bless();
        }
    });
}

#[test]
fn valid_vectors_reproduce_verify_and_reconcile() {
    maybe_bless();
    let all = dirs("report");
    assert_eq!(
        names(&all),
        ["basic", "no-devices", "with-failure"],
        "one directory per case"
    );
    for dir in all {
        let what = dir.display().to_string();
        let (v, bytes) = load(&dir);
        let (inputs, expected) = (&v["inputs"], &v["expected"]);
        assert_eq!(
            &expected_from(inputs, &Value::Null),
            expected,
            "{what}: expected values"
        );
        assert_eq!(bytes.len() as u64, u(&expected["report_size"]), "{what}");
        assert_eq!(
            &bytes[..bytes.len() - 64],
            &h(&expected["signed_without_signature"])[..],
            "{what}: COSE_Sign1 without its signature"
        );
        let r = Report::parse(&bytes).expect("the report parses");
        assert_eq!(r.payload, &h(&expected["payload"])[..], "{what}: payload");
        assert!(signature_verifies(&r), "{what}: signature");
        check_fields(&r, inputs, &Value::Null, &what);
        check_certificates(inputs, &what);
        // The chain, step by step, and its head.
        let log: Vec<_> = r.body.log().collect();
        let hs = chain(r.body.package_id, log.iter().map(|e| e.raw));
        assert_eq!(
            hs.iter().map(hex::encode).collect::<Vec<_>>(),
            expected["log_chain"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            "{what}: chain"
        );
        assert_eq!(hs.last().unwrap(), r.body.log_head, "{what}: head");
        assert_eq!(
            anomalies(&r, inputs),
            Vec::<&str>::new(),
            "{what}: reconciles"
        );
        // Any flipped signature or payload bit breaks the signature.
        let sig_at = bytes.len() - 1;
        let payload_at = bytes.len() - 66 - r.payload.len() / 2;
        for at in [sig_at, payload_at] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            if let Ok(r) = Report::parse(&bad) {
                assert!(!signature_verifies(&r), "{what}: byte {at} flipped");
            }
        }
        // So does another key.
        let (other, _) = EcdsaKey::generate().unwrap();
        let mut tbs = Vec::new();
        sig_structure(r.protected, r.payload, |b| tbs.extend_from_slice(b));
        assert!(!verify_es256(&other.public_key().0, &tbs, r.signature));
    }
}

#[test]
fn attack_fixtures_fail_at_their_check() {
    maybe_bless();
    let all = dirs("report-invalid");
    assert_eq!(
        names(&all),
        [
            "bad-signature",
            "broken-chain",
            "duplicate-uid",
            "over-count"
        ]
    );
    for dir in all {
        let what = dir.display().to_string();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let (v, bytes) = load(&dir);
        let (inputs, attack, expected) = (&v["inputs"], &v["attack"], &v["expected"]);
        assert_eq!(
            &expected_from(inputs, attack),
            expected,
            "{what}: expected values"
        );
        check_certificates(inputs, &what);
        let r = Report::parse(&bytes).expect("an attack fixture still parses");
        let found = anomalies(&r, inputs);
        let want: Vec<&str> = v["expected_anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(found, want, "{what}: anomalies");
        assert_eq!(
            found.first().copied(),
            v["expected_error"].as_str(),
            "{what}: first failure"
        );
        match name.as_str() {
            "bad-signature" => {
                assert!(!signature_verifies(&r), "{what} verifies");
                let at = u(&attack["report_offset"]) as usize;
                let payload_at = bytes.len() - 66 - r.payload.len();
                assert!((payload_at..payload_at + r.payload.len()).contains(&at));
                assert_eq!(r.body.created, u(&inputs["created"]) ^ u(&attack["xor"]));
                // Undone, it is a report that verifies and has every field.
                let mut fixed = bytes.clone();
                fixed[at] ^= u(&attack["xor"]) as u8;
                assert_eq!(
                    &fixed[..fixed.len() - 64],
                    &h(&expected["signed_without_signature"])[..]
                );
                let r = Report::parse(&fixed).unwrap();
                assert!(signature_verifies(&r), "{what}: undone");
                check_fields(&r, inputs, attack, &what);
                assert!(anomalies(&r, inputs).is_empty());
            }
            "broken-chain" => {
                assert!(signature_verifies(&r), "{what}: properly signed");
                assert_eq!(
                    &bytes[..bytes.len() - 64],
                    &h(&expected["signed_without_signature"])[..]
                );
                check_fields(&r, inputs, attack, &what);
                // The report's log does not lead to its head; the whole
                // log of the inputs does.
                assert_ne!(&recomputed_head(&r), r.body.log_head);
                let full = log_entries(inputs);
                let hs = chain(r.body.package_id, full.iter().map(|e| &e[..]));
                assert_eq!(hs.last().unwrap(), r.body.log_head);
                assert_eq!(r.body.log().count() + 1, full.len());
                let removed = u(&attack["removed_log_entry"]) as usize;
                assert!(r.body.log().all(|e| e.raw != &full[removed - 1][..]));
            }
            "duplicate-uid" => {
                assert!(signature_verifies(&r), "{what}: properly signed");
                assert_eq!(
                    &bytes[..bytes.len() - 64],
                    &h(&expected["signed_without_signature"])[..]
                );
                check_fields(&r, inputs, attack, &what);
                let uids: Vec<_> = r.body.devices().map(|d| d.uid).collect();
                let unique: BTreeSet<_> = uids.iter().collect();
                assert_eq!(unique.len() + 1, uids.len(), "{what}: one duplicate");
                let serials: BTreeSet<_> = r.body.devices().map(|d| d.serial).collect();
                assert_eq!(serials.len(), uids.len(), "{what}: serials unique");
            }
            "over-count" => {
                assert!(signature_verifies(&r), "{what}: properly signed");
                assert_eq!(
                    &bytes[..bytes.len() - 64],
                    &h(&expected["signed_without_signature"])[..]
                );
                check_fields(&r, inputs, attack, &what);
                let b = &r.body;
                assert!(b.issued + b.failed > b.count, "{what}: over count");
                assert_eq!(b.device_count(), b.issued + b.failed);
                assert_eq!(&recomputed_head(&r), b.log_head);
            }
            other => panic!("unexpected fixture {other}"),
        }
    }
}

/// The worked example of `docs/formats.md` ("Production report", the log):
/// the import entry of `basic` and the first step of its chain.
#[test]
fn worked_example_of_the_log() {
    maybe_bless();
    let (v, _) = load(&vectors_dir().join("report").join("basic"));
    let (inputs, expected) = (&v["inputs"], &v["expected"]);
    let import = encode_log_entry(1, "import", None, None, T0);
    assert_eq!(
        hex::encode(&import),
        "850166696d706f7274f6f61a6955b93c",
        "[1, \"import\", null, null, 1767225660]"
    );
    assert_eq!(import, h(&expected["log_entries"][0]));
    let pid = h(&inputs["package_id"]);
    let h0 = sha256(&pid);
    let mut buf = h0.to_vec();
    buf.extend_from_slice(&import);
    assert_eq!(hex::encode(h0), expected["log_chain"][0].as_str().unwrap());
    assert_eq!(
        hex::encode(sha256(&buf)),
        expected["log_chain"][1].as_str().unwrap()
    );
    let issue = encode_log_entry(2, "issue", Some(5000), Some(&[0xab; 32]), T0 + STEP);
    assert_eq!(
        hex::encode(&issue)[..26],
        *"85026569737375651913885820",
        "[2, \"issue\", 5000, h'…', 1767225720] begins 85 02 65 'issue' 19 1388 58 20"
    );
}
