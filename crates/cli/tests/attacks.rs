//! Attack fixtures: one directory per threat under `tests/data/<attack>/`
//! (docs/threat-model.md maps each one to its threat), each run through the
//! real `trustchain` binary against a copy of `tests/data/world/`.
//!
//! Every fixture declares in its `attack.toml` the command, the exit code,
//! what its single `error:` line must say, and the assets that must not
//! change. The runner checks all of it, and more: after the refusal the whole
//! world is compared with what it was (every file byte for byte, every
//! directory, and each Guardian database table by table, row by row), then an
//! optional follow-up command shows the victim still works (the device still
//! boots its release, the Guardian's audit log still verifies). A fixture made
//! by flipping one byte of an honest artifact also names that byte: the runner
//! flips it back in a fresh copy and the same command must then succeed, so
//! the refusal is caused by that byte and nothing else.
//!
//! `TRUSTCHAIN_BLESS=1 cargo test -p trustchain --test attacks` regenerates
//! `tests/data` from scratch through the CLI (tests/data/README.md). The keys
//! in it are test keys, sealed under [`PASS`]; nothing there is a real secret.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::{Deserialize, Serialize};

/// The passphrase of every keystore in `tests/data` (test keys only).
const PASS: &str = "trustchain attack fixtures: test passphrase, not a secret";

/// Every fixture, by name. A fixture missing from `tests/data`, or one there
/// that is not listed, fails the run.
const ATTACKS: &[&str] = &[
    "clone-duplicate-uid",
    "overproduction-exhausted-job",
    "package-expired",
    "package-other-guardian",
    "package-replay",
    "package-tampered",
    "package-untrusted-root",
    "produce-expired-job",
    "produce-wrong-device-type",
    "release-forged-signer",
    "release-mix-and-match",
    "release-rollback",
    "release-tampered-image",
    "release-tampered-upk",
    "release-too-large",
    "release-wrong-device",
    "release-wrong-location",
    "release-wrong-oem",
    "release-wrong-product",
    "report-forged-guardian",
    "report-over-production",
    "report-tampered",
    "reprovision-locked-device",
];

/// One fixture's `attack.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attack {
    /// The threat, with its names in docs/threat-model.md.
    threat: String,
    /// What the fixture holds and who would send it.
    description: String,
    /// The `trustchain` arguments, run in a copy of `world/`; the fixture
    /// directory is copied to `attack/` in it.
    command: Vec<String>,
    /// The exit code.
    exit_code: i32,
    /// Each of these appears in the one `error:` line on stderr.
    error: Vec<String>,
    /// Each of these appears on stdout (the details a refusal lists there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stdout: Vec<String>,
    /// The assets that must not change (paths in the world). The runner
    /// compares the whole world; these are named so that a change to them is
    /// reported as such, and must exist.
    unchanged: Vec<String>,
    /// Commands that must succeed afterwards, each printing its `stdout`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    after: Vec<After>,
    /// The byte that was flipped in an honest artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    control: Option<Control>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct After {
    command: Vec<String>,
    stdout: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    /// The file, in the world copy (`attack/...`).
    file: String,
    /// The byte's offset.
    offset: usize,
    /// What was XORed into it.
    xor: u8,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

fn tc(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustchain"))
        .args(args)
        .current_dir(cwd)
        .env("TRUSTCHAIN_PASSPHRASE", PASS)
        .env_remove("TRUSTCHAIN_LOG")
        .output()
        .expect("run trustchain")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = tc(cwd, args);
    assert!(out.status.success(), "trustchain {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn flip(path: &Path, offset: usize, xor: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= xor;
    std::fs::write(path, b).unwrap();
}

/// A Guardian database, table by table and row by row. A checkpoint is its
/// sequence number and head: a `produce` run re-signs the checkpoint of the
/// audit head at its end even when it issued nothing (`Store::checkpoint`),
/// and ECDSA signatures differ each time; every fixture that touches a
/// Guardian verifies all its checkpoint signatures afterwards (`guardian log`).
fn dump_db(path: &Path) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut out = String::new();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(tables.iter().any(|t| t == "jobs"), "{}", path.display());
    for t in tables {
        let columns = if t == "checkpoints" { "seq, head" } else { "*" };
        let mut s = c
            .prepare(&format!("SELECT {columns} FROM \"{t}\" ORDER BY rowid"))
            .unwrap();
        let n = s.column_count();
        let rows = s
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("{t}: {:?}\n", row.unwrap()));
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    /// A Guardian database: its content, not its pages.
    Db(String),
}

