//! The CLI as a user meets it: every command, and every kind of bad input
//! getting one clear message, a non-zero exit and no partial output.
mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    oem: PathBuf,
}

fn setup() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let oem = root.join("oem");
    acme_with_product_7(&oem, "Thermostat");
    Env {
        _tmp: tmp,
        root,
        oem,
    }
}

fn image(env: &Env, name: &str, len: usize) -> PathBuf {
    let p = env.root.join(name);
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn oem_init_makes_a_hierarchy_openssl_accepts() {
    let env = setup();
    for f in [
        "root.pem",
        "device-ca.pem",
        "mastering.pem",
        "oem.toml",
        "audit.log",
        "keystore/keystore.toml",
        "products/7/template.toml",
        "products/7/product-key.pem",
    ] {
        assert!(env.oem.join(f).is_file(), "{f}");
    }
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(env.oem.join("root.pem"))
        .arg(env.oem.join("device-ca.pem"))
        .arg(env.oem.join("mastering.pem"))
        .output()
        .expect("openssl is installed by .ci/run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The certificates carry the OEM ID and sane validity.
    let json: serde_json::Value = serde_json::from_str(&ok(&tc(&[
        &"inspect",
        &env.oem.join("root.pem"),
        &"--json",
    ])))
    .unwrap();
    assert_eq!(json["details"]["oem_id"], 0x1234);
    assert_eq!(json["details"]["ca"], 2);
    let not_after = json["details"]["not_after"].as_str().unwrap();
    assert!(
        not_after.starts_with("204") || not_after.starts_with("205"),
        "{not_after}"
    );
    let m: serde_json::Value = serde_json::from_str(&ok(&tc(&[
        &"inspect",
        &env.oem.join("mastering.pem"),
        &"--json",
    ])))
    .unwrap();
    assert_eq!(m["details"]["extended_key_usage"][0], "1.3.6.1.5.5.7.3.3");
    // No private key bytes in the clear anywhere: every key file is sealed.
    for (p, bytes) in snapshot(&env.oem) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PRIVATE KEY"), "{}", p.display());
    }
}

#[test]
fn master_verify_decrypt_round_trip_raw_image() {
    let env = setup();
    let img = image(&env, "fw.bin", 100_000);
    let rel = env.root.join("rel");
    let out = ok(&tc(&[
        &"master",
        &env.oem,
        &"--product",
        &"7",
        &"--version",
        &"1.2.3",
        &"--image",
        &img,
        &"--out",
        &rel,
        &"--load-address",
        &"0x08000000",
        &"--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["security_counter"], (1u64 << 32) | (2 << 16) | 3);
    let mut names: Vec<_> = std::fs::read_dir(&rel)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["update.enc", "update.upk"], "exactly two files");
    let v = ok(&tc(&[
        &"verify",
        &rel,
        &"--root",
        &env.oem.join("root.pem"),
        &"--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["release"]["load_address"], 0x0800_0000u64);
    let dec = env.root.join("fw.out");
    ok(&tc(&[&"decrypt", &env.oem, &rel, &"--out", &dec]));
    assert_eq!(std::fs::read(&dec).unwrap(), std::fs::read(&img).unwrap());
    // The ciphertext does not contain the plaintext.
    let enc = std::fs::read(rel.join("update.enc")).unwrap();
    assert!(!enc
        .windows(64)
        .any(|w| w == &std::fs::read(&img).unwrap()[1000..1064]));
    // Audited.
    let log = std::fs::read_to_string(env.oem.join("audit.log")).unwrap();
    assert!(log
        .lines()
        .last()
        .unwrap()
        .contains("\"action\":\"master\""));
    let i: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"inspect", &rel.join("update.upk"), &"--json"]))).unwrap();
    assert_eq!(i["details"]["version"], "1.2.3");
    assert_eq!(i["details"]["recipients"].as_array().unwrap().len(), 1);
}

#[test]
fn master_intel_hex_with_device_recipient_and_uid_list() {
    let env = setup();
    // Intel HEX: 16 bytes at 0x0800_0000 and 16 at 0x0800_0020 (gap filled with 0xFF).
    let hex = ":020000040800F2\n:10000000000102030405060708090A0B0C0D0E0F78\n:10002000101112131415161718191A1B1C1D1E1F58\n:00000001FF\n";
    let img = env.root.join("fw.hex");
    std::fs::write(&img, hex).unwrap();
    let device_key = env.root.join("device.pem");
    std::fs::copy(env.oem.join("products/7/product-key.pem"), &device_key).unwrap();
    let rel = env.root.join("rel");
    ok(&tc(&[
        &"master",
        &env.oem,
        &"--product",
        &"7",
        &"--version",
        &"2.0.0",
        &"--image",
        &img,
        &"--out",
        &rel,
        &"--device",
        &device_key,
        &"--allow-uid",
        &"00112233",
    ]));
    let i: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"inspect", &rel.join("update.upk"), &"--json"]))).unwrap();
    assert_eq!(i["details"]["load_address"], "0x08000000");
    assert_eq!(i["details"]["image_size"], 48);
    assert_eq!(i["details"]["recipients"].as_array().unwrap().len(), 2);
    assert_eq!(i["details"]["device_uids"][0], "00112233");
    let dec = env.root.join("fw.out");
    ok(&tc(&[&"decrypt", &env.oem, &rel, &"--out", &dec]));
    let mut want: Vec<u8> = (0..16).collect();
    want.extend([0xff; 16]);
    want.extend(16..32);
    assert_eq!(std::fs::read(&dec).unwrap(), want);
}

