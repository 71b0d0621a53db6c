//! Mastering benchmark (issue: "Performance, in a benchmark"): mastering
//! speed against `openssl dgst -sha256` on the same file in the same run
//! (SHA-256 is the ceiling), peak memory when mastering a large image, and
//! MCUboot's `imgtool sign --encrypt` on a 16 MiB image.
//!
//! Run through `scripts/bench` (builds in release, installs imgtool in the
//! project venv), or directly:
//! `cargo run --release -p trustchain-oem --example bench_mastering -- --runs 9`
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use trustchain_oem::crypto::{EcdhKey, EcdsaKey, SystemEntropy};
use trustchain_oem::formats::{OemId, ProductId, SecurityCounter, Version};
use trustchain_oem::master::{master_stream, MasterParams};

fn arg(name: &str, default: u64) -> u64 {
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

fn random_file(path: &Path, mib: u64) {
    let mut f = BufWriter::new(File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        aws_lc_rs::rand::fill(&mut buf).unwrap();
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn master_file(input: &Path, output: &Path) -> f64 {
    let (signer, _) = EcdsaKey::generate().unwrap();
    let (product, _) = EcdhKey::generate(&mut SystemEntropy).unwrap();
    let size = std::fs::metadata(input).unwrap().len();
    let params = MasterParams {
        oem_id: OemId::new(1).unwrap(),
        product_id: ProductId::new(1).unwrap(),
        version: Version {
            major: 1,
            minor: 0,
            patch: 0,
        },
        security_counter: SecurityCounter(1),
        load_address: 0,
        created: 0,
        recipients: vec![product.public_key().clone()],
        device_uids: None,
        mastering_cert_der: vec![0x30, 0x00],
    };
    // `trustchain master` always writes a new file (its output directory
    // must not exist), so the old output is removed before timing.
    std::fs::remove_file(output).ok();
    let t = Instant::now();
    let input = File::open(input).unwrap();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(output).unwrap());
    master_stream(
        &params,
        input,
        size,
        &mut out,
        &signer,
        &mut SystemEntropy,
        &|_| {},
    )
    .unwrap();
    out.flush().unwrap();
    t.elapsed().as_secs_f64()
}

fn time_cmd(cmd: &mut Command) -> Option<f64> {
    let t = Instant::now();
    let out = cmd.output().ok()?;
    out.status.success().then(|| t.elapsed().as_secs_f64())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-rss") {
        let input = PathBuf::from(&args[i + 1]);
        let secs = master_file(&input, &input.with_extension("enc"));
        println!("{secs} {}", peak_rss_kib());
        return;
    }
    let runs = arg("--runs", 9) as usize;
    let size_mib = arg("--size-mib", 64);
    let big_mib = arg("--big-mib", 1024);
    let imgtool_mib = arg("--imgtool-mib", 16);
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let input = dir.path().join("image.bin");
    random_file(&input, size_mib);

    let mut openssl = vec![];
    let mut ours = vec![];
    for _ in 0..runs {
        // Interleaved so both see the same machine state.
        openssl.push(
            time_cmd(
                Command::new("openssl")
                    .args(["dgst", "-sha256"])
                    .arg(&input),
            )
            .expect("openssl dgst"),
        );
        ours.push(master_file(&input, &dir.path().join("update.enc")));
    }
    let (o, m) = (median(openssl), median(ours));
    let mb = size_mib as f64 * 1.048_576;
    println!("| measurement | median | throughput | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| `openssl dgst -sha256` on {size_mib} MiB (ceiling) | {:.1} ms | {:.0} MB/s | 1.00 |",
        o * 1e3,
        mb / o
    );
    println!("| trustchain mastering of the same {size_mib} MiB | {:.1} ms | {:.0} MB/s | {:.2} of openssl's speed |", m * 1e3, mb / m, o / m);
    summary("openssl_mbps", mb / o);
    summary("master_mbps", mb / m);
    summary("master_vs_openssl", o / m);

    // Peak memory when mastering a large image, in a fresh process.
    let big = dir.path().join("big.bin");
    random_file(&big, big_mib);
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--child-rss")
        .arg(&big)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&child.stdout);
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let rss: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    println!("| mastering {big_mib} MiB: peak RSS of the whole process | {:.2} s | {:.0} MB/s | {:.1} MiB RSS |", secs, big_mib as f64 * 1.048_576 / secs, rss as f64 / 1024.0);
    summary("big_rss_mib", rss as f64 / 1024.0);
    std::fs::remove_file(&big).ok();
    std::fs::remove_file(big.with_extension("enc")).ok();

    // MCUboot imgtool on 16 MiB, same run.
    let imgtool = std::env::var("IMGTOOL").unwrap_or_else(|_| "imgtool".into());
    let small = dir.path().join("img16.bin");
    random_file(&small, imgtool_mib);
    let k = dir.path().join("sign.pem");
    let e = dir.path().join("enc.pem");
    let have = Command::new(&imgtool)
        .args(["keygen", "-t", "ecdsa-p256", "-k"])
        .arg(&k)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new(&imgtool)
            .args(["keygen", "-t", "ecdsa-p256", "-k"])
            .arg(&e)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if have {
        let slot = format!("{:#x}", (imgtool_mib + 1) << 20);
        let mut t = vec![];
        for _ in 0..3 {
            let out = dir.path().join("signed.bin");
            std::fs::remove_file(&out).ok();
            let secs = time_cmd(
                Command::new(&imgtool)
                    .args(["sign", "-k"])
                    .arg(&k)
                    .args([
                        "--header-size",
                        "0x200",
                        "--pad-header",
                        "--align",
                        "4",
                        "--version",
                        "1.0.0",
                        "--slot-size",
                        &slot,
                        "-E",
                    ])
                    .arg(&e)
                    .arg(&small)
                    .arg(&out),
            );
            t.push(secs.expect("imgtool sign --encrypt"));
        }
        let mut ours16 = vec![];
        for _ in 0..3 {
            ours16.push(master_file(&small, &dir.path().join("u16.enc")));
        }
        let (i, m16) = (median(t), median(ours16));
        let mb = imgtool_mib as f64 * 1.048_576;
        println!("| `imgtool sign --encrypt` (MCUboot, ECDSA P-256 + ECIES-P256) on {imgtool_mib} MiB | {:.0} ms | {:.0} MB/s | - |", i * 1e3, mb / i);
        println!("| trustchain mastering of the same {imgtool_mib} MiB | {:.1} ms | {:.0} MB/s | {:.0}x faster than imgtool |", m16 * 1e3, mb / m16, i / m16);
        summary("imgtool_mbps", mb / i);
        summary("master_small_mbps", mb / m16);
        summary("master_vs_imgtool", i / m16);
    } else {
        println!("| `imgtool sign --encrypt` | not run: imgtool not found (set IMGTOOL or use scripts/bench) | | |");
    }
    println!(
        "\n{runs} interleaved runs, medians; {} cores; {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model()
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}
