//! Secure updates over the network, end to end on simulated devices: the
//! update server with mutual TLS, the device's fetch into staging, the SBM
//! applying it at the next boot, revocation, and the attacks of issue 5
//! point 5 — each refused with its specific reason and the device
//! byte-identical afterwards.
#[path = "../../programmer/tests/common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_field::update::{fetch, Catalogue, FetchError, ServerOptions, UpdateServer};
use trustchain_field::{crl, tls};
use trustchain_oem::revoke::{revoke, Reason, RevokeRequest};
use trustchain_oem::server::{create_identity, open_identity};
use trustchain_programmer::client::Programmer;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::{BootOutcome, Status};

/// Every file of a device directory, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

struct World {
    o: Oem,
    v1: PathBuf,
    v2: PathBuf,
    identity: PathBuf,
    devices: PathBuf,
}

fn world() -> World {
    let o = oem();
    let v1 = release(&o, "v1", "1.0.0", 20_000, 1);
    let v2 = release(&o, "v2", "1.1.0", 30_000, 2);
    let identity = o.dir.path().join("server-id");
    create_identity(
        &o.oem,
        &o.ks,
        &["127.0.0.1".into(), "localhost".into()],
        30,
        &identity,
        &pass(),
        FAST,
    )
    .unwrap();
    let devices = o.dir.path().join("devices");
    std::fs::create_dir(&devices).unwrap();
    World {
        o,
        v1,
        v2,
        identity,
        devices,
    }
}

/// A locked device running v1.
fn device(w: &World, name: &str, uid: &[u8]) -> PathBuf {
    let dir = w.devices.join(name);
    let mut dev = provisioned_device(&w.o, &dir, Geometry::SMALL_PAGES, uid);
    let (upk, enc) = read_release(&w.v1);
    {
        let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
        prog.send_release(&upk, &enc, false, &mut |_, _| {})
            .unwrap();
    }
    dev.save().unwrap();
    dir
}

fn running(dir: &Path) -> [u16; 3] {
    let mut dev = SimDevice::open(dir).unwrap();
    match SimLink::new(&mut dev).unwrap().boot() {
        BootOutcome::Run(i) => {
            dev.save().unwrap();
            i.version
        }
        other => panic!("{other:?}"),
    }
}

