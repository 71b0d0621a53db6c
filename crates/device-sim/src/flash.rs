//! NOR flash with the strictest real rules, and its geometry.
//!
//! - Erase works on one whole page at a page-aligned offset and sets it to
//!   0xFF.
//! - Program works at `write_size` alignment, on a multiple of `write_size`
//!   bytes, and only into bytes that are all erased (0xFF). Rewriting a byte
//!   that is not 0xFF is refused even when it would only clear bits: flash
//!   with ECC (most current MCUs) forbids it, so the model does too.
//! - A request that breaks a rule returns an error and changes nothing: no
//!   byte, no counter, no operation number.
//!
//! Every erase and program is an operation of the device's
//! [`PowerSupply`], and may be cut (see [`crate::power`]).
use aws_lc_rs::digest;
use trustchain_sbm::hal::{Flash, FlashError};

use crate::power::{CutMode, Grant, PowerLoss, PowerSupply};

/// The largest flash the simulator accepts (it lives in memory).
pub const MAX_CAPACITY: u32 = 256 * 1024 * 1024;

/// The shape of a flash device. Only [`Geometry::new`] and the presets make
/// one, so every `Geometry` is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    page_size: u32,
    write_size: u32,
    capacity: u32,
}

/// Why a geometry is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// A size that must be a power of two is not.
    #[error("{what} {value} is not a power of two")]
    NotPowerOfTwo {
        /// `page_size` or `write_size`.
        what: &'static str,
        /// The value given.
        value: u32,
    },
    /// The write size is larger than the page.
    #[error("write_size {write_size} is larger than page_size {page_size}")]
    WriteLargerThanPage {
        /// The write size given.
        write_size: u32,
        /// The page size given.
        page_size: u32,
    },
    /// The capacity is zero or not a whole number of pages.
    #[error("capacity {capacity} is not a non-zero multiple of page_size {page_size}")]
    CapacityNotPages {
        /// The capacity given.
        capacity: u32,
        /// The page size given.
        page_size: u32,
    },
    /// The capacity is more than [`MAX_CAPACITY`].
    #[error("capacity {capacity} is more than the simulator's limit of {MAX_CAPACITY}")]
    TooLarge {
        /// The capacity given.
        capacity: u32,
    },
}

impl Geometry {
    /// Small pages: 1 KiB pages, 8-byte writes, 256 KiB (like an STM32L4).
    pub const SMALL_PAGES: Geometry = Geometry {
        page_size: 1024,
        write_size: 8,
        capacity: 256 * 1024,
    };

    /// Large pages: 16 KiB pages, 16-byte writes, 512 KiB (like an STM32F4
    /// sector in its small region, or an nRF-style large erase unit).
    pub const LARGE_PAGES: Geometry = Geometry {
        page_size: 16 * 1024,
        write_size: 16,
        capacity: 512 * 1024,
    };

    /// A geometry: `page_size` and `write_size` powers of two, `write_size`
    /// at most `page_size`, `capacity` a non-zero multiple of `page_size` and
    /// at most [`MAX_CAPACITY`].
    pub const fn new(
        page_size: u32,
        write_size: u32,
        capacity: u32,
    ) -> Result<Self, GeometryError> {
        if !page_size.is_power_of_two() {
            return Err(GeometryError::NotPowerOfTwo {
                what: "page_size",
                value: page_size,
            });
        }
        if !write_size.is_power_of_two() {
            return Err(GeometryError::NotPowerOfTwo {
                what: "write_size",
                value: write_size,
            });
        }
        if write_size > page_size {
            return Err(GeometryError::WriteLargerThanPage {
                write_size,
                page_size,
            });
        }
        if capacity == 0 || !capacity.is_multiple_of(page_size) {
            return Err(GeometryError::CapacityNotPages {
                capacity,
                page_size,
            });
        }
        if capacity > MAX_CAPACITY {
            return Err(GeometryError::TooLarge { capacity });
        }
        Ok(Geometry {
            page_size,
            write_size,
            capacity,
        })
    }

