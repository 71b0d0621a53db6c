//! What every CLI test needs: run the real `trustchain` binary with a test
//! passphrase, check success or one clear error, and snapshot directories to
//! prove that a refusal changed nothing. Each test file uses a part of it.
#![allow(dead_code)]
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The keystore passphrase of every test directory.
pub const PASS: &str = "integration test passphrase";

/// `trustchain ARGS` with the test passphrase and no log filter from the
/// environment, ready to run or spawn.
pub fn trustchain(args: &[&dyn AsRef<OsStr>]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trustchain"));
    c.args(args.iter().map(|a| a.as_ref()))
        .env("TRUSTCHAIN_PASSPHRASE", PASS)
        .env_remove("TRUSTCHAIN_LOG");
    c
}

/// Runs `trustchain ARGS` to the end.
pub fn tc(args: &[&dyn AsRef<OsStr>]) -> Output {
    trustchain(args).output().expect("run trustchain")
}

/// Asserts success; returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts success and parses stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("JSON on stdout")
}

/// Fails with exactly one `error:` line, and stderr mentions `needle`.
pub fn fails_with(out: &Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    err
}

/// Every file directly in `dir` with its bytes (a device directory).
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Every file below `dir` with its bytes.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `oem init OEM --oem-id 0x1234 --name Acme`, then `oem product OEM
/// --product-id 7 --name NAME`: the OEM directory most tests start from.
pub fn acme_with_product_7(oem: &Path, product_name: &str) {
    ok(&tc(&[
        &"oem",
        &"init",
        &oem,
        &"--oem-id",
        &"0x1234",
        &"--name",
        &"Acme",
    ]));
    ok(&tc(&[
        &"oem",
        &"product",
        &oem,
        &"--product-id",
        &"7",
        &"--name",
        &product_name,
    ]));
}

/// `master OEM --product 7 --version VERSION --image IMAGE --out OUT
/// --load-address 0x08000000` (the simulator's application address), run
/// to the end.
pub fn master_7(oem: &Path, version: &str, image: &Path, out: &Path) -> Output {
    master_7_command(oem, version, image, out)
        .output()
        .expect("run trustchain")
}

/// The same command, ready to run or spawn.
pub fn master_7_command(oem: &Path, version: &str, image: &Path, out: &Path) -> Command {
    trustchain(&[
        &"master",
        &oem,
        &"--product",
        &"7",
        &"--version",
        &version,
        &"--image",
        &image,
        &"--out",
        &out,
        &"--load-address",
        &"0x08000000",
    ])
}
