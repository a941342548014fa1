//! Bounded samples: the first `limit` items exactly, then a uniform sample
//! of `limit` of everything seen (Vitter's Algorithm R), drawn with a small
//! seeded generator so a replay after restart keeps the same sample.

use crate::stats::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Reservoir<T> {
    items: Vec<T>,
    seen: u64,
}

impl<T> Default for Reservoir<T> {
    fn default() -> Self {
        Reservoir {
            items: Vec::new(),
            seen: 0,
        }
    }
}

impl<T> Reservoir<T> {
    /// Offers one item: kept while fewer than `limit` are held, afterwards
    /// it replaces a random held item with probability `limit / seen`.
    /// Whether the held items changed.
    pub fn add(&mut self, item: T, limit: usize, rng: &mut Rng) -> bool {
        self.seen += 1;
        if self.items.len() < limit {
            self.items.push(item);
            true
        } else {
            let j = rng.below(self.seen) as usize;
            if j < limit {
                self.items[j] = item;
            }
            j < limit
        }
    }

    /// The items held: every item offered while `seen() <= limit`.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Items offered, including those the sample let go.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether the held items are all that was offered.
    pub fn is_exact(&self) -> bool {
        self.seen == self.items.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_up_to_the_limit_then_a_uniform_sample() {
        let mut rng = Rng::new(7);
        let mut r = Reservoir::default();
        for i in 0..100u32 {
            r.add(i, 100, &mut rng);
        }
        assert!(r.is_exact());
        assert_eq!(r.items(), (0..100).collect::<Vec<_>>().as_slice());
        // 1000 trials of 10 from 0..100: each value's inclusion rate is ~10 %.
        let mut hits = [0u32; 100];
        for trial in 0..1000 {
            let mut rng = Rng::new(trial);
            let mut r = Reservoir::default();
            for i in 0..100usize {
                r.add(i, 10, &mut rng);
            }
            assert_eq!((r.items().len(), r.seen()), (10, 100));
            for &i in r.items() {
                hits[i] += 1;
            }
        }
        // Binomial(1000, 0.1): mean 100, sd 9.5; 5 sd either side.
        assert!(hits.iter().all(|&h| (52..=148).contains(&h)), "{hits:?}");
    }
}
