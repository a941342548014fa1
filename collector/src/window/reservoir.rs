//! Bounded samples: the first `limit` items exactly, then a uniform sample
//! of `limit` of everything seen (Vitter's Algorithm R), drawn with a small
//! seeded generator so a replay after restart keeps the same sample.

use crate::stats::rng::Rng;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

impl<T: Clone> Reservoir<T> {
    /// Takes in another sample of other items (a partition's): while both
    /// are exact and fit in `limit` together, every item of both; beyond,
    /// a uniform sample of `limit` of everything offered to either: how
    /// many come from each side is drawn as `limit` draws without
    /// replacement from all the items offered would split (hypergeometric),
    /// and those are drawn uniformly from that side's held items.
    pub fn merge(&mut self, other: &Reservoir<T>, limit: usize, rng: &mut Rng) {
        let seen = self.seen + other.seen;
        if self.is_exact() && other.is_exact() && self.items.len() + other.items.len() <= limit {
            self.items.extend_from_slice(&other.items);
            self.seen = seen;
            return;
        }
        let k = limit.min(self.items.len() + other.items.len());
        let (mut left, mut from_self) = ([self.seen, other.seen], 0usize);
        for _ in 0..k {
            let mine = rng.below(left[0] + left[1]) < left[0];
            left[usize::from(!mine)] -= 1;
            from_self += usize::from(mine);
        }
        // A side's held items bound what it can give.
        let from_self = from_self
            .min(self.items.len())
            .max(k.saturating_sub(other.items.len()));
        let mut out = take_uniform(std::mem::take(&mut self.items), from_self, rng);
        out.extend(take_uniform(other.items.clone(), k - from_self, rng));
        self.items = out;
        self.seen = seen;
    }
}

/// `n` of `items` drawn uniformly without replacement (a partial
/// Fisher-Yates shuffle).
fn take_uniform<T>(mut items: Vec<T>, n: usize, rng: &mut Rng) -> Vec<T> {
    for i in 0..n.min(items.len()) {
        let j = i + rng.below((items.len() - i) as u64) as usize;
        items.swap(i, j);
    }
    items.truncate(n);
    items
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

    #[test]
    fn merged_samples_are_exact_within_the_limit_then_uniform() {
        let mut rng = Rng::new(3);
        let (mut a, mut b) = (Reservoir::default(), Reservoir::default());
        for i in 0..40u32 {
            match i % 3 {
                0 => a.add(i, 100, &mut rng),
                _ => b.add(i, 100, &mut rng),
            };
        }
        a.merge(&b, 100, &mut rng);
        let mut all = a.items().to_vec();
        all.sort_unstable();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        assert!(a.is_exact());
        // Beyond the limit: 300 from one side, 100 from the other, merged
        // into 20; each of the 400 values is kept 5 % of the time.
        let mut hits = [0u32; 400];
        for trial in 0..2000 {
            let mut rng = Rng::new(trial);
            let (mut a, mut b) = (Reservoir::default(), Reservoir::default());
            for i in 0..300usize {
                a.add(i, 20, &mut rng);
            }
            for i in 300..400usize {
                b.add(i, 20, &mut rng);
            }
            a.merge(&b, 20, &mut rng);
            assert_eq!((a.items().len(), a.seen()), (20, 400));
            for &i in a.items() {
                hits[i] += 1;
            }
        }
        // Binomial(2000, 0.05): mean 100, sd 9.7 per value; the two sides'
        // shares within 3 %.
        let (first, second): (u32, u32) = (hits[..300].iter().sum(), hits[300..].iter().sum());
        let share = f64::from(first) / f64::from(first + second);
        assert!((share - 0.75).abs() < 0.03, "{share}");
        assert!(hits.iter().all(|&h| (45..=160).contains(&h)), "{hits:?}");
    }
}
