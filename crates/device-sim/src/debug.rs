//! The debug port: what a probe on SWD/JTAG sees.
//!
//! Before the lock bit is set, the probe reads and writes everything. After
//! it, read-out protection is on: no flash read, no flash write, and no
//! secret field ([`Field::is_secret`]); the non-secret fields (UID, device
//! type, certificates, OEM keys) stay readable, as they are public anyway.
//!
//! The probe works beside the SBM, not through it: nothing it does is an
//! operation of the power supply or shows in the flash counters, and it
//! works whatever the power state (the probe powers the chip itself).
use trustchain_sbm::hal::Field;

use crate::flash::SimFlash;
use crate::protected::SimProtected;

/// Why the debug port refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DebugError {
    /// The device is locked: read-out protection refuses every flash read.
    #[error("flash read refused: the device is locked (read-out protection)")]
    ReadOutProtected,
    /// The device is locked: the flash cannot be written from the probe.
    #[error("flash write refused: the device is locked")]
    WriteProtected,
    /// The device is locked and the field is secret.
    #[error("field {0:?} is secret and the device is locked")]
    SecretField(Field),
    /// The range is outside the flash.
    #[error("range {offset:#x}+{len:#x} is outside the flash")]
    OutOfBounds {
        /// The offset asked for.
        offset: u32,
        /// The length asked for.
        len: usize,
    },
}

/// A probe attached to a device; see [`crate::SimDevice::debug_port`].
#[derive(Debug)]
pub struct DebugPort<'a> {
    flash: &'a mut SimFlash,
    protected: &'a SimProtected,
}

impl<'a> DebugPort<'a> {
    pub(crate) fn new(flash: &'a mut SimFlash, protected: &'a SimProtected) -> Self {
        DebugPort { flash, protected }
    }

    /// Whether the lock bit is set (a probe can always see that).
    pub fn is_locked(&self) -> bool {
        self.protected.lock_bit()
    }

    fn range(&self, offset: u32, len: usize) -> Result<std::ops::Range<usize>, DebugError> {
        let start = offset as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.flash.raw().len() => Ok(start..end),
            _ => Err(DebugError::OutOfBounds { offset, len }),
        }
    }

    /// Reads `len` bytes of flash at `offset`; refused once locked.
    pub fn read_flash(&self, offset: u32, len: usize) -> Result<Vec<u8>, DebugError> {
        if self.is_locked() {
            return Err(DebugError::ReadOutProtected);
        }
        let range = self.range(offset, len)?;
        Ok(self.flash.raw()[range].to_vec())
    }

    /// Reads a field (`None`: never written); a secret field is refused once
    /// locked.
    pub fn read_field(&self, field: Field) -> Result<Option<Vec<u8>>, DebugError> {
        if self.is_locked() && field.is_secret() {
            return Err(DebugError::SecretField(field));
        }
        Ok(self.protected.peek(field).map(<[u8]>::to_vec))
    }

    /// Writes `data` at `offset`, as a probe's flash loader does: it erases
    /// and reprograms what it needs to, so the bytes simply become `data`
    /// (no alignment, no erase rule). Refused once locked.
    pub fn write_flash(&mut self, offset: u32, data: &[u8]) -> Result<(), DebugError> {
        if self.is_locked() {
            return Err(DebugError::WriteProtected);
        }
        let range = self.range(offset, data.len())?;
        self.flash.raw_mut()[range].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::Geometry;
    use crate::power::{CutMode, PowerSupply};
    use trustchain_sbm::hal::{Flash, Protected};

    fn parts() -> (SimFlash, SimProtected) {
        let power = PowerSupply::new();
        let mut flash = SimFlash::new(Geometry::SMALL_PAGES, power.clone());
        let mut prot = SimProtected::new(power);
        flash.program(0, &[0x42; 8]).unwrap();
        prot.write_once(Field::Uid, b"uid-1").unwrap();
        prot.write_once(Field::IdentityKey, &[7; 32]).unwrap();
        prot.write_once(Field::AgreementKey, &[8; 32]).unwrap();
        prot.write_once(Field::ProductKey, &[9; 32]).unwrap();
        prot.write_once(Field::OemRoot, b"root").unwrap();
        (flash, prot)
    }

    #[test]
    fn before_lock_everything_is_readable_and_writable() {
        let (mut flash, prot) = parts();
        let ops = flash.power().ops();
        let counters = flash.counters();
        let mut port = DebugPort::new(&mut flash, &prot);
        assert!(!port.is_locked());
        assert_eq!(
            port.read_flash(0, 9).unwrap(),
            [0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0xFF]
        );
        assert_eq!(
            port.read_field(Field::IdentityKey).unwrap(),
            Some(vec![7; 32])
        );
        assert_eq!(
            port.read_field(Field::Uid).unwrap(),
            Some(b"uid-1".to_vec())
        );
        assert_eq!(port.read_field(Field::CertChain).unwrap(), None);
        // Unaligned, over programmed bytes: the probe's loader does it all.
        port.write_flash(3, &[0x00, 0x11, 0xFF]).unwrap();
        assert_eq!(
            port.read_flash(0, 8).unwrap(),
            [0x42, 0x42, 0x42, 0x00, 0x11, 0xFF, 0x42, 0x42]
        );
        assert_eq!(
            port.read_flash(256 * 1024 - 4, 5),
            Err(DebugError::OutOfBounds {
                offset: 256 * 1024 - 4,
                len: 5
            })
        );
        assert_eq!(
            port.write_flash(u32::MAX, &[0; 2]),
            Err(DebugError::OutOfBounds {
                offset: u32::MAX,
                len: 2
            })
        );
        // Nothing the probe did is an SBM operation.
        assert_eq!(flash.power().ops(), ops);
        assert_eq!(flash.counters(), counters);
    }

    #[test]
    fn after_lock_flash_and_secrets_are_refused() {
        let (mut flash, mut prot) = parts();
        prot.lock().unwrap();
        let before = flash.raw().to_vec();
        let mut port = DebugPort::new(&mut flash, &prot);
        assert!(port.is_locked());
        assert_eq!(port.read_flash(0, 8), Err(DebugError::ReadOutProtected));
        assert_eq!(port.read_flash(0, 0), Err(DebugError::ReadOutProtected));
        assert_eq!(
            port.write_flash(0, &[0; 8]),
            Err(DebugError::WriteProtected)
        );
        for f in Field::ALL {
            if f.is_secret() {
                assert_eq!(port.read_field(f), Err(DebugError::SecretField(f)));
            } else {
                assert!(port.read_field(f).is_ok(), "{f:?}");
            }
        }
        assert_eq!(
            port.read_field(Field::Uid).unwrap(),
            Some(b"uid-1".to_vec())
        );
        assert_eq!(
            port.read_field(Field::OemRoot).unwrap(),
            Some(b"root".to_vec())
        );
        assert_eq!(flash.raw(), &before[..]);
    }

    #[test]
    fn works_while_the_power_is_off() {
        let (mut flash, prot) = parts();
        flash.power().cut_after(1, CutMode::Before);
        assert!(flash.erase_page(0).is_err());
        let port = DebugPort::new(&mut flash, &prot);
        assert_eq!(port.read_flash(0, 1).unwrap(), [0x42]);
    }
}
