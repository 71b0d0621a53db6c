//! Fault tests of production (run by CI): the production count is consumed
//! by a signed certificate and can never be exceeded, not by several
//! `trustchain produce` processes on one job at once, not by threads, not by
//! the producing process being killed (SIGKILL) at any moment; a certificate
//! is durably recorded before it leaves the Guardian.
//!
//! - `concurrent_producers_never_exceed_the_count`: 4 processes of 2 threads
//!   each ask for 10 devices of a job of 7; exactly 7 are certified.
//! - `kill_campaign_keeps_the_count_the_chain_and_every_certificate`: the
//!   producing process is killed at deterministic pseudo-random moments, at
//!   least 60 times; after every kill the database is checked directly
//!   (counts, the job's hash-chained log, every device record logged, every
//!   certificate a device holds recorded, SQLite's integrity check), then
//!   one uninterrupted run still works and the signed report reconciles.
//!
//! `cargo test -p trustchain --test faults -- --nocapture` prints a summary.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags};
use trustchain_device_sim::SimDevice;
use trustchain_formats::cbor::Reader;
use trustchain_oem::crypto::sha256;
use trustchain_sbm::hal::Field;

use support::*;

/// The two tests time processes against each other: run them one at a time
/// (on a 2-core machine, the concurrent one would skew the kill timings).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A child process that is killed and reaped if the test panics.
struct Proc(Child);

impl Proc {
    fn spawn(mut c: Command) -> Self {
        Proc(c.spawn().expect("spawn trustchain"))
    }

