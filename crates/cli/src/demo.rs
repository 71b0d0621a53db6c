//! `trustchain demo`: the supply chain end to end on the embedded defaults,
//! in a temporary directory. At this stage: the OEM's desk (hierarchy,
//! product, mastering) and the checks anyone can run on a release.
use std::path::{Path, PathBuf};
use trustchain_oem::audit::unix_now;

use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_oem::crypto::sha256;
use trustchain_oem::error::{Error, IoContext, Result};
use trustchain_oem::formats::{OemId, ProductId, Version};
use trustchain_oem::image::LoadOptions;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::master::{master_release, MasterRequest};
use trustchain_oem::oem::OemDir;
use trustchain_oem::product::Product;
use trustchain_oem::{inspect, release};
use trustchain_programmer::client::Programmer;
use trustchain_programmer::lab;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::BootOutcome;
use zeroize::Zeroizing;

fn demo_err(e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("demo device: {e}"))
}

fn print_boot(outcome: BootOutcome) -> Result<()> {
    match outcome {
        BootOutcome::Run(i) => {
            println!(
                "    boot: application {}.{}.{} verified against the signature table (SHA-256 {}...), it runs",
                i.version[0],
                i.version[1],
                i.version[2],
                &hex::encode(i.digest)[..16]
            );
            Ok(())
        }
        BootOutcome::Recovery(s) => Err(demo_err(format!(
            "the device stayed in recovery: {}",
            s.describe()
        ))),
    }
}

/// The demo passphrase (printed: this is a demonstration keystore).
const DEMO_PASSPHRASE: &str = "demo passphrase - not for real keys";

/// A small firmware image as Intel HEX: a vector table and some code-like
/// bytes at 0x0800_0000, with a gap (filled with 0xFF by the loader).
fn demo_firmware_hex() -> String {
    let mut image = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..24 * 1024 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image.push((x >> 24) as u8);
    }
    let mut out = String::new();
    let record = |out: &mut String, addr: u16, kind: u8, data: &[u8]| {
        let mut sum = data.len() as u8;
        sum = sum
            .wrapping_add((addr >> 8) as u8)
            .wrapping_add(addr as u8)
            .wrapping_add(kind);
        let mut line = format!(":{:02X}{:04X}{:02X}", data.len(), addr, kind);
        for b in data {
            sum = sum.wrapping_add(*b);
            line.push_str(&format!("{b:02X}"));
        }
        line.push_str(&format!("{:02X}\n", sum.wrapping_neg()));
        out.push_str(&line);
    };
    record(&mut out, 0, 0x04, &[0x08, 0x00]);
    // Two regions: 16 KiB at 0x0000, then 8 KiB at 0x4100 (a 256-byte gap).
    for (base, range) in [(0u16, 0..16 * 1024), (0x4100u16, 16 * 1024..24 * 1024)] {
        for (i, chunk) in image[range].chunks(32).enumerate() {
            record(&mut out, base + (i * 32) as u16, 0x00, chunk);
        }
    }
    record(&mut out, 0, 0x01, &[]);
    out
}

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