#[test]
fn bad_inputs_get_one_clear_error_and_change_nothing() {
    let env = setup();
    let img = image(&env, "fw.bin", 5000);
    let before = snapshot(&env.oem);
    let rel = env.root.join("rel");
    let m = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"master",
            &env.oem,
            &"--product",
            &"7",
            &"--version",
            &"1.0.0",
            &"--out",
            &rel,
        ];
        a.extend_from_slice(extra);
        tc(&a)
    };
    // Missing image, garbled Intel HEX, empty image.
    fails_with(&m(&[&"--image", &env.root.join("nope.bin")]), "nope.bin");
    let garbled = env.root.join("bad.hex");
    std::fs::write(
        &garbled,
        ":10000000000102030405060708090A0B0C0D0E0F00\n:00000001FF\n",
    )
    .unwrap();
    fails_with(&m(&[&"--image", &garbled]), "checksum");
    let empty = env.root.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(&m(&[&"--image", &empty]), "empty");
    // Missing product, missing OEM directory.
    let out = tc(&[
        &"master",
        &env.oem,
        &"--product",
        &"8",
        &"--version",
        &"1.0.0",
        &"--image",
        &img,
        &"--out",
        &rel,
    ]);
    fails_with(&out, "product 8 does not exist");
    let out = tc(&[
        &"master",
        &env.root.join("no-oem"),
        &"--product",
        &"7",
        &"--version",
        &"1.0.0",
        &"--image",
        &img,
        &"--out",
        &rel,
    ]);
    fails_with(&out, "no-oem");
    // Wrong passphrase.
    let out = Command::new(env!("CARGO_BIN_EXE_trustchain"))
        .args(["master"])
        .arg(&env.oem)
        .args(["--product", "7", "--version", "1.0.0", "--image"])
        .arg(&img)
        .arg("--out")
        .arg(&rel)
        .env("TRUSTCHAIN_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    let err = fails_with(&out, "wrong passphrase");
    assert!(err.contains("hint:"));
    // A device key that is not a key.
    fails_with(&m(&[&"--image", &img, &"--device", &img]), "fw.bin");
    assert!(!rel.exists(), "no partial output directory");
    assert_eq!(snapshot(&env.oem), before, "the OEM directory is unchanged");
    // Existing output directory.
    std::fs::create_dir(&rel).unwrap();
    fails_with(&m(&[&"--image", &img]), "already exists");
    assert_eq!(std::fs::read_dir(&rel).unwrap().count(), 0);
    // oem init over an existing directory.
    fails_with(
        &tc(&[
            &"oem",
            &"init",
            &env.oem,
            &"--oem-id",
            &"1",
            &"--name",
            &"x",
        ]),
        "already exists",
    );
    assert_eq!(snapshot(&env.oem), before);
}

