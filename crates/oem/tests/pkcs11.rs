//! The PKCS#11 backend, for real, against SoftHSM2 (Debian `softhsm2`,
//! installed by `.ci/run`). There is no skip: without the module these tests
//! fail and say how to get it.
//!
//! One SoftHSM2 configuration per test binary (the library reads
//! `SOFTHSM2_CONF` once, at `C_Initialize`) with its token directory in a
//! temporary directory, and one token per test: PKCS#11 login state is per
//! application and token, so tests on separate tokens cannot disturb each
//! other's login.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use trustchain_oem::crypto::{self, EcdhKey, SystemEntropy};
use trustchain_oem::formats::OemId;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::pkcs11::{key_id, Pkcs11KeyStore, SOFTHSM2_MODULE};
use trustchain_oem::keystore::{KeyKind, KeyLabel, KeyStore, Signer};
use trustchain_oem::pki::{self, CertSpec};
use trustchain_oem::Error;
use zeroize::Zeroizing;

const SO_PIN: &str = "1234";
const PIN: &str = "5678";

/// One token per test.
const TOKENS: [&str; 5] = [
    "trustchain-test",
    "trustchain-test-ecdh",
    "trustchain-test-extract",
    "trustchain-test-pin",
    "trustchain-test-threads",
];

struct Hsm {
    module: PathBuf,
    _dir: tempfile::TempDir,
}

fn module_path() -> PathBuf {
    std::env::var_os("TRUSTCHAIN_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOFTHSM2_MODULE))
}

fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = module_path();
        assert!(
            module.is_file(),
            "the PKCS#11 module {} is missing: these tests run against SoftHSM2, which `.ci/run` \
             installs (`apt-get install softhsm2`); or point TRUSTCHAIN_PKCS11_MODULE at another \
             SoftHSM2 build",
            module.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // Before any thread loads the library: it reads this at C_Initialize.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for label in TOKENS {
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", PIN])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run softhsm2-util ({e}): `.ci/run` installs it with the Debian \
                         package softhsm2"
                    )
                });
            assert!(
                out.status.success(),
                "softhsm2-util --init-token {label}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Hsm { module, _dir: dir }
    })
}

fn pin(s: &str) -> Passphrase {
    Passphrase::new(Zeroizing::new(s.to_string())).unwrap()
}

fn open(token: &str) -> Pkcs11KeyStore {
    Pkcs11KeyStore::open(&hsm().module, token, &pin(PIN)).unwrap()
}

fn label(s: &str) -> KeyLabel {
    KeyLabel::new(s).unwrap()
}

fn verify_with_aws_lc(public: &[u8], msg: &[u8], sig: &[u8; 64]) -> bool {
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
        .verify(msg, sig)
        .is_ok()
}

