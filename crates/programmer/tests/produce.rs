//! Production at the programming center: a wrapped job imported into a
//! Guardian, devices provisioned and programmed against its count, which no
//! number of threads can exceed.
mod common;

use common::*;
use trustchain_guardian::GuardianDir;
use trustchain_oem::wrap::{wrap, WrapRequest};
use trustchain_programmer::client::Programmer;
use trustchain_programmer::produce::{produce, Request, Stage};
use trustchain_programmer::sim::SimLink;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn job(
    o: &mut Oem,
    count: u64,
) -> (
    GuardianDir,
    trustchain_oem::keystore::sealed::SealedKeyStore,
    i64,
) {
    let rel = release(o, "rel", "1.0.0", 6_000, 1);
    let gdir = o.dir.path().join("guardian");
    GuardianDir::init(&gdir, "Center", &pass(), FAST).unwrap();
    let g = GuardianDir::open(&gdir).unwrap();
    g.trust_root(&o.oem.path().join("root.pem")).unwrap();
    let pkg = o.dir.path().join("job.tcpkg");
    let req = WrapRequest {
        product: trustchain_formats::ProductId::new(7).unwrap(),
        guardian: gdir.join("identity.pem"),
        count,
        release: rel,
        out: pkg.clone(),
        serial_start: 100,
        uid_range: None,
        device_types: vec![],
        expires: now() + 3600,
        operator: "t".into(),
    };
    wrap(&o.oem, &mut o.ks, &req).unwrap();
    let mut gks = g.unlock(&pass()).unwrap();
    let r = trustchain_guardian::import::import(&g, &mut gks, &pkg, now()).unwrap();
    (g, gks, r.job)
}

#[test]
fn produce_against_the_count() {
    let mut o = oem();
    let (g, gks, id) = job(&mut o, 5);
    let devices = o.dir.path().join("devices");
    let req = |count, stage| Request {
        job: id,
        devices: devices.clone(),
        count,
        threads: 2,
        stage,
        now: now(),
        transcript: None,
    };
    let s = produce(&g, &gks, &req(3, Stage::All), &|_, _| {}).unwrap();
    assert_eq!(
        (
            s.provisioned,
            s.programmed,
            s.failed.len(),
            s.remaining,
            s.not_covered
        ),
        (3, 3, 0, 2, 0)
    );
    // Asking for 4 more: only 2 remain.
    let s = produce(&g, &gks, &req(4, Stage::All), &|_, _| {}).unwrap();
    assert_eq!((s.provisioned, s.remaining, s.not_covered), (2, 0, 2));
    // None remain: refused before any device is touched.
    let before = std::fs::read_dir(&devices).unwrap().count();
    assert!(matches!(
        produce(&g, &gks, &req(1, Stage::All), &|_, _| {}),
        Err(trustchain_programmer::produce::StartError::Guardian(
            trustchain_guardian::Error::JobExhausted(_)
        ))
    ));
    assert_eq!(
        std::fs::read_dir(&devices).unwrap().count(),
        before,
        "no device was created or touched"
    );
    // Five certificates, five serials, all recorded, all distinct UIDs.
    let recs = g.store().unwrap().devices(id).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.serial).collect::<Vec<_>>(),
        vec![100, 101, 102, 103, 104]
    );
    assert!(recs.iter().all(|r| r.status == "issued"));
    // A produced device runs the release and its chain validates on another device.
    let mut a = trustchain_device_sim::SimDevice::open(devices.join("dev-00001")).unwrap();
    let mut b = trustchain_device_sim::SimDevice::open(devices.join("dev-00002")).unwrap();
    let (chain_b, _) = Programmer::new(SimLink::new(&mut b).unwrap())
        .cert_chain()
        .unwrap();
    assert_eq!(chain_b.len(), 3, "device, issuing CA, device CA");
    let mut pa = Programmer::new(SimLink::new(&mut a).unwrap());
    assert_eq!(pa.info().unwrap().lifecycle, 3);
    assert_eq!(pa.info().unwrap().installed.unwrap().version, [1, 0, 0]);
    pa.validate_peer_chain(&chain_b, now()).unwrap();
}

