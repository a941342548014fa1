//! Prepared column data shared by every test: a numeric column sorted once,
//! a categorical column as counts per category. Missing values and ±inf are
//! removed (and counted) before a sample is built.

use std::cmp::Ordering;

/// A category value. Numbers keep numeric order and strings code-point order,
/// which is how Python sorts them (the z-test takes the smallest as its
/// reference category).
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Num(f64),
    Str(String),
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Num(a), Key::Num(b)) => a.total_cmp(b),
            (Key::Str(a), Key::Str(b)) => a.cmp(b),
            (Key::Num(_), Key::Str(_)) => Ordering::Less,
            (Key::Str(_), Key::Num(_)) => Ordering::Greater,
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Num(x) => write!(f, "{x}"),
            Key::Str(s) => f.write_str(s),
        }
    }
}

/// Counts per distinct value, sorted by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub keys: Vec<Key>,
    pub counts: Vec<u64>,
    pub total: u64,
}

impl Counts {
    /// Builds counts from (key, count) pairs in any order; equal keys merge.
    pub fn from_pairs(mut pairs: Vec<(Key, u64)>) -> Counts {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Counts::default();
        for (k, c) in pairs {
            if c == 0 {
                continue;
            }
            out.total += c;
            if out.keys.last() == Some(&k) {
                *out.counts
                    .last_mut()
                    .expect("keys and counts have equal length") += c;
            } else {
                out.keys.push(k);
                out.counts.push(c);
            }
        }
        out
    }

    pub fn distinct(&self) -> usize {
        self.keys.len()
    }
}

/// Reference and current counts over the union of their keys, in key order.
pub fn align(reference: &Counts, current: &Counts) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(reference.keys.len().max(current.keys.len()));
    let (mut i, mut j) = (0, 0);
    while i < reference.keys.len() || j < current.keys.len() {
        let ord = match (reference.keys.get(i), current.keys.get(j)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                out.push((reference.counts[i], 0));
                i += 1;
            }
            Ordering::Greater => {
                out.push((0, current.counts[j]));
                j += 1;
            }
            Ordering::Equal => {
                out.push((reference.counts[i], current.counts[j]));
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// A numeric column: finite values sorted ascending (−0.0 folded into 0.0,
/// as pandas treats them as one value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Numeric {
    pub sorted: Vec<f64>,
    /// The column holds integers (integer dtype, nothing missing): NumPy then
    /// keeps histogram bins at least 1 wide.
    pub integer: bool,
    distinct: usize,
}

impl Numeric {
    /// Takes finite values in any order.
    pub fn new(mut values: Vec<f64>, integer: bool) -> Numeric {
        for v in values.iter_mut() {
            *v += 0.0;
        }
        values.sort_unstable_by(|a, b| a.total_cmp(b));
        let distinct = count_runs(&values);
        Numeric {
            sorted: values,
            integer,
            distinct,
        }
    }

    /// Takes values already sorted ascending (a stored profile).
    pub fn from_sorted(sorted: Vec<f64>, integer: bool) -> Numeric {
        let distinct = count_runs(&sorted);
        Numeric {
            sorted,
            integer,
            distinct,
        }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn distinct(&self) -> usize {
        self.distinct
    }

    /// The value counts of this column, for the tests that treat a numeric
    /// column with few values as categories.
    pub fn counts(&self) -> Counts {
        let mut out = Counts {
            total: self.sorted.len() as u64,
            ..Counts::default()
        };
        for &v in &self.sorted {
            if out.keys.last() == Some(&Key::Num(v)) {
                *out.counts
                    .last_mut()
                    .expect("keys and counts have equal length") += 1;
            } else {
                out.keys.push(Key::Num(v));
                out.counts.push(1);
            }
        }
        out
    }
}

fn count_runs(sorted: &[f64]) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    1 + sorted.windows(2).filter(|w| w[0] != w[1]).count()
}

/// One side of a column, ready for testing.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Numeric(Numeric),
    Categorical(Counts),
}

impl Sample {
    pub fn len(&self) -> usize {
        match self {
            Sample::Numeric(n) => n.len(),
            Sample::Categorical(c) => c.total as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn distinct(&self) -> usize {
        match self {
            Sample::Numeric(n) => n.distinct(),
            Sample::Categorical(c) => c.distinct(),
        }
    }

    pub fn counts(&self) -> std::borrow::Cow<'_, Counts> {
        match self {
            Sample::Numeric(n) => std::borrow::Cow::Owned(n.counts()),
            Sample::Categorical(c) => std::borrow::Cow::Borrowed(c),
        }
    }
}

/// One distinct value of two pooled sorted samples: how many values of each
/// sample lie below it and how many equal it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    pub value: f64,
    pub below_a: usize,
    pub below_b: usize,
    pub in_a: usize,
    pub in_b: usize,
}

impl Run {
    /// Values of both samples below this one.
    pub fn below(&self) -> usize {
        self.below_a + self.below_b
    }

    /// Values of both samples equal to this one.
    pub fn tied(&self) -> usize {
        self.in_a + self.in_b
    }
}

/// The distinct values of two sorted samples in pooled order, each with its
/// counts: the one merge walk that the rank-based tests share.
pub fn pooled_runs<'s>(a: &'s [f64], b: &'s [f64]) -> impl Iterator<Item = Run> + 's {
    let (mut i, mut j) = (0usize, 0usize);
    std::iter::from_fn(move || {
        let value = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => return None,
        };
        let (below_a, below_b) = (i, j);
        while i < a.len() && a[i] == value {
            i += 1;
        }
        while j < b.len() && b[j] == value {
            j += 1;
        }
        Some(Run {
            value,
            below_a,
            below_b,
            in_a: i - below_a,
            in_b: j - below_b,
        })
    })
}

/// Distinct values of both sides together (pandas `concat(...).nunique()`).
pub fn union_distinct(a: &Sample, b: &Sample) -> usize {
    match (a, b) {
        (Sample::Numeric(x), Sample::Numeric(y)) => pooled_runs(&x.sorted, &y.sorted).count(),
        _ => align(&a.counts(), &b.counts()).len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_merges_the_union_in_key_order() {
        let a = Counts::from_pairs(vec![(Key::Str("b".into()), 2), (Key::Str("a".into()), 1)]);
        let b = Counts::from_pairs(vec![(Key::Str("c".into()), 5), (Key::Str("a".into()), 3)]);
        assert_eq!(align(&a, &b), vec![(1, 3), (2, 0), (0, 5)]);
    }

    #[test]
    fn union_distinct_counts_shared_values_once() {
        let a = Sample::Numeric(Numeric::new(vec![1.0, 2.0, 2.0, 5.0], false));
        let b = Sample::Numeric(Numeric::new(vec![2.0, 3.0, 5.0, 5.0, 9.0], false));
        assert_eq!(union_distinct(&a, &b), 5);
        assert_eq!(
            union_distinct(&a, &b),
            align(&a.counts(), &b.counts()).len()
        );
    }

    #[test]
    fn negative_zero_is_the_same_value_as_zero() {
        let n = Numeric::new(vec![0.0, -0.0, 1.0], false);
        assert_eq!(n.distinct(), 2);
        assert_eq!(n.counts().counts, vec![2, 1]);
    }
}