/// Runs the demo in `keep` or a temporary directory.
pub fn run(keep: Option<&Path>) -> Result<()> {
    let tmp;
    let root = match keep {
        Some(p) => {
            std::fs::create_dir(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                    path: p.to_path_buf(),
                    what: "demo directory",
                },
                _ => Error::Io {
                    path: p.to_path_buf(),
                    source: e,
                },
            })?;
            p.to_path_buf()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("trustchain-demo-")
                .tempdir()
                .at("temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    println!(
        "trustchain demo in {} (keystore passphrase: \"{DEMO_PASSPHRASE}\")",
        root.display()
    );
    let pass = Passphrase::new(Zeroizing::new(DEMO_PASSPHRASE.to_string()))?;
    let operator = "demo";

    step(1, "Secure development: the OEM creates its key hierarchy");
    let oem_dir = root.join("oem");
    let oem_id = OemId::new(0x1234).ok_or(Error::Crypto("OEM ID"))?;
    let init = OemDir::init(
        &oem_dir,
        oem_id,
        "Acme Devices",
        &pass,
        KdfParams::RECOMMENDED,
        operator,
    )?;
    println!(
        "    OEM 0x1234 'Acme Devices': root.pem, device-ca.pem, mastering.pem, sealed keystore"
    );
    println!("    root certificate SHA-256 {}", init.root_sha256);
    let oem = OemDir::open(&oem_dir)?;
    let mut ks = oem.unlock(&pass)?;

    step(
        2,
        "Secure development: the OEM creates a product (key-agreement key + certificate template)",
    );
    let product = ProductId::new(1).ok_or(Error::Crypto("product ID"))?;
    let p = Product::create(&oem, &mut ks, product, "Thermostat", None, operator)?;
    println!(
        "    product 1 'Thermostat', product key kid {}",
        &p.product_key_kid[..16]
    );

    step(
        3,
        "Secure mastering: firmware.hex (Intel HEX) -> update.upk + update.enc",
    );
    let fw = root.join("firmware.hex");
    std::fs::write(&fw, demo_firmware_hex()).at(&fw)?;
    let rel = root.join("release-1.0.0");
    let req = MasterRequest {
        product,
        version: Version {
            major: 1,
            minor: 0,
            patch: 0,
        },
        security_counter: None,
        force: false,
        image: fw.clone(),
        format: None,
        load: LoadOptions::default(),
        devices: vec![],
        device_uids: None,
        out: rel.clone(),
        operator: operator.into(),
    };
    let m = master_release(&oem, &ks, &req, &|_, _| {})?;
    println!(
        "    {} bytes at 0x{:08x}, counter {}, image SHA-256 {}",
        m.image_size,
        m.load_address,
        m.security_counter,
        &m.image_sha256[..16]
    );

    step(
        4,
        "Anyone: verify the release against the OEM root, without any key",
    );
    let info = release::verify_release(&rel, &oem.root_der()?)?;
    println!(
        "    OK: signed by '{}', update.enc digest and size match",
        info.signer
    );

    step(5, "Anyone: inspect the UPK");
    let i = inspect::inspect(&rel.join("update.upk"))?;
    for line in i.to_text().lines().take(8) {
        println!("    {line}");
    }

    step(
        6,
        "OEM: decrypt with the product key and compare with the firmware",
    );
    let out = root.join("decrypted.bin");
    release::decrypt_release(&oem, &ks, &rel, &out)?;
    let plain = std::fs::read(&out).at(&out)?;
    if hex::encode(sha256(&plain)) != m.image_sha256 {
        return Err(Error::Crypto("demo: decrypted image differs"));
    }
    println!("    decrypted {} bytes, SHA-256 matches", plain.len());

    step(7, "Anti-rollback: mastering an older version is refused");
    let mut old = req.clone();
    old.version = Version {
        major: 0,
        minor: 9,
        patch: 0,
    };
    old.out = root.join("release-0.9.0");
    match master_release(&oem, &ks, &old, &|_, _| {}) {
        Err(e @ Error::CounterRollback { .. }) => println!("    refused: {e}"),
        Err(e) => return Err(e),
        Ok(_) => return Err(Error::Crypto("demo: rollback was not refused")),
    }

    step(
        8,
        "Device: a blank simulated MCU; the OEM provisions it in the lab",
    );
    let dev_dir = root.join("device");
    let mut dev = SimDevice::create(
        &dev_dir,
        &[0xde, 0x40, 0x00, 0x01],
        1,
        Geometry::SMALL_PAGES,
    )
    .map_err(demo_err)?;
    {
        let mut prog = Programmer::new(SimLink::new(&mut dev).map_err(demo_err)?);
        let done = lab::provision(&mut prog, &oem, &ks, product, 1).map_err(demo_err)?;
        let cert = trustchain_oem::pki::parse_cert(&done.certificate).map_err(Error::Usage)?;
        println!(
            "    keys generated on the device; certificate '{}'; OEM keys installed; locked",
            cert.tbs_certificate.subject
        );

        step(9, "Device: the programmer installs release 1.0.0 through the SBM; the SBM checks it at boot");
        let upk = std::fs::read(rel.join("update.upk")).at(&rel)?;
        let enc = std::fs::read(rel.join("update.enc")).at(&rel)?;
        prog.send_release(&upk, &enc, false, &mut |_, _| {})
            .map_err(demo_err)?;
        print_boot(prog.transport_mut().boot())?;

        step(10, "Field: release 1.1.0 is mastered; the application stages it and the SBM installs it at reset");
        let mut next = req.clone();
        next.version = Version {
            major: 1,
            minor: 1,
            patch: 0,
        };
        next.out = root.join("release-1.1.0");
        master_release(&oem, &ks, &next, &|_, _| {})?;
        let upk2 = std::fs::read(next.out.join("update.upk")).at(&next.out)?;
        let enc2 = std::fs::read(next.out.join("update.enc")).at(&next.out)?;
        prog.send_release(&upk2, &enc2, true, &mut |_, _| {})
            .map_err(demo_err)?;
        prog.reset().map_err(demo_err)?;
        print_boot(
            prog.transport_mut()
                .last_boot
                .unwrap_or(BootOutcome::Recovery(trustchain_sbm::Status::NoImage)),
        )?;

        step(
            11,
            "Attacks: a tampered image and a rollback to 1.0.0 are refused; 1.1.0 keeps running",
        );
        let mut bad = enc2.clone();
        bad[1000] ^= 1;
        for (what, u, e) in [
            ("tampered image", &upk2, &bad),
            ("rollback to 1.0.0", &upk, &enc),
        ] {
            match prog.send_release(u, e, true, &mut |_, _| {}) {
                Err(err) => println!("    {what}: {err}"),
                Ok(_) => return Err(Error::Crypto("demo: an attack was not refused")),
            }
        }
        prog.reset().map_err(demo_err)?;
        print_boot(
            prog.transport_mut()
                .last_boot
                .unwrap_or(BootOutcome::Recovery(trustchain_sbm::Status::NoImage)),
        )?;
    }
    dev.save().map_err(demo_err)?;

    step(
        12,
        "Secure production: a programming center's Guardian; the OEM wraps a job for it alone",
    );
    let g_dir = root.join("guardian");
    let g_init =
        trustchain_guardian::GuardianDir::init(&g_dir, "Center A", &pass, KdfParams::RECOMMENDED)
            .map_err(demo_err)?;
    let guardian = trustchain_guardian::GuardianDir::open(&g_dir).map_err(demo_err)?;
    println!("    Guardian 'Center A', ID {}...", &g_init.id[..16]);
    let pkg = root.join("job-thermostat.tcpkg");
    let w = trustchain_oem::wrap::wrap(
        &oem,
        &mut ks,
        &trustchain_oem::wrap::WrapRequest {
            product,
            guardian: g_dir.join("identity.pem"),
            count: 3,
            release: root.join("release-1.1.0"),
            out: pkg.clone(),
            serial_start: 1000,
            uid_range: None,
            device_types: vec![],
            expires: unix_now() + 30 * 86_400,
            operator: operator.into(),
        },
    )?;
    println!(
        "    package {} for 3 devices (serials {}..={}), {} bytes",
        w.package_id, w.serials.0, w.serials.1, w.size
    );

    step(
        13,
        "Secure production: the Guardian trusts the OEM root and imports the package as a job",
    );
    let fp = guardian
        .trust_root(&oem_dir.join("root.pem"))
        .map_err(demo_err)?;
    println!("    trusted OEM root SHA-256 {}...", &fp[..16]);
    let mut gks = guardian.unlock(&pass).map_err(demo_err)?;
    let job = trustchain_guardian::import::import(&guardian, &mut gks, &pkg, unix_now())
        .map_err(demo_err)?;
    println!("    job {}: {} devices of product {}, release {}; the issuing CA key and product key are sealed in the Guardian", job.job, job.count, job.product_id, job.release_version);
    match trustchain_guardian::import::import(&guardian, &mut gks, &pkg, unix_now()) {
        Err(e) => println!("    importing it again: {e}"),
        Ok(_) => return Err(Error::Crypto("demo: a replayed package was accepted")),
    }

    step(
        14,
        "Secure production: the station provisions and programs 3 devices against the job's count",
    );
    let devices = root.join("production");
    let summary = trustchain_programmer::produce::produce(
        &guardian,
        &gks,
        &trustchain_programmer::produce::Request {
            job: job.job,
            devices: devices.clone(),
            count: 3,
            threads: 2,
            stage: trustchain_programmer::produce::Stage::All,
            now: unix_now(),
            transcript: None,
        },
        &|_, _| {},
    )
    .map_err(demo_err)?;
    println!(
        "    {} provisioned (keys on the device, certificate from the Guardian, locked), {} programmed and verified at boot, {} remaining",
        summary.provisioned, summary.programmed, summary.remaining
    );
    for d in guardian
        .store()
        .map_err(demo_err)?
        .devices(job.job)
        .map_err(demo_err)?
    {
        println!(
            "      serial {} UID {} certificate {}... {}",
            d.serial,
            d.uid,
            &d.cert_sha256[..16],
            d.status
        );
    }
    match trustchain_programmer::produce::produce(
        &guardian,
        &gks,
        &trustchain_programmer::produce::Request {
            job: job.job,
            devices,
            count: 1,
            threads: 1,
            stage: trustchain_programmer::produce::Stage::All,
            now: unix_now(),
            transcript: None,
        },
        &|_, _| {},
    ) {
        Err(e) => println!("    a fourth device: {e} (over-production refused)"),
        Ok(_) => return Err(Error::Crypto("demo: over-production was not refused")),
    }

    step(
        15,
        "Reconciliation: the Guardian signs a report; the OEM checks it against what it wrapped",
    );
    let report = root.join("report-job1.tcrep");
    let rs = trustchain_guardian::report::write_report(&guardian, &gks, job.job, &report)
        .map_err(demo_err)?;
    println!(
        "    report: {} devices, {} log entries, signed by the Guardian",
        rs.devices, rs.log_entries
    );
    let rec = trustchain_oem::reconcile::reconcile(
        &oem,
        &report,
        "demo",
        trustchain_oem::reconcile::Keep::Yes,
    )?;
    if !rec.anomalies.is_empty() {
        return Err(demo_err(format!(
            "reconciliation anomalies: {:?}",
            rec.anomalies
        )));
    }
    println!(
        "    reconciled at the OEM: {} issued of {} allowed; signature, certificates, serials, UIDs and log chain check out",
        rec.issued, rec.count
    );

    field_steps(&root, &oem, &ks, &pass, &req, &dev_dir)?;

    println!("\nmade:");
    for rel_path in [
        "oem/root.pem",
        "oem/device-ca.pem",
        "oem/mastering.pem",
        "oem/keystore/",
        "oem/products/1/",
        "oem/audit.log",
        "firmware.hex",
        "release-1.0.0/update.upk",
        "release-1.0.0/update.enc",
        "decrypted.bin",
        "release-1.1.0/",
        "device/flash.bin",
        "guardian/identity.pem",
        "job-thermostat.tcpkg",
        "production/",
        "report-job1.tcrep",
        "release-1.2.0/",
        "update-server/server.pem",
        "oem/crl.pem",
    ] {
        println!("  {}", root.join(rel_path).display());
    }
    println!(
        "audit log: {} records, hash chain intact",
        oem.audit().records()?.len()
    );
    if keep.is_none() {
        println!("(temporary directory removed; pass --keep DIR to keep it)");
    }
    Ok(())
}

