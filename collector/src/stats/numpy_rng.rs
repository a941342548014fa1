//! NumPy's legacy `RandomState` (MT19937), as far as scikit-learn's
//! splitters draw from it: seeding from an integer, bounded integers by
//! rejection (`random_interval`), `shuffle`, `permutation` and `choice`
//! without replacement. NannyML decides whether scores need calibration
//! on `StratifiedShuffleSplit(random_state=42)`; drawing the same
//! numbers gives the same splits, so the same decision.

/// MT19937 with NumPy's legacy integer seeding.
#[derive(Debug, Clone)]
pub struct RandomState {
    key: [u32; 624],
    pos: usize,
}

impl RandomState {
    /// `numpy.random.RandomState(seed)` for an integer seed.
    pub fn new(seed: u32) -> RandomState {
        let mut key = [0u32; 624];
        let mut s = seed;
        for (pos, k) in key.iter_mut().enumerate() {
            *k = s;
            s = 1_812_433_253u32
                .wrapping_mul(s ^ (s >> 30))
                .wrapping_add(pos as u32 + 1);
        }
        RandomState { key, pos: 624 }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..624 {
            let y = (self.key[i] & UPPER) | (self.key[(i + 1) % 624] & LOWER);
            let mut v = self.key[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= MATRIX_A;
            }
            self.key[i] = v;
        }
        self.pos = 0;
    }

    /// The next 32 random bits (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == 624 {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        (u64::from(self.next_u32()) << 32) | u64::from(self.next_u32())
    }

    /// A uniform integer in `0..=max` by masked rejection (NumPy's
    /// `random_interval`).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        loop {
            let v = if max <= 0xffff_ffff {
                u64::from(self.next_u32()) & mask
            } else {
                self.next_u64() & mask
            };
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.choice(n, size, replace=True)`: `size` positions
    /// below `n` (legacy `randint`, masked rejection on 32 bits).
    pub fn choice_with_replacement(&mut self, n: usize, size: usize) -> Vec<usize> {
        (0..size)
            .map(|_| self.interval(n as u64 - 1) as usize)
            .collect()
    }

    /// `RandomState.shuffle` of a one-dimensional array (Fisher–Yates
    /// from the end).
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.interval(i as u64) as usize;
            x.swap(i, j);
        }
    }

    /// `RandomState.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }

    /// `RandomState.choice(items, size, replace=False)` (a permutation
    /// of the items' positions, the first `size` of it).
    pub fn choice_without_replacement<T: Copy>(&mut self, items: &[T], size: usize) -> Vec<T> {
        self.permutation(items.len())
            .into_iter()
            .take(size)
            .map(|i| items[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_generator_s_first_outputs() {
        // MT19937's reference output for init_genrand(5489) (the
        // generator's default seed): 3499211612, 581869302, 3890346734.
        let mut r = RandomState::new(5489);
        let first: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(first, [3_499_211_612, 581_869_302, 3_890_346_734]);
    }
}
