//! Mutual authentication throughput (issue 5, point 7): authentications per
//! second on the verifying side, against the crypto ceiling measured in the
//! same run.
//!
//! ```text
//! cargo run --release -p trustchain-field --example bench_auth -- [--n 400] [--runs 7] [--devices 100]
//! ```
//!
//! * **server**: a server (keystore key, rustls-webpki) as responder. Only
//!   its own work is timed: parse `hello`, validate the two-certificate
//!   chain to the root, OEM and product checks, transcript hash, one ECDSA
//!   signature, then parse `finish` and verify the initiator's signature.
//!   The initiator is another keystore end, not timed.
//! * **ceiling**: the same side's public-key operations alone, with
//!   aws-lc-rs: one ECDSA P-256 signature and two chain verifications
//!   (the issue's ceiling), and the same plus the third verification (the
//!   peer's transcript signature) that the protocol needs.
//! * **devices**: two simulated devices through their SBMs (software P-256 of
//!   the SBM, frames, the simulator), whole sessions per second, both sides.
//!
//! Each figure is the median of `--runs` runs of `--n` authentications.
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED};
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use time::macros::datetime;
use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_field::auth::{
    challenge_message, sim, Endpoint, Initiator, KeystoreEndpoint, Nonce, Policy, Responder,
};
use trustchain_formats::{OemId, ProductId};
use trustchain_oem::crypto::EcdsaKey;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::pki::{self, CertSpec};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// With `--summary`, one `summary <key> <value>` line per key figure, for
/// `scripts/bench` to read (it drops these lines from the table).
fn summary(key: &str, value: f64) {
    if std::env::args().any(|a| a == "--summary") {
        println!("summary {key} {value}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spec(cn: &str) -> CertSpec {
    let mut s = CertSpec::new(cn.into(), "Acme".into(), OemId::new(0x1234).unwrap(), 1);
    s.not_before = datetime!(2025-01-01 00:00:00 UTC);
    s.not_after = datetime!(2124-12-08 00:00:00 UTC);
    s
}

fn main() {
    let n = arg("--n", 400);
    let runs = arg("--runs", 7);
    let devices = arg("--devices", 100);
    run(n, runs, devices);
}

fn run(n: usize, runs: usize, devices: usize) {
    // Keys with their PKCS#8, so each end owns its signer.
    let gen = || {
        let (_, pkcs8) = EcdsaKey::generate().unwrap();
        pkcs8
    };
    let (root_p8, dca_p8, srv_p8, cli_p8) = (gen(), gen(), gen(), gen());
    let key = |p8: &[u8]| EcdsaKey::from_pkcs8(p8).unwrap();
    let (root_key, dca_key) = (key(&root_p8), key(&dca_p8));
    let mut rs = spec("Acme Root CA");
    rs.ca_path_len = Some(2);
    let root = pki::self_signed(&rs, &root_key).unwrap();
    let mut ds = spec("Acme Device CA");
    ds.ca_path_len = Some(1);
    let dca = pki::issue(&ds, dca_key.public_key(), &root, &root_key).unwrap();
    let leaf = |p8: &[u8], cn: &str| {
        let mut s = spec(cn);
        s.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        s.product_id = ProductId::new(7);
        pki::issue(&s, key(p8).public_key(), &dca, &dca_key)
            .unwrap()
            .der
    };
    let srv_cert = leaf(&srv_p8, "Server");
    let cli_cert = leaf(&cli_p8, "Thermostat 00000001");
    let mut server = KeystoreEndpoint::new(
        Box::new(key(&srv_p8)),
        vec![srv_cert, dca.der.clone()],
        root.der.clone(),
    )
    .unwrap();
    let mut client = KeystoreEndpoint::new(
        Box::new(key(&cli_p8)),
        vec![cli_cert.clone(), dca.der.clone()],
        root.der.clone(),
    )
    .unwrap();
    let now = 1_767_225_600; // 2026-01-01

    // The ceiling's inputs: the same public-key operations, alone.
    let cert = |der: &[u8]| x509_cert_parts(der);
    let (leaf_tbs, leaf_sig) = cert(&cli_cert);
    let (dca_tbs, dca_sig) = cert(&dca.der);
    let dca_key_pub = dca_key.public_key().0;
    let root_pub = root_key.public_key().0;
    let srv = key(&srv_p8);
    let cli = key(&cli_p8);
    let msg = challenge_message("tc-auth-1 initiator", &[7; 32]);
    let tsig = cli.sign(&msg).unwrap();
    let cli_pub = cli.public_key().0;

    // Each run measures the protocol and both ceilings back to back, so
    // that load from other processes hits all three alike.
    let (mut server_rates, mut ceiling2, mut ceiling3) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        // The verifying side's protocol work.
        let mut spent = Duration::ZERO;
        for _ in 0..n {
            let (await_r, hello) =
                Initiator::start(&mut client, Policy::at(now), Nonce::random().unwrap()).unwrap();
            let nonce = Nonce::random().unwrap();
            let t = Instant::now();
            let (await_f, response) =
                Responder::receive(&mut server, Policy::at(now), nonce, &hello).unwrap();
            spent += t.elapsed();
            let (_, finish) = await_r.receive(&response).unwrap();
            let t = Instant::now();
            await_f.receive(&finish).unwrap();
            spent += t.elapsed();
        }
        server_rates.push(n as f64 / spent.as_secs_f64());
        for (verifies, out) in [(2, &mut ceiling2), (3, &mut ceiling3)] {
            let t = Instant::now();
            for _ in 0..n {
                srv.sign(&msg).unwrap();
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &dca_key_pub)
                    .verify(&leaf_tbs, &leaf_sig)
                    .unwrap();
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &root_pub)
                    .verify(&dca_tbs, &dca_sig)
                    .unwrap();
                if verifies == 3 {
                    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &cli_pub)
                        .verify(&msg, &tsig)
                        .unwrap();
                }
            }
            out.push(n as f64 / t.elapsed().as_secs_f64());
        }
    }

    // Where the server's time goes: its endpoint's two expensive calls.
    let chain = [cli_cert.as_slice(), dca.der.as_slice()];
    let (mut validate, mut sign) = (vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..n {
            server.validate_chain(&chain, now).unwrap();
        }
        validate.push(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..n {
            server.sign("tc-auth-1 responder", &[7; 32]).unwrap();
        }
        sign.push(n as f64 / t.elapsed().as_secs_f64());
    }

    // Two simulated devices, whole sessions.
    let device_rate = devices_rate(devices, runs);

    let s = median(server_rates);
    let c2 = median(ceiling2);
    let c3 = median(ceiling3);
    summary("ceiling_per_s", c2);
    summary("ceiling3_per_s", c3);
    summary("server_per_s", s);
    summary("devices_per_s", device_rate);
    println!("mutual authentication, medians of {runs} runs of {n} (devices: {devices} sessions)");
    println!("| measurement | rate | ratio |");
    println!("| --- | --- | --- |");
    println!(
        "| ceiling: 1 ECDSA P-256 sign + 2 chain verifications (aws-lc-rs) | {c2:.0}/s | 1.00 |"
    );
    println!(
        "| ceiling + the peer's transcript signature (1 sign + 3 verifications) | {c3:.0}/s | {:.2} |",
        c3 / c2
    );
    println!(
        "| server as responder: parse, webpki chain, OEM/product, sign, verify finish | {s:.0} auth/s | {:.2} of the first ceiling, {:.2} of the second |",
        s / c2,
        s / c3
    );
    println!(
        "| of which: rustls-webpki chain validation alone (2 verifications + parsing) | {:.0}/s | - |",
        median(validate)
    );
    println!(
        "| of which: the keystore signature alone | {:.0}/s | - |",
        median(sign)
    );
    println!(
        "| two simulated devices, whole session (both SBMs, frames) | {device_rate:.0} sessions/s | - |"
    );
}

