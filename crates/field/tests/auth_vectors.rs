//! Test vectors for mutual authentication (`docs/formats.md` §19.8).
//!
//! Each `tests/vectors/auth/<name>/` holds `vector.json` (fixed keys,
//! certificates, nonces, time and context; the expected transcript, its
//! hash and both challenge messages) and the three messages of a complete
//! successful exchange, `hello.cbor`, `response.cbor` and `finish.cbor`.
//! This test runs the protocol from the inputs, with endpoints that sign as
//! the SBM does (ECDSA P-256 with RFC 6979 nonces, the SBM's own code), so
//! every byte, signatures included, must come out as stored.
//! `tests/python/test_auth_crosscheck.py` checks the same files with an
//! independent implementation.
//!
//! `TRUSTCHAIN_BLESS=1 cargo test -p trustchain-field --test auth_vectors`
//! rewrites the files (new CA keys and certificates) after a deliberate
//! format change.
use std::path::{Path, PathBuf};

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde_json::{json, Value};
use time::macros::datetime;
use trustchain_field::auth::{
    challenge_message, Initiator, KeystoreEndpoint, Nonce, Policy, Responder,
};
use trustchain_formats::auth::{Transcript, LABEL_INITIATOR, LABEL_RESPONDER};
use trustchain_formats::{OemId, ProductId};
use trustchain_oem::crypto::{sha256, EcdsaKey, PublicKey};
use trustchain_oem::keystore::Signer;
use trustchain_oem::pki::{self, CertSpec};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/auth")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

/// Signs as the SBM's SIGN_CHALLENGE does: ECDSA P-256 over SHA-256 of the
/// message, RFC 6979 nonces, with the SBM's code. Test-only: the scalar is
/// in the clear.
struct SbmLikeSigner {
    scalar: [u8; 32],
    public: PublicKey,
}

impl SbmLikeSigner {
    fn new(scalar: [u8; 32]) -> Self {
        let public = PublicKey(trustchain_sbm::crypto::public_key(&scalar).expect("a scalar"));
        Self { scalar, public }
    }
}

impl Signer for SbmLikeSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn sign(&self, msg: &[u8]) -> trustchain_oem::Result<[u8; 64]> {
        Ok(trustchain_sbm::crypto::sign_prehash(&self.scalar, &sha256(msg)).expect("signs"))
    }
}

struct Case {
    name: &'static str,
    description: &'static str,
    context: &'static [u8],
}

const CASES: &[Case] = &[
    Case {
        name: "basic",
        description: "two devices of OEM 0x1234, products 7 and 8, no channel binding",
        context: b"",
    },
    Case {
        name: "with-context",
        description: "the same devices, with a 32-byte channel binding in the transcript",
        context: &[0xc7; 32],
    },
];

/// 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600;

fn spec(cn: &str, oem: OemId) -> CertSpec {
    let mut s = CertSpec::new(cn.into(), "Acme".into(), oem, 1);
    s.not_before = datetime!(2025-01-01 00:00:00 UTC);
    s.not_after = datetime!(2124-12-08 00:00:00 UTC);
    s
}

/// A fresh hierarchy (root, device CA) and two device certificates for the
/// fixed identity scalars; then every vector from it.
fn bless() {
    let oem = OemId::new(0x1234).unwrap();
    let (root_key, _) = EcdsaKey::generate().unwrap();
    let (dca_key, _) = EcdsaKey::generate().unwrap();
    let mut root_spec = spec("Acme Root CA", oem);
    root_spec.ca_path_len = Some(2);
    let root = pki::self_signed(&root_spec, &root_key).unwrap();
    let mut dca_spec = spec("Acme Device CA", oem);
    dca_spec.ca_path_len = Some(1);
    let dca = pki::issue(&dca_spec, dca_key.public_key(), &root, &root_key).unwrap();
    let leaf = |scalar: [u8; 32], cn: &str, product: u32| {
        let mut s = spec(cn, oem);
        s.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        s.product_id = ProductId::new(product);
        let signer = SbmLikeSigner::new(scalar);
        pki::issue(&s, signer.public_key(), &dca, &dca_key)
            .unwrap()
            .der
    };
    let scalar_i = sha256(b"trustchain auth vector: initiator identity key");
    let scalar_r = sha256(b"trustchain auth vector: responder identity key");
    let leaf_i = leaf(scalar_i, "Thermostat 00000001", 7);
    let leaf_r = leaf(scalar_r, "Gateway 00000002", 8);
    for case in CASES {
        let inputs = json!({
            "root_cert_der": hex::encode(&root.der),
            "device_ca_cert_der": hex::encode(&dca.der),
            "initiator": {
                "identity_scalar": hex::encode(scalar_i),
                "chain": [hex::encode(&leaf_i), hex::encode(&dca.der)],
            },
            "responder": {
                "identity_scalar": hex::encode(scalar_r),
                "chain": [hex::encode(&leaf_r), hex::encode(&dca.der)],
            },
            "oem_id": 0x1234,
            "allowed_products": [7, 8],
            "nonce_i": hex::encode([0x11u8; 32]),
            "nonce_r": hex::encode([0x22u8; 32]),
            "now": NOW,
            "context": hex::encode(case.context),
        });
        let run = run(&inputs);
        let v = json!({
            "description": case.description,
            "inputs": inputs,
            "expected": run.expected,
        });
        let dir = vectors_dir().join(case.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("vector.json"),
            serde_json::to_string_pretty(&v).unwrap() + "\n",
        )
        .unwrap();
        for (f, m) in [
            ("hello.cbor", &run.hello),
            ("response.cbor", &run.response),
            ("finish.cbor", &run.finish),
        ] {
            std::fs::write(dir.join(f), m).unwrap();
        }
    }
}