    /// Erase granularity in bytes.
    pub const fn page_size(self) -> u32 {
        self.page_size
    }

    /// Program granularity and alignment in bytes.
    pub const fn write_size(self) -> u32 {
        self.write_size
    }

    /// Size of the device in bytes.
    pub const fn capacity(self) -> u32 {
        self.capacity
    }

    /// Number of pages.
    pub const fn pages(self) -> u32 {
        self.capacity / self.page_size
    }
}

// The presets are checked when the crate compiles.
const _: () = {
    let s = Geometry::SMALL_PAGES;
    assert!(Geometry::new(s.page_size, s.write_size, s.capacity).is_ok());
    let l = Geometry::LARGE_PAGES;
    assert!(Geometry::new(l.page_size, l.write_size, l.capacity).is_ok());
};

/// What the flash has done over the device's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlashCounters {
    /// Page erases that reached the flash (torn ones included).
    pub erases: u64,
    /// Programs that reached the flash (torn ones included).
    pub programs: u64,
    /// Bytes written by programs; a torn program adds the length of the
    /// prefix it wrote completely.
    pub bytes_programmed: u64,
}

impl FlashCounters {
    /// Erases and programs together.
    pub fn ops(&self) -> u64 {
        self.erases.saturating_add(self.programs)
    }
}

/// A simulated NOR flash, held in memory.
pub struct SimFlash {
    geometry: Geometry,
    data: Vec<u8>,
    counters: FlashCounters,
    power: PowerSupply,
}

impl std::fmt::Debug for SimFlash {
    // The content is up to 256 MiB: left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFlash")
            .field("geometry", &self.geometry)
            .field("counters", &self.counters)
            .field("power", &self.power)
            .finish_non_exhaustive()
    }
}

impl SimFlash {
    /// An erased flash (all 0xFF) powered by `power`.
    pub fn new(geometry: Geometry, power: PowerSupply) -> Self {
        Self::restored(
            geometry,
            power,
            vec![0xFF; geometry.capacity as usize],
            FlashCounters::default(),
        )
    }