/// An update server over `release`, honouring `crls`, in a thread.
struct Running {
    url: String,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        UpdateServer::wake(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(w: &World, release: &Path, crls: Option<&Path>) -> Running {
    let root = w.o.oem.root_der().unwrap();
    let id = open_identity(&w.identity, &pass()).unwrap();
    let server = UpdateServer::bind(ServerOptions {
        catalogue: Catalogue::load(release, &root).unwrap(),
        root_der: root,
        crls: crls.map(|p| crl::load(p).unwrap()).unwrap_or_default(),
        chain: vec![id.cert_der],
        key: Arc::from(id.key),
        listen: "127.0.0.1:0".parse().unwrap(),
    })
    .unwrap();
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let thread = std::thread::spawn(move || server.serve(&s2, &|_| {}));
    Running {
        url: format!("https://127.0.0.1:{}", addr.port()),
        stop,
        addr,
        thread: Some(thread),
    }
}

/// A hostile server with a valid identity: answers each request with
/// whatever `answer(path)` returns, raw.
fn evil(w: &World, answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> String {
    let root = w.o.oem.root_der().unwrap();
    let id = open_identity(&w.identity, &pass()).unwrap();
    let config = tls::server_config(
        &root,
        vec![],
        &[id.cert_der],
        tls::KeystoreKey(Arc::from(id.key)),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let path = text.split(' ').nth(1).unwrap_or("").to_string();
            let _ = s.write_all(&answer(&path));
            let _ = s.flush();
            // No close_notify: a hostile server just drops the connection.
        }
    });
    format!("https://127.0.0.1:{port}")
}

fn ok_response(body: &[u8], content_length: Option<usize>) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
    if let Some(n) = content_length {
        r.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[test]
fn a_device_fetches_the_new_release_and_the_sbm_applies_it_at_boot() {
    let w = world();
    let a = device(&w, "a", b"\xa1");
    let srv = serve(&w, &w.v2, None);
    let before = running(&a);
    assert_eq!(before, [1, 0, 0]);
    let f = fetch(&a, &srv.url).unwrap();
    assert!(f.staged);
    assert_eq!(f.version, "1.1.0");
    // Staged, not applied: the signature table still names v1 until reset.
    {
        let mut dev = SimDevice::open(&a).unwrap();
        let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
        let (installed, _) = prog.signature_table().unwrap();
        assert_eq!(installed.unwrap().version, [1, 0, 0]);
        assert_eq!(prog.info().unwrap().journal, 1, "update requested");
    }
    assert_eq!(running(&a), [1, 1, 0], "the next boot applied it");
    // Fetching again: already running it, nothing staged, nothing changed.
    let snap = snapshot(&a);
    let again = fetch(&a, &srv.url).unwrap();
    assert!(!again.staged);
    assert_eq!(snapshot(&a), snap);
}

#[test]
fn the_server_picks_the_newest_release_of_a_directory_of_releases() {
    let w = world();
    let all = w.o.dir.path().join("releases");
    std::fs::create_dir(&all).unwrap();
    for (name, src) in [("a-new", &w.v2), ("b-old", &w.v1)] {
        std::fs::create_dir(all.join(name)).unwrap();
        for f in ["update.upk", "update.enc"] {
            std::fs::copy(src.join(f), all.join(name).join(f)).unwrap();
        }
    }
    let cat = Catalogue::load(&all, &w.o.oem.root_der().unwrap()).unwrap();
    assert_eq!(cat.newest[&7].info.version, "1.1.0");
    // A tampered release is refused when the server starts, naming it.
    std::fs::write(all.join("b-old").join("update.enc"), b"junk").unwrap();
    let err = Catalogue::load(&all, &w.o.oem.root_der().unwrap()).unwrap_err();
    assert!(err.contains("b-old"), "{err}");
}

#[test]
fn a_revoked_device_is_refused_and_unchanged() {
    let w = world();
    let a = device(&w, "a", b"\xa1");
    let b = device(&w, "b", b"\xb2");
    // The OEM revokes b.
    let chain_b = {
        let mut dev = SimDevice::open(&b).unwrap();
        Programmer::new(SimLink::new(&mut dev).unwrap())
            .cert_chain()
            .unwrap()
            .0
    };
    let r = revoke(
        &w.o.oem,
        &w.o.ks,
        &RevokeRequest {
            cert: chain_b[0].clone(),
            cert_path: "b.pem".into(),
            reason: Reason::KeyCompromise,
            days: 30,
            operator: "test".into(),
            now: time::OffsetDateTime::now_utc(),
        },
    )
    .unwrap();
    assert_eq!(r.revoked_count, 1);
    assert_eq!(r.crl_number, 1);
    let srv = serve(&w, &w.v2, Some(&r.bundle));
    let snap = snapshot(&b);
    let err = fetch(&b, &srv.url).unwrap_err();
    assert!(
        matches!(&err, FetchError::Tls { why, .. } if why.contains("revoked")),
        "{err}"
    );
    assert_eq!(snapshot(&b), snap, "a refused device is unchanged");
    // The other device is served.
    assert!(fetch(&a, &srv.url).unwrap().staged);
    // Revoking again is refused; the CRL keeps growing with other revocations.
    let again = revoke(
        &w.o.oem,
        &w.o.ks,
        &RevokeRequest {
            cert: chain_b[0].clone(),
            cert_path: "b.pem".into(),
            reason: Reason::KeyCompromise,
            days: 30,
            operator: "test".into(),
            now: time::OffsetDateTime::now_utc(),
        },
    );
    assert!(
        matches!(again, Err(trustchain_oem::Error::AlreadyRevoked { .. })),
        "{again:?}"
    );
}

/// The leaf certificate of a device directory.
fn leaf(dir: &Path) -> Vec<u8> {
    let mut dev = SimDevice::open(dir).unwrap();
    Programmer::new(SimLink::new(&mut dev).unwrap())
        .cert_chain()
        .unwrap()
        .0
        .remove(0)
}

/// The OEM revokes `cert` as if at `now`, the CRL current for `days`.
fn revoke_at(w: &World, cert: Vec<u8>, now: time::OffsetDateTime, days: u32) -> PathBuf {
    revoke(
        &w.o.oem,
        &w.o.ks,
        &RevokeRequest {
            cert,
            cert_path: "revoked.pem".into(),
            reason: Reason::KeyCompromise,
            days,
            operator: "test".into(),
            now,
        },
    )
    .unwrap()
    .bundle
}

fn server_options(w: &World, release: &Path, crls: &Path) -> ServerOptions {
    let root = w.o.oem.root_der().unwrap();
    let id = open_identity(&w.identity, &pass()).unwrap();
    ServerOptions {
        catalogue: Catalogue::load(release, &root).unwrap(),
        root_der: root,
        crls: crl::load(crls).unwrap(),
        chain: vec![id.cert_der],
        key: Arc::from(id.key),
        listen: "127.0.0.1:0".parse().unwrap(),
    }
}

#[test]
fn a_server_refuses_to_start_with_an_expired_crl_until_it_is_refreshed() {
    let w = world();
    let a = device(&w, "a", b"\xa1");
    let b = device(&w, "b", b"\xb2");
    // A CRL made 31 days ago, current for 30: what an attacker replays, or
    // an operator forgot to refresh.
    let then = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    let bundle = revoke_at(&w, leaf(&b), then, 30);
    let next_update = (then.replace_nanosecond(0).unwrap() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let err = match UpdateServer::bind(server_options(&w, &w.v2, &bundle)) {
        Ok(_) => panic!("a server started with an expired CRL"),
        Err(e) => e,
    };
    for needle in [
        "expired at",
        next_update.as_str(),
        "nextUpdate",
        "Device CA",
        "CRL number 1",
        "trustchain oem revoke OEM_DIR --refresh",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    // The same check for the CLI, which names the file.
    let loaded = crl::load(&bundle).unwrap();
    let named =
        crl::check_current("acme/crl.pem", &loaded, trustchain_oem::audit::unix_now()).unwrap_err();
    assert!(named.starts_with("acme/crl.pem: CRL 1 of 1: "), "{named}");
    // The OEM refreshes: same entry, a new nextUpdate; the server starts,
    // still refuses b and serves a.
    let r = trustchain_oem::revoke::refresh(
        &w.o.oem,
        &w.o.ks,
        &trustchain_oem::revoke::RefreshRequest {
            days: 30,
            operator: "test".into(),
            now: time::OffsetDateTime::now_utc(),
        },
    )
    .unwrap();
    assert_eq!(
        (r.crls.len(), r.crls[0].crl_number, r.crls[0].revoked_count),
        (1, 2, 1)
    );
    let until = crl::check_current(
        "crl.pem",
        &crl::load(&r.bundle).unwrap(),
        trustchain_oem::audit::unix_now(),
    )
    .unwrap()
    .unwrap();
    assert!(
        until > trustchain_oem::audit::unix_now() + 29 * 86_400,
        "{until}"
    );
    let srv = serve(&w, &w.v2, Some(&r.bundle));
    let snap = snapshot(&b);
    let err = fetch(&b, &srv.url).unwrap_err();
    assert!(
        matches!(&err, FetchError::Tls { why, .. } if why.contains("revoked")),
        "{err}"
    );
    assert_eq!(snapshot(&b), snap);
    assert!(fetch(&a, &srv.url).unwrap().staged);
}

#[test]
fn a_running_server_refuses_devices_once_its_crl_expires() {
    // rustls enforces nextUpdate while the server runs
    // (`enforce_revocation_expiration`): a CRL that expires under a running
    // server refuses every device it covers until the server gets a fresh one.
    let w = world();
    let a = device(&w, "a", b"\xa1");
    let b = device(&w, "b", b"\xb2");
    let c = device(&w, "c", b"\xc3");
    // Current for 30 days from 30 days minus `margin` seconds ago: it
    // expires `margin` seconds from now (room for a slow debug build on a
    // loaded machine before the first fetch is done).
    let margin = 15;
    let then = time::OffsetDateTime::now_utc() - time::Duration::days(30)
        + time::Duration::seconds(margin);
    let bundle = revoke_at(&w, leaf(&c), then, 30);
    let next_update = then.replace_nanosecond(0).unwrap() + time::Duration::days(30);
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let server = UpdateServer::bind(server_options(&w, &w.v2, &bundle)).unwrap();
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, l2) = (stop.clone(), log.clone());
    let thread = std::thread::spawn(move || {
        server.serve(&s2, &|line| l2.lock().unwrap().push(line));
    });
    let srv = Running {
        url: format!("https://127.0.0.1:{}", addr.port()),
        stop,
        addr,
        thread: Some(thread),
    };
    // While the CRL is current, a device it does not list is served.
    let f = fetch(&a, &srv.url).unwrap();
    assert!(f.staged);
    assert!(
        time::OffsetDateTime::now_utc() < next_update,
        "the fetch before expiry took longer than {margin} s; the test proves nothing"
    );
    // After nextUpdate, the same kind of device is refused, unchanged.
    while time::OffsetDateTime::now_utc() <= next_update + time::Duration::seconds(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let snap = snapshot(&b);
    let err = fetch(&b, &srv.url).unwrap_err();
    assert!(matches!(&err, FetchError::Tls { .. }), "{err}");
    assert_eq!(snapshot(&b), snap, "a refused device is unchanged");
    drop(srv);
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("refused: this side's CRL for the certificate's issuer expired at")
            && log.contains("--refresh"),
        "{log}"
    );
}

#[test]
fn a_device_of_another_oem_is_refused_by_the_server() {
    let w = world();
    let other = world();
    let stranger = device(&other, "s", b"\x5a");
    let srv = serve(&w, &w.v2, None);
    let snap = snapshot(&stranger);
    let err = fetch(&stranger, &srv.url).unwrap_err();
    // The stranger does not even trust this server (another root).
    assert!(matches!(err, FetchError::Tls { .. }), "{err}");
    assert_eq!(snapshot(&stranger), snap);
}

#[test]
fn rollback_is_refused_before_the_image_is_downloaded() {
    let w = world();
    let a = device(&w, "a", b"\xa1");
    // Bring a to v2, then offer v1.
    let srv2 = serve(&w, &w.v2, None);
    fetch(&a, &srv2.url).unwrap();
    assert_eq!(running(&a), [1, 1, 0]);
    let srv1 = serve(&w, &w.v1, None);
    let snap = snapshot(&a);
    let err = fetch(&a, &srv1.url).unwrap_err();
    assert!(matches!(err, FetchError::Rollback { .. }), "{err}");
    assert_eq!(snapshot(&a), snap);
}

fn hostile_case(answer: impl Fn(&World, &str) -> Vec<u8> + Send + Sync + 'static) -> FetchError {
    let w = Arc::new(world());
    let a = device(&w, "a", b"\xa1");
    let w2 = w.clone();
    let url = evil(&w, move |path| answer(&w2, path));
    let snap = snapshot(&a);
    let err = fetch(&a, &url).unwrap_err();
    assert_eq!(snapshot(&a), snap, "the device changed after: {err}");
    assert_eq!(running(&a), [1, 0, 0], "the old version keeps running");
    err
}

#[test]
fn endless_data_is_cut_at_the_signed_size() {
    // No Content-Length, and more bytes than the UPK signs.
    let err = hostile_case(|w, path| {
        let (upk, enc) = read_release(&w.v2);
        if path.ends_with("update.upk") {
            ok_response(&upk, Some(upk.len()))
        } else {
            let mut endless = enc.clone();
            endless.extend(std::iter::repeat_n(0u8, 1 << 20));
            ok_response(&endless, None)
        }
    });
    assert!(matches!(err, FetchError::EndlessData { .. }), "{err}");
    // And an announced length above the signed size is refused up front.
    let err = hostile_case(|w, path| {
        let (upk, enc) = read_release(&w.v2);
        if path.ends_with("update.upk") {
            ok_response(&upk, Some(upk.len()))
        } else {
            ok_response(&enc, Some(enc.len() + 1))
        }
    });
    assert!(matches!(err, FetchError::EndlessData { .. }), "{err}");
}

#[test]
fn a_truncated_download_is_refused() {
    let err = hostile_case(|w, path| {
        let (upk, enc) = read_release(&w.v2);
        if path.ends_with("update.upk") {
            ok_response(&upk, Some(upk.len()))
        } else {
            ok_response(&enc[..enc.len() / 2], Some(enc.len()))
        }
    });
    assert!(matches!(err, FetchError::Truncated { .. }), "{err}");
}

#[test]
fn mix_and_match_is_refused() {
    // v2's UPK with v1's image, padded to v2's signed size.
    let err = hostile_case(|w, path| {
        let (upk, enc2) = read_release(&w.v2);
        let (_, mut enc1) = read_release(&w.v1);
        enc1.resize(enc2.len(), 0);
        if path.ends_with("update.upk") {
            ok_response(&upk, Some(upk.len()))
        } else {
            ok_response(&enc1, Some(enc1.len()))
        }
    });
    assert!(matches!(err, FetchError::MixAndMatch { .. }), "{err}");
}

/// A release of product 8 from the same OEM.
fn other_product_release(w: &World) -> PathBuf {
    let mut ks = w.o.oem.unlock(&pass()).unwrap();
    trustchain_oem::product::Product::create(
        &w.o.oem,
        &mut ks,
        trustchain_formats::ProductId::new(8).unwrap(),
        "Other",
        None,
        "test",
    )
    .unwrap();
    let img = w.o.dir.path().join("p8.bin");
    std::fs::write(&img, vec![0x42u8; 5000]).unwrap();
    let out = w.o.dir.path().join("p8");
    let req = trustchain_oem::master::MasterRequest {
        product: trustchain_formats::ProductId::new(8).unwrap(),
        version: "9.0.0".parse().unwrap(),
        security_counter: None,
        force: true,
        image: img,
        format: None,
        load: trustchain_oem::image::LoadOptions {
            raw_load_address: trustchain_programmer::sim::FLASH_BASE as u64,
            ..Default::default()
        },
        devices: vec![],
        device_uids: None,
        out: out.clone(),
        operator: "test".into(),
    };
    trustchain_oem::master::master_release(&w.o.oem, &ks, &req, &|_, _| {}).unwrap();
    out
}

#[test]
fn wrong_product_and_wrong_oem_are_refused_by_the_sbm() {
    let err = hostile_case(|w, path| {
        let dir = w.o.dir.path().join("p8");
        if !dir.exists() {
            other_product_release(w);
        }
        let (upk, enc) = read_release(&dir);
        let body = if path.ends_with("update.upk") {
            upk
        } else {
            enc
        };
        ok_response(&body, Some(body.len()))
    });
    assert!(
        matches!(err, FetchError::Refused(Status::WrongProduct)),
        "{err}"
    );
    // Another OEM's release (its own mastering key and root).
    let err = hostile_case(|_, path| {
        thread_local! {
            static OTHER: (Oem, PathBuf) = {
                let o = oem();
                let r = release(&o, "x", "5.0.0", 4000, 9);
                (o, r)
            };
        }
        OTHER.with(|(_, r)| {
            let (upk, enc) = read_release(r);
            let body = if path.ends_with("update.upk") {
                upk
            } else {
                enc
            };
            ok_response(&body, Some(body.len()))
        })
    });
    assert!(
        matches!(
            err,
            FetchError::Refused(Status::BadSignature | Status::WrongOem)
        ),
        "{err}"
    );
}

#[test]
fn bad_urls_are_refused_clearly() {
    let w = world();
    let a = device(&w, "a", b"\xa1");
    for url in [
        "http://127.0.0.1:1",
        "127.0.0.1:1",
        "https://",
        "https://h/x",
    ] {
        assert!(matches!(fetch(&a, url), Err(FetchError::Url(_))), "{url}");
    }
    // Nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = fetch(&a, &format!("https://127.0.0.1:{port}")).unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err}");
}

#[test]
fn a_release_in_devices_uid_goes_to_that_device_only() {
    let w = world();
    let a = device(&w, "a", b"\xa1");
    let b = device(&w, "b", b"\xb2");
    // The common release is v1 (what both run); device a1 has its own v2.
    let dir = w.o.dir.path().join("served");
    std::fs::create_dir_all(dir.join("devices").join("a1")).unwrap();
    for f in ["update.upk", "update.enc"] {
        std::fs::copy(w.v1.join(f), dir.join(f)).unwrap();
        std::fs::copy(w.v2.join(f), dir.join("devices").join("a1").join(f)).unwrap();
    }
    let srv = serve(&w, &dir, None);
    assert!(fetch(&a, &srv.url).unwrap().staged);
    assert_eq!(running(&a), [1, 1, 0]);
    let snap = snapshot(&b);
    assert!(!fetch(&b, &srv.url).unwrap().staged, "b already runs v1");
    assert_eq!(snapshot(&b), snap);
}

#[test]
fn a_release_mastered_for_one_device_key_reaches_it_and_no_other() {
    let w = world();
    // Device a, provisioned here to learn its key-agreement key.
    let a = w.devices.join("a");
    let agreement = {
        let mut dev = SimDevice::create(&a, b"\xa1", 0x42, Geometry::SMALL_PAGES).unwrap();
        let p = {
            let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
            let p = trustchain_programmer::lab::provision(
                &mut prog,
                &w.o.oem,
                &w.o.ks,
                trustchain_formats::ProductId::new(7).unwrap(),
                1,
            )
            .unwrap();
            let (upk, enc) = read_release(&w.v1);
            prog.send_release(&upk, &enc, false, &mut |_, _| {})
                .unwrap();
            p
        };
        dev.save().unwrap();
        p.agreement_key
    };
    let b = device(&w, "b", b"\xb2");
    // v2 for a alone: its content key also wrapped to a's key, UID allow-list [a1].
    let key_file = w.o.dir.path().join("a-agreement.pem");
    std::fs::write(
        &key_file,
        trustchain_oem::oem::public_key_pem(&trustchain_oem::crypto::PublicKey(agreement)),
    )
    .unwrap();
    let img = w.o.dir.path().join("for-a.bin");
    std::fs::write(&img, vec![0x5au8; 7000]).unwrap();
    let served = w.o.dir.path().join("served");
    let for_a = served.join("devices").join("a1");
    std::fs::create_dir_all(served.join("devices")).unwrap();
    trustchain_oem::master::master_release(
        &w.o.oem,
        &w.o.ks,
        &trustchain_oem::master::MasterRequest {
            product: trustchain_formats::ProductId::new(7).unwrap(),
            version: "1.2.0".parse().unwrap(),
            security_counter: None,
            force: true,
            image: img,
            format: None,
            load: trustchain_oem::image::LoadOptions {
                raw_load_address: trustchain_programmer::sim::FLASH_BASE as u64,
                ..Default::default()
            },
            devices: vec![key_file],
            device_uids: Some(vec![vec![0xa1]]),
            out: for_a.clone(),
            operator: "test".into(),
        },
        &|_, _| {},
    )
    .unwrap();
    for f in ["update.upk", "update.enc"] {
        std::fs::copy(w.v1.join(f), served.join(f)).unwrap();
    }
    let srv = serve(&w, &served, None);
    assert_eq!(fetch(&a, &srv.url).unwrap().version, "1.2.0");
    assert_eq!(running(&a), [1, 2, 0]);
    // b is served the common release (it runs it already) ...
    let snap = snapshot(&b);
    assert_eq!(fetch(&b, &srv.url).unwrap().version, "1.0.0");
    assert_eq!(snapshot(&b), snap);
    // ... and a's release, handed to b by a hostile server, is refused by b's SBM.
    let for_a2 = for_a.clone();
    let err = {
        let url = evil(&w, move |path| {
            let (upk, enc) = read_release(&for_a2);
            let body = if path.ends_with("update.upk") {
                upk
            } else {
                enc
            };
            ok_response(&body, Some(body.len()))
        });
        fetch(&b, &url).unwrap_err()
    };
    assert!(
        matches!(err, FetchError::Refused(Status::UidNotAllowed)),
        "{err}"
    );
    assert_eq!(snapshot(&b), snap);
}
