//! Production benchmark (issue 4, point 10).
//!
//! 1. Certificate issuance inside the Guardian (software keystore; the
//!    device brings its public key) against raw ECDSA P-256 signing with the
//!    same library (aws-lc-rs) on one thread, in rounds that interleave the
//!    two so that both see the same machine load; the ratio is taken per
//!    round. Issuance is measured as a group commit on one thread (groups of
//!    `--batch` and of `--group`) and pipelined (`--group`: a signing thread
//!    one group ahead of the committing thread).
//! 2. What a factory would otherwise script: Python `cryptography` building
//!    and signing the same certificates in one process, and one `openssl`
//!    process per device.
//! 3. The whole station flow (device keygen and proof of possession,
//!    certificate, chain, product key by ECDH, lock, 64 KiB install with
//!    decryption and digest, boot check) with `produce_in_memory`: devices
//!    kept in memory, `--threads` workers, each group of 16 devices issued
//!    in one group commit; one device at a time with the SBM's share of the
//!    time measured apart; and `produce` with device directories on disk.
//!
//! ```text
//! cargo run --release -p trustchain-programmer --example bench_production -- \
//!     --certs 10000 --rounds 5 --batch 100 --group 500 --devices 1000 \
//!     --timed 100 --disk-devices 200 --openssl 200 --threads 2
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_formats::{OemId, ProductId, Version};
use trustchain_guardian::issue::JobIssuer;
use trustchain_guardian::GuardianDir;
use trustchain_oem::crypto::{EcdsaKey, PublicKey};
use trustchain_oem::image::LoadOptions;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::master::{master_release, MasterRequest};
use trustchain_oem::oem::OemDir;
use trustchain_oem::pki::{self, CertSpec, DeviceCertIssuer};
use trustchain_oem::product::Product;
use trustchain_oem::template::Template;
use trustchain_oem::wrap::{wrap, WrapRequest};
use trustchain_programmer::client::{Error as ClientError, Programmer, Transport};
use trustchain_programmer::produce::{
    produce, produce_in_memory, MemoryRequest, Request, Stage, GROUP,
};
use trustchain_programmer::sim::SimLink;

fn arg(name: &str, default: u64) -> u64 {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// CPU time used so far by this process, all threads (user + system, from
/// `/proc/self/stat`, in clock ticks of 10 ms), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{lo:.0}–{hi:.0}")
}

/// Python `cryptography`: the same certificate profile (§14), built and
/// signed in one process; device keys made before the clock starts.
const PYTHON: &str = r#"
import datetime, os, sys, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID, ObjectIdentifier

n = int(sys.argv[1])
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Device CA"),
                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench")])
aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
devices = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(n)]
not_after = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
oem = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.32473.116.1"), bytes([2, 1, 1]))
prod = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.32473.116.2"), bytes([2, 1, 1]))
t = time.perf_counter()
for i, key in enumerate(devices):
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    serial = bytearray(os.urandom(16)); serial[0] = (serial[0] & 0x7f) | 1
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([
             x509.NameAttribute(NameOID.COMMON_NAME, "Widget %08d" % (i + 1)),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench"),
             x509.NameAttribute(NameOID.SERIAL_NUMBER, "%016x" % i)]))
         .issuer_name(ca_name)
         .public_key(key)
         .serial_number(int.from_bytes(serial, "big"))
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(not_after)
         .add_extension(aki, critical=False)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(oem, critical=False)
         .add_extension(prod, critical=False))
    b.sign(ca_key, hashes.SHA256())
print(n / (time.perf_counter() - t))
"#;