#[test]
fn ecdsa_keys_sign_inside_and_self_sign_a_valid_certificate() {
    let token = "trustchain-test";
    let root = KeyLabel::root_ca();
    let public = {
        let mut ks = open(token);
        assert!(!ks.contains(&root));
        let public = ks.generate(&root, KeyKind::EcdsaP256).unwrap();
        assert!(ks.contains(&root));
        assert_eq!(ks.public_key(&root).unwrap(), public);
        // A taken label is refused.
        assert!(matches!(
            ks.generate(&root, KeyKind::EcdsaP256),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            ks.generate(&root, KeyKind::EcdhP256),
            Err(Error::AlreadyExists { .. })
        ));

        let signer = ks.signer(&root).unwrap();
        assert_eq!(signer.public_key(), &public);
        for msg in [&b""[..], b"hello", &[0xa5; 10_000][..]] {
            let sig = signer.sign(msg).unwrap();
            assert!(verify_with_aws_lc(&public.0, msg, &sig));
            assert!(crypto::verify_es256(&public.0, msg, &sig));
            assert!(!verify_with_aws_lc(&public.0, b"other", &sig));
        }
        // ECDSA is randomised: two signatures of one message differ.
        assert_ne!(signer.sign(b"m").unwrap(), signer.sign(b"m").unwrap());

        // Key separation and unknown labels.
        let err = ks.key_agreement(&root).err().unwrap();
        assert!(err.to_string().contains("not a ECDH"), "{err}");
        assert!(matches!(
            ks.signer(&label("no-such-key")),
            Err(Error::NoSuchKey { .. })
        ));
        assert!(ks.public_key(&label("no-such-key")).is_err());

        // A root certificate signed inside the token.
        let oem = OemId::new(77).unwrap();
        let mut spec = CertSpec::new("HSM Root".into(), "HSM OEM".into(), oem, 5);
        spec.ca_path_len = Some(1);
        let cert = pki::self_signed(&spec, signer.as_ref()).unwrap();
        pki::verify_issued_by(&cert.der, &cert.der).unwrap();
        let parsed = pki::parse_cert(&cert.der).unwrap();
        assert_eq!(pki::cert_public_key(&parsed).unwrap(), public);
        let info = pki::describe(&parsed);
        assert!(info.self_issued);
        assert!(info.ca.is_some());
        assert_eq!(pki::cert_oem_id(&parsed), Some(oem));
        // rustls-webpki accepts it as a trust anchor.
        let der = rustls_pki_types::CertificateDer::from(cert.der.as_slice());
        webpki::anchor_from_trusted_cert(&der).unwrap();
        // ... and a code-signing certificate issued under it validates.
        let mastering = label("mastering");
        ks.generate(&mastering, KeyKind::EcdsaP256).unwrap();
        let mut ee = CertSpec::new("HSM Mastering".into(), "HSM OEM".into(), oem, 1);
        ee.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        ee.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        let ee_pub = ks.public_key(&mastering).unwrap();
        let ee_cert = pki::issue(&ee, &ee_pub, &cert, signer.as_ref()).unwrap();
        pki::validate_code_signing(&ee_cert.der, &cert.der).unwrap();
        public
    };

    // The keys are token objects: they outlive the session.
    let ks = open(token);
    assert_eq!(ks.public_key(&root).unwrap(), public);
    let sig = ks.signer(&root).unwrap().sign(b"again").unwrap();
    assert!(verify_with_aws_lc(&public.0, b"again", &sig));
}

#[test]
fn ecdh_agrees_with_a_software_key_and_never_exports() {
    let mut ks = open("trustchain-test-ecdh");
    let kek = KeyLabel::product_kek(1);
    let public = ks.generate(&kek, KeyKind::EcdhP256).unwrap();
    let ka = ks.key_agreement(&kek).unwrap();
    assert_eq!(ka.public_key(), &public);

    for _ in 0..3 {
        let (eph, _scalar) = EcdhKey::generate(&mut SystemEntropy).unwrap();
        let software = eph.agree(&public.0).unwrap();
        let hsm = ka.agree(&eph.public_key().0).unwrap();
        assert_eq!(*hsm, *software);
    }

    // End to end: a content key wrapped for the HSM key (ECDH-ES + A128KW)
    // unwraps with the shared secret the token computes.
    let cek = [0x5au8; 16];
    let r = crypto::wrap_for(&public, &cek, &mut SystemEntropy).unwrap();
    let shared = ka.agree(&r.ephemeral.to_sec1()).unwrap();
    assert_eq!(
        *crypto::unwrap_shared(&shared, &r.wrapped_key).unwrap(),
        cek
    );

    // A point off the curve is refused before it reaches the token.
    let (eph, _) = EcdhKey::generate(&mut SystemEntropy).unwrap();
    let mut bad = eph.public_key().0;
    bad[64] ^= 1;
    assert!(ka.agree(&bad).is_err());
    assert!(ka.agree(&bad[..33]).is_err());

    // Key separation.
    let err = ks.signer(&kek).err().unwrap();
    assert!(err.to_string().contains("not a ECDSA"), "{err}");

    // The product key does not leave the HSM.
    for err in [
        ks.export_for_package(&kek).err().unwrap(),
        ks.export_wrapped_for_device(&kek, eph.public_key())
            .err()
            .unwrap(),
    ] {
        let msg = err.to_string();
        assert!(msg.contains("held in an HSM"), "{msg}");
        assert!(msg.contains("not exportable"), "{msg}");
        assert!(msg.contains("trustchain-test-ecdh"), "{msg}");
    }
}

