//! `trustchain auth DEVICE_A DEVICE_B` as a user runs it: both identities and
//! the outcome; a refusal names its reason, exits non-zero, and no device
//! file changes, ever.
mod support;

use std::path::Path;

use support::*;

/// Runs `auth` with `extra` args and `--json`; asserts that no file of
/// either device changed; returns (exit success, JSON, stderr).
fn auth(
    a: &Path,
    b: &Path,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> (bool, serde_json::Value, String) {
    let before = (files(a), files(b));
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"auth", &a, &b, &"--json"];
    args.extend_from_slice(extra);
    let out = tc(&args);
    assert_eq!((files(a), files(b)), before, "a device file changed");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refusal(r: (bool, serde_json::Value, String), by: &str, reason: &str, code: u64) {
    let (success, v, err) = r;
    assert!(!success, "accepted: {v}");
    assert_eq!(v["authenticated"], false);
    assert_eq!(v["refusal"]["by"], by, "{v}");
    assert_eq!(v["refusal"]["reason"], reason, "{v}");
    assert_eq!(v["refusal"]["code"], code, "{v}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn auth_between_simulated_devices() {
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
    for (id, name) in [("7", "Thermostat"), ("8", "Gateway")] {
        ok(&tc(&[
            &"oem",
            &"product",
            &oem,
            &"--product-id",
            &id,
            &"--name",
            &name,
        ]));
    }
    let dev = |name: &str, uid: &str, product: &str, serial: &str| {
        let d = root.join(name);
        ok(&tc(&[&"device", &"new", &d, &"--uid", &uid]));
        ok(&tc(&[
            &"device",
            &"provision",
            &d,
            &"--oem",
            &oem,
            &"--product",
            &product,
            &"--serial",
            &serial,
        ]));
        d
    };
    let a = dev("a", "01020304", "7", "1");
    let b = dev("b", "05060708", "7", "2");
    let gw = dev("gw", "0a0b", "8", "3");

    // Success, in text: both identities and the outcome.
    let out = ok(&tc(&[&"auth", &a, &b]));
    assert!(out.contains("UID 01020304, OEM 4660, product 7"), "{out}");
    assert!(out.contains("UID 05060708, OEM 4660, product 7"), "{out}");
    assert!(out.contains("authenticated"), "{out}");
    // In JSON.
    let (success, v, _) = auth(&a, &b, &[]);
    assert!(success);
    assert_eq!(v["authenticated"], true);
    assert_eq!(v["a"]["uid"], "01020304");
    assert_eq!(v["b"]["uid"], "05060708");
    assert_eq!(v["b"]["product_id"], 7);
    assert_eq!(v["a"]["role"], "initiator");
    assert_eq!(v["transcript_hash"].as_str().unwrap().len(), 64);

    // Wrong product, then allowed.
    refusal(auth(&a, &gw, &[]), "B", "wrong-product", 8);
    let (success, _, _) = auth(&a, &gw, &[&"--product", &"7", &"--product", &"8"]);
    assert!(success);

    // Expired (the device CA is valid for 15 years) and not yet valid.
    refusal(
        auth(&a, &b, &[&"--now", &"2050-01-01T00:00:00Z"]),
        "B",
        "expired",
        5,
    );
    refusal(
        auth(&a, &b, &[&"--now", &"2001-01-01T00:00:00Z"]),
        "B",
        "expired",
        5,
    );

    // Revoked: the OEM revokes A; B's application holds the CRL bundle.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&tc(&[&"device", &"info", &a, &"--json"]))).unwrap();
    let cert = root.join("a.pem");
    std::fs::write(&cert, info["certificate_chain"][0].as_str().unwrap()).unwrap();
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
                cert: std::fs::read(&cert).unwrap(),
                cert_path: cert.clone(),
                reason: trustchain_oem::revoke::Reason::parse("key-compromise").unwrap(),
                days: 30,
                operator: "test".into(),
                now: time::OffsetDateTime::now_utc(),
            },
        )
        .unwrap();
    }
    let crl = oem.join("crl.pem");
    refusal(auth(&a, &b, &[&"--crl", &crl]), "B", "revoked", 6);
    refusal(auth(&b, &a, &[&"--crl", &crl]), "A", "revoked", 6);
    let (success, _, _) = auth(
        &b,
        &gw,
        &[&"--crl", &crl, &"--product", &"7", &"--product", &"8"],
    );
    assert!(success, "a device the CRL does not name passes");
    // The same CRL after its nextUpdate (30 days on) can no longer be
    // trusted: even the device it does not name is refused, as bad-crl,
    // and the detail says when it expired and how to refresh it.
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(31))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let expired = auth(
        &b,
        &gw,
        &[
            &"--crl",
            &crl,
            &"--product",
            &"7",
            &"--product",
            &"8",
            &"--now",
            &later,
        ],
    );
    let detail = expired.1["refusal"]["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("expired at") && detail.contains("(its nextUpdate)"),
        "{detail}"
    );
    assert!(
        expired
            .2
            .contains("trustchain oem revoke OEM_DIR --refresh"),
        "{}",
        expired.2
    );
    refusal(expired, "B", "bad-crl", 14);

    // Another OEM root.
    let other = root.join("other");
    ok(&tc(&[
        &"oem",
        &"init",
        &other,
        &"--oem-id",
        &"0x1234",
        &"--name",
        &"Other",
    ]));
    ok(&tc(&[
        &"oem",
        &"product",
        &other,
        &"--product-id",
        &"7",
        &"--name",
        &"Thermostat",
    ]));
    let x = root.join("x");
    ok(&tc(&[&"device", &"new", &x, &"--uid", &"ff"]));
    ok(&tc(&[
        &"device",
        &"provision",
        &x,
        &"--oem",
        &other,
        &"--product",
        &"7",
    ]));
    refusal(auth(&x, &b, &[]), "B", "unknown-root", 4);

    // Setup errors are errors, not refusals: a blank device, a bad time.
    let blank = root.join("blank");
    ok(&tc(&[&"device", &"new", &blank, &"--uid", &"aa"]));
    let out = tc(&[&"auth", &a, &blank]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("provision"));
    let out = tc(&[&"auth", &a, &b, &"--now", &"yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}
