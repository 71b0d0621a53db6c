//! Wrapping at the OEM and importing at the Guardian: the package opens
//! only in its Guardian, only from a trusted OEM root, once, before expiry,
//! and any refusal changes nothing.
use std::path::{Path, PathBuf};

use trustchain_formats::{OemId, ProductId, Version};
use trustchain_guardian::import::{self, import};
use trustchain_guardian::{Error, GuardianDir};
use trustchain_oem::image::LoadOptions;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::{KdfParams, SealedKeyStore};
use trustchain_oem::keystore::{KeyLabel, KeyStore};
use trustchain_oem::master::{master_release, MasterRequest};
use trustchain_oem::oem::OemDir;
use trustchain_oem::product::Product;
use trustchain_oem::wrap::{wrap, WrapRequest};

const FAST: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};

fn pass() -> Passphrase {
    Passphrase::new(zeroize::Zeroizing::new("p".to_string())).unwrap()
}

struct World {
    tmp: tempfile::TempDir,
    oem: OemDir,
    oks: SealedKeyStore,
    release: PathBuf,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("oem");
    OemDir::init(
        &path,
        OemId::new(0x1234).unwrap(),
        "Acme",
        &pass(),
        FAST,
        "t",
    )
    .unwrap();
    let oem = OemDir::open(&path).unwrap();
    let mut oks = oem.unlock(&pass()).unwrap();
    Product::create(
        &oem,
        &mut oks,
        ProductId::new(7).unwrap(),
        "Thermostat",
        None,
        "t",
    )
    .unwrap();
    let img = tmp.path().join("fw.bin");
    std::fs::write(&img, vec![0x5a; 6000]).unwrap();
    let release = tmp.path().join("rel");
    let req = MasterRequest {
        product: ProductId::new(7).unwrap(),
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
        out: release.clone(),
        operator: "t".into(),
    };
    master_release(&oem, &oks, &req, &|_, _| {}).unwrap();
    World {
        tmp,
        oem,
        oks,
        release,
    }
}

fn guardian(dir: &Path) -> (GuardianDir, SealedKeyStore) {
    GuardianDir::init(dir, "Center", &pass(), FAST).unwrap();
    let g = GuardianDir::open(dir).unwrap();
    let ks = g.unlock(&pass()).unwrap();
    (g, ks)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn wrap_for(w: &mut World, identity: &Path, out: &str, count: u64) -> PathBuf {
    let out = w.tmp.path().join(out);
    let req = WrapRequest {
        product: ProductId::new(7).unwrap(),
        guardian: identity.to_path_buf(),
        count,
        release: w.release.clone(),
        out: out.clone(),
        serial_start: 1000,
        uid_range: None,
        device_types: vec![],
        expires: now() + 86_400,
        operator: "t".into(),
    };
    wrap(&w.oem, &mut w.oks, &req).unwrap();
    out
}

/// The Guardian directory's files, to prove a refusal changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with("-wal")
                && !p.to_string_lossy().ends_with("-shm")
            {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_package_opens_only_in_its_guardian_once_from_a_trusted_root() {
    let mut w = world();
    let (g, mut ks) = guardian(&w.tmp.path().join("g1"));
    let (g2, mut ks2) = guardian(&w.tmp.path().join("g2"));
    let pkg = wrap_for(&mut w, &g.path().join("identity.pem"), "p1.tcpkg", 3);

    // Not trusted yet: refused, nothing changed.
    let before = snapshot(g.path());
    assert!(matches!(
        import(&g, &mut ks, &pkg, now()),
        Err(Error::UntrustedRoot { .. })
    ));
    assert_eq!(snapshot(g.path()), before);

    g.trust_root(&w.oem.path().join("root.pem")).unwrap();
    g2.trust_root(&w.oem.path().join("root.pem")).unwrap();
    // Another Guardian cannot open it.
    assert!(matches!(
        import(&g2, &mut ks2, &pkg, now()),
        Err(Error::NotForThisGuardian { .. })
    ));
    // Expired (the Guardian's clock is past the expiry).
    let before = snapshot(g.path());
    assert!(matches!(
        import(&g, &mut ks, &pkg, now() + 2 * 86_400),
        Err(Error::PackageRefused { .. })
    ));
    assert_eq!(snapshot(g.path()), before);
    // Any altered byte.
    let bytes = std::fs::read(&pkg).unwrap();
    for at in [20, bytes.len() / 2, bytes.len() - 5] {
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        let p = w.tmp.path().join("bad.tcpkg");
        std::fs::write(&p, &bad).unwrap();
        assert!(import(&g, &mut ks, &p, now()).is_err(), "flip at {at}");
    }
    assert_eq!(snapshot(g.path()), before);
    // Larger than any package: refused after reading one byte past the
    // bound, whatever the file says of its size (a sparse file here, and a
    // pipe, which states none).
    let huge = w.tmp.path().join("huge.tcpkg");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(trustchain_formats::package::limits::MAX_PACKAGE_LEN as u64 + 1)
        .unwrap();
    drop(f);
    let fifo = w.tmp.path().join("pipe.tcpkg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let block = vec![0u8; 1 << 20];
            // Until the reader stops (broken pipe): far past the bound.
            for _ in 0..1024 {
                if f.write_all(&block).is_err() {
                    break;
                }
            }
        })
    };
    for p in [&huge, &fifo] {
        match import(&g, &mut ks, p, now()) {
            Err(Error::PackageRefused { problem, .. }) => {
                assert!(problem.contains("larger than"), "{problem}")
            }
            other => panic!("{}: {other:?}", p.display()),
        }
    }
    writer.join().unwrap();
    assert_eq!(snapshot(g.path()), before);

    // The real import.
    let r = import(&g, &mut ks, &pkg, now()).unwrap();
    assert_eq!(
        (r.count, r.product_id, r.release_version.as_str()),
        (3, 7, "1.0.0")
    );
    let jobs = g.store().unwrap().jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].count, jobs[0].issued, jobs[0].remaining),
        (3, 0, 3)
    );
    let (issuing, product) = import::job_labels(r.job);
    assert!(
        ks.contains(&issuing) && ks.contains(&product),
        "the job's secrets are sealed in the Guardian keystore"
    );
    // Replay.
    assert!(matches!(
        import(&g, &mut ks, &pkg, now()),
        Err(Error::Replay { .. })
    ));
    // Secrets never in the database in the clear.
    let db = std::fs::read(g.path().join("guardian.db")).unwrap();
    let product_key = w.oks.export_for_package(&KeyLabel::product_kek(7)).unwrap();
    assert!(!db.windows(32).any(|x| x == &product_key[..]));
}

