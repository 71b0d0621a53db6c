//! Production benchmark (issue 4, point 10), a baseline: certificate
//! issuance inside the Guardian (software keystore; the device brings its
//! public key) against raw ECDSA P-256 signing with the same library in the
//! same run, and the whole simulated flow in devices per second.
//!
//! `cargo run --release -p trustchain-programmer --example bench_production -- --certs 2000 --devices 200`
use std::time::Instant;

use trustchain_formats::{OemId, ProductId, Version};
use trustchain_guardian::GuardianDir;
use trustchain_oem::crypto::{EcdsaKey, PublicKey};
use trustchain_oem::image::LoadOptions;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::master::{master_release, MasterRequest};
use trustchain_oem::oem::OemDir;
use trustchain_oem::product::Product;
use trustchain_oem::wrap::{wrap, WrapRequest};
use trustchain_programmer::produce::{produce, Request, Stage};

fn arg(name: &str, default: u64) -> u64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn main() {
    let certs = arg("--certs", 2000);
    let devices = arg("--devices", 200);
    let fast = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    let pass = Passphrase::new(zeroize::Zeroizing::new("bench".to_string())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let oem_dir = tmp.path().join("oem");
    OemDir::init(
        &oem_dir,
        OemId::new(1).unwrap(),
        "Bench",
        &pass,
        fast,
        "bench",
    )
    .unwrap();
    let oem = OemDir::open(&oem_dir).unwrap();
    let mut ks = oem.unlock(&pass).unwrap();
    let pid = ProductId::new(1).unwrap();
    Product::create(&oem, &mut ks, pid, "Widget", None, "bench").unwrap();
    let img = tmp.path().join("fw.bin");
    std::fs::write(&img, vec![0xa5u8; 64 * 1024]).unwrap();
    let rel = tmp.path().join("rel");
    master_release(
        &oem,
        &ks,
        &MasterRequest {
            product: pid,
            version: Version {
                major: 1,
                minor: 0,
                patch: 0,
            },
            security_counter: None,
            force: false,
            image: img,
            format: None,
            load: LoadOptions {
                raw_load_address: 0x0800_0000,
                ..LoadOptions::default()
            },
            devices: vec![],
            device_uids: None,
            out: rel.clone(),
            operator: "bench".into(),
        },
        &|_, _| {},
    )
    .unwrap();
    let gdir = tmp.path().join("g");
    GuardianDir::init(&gdir, "Bench", &pass, fast).unwrap();
    let g = GuardianDir::open(&gdir).unwrap();
    g.trust_root(&oem_dir.join("root.pem")).unwrap();
    let mut gks = g.unlock(&pass).unwrap();
    let mut job = |count: u64, name: &str| {
        let pkg = tmp.path().join(name);
        wrap(
            &oem,
            &ks,
            &WrapRequest {
                product: pid,
                guardian: gdir.join("identity.pem"),
                count,
                release: rel.clone(),
                out: pkg.clone(),
                serial_start: 1,
                uid_range: None,
                device_types: vec![],
                expires: now() + 3600,
                operator: "bench".into(),
            },
        )
        .unwrap();
        trustchain_guardian::import::import(&g, &mut gks, &pkg, now())
            .unwrap()
            .job
    };
    let issue_job = job(certs, "a.tcpkg");
    let flow_job = job(devices, "b.tcpkg");
    let batch_job = job(certs, "c.tcpkg");

    // Raw ECDSA P-256 (aws-lc-rs), the ceiling.
    let (key, _) = EcdsaKey::generate().unwrap();
    let msg = [7u8; 400];
    let t = Instant::now();
    for _ in 0..certs {
        key.sign(&msg).unwrap();
    }
    let raw = certs as f64 / t.elapsed().as_secs_f64();

    // Issuance inside the Guardian: template, certificate, count, log, one transaction each.
    let mut store = g.store().unwrap();
    let issuer = trustchain_guardian::issue::JobIssuer::open(&store, &gks, issue_job).unwrap();
    let device_keys: Vec<PublicKey> = (0..certs)
        .map(|_| EcdsaKey::generate().unwrap().0.public_key().clone())
        .collect();
    let t = Instant::now();
    for (i, k) in device_keys.iter().enumerate() {
        issuer
            .issue(&mut store, &(i as u64).to_be_bytes(), 1, k, now())
            .unwrap();
    }
    let issued = certs as f64 / t.elapsed().as_secs_f64();

    // The same with group commit: 100 certificates per transaction.
    let issuer = trustchain_guardian::issue::JobIssuer::open(&store, &gks, batch_job).unwrap();
    let uids: Vec<[u8; 8]> = (0..certs).map(|i| i.to_be_bytes()).collect();
    let t = Instant::now();
    for (chunk_k, chunk_u) in device_keys.chunks(100).zip(uids.chunks(100)) {
        let reqs: Vec<(&[u8], u32, &PublicKey)> = chunk_k
            .iter()
            .zip(chunk_u)
            .map(|(k, u)| (&u[..], 1, k))
            .collect();
        for r in issuer.issue_batch(&mut store, &reqs, now()).unwrap() {
            r.unwrap();
        }
    }
    let batched = certs as f64 / t.elapsed().as_secs_f64();

    // The whole simulated flow with a 64 KiB image.
    let t = Instant::now();
    let s = produce(
        &g,
        &gks,
        &Request {
            job: flow_job,
            devices: tmp.path().join("devs"),
            count: devices,
            threads: 2,
            stage: Stage::All,
            now: now(),
            transcript: None,
        },
        &|_, _| {},
    )
    .unwrap();
    let flow = s.programmed as f64 / t.elapsed().as_secs_f64();

    println!("| measurement | rate | ratio |");
    println!("| --- | --- | --- |");
    println!("| raw ECDSA P-256 signing (aws-lc-rs), {certs} signatures | {raw:.0}/s | 1.00 |");
    println!("| certificate issuance in the Guardian (software keystore, SQLite full sync), {certs} certificates | {issued:.0}/s | {:.2} of raw |", issued / raw);
    println!("| certificate issuance in the Guardian, group commit of 100 per transaction, {certs} certificates | {batched:.0}/s | {:.2} of raw |", batched / raw);
    println!("| whole simulated flow (keygen on device, certificate, chain, product key, lock, 64 KiB install, boot check), {} devices, 2 threads | {flow:.0} devices/s | - |", s.programmed);
}