/// Steps 16 to 18: in the field.
fn field_steps(
    root: &Path,
    oem: &OemDir,
    ks: &dyn trustchain_oem::keystore::KeyStore,
    pass: &Passphrase,
    req: &MasterRequest,
    lab_device: &Path,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use trustchain_field::auth::{sim::authenticate, Policy};
    use trustchain_field::update::{fetch, Catalogue, ServerOptions, UpdateServer};

    let mut produced: Vec<PathBuf> = std::fs::read_dir(root.join("production"))
        .at(root.join("production"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("device.toml").exists())
        .collect();
    produced.sort();
    let (Some(a_dir), Some(b_dir)) = (produced.first(), produced.get(1)) else {
        return Err(demo_err("fewer than two produced devices"));
    };

    step(
        16,
        "Field: two produced devices authenticate each other (chains to the OEM root, signed transcript)",
    );
    {
        let mut a = SimDevice::open(a_dir).map_err(demo_err)?;
        let mut b = SimDevice::open(b_dir).map_err(demo_err)?;
        let now = unix_now();
        let out = authenticate(&mut a, &mut b, Policy::at(now), Policy::at(now))
            .map_err(|f| demo_err(f.error))?;
        match out.result {
            Ok(_) => println!(
                "    device {} and device {} authenticated each other in {} messages; the keys never left their SBMs",
                out.a.uid,
                out.b.uid,
                out.messages.len()
            ),
            Err(f) => return Err(demo_err(f.error)),
        }
    }

    step(
        17,
        "Field: release 1.2.0 is mastered and served over mutual TLS; a device fetches it and the SBM applies it at boot",
    );
    let mut next = req.clone();
    next.version = Version {
        major: 1,
        minor: 2,
        patch: 0,
    };
    next.out = root.join("release-1.2.0");
    master_release(oem, ks, &next, &|_, _| {})?;
    let identity = root.join("update-server");
    trustchain_oem::server::create_identity(
        oem,
        ks,
        &["127.0.0.1".into(), "localhost".into()],
        30,
        &identity,
        pass,
        KdfParams::RECOMMENDED,
    )?;
    let root_der = oem.root_der()?;
    let serve = |crls| -> Result<(UpdateServer, String)> {
        let id = trustchain_oem::server::open_identity(&identity, pass)?;
        let server = UpdateServer::bind(ServerOptions {
            catalogue: Catalogue::load(&next.out, &root_der).map_err(demo_err)?,
            root_der: root_der.clone(),
            crls,
            chain: vec![id.cert_der],
            key: Arc::from(id.key),
            listen: "127.0.0.1:0".parse().map_err(demo_err)?,
        })
        .map_err(demo_err)?;
        let url = format!("https://{}", server.local_addr());
        Ok((server, url))
    };
    let (server, url) = serve(vec![])?;
    let stop = AtomicBool::new(false);
    let addr = server.local_addr();
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(|| server.serve(&stop, &|_| {}));
        let result = (|| -> Result<()> {
            let f = fetch(a_dir, &url).map_err(demo_err)?;
            println!(
                "    {} fetched {} ({} bytes) from {url}: staged, signature table untouched",
                a_dir.display(),
                f.version,
                f.size
            );
            let mut a = SimDevice::open(a_dir).map_err(demo_err)?;
            let outcome = SimLink::new(&mut a).map_err(demo_err)?.boot();
            a.save().map_err(demo_err)?;
            print_boot(outcome)
        })();
        stop.store(true, Ordering::SeqCst);
        UpdateServer::wake(addr);
        result
    })?;

    step(
        18,
        "Field: the OEM revokes the lab device; the update server refuses it, the device is unchanged",
    );
    let chain = {
        let mut d = SimDevice::open(lab_device).map_err(demo_err)?;
        Programmer::new(SimLink::new(&mut d).map_err(demo_err)?)
            .cert_chain()
            .map_err(demo_err)?
            .0
    };
    let r = trustchain_oem::revoke::revoke(
        oem,
        ks,
        &trustchain_oem::revoke::RevokeRequest {
            cert: chain[0].clone(),
            cert_path: lab_device.join("certificate"),
            reason: trustchain_oem::revoke::Reason::KeyCompromise,
            days: 30,
            operator: "demo".into(),
            now: time::OffsetDateTime::now_utc(),
        },
    )?;
    println!(
        "    CRL number {} of the device CA lists serial {}; bundle {}",
        r.crl_number,
        r.serial,
        r.bundle.display()
    );
    let crls = trustchain_field::crl::load(&r.bundle).map_err(demo_err)?;
    let (server, url) = serve(crls)?;
    let stop = AtomicBool::new(false);
    let addr = server.local_addr();
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(|| server.serve(&stop, &|_| {}));
        let result = match fetch(lab_device, &url) {
            Err(e) => {
                println!("    the revoked device: {e}");
                Ok(())
            }
            Ok(_) => Err(Error::Crypto("demo: a revoked device was served")),
        };
        stop.store(true, Ordering::SeqCst);
        UpdateServer::wake(addr);
        result
    })?;
    // Device-to-device: B, given the CRL, refuses the revoked lab device too.
    let mut lab = SimDevice::open(lab_device).map_err(demo_err)?;
    let mut b = SimDevice::open(b_dir).map_err(demo_err)?;
    let mut policy = Policy::at(unix_now());
    policy.crls = trustchain_field::crl::load(&r.bundle)
        .map_err(demo_err)?
        .into_iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    let out = authenticate(&mut lab, &mut b, Policy::at(unix_now()), policy)
        .map_err(|f| demo_err(f.error))?;
    match out.result {
        Err(f) => println!("    device {} refuses it as a peer: {}", out.b.uid, f.error),
        Ok(_) => return Err(Error::Crypto("demo: a revoked peer was authenticated")),
    }
    Ok(())
}