/// Every directory and file under `root` (but `attack/`, the attacker's
/// input), each database as its rows.
fn state(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "attack" {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &p, out);
            } else if name == "guardian.db" {
                out.insert(rel, Entry::Db(dump_db(&p)));
            } else if !name.starts_with("guardian.db-") {
                // (-wal, -shm, -journal: SQLite's own, transient.)
                out.insert(rel, Entry::File(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The paths whose entry differs.
fn changed(before: &BTreeMap<String, Entry>, after: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// A fresh copy of the world with the fixture in `attack/`.
fn stage(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&data_dir().join("world"), tmp.path());
    copy_dir(&data_dir().join(name), &tmp.path().join("attack"));
    tmp
}

fn load(name: &str) -> Attack {
    let path = data_dir().join(name).join("attack.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with TRUSTCHAIN_BLESS=1)", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs one fixture; returns what went wrong, if anything.
fn run(name: &str) -> Vec<String> {
    let a = load(name);
    let mut problems = vec![];
    let tmp = stage(name);
    let w = tmp.path();
    for u in &a.unchanged {
        if !w.join(u).exists() {
            problems.push(format!("asset {u} is not in the world"));
        }
    }
    let before = state(w);
    let args: Vec<&str> = a.command.iter().map(String::as_str).collect();
    let out = tc(w, &args);
    let shown = text(&out);
    if out.status.code() != Some(a.exit_code) {
        problems.push(format!("exit code, expected {}: {shown}", a.exit_code));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    if errors.len() != 1 {
        problems.push(format!("expected one `error:` line: {shown}"));
    }
    for needle in &a.error {
        if !errors.iter().any(|l| l.contains(needle.as_str())) {
            problems.push(format!("the error does not say {needle:?}: {shown}"));
        }
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in &a.stdout {
        if !stdout.contains(needle.as_str()) {
            problems.push(format!("stdout does not say {needle:?}: {shown}"));
        }
    }
    let after = state(w);
    for path in changed(&before, &after) {
        let asset = a
            .unchanged
            .iter()
            .find(|u| path == **u || path.starts_with(&format!("{u}/")));
        match asset {
            Some(u) => problems.push(format!("{path} changed (asset {u})")),
            None => problems.push(format!("{path} changed, appeared or disappeared")),
        }
    }
    for f in &a.after {
        let args: Vec<&str> = f.command.iter().map(String::as_str).collect();
        let out = tc(w, &args);
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains(&f.stdout) {
            problems.push(format!(
                "afterwards, {args:?} should succeed and print {:?}: {}",
                f.stdout,
                text(&out)
            ));
        }
    }
    if let Some(c) = &a.control {
        // The honest artifact: the same command succeeds.
        let tmp = stage(name);
        flip(&tmp.path().join(&c.file), c.offset, c.xor);
        let out = tc(tmp.path(), &args);
        if !out.status.success() {
            problems.push(format!(
                "control: with byte {} of {} restored, {args:?} should succeed: {}",
                c.offset,
                c.file,
                text(&out)
            ));
        }
    }
    problems
}

fn maybe_bless() {
    static BLESS: std::sync::Once = std::sync::Once::new();
    BLESS.call_once(|| {
        if std::env::var_os("TRUSTCHAIN_BLESS").is_some() {
            bless::bless();
        }
    });
}

#[test]
fn attack_fixtures_are_refused_and_change_nothing() {
    maybe_bless();
    let mut found: Vec<String> = std::fs::read_dir(data_dir())
        .expect("tests/data (bless with TRUSTCHAIN_BLESS=1)")
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir() && e.file_name() != "world")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, ATTACKS, "one directory per attack in tests/data");
    let mut failures = vec![];
    for name in ATTACKS {
        for p in run(name) {
            failures.push(format!("{name}: {p}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// The world is sound: what the attacks alter works when unaltered, so each
/// refusal is the attack's doing.
#[test]
fn the_world_accepts_the_honest_path() {
    maybe_bless();
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    copy_dir(&data_dir().join("world"), w);
    assert!(ok(w, &["device", "boot", "devices/dev"]).contains("verified 1.0.0"));
    assert!(ok(w, &["guardian", "log", "center-a"]).contains("audit log intact"));
    assert!(ok(w, &["oem", "reconcile", "acme", "reports/job1.tcrep"]).contains("reconciled"));
    let jobs: serde_json::Value =
        serde_json::from_str(&ok(w, &["guardian", "jobs", "center-a", "--json"])).unwrap();
    let remaining: Vec<u64> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["remaining"].as_u64().unwrap())
        .collect();
    assert_eq!(
        remaining,
        [0, 2, 1, 1],
        "job 1 is used up; jobs 2, 3 (type 5 only) and 4 (expired) have room"
    );
    assert!(ok(
        w,
        &["guardian", "import", "center-a", "packages/fresh.tcpkg"]
    )
    .contains("as job 5"));
    assert!(
        ok(w, &["device", "update", "devices/dev", "releases/1.1.0"]).contains("updated to 1.1.0")
    );
}

/// Imports the world's never-imported package at Center A (job 5) and
/// produces one device of it on `line`.
fn import_fresh_and_produce_one(w: &Path, line: &str) {
    let import = ok(
        w,
        &["guardian", "import", "center-a", "packages/fresh.tcpkg"],
    );
    assert!(import.contains("as job 5"), "{import}");
    ok(
        w,
        &[
            "produce",
            "center-a",
            "--job",
            "5",
            "--devices",
            line,
            "--count",
            "1",
        ],
    );
}

/// Reconciles `report` and expects it refused: exit 1, one `error:` line,
/// stdout naming every anomaly in `anomalies`, and the OEM directory
/// unchanged (nothing kept, nothing in the audit log).
fn refused_at_reconcile(w: &Path, report: &str, anomalies: &[&str]) {
    let before = state(&w.join("acme"));
    let out = tc(w, &["oem", "reconcile", "acme", report]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for a in anomalies {
        assert!(stdout.contains(a), "missing {a:?}: {all}");
    }
    let errors = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(errors, 1, "{all}");
    assert_eq!(
        changed(&before, &state(&w.join("acme"))),
        Vec::<String>::new(),
        "a refused report changed the OEM directory"
    );
}

/// The same UID certified in two jobs (the part of
/// `clone-duplicate-uid`, taken to a job of a fresh package, where the
/// Guardian has no record of it): each report alone reconciles, the OEM
/// catches the second against the first, and a report kept once is not
/// kept again.
#[test]
fn reconcile_catches_a_uid_certified_in_two_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    copy_dir(&data_dir().join("world"), w);
    copy_dir(
        &data_dir().join("clone-duplicate-uid/line"),
        &w.join("line"),
    );
    import_fresh_and_produce_one(w, "line");
    ok(
        w,
        &["report", "center-a", "--job", "2", "--out", "r2.tcrep"],
    );
    ok(
        w,
        &["report", "center-a", "--job", "5", "--out", "r5.tcrep"],
    );
    // Checked only: it reconciles, and nothing is written.
    let acme = state(&w.join("acme"));
    let check = ok(w, &["oem", "reconcile", "acme", "r2.tcrep", "--no-keep"]);
    assert!(check.contains("not kept (--no-keep)"), "{check}");
    assert_eq!(
        changed(&acme, &state(&w.join("acme"))),
        Vec::<String>::new()
    );
    let first = ok(w, &["oem", "reconcile", "acme", "r2.tcrep"]);
    assert!(first.contains("kept as"), "{first}");
    let acme = state(&w.join("acme"));
    let again = ok(w, &["oem", "reconcile", "acme", "r2.tcrep"]);
    assert!(again.contains("already reconciled"), "{again}");
    assert_eq!(
        changed(&acme, &state(&w.join("acme"))),
        Vec::<String>::new()
    );
    refused_at_reconcile(
        w,
        "r5.tcrep",
        &["ANOMALY: UID 11223344 already has a certificate", "job 2"],
    );
}

/// A Guardian whose directory is restored to before a package's import
/// imports the same package again and produces its count a second time:
/// the report of the second run reconciles alone, and the OEM catches it
/// against the first (the serial issued twice, the count exceeded).
#[test]
fn reconcile_catches_a_package_produced_twice_after_a_guardian_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    copy_dir(&data_dir().join("world"), w);
    copy_dir(&w.join("center-a"), &w.join("center-a.backup"));
    let run = |line: &str, report: &str| {
        import_fresh_and_produce_one(w, line);
        ok(w, &["report", "center-a", "--job", "5", "--out", report]);
    };
    run("line-1", "first.tcrep");
    assert!(ok(w, &["oem", "reconcile", "acme", "first.tcrep"]).contains("kept as"));
    std::fs::remove_dir_all(w.join("center-a")).unwrap();
    std::fs::rename(w.join("center-a.backup"), w.join("center-a")).unwrap();
    run("line-2", "second.tcrep");
    refused_at_reconcile(
        w,
        "second.tcrep",
        &[
            "another certificate than in",
            "over-production across reports: 2 certificates",
        ],
    );
}

/// An insider at the Guardian drops a certificate it had reported (its
/// device record and its log entry, the count lowered to match), then signs
/// a new report of the job: alone it is consistent and reconciles; against
/// the earlier report the OEM kept, the missing certificate shows.
#[test]
fn reconcile_catches_a_later_report_missing_a_device_of_an_earlier_one() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    copy_dir(&data_dir().join("world"), w);
    ok(
        w,
        &[
            "produce",
            "center-a",
            "--job",
            "2",
            "--devices",
            "line",
            "--count",
            "1",
        ],
    );
    ok(w, &["report", "center-a", "--job", "2", "--out", "a.tcrep"]);
    copy_dir(&w.join("acme"), &w.join("acme-alone"));
    assert!(ok(w, &["oem", "reconcile", "acme", "a.tcrep"]).contains("kept as"));
    let db = rusqlite::Connection::open(w.join("center-a/guardian.db")).unwrap();
    let dropped: i64 = db
        .query_row("SELECT MAX(serial) FROM devices WHERE job = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute_batch(
        "DELETE FROM log WHERE job = 2 AND n = (SELECT MAX(n) FROM log WHERE job = 2);
         DELETE FROM devices WHERE job = 2 AND serial = (SELECT MAX(serial) FROM devices WHERE job = 2);
         UPDATE jobs SET issued = issued - 1 WHERE id = 2;",
    )
    .unwrap();
    drop(db);
    ok(w, &["report", "center-a", "--job", "2", "--out", "b.tcrep"]);
    assert!(ok(w, &["oem", "reconcile", "acme-alone", "b.tcrep"]).contains("reconciled"));
    refused_at_reconcile(
        w,
        "b.tcrep",
        &[&format!(
            "serial {dropped} of job 2 is missing from this report"
        )],
    );
}

/// Regenerates `tests/data` through the CLI.
mod bless {
    use super::*;

    /// A deterministic image of `len` bytes.
    fn image(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    fn json(b: &Path, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&ok(b, args)).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Writes fixture `name`: `attack.toml`, and `files` (from the build
    /// directory) under their new names.
    fn fixture(b: &Path, name: &str, a: &Attack, files: &[(&str, &str)]) {
        assert!(ATTACKS.contains(&name), "{name} is not in ATTACKS");
        let dir = data_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (from, to) in files {
            let (from, to) = (b.join(from), dir.join(to));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if from.is_dir() {
                copy_dir(&from, &to);
            } else {
                std::fs::copy(&from, &to).unwrap();
            }
        }
        let body = toml::to_string_pretty(a).unwrap();
        std::fs::write(
            dir.join("attack.toml"),
            format!(
                "# Attack fixture, run by crates/cli/tests/attacks.rs against a copy of\n\
                 # tests/data/world/ with this directory copied to attack/ in it.\n\
                 # Threat model: docs/threat-model.md. Regenerate: TRUSTCHAIN_BLESS=1\n\
                 # cargo test -p trustchain --test attacks (tests/data/README.md).\n\n{body}"
            ),
        )
        .unwrap();
    }

    const DEVICE: &str = "devices/dev";
    const DEVICE_ASSETS: &[&str] = &[
        "devices/dev/flash.bin",
        "devices/dev/protected.bin",
        "devices/dev/device.toml",
        "acme",
    ];
    const GUARDIAN_ASSETS: &[&str] = &[
        "center-a/guardian.db",
        "center-a/keystore",
        "center-a/identity.pem",
        "center-a/trusted-roots",
        "acme",
    ];

    fn still_boots() -> Vec<After> {
        vec![After {
            command: s(&["device", "boot", DEVICE]),
            stdout: "verified 1.0.0".into(),
        }]
    }

    fn log_intact() -> Vec<After> {
        vec![After {
            command: s(&["guardian", "log", "center-a"]),
            stdout: "audit log intact".into(),
        }]
    }

    /// A release refused by the device's SBM.
    fn release(
        b: &Path,
        name: &str,
        threat: &str,
        description: &str,
        rel: &str,
        status: &str,
        control: Option<Control>,
    ) {
        fixture(
            b,
            name,
            &Attack {
                threat: threat.into(),
                description: description.into(),
                command: s(&["device", "update", DEVICE, "attack/release"]),
                exit_code: 1,
                error: vec![format!("{DEVICE}: the device refused: "), status.into()],
                stdout: vec![],
                unchanged: s(DEVICE_ASSETS),
                after: still_boots(),
                control,
            },
            &[(rel, "release")],
        );
    }

    /// A package the Guardian refuses at import.
    fn package(
        b: &Path,
        name: &str,
        threat: &str,
        description: &str,
        pkg: &str,
        error: Vec<String>,
    ) {
        let control = (name == "package-tampered").then(|| Control {
            file: "attack/package.tcpkg".into(),
            offset: std::fs::metadata(b.join(pkg)).unwrap().len() as usize / 2,
            xor: 0x01,
        });
        fixture(
            b,
            name,
            &Attack {
                threat: threat.into(),
                description: description.into(),
                command: s(&["guardian", "import", "center-a", "attack/package.tcpkg"]),
                exit_code: 1,
                error,
                stdout: vec![],
                unchanged: s(GUARDIAN_ASSETS),
                after: log_intact(),
                control,
            },
            &[(pkg, "package.tcpkg")],
        );
    }

    /// A report the OEM refuses at reconciliation.
    #[allow(clippy::too_many_arguments)]
    fn report(
        b: &Path,
        name: &str,
        threat: &str,
        description: &str,
        rep: &str,
        error: &[&str],
        stdout: &[&str],
        control: Option<Control>,
    ) {
        fixture(
            b,
            name,
            &Attack {
                threat: threat.into(),
                description: description.into(),
                command: s(&["oem", "reconcile", "acme", "attack/report.tcrep"]),
                exit_code: 1,
                error: s(error),
                stdout: s(stdout),
                unchanged: s(&["acme"]),
                after: vec![],
                control,
            },
            &[(rep, "report.tcrep")],
        );
    }

    pub fn bless() {
        // From scratch: every fixture and the world (README.md is written by hand).
        let data = data_dir();
        std::fs::create_dir_all(&data).unwrap();
        for e in std::fs::read_dir(&data).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path();
        let w = b.join("world");
        std::fs::create_dir_all(&w).unwrap();
        let run = |args: &[&str]| ok(&w, args);

        // The OEM, with two products; an OEM next door; an attacker who made
        // his own hierarchy under Acme's OEM ID and name.
        run(&[
            "oem", "init", "acme", "--oem-id", "0x1234", "--name", "Acme",
        ]);
        run(&[
            "oem",
            "product",
            "acme",
            "--product-id",
            "7",
            "--name",
            "Thermostat",
        ]);
        run(&[
            "oem",
            "product",
            "acme",
            "--product-id",
            "8",
            "--name",
            "Lamp",
        ]);
        let globex_root = json(
            b,
            &[
                "oem", "init", "globex", "--oem-id", "0x5678", "--name", "Globex", "--json",
            ],
        );
        ok(
            b,
            &[
                "oem",
                "product",
                "globex",
                "--product-id",
                "7",
                "--name",
                "Thermostat",
            ],
        );
        ok(
            b,
            &[
                "oem", "init", "evil", "--oem-id", "0x1234", "--name", "Acme",
            ],
        );
        ok(
            b,
            &[
                "oem",
                "product",
                "evil",
                "--product-id",
                "7",
                "--name",
                "Thermostat",
            ],
        );

        // Releases, small enough for a 16 KiB device (a 4 KiB slot).
        let master = |oem: &str, product: &str, version: &str, out: &str, extra: &[&str]| {
            let img = b.join(format!("fw-{}-{version}.bin", oem.replace('/', "-")));
            let len = if extra.contains(&"big") { 6000 } else { 1500 };
            std::fs::write(
                &img,
                image(version.len() as u8 + version.as_bytes()[2], len),
            )
            .unwrap();
            let img = img.to_str().unwrap().to_string();
            let mut args = vec![
                "master",
                oem,
                "--product",
                product,
                "--version",
                version,
                "--image",
                &img,
                "--out",
                out,
                "--load-address",
            ];
            args.push(if extra.contains(&"elsewhere") {
                "0x08010000"
            } else {
                "0x08000000"
            });
            args.extend(
                extra
                    .iter()
                    .copied()
                    .filter(|e| !["big", "elsewhere"].contains(e)),
            );
            ok(b, &args);
        };
        for d in ["rel", "world/releases"] {
            std::fs::create_dir_all(b.join(d)).unwrap();
        }
        master("world/acme", "7", "0.9.0", "rel/0.9.0", &[]);
        master("world/acme", "7", "1.0.0", "world/releases/1.0.0", &[]);
        master("world/acme", "7", "1.1.0", "world/releases/1.1.0", &[]);
        master("world/acme", "7", "1.2.0", "rel/1.2.0", &[]);
        master("world/acme", "8", "1.3.0", "rel/product-8", &[]);
        master(
            "world/acme",
            "7",
            "1.4.0",
            "rel/other-uid",
            &["--allow-uid", "ffffffff"],
        );
        master("world/acme", "7", "1.5.0", "rel/elsewhere", &["elsewhere"]);
        master("world/acme", "7", "1.6.0", "rel/big", &["big"]);
        master("globex", "7", "1.3.0", "rel/globex", &[]);
        master("evil", "7", "1.3.0", "rel/evil", &[]);

        // The device in the field: product 7, locked, running 1.0.0.
        run(&[
            "device",
            "new",
            DEVICE,
            "--uid",
            "0a0b0c0d",
            "--flash-size",
            "16384",
        ]);
        run(&[
            "device",
            "provision",
            DEVICE,
            "--oem",
            "acme",
            "--product",
            "7",
        ]);
        run(&["device", "install", DEVICE, "releases/1.0.0"]);

        // The programming centre: Guardian A trusts Acme; B is another centre.
        run(&["guardian", "init", "center-a", "--name", "Center A"]);
        ok(b, &["guardian", "init", "center-b", "--name", "Center B"]);
        run(&["guardian", "trust", "center-a", "acme/root.pem"]);
        std::fs::create_dir_all(b.join("pk")).unwrap();
        let wrap = |oem: &str, guardian: &str, count: &str, out: &str, expires: &str| {
            let v = json(
                b,
                &[
                    "wrap",
                    oem,
                    "--product",
                    "7",
                    "--guardian",
                    guardian,
                    "--count",
                    count,
                    "--release",
                    if oem == "globex" {
                        "rel/globex"
                    } else {
                        "world/releases/1.0.0"
                    },
                    "--out",
                    out,
                    "--expires",
                    expires,
                    "--json",
                ],
            );
            v["package_id"].as_str().unwrap().to_string()
        };
        const LATER: &str = "2099-01-01T00:00:00Z";
        let a_id = "world/center-a/identity.pem";
        // Job 1: one device, produced; its honest report.
        let job1 = wrap("world/acme", a_id, "1", "pk/job1.tcpkg", LATER);
        ok(
            b,
            &["guardian", "import", "world/center-a", "pk/job1.tcpkg"],
        );
        ok(
            b,
            &[
                "device",
                "new",
                "line1/dev-1",
                "--uid",
                "01020304",
                "--flash-size",
                "16384",
            ],
        );
        ok(
            b,
            &[
                "produce",
                "world/center-a",
                "--job",
                "1",
                "--devices",
                "line1",
                "--count",
                "1",
            ],
        );
        std::fs::create_dir_all(w.join("reports")).unwrap();
        run(&[
            "report",
            "center-a",
            "--job",
            "1",
            "--out",
            "reports/job1.tcrep",
        ]);
        // Job 2: three devices, one produced (UID 11223344).
        wrap("world/acme", a_id, "3", "pk/job2.tcpkg", LATER);
        ok(
            b,
            &["guardian", "import", "world/center-a", "pk/job2.tcpkg"],
        );
        ok(
            b,
            &[
                "device",
                "new",
                "line2/dev-1",
                "--uid",
                "11223344",
                "--flash-size",
                "16384",
            ],
        );
        ok(
            b,
            &[
                "produce",
                "world/center-a",
                "--job",
                "2",
                "--devices",
                "line2",
                "--count",
                "1",
            ],
        );
        // Job 3: devices of type 5 only. Job 4: expires five seconds from now.
        json(
            b,
            &[
                "wrap",
                "world/acme",
                "--product",
                "7",
                "--guardian",
                a_id,
                "--count",
                "1",
                "--release",
                "world/releases/1.0.0",
                "--out",
                "pk/job3.tcpkg",
                "--expires",
                LATER,
                "--device-type",
                "5",
                "--json",
            ],
        );
        ok(
            b,
            &["guardian", "import", "world/center-a", "pk/job3.tcpkg"],
        );
        let job4_expires = now() + 5;
        let job4_soon = time::OffsetDateTime::from_unix_timestamp(job4_expires as i64)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        wrap("world/acme", a_id, "1", "pk/job4.tcpkg", &job4_soon);
        ok(
            b,
            &["guardian", "import", "world/center-a", "pk/job4.tcpkg"],
        );
        ok(
            b,
            &[
                "device",
                "new",
                "type1/line/dev-1",
                "--uid",
                "31323334",
                "--flash-size",
                "16384",
            ],
        );
        // An honest package for A, never imported.
        std::fs::create_dir_all(w.join("packages")).unwrap();
        wrap("world/acme", a_id, "1", "world/packages/fresh.tcpkg", LATER);
        // Packages the attacks bring.
        wrap(
            "world/acme",
            "center-b/identity.pem",
            "1",
            "pk/other.tcpkg",
            LATER,
        );
        wrap("globex", a_id, "1", "pk/untrusted.tcpkg", LATER);
        let expires_at = now() + 3;
        let soon = time::OffsetDateTime::from_unix_timestamp(expires_at as i64)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        wrap("world/acme", a_id, "1", "pk/expired.tcpkg", &soon);
        std::fs::copy(
            b.join("world/packages/fresh.tcpkg"),
            b.join("pk/tampered.tcpkg"),
        )
        .unwrap();
        let mid = std::fs::metadata(b.join("pk/tampered.tcpkg"))
            .unwrap()
            .len() as usize
            / 2;
        flip(&b.join("pk/tampered.tcpkg"), mid, 0x01);

        // Reports the OEM must refuse. A forged one: the Guardian's database
        // (job 1), signed with another Guardian's keys.
        copy_dir(&w.join("center-a"), &b.join("forged"));
        for f in ["keystore", "identity.pem"] {
            let p = b.join("forged").join(f);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
                copy_dir(&b.join("center-b").join(f), &p);
            } else {
                std::fs::copy(b.join("center-b").join(f), &p).unwrap();
            }
        }
        ok(
            b,
            &["report", "forged", "--job", "1", "--out", "pk/forged.tcrep"],
        );
        // An over-producing Guardian: job 1's count raised in its store, one
        // more device made, reported with its own, genuine key.
        copy_dir(&w.join("center-a"), &b.join("inflated"));
        let c = rusqlite::Connection::open(b.join("inflated/guardian.db")).unwrap();
        assert_eq!(
            c.execute("UPDATE jobs SET count = 2 WHERE id = 1", [])
                .unwrap(),
            1
        );
        drop(c);
        ok(
            b,
            &[
                "device",
                "new",
                "line3/dev-1",
                "--uid",
                "21222324",
                "--flash-size",
                "16384",
            ],
        );
        ok(
            b,
            &[
                "produce",
                "inflated",
                "--job",
                "1",
                "--devices",
                "line3",
                "--count",
                "1",
            ],
        );
        ok(
            b,
            &[
                "report",
                "inflated",
                "--job",
                "1",
                "--out",
                "pk/inflated.tcrep",
            ],
        );
        // A tampered one: the last byte of the payload (the log head).
        std::fs::copy(w.join("reports/job1.tcrep"), b.join("pk/tampered.tcrep")).unwrap();
        let rep_at = std::fs::metadata(b.join("pk/tampered.tcrep"))
            .unwrap()
            .len() as usize
            - 67;
        flip(&b.join("pk/tampered.tcrep"), rep_at, 0x01);

        // Releases made into attacks by hand.
        copy_dir(&w.join("releases/1.1.0"), &b.join("rel/tampered-upk"));
        let upk_len = std::fs::metadata(b.join("rel/tampered-upk/update.upk"))
            .unwrap()
            .len();
        flip(
            &b.join("rel/tampered-upk/update.upk"),
            upk_len as usize - 1,
            0x01,
        );
        copy_dir(&w.join("releases/1.1.0"), &b.join("rel/tampered-image"));
        flip(&b.join("rel/tampered-image/update.enc"), 100, 0x01);
        std::fs::create_dir_all(b.join("rel/mix")).unwrap();
        std::fs::copy(
            w.join("releases/1.1.0/update.upk"),
            b.join("rel/mix/update.upk"),
        )
        .unwrap();
        std::fs::copy(b.join("rel/1.2.0/update.enc"), b.join("rel/mix/update.enc")).unwrap();

        // A clone: a blank part carrying the UID of job 2's device.
        ok(
            b,
            &[
                "device",
                "new",
                "clone/line/clone",
                "--uid",
                "11223344",
                "--flash-size",
                "16384",
            ],
        );

        // The fixtures.
        release(b, "release-forged-signer",
            "arbitrary software (Uptane/TUF); RFC 9124 THREAT.IMG.NON_AUTH; THREAT.KEY.EXPOSURE of any key but the device's own mastering key",
            "A release for OEM 0x1234 product 7, version 1.3.0, signed by an attacker's own hierarchy that copies Acme's OEM ID and name. The device knows Acme's mastering key (pinned at provisioning) and nothing else.",
            "rel/evil", "the UPK signature does not verify with the provisioned mastering key (status 11)", None);
        release(b, "release-tampered-upk",
            "arbitrary software / tampered manifest; RFC 9124 THREAT.IMG.NON_AUTH, THREAT.MFST.MODIFICATION (after signing)",
            "Acme's honest release 1.1.0 with the last byte of the UPK's signature flipped.",
            "rel/tampered-upk", "the UPK signature does not verify with the provisioned mastering key (status 11)",
            Some(Control { file: "attack/release/update.upk".into(), offset: upk_len as usize - 1, xor: 0x01 }));
        release(b, "release-tampered-image",
            "arbitrary software / tampered payload; RFC 9124 THREAT.IMG.NON_AUTH, THREAT.IMG.REPLACE",
            "Acme's honest release 1.1.0 with byte 100 of update.enc flipped: the UPK still verifies, the ciphertext does not match its signed SHA-256.",
            "rel/tampered-image", "the encrypted image does not match the signed digest or size (status 18)",
            Some(Control { file: "attack/release/update.enc".into(), offset: 100, xor: 0x01 }));
        release(b, "release-rollback",
            "rollback (Uptane/TUF); RFC 9124 THREAT.IMG.EXPIRED",
            "Acme's genuine release 0.9.0 (mastered with --force below the product's last counter) sent to a device running 1.0.0.",
            "rel/0.9.0", "rollback: the security counter is below the device's minimum (status 15)", None);
        release(b, "release-mix-and-match",
            "mix-and-match (Uptane/TUF); RFC 9124 THREAT.IMG.REPLACE",
            "The genuine UPK of 1.1.0 with the genuine update.enc of 1.2.0: each file is Acme's, the pair is not.",
            "rel/mix", "the encrypted image does not match the signed digest or size (status 18)", None);
        release(b, "release-wrong-product",
            "wrong target / mismatched firmware (Uptane); RFC 9124 THREAT.IMG.INCOMPATIBLE",
            "A genuine release of Acme's product 8 (Lamp), signed with the same mastering key, sent to a product 7 device.",
            "rel/product-8", "the release is for another product (status 13)", None);
        release(b, "release-wrong-oem",
            "wrong target (another vendor's firmware); RFC 9124 THREAT.IMG.INCOMPATIBLE",
            "A genuine release of Globex (OEM 0x5678) product 7 sent to Acme's product 7 device. The SBM checks the signature first, so it is refused as not Acme's.",
            "rel/globex", "the UPK signature does not verify with the provisioned mastering key (status 11)", None);
        release(b, "release-wrong-device",
            "wrong target (a release for named devices); RFC 9124 THREAT.IMG.INCOMPATIBLE, THREAT.UPD.UNAPPROVED",
            "A genuine release of product 7 whose UID allow-list names only ffffffff, sent to device 0a0b0c0d.",
            "rel/other-uid", "this device's UID is not on the release's allow-list (status 14)", None);
        release(b, "release-wrong-location",
            "RFC 9124 THREAT.IMG.LOCATION",
            "A genuine release of product 7 linked for 0x08010000, not the device's application slot at 0x08000000.",
            "rel/elsewhere", "the image's load address is not this device's application slot (status 26)", None);
        release(b, "release-too-large",
            "endless data (Uptane/TUF) at the device; RFC 9124 THREAT.IMG.EXTRA",
            "A genuine release of product 7 whose 6000-byte image is larger than the 4 KiB application slot of this 16 KiB device: refused from the signed size, before a byte is staged.",
            "rel/big", "the image does not fit the device (status 16)", None);

        package(
            b,
            "package-other-guardian",
            "package for another Guardian",
            "A genuine package Acme wrapped for Guardian B, brought to Guardian A.",
            "pk/other.tcpkg",
            s(&["attack/package.tcpkg: the package cannot be opened by this Guardian"]),
        );
        package(b, "package-replay",
            "package replay",
            "The very package Guardian A imported as job 1 (count 1, exhausted), imported again to get its count a second time.",
            "pk/job1.tcpkg", vec![format!("attack/package.tcpkg: package {job1} was already imported (job 1)")]);
        package(
            b,
            "package-expired",
            "expired package (freeze at production, TUF's expired metadata)",
            "A genuine package for Guardian A whose expiry was three seconds after it was wrapped.",
            "pk/expired.tcpkg",
            vec![format!(
                "attack/package.tcpkg: package refused: expired at {expires_at}"
            )],
        );
        package(b, "package-tampered",
            "tampered package",
            "The honest package world/packages/fresh.tcpkg with its middle byte (in the ciphertext) flipped.",
            "pk/tampered.tcpkg", s(&["attack/package.tcpkg: the package cannot be opened by this Guardian"]));
        package(b, "package-untrusted-root",
            "package from an OEM the Guardian does not trust (arbitrary OEM at production)",
            "A genuine package from Globex, wrapped for Guardian A, which trusts only Acme's root.",
            "pk/untrusted.tcpkg", vec![format!(
                "attack/package.tcpkg: the package's OEM root (SHA-256 {}) is not trusted by this Guardian",
                globex_root["root_sha256"].as_str().unwrap()
            )]);

        fixture(b, "overproduction-exhausted-job", &Attack {
            threat: "over-production".into(),
            description: "The station asks Guardian A for one more device on job 1, whose count of 1 is used up.".into(),
            command: s(&["produce", "center-a", "--job", "1", "--devices", "line", "--count", "1"]),
            exit_code: 1,
            error: s(&["job 1 has no devices left to produce"]),
            stdout: vec![],
            unchanged: s(GUARDIAN_ASSETS),
            after: log_intact(),
            control: None,
        }, &[]);
        fixture(b, "clone-duplicate-uid", &Attack {
            threat: "cloning (a second part with a produced device's UID)".into(),
            description: "A blank part whose UID is that of the device job 2 already certified, brought to the line for job 2. The part makes its keys (it is the cloner's), but the Guardian issues no certificate and the count is not touched.".into(),
            command: s(&["produce", "center-a", "--job", "2", "--devices", "attack/line", "--count", "1"]),
            exit_code: 1,
            error: s(&["1 device(s) failed"]),
            stdout: s(&["device UID 11223344 already has a certificate in job 2", "2 remaining in the job"]),
            unchanged: s(GUARDIAN_ASSETS),
            after: [
                vec![After {
                    command: s(&["device", "info", "attack/line/clone", "--json"]),
                    stdout: "\"certificate_chain\": null".into(),
                }],
                log_intact(),
            ]
            .concat(),
            control: None,
        }, &[("clone/line", "line")]);
        fixture(b, "produce-wrong-device-type", &Attack {
            threat: "wrong target at production (a part the job does not allow)".into(),
            description: "A blank part of type 1 brought to the line for job 3, which Acme wrapped for devices of type 5 only.".into(),
            command: s(&["produce", "center-a", "--job", "3", "--devices", "attack/line", "--count", "1"]),
            exit_code: 1,
            error: s(&["1 device(s) failed"]),
            stdout: s(&["UID 31323334 type 1 not allowed by the job", "1 remaining in the job"]),
            unchanged: s(GUARDIAN_ASSETS),
            after: [
                vec![After {
                    command: s(&["device", "info", "attack/line/dev-1", "--json"]),
                    stdout: "\"certificate_chain\": null".into(),
                }],
                log_intact(),
            ]
            .concat(),
            control: None,
        }, &[("type1/line", "line")]);
        fixture(b, "produce-expired-job", &Attack {
            threat: "expired package at production (freeze at production)".into(),
            description: "Job 4 was imported while its package was valid; it has since expired, and the station asks for a device.".into(),
            command: s(&["produce", "center-a", "--job", "4", "--devices", "line", "--count", "1"]),
            exit_code: 1,
            error: s(&["job 4 has expired"]),
            stdout: vec![],
            unchanged: s(GUARDIAN_ASSETS),
            after: log_intact(),
            control: None,
        }, &[]);
        fixture(b, "reprovision-locked-device", &Attack {
            threat: "reprovisioning a locked device".into(),
            description: "Lab provisioning run again on the device in the field, which is provisioned and locked, to give it new keys and OEM keys.".into(),
            command: s(&["device", "provision", DEVICE, "--oem", "acme", "--product", "7"]),
            exit_code: 1,
            error: s(&["devices/dev: the device is locked, not blank: it was provisioned already"]),
            stdout: vec![],
            unchanged: s(DEVICE_ASSETS),
            after: still_boots(),
            control: None,
        }, &[]);

        report(b, "report-tampered",
            "forged production report (altered)",
            "Guardian A's honest report of job 1 with the last byte of its payload (the log head) flipped.",
            "pk/tampered.tcrep", &["attack/report.tcrep: signature does not verify"], &[],
            Some(Control { file: "attack/report.tcrep".into(), offset: rep_at, xor: 0x01 }));
        report(b, "report-forged-guardian",
            "forged production report (another Guardian's key)",
            "A report of job 1 made from a copy of Guardian A's database and signed with Guardian B's keys: well-formed, validly signed, by the wrong Guardian.",
            "pk/forged.tcrep", &["attack/report.tcrep: the report does not reconcile"],
            &["the report is not from the Guardian the package was wrapped for"], None);
        report(b, "report-over-production",
            "over-production (a dishonest or tampered Guardian)",
            "Guardian A's store had job 1's count raised from 1 to 2 and made a second device; the report is signed with A's genuine key.",
            "pk/inflated.tcrep", &["attack/report.tcrep: the report does not reconcile"],
            &["over-production: 2 issued + 0 failed > count 1"], None);

        // The world itself.
        copy_dir(&w, &data.join("world"));
        // The expired package must be expired before any test uses it.
        while now() <= expires_at.max(job4_expires) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