    /// A flash holding `data`, which must be exactly `capacity` bytes (the
    /// caller checks; a wrong length is a bug).
    pub(crate) fn restored(
        geometry: Geometry,
        power: PowerSupply,
        data: Vec<u8>,
        counters: FlashCounters,
    ) -> Self {
        assert_eq!(data.len(), geometry.capacity as usize, "flash image size");
        SimFlash {
            geometry,
            data,
            counters,
            power,
        }
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The counters.
    pub fn counters(&self) -> FlashCounters {
        self.counters
    }

    /// The power supply this flash runs on.
    pub fn power(&self) -> &PowerSupply {
        &self.power
    }

    /// The raw content, as `flash.bin` holds it: the test bench's view, not
    /// the device's (no power needed, nothing counted, no lock).
    pub fn raw(&self) -> &[u8] {
        &self.data
    }

    /// The raw content, to tamper with in memory: nothing is counted.
    pub fn raw_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The byte range `offset..offset + len`, if it is inside the device.
    fn range(&self, offset: u32, len: usize) -> Result<std::ops::Range<usize>, FlashError> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(FlashError::OutOfBounds)?;
        if end > self.data.len() {
            return Err(FlashError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl From<PowerLoss> for FlashError {
    fn from(_: PowerLoss) -> Self {
        FlashError::PowerLoss
    }
}

/// Where a torn operation of `len` bytes stops (`0..len`), and which bits of
/// the byte at that point it managed to clear: SHA-256 of a label and the
/// seed, so that one seed always tears the same way.
fn tear_point(seed: u64, len: usize) -> (usize, u8) {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"trustchain-device-sim tear");
    ctx.update(&seed.to_be_bytes());
    let d = ctx.finish();
    let d = d.as_ref();
    let mut n = [0u8; 8];
    n.copy_from_slice(&d[..8]);
    let at = (u64::from_be_bytes(n) % len.max(1) as u64) as usize;
    (at, d[8])
}

impl Flash for SimFlash {
    fn page_size(&self) -> u32 {
        self.geometry.page_size
    }

    fn write_size(&self) -> u32 {
        self.geometry.write_size
    }

    fn capacity(&self) -> u32 {
        self.geometry.capacity
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        self.power.check()?;
        let range = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[range]);
        Ok(())
    }

    fn erase_page(&mut self, offset: u32) -> Result<(), FlashError> {
        self.power.check()?;
        let range = self.range(offset, self.geometry.page_size as usize)?;
        if !offset.is_multiple_of(self.geometry.page_size) {
            return Err(FlashError::Misaligned);
        }
        let page = &mut self.data[range];
        match self.power.begin_op()? {
            Grant::Run => page.fill(0xFF),
            Grant::Cut(CutMode::Before) => return Err(FlashError::PowerLoss),
            Grant::Cut(CutMode::Tear { seed }) => {
                // A prefix of the page is erased; the rest keeps its content.
                let (at, _) = tear_point(seed, page.len());
                page[..at].fill(0xFF);
                self.counters.erases += 1;
                return Err(FlashError::PowerLoss);
            }
        }
        self.counters.erases += 1;
        Ok(())
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        self.power.check()?;
        let range = self.range(offset, data.len())?;
        let ws = self.geometry.write_size;
        if !offset.is_multiple_of(ws) || !data.len().is_multiple_of(ws as usize) {
            return Err(FlashError::Misaligned);
        }
        if data.is_empty() {
            return Ok(());
        }
        let target = &mut self.data[range];
        if target.iter().any(|&b| b != 0xFF) {
            return Err(FlashError::NotErased);
        }
        match self.power.begin_op()? {
            Grant::Run => target.copy_from_slice(data),
            Grant::Cut(CutMode::Before) => return Err(FlashError::PowerLoss),
            Grant::Cut(CutMode::Tear { seed }) => {
                // The prefix before the tear is written; the byte at the tear
                // has only some of its bits cleared; the rest stays erased.
                let (at, bits) = tear_point(seed, data.len());
                target[..at].copy_from_slice(&data[..at]);
                target[at] = !(!data[at] & bits);
                self.counters.programs += 1;
                self.counters.bytes_programmed += at as u64;
                return Err(FlashError::PowerLoss);
            }
        }
        self.counters.programs += 1;
        self.counters.bytes_programmed += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::Cut;

    fn small() -> SimFlash {
        SimFlash::new(Geometry::SMALL_PAGES, PowerSupply::new())
    }

    #[test]
    fn geometry_validation() {
        assert_eq!(
            Geometry::new(1024, 8, 256 * 1024),
            Ok(Geometry::SMALL_PAGES)
        );
        assert_eq!(
            Geometry::new(16384, 16, 512 * 1024),
            Ok(Geometry::LARGE_PAGES)
        );
        assert_eq!(
            Geometry::new(1000, 8, 8000),
            Err(GeometryError::NotPowerOfTwo {
                what: "page_size",
                value: 1000
            })
        );
        assert_eq!(
            Geometry::new(1024, 0, 1024),
            Err(GeometryError::NotPowerOfTwo {
                what: "write_size",
                value: 0
            })
        );
        assert_eq!(
            Geometry::new(1024, 2048, 4096),
            Err(GeometryError::WriteLargerThanPage {
                write_size: 2048,
                page_size: 1024
            })
        );
        assert_eq!(
            Geometry::new(1024, 8, 1536),
            Err(GeometryError::CapacityNotPages {
                capacity: 1536,
                page_size: 1024
            })
        );
        assert_eq!(
            Geometry::new(1024, 8, 0),
            Err(GeometryError::CapacityNotPages {
                capacity: 0,
                page_size: 1024
            })
        );
        assert_eq!(
            Geometry::new(1024, 8, MAX_CAPACITY + 1024),
            Err(GeometryError::TooLarge {
                capacity: MAX_CAPACITY + 1024
            })
        );
        // Capacity need not be a power of two.
        assert!(Geometry::new(1024, 8, 3 * 1024).is_ok());
    }

    #[test]
    fn presets_have_the_documented_shape() {
        let s = Geometry::SMALL_PAGES;
        assert_eq!(
            (s.page_size(), s.write_size(), s.capacity(), s.pages()),
            (1024, 8, 262_144, 256)
        );
        let l = Geometry::LARGE_PAGES;
        assert_eq!(
            (l.page_size(), l.write_size(), l.capacity(), l.pages()),
            (16_384, 16, 524_288, 32)
        );
        for g in [s, l] {
            let mut f = SimFlash::new(g, PowerSupply::new());
            assert_eq!(
                (f.page_size(), f.write_size(), f.capacity()),
                (g.page_size(), g.write_size(), g.capacity())
            );
            assert!(f.raw().iter().all(|&b| b == 0xFF));
            // The last page erases, one byte into the next does not exist.
            let last = g.capacity() - g.page_size();
            assert_eq!(f.erase_page(last), Ok(()));
            assert_eq!(f.erase_page(g.capacity()), Err(FlashError::OutOfBounds));
            // A page-size offset that is only write-aligned is misaligned.
            assert_eq!(f.erase_page(g.write_size()), Err(FlashError::Misaligned));
            let w = vec![0x5A; g.write_size() as usize];
            assert_eq!(f.program(last + g.page_size() - g.write_size(), &w), Ok(()));
            assert_eq!(f.program(g.capacity(), &w), Err(FlashError::OutOfBounds));
        }
    }

    #[test]
    fn erase_only_whole_aligned_pages() {
        let mut f = small();
        f.raw_mut().fill(0x00);
        assert_eq!(f.erase_page(1), Err(FlashError::Misaligned));
        assert_eq!(f.erase_page(512), Err(FlashError::Misaligned));
        assert_eq!(f.erase_page(256 * 1024), Err(FlashError::OutOfBounds));
        assert_eq!(f.erase_page(u32::MAX), Err(FlashError::OutOfBounds));
        assert!(
            f.raw().iter().all(|&b| b == 0x00),
            "failed erases changed nothing"
        );
        assert_eq!(f.counters(), FlashCounters::default());
        assert_eq!(f.power().ops(), 0);

        assert_eq!(f.erase_page(2048), Ok(()));
        assert!(f.raw()[2048..3072].iter().all(|&b| b == 0xFF));
        assert!(f.raw()[..2048].iter().all(|&b| b == 0x00));
        assert!(f.raw()[3072..].iter().all(|&b| b == 0x00));
    }

    #[test]
    fn program_alignment() {
        let mut f = small();
        assert_eq!(f.program(4, &[0; 8]), Err(FlashError::Misaligned));
        assert_eq!(f.program(8, &[0; 4]), Err(FlashError::Misaligned));
        assert_eq!(f.program(8, &[0; 12]), Err(FlashError::Misaligned));
        assert_eq!(
            f.program(256 * 1024 - 8, &[0; 16]),
            Err(FlashError::OutOfBounds)
        );
        assert_eq!(
            f.program(u32::MAX - 7, &[0; 8]),
            Err(FlashError::OutOfBounds)
        );
        assert!(f.raw().iter().all(|&b| b == 0xFF));
        assert_eq!(f.counters(), FlashCounters::default());
        assert_eq!(f.power().ops(), 0);
        // An empty program is nothing: no operation.
        assert_eq!(f.program(8, &[]), Ok(()));
        assert_eq!(f.power().ops(), 0);
        assert_eq!(f.program(8, &[0; 16]), Ok(()));
    }

    #[test]
    fn program_into_non_erased_bytes_is_refused_and_changes_nothing() {
        let mut f = small();
        let first = [0xF0u8; 8];
        f.program(64, &first).unwrap();
        // 0xF0 -> 0x00 only clears bits, still refused (ECC flash rule).
        assert_eq!(f.program(64, &[0x00; 8]), Err(FlashError::NotErased));
        // A 16-byte program whose second half is erased but first is not.
        let before = f.raw().to_vec();
        assert_eq!(f.program(64, &[0x11; 16]), Err(FlashError::NotErased));
        // One non-0xFF byte at the end of the target is enough.
        f.raw_mut()[127] = 0xFE;
        assert_eq!(f.program(120, &[0x22; 8]), Err(FlashError::NotErased));
        f.raw_mut()[127] = 0xFF;
        assert_eq!(f.raw(), &before[..], "refused programs changed nothing");
        assert_eq!(
            f.counters(),
            FlashCounters {
                erases: 0,
                programs: 1,
                bytes_programmed: 8
            }
        );
        assert_eq!(f.power().ops(), 1);
        // After an erase, the same bytes program.
        f.erase_page(0).unwrap();
        assert_eq!(f.program(64, &[0x00; 8]), Ok(()));
    }

    #[test]
    fn read_after_program() {
        let mut f = small();
        let data: Vec<u8> = (0..32u8).collect();
        f.program(1024 + 32, &data).unwrap();
        let mut buf = [0u8; 48];
        f.read(1024 + 24, &mut buf).unwrap();
        assert_eq!(&buf[..8], &[0xFF; 8]);
        assert_eq!(&buf[8..40], &data[..]);
        assert_eq!(&buf[40..], &[0xFF; 8]);
        // Reads need no alignment, but must stay inside.
        let mut one = [0u8; 1];
        f.read(1024 + 33, &mut one).unwrap();
        assert_eq!(one, [1]);
        assert_eq!(
            f.read(256 * 1024 - 1, &mut [0u8; 2]),
            Err(FlashError::OutOfBounds)
        );
        assert_eq!(f.read(256 * 1024, &mut []), Ok(()));
        assert_eq!(f.power().ops(), 1, "reads are not operations");
    }

    #[test]
    fn counters() {
        let mut f = small();
        f.erase_page(0).unwrap();
        f.erase_page(1024).unwrap();
        f.program(0, &[1; 8]).unwrap();
        f.program(8, &[2; 24]).unwrap();
        f.program(1024, &[3; 16]).unwrap();
        let _ = f.program(0, &[4; 8]); // refused: not erased
        let _ = f.erase_page(3); // refused: misaligned
        let c = f.counters();
        assert_eq!(
            c,
            FlashCounters {
                erases: 2,
                programs: 3,
                bytes_programmed: 48
            }
        );
        assert_eq!(c.ops(), 5);
        assert_eq!(f.power().ops(), 5);
    }

    #[test]
    fn cut_before_leaves_the_target_untouched_and_later_ops_fail_until_restore() {
        let mut f = small();
        f.program(0, &[0xAA; 8]).unwrap();
        let start = f.power().ops();
        // Count an uninterrupted run of 3 operations ...
        let run = |f: &mut SimFlash| -> Result<(), FlashError> {
            f.erase_page(1024)?;
            f.program(1024, &[0x11; 16])?;
            f.program(1040, &[0x22; 8])
        };
        let mut clean = small();
        let c0 = clean.power().ops();
        run(&mut clean).unwrap();
        assert_eq!(clean.power().ops() - c0, 3);

        // ... then cut the second one (the first program) before it starts.
        f.power()
            .schedule(Cut {
                at_op: start + 2,
                mode: CutMode::Before,
            })
            .unwrap();
        assert_eq!(run(&mut f), Err(FlashError::PowerLoss));
        assert!(
            f.raw()[1024..2048].iter().all(|&b| b == 0xFF),
            "target untouched"
        );
        assert_eq!(
            f.counters().programs,
            1,
            "the cut program did not reach the flash"
        );
        assert_eq!(f.power().ops(), start + 2);
        // Everything fails now, reads too, and nothing is numbered.
        let mut buf = [0u8; 8];
        assert_eq!(f.read(0, &mut buf), Err(FlashError::PowerLoss));
        assert_eq!(f.program(1024, &[0x11; 16]), Err(FlashError::PowerLoss));
        assert_eq!(f.erase_page(0), Err(FlashError::PowerLoss));
        assert_eq!(f.power().ops(), start + 2);
        assert_eq!(&f.raw()[..8], &[0xAA; 8]);
        // Power back: the content is as the cut left it, and work goes on.
        f.power().restore();
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xAA; 8]);
        assert_eq!(f.program(1024, &[0x11; 16]), Ok(()));
        assert_eq!(f.power().ops(), start + 3, "counting continues");
    }

    #[test]
    fn torn_program_writes_a_prefix_and_a_half_programmed_byte() {
        let len = 64usize;
        let new: Vec<u8> = (0..len as u8).map(|i| 0x10 + i).collect();
        assert!(new.iter().all(|&b| b != 0xFF));
        let (mut partial, mut half_bytes) = (0, 0);
        let mut points = std::collections::BTreeSet::new();
        for seed in 0..32u64 {
            let mut f = small();
            let (at, _) = tear_point(seed, len);
            points.insert(at);
            f.power().cut_after(1, CutMode::Tear { seed });
            assert_eq!(f.program(2048, &new), Err(FlashError::PowerLoss));
            let got = f.raw()[2048..2048 + len].to_vec();
            assert_eq!(&got[..at], &new[..at], "seed {seed}: prefix written");
            // The torn byte only lost bits that the new value clears.
            let torn = got[at];
            assert_eq!(
                torn & new[at],
                new[at],
                "seed {seed}: no bit cleared that data keeps"
            );
            assert!(
                got[at + 1..].iter().all(|&b| b == 0xFF),
                "seed {seed}: after the tear untouched"
            );
            assert!(f.raw()[..2048]
                .iter()
                .chain(&f.raw()[2048 + len..])
                .all(|&b| b == 0xFF));
            if got != new && got.iter().any(|&b| b != 0xFF) {
                partial += 1;
            }
            if torn != 0xFF && torn != new[at] {
                half_bytes += 1;
            }
            // The flash stays as torn after a restore; the torn bytes are not
            // erased, so programming their write unit again is refused.
            f.power().restore();
            let mut back = vec![0u8; len];
            f.read(2048, &mut back).unwrap();
            assert_eq!(back, got);
            let unit = at / 8 * 8;
            if torn != 0xFF {
                assert_eq!(
                    f.program(2048 + unit as u32, &new[unit..unit + 8]),
                    Err(FlashError::NotErased)
                );
            }
        }
        assert!(
            half_bytes >= 8,
            "half-programmed bytes happen ({half_bytes}/32)"
        );
        assert!(
            partial >= 24,
            "most tears are neither all old nor all new ({partial}/32)"
        );
        assert!(
            points.len() >= 16,
            "seeds tear at different points ({})",
            points.len()
        );
    }

    #[test]
    fn torn_erase_erases_a_prefix() {
        let mut partial = 0;
        for seed in 0..32u64 {
            let mut f = small();
            f.raw_mut()[1024..2048].fill(0x00);
            let (at, _) = tear_point(seed, 1024);
            f.power().cut_after(1, CutMode::Tear { seed });
            assert_eq!(f.erase_page(1024), Err(FlashError::PowerLoss));
            let page = &f.raw()[1024..2048];
            assert!(
                page[..at].iter().all(|&b| b == 0xFF),
                "seed {seed}: prefix erased"
            );
            assert!(
                page[at..].iter().all(|&b| b == 0x00),
                "seed {seed}: rest kept"
            );
            if at > 0 {
                partial += 1;
            }
            assert_eq!(f.counters().erases, 1);
        }
        assert!(partial >= 24, "most torn erases are partial ({partial}/32)");
    }

    #[test]
    fn tear_point_is_deterministic_and_in_range() {
        for seed in 0..200u64 {
            let (a, m) = tear_point(seed, 24);
            assert!(a < 24);
            assert_eq!(tear_point(seed, 24), (a, m));
        }
    }
}
