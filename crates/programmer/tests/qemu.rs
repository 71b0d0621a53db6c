//! The SBM firmware for the Cortex-M4 (`firmware/sbm-m4`) in QEMU's model of
//! the Arm MPS2 AN386 board, driven by the host programmer over the emulated
//! UART: lab provisioning, installing a small mastered release, reading back
//! the verified version and digest, refusing a tampered release, and the
//! state surviving a power cycle (PSRAM backed by a host file).
//!
//! Needs `qemu-system-arm` (Debian's package; `.ci/run` installs it) and the
//! `thumbv7em-none-eabihf` target (pinned in `rust-toolchain.toml`). The
//! firmware is built here with `cargo build --release --locked`.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::*;
use trustchain_formats::upk::Upk;
use trustchain_formats::ProductId;
use trustchain_programmer::client::{Error, Programmer};
use trustchain_programmer::lab;
use trustchain_programmer::serial::SerialLink;
use trustchain_sbm::Status;

/// The firmware's PSRAM map (`firmware/sbm-m4/src/memory.rs` and
/// `protected.rs`), offsets in the backing file.
mod board {
    pub const PSRAM_SIZE: usize = 16 * 1024 * 1024;
    /// The emulated NOR flash: offset, length.
    pub const FLASH: (usize, usize) = (0, 512 * 1024);
    /// Protected storage: offset, length.
    pub const PROTECTED: (usize, usize) = (0x10_0000, 8 * 1024);
    /// Slots in the protected window: length u16 BE, then the bytes.
    pub const UID_SLOT: usize = 0x100;
    pub const DEVICE_TYPE_SLOT: usize = 0x140;
    /// The DRBG seed, 32 bytes.
    pub const SEED: usize = 0x20_0000;
    /// Where the application slot appears: images' load address.
    pub const APP_ADDRESS: u64 = 0x2100_0000;
}

const UID: &[u8] = b"\x4d\x34\x00\x01";
const DEVICE_TYPE: u32 = 0x42;

/// Builds the firmware (incrementally) and returns its ELF.
fn build_firmware() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware/sbm-m4");
    let target_dir = dir.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir)
        // The firmware's `.cargo/config.toml` carries its link flags;
        // flags meant for the host build must not replace them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("running cargo to build firmware/sbm-m4");
    assert!(status.success(), "building firmware/sbm-m4 failed");
    target_dir.join("thumbv7em-none-eabihf/release/trustchain-sbm-m4")
}

/// A factory-fresh board: erased flash and protected storage, with the UID
/// and device type set.
fn factory_psram(path: &Path) {
    let mut psram = vec![0xFFu8; board::PSRAM_SIZE];
    let prot = &mut psram[board::PROTECTED.0..][..board::PROTECTED.1];
    for (slot, value) in [
        (board::UID_SLOT, UID),
        (board::DEVICE_TYPE_SLOT, &DEVICE_TYPE.to_be_bytes()[..]),
    ] {
        prot[slot..slot + 2].copy_from_slice(&(value.len() as u16).to_be_bytes());
        prot[slot + 2..slot + 2 + value.len()].copy_from_slice(value);
    }
    std::fs::write(path, psram).unwrap();
}

/// A fresh DRBG seed before each run (the board has no TRNG).
fn reseed(path: &Path) {
    let mut psram = std::fs::read(path).unwrap();
    aws_lc_rs::rand::fill(&mut psram[board::SEED..board::SEED + 32]).unwrap();
    std::fs::write(path, psram).unwrap();
}

/// QEMU running the firmware; killed when dropped (also on a panic).
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Link = SerialLink<ChildStdout, ChildStdin>;

/// Powers the board on: QEMU with its UART on stdin/stdout.
fn power_on(elf: &Path, psram: &Path) -> (Qemu, Programmer<Link>) {
    reseed(psram);
    let spawned = Command::new("qemu-system-arm")
        .args([
            "-machine",
            "mps2-an386,memory-backend=psram",
            "-cpu",
            "cortex-m4",
        ])
        .arg("-object")
        .arg(format!(
            "memory-backend-file,id=psram,mem-path={},size=16M,share=on",
            psram.display()
        ))
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "qemu-system-arm is not installed: this test needs it. `.ci/run` installs it \
             (Debian: `apt-get install qemu-system-arm`)"
        ),
        Err(e) => panic!("starting qemu-system-arm: {e}"),
    };
    let (rx, tx) = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    (Qemu(child), Programmer::new(SerialLink::new(rx, tx)))
}

fn refused(r: Result<impl std::fmt::Debug, Error>) -> Status {
    match r {
        Err(Error::Refused(s)) => s,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn manifest_digest(upk: &[u8]) -> [u8; 32] {
    Upk::parse(upk).unwrap().manifest.image_digest.0
}

#[test]
fn firmware_in_qemu_installs_a_release_and_refuses_a_tampered_one() {
    let elf = build_firmware();
    let o = oem();
    let v1 = release_at(&o, "v1", "1.0.0", 6 * 1024, 1, board::APP_ADDRESS);
    let v2 = release_at(&o, "v2", "2.0.0", 6 * 1024, 2, board::APP_ADDRESS);
    let tmp = tempfile::tempdir().unwrap();
    let psram = tmp.path().join("psram.img");
    factory_psram(&psram);
    assert!(board::FLASH.1 <= board::PROTECTED.0);

    let (qemu, mut prog) = power_on(&elf, &psram);
    let info = prog.info().unwrap();
    assert_eq!(
        (info.uid.as_slice(), info.device_type, info.lifecycle),
        (UID, DEVICE_TYPE, 0)
    );
    assert_eq!(info.installed, None);
    lab::provision(&mut prog, &o.oem, &o.ks, ProductId::new(7).unwrap(), 1).unwrap();
    assert_eq!(
        prog.info().unwrap().lifecycle,
        3,
        "locked after provisioning"
    );

    // Factory install, then a reset: the boot check passes and the table
    // holds the release's version and digest.
    let (upk, enc) = read_release(&v1);
    let entry = prog
        .send_release(&upk, &enc, false, &mut |_, _| {})
        .unwrap();
    prog.reset().unwrap();
    let (table, _) = prog.signature_table().unwrap();
    let table = table.expect("an installed application");
    assert_eq!(table.version, [1, 0, 0]);
    assert_eq!(table.digest, manifest_digest(&upk));
    assert_eq!(table, entry);

    // A tampered release is refused and changes nothing.
    let (upk2, mut enc2) = read_release(&v2);
    enc2[100] ^= 1;
    assert_eq!(
        refused(prog.send_release(&upk2, &enc2, false, &mut |_, _| {})),
        Status::CiphertextMismatch
    );
    assert_eq!(prog.signature_table().unwrap().0, Some(table));
    drop((prog, qemu));

    // Power cycle: flash and protected storage persist in the PSRAM file.
    let (_qemu, mut prog) = power_on(&elf, &psram);
    let info = prog.info().unwrap();
    assert_eq!((info.lifecycle, info.installed), (3, Some(table)));
    assert_eq!(info.journal, 0);
}