#[test]
fn a_package_re_encrypted_to_another_guardian_is_refused_there() {
    let mut w = world();
    let (g1, ks1) = guardian(&w.tmp.path().join("g1"));
    let (g2, mut ks2) = guardian(&w.tmp.path().join("g2"));
    g2.trust_root(&w.oem.path().join("root.pem")).unwrap();
    let pkg = wrap_for(&mut w, &g1.path().join("identity.pem"), "p.tcpkg", 1);
    // An insider at Guardian 1 opens it and re-encrypts it to Guardian 2.
    let bytes = std::fs::read(&pkg).unwrap();
    let outer = trustchain_formats::package::Encrypted::parse(&bytes).unwrap();
    let signed = import::open(&ks1, &outer).unwrap();
    let g2_id =
        trustchain_oem::wrap::GuardianIdentity::load(&g2.path().join("identity.pem")).unwrap();
    let moved = trustchain_oem::wrap::seal_for(
        &g2_id.kem_key,
        &signed,
        &mut trustchain_oem::crypto::SystemEntropy,
    )
    .unwrap();
    let p2 = w.tmp.path().join("moved.tcpkg");
    std::fs::write(&p2, moved).unwrap();
    match import(&g2, &mut ks2, &p2, now()) {
        Err(Error::PackageRefused { problem, .. }) => {
            assert!(problem.contains("another Guardian"), "{problem}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_guardian_action_is_in_the_signed_audit_log() {
    let mut w = world();
    let (g, mut ks) = guardian(&w.tmp.path().join("g"));
    g.trust_root(&w.oem.path().join("root.pem")).unwrap();
    let pkg = wrap_for(&mut w, &g.path().join("identity.pem"), "p.tcpkg", 2);
    import(&g, &mut ks, &pkg, now()).unwrap();
    let (entries, checkpoints) = g.verify_audit().unwrap().unwrap();
    assert!(
        entries >= 2 && checkpoints >= 1,
        "{entries} entries, {checkpoints} checkpoints"
    );
    // An insider edits an entry: the chain breaks.
    let c = rusqlite::Connection::open(g.path().join("guardian.db")).unwrap();
    c.execute("UPDATE audit SET entry = X'00' WHERE seq = 1", [])
        .unwrap();
    assert!(g
        .verify_audit()
        .unwrap()
        .unwrap_err()
        .contains("chain broken at entry 1"));
}

#[test]
fn group_commit_issues_within_the_count_and_refuses_duplicate_uids() {
    let mut w = world();
    let (g, mut ks) = guardian(&w.tmp.path().join("g"));
    g.trust_root(&w.oem.path().join("root.pem")).unwrap();
    let pkg = wrap_for(&mut w, &g.path().join("identity.pem"), "p.tcpkg", 3);
    let job = import(&g, &mut ks, &pkg, now()).unwrap().job;
    let mut store = g.store().unwrap();
    let issuer = trustchain_guardian::issue::JobIssuer::open(&store, &ks, job).unwrap();
    let keys: Vec<_> = (0..5)
        .map(|_| {
            trustchain_oem::crypto::EcdsaKey::generate()
                .unwrap()
                .0
                .public_key()
                .clone()
        })
        .collect();
    let uids: [&[u8]; 5] = [b"a", b"b", b"a", b"c", b"d"];
    let reqs: Vec<_> = uids.iter().zip(&keys).map(|(u, k)| (*u, 1u32, k)).collect();
    let out = issuer.issue_batch(&mut store, &reqs, now()).unwrap();
    assert!(out[0].is_ok() && out[1].is_ok() && out[3].is_ok());
    assert!(matches!(out[2], Err(Error::DuplicateUid { .. })));
    assert!(matches!(out[4], Err(Error::JobExhausted(_))));
    let serials: Vec<u64> = out
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(s, _)| *s))
        .collect();
    assert_eq!(serials, vec![1000, 1001, 1002]);
    let jobs = store.jobs().unwrap();
    assert_eq!((jobs[0].issued, jobs[0].remaining), (3, 0));
    assert_eq!(store.devices(job).unwrap().len(), 3);
    assert!(g.verify_audit().unwrap().is_ok());
}
