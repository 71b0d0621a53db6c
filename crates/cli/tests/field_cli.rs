//! In the field through the binary: `oem server-cert`, `update-server`,
//! `device fetch` + `device boot`, `oem revoke`, and their refusals.
mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use support::*;

/// A running `trustchain update-server`, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Server {
    let mut child = trustchain(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn update-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    Server { child, url }
}

#[test]
fn serve_fetch_boot_revoke_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let oem = root.join("oem");
    acme_with_product_7(&oem, "T");
    let img = root.join("fw.bin");
    std::fs::write(&img, vec![0x3cu8; 9000]).unwrap();
    for (v, r) in [("1.0.0", "r1"), ("1.1.0", "r2")] {
        ok(&master_7(&oem, v, &img, &root.join(r)));
    }
    let devs: Vec<PathBuf> = ["d1", "d2"].iter().map(|d| root.join(d)).collect();
    for (d, uid) in devs.iter().zip(["d1", "d2"]) {
        ok(&tc(&[&"device", &"new", d, &"--uid", &uid]));
        ok(&tc(&[
            &"device",
            &"provision",
            d,
            &"--oem",
            &oem,
            &"--product",
            &"7",
        ]));
        ok(&tc(&[&"device", &"install", d, &root.join("r1")]));
    }

    // The server's identity, certified by the OEM root.
    let id = root.join("server-id");
    let out = ok(&tc(&[
        &"oem",
        &"server-cert",
        &oem,
        &"--name",
        &"127.0.0.1",
        &"--out",
        &id,
        &"--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["names"][0], "127.0.0.1");
    fails_with(
        &tc(&[
            &"oem",
            &"server-cert",
            &oem,
            &"--name",
            &"127.0.0.1",
            &"--out",
            &id,
        ]),
        "already exists",
    );

    let root_pem = oem.join("root.pem");
    let srv = server(&[
        &"update-server",
        &"--release",
        &root.join("r2"),
        &"--root",
        &root_pem,
        &"--listen",
        &"127.0.0.1:0",
        &"--identity",
        &id,
    ]);
    let out = ok(&tc(&[
        &"device",
        &"fetch",
        &devs[0],
        &"--server",
        &srv.url,
        &"--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["version"].as_str(), v["staged"].as_bool()),
        (Some("1.1.0"), Some(true))
    );
    let out = ok(&tc(&[&"device", &"boot", &devs[0], &"--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "1.1.0");
    drop(srv);

    // The OEM revokes d2; a server given the CRL refuses it, d2 unchanged.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"device", &"info", &devs[1], &"--json"]))).unwrap();
    let cert = root.join("d2.pem");
    std::fs::write(&cert, info["certificate_chain"][0].as_str().unwrap()).unwrap();
    let out = ok(&tc(&[&"oem", &"revoke", &oem, &"--cert", &cert, &"--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["crl_number"].as_u64(), v["revoked_count"].as_u64()),
        (Some(1), Some(1))
    );
    fails_with(
        &tc(&[&"oem", &"revoke", &oem, &"--cert", &cert]),
        "already revoked",
    );
    fails_with(
        &tc(&[
            &"oem",
            &"revoke",
            &oem,
            &"--cert",
            &cert,
            &"--reason",
            &"bored",
        ]),
        "--reason",
    );
    let srv = server(&[
        &"update-server",
        &"--release",
        &root.join("r2"),
        &"--root",
        &root_pem,
        &"--listen",
        &"127.0.0.1:0",
        &"--identity",
        &id,
        &"--crl",
        &oem.join("crl.pem"),
    ]);
    let before = files(&devs[1]);
    fails_with(
        &tc(&[&"device", &"fetch", &devs[1], &"--server", &srv.url]),
        "revoked",
    );
    assert_eq!(files(&devs[1]), before, "a refused device is unchanged");
    drop(srv);

    // Bad inputs: a CRL file that is not one, a release that does not verify, a bad URL.
    let junk = root.join("junk.pem");
    std::fs::write(&junk, "not a crl").unwrap();
    fails_with(
        &tc(&[
            &"update-server",
            &"--release",
            &root.join("r2"),
            &"--root",
            &root_pem,
            &"--listen",
            &"127.0.0.1:0",
            &"--identity",
            &id,
            &"--crl",
            &junk,
        ]),
        "junk.pem",
    );
    fails_with(
        &tc(&[
            &"update-server",
            &"--release",
            &root.join("nowhere"),
            &"--root",
            &root_pem,
            &"--listen",
            &"127.0.0.1:0",
            &"--identity",
            &id,
        ]),
        "nowhere",
    );
    fails_with(
        &tc(&[
            &"device",
            &"fetch",
            &devs[1],
            &"--server",
            &"http://127.0.0.1:1",
        ]),
        "https://",
    );
}

/// An OEM directory with product 7 and provisioned devices `uids` under
/// `root`; returns the OEM directory and each device's leaf certificate file.
fn oem_with_devices(root: &std::path::Path, uids: &[&str]) -> (PathBuf, Vec<PathBuf>) {
    let oem = root.join("oem");
    acme_with_product_7(&oem, "T");
    let mut certs = vec![];
    for uid in uids {
        let d = root.join(format!("dev-{uid}"));
        ok(&tc(&[&"device", &"new", &d, &"--uid", uid]));
        ok(&tc(&[
            &"device",
            &"provision",
            &d,
            &"--oem",
            &oem,
            &"--product",
            &"7",
        ]));
        let info: serde_json::Value =
            serde_json::from_str(&ok(&tc(&[&"device", &"info", &d, &"--json"]))).unwrap();
        let cert = root.join(format!("{uid}.pem"));
        std::fs::write(&cert, info["certificate_chain"][0].as_str().unwrap()).unwrap();
        certs.push(cert);
    }
    (oem, certs)
}

/// The one CRL of `oem` (the device CA's) and what it says.
fn device_ca_crl(oem: &std::path::Path) -> (PathBuf, Vec<u8>, trustchain_field::crl::CrlInfo) {
    let files: Vec<PathBuf> = std::fs::read_dir(oem.join("crl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".crl.pem"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let der = trustchain_field::crl::parse(&bytes).unwrap().remove(0);
    let info = trustchain_field::crl::info(der.as_ref()).unwrap();
    (files[0].clone(), bytes, info)
}

#[test]
fn oem_revoke_refresh_re_signs_the_crls_with_the_same_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (oem, certs) = oem_with_devices(root, &["c1", "c2"]);

    // Nothing revoked yet: nothing to refresh, and nothing is written.
    let before = snapshot(&oem);
    let copy = root.join("copy.pem");
    let err = fails_with(
        &tc(&[&"oem", &"revoke", &oem, &"--refresh", &"--out", &copy]),
        "no CRL to refresh",
    );
    assert!(err.contains("--cert CERT"), "{err}");
    assert_eq!(snapshot(&oem), before, "the OEM directory changed");
    assert!(!oem.join("crl").exists() && !oem.join("crl.pem").exists());
    assert!(!copy.exists());

    // --cert and --refresh together, or neither: a usage error, nothing written.
    fails_with(
        &tc(&[&"oem", &"revoke", &oem, &"--refresh", &"--cert", &certs[0]]),
        "cannot be used with",
    );
    fails_with(&tc(&[&"oem", &"revoke", &oem]), "--refresh");
    assert_eq!(snapshot(&oem), before, "the OEM directory changed");

    // Two revocations (existing flags, unchanged meaning), then a refresh.
    for (cert, reason) in [(&certs[0], "key-compromise"), (&certs[1], "superseded")] {
        ok(&tc(&[
            &"oem",
            &"revoke",
            &oem,
            &"--cert",
            cert,
            &"--reason",
            &reason,
            &"--days",
            &"7",
        ]));
    }
    let (crl_file, old_bytes, old) = device_ca_crl(&oem);
    assert_eq!((old.number, old.entries.len()), (Some(2), 2));
    assert_eq!(old.next_update - old.this_update, 7 * 86_400);
    assert_eq!(std::fs::read(oem.join("crl.pem")).unwrap(), old_bytes);
    let audit_lines = std::fs::read_to_string(oem.join("audit.log"))
        .unwrap()
        .lines()
        .count();
    // Refresh moves thisUpdate; make sure a second has passed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let v = json(&tc(&[
        &"oem",
        &"revoke",
        &oem,
        &"--refresh",
        &"--days",
        &"90",
        &"--out",
        &copy,
        &"--json",
    ]));
    assert_eq!(v["crls"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["crls"][0]["issuer"], "device-ca");
    assert_eq!(v["crls"][0]["crl_number"], 3);
    assert_eq!(v["crls"][0]["revoked_count"], 2);
    let (same_file, new_bytes, new) = device_ca_crl(&oem);
    assert_eq!(same_file, crl_file);
    assert_ne!(new_bytes, old_bytes);
    // Number up, the same entries (serials, dates, reasons), new validity.
    assert_eq!(new.number, Some(3));
    assert_eq!(new.entries, old.entries);
    assert_eq!(new.issuer, old.issuer);
    assert!(new.this_update > old.this_update, "{new:?} {old:?}");
    assert_eq!(new.next_update - new.this_update, 90 * 86_400);
    assert!(new.next_update > old.next_update);
    assert_eq!(
        v["next_update"].as_str().unwrap(),
        trustchain_field::crl::rfc3339(new.next_update)
    );
    // The bundle (and its copy) is the new CRL.
    assert_eq!(std::fs::read(oem.join("crl.pem")).unwrap(), new_bytes);
    assert_eq!(std::fs::read(&copy).unwrap(), new_bytes);
    // One audit line, of the refresh.
    let log = std::fs::read_to_string(oem.join("audit.log")).unwrap();
    assert_eq!(log.lines().count(), audit_lines + 1);
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            last["action"].as_str(),
            last["issuer"].as_str(),
            last["crl_number"].as_u64(),
            last["revoked_count"].as_u64(),
            last["next_update"].as_str(),
        ),
        (
            Some("crl_refresh"),
            Some("device-ca"),
            Some(3),
            Some(2),
            v["next_update"].as_str()
        )
    );
    // --out must not exist: refused before anything is signed.
    let before = snapshot(&oem);
    fails_with(
        &tc(&[&"oem", &"revoke", &oem, &"--refresh", &"--out", &copy]),
        "already exists",
    );
    assert_eq!(snapshot(&oem), before);
    // Revoking after a refresh continues from the refreshed CRL.
    fails_with(
        &tc(&[&"oem", &"revoke", &oem, &"--cert", &certs[0]]),
        "already revoked",
    );
}

#[test]
fn update_server_refuses_to_start_with_an_expired_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (oem, certs) = oem_with_devices(root, &["e1"]);
    let img = root.join("fw.bin");
    std::fs::write(&img, vec![0x3cu8; 4000]).unwrap();
    let release = root.join("r1");
    ok(&master_7(&oem, "1.0.0", &img, &release));
    let id = root.join("server-id");
    ok(&tc(&[
        &"oem",
        &"server-cert",
        &oem,
        &"--name",
        &"127.0.0.1",
        &"--out",
        &id,
    ]));
    // A CRL revoked 31 days ago, current for 30: expired now (what a
    // replayed old CRL, or a forgotten refresh, looks like).
    let then = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    {
        let dir = trustchain_oem::oem::OemDir::open(&oem).unwrap();
        let pass = trustchain_oem::keystore::passphrase::Passphrase::new(zeroize::Zeroizing::new(
            PASS.to_string(),
        ))
        .unwrap();
        let ks = dir.unlock(&pass).unwrap();
        trustchain_oem::revoke::revoke(
            &dir,
            &ks,
            &trustchain_oem::revoke::RevokeRequest {
                cert: std::fs::read(&certs[0]).unwrap(),
                cert_path: certs[0].clone(),
                reason: trustchain_oem::revoke::Reason::KeyCompromise,
                days: 30,
                operator: "test".into(),
                now: then,
            },
        )
        .unwrap();
    }
    let next_update =
        trustchain_field::crl::rfc3339((then.unix_timestamp() + 30 * 86_400).try_into().unwrap());
    let crl = oem.join("crl.pem");
    let args = |crl: &PathBuf| -> Vec<std::ffi::OsString> {
        [
            "update-server".as_ref(),
            "--release".as_ref(),
            release.as_os_str(),
            "--root".as_ref(),
            oem.join("root.pem").as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--identity".as_ref(),
            id.as_os_str(),
            "--crl".as_ref(),
            crl.as_os_str(),
        ]
        .iter()
        .map(|s: &&std::ffi::OsStr| s.to_os_string())
        .collect()
    };
    let a = args(&crl);
    let refs: Vec<&dyn AsRef<std::ffi::OsStr>> =
        a.iter().map(|s| s as &dyn AsRef<std::ffi::OsStr>).collect();
    let err = fails_with(&tc(&refs), "expired at");
    for needle in [
        &format!("{}: CRL 1 of 1: the CRL of ", crl.display()),
        "Acme Device CA",
        "CRL number 1",
        &format!("expired at {next_update} (its nextUpdate)"),
        "trustchain oem revoke OEM_DIR --refresh",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    // Refreshed at the OEM, the same server starts.
    ok(&tc(&[&"oem", &"revoke", &oem, &"--refresh"]));
    let srv = server(&refs);
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
}
