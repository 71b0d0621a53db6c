//! The SBM state record: the signature table (one entry: the installed
//! application), the anti-rollback minimum, and the update journal. It lives
//! in two flash pages written alternately; each record carries a sequence
//! number and its own SHA-256, so a torn or half-erased write is simply not
//! a valid record and the other page still holds the previous state.
//!
//! Record (160 bytes, big-endian; `docs/formats.md`, "SBM state record"):
//! ```text
//!   0  "TCSR"            4  version = 1       5  journal      6  has_image   7  0
//!   8  seq u32          12  min_counter u64
//!  20  version 3 x u16  26  0 0              28  counter u64  36  size u32
//!  40  load_address u32 44  image digest[32] 76  staged UPK hash[32]
//! 108  zeros[20]       128  SHA-256 of bytes 0..128
//! ```
use crate::crypto::sha256;
use crate::hal::{Flash, FlashError};
use crate::layout::Layout;

/// Record length in flash.
pub const RECORD_LEN: usize = 160;
const MAGIC: [u8; 4] = *b"TCSR";

/// What the update journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// Nothing pending.
    Idle,
    /// The application asked for the staged update; install it at boot.
    Requested,
    /// Installing the staged update into the application slot: the old image
    /// is no longer intact; finish from staging at boot.
    Installing,
}

/// The signature table entry of the installed application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Version.
    pub version: [u16; 3],
    /// Security counter of its UPK.
    pub counter: u64,
    /// Size in bytes.
    pub size: u32,
    /// Load address.
    pub load_address: u32,
    /// SHA-256 of the application, checked at every reset.
    pub digest: [u8; 32],
}

/// The whole state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Sequence number of the record it came from (0: none yet).
    pub seq: u32,
    /// Lowest acceptable security counter.
    pub min_counter: u64,
    /// The journal.
    pub journal: Journal,
    /// The signature table entry, if an application is installed.
    pub installed: Option<Installed>,
    /// SHA-256 of the staged UPK the journal refers to.
    pub staged_upk: [u8; 32],
}

impl State {
    /// The state of a device that never wrote one.
    pub const BLANK: State = State {
        seq: 0,
        min_counter: 0,
        journal: Journal::Idle,
        installed: None,
        staged_upk: [0; 32],
    };

    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut r = [0u8; RECORD_LEN];
        r[..4].copy_from_slice(&MAGIC);
        r[4] = 1;
        r[5] = match self.journal {
            Journal::Idle => 0,
            Journal::Requested => 1,
            Journal::Installing => 2,
        };
        r[8..12].copy_from_slice(&self.seq.to_be_bytes());
        r[12..20].copy_from_slice(&self.min_counter.to_be_bytes());
        if let Some(i) = &self.installed {
            r[6] = 1;
            for (k, v) in i.version.iter().enumerate() {
                r[20 + 2 * k..22 + 2 * k].copy_from_slice(&v.to_be_bytes());
            }
            r[28..36].copy_from_slice(&i.counter.to_be_bytes());
            r[36..40].copy_from_slice(&i.size.to_be_bytes());
            r[40..44].copy_from_slice(&i.load_address.to_be_bytes());
            r[44..76].copy_from_slice(&i.digest);
        }
        r[76..108].copy_from_slice(&self.staged_upk);
        let h = sha256(&r[..128]);
        r[128..].copy_from_slice(&h);
        r
    }

    fn decode(r: &[u8; RECORD_LEN]) -> Option<State> {
        if r[..4] != MAGIC
            || r[4] != 1
            || r[7] != 0
            || r[26..28] != [0, 0]
            || r[108..128] != [0; 20]
        {
            return None;
        }
        if sha256(&r[..128])[..] != r[128..] {
            return None;
        }
        let u16_at = |o: usize| u16::from_be_bytes([r[o], r[o + 1]]);
        let u32_at = |o: usize| u32::from_be_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[o..o + 8]);
            u64::from_be_bytes(b)
        };
        let journal = match r[5] {
            0 => Journal::Idle,
            1 => Journal::Requested,
            2 => Journal::Installing,
            _ => return None,
        };
        let installed = match r[6] {
            0 => None,
            1 => {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&r[44..76]);
                Some(Installed {
                    version: [u16_at(20), u16_at(22), u16_at(24)],
                    counter: u64_at(28),
                    size: u32_at(36),
                    load_address: u32_at(40),
                    digest,
                })
            }
            _ => return None,
        };
        let mut staged_upk = [0u8; 32];
        staged_upk.copy_from_slice(&r[76..108]);
        Some(State {
            seq: u32_at(8),
            min_counter: u64_at(12),
            journal,
            installed,
            staged_upk,
        })
    }
}

/// Reads both pages; returns the valid record with the highest sequence
/// number and the page index it came from.
pub fn load<F: Flash>(
    flash: &mut F,
    layout: &Layout,
) -> Result<(State, Option<usize>), FlashError> {
    let mut best: Option<(State, usize)> = None;
    for (i, &page) in layout.state.iter().enumerate() {
        let mut r = [0u8; RECORD_LEN];
        flash.read(page, &mut r)?;
        if let Some(s) = State::decode(&r) {
            if best.as_ref().is_none_or(|(b, _)| s.seq > b.seq) {
                best = Some((s, i));
            }
        }
    }
    Ok(match best {
        Some((s, i)) => (s, Some(i)),
        None => (State::BLANK, None),
    })
}

/// Writes `next` as the new state: into the page that does not hold the
/// current record, erased first. Power lost at any point leaves either the
/// old record or the new one valid, never neither.
pub fn store<F: Flash>(flash: &mut F, layout: &Layout, next: &State) -> Result<State, FlashError> {
    let (current, page) = load(flash, layout)?;
    let target = match page {
        Some(0) => 1,
        _ => 0,
    };
    let mut rec = *next;
    rec.seq = current.seq.checked_add(1).ok_or(FlashError::Hardware)?;
    flash.erase_page(layout.state[target])?;
    flash.program(layout.state[target], &rec.encode())?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_any_flip_invalidates_it() {
        let s = State {
            seq: 9,
            min_counter: 77,
            journal: Journal::Installing,
            installed: Some(Installed {
                version: [1, 2, 3],
                counter: 5,
                size: 1000,
                load_address: 0x0800_0000,
                digest: [7; 32],
            }),
            staged_upk: [3; 32],
        };
        let r = s.encode();
        assert_eq!(State::decode(&r), Some(s));
        for i in 0..RECORD_LEN {
            let mut b = r;
            b[i] ^= 0x10;
            assert_eq!(State::decode(&b), None, "flip at {i}");
        }
        assert_eq!(State::decode(&[0xff; RECORD_LEN]), None);
    }
}
