//! OEM and Guardian keys in a PKCS#11 token, through the CLI, for real
//! against SoftHSM2 (Debian `softhsm2`, installed by `.ci/run`). There is no
//! skip: without the module these tests fail and say how to get it.
//!
//! Each test has its own SoftHSM2 configuration and token directory (every
//! `trustchain` process gets `SOFTHSM2_CONF`), and its own tokens.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SO_PIN: &str = "1234";
const PIN: &str = "5678";
/// The passphrase of the sealed (software) directories beside the tokens.
const PASS: &str = "integration test passphrase";

fn module() -> PathBuf {
    let m = std::env::var_os("TRUSTCHAIN_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        m.is_file(),
        "the PKCS#11 module {} is missing: these tests run against SoftHSM2, which `.ci/run` \
         installs (`apt-get install softhsm2`); or point TRUSTCHAIN_PKCS11_MODULE at another \
         SoftHSM2 build",
        m.display()
    );
    m
}

/// A private SoftHSM2 (configuration and token directory) with `tokens`
/// initialised (user PIN [`PIN`]), and a place for the test's files.
struct Hsm {
    tmp: tempfile::TempDir,
    conf: PathBuf,
    module: PathBuf,
}

impl Hsm {
    fn new(tokens: &[&str]) -> Self {
        let module = module();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("softhsm");
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        for label in tokens {
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", PIN])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util (Debian package softhsm2, installed by .ci/run)");
            assert!(
                out.status.success(),
                "softhsm2-util --init-token {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(tmp.path().join("pin"), format!("{PIN}\n")).unwrap();
        std::fs::write(tmp.path().join("wrong-pin"), "0000\n").unwrap();
        Self { tmp, conf, module }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Runs `trustchain` with `secret` as the passphrase channel (the PIN
    /// for a token directory, the passphrase for a sealed one).
    fn tc(&self, secret: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_trustchain"))
            .args(args.iter().map(|a| a.as_ref()))
            .env("TRUSTCHAIN_PASSPHRASE", secret)
            .env("SOFTHSM2_CONF", &self.conf)
            .env_remove("TRUSTCHAIN_LOG")
            .output()
            .expect("run trustchain")
    }

    /// `oem init` with the keys in `token`, the PIN from a file.
    fn oem_init(&self, dir: &Path, token: &str, pin_file: &str) -> Output {
        self.tc(
            "not the PIN",
            &[
                &"oem",
                &"init",
                &dir,
                &"--oem-id",
                &"0x1234",
                &"--name",
                &"Acme",
                &"--pkcs11-module",
                &self.module,
                &"--token",
                &token,
                &"--pin-file",
                &self.path(pin_file),
            ],
        )
    }

    fn guardian_init(&self, dir: &Path, token: &str, pin_file: &str) -> Output {
        self.tc(
            "not the PIN",
            &[
                &"guardian",
                &"init",
                &dir,
                &"--name",
                &"Center",
                &"--pkcs11-module",
                &self.module,
                &"--token",
                &token,
                &"--pin-file",
                &self.path(pin_file),
            ],
        )
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with exactly one `error:` line containing every one of `needles`.
fn fails_with(out: &Output, needles: &[&str]) -> String {
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
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
    err
}

/// Every file below `dir` with its bytes, to prove nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
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

/// The key files in a keystore directory, sorted.
fn key_files(keystore: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(keystore)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".key"))
        .collect();
    v.sort();
    v
}

fn image(path: &Path, len: usize) -> PathBuf {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

/// A sealed OEM with product 7 and a release of it, for the Guardian tests.
fn sealed_oem_with_release(h: &Hsm) -> (PathBuf, PathBuf) {
    let oem = h.path("oem");
    ok(&h.tc(
        PASS,
        &[
            &"oem",
            &"init",
            &oem,
            &"--oem-id",
            &"0x1234",
            &"--name",
            &"Acme",
        ],
    ));
    ok(&h.tc(
        PASS,
        &[
            &"oem",
            &"product",
            &oem,
            &"--product-id",
            &"7",
            &"--name",
            &"Thermostat",
        ],
    ));
    let rel = h.path("rel");
    let img = image(&h.path("fw.bin"), 3_000);
    ok(&h.tc(
        PASS,
        &[
            &"master",
            &oem,
            &"--product",
            &"7",
            &"--version",
            &"1.0.0",
            &"--image",
            &img,
            &"--out",
            &rel,
            &"--load-address",
            &"0x08000000",
        ],
    ));
    (oem, rel)
}

/// `trustchain guardian init --pkcs11-module --token`, then trust, import
/// and produce: the identity keys and the job's issuing key live in the
/// token (no sealed file for them), only the job's product key is sealed
/// beside it, and the whole production flow runs with the PIN alone.
#[test]
fn guardian_in_a_token_imports_produces_and_reports() {
    let h = Hsm::new(&["center"]);
    let (oem, rel) = sealed_oem_with_release(&h);
    let g = h.path("guardian");
    let out = ok(&h.guardian_init(&g, "center", "pin"));
    assert!(out.contains("inside PKCS#11 token 'center'"), "{out}");
    assert!(g.join("identity.pem").is_file());
    // The metadata names module and token, never the PIN.
    let toml = std::fs::read_to_string(g.join("guardian.toml")).unwrap();
    assert!(toml.contains("[pkcs11]") && toml.contains("token = \"center\""));
    assert!(toml.contains(&h.module.display().to_string()));
    assert!(!toml.contains(PIN));
    assert!(key_files(&g.join("keystore")).is_empty());

    ok(&h.tc(PIN, &[&"guardian", &"trust", &g, &oem.join("root.pem")]));
    let pkg = h.path("job.tcpkg");
    ok(&h.tc(
        PASS,
        &[
            &"wrap",
            &oem,
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
        ],
    ));
    // The package opens only with the token's key-agreement key.
    let imp: serde_json::Value = serde_json::from_str(&ok(
        &h.tc(PIN, &[&"guardian", &"import", &g, &pkg, &"--json"])
    ))
    .unwrap();
    assert_eq!(imp["count"], 3);
    assert_eq!(
        key_files(&g.join("keystore")),
        ["job-1-product.key"],
        "only the product key, which must travel to devices, is sealed beside the token"
    );

    let devs = h.path("devices");
    let s: serde_json::Value = serde_json::from_str(&ok(&h.tc(
        PIN,
        &[
            &"produce",
            &g,
            &"--job",
            &"1",
            &"--devices",
            &devs,
            &"--count",
            &"3",
            &"--json",
        ],
    )))
    .unwrap();
    assert_eq!(
        (s["provisioned"].as_u64(), s["programmed"].as_u64()),
        (Some(3), Some(3)),
        "{s}"
    );
    for d in std::fs::read_dir(&devs).unwrap() {
        assert!(ok(&h.tc(PIN, &[&"device", &"boot", &d.unwrap().path()])).contains("1.0.0"));
    }
    // Signed by the token's signing key, checked by the OEM.
    let report = h.path("job1.report");
    ok(&h.tc(PIN, &[&"report", &g, &"--job", &"1", &"--out", &report]));
    ok(&h.tc(PASS, &[&"oem", &"reconcile", &oem, &report]));
    ok(&h.tc(PIN, &[&"guardian", &"log", &g]));
}

/// `trustchain oem init --pkcs11-module --token`: CA and mastering keys in
/// the token, product keys sealed beside it; product, master, verify,
/// decrypt, wrap (to a sealed Guardian, which imports it) and lab
/// provisioning of a device all work with the PIN alone.
#[test]
fn oem_in_a_token_masters_wraps_and_provisions() {
    let h = Hsm::new(&["acme-root"]);
    let oem = h.path("oem");
    let out = ok(&h.oem_init(&oem, "acme-root", "pin"));
    assert!(out.contains("inside PKCS#11 token 'acme-root'"), "{out}");
    let toml = std::fs::read_to_string(oem.join("oem.toml")).unwrap();
    assert!(toml.contains("[pkcs11]") && toml.contains("token = \"acme-root\""));
    assert!(!toml.contains(PIN));
    assert!(key_files(&oem.join("keystore")).is_empty());
    // The hierarchy signed in the token verifies like any other.
    let openssl = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(oem.join("root.pem"))
        .arg(oem.join("device-ca.pem"))
        .arg(oem.join("mastering.pem"))
        .output()
        .expect("openssl");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );

    ok(&h.tc(
        PIN,
        &[
            &"oem",
            &"product",
            &oem,
            &"--product-id",
            &"7",
            &"--name",
            &"Thermostat",
        ],
    ));
    assert_eq!(key_files(&oem.join("keystore")), ["product-7-kek.key"]);
    let img = image(&h.path("fw.bin"), 5_000);
    let rel = h.path("rel");
    ok(&h.tc(
        PIN,
        &[
            &"master",
            &oem,
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
        ],
    ));
    ok(&h.tc("", &[&"verify", &rel, &"--root", &oem.join("root.pem")]));
    let plain = h.path("fw.out");
    ok(&h.tc(PIN, &[&"decrypt", &oem, &rel, &"--out", &plain]));
    assert_eq!(std::fs::read(&plain).unwrap(), std::fs::read(&img).unwrap());

    // Wrap for a (sealed) Guardian: the device CA signs in the token, the
    // product key comes from the sealed keystore beside it.
    let g = h.path("guardian");
    ok(&h.tc(PASS, &[&"guardian", &"init", &g, &"--name", &"Center"]));
    ok(&h.tc(PASS, &[&"guardian", &"trust", &g, &oem.join("root.pem")]));
    let pkg = h.path("job.tcpkg");
    ok(&h.tc(
        PIN,
        &[
            &"wrap",
            &oem,
            &"--product",
            &"7",
            &"--guardian",
            &g.join("identity.pem"),
            &"--count",
            &"2",
            &"--release",
            &rel,
            &"--out",
            &pkg,
        ],
    ));
    ok(&h.tc(PASS, &[&"guardian", &"import", &g, &pkg]));
    let devs = h.path("devices");
    ok(&h.tc(
        PASS,
        &[
            &"produce",
            &g,
            &"--job",
            &"1",
            &"--devices",
            &devs,
            &"--count",
            &"1",
        ],
    ));

    // Lab provisioning at the OEM: the device CA certifies in the token,
    // the product key is wrapped to the device from the sealed keystore.
    let dev = h.path("lab-device");
    ok(&h.tc(PIN, &[&"device", &"new", &dev]));
    ok(&h.tc(
        PIN,
        &[
            &"device",
            &"provision",
            &dev,
            &"--oem",
            &oem,
            &"--product",
            &"7",
        ],
    ));
    ok(&h.tc(PIN, &[&"device", &"install", &dev, &rel]));
    assert!(ok(&h.tc(PIN, &[&"device", &"boot", &dev])).contains("1.2.3"));
}

/// A wrong PIN is refused before anything changes: at init (no directory,
/// no key in the token, so a retry with the right PIN succeeds) and at
/// every later command (the directories are byte for byte as before).
#[test]
fn a_wrong_pin_is_refused_and_changes_nothing() {
    let h = Hsm::new(&["acme", "center"]);
    let oem = h.path("oem");
    fails_with(
        &h.oem_init(&oem, "acme", "wrong-pin"),
        &["wrong PIN", "token 'acme'", "Nothing was changed"],
    );
    assert!(!oem.exists());
    ok(&h.oem_init(&oem, "acme", "pin"));

    let before = snapshot(&oem);
    fails_with(
        &h.tc(
            "0000",
            &[
                &"oem",
                &"product",
                &oem,
                &"--product-id",
                &"7",
                &"--name",
                &"T",
            ],
        ),
        &["wrong PIN", "token 'acme'", &oem.display().to_string()],
    );
    assert_eq!(snapshot(&oem), before);
    ok(&h.tc(
        PIN,
        &[
            &"oem",
            &"product",
            &oem,
            &"--product-id",
            &"7",
            &"--name",
            &"T",
        ],
    ));

    let g = h.path("guardian");
    fails_with(&h.guardian_init(&g, "center", "wrong-pin"), &["wrong PIN"]);
    assert!(!g.exists());
    ok(&h.guardian_init(&g, "center", "pin"));
    ok(&h.tc(PIN, &[&"guardian", &"trust", &g, &oem.join("root.pem")]));
    let rel = h.path("rel");
    let img = image(&h.path("fw.bin"), 1_000);
    ok(&h.tc(
        PIN,
        &[
            &"master",
            &oem,
            &"--product",
            &"7",
            &"--version",
            &"1.0.0",
            &"--image",
            &img,
            &"--out",
            &rel,
        ],
    ));
    let pkg = h.path("job.tcpkg");
    let wrap = |secret: &str| {
        h.tc(
            secret,
            &[
                &"wrap",
                &oem,
                &"--product",
                &"7",
                &"--guardian",
                &g.join("identity.pem"),
                &"--count",
                &"2",
                &"--release",
                &rel,
                &"--out",
                &pkg,
            ],
        )
    };
    fails_with(&wrap("0000"), &["wrong PIN"]);
    assert!(!pkg.exists());
    ok(&wrap(PIN));
    let before = snapshot(&g);
    fails_with(
        &h.tc("0000", &[&"guardian", &"import", &g, &pkg]),
        &["wrong PIN", "token 'center'"],
    );
    assert_eq!(snapshot(&g), before);
    ok(&h.tc(PIN, &[&"guardian", &"import", &g, &pkg]));
}

/// The operator's mistakes with a token each get one message naming the
/// module or token and what to do; nothing is created.
#[test]
fn token_mistakes_are_clear_errors() {
    let h = Hsm::new(&["acme"]);
    let oem = h.path("oem");
    // A token label the module does not have.
    let e = fails_with(
        &h.tc(
            PIN,
            &[
                &"oem",
                &"init",
                &oem,
                &"--oem-id",
                &"1",
                &"--name",
                &"Acme",
                &"--pkcs11-module",
                &h.module,
                &"--token",
                &"nope",
            ],
        ),
        &[
            "no token labelled 'nope'",
            "'acme'",
            "softhsm2-util --init-token",
        ],
    );
    assert!(e.contains(&h.module.display().to_string()), "{e}");
    assert!(!oem.exists());
    // A module that is not there.
    fails_with(
        &h.tc(
            PIN,
            &[
                &"oem",
                &"init",
                &oem,
                &"--oem-id",
                &"1",
                &"--name",
                &"Acme",
                &"--pkcs11-module",
                &"/nonexistent/libpkcs11.so",
                &"--token",
                &"acme",
            ],
        ),
        &["/nonexistent/libpkcs11.so", "does not exist", "softhsm2"],
    );
    // A file that is not a PKCS#11 library.
    fails_with(
        &h.tc(
            PIN,
            &[
                &"oem",
                &"init",
                &oem,
                &"--oem-id",
                &"1",
                &"--name",
                &"Acme",
                &"--pkcs11-module",
                &h.path("pin"),
                &"--token",
                &"acme",
            ],
        ),
        &["cannot load PKCS#11 module", "PKCS#11 library"],
    );
    assert!(!oem.exists());
    // --token without --pkcs11-module is an argument error.
    let out = h.tc(
        PIN,
        &[
            &"oem",
            &"init",
            &oem,
            &"--oem-id",
            &"1",
            &"--name",
            &"A",
            &"--token",
            &"acme",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pkcs11-module"));

    // One directory per token: a second one is refused and the first
    // keeps working.
    ok(&h.oem_init(&oem, "acme", "pin"));
    let g = h.path("guardian");
    fails_with(
        &h.guardian_init(&g, "acme", "pin"),
        &["already holds key(s) 'keystore-seal'", "one token per"],
    );
    assert!(!g.exists());
    ok(&h.tc(
        PIN,
        &[
            &"oem",
            &"product",
            &oem,
            &"--product-id",
            &"1",
            &"--name",
            &"P",
        ],
    ));
    // The directory moved to a machine whose token has another label.
    let text = std::fs::read_to_string(oem.join("oem.toml")).unwrap();
    std::fs::write(
        oem.join("oem.toml"),
        text.replace("token = \"acme\"", "token = \"gone\""),
    )
    .unwrap();
    fails_with(
        &h.tc(
            PIN,
            &[
                &"oem",
                &"product",
                &oem,
                &"--product-id",
                &"2",
                &"--name",
                &"P",
            ],
        ),
        &[&oem.display().to_string(), "no token labelled 'gone'"],
    );
}