#[test]
fn private_keys_are_not_extractable() {
    let token = "trustchain-test-extract";
    let mut ks = open(token);
    let sign = label("mastering");
    let kem = label("guardian-kem");
    ks.generate(&sign, KeyKind::EcdsaP256).unwrap();
    ks.generate(&kem, KeyKind::EcdhP256).unwrap();

    // A second, raw look at the token through cryptoki. The library is
    // already initialised and the application logged in (login is per
    // application), so this session sees the private objects.
    let ctx = Pkcs11::new(&hsm().module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == token)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    for l in [&sign, &kem] {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(l.as_str().as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "{l}");
        let key = found[0];
        // Reading the private value fails: CKR_ATTRIBUTE_SENSITIVE.
        let info = s.get_attribute_info(key, &[AttributeType::Value]).unwrap();
        assert!(matches!(info[0], AttributeInfo::Sensitive), "{l}: {info:?}");
        let got = s.get_attributes(key, &[AttributeType::Value]).unwrap();
        assert!(got.is_empty(), "{l}: CKA_VALUE came out");
        let attrs = s
            .get_attributes(
                key,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Id,
                ],
            )
            .unwrap();
        for a in &attrs {
            match a {
                Attribute::Token(b)
                | Attribute::Private(b)
                | Attribute::Sensitive(b)
                | Attribute::AlwaysSensitive(b)
                | Attribute::NeverExtractable(b) => assert!(*b, "{l}: {a:?}"),
                Attribute::Extractable(b) => assert!(!*b, "{l}: {a:?}"),
                Attribute::Id(id) => assert_eq!(id.as_slice(), &key_id(l)[..]),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(attrs.len(), 7, "{l}: {attrs:?}");
        // And it cannot be made extractable again.
        assert!(s
            .update_attributes(key, &[Attribute::Extractable(true)])
            .is_err());
        assert!(s
            .update_attributes(key, &[Attribute::Sensitive(false)])
            .is_err());
    }
    drop(s);
    // The store still works after the second session went.
    let sig = ks.signer(&sign).unwrap().sign(b"x").unwrap();
    assert!(verify_with_aws_lc(
        &ks.public_key(&sign).unwrap().0,
        b"x",
        &sig
    ));
}

#[test]
fn wrong_pin_missing_token_and_missing_module_are_clear_errors() {
    let h = hsm();
    let token = "trustchain-test-pin";
    let err = Pkcs11KeyStore::open(&h.module, token, &pin("0000")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("wrong PIN"), "{msg}");
    assert!(msg.contains(token), "{msg}");
    assert!(msg.contains(&h.module.display().to_string()), "{msg}");

    // The right PIN opens it.
    let ks = Pkcs11KeyStore::open(&h.module, token, &pin(PIN)).unwrap();
    assert!(format!("{ks:?}").contains(token));
    // While this process is logged in, a second open is refused rather than
    // let in without checking the PIN, whichever PIN it brings.
    for p in ["0000", PIN] {
        let err = Pkcs11KeyStore::open(&h.module, token, &pin(p)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("already logged in") || msg.contains("wrong PIN"),
            "{msg}"
        );
    }
    drop(ks);
    // Once closed, it opens again.
    Pkcs11KeyStore::open(&h.module, token, &pin(PIN)).unwrap();

    let err = Pkcs11KeyStore::open(&h.module, "no-such-token", &pin(PIN)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no token labelled 'no-such-token'"), "{msg}");
    assert!(msg.contains("softhsm2-util --init-token"), "{msg}");
    assert!(
        msg.contains("trustchain-test-pin"),
        "lists the tokens seen: {msg}"
    );

    let missing = Path::new("/nonexistent/libpkcs11.so");
    let err = Pkcs11KeyStore::open(missing, token, &pin(PIN)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/libpkcs11.so"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn one_signer_serves_many_threads() {
    let mut ks = open("trustchain-test-threads");
    let l = label("guardian-sign");
    let public = ks.generate(&l, KeyKind::EcdsaP256).unwrap();
    let signer: Arc<dyn Signer> = Arc::from(ks.signer(&l).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let signer = Arc::clone(&signer);
            std::thread::spawn(move || {
                (0..25u8)
                    .map(|i| {
                        let msg = [t, i];
                        (msg, signer.sign(&msg).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (msg, sig) in t.join().unwrap() {
            assert!(verify_with_aws_lc(&public.0, &msg, &sig));
        }
    }
}