fn python_rate(dir: &Path, n: u64) -> Option<f64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let script = dir.join("issue.py");
    std::fs::write(&script, PYTHON).ok()?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(n.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("python: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// One `openssl x509` process per device (OpenSSL 3.0 has no `x509 -new`:
/// a placeholder request, its key replaced by the device's with
/// `-force_pubkey`, the subject set per device). Device keys and their PEM
/// files are made before the clock starts.
fn openssl_rate(dir: &Path, n: u64) -> Option<f64> {
    let run = |args: &[&str]| -> Option<()> {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        st.success().then_some(())
    };
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca.key",
    ])?;
    run(&[
        "req",
        "-new",
        "-x509",
        "-key",
        "ca.key",
        "-subj",
        "/CN=Bench Device CA/O=Bench",
        "-days",
        "3650",
        "-out",
        "ca.pem",
    ])?;
    run(&[
        "req", "-new", "-key", "ca.key", "-subj", "/CN=x", "-out", "any.csr",
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "[v3]\nauthorityKeyIdentifier = keyid:always\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\n\
         basicConstraints = critical, CA:FALSE\n1.3.6.1.4.1.32473.116.1 = DER:02:01:01\n\
         1.3.6.1.4.1.32473.116.2 = DER:02:01:01\n",
    )
    .ok()?;
    for i in 0..n {
        let (k, _) = EcdsaKey::generate().ok()?;
        let spki = [
            &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ][..],
            &k.public_key().0,
        ]
        .concat();
        let pem = trustchain_oem::pki::to_pem(&spki).replace("CERTIFICATE", "PUBLIC KEY");
        std::fs::write(dir.join(format!("dev{i}.pub")), pem).ok()?;
    }
    let t = Instant::now();
    for i in 0..n {
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).ok()?;
        serial[0] = (serial[0] & 0x7f) | 1;
        run(&[
            "x509",
            "-req",
            "-in",
            "any.csr",
            "-force_pubkey",
            &format!("dev{i}.pub"),
            "-subj",
            &format!("/CN=Widget {:08}/O=Bench/serialNumber={i:016x}", i + 1),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("0x{}", hex::encode(serial)),
            "-days",
            "2900000",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "v3",
            "-outform",
            "DER",
            "-out",
            &format!("dev{i}.der"),
        ])?;
    }
    Some(n as f64 / t.elapsed().as_secs_f64())
}

/// Frames to the SBM with the time spent on the device side counted.
struct Timed<'a> {
    link: SimLink<'a>,
    device: Duration,
}

impl Transport for Timed<'_> {
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>, ClientError> {
        let t = Instant::now();
        let r = self.link.exchange(request);
        self.device += t.elapsed();
        r
    }
}

