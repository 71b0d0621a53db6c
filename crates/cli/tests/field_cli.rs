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
        &"T",
    ]));
    let img = root.join("fw.bin");
    std::fs::write(&img, vec![0x3cu8; 9000]).unwrap();
    for (v, r) in [("1.0.0", "r1"), ("1.1.0", "r2")] {
        ok(&tc(&[
            &"master",
            &oem,
            &"--product",
            &"7",
            &"--version",
            &v,
            &"--image",
            &img,
            &"--out",
            &root.join(r),
            &"--load-address",
            &"0x08000000",
        ]));
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
