//! PKCS#11 signing benchmark (issue: the HSM backend at >= 70% of the
//! token's raw `C_Sign` rate). In one run, against one SoftHSM2 token and
//! one P-256 key: N raw `C_Sign` calls (`CKM_ECDSA` over a 32-byte digest,
//! through `cryptoki` on a session of its own) against N
//! `Signer::sign` calls through `Pkcs11KeyStore` (SHA-256 on the host, then
//! the same `C_Sign`, behind the store's session mutex). The two are
//! measured in alternating batches; each reports the median batch rate.
//!
//! Needs SoftHSM2 (`.ci/run` installs it; or TRUSTCHAIN_PKCS11_MODULE).
//! `cargo run --release -p trustchain-oem --example bench_pkcs11 -- --sigs 2000 --batches 9`
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use trustchain_oem::crypto::{sha256, verify_es256};
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::pkcs11::{Pkcs11KeyStore, SOFTHSM2_MODULE};
use trustchain_oem::keystore::{KeyKind, KeyLabel, KeyStore};
use zeroize::Zeroizing;

const TOKEN: &str = "trustchain-bench";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// With `--summary`, one `summary <key> <value>` line per key figure, for
/// `scripts/bench` to read.
fn summary(key: &str, value: f64) {
    if std::env::args().any(|a| a == "--summary") {
        println!("summary {key} {value}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let n = arg("--sigs", 2000).max(1);
    let batches = arg("--batches", 9).max(1);
    let module = std::env::var_os("TRUSTCHAIN_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOFTHSM2_MODULE));
    assert!(
        module.is_file(),
        "{} is missing: install SoftHSM2 (`.ci/run` does: apt-get install softhsm2)",
        module.display()
    );

    // A private SoftHSM2 token directory for this run.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--so-pin", "1234", "--pin", "5678"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("softhsm2-util (Debian package softhsm2)");
    assert!(status.success(), "softhsm2-util --init-token failed");

    let pin = Passphrase::new(Zeroizing::new("5678".to_string())).unwrap();
    let mut ks = Pkcs11KeyStore::open(&module, TOKEN, &pin).unwrap();
    let label = KeyLabel::mastering();
    let public = ks.generate(&label, KeyKind::EcdsaP256).unwrap();
    let signer = ks.signer(&label).unwrap();

    // The raw side: its own session on the same token (the store's login
    // covers it: PKCS#11 logs in per application).
    let ctx = Pkcs11::new(&module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).is_ok_and(|i| i.label() == TOKEN))
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
        ])
        .unwrap()[0];

    // The message: 32 bytes, so the backend hashes as much as the raw side
    // is handed (the raw side signs SHA-256 of it, computed once).
    let msg = [0x42u8; 32];
    let digest = sha256(&msg);
    let raw_sig = session.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
    assert!(verify_es256(
        &public.0,
        &msg,
        raw_sig.as_slice().try_into().unwrap()
    ));
    assert!(verify_es256(&public.0, &msg, &signer.sign(&msg).unwrap()));

    // Warm-up.
    for _ in 0..n.min(200) {
        session.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
        signer.sign(&msg).unwrap();
    }

    let mut raw = Vec::new();
    let mut backend = Vec::new();
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(session.sign(&Mechanism::Ecdsa, key, &digest).unwrap());
        }
        raw.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(signer.sign(std::hint::black_box(&msg)).unwrap());
        }
        backend.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let raw_rate = median(raw);
    let backend_rate = median(backend);
    let info = ctx.get_library_info().unwrap();
    println!(
        "module: {} ({} {})",
        module.display(),
        info.library_description(),
        info.library_version()
    );
    println!("{batches} batches of {n} signatures each, ECDSA P-256, median batch rate");
    println!("raw C_Sign (CKM_ECDSA, 32-byte digest):        {raw_rate:>8.0} signatures/s");
    println!("Pkcs11KeyStore Signer::sign (SHA-256 + C_Sign): {backend_rate:>8.0} signatures/s");
    let ratio = backend_rate / raw_rate;
    summary("raw_per_s", raw_rate);
    summary("backend_per_s", backend_rate);
    summary("backend_ratio", ratio);
    println!(
        "ratio backend/raw: {:.1}% (target >= 70%: {})",
        ratio * 100.0,
        if ratio >= 0.70 { "met" } else { "NOT met" }
    );
}
