//! Shared setup: an OEM with one product, releases mastered for the
//! simulator's application slot, and provisioned simulated devices.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_formats::{ProductId, Version};
use trustchain_oem::image::LoadOptions;
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::sealed::{KdfParams, SealedKeyStore};
use trustchain_oem::master::{master_release, MasterRequest};
use trustchain_oem::oem::OemDir;
use trustchain_oem::product::Product;
use trustchain_programmer::client::Programmer;
use trustchain_programmer::lab;
use trustchain_programmer::sim::{SimLink, FLASH_BASE};

pub const FAST: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};

pub struct Oem {
    pub dir: tempfile::TempDir,
    pub oem: OemDir,
    pub ks: SealedKeyStore,
}

pub fn pass() -> Passphrase {
    Passphrase::new(zeroize::Zeroizing::new("test".to_string())).unwrap()
}

pub fn oem() -> Oem {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oem");
    OemDir::init(
        &path,
        trustchain_formats::OemId::new(0x1234).unwrap(),
        "Acme",
        &pass(),
        FAST,
        "test",
    )
    .unwrap();
    let oem = OemDir::open(&path).unwrap();
    let mut ks = oem.unlock(&pass()).unwrap();
    Product::create(
        &oem,
        &mut ks,
        ProductId::new(7).unwrap(),
        "Thermostat",
        None,
        "test",
    )
    .unwrap();
    Oem { dir, oem, ks }
}

/// Masters `len` bytes of firmware (a pattern seeded by `seed`) as `version`,
/// for the simulator's application slot.
pub fn release(o: &Oem, name: &str, version: &str, len: usize, seed: u8) -> PathBuf {
    release_at(o, name, version, len, seed, FLASH_BASE as u64)
}

pub fn read_release(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("update.upk")).unwrap(),
        std::fs::read(dir.join("update.enc")).unwrap(),
    )
}

/// A blank device, provisioned and locked through the lab flow.
pub fn provisioned_device(o: &Oem, dir: &Path, geometry: Geometry, uid: &[u8]) -> SimDevice {
    let mut dev = SimDevice::create(dir, uid, 0x42, geometry).unwrap();
    {
        let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
        lab::provision(&mut prog, &o.oem, &o.ks, ProductId::new(7).unwrap(), 1).unwrap();
    }
    dev.save().unwrap();
    dev
}

/// Like [`release`], mastered for `load_address` (another board's
/// application slot, e.g. the QEMU firmware's).
pub fn release_at(
    o: &Oem,
    name: &str,
    version: &str,
    len: usize,
    seed: u8,
    load_address: u64,
) -> PathBuf {
    let img = o.dir.path().join(format!("{name}.bin"));
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(&img, bytes).unwrap();
    let out = o.dir.path().join(name);
    let req = MasterRequest {
        product: ProductId::new(7).unwrap(),
        version: version.parse::<Version>().unwrap(),
        security_counter: None,
        force: true,
        image: img,
        format: None,
        load: LoadOptions {
            raw_load_address: load_address,
            ..LoadOptions::default()
        },
        devices: vec![],
        device_uids: None,
        out: out.clone(),
        operator: "test".into(),
    };
    master_release(&o.oem, &o.ks, &req, &|_, _| {}).unwrap();
    out
}
