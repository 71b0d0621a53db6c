//! Where things live in flash. A board gives a [`Layout`]; the SBM checks
//! it once ([`Layout::check`]) and every later offset is derived from it
//! with checked arithmetic.
//!
//! ```text
//! | application slot | staging area (header | UPK | update.enc) | state A | state B |
//! ```
use crate::hal::Flash;
use crate::install;

/// A page-aligned region of flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Offset from the start of flash.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Region {
    /// One past the last byte, if it fits `u32`.
    pub fn end(&self) -> Option<u32> {
        self.offset.checked_add(self.len)
    }
}

/// The flash layout of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Address at which flash offset 0 appears in the CPU's memory map.
    pub flash_base_address: u32,
    /// Where the application runs from; images must be linked for it.
    pub app: Region,
    /// Where a release waits to be verified and installed.
    pub staging: Region,
    /// The two pages that alternately hold the SBM state record.
    pub state: [u32; 2],
}

/// Offset of the UPK inside the staging area.
pub const STAGING_UPK: u32 = 16;
/// Largest UPK the device accepts (its RAM buffer).
pub const MAX_DEVICE_UPK: u32 = 4096;
/// Offset of `update.enc` inside the staging area.
pub const STAGING_ENC: u32 = STAGING_UPK + MAX_DEVICE_UPK;

impl Layout {
    /// The default layout for a flash: application and staging share what
    /// is left after the two state pages at the end, staging a little larger
    /// (ciphertext is 16 bytes per 4 KiB longer, plus header and UPK).
    pub fn for_flash<F: Flash>(flash: &F, flash_base_address: u32) -> Layout {
        let page = flash.page_size();
        let pages = flash.capacity() / page;
        let usable = pages.saturating_sub(2);
        // The largest application slot whose release still fits staging:
        // header and UPK slot, plus the ciphertext (16 bytes per 4 KiB more).
        let mut app_pages = usable / 2;
        while app_pages > 1 {
            let app = app_pages * page;
            let enc = app
                + app.div_ceil(trustchain_formats::stream::CHUNK_SIZE as u32)
                    * trustchain_formats::stream::TAG_LEN as u32;
            let staging = (usable - app_pages) * page;
            if STAGING_ENC.saturating_add(enc) <= staging {
                break;
            }
            app_pages -= 1;
        }
        let staging_pages = usable.saturating_sub(app_pages);
        Layout {
            flash_base_address,
            app: Region {
                offset: 0,
                len: app_pages * page,
            },
            staging: Region {
                offset: app_pages * page,
                len: staging_pages * page,
            },
            state: [usable * page, (usable + 1) * page],
        }
    }

    /// The address the application is linked for.
    pub fn app_address(&self) -> u64 {
        self.flash_base_address as u64 + self.app.offset as u64
    }

    /// Checks the layout against the flash: page alignment, bounds, no overlap.
    pub fn check<F: Flash>(&self, flash: &F) -> bool {
        let page = flash.page_size();
        let cap = flash.capacity();
        let region_ok = |r: &Region| {
            r.len > 0
                && r.offset.is_multiple_of(page)
                && r.len.is_multiple_of(page)
                && r.end().is_some_and(|e| e <= cap)
        };
        let page_ok =
            |o: u32| o.is_multiple_of(page) && o.checked_add(page).is_some_and(|e| e <= cap);
        let disjoint = |a: (u32, u32), b: (u32, u32)| a.1 <= b.0 || b.1 <= a.0;
        let spans = [
            (self.app.offset, self.app.end().unwrap_or(u32::MAX)),
            (self.staging.offset, self.staging.end().unwrap_or(u32::MAX)),
            (self.state[0], self.state[0].saturating_add(page)),
            (self.state[1], self.state[1].saturating_add(page)),
        ];
        let mut ok = region_ok(&self.app)
            && region_ok(&self.staging)
            && page_ok(self.state[0])
            && page_ok(self.state[1])
            && self.staging.len > STAGING_ENC
            && flash.write_size() <= 32
            && install::PROGRAM_UNIT.is_multiple_of(flash.write_size() as usize)
            && STAGING_UPK.is_multiple_of(flash.write_size())
            && STAGING_ENC.is_multiple_of(flash.write_size());
        for i in 0..spans.len() {
            for j in i + 1..spans.len() {
                ok &= disjoint(spans[i], spans[j]);
            }
        }
        ok
    }
}