#[test]
fn rollback_is_refused_unless_forced() {
    let env = setup();
    let img = image(&env, "fw.bin", 3000);
    ok(&tc(&[
        &"master",
        &env.oem,
        &"--product",
        &"7",
        &"--version",
        &"1.5.0",
        &"--image",
        &img,
        &"--out",
        &env.root.join("r1"),
    ]));
    let out = tc(&[
        &"master",
        &env.oem,
        &"--product",
        &"7",
        &"--version",
        &"1.4.9",
        &"--image",
        &img,
        &"--out",
        &env.root.join("r2"),
    ]);
    let err = fails_with(&out, "below");
    assert!(err.contains("--force"));
    assert!(!env.root.join("r2").exists());
    let out = tc(&[
        &"master",
        &env.oem,
        &"--product",
        &"7",
        &"--version",
        &"1.4.9",
        &"--image",
        &img,
        &"--out",
        &env.root.join("r3"),
        &"--force",
        &"--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(r["forced"], true);
}

#[test]
fn verify_refuses_tampered_truncated_and_foreign_releases() {
    let env = setup();
    let img = image(&env, "fw.bin", 9000);
    let rel = env.root.join("rel");
    ok(&tc(&[
        &"master",
        &env.oem,
        &"--product",
        &"7",
        &"--version",
        &"1.0.0",
        &"--image",
        &img,
        &"--out",
        &rel,
    ]));
    let root = env.oem.join("root.pem");
    let upk = std::fs::read(rel.join("update.upk")).unwrap();
    let enc = std::fs::read(rel.join("update.enc")).unwrap();
    let copy = |name: &str, u: &[u8], e: &[u8]| {
        let d = env.root.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("update.upk"), u).unwrap();
        std::fs::write(d.join("update.enc"), e).unwrap();
        d
    };
    let mut flipped = enc.clone();
    flipped[4000] ^= 1;
    fails_with(
        &tc(&[&"verify", &copy("t1", &upk, &flipped), &"--root", &root]),
        "differs from the ciphertext digest",
    );
    fails_with(
        &tc(&[
            &"verify",
            &copy("t2", &upk, &enc[..enc.len() - 1]),
            &"--root",
            &root,
        ]),
        "bytes but the UPK says",
    );
    fails_with(
        &tc(&[
            &"verify",
            &copy("t3", &upk[..upk.len() - 10], &enc),
            &"--root",
            &root,
        ]),
        "update.upk",
    );
    let mut sig = upk.clone();
    let n = sig.len();
    sig[n - 5] ^= 1;
    fails_with(
        &tc(&[&"verify", &copy("t4", &sig, &enc), &"--root", &root]),
        "signature does not verify",
    );
    // Another OEM's root.
    let other = env.root.join("other");
    ok(&tc(&[
        &"oem",
        &"init",
        &other,
        &"--oem-id",
        &"99",
        &"--name",
        &"Other",
    ]));
    fails_with(
        &tc(&[&"verify", &rel, &"--root", &other.join("root.pem")]),
        "chain does not validate",
    );
    // A garbled certificate as root.
    fails_with(&tc(&[&"verify", &rel, &"--root", &img]), "fw.bin");
    // The decrypt side also refuses a tampered image and leaves no output.
    let out = env.root.join("dec.bin");
    fails_with(
        &tc(&[
            &"decrypt",
            &env.oem,
            &copy("t5", &upk, &flipped),
            &"--out",
            &out,
        ]),
        "update.enc",
    );
    assert!(!out.exists());
}

#[test]
fn help_explains_the_supply_chain() {
    let out = ok(&tc(&[&"--help"]));
    assert!(out.contains("Secure development"));
    assert!(out.contains("Secure mastering"));
    let out = ok(&tc(&[&"master", &"--help"]));
    assert!(out.contains("update.upk"));
    assert!(out.contains("--security-counter"));
    // The one secret option also carries a token's PIN.
    assert!(out.contains("user PIN"));
}

#[test]
fn every_command_help_names_its_step() {
    let steps = [
        "Secure development",
        "Secure mastering",
        "Secure production",
        "In the field",
        "The device",
        "Anyone",
        "supply chain end to end",
    ];
    for cmd in [
        "oem init",
        "oem product",
        "oem reconcile",
        "oem revoke",
        "oem server-cert",
        "master",
        "inspect",
        "verify",
        "decrypt",
        "wrap",
        "guardian init",
        "guardian trust",
        "guardian import",
        "guardian jobs",
        "guardian log",
        "produce",
        "report",
        "device new",
        "device info",
        "device provision",
        "device install",
        "device boot",
        "device update",
        "device fetch",
        "auth",
        "update-server",
        "demo",
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push("--help");
        let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        let out = ok(&tc(&refs));
        assert!(
            steps.iter().any(|s| out.contains(s)),
            "`trustchain {cmd} --help` names no supply-chain step:\n{out}"
        );
    }
}

#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("demo");
    let out = ok(&tc(&[&"demo", &"--keep", &keep]));
    assert!(out.contains("refused"));
    assert!(keep.join("release-1.0.0/update.upk").is_file());
    assert!(!keep.join("release-0.9.0").exists());
}

