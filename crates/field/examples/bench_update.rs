//! Secure update throughput (issue 5, point 7): a device fetches a release
//! from the update server over mutual TLS into its staging area, then the
//! SBM verifies and installs it at boot; against the crypto ceiling of the
//! same bytes measured in the same run, interleaved: the work an update
//! cannot avoid (SHA-256 of `update.enc`, AES-128-GCM of every 4 KiB chunk,
//! SHA-256 of the image), once with the SBM's RustCrypto code (what the
//! simulated device runs) and once with aws-lc-rs (the host's library).
//!
//!     cargo run --release -p trustchain-field --example bench_update -- --mib 1 --runs 9
#[path = "../../programmer/tests/common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_field::update::{fetch, Catalogue, ServerOptions, UpdateServer};
use trustchain_oem::server::{create_identity, open_identity};
use trustchain_programmer::client::Programmer;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::BootOutcome;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
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

const CHUNK: usize = 4096;

/// The unavoidable crypto of one update, with the SBM's code.
fn ceiling_sbm(enc: &[u8], key: &[u8; 16]) -> [u8; 32] {
    let _ = trustchain_sbm::crypto::sha256(enc);
    let mut plain = Vec::with_capacity(enc.len());
    let mut buf = [0u8; CHUNK];
    for (i, c) in enc.chunks(CHUNK + 16).enumerate() {
        let (body, tag) = c.split_at(c.len().saturating_sub(16));
        let n = body.len();
        buf[..n].copy_from_slice(body);
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        // Timing only: the bytes are not a real stream, so the tag fails;
        // the whole chunk is still decrypted and authenticated.
        let _ = trustchain_sbm::crypto::open_chunk(
            key,
            &nonce,
            &[],
            &mut buf[..n],
            tag.try_into().unwrap_or(&[0; 16]),
        );
        plain.extend_from_slice(&buf[..n]);
    }
    trustchain_sbm::crypto::sha256(&plain)
}

/// The same with aws-lc-rs.
fn ceiling_awslc(enc: &[u8], key: &[u8; 16]) -> [u8; 32] {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let _ = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, enc);
    let k = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).expect("key"));
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; CHUNK + 16];
    for (i, c) in enc.chunks(CHUNK + 16).enumerate() {
        let n = c.len();
        buf[..n].copy_from_slice(c);
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let _ = k.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut buf[..n],
        );
        ctx.update(&buf[..n.saturating_sub(16)]);
    }
    ctx.finish().as_ref().try_into().expect("32 bytes")
}

