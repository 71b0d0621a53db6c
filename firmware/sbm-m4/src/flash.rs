//! NOR flash emulated in file-backed PSRAM, with the simulator's rules
//! (`crates/device-sim/src/flash.rs`): erase one whole page at a
//! page-aligned offset to 0xFF; program at `WRITE_SIZE` alignment, a
//! multiple of `WRITE_SIZE` bytes, only into erased (0xFF) bytes; a request
//! that breaks a rule changes nothing.
use trustchain_sbm::hal::{Flash, FlashError};

/// Erase granularity.
pub const PAGE_SIZE: u32 = 4096;
/// Program granularity.
pub const WRITE_SIZE: u32 = 8;

/// The emulated flash over its PSRAM window.
pub struct PsramFlash {
    mem: &'static mut [u8],
}

impl PsramFlash {
    /// Over `mem`, whose length must be a non-zero multiple of the page.
    pub fn new(mem: &'static mut [u8]) -> Option<Self> {
        let ok =
            !mem.is_empty() && u32::try_from(mem.len()).is_ok_and(|n| n.is_multiple_of(PAGE_SIZE));
        ok.then_some(Self { mem })
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, FlashError> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(FlashError::OutOfBounds)?;
        if end > self.mem.len() {
            return Err(FlashError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl Flash for PsramFlash {
    fn page_size(&self) -> u32 {
        PAGE_SIZE
    }

    fn write_size(&self) -> u32 {
        WRITE_SIZE
    }

    fn capacity(&self) -> u32 {
        // `new` checked that the length fits u32.
        self.mem.len() as u32
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.mem[r]);
        Ok(())
    }

    fn erase_page(&mut self, offset: u32) -> Result<(), FlashError> {
        let r = self.range(offset, PAGE_SIZE as usize)?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(FlashError::Misaligned);
        }
        self.mem[r].fill(0xFF);
        Ok(())
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let r = self.range(offset, data.len())?;
        if !offset.is_multiple_of(WRITE_SIZE) || !data.len().is_multiple_of(WRITE_SIZE as usize) {
            return Err(FlashError::Misaligned);
        }
        let target = &mut self.mem[r];
        if target.iter().any(|&b| b != 0xFF) {
            return Err(FlashError::NotErased);
        }
        target.copy_from_slice(data);
        Ok(())
    }
}