    /// Waits at most `limit` (a hung producer is a failure, not a hung CI).
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().expect("wait") {
                return s;
            }
            assert!(
                t.elapsed() < limit,
                "trustchain produce still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An OEM with a product and a release, and a Guardian that trusts it and
/// has imported one package of `count` devices (job 1), all through the CLI.
struct Center {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    oem: PathBuf,
    guardian: PathBuf,
}

impl Center {
    fn new(count: u64) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let oem = root.join("oem");
        let guardian = root.join("guardian");
        acme_with_product_7(&oem, "Thermostat");
        let img = root.join("fw.bin");
        std::fs::write(
            &img,
            (0..3000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        let rel = root.join("rel");
        ok(&master_7(&oem, "1.0.0", &img, &rel));
        ok(&tc(&[
            &"guardian",
            &"init",
            &guardian,
            &"--name",
            &"Center",
        ]));
        ok(&tc(&[
            &"guardian",
            &"trust",
            &guardian,
            &oem.join("root.pem"),
        ]));
        let pkg = root.join("job.tcpkg");
        ok(&tc(&[
            &"wrap",
            &oem,
            &"--product",
            &"7",
            &"--guardian",
            &guardian.join("identity.pem"),
            &"--count",
            &count.to_string(),
            &"--release",
            &rel,
            &"--out",
            &pkg,
            &"--serial-start",
            &"1000",
        ]));
        let imp = json(&tc(&[&"guardian", &"import", &guardian, &pkg, &"--json"]));
        assert_eq!(imp["job"], 1);
        Center {
            _tmp: tmp,
            root,
            oem,
            guardian,
        }
    }

    fn db(&self) -> PathBuf {
        self.guardian.join("guardian.db")
    }

    /// `trustchain produce GUARDIAN --job 1 --devices DIR --count N --threads 2 --stage provision --json`.
    fn produce(&self, devices: &Path, count: u64) -> Command {
        trustchain(&[
            &"produce",
            &self.guardian,
            &"--job",
            &"1",
            &"--devices",
            &devices,
            &"--count",
            &count.to_string(),
            &"--threads",
            &"2",
            &"--stage",
            &"provision",
            &"--json",
        ])
    }

    /// That producer, running, its output discarded but for errors (in `DIR.err`).
    fn quiet(&self, devices: &Path, count: u64) -> Proc {
        let mut cmd = self.produce(devices, count);
        cmd.stdout(Stdio::null())
            .stderr(File::create(devices.with_extension("err")).unwrap());
        Proc::spawn(cmd)
    }

    /// Job 1 as `trustchain guardian jobs --json` lists it.
    fn job(&self) -> serde_json::Value {
        let jobs = json(&tc(&[&"guardian", &"jobs", &self.guardian, &"--json"]));
        assert_eq!(jobs[0]["id"], 1);
        jobs[0].clone()
    }

    /// The Guardian's signed report of job 1, reconciled by the OEM: no
    /// anomaly allowed. Returns the reconciliation.
    fn reconcile(&self, name: &str) -> serde_json::Value {
        let report = self.root.join(name);
        let r = json(&tc(&[
            &"report",
            &self.guardian,
            &"--job",
            &"1",
            &"--out",
            &report,
            &"--json",
        ]));
        let out = tc(&[&"oem", &"reconcile", &self.oem, &report, &"--json"]);
        let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "reconcile printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(rec["anomalies"], serde_json::json!([]), "{rec:#}");
        assert!(out.status.success(), "{rec:#}");
        assert_eq!(rec["devices"], r["devices"]);
        rec
    }
}

/// What the database says about a job, once checked.
#[derive(Debug, Clone, Default)]
struct Db {
    count: u64,
    issued: u64,
    failed: u64,
    log_entries: u64,
    /// Every device record: UID -> (serial, certificate SHA-256).
    devices: BTreeMap<Vec<u8>, (u64, [u8; 32])>,
}

/// One entry of a job's log: `[n, action, serial / null, cert-sha256 / null, time]`
/// (`trustchain_formats::report::encode_log_entry`), decoded strictly.
fn log_entry(raw: &[u8]) -> (u64, String, Option<u64>, Option<[u8; 32]>) {
    type Decoded = (u64, String, Option<u64>, Option<[u8; 32]>);
    let decode = || -> Result<Decoded, trustchain_formats::FormatError> {
        let mut r = Reader::new(raw);
        r.array_of(5, "a log entry")?;
        let n = r.uint("n")?;
        let action = r.tstr("action", 16)?.to_string();
        let serial = match r.null_if_next()? {
            true => None,
            false => Some(r.uint("serial")?),
        };
        let cert = match r.null_if_next()? {
            true => None,
            false => Some(*r.bstr_exact::<32>("cert")?),
        };
        r.uint("time")?;
        r.finish()?;
        Ok((n, action, serial, cert))
    };
    decode().unwrap_or_else(|e| panic!("log entry {}: {e:?}", hex::encode(raw)))
}

/// Checks job `job` directly in the Guardian's database (no producer may be
/// running): SQLite's integrity check; `issued + failed` equals the device
/// records and never exceeds the count; serials are exactly the first ones
/// of the job's range; each record's certificate hashes to its recorded
/// SHA-256; the log is the hash chain `H_0 = SHA-256(package ID)`,
/// `H_n = SHA-256(H_{n-1} || entry_n)`, numbered from 1, starting with the
/// import, and holds one `issue` entry per device record (same serial and
/// certificate) and nothing else certified.
fn check_db(path: &Path, job: i64) -> Db {
    assert!(path.is_file(), "{}", path.display());
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(integrity, ["ok"], "SQLite integrity check");
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0, "foreign key violations");

    let (package_id, count, issued, failed, serial_start): (Vec<u8>, i64, i64, i64, i64) = conn
        .query_row(
            "SELECT package_id, count, issued, failed, serial_start FROM jobs WHERE id = ?1",
            params![job],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    let (count, issued, failed) = (count as u64, issued as u64, failed as u64);

    // The device records.
    type Row = (i64, Vec<u8>, Vec<u8>, Vec<u8>, String);
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT serial, uid, cert_sha256, cert, status FROM devices WHERE job = ?1 ORDER BY serial",
        )
        .unwrap()
        .query_map(params![job], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(
        issued + failed <= count,
        "count exceeded: {issued} issued + {failed} failed > {count}"
    );
    assert_eq!(
        issued + failed,
        rows.len() as u64,
        "jobs.issued + jobs.failed must equal the device records"
    );
    let n_failed = rows.iter().filter(|r| r.4 == "failed").count() as u64;
    let n_issued = rows.iter().filter(|r| r.4 == "issued").count() as u64;
    assert_eq!((n_issued, n_failed), (issued, failed), "status counts");
    let mut devices = BTreeMap::new();
    let mut by_serial = BTreeMap::new();
    for (i, (serial, uid, fp, cert, status)) in rows.iter().enumerate() {
        assert_eq!(
            *serial,
            serial_start + i as i64,
            "serials are consumed in order, without gaps"
        );
        let fp: [u8; 32] = fp[..].try_into().expect("32-byte certificate SHA-256");
        assert_eq!(sha256(cert), fp, "serial {serial}: certificate SHA-256");
        let serial = *serial as u64;
        assert!(
            devices.insert(uid.clone(), (serial, fp)).is_none(),
            "UID {} certified twice",
            hex::encode(uid)
        );
        by_serial.insert(serial, (fp, status.clone()));
    }

    // The log: an intact hash chain from the package ID.
    let log: Vec<(i64, Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT n, entry, hash FROM log WHERE job = ?1 ORDER BY n")
        .unwrap()
        .query_map(params![job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut h = sha256(&package_id);
    let mut logged_issue: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    let mut logged_fail = BTreeSet::new();
    for (i, (n, raw, hash)) in log.iter().enumerate() {
        let (en, action, serial, cert) = log_entry(raw);
        assert_eq!(*n, i as i64 + 1, "log rows numbered from 1 without gaps");
        assert_eq!(en, *n as u64, "log entry {n} says it is entry {en}");
        let mut buf = h.to_vec();
        buf.extend_from_slice(raw);
        h = sha256(&buf);
        assert_eq!(hash[..], h[..], "log entry {n}: the hash chain breaks");
        match (action.as_str(), serial, cert) {
            ("import", None, None) => assert_eq!(*n, 1, "import is the first entry"),
            ("issue", Some(s), Some(c)) => {
                assert!(
                    logged_issue.insert(s, c).is_none(),
                    "serial {s} issued twice in the log"
                );
            }
            ("fail", Some(s), None) => {
                assert!(
                    logged_issue.contains_key(&s),
                    "serial {s} failed before issued"
                );
                assert!(logged_fail.insert(s), "serial {s} failed twice");
            }
            other => panic!("log entry {n}: unexpected {other:?}"),
        }
    }
    assert!(!log.is_empty(), "the log starts with the import");
    for (serial, (fp, status)) in &by_serial {
        assert_eq!(
            logged_issue.get(serial),
            Some(fp),
            "serial {serial}: device record without its issue entry in the log"
        );
        assert_eq!(
            status == "failed",
            logged_fail.contains(serial),
            "serial {serial}: status {status} disagrees with the log"
        );
    }
    assert_eq!(
        logged_issue.len(),
        by_serial.len(),
        "certificates in the log without a device record"
    );
    Db {
        count,
        issued,
        failed,
        log_entries: log.len() as u64,
        devices,
    }
}

/// The simulated devices under `dir`, from what they hold (not from what
/// the producer said): every device that holds a certificate must have it
/// recorded in the database under its UID; a locked device must hold one.
/// Returns (devices, holding a certificate, locked).
fn check_devices(dir: &Path, db: &Db) -> (u64, u64, u64) {
    let (mut all, mut holding, mut locked) = (0, 0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0, 0); // killed before it made the directory
    };
    for e in entries {
        let p = e.unwrap().path();
        if !p.join("device.toml").is_file() {
            continue; // killed while creating it
        }
        let Ok(mut dev) = SimDevice::open(&p) else {
            continue; // torn by the kill while being created
        };
        all += 1;
        let uid = dev.uid().to_vec();
        let is_locked = dev.debug_port().is_locked();
        let Some(chain) = dev.protected().peek(Field::CertChain) else {
            assert!(!is_locked, "{}: locked without a certificate", p.display());
            continue;
        };
        let mut r = Reader::new(chain);
        assert!(r.array("chain").unwrap() >= 1, "{}", p.display());
        let leaf = r.bstr("leaf", 2048).unwrap();
        holding += 1;
        locked += is_locked as u64;
        let (serial, fp) = db.devices.get(&uid).unwrap_or_else(|| {
            panic!(
                "{}: device UID {} holds a certificate the database does not record",
                p.display(),
                hex::encode(&uid)
            )
        });
        assert_eq!(
            sha256(leaf),
            *fp,
            "{}: holds a certificate other than the recorded serial {serial}",
            p.display()
        );
    }
    (all, holding, locked)
}

/// Waits until the producer `p` has created the last of the `n` devices it
/// works on in `dir` (it is past unlocking, has opened the job and made its
/// devices, and now provisions them); false if it exited first.
fn started(p: &mut Proc, dir: &Path, n: u64) -> bool {
    let last = dir.join(format!("dev-{n:05}"));
    let t = Instant::now();
    while !last.exists() {
        if p.0.try_wait().unwrap().is_some() || t.elapsed() > LIMIT {
            return last.exists();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    true
}

/// What a producer writing into `dir` said on stderr.
fn errors(dir: &Path) -> String {
    std::fs::read_to_string(dir.with_extension("err")).unwrap_or_default()
}

/// A deterministic pseudo-random source (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn concurrent_producers_never_exceed_the_count() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Center::new(7);
    let lines: Vec<PathBuf> = (1..=4).map(|k| c.root.join(format!("line-{k}"))).collect();
    let mut procs: Vec<Proc> = lines
        .iter()
        .map(|dir| {
            let mut cmd = c.produce(dir, 10);
            cmd.stdout(File::create(dir.with_extension("out")).unwrap())
                .stderr(File::create(dir.with_extension("err")).unwrap());
            Proc::spawn(cmd)
        })
        .collect();
    let statuses: Vec<ExitStatus> = procs.iter_mut().map(|p| p.wait(LIMIT)).collect();
    // Each process asked for 10 of 7: none can have everything; each says
    // what it made, or that nothing was left.
    let (mut provisioned, mut failed_after_issue) = (0, 0);
    for (dir, st) in lines.iter().zip(&statuses) {
        let out = std::fs::read_to_string(dir.with_extension("out")).unwrap();
        let err = std::fs::read_to_string(dir.with_extension("err")).unwrap();
        assert_eq!(
            st.code(),
            Some(1),
            "{}: {st:?}\n{out}\n{err}",
            dir.display()
        );
        assert!(!err.contains("panicked"), "{err}");
        if out.trim().is_empty() {
            assert!(err.contains("no devices left"), "{}: {err}", dir.display());
            continue;
        }
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        provisioned += s["provisioned"].as_u64().unwrap();
        for f in s["failed"].as_array().unwrap() {
            // A device that lost the race for the count got no certificate.
            if f["serial"].is_null() {
                assert!(
                    f["reason"].as_str().unwrap().contains("no devices left"),
                    "{f}"
                );
            } else {
                failed_after_issue += 1;
            }
        }
    }
    let job = c.job();
    assert_eq!(
        job["issued"].as_u64().unwrap() + job["failed"].as_u64().unwrap(),
        7,
        "{job}"
    );
    assert_eq!(job["remaining"], 0, "{job}");
    assert_eq!(
        (provisioned, failed_after_issue),
        (
            job["issued"].as_u64().unwrap(),
            job["failed"].as_u64().unwrap()
        ),
        "what the producers report is what the Guardian counted"
    );
    let db = check_db(&c.db(), 1);
    assert_eq!(db.devices.len(), 7);
    assert_eq!(db.log_entries, 1 + 7 + db.failed);
    let (mut holding, mut locked) = (0, 0);
    for dir in &lines {
        let (_, h, l) = check_devices(dir, &db);
        holding += h;
        locked += l;
    }
    assert_eq!((holding, locked), (7, db.issued), "devices on the lines");
    // Nothing left: one more producer is refused up front.
    let out = c.produce(&c.root.join("line-5"), 1).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no devices left"));
    let rec = c.reconcile("report.cbor");
    assert_eq!(rec["devices"], 7, "{rec:#}");
    assert_eq!(rec["count"], 7, "{rec:#}");
    println!(
        "concurrent: 4 producers x 10 devices on a job of 7: {} issued, {} failed, {} device records; reconciled",
        db.issued,
        db.failed,
        db.devices.len()
    );
}

#[test]
fn kill_campaign_keeps_the_count_the_chain_and_every_certificate() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    /// Kills that must land on a live producer.
    const KILLS: u64 = 60;
    /// Rounds at most (a round whose producer finished first is no kill).
    const MAX_ROUNDS: u64 = 120;
    /// Devices each producer asks for.
    const PER_RUN: u64 = 20;
    /// Enough for every round and the final run: the job is never exhausted
    /// here (the concurrent test covers that boundary).
    const COUNT: u64 = PER_RUN * (MAX_ROUNDS + 2);
    let c = Center::new(COUNT);
    let db_path = c.db();
    let mut prev = check_db(&db_path, 1);
    assert_eq!(
        (prev.count, prev.devices.len(), prev.log_entries),
        (COUNT, 0, 1)
    );

    // How long an uninterrupted run takes, and when it starts provisioning
    // (once the keystore is unlocked, the job opened and the devices made).
    let t = Instant::now();
    let round0 = c.root.join("round-00");
    let mut p = c.quiet(&round0, PER_RUN);
    assert!(started(&mut p, &round0, PER_RUN), "{}", errors(&round0));
    let startup = t.elapsed();
    let st = p.wait(LIMIT);
    let full = t.elapsed();
    let mut window = full - startup;
    assert!(st.success(), "{st:?}: {}", errors(&round0));
    prev = check_db(&db_path, 1);
    assert_eq!(prev.devices.len() as u64, PER_RUN);
    assert_eq!(check_devices(&round0, &prev), (PER_RUN, PER_RUN, PER_RUN));

    let mut rng = Lcg(0x7472_7573_7463_6861);
    let (mut rounds, mut kills, mut completed) = (0u64, 0u64, 0u64);
    // Kills at any moment of a run (unlock and start-up included), and
    // kills while it produces.
    let (mut anywhere, mut producing) = (0u64, 0u64);
    // Kills with certificates issued in the round, and those that left
    // issued certificates on devices not (yet) locked or never delivered.
    let (mut mid_production, mut in_flight, mut undelivered) = (0u64, 0u64, 0u64);
    while kills < KILLS {
        rounds += 1;
        assert!(
            rounds <= MAX_ROUNDS,
            "only {kills} of {rounds} kills landed on a running producer"
        );
        let dir = c.root.join(format!("round-{rounds:02}"));
        // One kill in four at any moment of the run, the others while it
        // produces: the moments where a certificate is in flight.
        let at_any_moment = rng.below(4) == 0;
        let mut p = c.quiet(&dir, PER_RUN);
        let delay = if at_any_moment {
            anywhere += 1;
            rng.below(full.as_micros() as u64 + 1)
        } else {
            producing += 1;
            let _ = started(&mut p, &dir, PER_RUN);
            rng.below(window.as_micros() as u64 + 1)
        };
        std::thread::sleep(Duration::from_micros(delay));
        let _ = p.0.kill(); // SIGKILL (a no-op if it already exited)
        let st = p.wait(LIMIT);
        drop(p);
        // Killed while running, or finished before the kill.
        let killed = st.signal() == Some(9);
        // The restart: the database as the next producer finds it.
        let now = check_db(&db_path, 1);
        for (uid, rec) in &prev.devices {
            assert_eq!(
                now.devices.get(uid),
                Some(rec),
                "round {rounds}: an earlier certificate record changed or vanished"
            );
        }
        let issued_here = (now.devices.len() - prev.devices.len()) as u64;
        assert!(
            issued_here <= PER_RUN,
            "round {rounds}: {issued_here} issued"
        );
        let (_, holding, locked) = check_devices(&dir, &now);
        assert!(
            locked <= holding && holding <= issued_here,
            "round {rounds}: {locked} locked, {holding} holding a certificate, {issued_here} issued"
        );
        if killed {
            kills += 1;
            mid_production += (issued_here > 0) as u64;
            in_flight += (locked < issued_here) as u64;
            undelivered += issued_here - holding;
        } else {
            // It finished before the kill: then it did everything.
            assert!(st.success(), "round {rounds}: {st:?}: {}", errors(&dir));
            assert_eq!((issued_here, locked), (PER_RUN, PER_RUN), "round {rounds}");
            completed += 1;
            // The machine got faster than when it was measured: aim earlier.
            window = window * 3 / 4;
        }
        prev = now;
    }
    assert!(
        mid_production > 0 && prev.devices.len() as u64 > PER_RUN,
        "no kill landed while certificates were being issued"
    );
    assert!(
        in_flight > 0,
        "no kill landed between a certificate's issue and its device's lock"
    );

    // After all that, an uninterrupted run works and the report reconciles.
    let out = c.produce(&c.root.join("final"), PER_RUN).output().unwrap();
    let s: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(s["provisioned"], PER_RUN, "{s}");
    let end = check_db(&db_path, 1);
    assert_eq!(end.devices.len() - prev.devices.len(), PER_RUN as usize);
    assert_eq!(
        check_devices(&c.root.join("final"), &end),
        (PER_RUN, PER_RUN, PER_RUN)
    );
    let job = c.job();
    assert_eq!(
        (
            job["issued"].as_u64(),
            job["failed"].as_u64(),
            job["remaining"].as_u64()
        ),
        (
            Some(end.issued),
            Some(end.failed),
            Some(COUNT - end.devices.len() as u64)
        ),
        "{job}"
    );
    let rec = c.reconcile("report.cbor");
    assert_eq!(rec["devices"], end.devices.len(), "{rec:#}");
    assert_eq!(rec["issued"], end.issued, "{rec:#}");
    println!(
        "kill campaign: {kills} kills (SIGKILL) in {rounds} rounds ({anywhere} at any moment, \
         {producing} while producing; {completed} finished first; \
         {mid_production} mid-production, {in_flight} with certificates issued to unlocked devices, \
         {undelivered} certificates issued to devices the kill left blank); run {full:?} ({startup:?} to start); \
         final: count {COUNT}, {} issued, {} failed, {} device records, {} log entries; reconciled",
        end.issued,
        end.failed,
        end.devices.len(),
        end.log_entries
    );
}
