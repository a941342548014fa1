//! A small seeded generator (xorshift64*) for everything random the
//! collector does: reservoir positions, calibration chunks, retry jitter.
//! Seeded, so a replay after a restart draws the same numbers.

/// A seeded xorshift64* generator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; any seed works (zero is avoided).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A position in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