/// (TBS, signature) of a DER certificate, with x509-cert.
fn x509_cert_parts(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use x509_cert::der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(der).unwrap();
    (
        c.tbs_certificate.to_der().unwrap(),
        c.signature.raw_bytes().to_vec(),
    )
}

fn devices_rate(sessions: usize, runs: usize) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let pass = || Passphrase::new(zeroize::Zeroizing::new("bench".to_string())).unwrap();
    let fast = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    let path = tmp.path().join("oem");
    let id = OemId::new(0x1234).unwrap();
    trustchain_oem::oem::OemDir::init(&path, id, "Acme", &pass(), fast, "bench").unwrap();
    let oem = trustchain_oem::oem::OemDir::open(&path).unwrap();
    let mut ks = oem.unlock(&pass()).unwrap();
    let pid = ProductId::new(7).unwrap();
    trustchain_oem::product::Product::create(&oem, &mut ks, pid, "Thermostat", None, "bench")
        .unwrap();
    let dev = |name: &str, uid: u8| {
        let mut d =
            SimDevice::create(tmp.path().join(name), &[uid], 0x42, Geometry::SMALL_PAGES).unwrap();
        let mut prog = trustchain_programmer::client::Programmer::new(
            trustchain_programmer::sim::SimLink::new(&mut d).unwrap(),
        );
        trustchain_programmer::lab::provision(&mut prog, &oem, &ks, pid, uid as u64).unwrap();
        drop(prog);
        d
    };
    let (mut a, mut b) = (dev("a", 1), dev("b", 2));
    let mut rates = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..sessions {
            let out = sim::authenticate(&mut a, &mut b, Policy::now(), Policy::now()).unwrap();
            out.result.unwrap();
        }
        rates.push(sessions as f64 / t.elapsed().as_secs_f64());
    }
    median(rates)
}