struct Run {
    hello: Vec<u8>,
    response: Vec<u8>,
    finish: Vec<u8>,
    expected: Value,
}

fn endpoint(side: &Value, root: &[u8]) -> KeystoreEndpoint {
    let scalar: [u8; 32] = h(&side["identity_scalar"]).try_into().unwrap();
    let chain = side["chain"].as_array().unwrap().iter().map(h).collect();
    KeystoreEndpoint::new(Box::new(SbmLikeSigner::new(scalar)), chain, root.to_vec()).unwrap()
}

/// The whole exchange from the inputs, through the protocol's states.
fn run(inputs: &Value) -> Run {
    let root = h(&inputs["root_cert_der"]);
    let mut ei = endpoint(&inputs["initiator"], &root);
    let mut er = endpoint(&inputs["responder"], &root);
    let nonce = |k: &str| Nonce::from_bytes(h(&inputs[k]).try_into().unwrap());
    let policy = Policy {
        products: Some(
            inputs["allowed_products"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| ProductId::new(p.as_u64().unwrap() as u32).unwrap())
                .collect(),
        ),
        crls: vec![],
        now: inputs["now"].as_u64().unwrap(),
        context: h(&inputs["context"]),
    };
    let (await_r, hello) = Initiator::start(&mut ei, policy.clone(), nonce("nonce_i")).unwrap();
    let (await_f, response) =
        Responder::receive(&mut er, policy, nonce("nonce_r"), &hello).unwrap();
    let (r_seen, finish) = await_r.receive(&response).unwrap();
    let i_seen = await_f.receive(&finish).unwrap();
    assert_eq!(r_seen.transcript_hash(), i_seen.transcript_hash());

    // The transcript, rebuilt from the inputs with the format code.
    let chain = |side: &str| -> Vec<Vec<u8>> {
        inputs[side]["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(h)
            .collect()
    };
    let (ci, cr) = (chain("initiator"), chain("responder"));
    let ci: Vec<&[u8]> = ci.iter().map(Vec::as_slice).collect();
    let cr: Vec<&[u8]> = cr.iter().map(Vec::as_slice).collect();
    let (ni, nr) = (h(&inputs["nonce_i"]), h(&inputs["nonce_r"]));
    let context = h(&inputs["context"]);
    let transcript = Transcript {
        nonce_i: ni.as_slice().try_into().unwrap(),
        nonce_r: nr.as_slice().try_into().unwrap(),
        chain_i: &ci,
        chain_r: &cr,
        context: &context,
    }
    .to_vec();
    let th = sha256(&transcript);
    assert_eq!(r_seen.transcript_hash(), &th);
    let expected = json!({
        "transcript": hex::encode(&transcript),
        "transcript_hash": hex::encode(th),
        "challenge_message_responder": hex::encode(challenge_message(LABEL_RESPONDER, &th)),
        "challenge_message_initiator": hex::encode(challenge_message(LABEL_INITIATOR, &th)),
        "responder_signature": hex::encode(&response[response.len() - 64..]),
        "initiator_signature": hex::encode(&finish[finish.len() - 64..]),
    });
    Run {
        hello,
        response,
        finish,
        expected,
    }
}

#[test]
fn vectors_reproduce_byte_for_byte() {
    if std::env::var_os("TRUSTCHAIN_BLESS").is_some() {
        bless();
    }
    let mut seen = 0;
    for case in CASES {
        let dir = vectors_dir().join(case.name);
        let v: Value =
            serde_json::from_slice(&std::fs::read(dir.join("vector.json")).unwrap()).unwrap();
        assert_eq!(v["description"], case.description);
        assert_eq!(h(&v["inputs"]["context"]), case.context);
        let r = run(&v["inputs"]);
        assert_eq!(r.expected, v["expected"], "{}: expected values", case.name);
        for (f, m) in [
            ("hello.cbor", &r.hello),
            ("response.cbor", &r.response),
            ("finish.cbor", &r.finish),
        ] {
            assert_eq!(&std::fs::read(dir.join(f)).unwrap(), m, "{}/{f}", case.name);
        }
        // The stored signatures verify with the leaves' keys, as any ES256
        // verifier would check them.
        let th = h(&v["expected"]["transcript_hash"]);
        for (side, label, sig) in [
            ("responder", LABEL_RESPONDER, "responder_signature"),
            ("initiator", LABEL_INITIATOR, "initiator_signature"),
        ] {
            let leaf = h(&v["inputs"][side]["chain"][0]);
            let key = pki::cert_public_key(&pki::parse_cert(&leaf).unwrap()).unwrap();
            let sig: [u8; 64] = h(&v["expected"][sig]).try_into().unwrap();
            assert!(trustchain_oem::crypto::verify_es256(
                &key.0,
                &challenge_message(label, &th),
                &sig
            ));
        }
        seen += 1;
    }
    assert_eq!(seen, CASES.len());
    // Only these vectors exist.
    let mut names: Vec<String> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["basic", "with-context"]);
}
