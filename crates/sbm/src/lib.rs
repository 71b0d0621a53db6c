//! The Secure Boot Manager (SBM) core: everything the SBM decides, with no
//! hardware in it. A board (the Cortex-M4 firmware, or the simulated MCU on
//! the host) supplies [`hal::Flash`], [`hal::Protected`], [`hal::Rng`] and a
//! byte channel; this crate does the rest.
//!
//! Seed "Secure Development": the SBM is injected at birth, accepts only
//! mastered images, "calculates the hash signature of the application and
//! compares it against the values stored in the signature table" at every
//! reset, applies secure updates the application requests, and offers
//! runtime services (certificate access, challenge signing).
//!
//! * [`Sbm::boot`]: finish any journaled install, then check the
//!   application's SHA-256 against the signature table: run or recovery.
//! * [`Sbm::handle_frame`]: one request of the connection protocol
//!   (`trustchain_formats::frame`), provisioning, image install and
//!   runtime services, each refused with a [`Status`] and no state change
//!   when not allowed.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
pub mod hal;
pub(crate) mod install;
pub mod layout;
pub mod peer;
pub mod protocol;
pub mod provision;
pub mod state;

pub use trustchain_formats::frame::Status;

use hal::{Field, Flash, Protected, Rng};
use layout::Layout;
use trustchain_formats::stream::SEALED_CHUNK_SIZE;

/// The SBM's version, reported in device info.
pub const SBM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Lifecycle of a device (derived from protected storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    /// No keys yet.
    Blank = 0,
    /// Keys generated; certificates or OEM keys missing.
    Keyed = 1,
    /// Keys, certificates and OEM keys present; not locked.
    Provisioned = 2,
    /// Locked: provisioning refused, secrets unreadable from debug.
    Locked = 3,
}

/// What a reset ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOutcome {
    /// The application verified against the signature table; it runs.
    Run(state::Installed),
    /// No verified application: the SBM waits for an image on the channel.
    Recovery(Status),
}

/// A release being received into staging.
#[derive(Debug, Clone, Copy)]
struct Receive {
    update: bool,
    upk_len: u32,
    enc_len: u32,
    next: u32,
    pending: [u8; install::PROGRAM_UNIT],
    pending_len: usize,
}

/// The SBM with its hardware.
pub struct Sbm<F: Flash, P: Protected, R: Rng> {
    flash: F,
    prot: P,
    rng: R,
    layout: Layout,
    rx: Option<Receive>,
    upk: [u8; layout::MAX_DEVICE_UPK as usize],
    chunk: [u8; SEALED_CHUNK_SIZE],
}

impl<F: Flash, P: Protected, R: Rng> Sbm<F, P, R> {
    /// Takes the hardware; `None` if the layout does not fit the flash.
    pub fn new(flash: F, prot: P, rng: R, layout: Layout) -> Option<Self> {
        if !layout.check(&flash) {
            return None;
        }
        Some(Self {
            flash,
            prot,
            rng,
            layout,
            rx: None,
            upk: [0; layout::MAX_DEVICE_UPK as usize],
            chunk: [0; SEALED_CHUNK_SIZE],
        })
    }

    /// Gives the hardware back.
    pub fn into_parts(self) -> (F, P, R) {
        (self.flash, self.prot, self.rng)
    }

    /// The flash layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The lifecycle state.
    pub fn lifecycle(&mut self) -> Lifecycle {
        if self.prot.is_locked() {
            return Lifecycle::Locked;
        }
        if !self.prot.is_written(Field::IdentityKey) {
            return Lifecycle::Blank;
        }
        let all = [
            Field::AgreementKey,
            Field::CertChain,
            Field::OemRoot,
            Field::OemKeys,
            Field::ProductKey,
        ];
        if all.iter().all(|f| self.prot.is_written(*f)) {
            Lifecycle::Provisioned
        } else {
            Lifecycle::Keyed
        }
    }

    /// At every reset: finish a journaled install, then verify the
    /// application against the signature table.
    pub fn boot(&mut self) -> BootOutcome {
        self.rx = None;
        if let Err(s) = self.resume_journal() {
            return BootOutcome::Recovery(s);
        }
        self.check_application()
    }

    /// SHA-256 of the application region against the signature table.
    pub fn check_application(&mut self) -> BootOutcome {
        let st = match state::load(&mut self.flash, &self.layout) {
            Ok((s, _)) => s,
            Err(_) => return BootOutcome::Recovery(Status::FlashError),
        };
        let Some(inst) = st.installed else {
            return BootOutcome::Recovery(Status::NoImage);
        };
        if inst.size > self.layout.app.len {
            return BootOutcome::Recovery(Status::NoImage);
        }
        match self.hash_region(self.layout.app.offset, inst.size) {
            Ok(d) if d == inst.digest => BootOutcome::Run(inst),
            Ok(_) => BootOutcome::Recovery(Status::PlaintextMismatch),
            Err(_) => BootOutcome::Recovery(Status::FlashError),
        }
    }

    /// SHA-256 of `len` bytes of flash at `offset`, read through the chunk buffer.
    fn hash_region(&mut self, offset: u32, len: u32) -> Result<[u8; 32], hal::FlashError> {
        use sha2::Digest;
        let mut h = crypto::Hasher::new();
        let mut done = 0u32;
        while done < len {
            let n = (len - done).min(self.chunk.len() as u32);
            let at = offset
                .checked_add(done)
                .ok_or(hal::FlashError::OutOfBounds)?;
            self.flash.read(at, &mut self.chunk[..n as usize])?;
            h.update(&self.chunk[..n as usize]);
            done += n;
        }
        Ok(h.finalize().into())
    }
}