#[test]
fn threads_never_exceed_the_count_and_stages_separate() {
    let mut o = oem();
    let (g, gks, id) = job(&mut o, 4);
    let devices = o.dir.path().join("devices");
    // Provision only, with more threads than devices left.
    let s = produce(
        &g,
        &gks,
        &Request {
            job: id,
            devices: devices.clone(),
            count: 10,
            threads: 6,
            stage: Stage::Provision,
            now: now(),
            transcript: None,
        },
        &|_, _| {},
    )
    .unwrap();
    assert_eq!((s.provisioned, s.programmed, s.not_covered), (4, 0, 6));
    let jobs = g.store().unwrap().jobs().unwrap();
    assert_eq!((jobs[0].issued, jobs[0].remaining), (4, 0));
    // Program later, as a separate step.
    let s = produce(
        &g,
        &gks,
        &Request {
            job: id,
            devices: devices.clone(),
            count: 4,
            threads: 2,
            stage: Stage::Program,
            now: now(),
            transcript: None,
        },
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(s.programmed, 4);
    // Two producers at once on a fresh job: the total is the count exactly.
    let mut o2 = oem();
    let (g2, gks2, id2) = job(&mut o2, 5);
    let d2 = o2.dir.path().join("devices");
    std::thread::scope(|s| {
        for k in 0..2 {
            let (g2, gks2, d2) = (&g2, &gks2, d2.join(format!("line-{k}")));
            s.spawn(move || {
                let _ = produce(
                    g2,
                    gks2,
                    &Request {
                        job: id2,
                        devices: d2,
                        count: 5,
                        threads: 3,
                        stage: Stage::Provision,
                        now: now(),
                        transcript: None,
                    },
                    &|_, _| {},
                );
            });
        }
    });
    let jobs = g2.store().unwrap().jobs().unwrap();
    assert_eq!(
        jobs[0].issued + jobs[0].failed,
        5,
        "the count holds across concurrent producers"
    );
    assert_eq!(g2.store().unwrap().devices(id2).unwrap().len(), 5);
}

#[test]
fn the_signed_report_reconciles_at_the_oem_and_tampering_shows() {
    let mut o = oem();
    let (g, gks, id) = job(&mut o, 3);
    let devices = o.dir.path().join("devices");
    produce(
        &g,
        &gks,
        &Request {
            job: id,
            devices,
            count: 3,
            threads: 2,
            stage: Stage::Provision,
            now: now(),
            transcript: None,
        },
        &|_, _| {},
    )
    .unwrap();
    let rep = o.dir.path().join("report");
    let s = trustchain_guardian::report::write_report(&g, &gks, id, &rep).unwrap();
    assert_eq!((s.devices, s.log_entries), (3, 4));
    let r = trustchain_oem::reconcile::reconcile(
        &o.oem,
        &rep,
        "t",
        trustchain_oem::reconcile::Keep::Yes,
    )
    .unwrap();
    assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
    assert_eq!((r.issued, r.count), (3, 3));
    // Any changed byte of the report: the signature fails (or it no longer parses).
    let bytes = std::fs::read(&rep).unwrap();
    let bad = o.dir.path().join("bad-report");
    let mut b = bytes.clone();
    b[bytes.len() / 2] ^= 1;
    std::fs::write(&bad, b).unwrap();
    assert!(trustchain_oem::reconcile::reconcile(
        &o.oem,
        &bad,
        "t",
        trustchain_oem::reconcile::Keep::Yes
    )
    .is_err());
    // An insider deletes a log entry at the Guardian: the chain no longer reaches the head.
    assert!(delete_log_entry(g.path().join("guardian.db")));
    let rep2 = o.dir.path().join("report2");
    trustchain_guardian::report::write_report(&g, &gks, id, &rep2).unwrap();
    let r = trustchain_oem::reconcile::reconcile(
        &o.oem,
        &rep2,
        "t",
        trustchain_oem::reconcile::Keep::Yes,
    )
    .unwrap();
    assert!(
        r.anomalies.iter().any(|a| a.contains("hash chain")),
        "{:?}",
        r.anomalies
    );
}

/// Deletes log entry 2 of job 1 directly in the database, as an insider could.
fn delete_log_entry(db: std::path::PathBuf) -> bool {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute("DELETE FROM log WHERE job = 1 AND n = 2", [])
        .unwrap()
        == 1
}

#[test]
fn the_oem_revokes_one_produced_device_with_the_package_ca_it_kept() {
    use x509_cert::der::{Decode, Encode};
    let mut o = oem();
    let (g, gks, id) = job(&mut o, 2);
    let devices = o.dir.path().join("devices");
    produce(
        &g,
        &gks,
        &Request {
            job: id,
            devices: devices.clone(),
            count: 1,
            threads: 1,
            stage: Stage::Provision,
            now: now(),
            transcript: None,
        },
        &|_, _| {},
    )
    .unwrap();
    let dir = std::fs::read_dir(&devices)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("device.toml").exists())
        .unwrap();
    let mut dev = trustchain_device_sim::SimDevice::open(&dir).unwrap();
    let (chain, _) = Programmer::new(SimLink::new(&mut dev).unwrap())
        .cert_chain()
        .unwrap();
    let r = trustchain_oem::revoke::revoke(
        &o.oem,
        &o.ks,
        &trustchain_oem::revoke::RevokeRequest {
            cert: chain[0].clone(),
            cert_path: dir.join("cert"),
            reason: trustchain_oem::revoke::Reason::KeyCompromise,
            days: 7,
            operator: "test".into(),
            now: time::OffsetDateTime::now_utc(),
        },
    )
    .unwrap();
    assert!(r.issuer.starts_with("package "), "{}", r.issuer);
    // The CRL is the package CA's: its issuer name, its signature, the serial.
    let leaf = x509_cert::Certificate::from_der(&chain[0]).unwrap();
    let ca = x509_cert::Certificate::from_der(&chain[1]).unwrap();
    let pem = std::fs::read(&r.crl).unwrap();
    let (_, der) = x509_cert::der::pem::decode_vec(&pem).unwrap();
    let crl = x509_cert::crl::CertificateList::from_der(&der).unwrap();
    assert_eq!(crl.tbs_cert_list.issuer, leaf.tbs_certificate.issuer);
    assert_eq!(crl.tbs_cert_list.issuer, ca.tbs_certificate.subject);
    let ca_key = trustchain_oem::pki::cert_public_key(&ca).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &ca_key.0,
    )
    .verify(
        &crl.tbs_cert_list.to_der().unwrap(),
        crl.signature.raw_bytes(),
    )
    .expect("signed by the package's issuing CA");
    let listed: Vec<_> = crl
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .map(|e| e.serial_number.clone())
        .collect();
    assert_eq!(listed, vec![leaf.tbs_certificate.serial_number.clone()]);
}