fn main() {
    let mib = arg("--mib", 1);
    let runs = arg("--runs", 9);
    let size = mib << 20;
    let o = oem();
    let v1 = release(&o, "v1", "1.0.0", 4096, 1);
    let v2 = release(&o, "v2", "2.0.0", size, 2);
    let (_, enc) = read_release(&v2);
    // Flash: application slot and staging for the image, plus state pages.
    let capacity = ((4 * size + (256 << 10)) as u32).next_power_of_two();
    let geometry = Geometry::new(4096, 8, capacity).expect("geometry");
    let identity = o.dir.path().join("id");
    create_identity(
        &o.oem,
        &o.ks,
        &["127.0.0.1".into()],
        30,
        &identity,
        &pass(),
        FAST,
    )
    .expect("identity");
    let root = o.oem.root_der().expect("root");
    let id = open_identity(&identity, &pass()).expect("open identity");
    let server = UpdateServer::bind(ServerOptions {
        catalogue: Catalogue::load(&v2, &root).expect("catalogue"),
        root_der: root,
        crls: vec![],
        chain: vec![id.cert_der],
        key: Arc::from(id.key),
        listen: "127.0.0.1:0".parse().expect("addr"),
    })
    .expect("bind");
    let addr = server.local_addr();
    let url = format!("https://{addr}");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let srv = std::thread::spawn(move || server.serve(&s2, &|_| {}));

    let (upk1, enc1) = read_release(&v1);
    let key = [7u8; 16];
    let (mut fetch_ms, mut apply_ms, mut sbm_ms, mut lc_ms) = (vec![], vec![], vec![], vec![]);
    let mut persist_ms = vec![];
    for r in 0..runs {
        let dir = o.dir.path().join(format!("dev{r}"));
        let mut dev = provisioned_device(&o, &dir, geometry, &[0xd0, r as u8]);
        {
            let mut prog = Programmer::new(SimLink::new(&mut dev).expect("link"));
            prog.send_release(&upk1, &enc1, false, &mut |_, _| {})
                .expect("install v1");
        }
        dev.save().expect("save");
        drop(dev);

        let t = Instant::now();
        let f = fetch(&dir, &url).expect("fetch");
        fetch_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(f.staged);

        let t = Instant::now();
        let mut dev = SimDevice::open(&dir).expect("open");
        let outcome = SimLink::new(&mut dev).expect("link").boot();
        dev.save().expect("save");
        apply_ms.push(t.elapsed().as_secs_f64() * 1e3);
        match outcome {
            BootOutcome::Run(i) => assert_eq!(i.version, [2, 0, 0]),
            other => panic!("{other:?}"),
        }

        // What the simulator itself costs: open the device (read flash.bin)
        // and save it (atomic, fsync'd write), as fetch and boot each do once.
        let t = Instant::now();
        SimDevice::open(&dir).expect("open").save().expect("save");
        persist_ms.push(t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        std::hint::black_box(ceiling_sbm(&enc, &key));
        sbm_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(ceiling_awslc(&enc, &key));
        lc_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = std::fs::remove_dir_all(&dir);
        eprint!(".");
    }
    eprintln!();
    stop.store(true, Ordering::SeqCst);
    UpdateServer::wake(addr);
    let _ = srv.join();

    let mb = enc.len() as f64 / 1e6;
    let (f, a, s, l, p) = (
        median(fetch_ms),
        median(apply_ms),
        median(sbm_ms),
        median(lc_ms),
        median(persist_ms),
    );
    summary("sbm_ceiling_mbps", mb / s * 1e3);
    summary("awslc_ceiling_mbps", mb / l * 1e3);
    summary("fetch_apply_ms", f + a);
    summary("fetch_apply_mbps", mb / (f + a) * 1e3);
    summary("fetch_apply_ratio", s / (f + a));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "update of a {mib} MiB image ({} bytes of update.enc), medians of {runs} runs, {cores} cores\n",
        enc.len()
    );
    println!("| measurement | median | throughput | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| ceiling, aws-lc-rs: SHA-256(enc) + AES-128-GCM chunks + SHA-256(image) | {l:.1} ms | {:.0} MB/s | - |", mb / l * 1e3);
    println!(
        "| ceiling, the SBM's RustCrypto code: the same work | {s:.1} ms | {:.0} MB/s | 1.00 |",
        mb / s * 1e3
    );
    println!(
        "| `device fetch`: 2 mTLS sessions (SBM signs), download, application checks, staging through the SBM | {f:.1} ms | {:.0} MB/s | {:.2} of the SBM ceiling |",
        mb / f * 1e3,
        s / f
    );
    println!(
        "| `device boot`: the SBM verifies and installs from staging, boot check | {a:.1} ms | {:.0} MB/s | {:.2} of the SBM ceiling |",
        mb / a * 1e3,
        s / a
    );
    println!(
        "| fetch + apply | {:.1} ms | {:.0} MB/s | {:.2} of the SBM ceiling |",
        f + a,
        mb / (f + a) * 1e3,
        s / (f + a)
    );
    println!(
        "| the simulator's persistence: open + save of the device ({} MiB flash.bin), done once by each of fetch and boot | {p:.1} ms | - | - |",
        capacity >> 20
    );
    println!(
        "| fetch + apply without the two persistences | {:.1} ms | {:.0} MB/s | {:.2} of the SBM ceiling |",
        f + a - 2.0 * p,
        mb / (f + a - 2.0 * p) * 1e3,
        s / (f + a - 2.0 * p)
    );
}
