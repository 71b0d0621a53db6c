//! Protected storage emulated in its PSRAM window: write-once field slots
//! and a lock byte, with the rules of `trustchain_sbm::hal::Protected`.
//!
//! # Layout (offsets in the window, mirrored by `tests/qemu.rs`)
//!
//! ```text
//! offset  size        content
//! 0x000   1           lock byte: 0xFF unlocked, anything else locked
//! SLOTS   2 + cap     per field: length u16 big-endian (0xFFFF: never
//!                     written), then `Field::capacity()` bytes
//! ```
//!
//! The factory state is all 0xFF with the `Uid` and `DeviceType` slots
//! written (the host test does this, as a factory would). A write stores
//! the bytes first and the length last, so the length is the commit word.
//! A length above the field's capacity (a damaged window) reads as written
//! and cannot be read back.
use trustchain_sbm::hal::{Field, Protected, ProtectedError};

/// Offset of the lock byte.
pub const LOCK: usize = 0x000;
/// Lock byte value written by [`Protected::lock`].
pub const LOCKED: u8 = 0x00;
/// Length value of a slot never written.
pub const EMPTY: u16 = 0xFFFF;

/// Offset of each field's slot.
pub const SLOTS: [(Field, usize); 8] = [
    (Field::Uid, 0x100),
    (Field::DeviceType, 0x140),
    (Field::IdentityKey, 0x180),
    (Field::AgreementKey, 0x1C0),
    (Field::ProductKey, 0x200),
    (Field::OemKeys, 0x240),
    (Field::OemRoot, 0x300),
    (Field::CertChain, 0x800),
];

/// Bytes the window needs.
pub const WINDOW_LEN: usize = 0x800 + 2 + 3072;
const _: () = assert!(WINDOW_LEN <= crate::memory::PROTECTED.len as usize);

/// Offset of `field`'s slot.
fn slot(field: Field) -> usize {
    let mut at = 0;
    for (f, o) in SLOTS {
        if f == field {
            at = o;
        }
    }
    at
}

/// Every field has one slot, after the lock byte, and each slot holds its
/// length and capacity before the next one (or the window's end) starts.
fn slots_fit() -> bool {
    let mut start = LOCK + 1;
    for (i, (f, o)) in SLOTS.iter().enumerate() {
        let next = SLOTS.get(i + 1).map_or(WINDOW_LEN, |s| s.1);
        if *o < start || o + 2 + f.capacity() > next || SLOTS[..i].iter().any(|s| s.0 == *f) {
            return false;
        }
        start = next;
    }
    SLOTS.len() == Field::ALL.len()
}

/// Protected storage over its PSRAM window.
pub struct PsramProtected {
    mem: &'static mut [u8],
}

impl PsramProtected {
    /// Over `mem`, at least [`WINDOW_LEN`] bytes. `None` if [`SLOTS`] does
    /// not fit the fields (checked here: `Field::capacity` is not `const`).
    pub fn new(mem: &'static mut [u8]) -> Option<Self> {
        (mem.len() >= WINDOW_LEN && slots_fit()).then_some(Self { mem })
    }

    /// The stored length of `field`, `None` if never written.
    fn len_of(&self, field: Field) -> Option<usize> {
        let s = slot(field);
        match u16::from_be_bytes([self.mem[s], self.mem[s + 1]]) {
            EMPTY => None,
            n => Some(n as usize),
        }
    }
}

impl Protected for PsramProtected {
    fn read(&mut self, field: Field, buf: &mut [u8]) -> Result<usize, ProtectedError> {
        let n = self.len_of(field).ok_or(ProtectedError::Empty)?;
        if n > field.capacity() {
            return Err(ProtectedError::TooLarge);
        }
        let dst = buf.get_mut(..n).ok_or(ProtectedError::TooLarge)?;
        let s = slot(field) + 2;
        dst.copy_from_slice(&self.mem[s..s + n]);
        Ok(n)
    }

    fn write_once(&mut self, field: Field, data: &[u8]) -> Result<(), ProtectedError> {
        if self.is_locked() {
            return Err(ProtectedError::Locked);
        }
        if self.is_written(field) {
            return Err(ProtectedError::AlreadyWritten);
        }
        if data.len() > field.capacity() {
            return Err(ProtectedError::TooLarge);
        }
        let s = slot(field);
        self.mem[s + 2..s + 2 + data.len()].copy_from_slice(data);
        // The capacity is at most 3072, so the length fits u16 and is not EMPTY.
        self.mem[s..s + 2].copy_from_slice(&(data.len() as u16).to_be_bytes());
        Ok(())
    }

    fn is_written(&mut self, field: Field) -> bool {
        self.len_of(field).is_some()
    }

    fn lock(&mut self) -> Result<(), ProtectedError> {
        self.mem[LOCK] = LOCKED;
        Ok(())
    }

    fn is_locked(&mut self) -> bool {
        self.mem[LOCK] != 0xFF
    }
}