#[test]
fn device_lifecycle_through_the_cli() {
    let env = setup();
    let img = image(&env, "fw.bin", 20_000);
    let r1 = env.root.join("r1");
    let r2 = env.root.join("r2");
    for (v, r) in [("1.0.0", &r1), ("1.1.0", &r2)] {
        ok(&tc(&[
            &"master",
            &env.oem,
            &"--product",
            &"7",
            &"--version",
            &v,
            &"--image",
            &img,
            &"--out",
            r,
            &"--load-address",
            &"0x08000000",
        ]));
    }
    let dev = env.root.join("dev");
    ok(&tc(&[&"device", &"new", &dev, &"--uid", &"0a0b0c"]));
    fails_with(&tc(&[&"device", &"boot", &dev]), "recovery");
    // Installing into an unprovisioned device is refused.
    fails_with(
        &tc(&[&"device", &"install", &dev, &r1]),
        "not fully provisioned",
    );
    ok(&tc(&[
        &"device",
        &"provision",
        &dev,
        &"--oem",
        &env.oem,
        &"--product",
        &"7",
    ]));
    let out = ok(&tc(&[&"device", &"install", &dev, &r1, &"--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "1.0.0");
    let info: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"device", &"info", &dev, &"--json"]))).unwrap();
    assert_eq!(info["lifecycle"], "locked");
    assert_eq!(info["uid"], "0a0b0c");
    assert_eq!(info["installed"]["version"], "1.0.0");
    // The device certificate chains to the OEM root (openssl).
    let leaf = env.root.join("leaf.pem");
    let ca = env.root.join("ca.pem");
    std::fs::write(&leaf, info["certificate_chain"][0].as_str().unwrap()).unwrap();
    std::fs::write(&ca, info["certificate_chain"][1].as_str().unwrap()).unwrap();
    let o = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(env.oem.join("root.pem"))
        .arg("-untrusted")
        .arg(&ca)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Provisioning twice is refused.
    fails_with(
        &tc(&[
            &"device",
            &"provision",
            &dev,
            &"--oem",
            &env.oem,
            &"--product",
            &"7",
        ]),
        "not blank",
    );
    // Update, then a rollback attempt that leaves 1.1.0 running.
    let out = ok(&tc(&[&"device", &"update", &dev, &r2]));
    assert!(out.contains("1.1.0"));
    let before = std::fs::read(dev.join("flash.bin")).unwrap();
    fails_with(&tc(&[&"device", &"update", &dev, &r1]), "rollback");
    assert_eq!(
        std::fs::read(dev.join("flash.bin")).unwrap(),
        before,
        "a refused update changes nothing"
    );
    assert!(ok(&tc(&[&"device", &"boot", &dev])).contains("1.1.0"));
    // Tampering with the application in flash.bin stops it from running.
    let mut flash = before.clone();
    flash[64] ^= 0x80;
    std::fs::write(dev.join("flash.bin"), flash).unwrap();
    fails_with(
        &tc(&[&"device", &"boot", &dev]),
        "does not match the signed digest",
    );
}

