//! The board's random source. **Test-board limitation**: the MPS2 board has
//! no TRNG, so this is a DRBG (SHA-256 in counter mode) seeded from a
//! 32-byte slot in PSRAM that the host fills with fresh random bytes before
//! each QEMU run. A real chip feeds `hal::Rng` from its TRNG instead.
//!
//! ```text
//! key        = SHA-256("TC-M4-DRBG key"  || seed)
//! next seed  = SHA-256("TC-M4-DRBG next" || seed)   written back at start
//! block i    = SHA-256(key || i as u64 big-endian)  i = 0, 1, ...
//! ```
//! The seed is replaced at start, so a restart without a fresh seed from
//! the host still never repeats an output stream.
use sha2::Digest;
use trustchain_sbm::crypto::Hasher;
use trustchain_sbm::hal::Rng;

/// SHA-256 counter-mode DRBG.
pub struct Drbg {
    key: [u8; 32],
    counter: u64,
}

fn hash(label: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Hasher::new();
    h.update(label);
    h.update(data);
    h.finalize().into()
}

impl Drbg {
    /// Seeds from `slot` (32 bytes) and ratchets it. `None` if the slot is
    /// not 32 bytes or still blank (all 0x00 or all 0xFF): the host did not
    /// seed the board, and no key may come from a known seed.
    pub fn from_slot(slot: &mut [u8]) -> Option<Self> {
        let seed = <[u8; 32]>::try_from(&slot[..]).ok()?;
        if seed.iter().all(|&b| b == 0) || seed.iter().all(|&b| b == 0xFF) {
            return None;
        }
        slot.copy_from_slice(&hash(b"TC-M4-DRBG next", &seed));
        Some(Self {
            key: hash(b"TC-M4-DRBG key", &seed),
            counter: 0,
        })
    }
}

impl Rng for Drbg {
    fn fill(&mut self, buf: &mut [u8]) {
        for out in buf.chunks_mut(32) {
            let block = hash(&self.key, &self.counter.to_be_bytes());
            self.counter += 1;
            out.copy_from_slice(&block[..out.len()]);
        }
    }
}
