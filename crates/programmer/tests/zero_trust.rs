//! Zero trust at the programming center (issue: "no OEM secret (issuing
//! key, product key) appears in the clear outside the Guardian and the
//! device"). Everything the programmer side sees is captured: the whole
//! programmer<->device transcript of a production run, the package it
//! received, the Guardian's database and every file it keeps outside its
//! sealed keystore; the secret bytes must be in none of it.
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use trustchain_guardian::GuardianDir;
use trustchain_oem::keystore::{KeyLabel, KeyStore};
use trustchain_oem::wrap::{wrap, WrapRequest};
use trustchain_programmer::produce::{produce, Request, Stage};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn files_under(dir: &Path, skip: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.to_string_lossy().to_string();
            if skip.iter().any(|s| name.contains(s)) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn oem_secrets_never_appear_in_the_clear_on_the_programmer_side() {
    let mut o = oem();
    let rel = release(&o, "rel", "1.0.0", 6_000, 1);
    let gdir = o.dir.path().join("guardian");
    GuardianDir::init(&gdir, "Center", &pass(), FAST).unwrap();
    let g = GuardianDir::open(&gdir).unwrap();
    g.trust_root(&o.oem.path().join("root.pem")).unwrap();
    let pkg = o.dir.path().join("job.tcpkg");
    let req = WrapRequest {
        product: trustchain_formats::ProductId::new(7).unwrap(),
        guardian: gdir.join("identity.pem"),
        count: 3,
        release: rel,
        out: pkg.clone(),
        serial_start: 1,
        uid_range: None,
        device_types: vec![],
        expires: now() + 3600,
        operator: "t".into(),
    };
    wrap(&o.oem, &mut o.ks, &req).unwrap();
    let mut gks = g.unlock(&pass()).unwrap();
    // The secrets, as the test (not the programmer) knows them: the product
    // key from the OEM keystore, the issuing CA key from inside the package.
    let product_key = o.ks.export_for_package(&KeyLabel::product_kek(7)).unwrap();
    let bytes = std::fs::read(&pkg).unwrap();
    let outer = trustchain_formats::package::Encrypted::parse(&bytes).unwrap();
    let signed = trustchain_guardian::import::open(&gks, &outer).unwrap();
    let sign1 = trustchain_formats::cose::Sign1::parse(&signed, usize::MAX).unwrap();
    let issuing_key = *trustchain_formats::package::Manifest::parse(sign1.payload)
        .unwrap()
        .issuing_ca_key;
    let secrets: [(&str, &[u8]); 2] = [
        ("product key", &product_key[..]),
        ("issuing CA key", &issuing_key[..]),
    ];

    let job = trustchain_guardian::import::import(&g, &mut gks, &pkg, now())
        .unwrap()
        .job;
    let transcript = Arc::new(Mutex::new(Vec::new()));
    let devices = o.dir.path().join("devices");
    let s = produce(
        &g,
        &gks,
        &Request {
            job,
            devices: devices.clone(),
            count: 3,
            threads: 2,
            stage: Stage::All,
            now: now(),
            transcript: Some(transcript.clone()),
        },
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(s.programmed, 3);
    let transcript = transcript.lock().unwrap().clone();
    assert!(
        transcript.len() > 3 * 6_000,
        "the transcript holds the whole run ({} bytes)",
        transcript.len()
    );

    let mut seen: Vec<(String, Vec<u8>)> = vec![
        ("transcript".into(), transcript),
        ("package".into(), bytes.clone()),
    ];
    // The Guardian's files outside its sealed keystore (database, WAL, certificates).
    seen.extend(files_under(&gdir, &["keystore"]));
    // What the station keeps about devices, except their internal storage
    // (protected.bin is the simulated chip's OTP; the product key is meant
    // to be there, inside the device).
    seen.extend(files_under(&devices, &["protected.bin"]));
    for (name, data) in &seen {
        for (what, secret) in &secrets {
            assert!(
                !contains(data, secret),
                "the {what} appears in the clear in {name}"
            );
        }
    }
    // And it is where it belongs: inside the devices.
    let first = std::fs::read_dir(&devices)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(contains(
        &std::fs::read(first.join("protected.bin")).unwrap(),
        &product_key[..]
    ));
}