#[test]
fn wrap_and_guardian_import_through_the_cli() {
    let env = setup();
    let img = image(&env, "fw.bin", 4_000);
    let rel = env.root.join("rel");
    ok(&master_7(&env.oem, "1.0.0", &img, &rel));
    let g = env.root.join("guardian");
    let init = ok(&tc(&[&"guardian", &"init", &g, &"--name", &"Center"]));
    // `inspect` reads the identity OEMs are sent, and shows the ID that
    // `guardian init` printed.
    let id: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"inspect", &g.join("identity.pem"), &"--json"]))).unwrap();
    assert!(id["kind"]
        .as_str()
        .unwrap()
        .starts_with("Guardian identity"));
    let guardian_id = id["details"]["guardian_id"].as_str().unwrap();
    assert_eq!(guardian_id.len(), 64);
    assert!(init.contains(guardian_id), "{init}");
    assert!(id["details"]["signing_certificate"]["subject"]
        .as_str()
        .unwrap()
        .contains("Center"));
    // Any other PEM chain is listed certificate by certificate.
    let chain = env.root.join("chain.pem");
    let mut both = std::fs::read(env.oem.join("device-ca.pem")).unwrap();
    both.extend(std::fs::read(env.oem.join("root.pem")).unwrap());
    std::fs::write(&chain, both).unwrap();
    let c: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"inspect", &chain, &"--json"]))).unwrap();
    assert_eq!(c["kind"], "X.509 certificate chain (PEM)");
    assert_eq!(c["details"]["certificates"], 2);
    assert_eq!(c["details"]["chain"][1]["oem_id"], 0x1234);
    let pkg = env.root.join("job.tcpkg");
    let r: serde_json::Value = serde_json::from_str(&ok(&tc(&[
        &"wrap",
        &env.oem,
        &"--product",
        &"7",
        &"--guardian",
        &g.join("identity.pem"),
        &"--count",
        &"4",
        &"--release",
        &rel,
        &"--out",
        &pkg,
        &"--serial-start",
        &"100",
        &"--json",
    ])))
    .unwrap();
    assert_eq!(r["serials"], serde_json::json!([100, 103]));
    let i: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"inspect", &pkg, &"--json"]))).unwrap();
    assert!(i["kind"]
        .as_str()
        .unwrap()
        .starts_with("production package"));
    fails_with(&tc(&[&"guardian", &"import", &g, &pkg]), "not trusted");
    ok(&tc(&[&"guardian", &"trust", &g, &env.oem.join("root.pem")]));
    let imp: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"guardian", &"import", &g, &pkg, &"--json"]))).unwrap();
    assert_eq!(imp["count"], 4);
    fails_with(&tc(&[&"guardian", &"import", &g, &pkg]), "already imported");
    let jobs: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"guardian", &"jobs", &g, &"--json"]))).unwrap();
    assert_eq!(jobs[0]["remaining"], 4);
    // A package for another Guardian, and an existing output file.
    let g2 = env.root.join("guardian2");
    ok(&tc(&[&"guardian", &"init", &g2, &"--name", &"Other"]));
    fails_with(
        &tc(&[&"guardian", &"import", &g2, &pkg]),
        "cannot be opened by this Guardian",
    );
    fails_with(
        &tc(&[
            &"wrap",
            &env.oem,
            &"--product",
            &"7",
            &"--guardian",
            &g.join("identity.pem"),
            &"--count",
            &"4",
            &"--release",
            &rel,
            &"--out",
            &pkg,
        ]),
        "already exists",
    );
    // The wrap is in the OEM's audit log.
    assert!(std::fs::read_to_string(env.oem.join("audit.log"))
        .unwrap()
        .contains("\"action\":\"wrap\""));
}