/// The flow of `produce` for one in-memory device, one step after the
/// other on this thread, with the SBM's share of the time measured apart:
/// (total, device side, the Guardian's issuance with its commit).
fn one_device_timed(
    issuer: &JobIssuer<'_>,
    store: &mut trustchain_guardian::store::Store,
    mastering: &PublicKey,
    n: u64,
) -> (Duration, Duration, Duration) {
    let t = Instant::now();
    let mut uid = [0u8; 12];
    aws_lc_rs::rand::fill(&mut uid).unwrap();
    let mut dev = SimDevice::in_memory(&uid, 1, Geometry::SMALL_PAGES).unwrap();
    let mut prog = Programmer::new(Timed {
        link: SimLink::new(&mut dev).unwrap(),
        device: Duration::ZERO,
    });
    let info = prog.info().unwrap();
    assert_eq!(info.lifecycle, 0);
    let keys = prog.generate_keys(&info.uid).unwrap();
    let ti = Instant::now();
    let (_, cert) = issuer
        .issue(
            store,
            &info.uid,
            info.device_type,
            &PublicKey(keys.identity),
            now(),
        )
        .unwrap_or_else(|e| panic!("device {n}: {e}"));
    let issuance = ti.elapsed();
    let [issuing, device_ca] = issuer.chain();
    prog.store_certs(&[cert, issuing, device_ca], &issuer.job.root_cert)
        .unwrap();
    let ka = PublicKey::from_sec1(&keys.agreement).unwrap();
    let (eph, wrapped) = issuer.wrapped_product_key(&ka).unwrap();
    prog.install_oem_keys(
        issuer.job.oem_id,
        issuer.job.product_id,
        &mastering.0,
        &eph,
        &wrapped,
    )
    .unwrap();
    prog.lock().unwrap();
    prog.send_release(
        &issuer.job.release_upk,
        &issuer.job.release_enc,
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let tb = Instant::now();
    assert!(matches!(
        prog.transport_mut().link.boot(),
        trustchain_sbm::BootOutcome::Run(_)
    ));
    let device = prog.transport_mut().device + tb.elapsed();
    (t.elapsed(), device, issuance)
}

fn main() {
    let certs = arg("--certs", 10000);
    let rounds = arg("--rounds", 5).max(1);
    let batch = arg("--batch", 100).max(1) as usize;
    let group = arg("--group", 500).max(1) as usize;
    let devices = arg("--devices", 1000);
    let disk_devices = arg("--disk-devices", 200);
    let openssl_n = arg("--openssl", 200);
    let threads = arg("--threads", 2) as usize;
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
            &mut ks,
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
    let single = certs.min(1000);
    let single_job = job(single, "single.tcpkg");
    let batch_job = job(certs * rounds, "batch.tcpkg");
    let big_job = job(certs * rounds, "big.tcpkg");
    let pipe_job = job(certs * rounds, "pipe.tcpkg");
    let flow_job = job(devices * rounds, "flow.tcpkg");
    let disk_job = job(disk_devices.max(1), "disk.tcpkg");
    let timed = arg("--timed", 100);
    let timed_job = job(timed.max(1), "timed.tcpkg");

    // 1. Raw signing and issuance, interleaved rounds on this thread.
    let (key, _) = EcdsaKey::generate().unwrap();
    let mut store = g.store().unwrap();
    let issuer = JobIssuer::open(&store, &gks, batch_job).unwrap();
    let device_keys: Vec<PublicKey> = (0..certs)
        .map(|_| EcdsaKey::generate().unwrap().0.public_key().clone())
        .collect();
    // A message the size of a device TBSCertificate.
    let msg = [7u8; 420];
    // The certificate alone (template, DER, signature), no database: a CA
    // of the same shape as a job's issuing CA.
    let oem_id = OemId::new(1).unwrap();
    let (ca_key, _) = EcdsaKey::generate().unwrap();
    let mut ca_spec = CertSpec::new("Bench Device CA".into(), "Bench".into(), oem_id, 15);
    ca_spec.ca_path_len = Some(1);
    let ca = pki::self_signed(&ca_spec, &ca_key).unwrap();
    let certs_only = DeviceCertIssuer::new(
        &Template::default(),
        &ca.der,
        ca_key.public_key(),
        oem_id,
        pid,
    )
    .unwrap();
    let base_vars: BTreeMap<&str, String> = [
        ("oem_id", "1".to_string()),
        ("product_id", "1".to_string()),
        ("oem_name", "Bench".to_string()),
        ("product_name", "Widget".to_string()),
    ]
    .into_iter()
    .collect();
    let (mut raws, mut issued, mut ratios, mut built) = (vec![], vec![], vec![], vec![]);
    let (mut bigs, mut big_ratios, mut pipes, mut pipe_ratios) = (vec![], vec![], vec![], vec![]);
    let big_issuer = JobIssuer::open(&store, &gks, big_job).unwrap();
    let mut pipe_cpu = 0.0;
    let pipe_issuer = JobIssuer::open(&store, &gks, pipe_job).unwrap();
    // Each round walks the devices in chunks of `batch`; for every chunk
    // the three are timed back to back (raw signatures, certificates alone,
    // Guardian issuance), so that they share the machine's load.
    for r in 0..rounds {
        let uids: Vec<[u8; 16]> = (0..certs)
            .map(|i| ((r << 32) as u128 | i as u128).to_be_bytes())
            .collect();
        let (mut t_raw, mut t_built, mut t_issue) = (0f64, 0f64, 0f64);
        for (c, (chunk_k, chunk_u)) in device_keys
            .chunks(batch)
            .zip(uids.chunks(batch))
            .enumerate()
        {
            let t = Instant::now();
            for _ in chunk_k {
                key.sign(&msg).unwrap();
            }
            t_raw += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for (i, k) in chunk_k.iter().enumerate() {
                let mut vars = base_vars.clone();
                vars.insert("serial", format!("{:08}", c * batch + i + 1));
                vars.insert("uid", format!("{i:016x}"));
                certs_only.issue(&vars, k, &ca_key).unwrap();
            }
            t_built += t.elapsed().as_secs_f64();
            let reqs: Vec<(&[u8], u32, &PublicKey)> = chunk_k
                .iter()
                .zip(chunk_u)
                .map(|(k, u)| (&u[..], 1, k))
                .collect();
            let t = Instant::now();
            for c in issuer.issue_batch(&mut store, &reqs, now()).unwrap() {
                c.unwrap();
            }
            t_issue += t.elapsed().as_secs_f64();
        }
        let reqs: Vec<(&[u8], u32, &PublicKey)> = device_keys
            .iter()
            .zip(&uids)
            .map(|(k, u)| (&u[..], 1, k))
            .collect();
        // The same devices in groups of `group`, on this thread alone...
        let t = Instant::now();
        for chunk in reqs.chunks(group) {
            for c in big_issuer.issue_batch(&mut store, chunk, now()).unwrap() {
                c.unwrap();
            }
        }
        let t_big = t.elapsed().as_secs_f64();
        // ... and pipelined: a signing thread one group ahead of the commits.
        let t = Instant::now();
        let cpu = cpu_seconds();
        let mut delivered = 0;
        pipe_issuer
            .issue_pipelined(&mut store, &reqs, group, now(), &mut |_, out| {
                for c in out {
                    c.unwrap();
                    delivered += 1;
                }
            })
            .unwrap();
        assert_eq!(delivered, certs);
        let t_pipe = t.elapsed().as_secs_f64();
        pipe_cpu += cpu_seconds() - cpu;
        let n = certs as f64;
        bigs.push(n / t_big);
        big_ratios.push(t_raw / t_big);
        pipes.push(n / t_pipe);
        pipe_ratios.push(t_raw / t_pipe);
        raws.push(n / t_raw);
        built.push(n / t_built);
        issued.push(n / t_issue);
        ratios.push(t_raw / t_issue);
    }
    // One transaction (one fsync) per certificate.
    let issuer1 = JobIssuer::open(&store, &gks, single_job).unwrap();
    let t = Instant::now();
    for (i, k) in device_keys.iter().take(single as usize).enumerate() {
        issuer1
            .issue(&mut store, &(i as u64).to_be_bytes(), 1, k, now())
            .unwrap();
    }
    let one_by_one = single as f64 / t.elapsed().as_secs_f64();

    // 2. What a factory would otherwise script.
    let py_dir = tempfile::tempdir().unwrap();
    let py: Vec<f64> = (0..3)
        .filter_map(|_| python_rate(py_dir.path(), certs.min(2000)))
        .collect();
    let osl_dir = tempfile::tempdir().unwrap();
    let osl = (openssl_n > 0)
        .then(|| openssl_rate(osl_dir.path(), openssl_n))
        .flatten();

    // 3. The whole flow: devices in memory, then on disk.
    let (mut flows, mut flow_cpu) = (vec![], 0.0);
    for _ in 0..rounds {
        let t = Instant::now();
        let cpu = cpu_seconds();
        let s = produce_in_memory(
            &g,
            &gks,
            &MemoryRequest {
                job: flow_job,
                count: devices,
                threads,
                now: now(),
            },
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(s.programmed, devices, "{:?}", s.failed.first());
        flows.push(s.programmed as f64 / t.elapsed().as_secs_f64());
        flow_cpu += cpu_seconds() - cpu;
    }
    // Where one device's time goes: the SBM's side of every exchange (and
    // the boot check) against the whole, one device after the other.
    let (mut whole, mut device, mut issuance) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    {
        let issuer = JobIssuer::open(&store, &gks, timed_job).unwrap();
        let mastering = issuer.mastering_key().unwrap();
        for n in 0..timed {
            let (w, d, i) = one_device_timed(&issuer, &mut store, &mastering, n);
            whole += w;
            device += d;
            issuance += i;
        }
    }
    let disk = (disk_devices > 0).then(|| {
        let t = Instant::now();
        let s = produce(
            &g,
            &gks,
            &Request {
                job: disk_job,
                devices: tmp.path().join("devs"),
                count: disk_devices,
                threads,
                stage: Stage::All,
                now: now(),
                transcript: None,
            },
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(s.programmed, disk_devices, "{:?}", s.failed.first());
        s.programmed as f64 / t.elapsed().as_secs_f64()
    });

    let raw = median(raws.clone());
    summary("raw_per_s", raw);
    summary("pipelined_per_s", median(pipes.clone()));
    summary("pipelined_ratio", median(pipe_ratios.clone()));
    if !py.is_empty() {
        summary("python_per_s", median(py.clone()));
    }
    if let Some(r) = osl {
        summary("openssl_per_s", r);
    }
    summary("flow_memory_per_s", median(flows.clone()));
    if let Some(d) = disk {
        summary("flow_disk_per_s", d);
    }
    if timed > 0 {
        summary(
            "sbm_ceiling_per_s",
            threads as f64 * timed as f64 / device.as_secs_f64(),
        );
    }
    println!("rounds: {rounds}; medians (lowest–highest round)");
    println!();
    println!("| measurement | rate | ratio |");
    println!("| --- | --- | --- |");
    println!(
        "| raw ECDSA P-256 signing (aws-lc-rs, one thread), {certs} signatures per round | {raw:.0}/s ({}) | 1.00 |",
        spread(&raws)
    );
    println!(
        "| device certificate built from the template and signed (`DeviceCertIssuer`, no database), {certs} per round | {:.0}/s ({}) | {:.2} of raw |",
        median(built.clone()),
        spread(&built),
        median(built.clone()) / raw
    );
    println!(
        "| issuance in the Guardian, group commit of {batch} per transaction (SQLite WAL, synchronous=FULL), one thread, {certs} certificates per round | {:.0}/s ({}) | {:.2} of raw (per-round ratios {:.2}–{:.2}) |",
        median(issued.clone()),
        spread(&issued),
        median(ratios.clone()),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    let lo_hi = |v: &[f64]| {
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    let (lo, hi) = lo_hi(&big_ratios);
    println!(
        "| issuance in the Guardian, group commit of {group} per transaction, one thread, {certs} certificates per round | {:.0}/s ({}) | {:.2} of raw (per-round ratios {lo:.2}–{hi:.2}) |",
        median(bigs.clone()),
        spread(&bigs),
        median(big_ratios.clone()),
    );
    let (lo, hi) = lo_hi(&pipe_ratios);
    println!(
        "| **issuance in the Guardian, group commit of {group}, pipelined** (`JobIssuer::issue_pipelined`: a signing thread one group ahead of the committing thread), {certs} certificates per round | **{:.0}/s** ({}) | **{:.2} of raw** (per-round ratios {lo:.2}–{hi:.2}) |",
        median(pipes.clone()),
        spread(&pipes),
        median(pipe_ratios.clone()),
    );
    println!(
        "| CPU time of the pipelined issuance, all threads, per certificate (a raw signature: {:.1} µs) | {:.1} µs | - |",
        1e6 / raw,
        pipe_cpu * 1e6 / (certs * rounds) as f64
    );
    println!(
        "| issuance in the Guardian, one transaction per certificate, {single} certificates | {one_by_one:.0}/s | {:.2} of raw |",
        one_by_one / raw
    );
    match py.len() {
        0 => println!("| Python `cryptography`, same profile, one process | skipped | - |"),
        _ => println!(
            "| Python `cryptography` {}, same profile, one process, no database, {} certificates, 3 runs | {:.0}/s | {:.2} of raw |",
            python_version(),
            certs.min(2000),
            median(py.clone()),
            median(py.clone()) / raw
        ),
    }
    match osl {
        Some(r) => println!(
            "| one `openssl x509` process per certificate, {openssl_n} certificates | {r:.1}/s | {:.4} of raw |",
            r / raw
        ),
        None => println!("| one `openssl x509` process per certificate | skipped | - |"),
    }
    println!(
        "| whole flow, devices in memory, {devices} devices per round, {threads} threads, groups of {GROUP} | {:.0} devices/s ({}) | - |",
        median(flows.clone()),
        spread(&flows)
    );
    let per_device = flow_cpu / (devices * rounds) as f64;
    println!(
        "| CPU time of the in-memory flow, all threads, per device | {:.2} ms | {threads} free cores would do {:.0} devices/s |",
        per_device * 1e3,
        threads as f64 / per_device
    );
    if timed > 0 {
        let per = |d: Duration| d.as_secs_f64() * 1e3 / timed as f64;
        println!(
            "| one device after the other on one thread, {timed} devices: time per device = SBM side (its cryptography, flash, frames) + Guardian issuance (one transaction each here) + the rest of the station | {:.2} ms = {:.2} + {:.2} + {:.2} ms | ceiling {:.0} devices/s on {threads} cores from the SBM side alone |",
            per(whole),
            per(device),
            per(issuance),
            per(whole) - per(device) - per(issuance),
            threads as f64 * 1e3 / per(device)
        );
    }
    if let Some(d) = disk {
        println!(
            "| whole flow, device directories on disk, {disk_devices} devices, {threads} threads | {d:.0} devices/s | - |"
        );
    }
}

fn python_version() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    std::process::Command::new(python)
        .args(["-c", "import cryptography; print(cryptography.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
