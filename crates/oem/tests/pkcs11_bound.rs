//! A sealed keystore bound to a PKCS#11 token, for real against SoftHSM2
//! (installed by `.ci/run`; no skip): keys that travel are sealed files
//! under a key only the token can release, every other key is in the token,
//! and imported keys become token objects that cannot be read back.
//!
//! One SoftHSM2 configuration for this test binary (`SOFTHSM2_CONF` is read
//! once, at `C_Initialize`), one token per test.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use trustchain_oem::crypto::{self, EcdhKey, SystemEntropy};
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::pkcs11::{Pkcs11KeyStore, SOFTHSM2_MODULE};
use trustchain_oem::keystore::sealed::SealedKeyStore;
use trustchain_oem::keystore::{KeyKind, KeyLabel, KeyStore};
use trustchain_oem::Error;
use zeroize::Zeroizing;

const PIN: &str = "5678";
const TOKENS: [&str; 4] = ["bound-routing", "bound-a", "bound-b", "bound-c"];

struct Hsm {
    module: PathBuf,
    _dir: tempfile::TempDir,
}

fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = std::env::var_os("TRUSTCHAIN_PKCS11_MODULE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SOFTHSM2_MODULE));
        assert!(
            module.is_file(),
            "the PKCS#11 module {} is missing: these tests run against SoftHSM2, which `.ci/run` \
             installs (`apt-get install softhsm2`)",
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
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for label in TOKENS {
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", "1234", "--pin", PIN])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util (Debian package softhsm2, installed by .ci/run)");
            assert!(out.status.success(), "init-token {label}");
        }
        Hsm { module, _dir: dir }
    })
}

fn open(token: &str) -> Pkcs11KeyStore {
    let pin = Passphrase::new(Zeroizing::new(PIN.to_string())).unwrap();
    Pkcs11KeyStore::open(&hsm().module, token, &pin).unwrap()
}

fn label(s: &str) -> KeyLabel {
    KeyLabel::new(s).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn travelling_keys_are_sealed_and_the_rest_stays_in_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keystore");
    let token = "bound-routing";
    let mut ks = SealedKeyStore::create_bound(&dir, open(token)).unwrap();

    let root = ks
        .generate(&KeyLabel::root_ca(), KeyKind::EcdsaP256)
        .unwrap();
    let product = KeyLabel::product_kek(7);
    let product_pub = ks.generate(&product, KeyKind::EcdhP256).unwrap();
    // A job's keys as the Guardian imports them from a package.
    let (issuing_key, issuing_scalar) = EcdhKey::generate(&mut SystemEntropy).unwrap();
    let issuing = label("job-1-issuing");
    let got = ks
        .import_scalar(&issuing, KeyKind::EcdsaP256, &issuing_scalar)
        .unwrap();
    assert_eq!(&got, issuing_key.public_key());
    let (_, job_product_scalar) = EcdhKey::generate(&mut SystemEntropy).unwrap();
    let job_product = label("job-1-product");
    ks.import_scalar(&job_product, KeyKind::EcdhP256, &job_product_scalar)
        .unwrap();

    // Only the travelling keys are files.
    assert_eq!(
        files(&dir),
        ["job-1-product.key", "keystore.toml", "product-7-kek.key"]
    );
    for l in [&KeyLabel::root_ca(), &issuing, &product, &job_product] {
        assert!(ks.contains(l), "{l}");
    }

    // The token keys sign in the token; the imported one is the package's.
    for (l, public) in [
        (&KeyLabel::root_ca(), &root),
        (&issuing, issuing_key.public_key()),
    ] {
        let sig = ks.signer(l).unwrap().sign(b"m").unwrap();
        assert!(crypto::verify_es256(&public.0, b"m", &sig), "{l}");
    }
    // Travelling keys leave (for a package, wrapped for a device); token keys refuse, naming
    // the key and the token.
    let scalar = ks.export_for_package(&job_product).unwrap();
    assert_eq!(*scalar, *job_product_scalar);
    assert_eq!(
        EcdhKey::from_scalar(&ks.export_for_package(&product).unwrap()[..])
            .unwrap()
            .public_key(),
        &product_pub
    );
    let (device, _) = EcdhKey::generate(&mut SystemEntropy).unwrap();
    ks.export_wrapped_for_device(&product, device.public_key())
        .unwrap();
    let refused = ks
        .export_wrapped_for_device(&KeyLabel::root_ca(), device.public_key())
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("'root-ca'") && refused.contains(token) && refused.contains("extractable"),
        "{refused}"
    );

    // The imported issuing key is a token object nobody can read back.
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
    let s = ctx.open_ro_session(slot).unwrap();
    for l in [&issuing, &KeyLabel::keystore_seal(), &KeyLabel::root_ca()] {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(l.as_str().as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "{l}");
        let info = s
            .get_attribute_info(found[0], &[AttributeType::Value])
            .unwrap();
        assert!(matches!(info[0], AttributeInfo::Sensitive), "{l}: {info:?}");
        let attrs = s
            .get_attributes(
                found[0],
                &[AttributeType::Sensitive, AttributeType::Extractable],
            )
            .unwrap();
        assert_eq!(
            attrs,
            [Attribute::Sensitive(true), Attribute::Extractable(false)],
            "{l}"
        );
    }
    // No travelling key is in the token.
    for l in [&product, &job_product] {
        let found = s
            .find_objects(&[Attribute::Label(l.as_str().as_bytes().to_vec())])
            .unwrap();
        assert!(found.is_empty(), "{l}");
    }
    drop(s);

    // Closing the last session logs out; the keystore opens again with the
    // token alone and the sealed keys are the same.
    drop(ks);
    let ks = SealedKeyStore::open_bound(&dir, open(token)).unwrap();
    assert_eq!(
        *ks.export_for_package(&job_product).unwrap(),
        *job_product_scalar
    );
    assert_eq!(ks.public_key(&KeyLabel::root_ca()).unwrap(), root);
}

#[test]
fn a_bound_keystore_opens_only_with_its_own_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keystore");
    let mut ks = SealedKeyStore::create_bound(&dir, open("bound-a")).unwrap();
    ks.generate(&KeyLabel::product_kek(1), KeyKind::EcdhP256)
        .unwrap();
    drop(ks);

    // A token without the sealing key.
    let e = SealedKeyStore::open_bound(&dir, open("bound-b"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("'bound-b'") && e.contains("does not hold the key that seals"),
        "{e}"
    );
    // A token with a sealing key of its own (another directory's).
    let other = tmp.path().join("other");
    drop(SealedKeyStore::create_bound(&other, open("bound-c")).unwrap());
    let e = SealedKeyStore::open_bound(&dir, open("bound-c"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not hold the key that seals"), "{e}");
    // And one token cannot bind two keystores.
    let e = SealedKeyStore::create_bound(&tmp.path().join("third"), open("bound-c"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("already holds a 'keystore-seal' key"), "{e}");
    assert!(!tmp.path().join("third").exists());

    // The passphrase path refuses a bound keystore, and says how it opens.
    let pass = Passphrase::new(Zeroizing::new("anything".to_string())).unwrap();
    match SealedKeyStore::open(&dir, &pass) {
        Err(Error::Usage(m)) => assert!(m.contains("bound to a PKCS#11 token"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    // The right token still opens it.
    SealedKeyStore::open_bound(&dir, open("bound-a")).unwrap();
}
