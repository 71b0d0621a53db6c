//! Where the board keeps what a real chip keeps in flash, OTP and a TRNG.
//!
//! QEMU's MPS2 AN386 has no persistent flash, but its 16 MiB PSRAM at
//! [`PSRAM_BASE`] can be backed by a host file
//! (`-machine mps2-an386,memory-backend=psram -object
//! memory-backend-file,id=psram,mem-path=FILE,size=16M,share=on`), so what
//! the SBM writes survives a QEMU restart. The board carves it into
//! windows; offsets are from the start of PSRAM, that is of the file:
//!
//! ```text
//! offset      size     content
//! 0x00_0000   512 KiB  emulated NOR flash (crate::flash), erased = 0xFF
//! 0x10_0000   8 KiB    protected storage (crate::protected, layout there)
//! 0x20_0000   32 B     DRBG seed (crate::rng), filled by the host per run
//! ```
//!
//! `crates/programmer/tests/qemu.rs` mirrors these numbers to prepare the
//! file like a factory would.

/// Where PSRAM appears in the CPU's memory map.
pub const PSRAM_BASE: u32 = 0x2100_0000;
/// PSRAM size (the backing file's size).
pub const PSRAM_SIZE: u32 = 16 * 1024 * 1024;

/// A window of PSRAM: offset from [`PSRAM_BASE`] and length.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Offset from the start of PSRAM (and of the backing file).
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
    /// Its bit in [`TAKEN`].
    bit: u8,
}

/// The emulated NOR flash.
pub const FLASH: Window = Window {
    offset: 0,
    len: 512 * 1024,
    bit: 1,
};
/// Protected storage.
pub const PROTECTED: Window = Window {
    offset: 0x10_0000,
    len: 8 * 1024,
    bit: 2,
};
/// The DRBG seed.
pub const SEED: Window = Window {
    offset: 0x20_0000,
    len: 32,
    bit: 4,
};

// The windows lie inside PSRAM and do not overlap.
const _: () = {
    assert!(FLASH.offset + FLASH.len <= PROTECTED.offset);
    assert!(PROTECTED.offset + PROTECTED.len <= SEED.offset);
    assert!(SEED.offset + SEED.len <= PSRAM_SIZE);
};

/// Which windows were handed out (bit per window).
static TAKEN: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// The bytes of `w`, at most once per window (`None` the second time), so
/// that no two owners ever alias the same memory.
pub fn take(w: Window) -> Option<&'static mut [u8]> {
    use core::sync::atomic::Ordering;
    if TAKEN.fetch_or(w.bit, Ordering::AcqRel) & w.bit != 0 {
        return None;
    }
    // SAFETY: only this module makes a `Window`: `w` is one of the three
    // above, which the const assertions keep inside PSRAM and disjoint, and
    // `TAKEN` hands each out once.
    Some(unsafe { psram_slice(w) })
}

/// The PSRAM bytes of a window as a slice.
///
/// # Safety
///
/// `w` must lie inside PSRAM, and no other reference to those bytes may
/// exist for as long as the slice lives (`'static`): call it once per
/// window. PSRAM is plain RAM with no side effects on access, and nothing
/// else (no DMA, no other core) touches it while the SBM runs.
unsafe fn psram_slice(w: Window) -> &'static mut [u8] {
    let start = (PSRAM_BASE + w.offset) as usize as *mut u8;
    // SAFETY: the caller guarantees the range is PSRAM (mapped, aligned for
    // u8, never null) and unaliased.
    unsafe { core::slice::from_raw_parts_mut(start, w.len as usize) }
}
