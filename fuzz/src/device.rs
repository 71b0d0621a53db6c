//! For the SBM target: an OEM with one product, a simulated device
//! provisioned and locked through the lab flow with release 1.0.0 installed,
//! and release 2.0.0 mastered for it, all made once per process. Every
//! input then starts from a fresh in-memory copy of that device
//! ([`Fixture::device`]), so a run depends on its input only.
use std::sync::OnceLock;

use trustchain_device_sim::{Geometry, SimDevice, SimRng};
use trustchain_formats::{OemId, ProductId, Version};
use trustchain_oem::image::LoadOptions;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::master::{master_release, MasterRequest};
use trustchain_oem::oem::OemDir;
use trustchain_oem::product::Product;
use trustchain_programmer::client::Programmer;
use trustchain_programmer::lab;
use trustchain_programmer::sim::{SimLink, FLASH_BASE};
use trustchain_sbm::hal::{Field, Protected};

/// The device's UID.
pub const UID: &[u8] = &[0xf0, 0x22, 0x00, 0x01];
/// The device's type.
pub const DEVICE_TYPE: u32 = 0x42;
const GEOMETRY: Geometry = Geometry::SMALL_PAGES;
/// Argon2id as cheap as the keystore allows: the keystore is not under test.
const FAST: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};

/// The provisioned device's state, and a release it would accept.
pub struct Fixture {
    flash: Vec<u8>,
    /// Every protected field, as the locked device holds it.
    pub fields: Vec<(Field, Option<Vec<u8>>)>,
    /// `update.upk` of release 2.0.0, for this device's product.
    pub upk: Vec<u8>,
    /// `update.enc` of release 2.0.0.
    pub enc: Vec<u8>,
}

fn protected_fields(dev: &SimDevice) -> Vec<(Field, Option<Vec<u8>>)> {
    Field::ALL
        .iter()
        .map(|f| (*f, dev.protected().peek(*f).map(<[u8]>::to_vec)))
        .collect()
}

impl Fixture {
    /// A fresh in-memory copy of the provisioned, locked device, with a
    /// seeded random source.
    pub fn device(&self) -> SimDevice {
        let mut dev = SimDevice::in_memory(UID, DEVICE_TYPE, GEOMETRY).expect("device");
        dev.flash_mut().raw_mut().copy_from_slice(&self.flash);
        let p = dev.protected_mut();
        for (field, value) in &self.fields {
            if let (Some(v), false) = (value, matches!(field, Field::Uid | Field::DeviceType)) {
                p.write_once(*field, v)
                    .expect("a fresh device takes every field");
            }
        }
        p.lock().expect("lock");
        dev.set_rng(SimRng::seeded(7));
        dev
    }

    /// The protected fields of `dev` (to compare with [`Fixture::fields`]).
    pub fn fields_of(dev: &SimDevice) -> Vec<(Field, Option<Vec<u8>>)> {
        protected_fields(dev)
    }
}

/// The fixture, made on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(make)
}

fn make() -> Fixture {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let path = tmp.path().join("oem");
    let pass = || Passphrase::new(zeroize::Zeroizing::new("fuzz".to_string())).expect("passphrase");
    let product = ProductId::new(7).expect("product ID");
    OemDir::init(
        &path,
        OemId::new(0x1234).expect("OEM ID"),
        "Fuzz OEM",
        &pass(),
        FAST,
        "fuzz",
    )
    .expect("OEM");
    let oem = OemDir::open(&path).expect("OEM");
    let mut ks = oem.unlock(&pass()).expect("keystore");
    Product::create(&oem, &mut ks, product, "Fuzz Product", None, "fuzz").expect("product");
    let release = |name: &str, version: &str, len: usize| {
        let img = tmp.path().join(format!("{name}.bin"));
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31)).collect();
        std::fs::write(&img, bytes).expect("image");
        let out = tmp.path().join(name);
        let req = MasterRequest {
            product,
            version: version.parse::<Version>().expect("version"),
            security_counter: None,
            force: true,
            image: img,
            format: None,
            load: LoadOptions {
                raw_load_address: u64::from(FLASH_BASE),
                ..LoadOptions::default()
            },
            devices: vec![],
            device_uids: None,
            out: out.clone(),
            operator: "fuzz".into(),
        };
        master_release(&oem, &ks, &req, &|_, _| {}).expect("release");
        (
            std::fs::read(out.join("update.upk")).expect("update.upk"),
            std::fs::read(out.join("update.enc")).expect("update.enc"),
        )
    };
    let (upk1, enc1) = release("v1", "1.0.0", 3000);
    let (upk, enc) = release("v2", "2.0.0", 5000);

    let mut dev = SimDevice::in_memory(UID, DEVICE_TYPE, GEOMETRY).expect("device");
    dev.set_rng(SimRng::seeded(1));
    {
        let mut prog = Programmer::new(SimLink::new(&mut dev).expect("link"));
        lab::provision(&mut prog, &oem, &ks, product, 1).expect("provisioning");
        prog.send_release(&upk1, &enc1, false, &mut |_, _| {})
            .expect("release 1.0.0 installs");
    }
    Fixture {
        flash: dev.flash().raw().to_vec(),
        fields: protected_fields(&dev),
        upk,
        enc,
    }
}