#[test]
fn produce_through_the_cli() {
    let env = setup();
    let img = image(&env, "fw.bin", 3_000);
    let rel = env.root.join("rel");
    ok(&master_7(&env.oem, "1.0.0", &img, &rel));
    let g = env.root.join("g");
    ok(&tc(&[&"guardian", &"init", &g, &"--name", &"Center"]));
    ok(&tc(&[&"guardian", &"trust", &g, &env.oem.join("root.pem")]));
    let pkg = env.root.join("job.tcpkg");
    ok(&tc(&[
        &"wrap",
        &env.oem,
        &"--product",
        &"7",
        &"--guardian",
        &g.join("identity.pem"),
        &"--count",
        &"3",
        &"--release",
        &rel,
        &"--out",
        &pkg,
    ]));
    ok(&tc(&[&"guardian", &"import", &g, &pkg]));
    let devs = env.root.join("devices");
    let s: serde_json::Value = serde_json::from_str(&ok(&tc(&[
        &"produce",
        &g,
        &"--job",
        &"1",
        &"--devices",
        &devs,
        &"--count",
        &"2",
        &"--json",
    ])))
    .unwrap();
    assert_eq!(
        (
            s["provisioned"].as_u64(),
            s["programmed"].as_u64(),
            s["remaining"].as_u64()
        ),
        (Some(2), Some(2), Some(1))
    );
    // More than remain: the rest is produced and the command says how many could not be.
    fails_with(
        &tc(&[
            &"produce",
            &g,
            &"--job",
            &"1",
            &"--devices",
            &devs,
            &"--count",
            &"3",
        ]),
        "2 of the 3 devices",
    );
    // None remain: refused before any device is touched.
    let before = std::fs::read_dir(&devs).unwrap().count();
    fails_with(
        &tc(&[
            &"produce",
            &g,
            &"--job",
            &"1",
            &"--devices",
            &devs,
            &"--count",
            &"1",
        ]),
        "no devices left",
    );
    assert_eq!(std::fs::read_dir(&devs).unwrap().count(), before);
    // A produced device boots its release.
    let first = std::fs::read_dir(&devs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    assert!(ok(&tc(&[&"device", &"boot", &first])).contains("1.0.0"));
}

/// Commands that change OEM_DIR wait for its lock (another trustchain
/// process changing it), then do their work: held here, `master` and
/// `oem product` say they are waiting and do not finish; released, both
/// finish and the audit log is one unbroken chain.
#[test]
fn oem_commands_wait_for_the_directory_lock() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let env = setup();
    let img = image(&env, "fw.bin", 3_000);
    let audit = |env: &Env| json(&tc(&[&"inspect", &env.oem.join("audit.log"), &"--json"]));
    let before = audit(&env)["details"]["records"].as_u64().unwrap();
    let held = std::fs::File::open(&env.oem).unwrap();
    held.lock().unwrap();
    let rel = env.root.join("rel");
    let commands = [
        master_7_command(&env.oem, "1.0.0", &img, &rel),
        trustchain(&[
            &"oem",
            &"product",
            &env.oem,
            &"--product-id",
            &"9",
            &"--name",
            &"Gateway",
        ]),
    ];
    // Each child's stderr, gathered as it comes.
    let mut running = vec![];
    for mut c in commands {
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let sink = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        running.push((child, err));
    }
    let waiting = |err: &Arc<Mutex<String>>| {
        err.lock()
            .unwrap()
            .contains("another trustchain process is changing it")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !running.iter().all(|(_, e)| waiting(e)) {
        assert!(
            std::time::Instant::now() < deadline,
            "never waited for the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (child, err) in &mut running {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished under the lock: {}",
            err.lock().unwrap()
        );
    }
    assert!(!rel.exists() && !env.oem.join("products/9").exists());
    drop(held);
    for (mut child, err) in running {
        let status = child.wait().unwrap();
        assert!(status.success(), "{}", err.lock().unwrap());
    }
    assert!(rel.join("update.upk").is_file() && env.oem.join("products/9").is_dir());
    let after = audit(&env);
    assert_eq!(after["details"]["chain"], "intact");
    assert_eq!(after["details"]["records"].as_u64().unwrap(), before + 2);
}
