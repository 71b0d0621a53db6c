//! The device's random source: the OS, or a seed for reproducible tests.
use aws_lc_rs::digest;
use trustchain_sbm::hal::Rng;

/// A random source for the simulated device.
#[derive(Debug, Clone)]
pub struct SimRng(Source);

#[derive(Debug, Clone)]
enum Source {
    Os,
    Seeded { seed: u64, counter: u64 },
}

impl SimRng {
    /// Random bytes from the operating system.
    pub fn os() -> Self {
        SimRng(Source::Os)
    }

    /// Deterministic bytes for tests: the blocks SHA-256(seed || counter),
    /// both big-endian u64, counter from 0. Each `fill` starts a new block.
    /// Not random: never for a real key.
    pub fn seeded(seed: u64) -> Self {
        SimRng(Source::Seeded { seed, counter: 0 })
    }
}

impl Default for SimRng {
    fn default() -> Self {
        Self::os()
    }
}

impl Rng for SimRng {
    fn fill(&mut self, buf: &mut [u8]) {
        match &mut self.0 {
            Source::Os => {
                // The trait has no error: a host without an RNG cannot run
                // the simulator at all.
                aws_lc_rs::rand::fill(buf).expect("the operating system's random source failed");
            }
            Source::Seeded { seed, counter } => {
                for chunk in buf.chunks_mut(32) {
                    let mut ctx = digest::Context::new(&digest::SHA256);
                    ctx.update(&seed.to_be_bytes());
                    ctx.update(&counter.to_be_bytes());
                    let block = ctx.finish();
                    chunk.copy_from_slice(&block.as_ref()[..chunk.len()]);
                    *counter = counter.wrapping_add(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_sha256_of_seed_and_counter() {
        let mut r = SimRng::seeded(5);
        let mut a = [0u8; 40];
        r.fill(&mut a);
        let mut input = [0u8; 16];
        input[..8].copy_from_slice(&5u64.to_be_bytes());
        let b0 = digest::digest(&digest::SHA256, &input);
        input[8..].copy_from_slice(&1u64.to_be_bytes());
        let b1 = digest::digest(&digest::SHA256, &input);
        assert_eq!(&a[..32], b0.as_ref());
        assert_eq!(&a[32..], &b1.as_ref()[..8]);
        // The next fill starts at block 2; the same seed repeats.
        let mut c = [0u8; 8];
        r.fill(&mut c);
        input[8..].copy_from_slice(&2u64.to_be_bytes());
        assert_eq!(&c, &digest::digest(&digest::SHA256, &input).as_ref()[..8]);
        let mut again = [0u8; 40];
        SimRng::seeded(5).fill(&mut again);
        assert_eq!(a, again);
    }

    #[test]
    fn os_gives_different_bytes() {
        let mut r = SimRng::os();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        r.fill(&mut a);
        r.fill(&mut b);
        assert_ne!(a, b);
    }
}
