//! Reference profiles: everything the drift tests need from a reference
//! dataset (sorted values, category counts, missing counts, types), stored
//! once so that later comparisons (and the collector at start-up) skip
//! re-reading and re-sorting the raw file.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stats::{ColumnType, Counts, Key, Numeric, Sample};

/// Format marker and version written into every profile.
pub const FORMAT: &str = "driftwatch-profile/1";

/// Default cap on the stored values of a numeric column.
pub const DEFAULT_MAX_SAMPLES: usize = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format: String,
    pub rows: usize,
    pub columns: Vec<ProfileColumn>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    pub missing: u64,
    /// Integer values with nothing missing (affects histogram bin widths).
    pub integer: bool,
    /// Finite values, sorted (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
    /// Number of finite values before sampling, when `values` is a sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_from: Option<usize>,
    /// `[value, count]` pairs (categorical columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<(Value, u64)>>,
    pub distinct: usize,
    /// Population standard deviation of the stored values (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a driftwatch profile: {0}")]
    Format(String),
}

impl Profile {
    pub fn read(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path)?;
        let profile: Profile =
            serde_json::from_str(&text).map_err(|e| ProfileError::Format(e.to_string()))?;
        if profile.format != FORMAT {
            return Err(ProfileError::Format(format!(
                "format {:?}, expected {FORMAT:?}",
                profile.format
            )));
        }
        Ok(profile)
    }

    pub fn write(&self, path: &Path) -> Result<(), ProfileError> {
        let text = serde_json::to_string(self).map_err(|e| ProfileError::Format(e.to_string()))?;
        std::fs::write(path, text)?;
        Ok(())
    }

    pub fn column(&self, name: &str) -> Option<&ProfileColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

impl ProfileColumn {
    /// A column's profile from its cleaned sample, numeric values cut to
    /// `max` by a seeded uniform sample.
    pub fn of(
        name: String,
        column_type: ColumnType,
        sample: Sample,
        missing: u64,
        integer: bool,
        max: usize,
    ) -> ProfileColumn {
        match sample {
            Sample::Numeric(n) => {
                let distinct = n.distinct();
                let total = n.len();
                let (values, sampled_from) = if total > max {
                    (sample_sorted(&n.sorted, max), Some(total))
                } else {
                    (n.sorted, None)
                };
                let std = (!values.is_empty()).then(|| crate::stats::sum::mean_std(&values).1);
                ProfileColumn {
                    name,
                    column_type,
                    missing,
                    integer,
                    values: Some(values),
                    sampled_from,
                    categories: None,
                    distinct,
                    std,
                }
            }
            Sample::Categorical(c) => {
                let categories =
                    c.keys
                        .iter()
                        .zip(&c.counts)
                        .map(|(k, &n)| {
                            let v = match k {
                                Key::Num(x) => serde_json::Number::from_f64(*x)
                                    .map_or(Value::Null, Value::Number),
                                Key::Str(s) => Value::String(s.clone()),
                            };
                            (v, n)
                        })
                        .collect();
                ProfileColumn {
                    name,
                    column_type,
                    missing,
                    integer,
                    values: None,
                    sampled_from: None,
                    categories: Some(categories),
                    distinct: c.distinct(),
                    std: None,
                }
            }
        }
    }

    /// The stored reference sample.
    pub fn sample(&self, integer: bool) -> Sample {
        match (&self.values, &self.categories) {
            (Some(v), _) => Sample::Numeric(Numeric::from_sorted(v.clone(), integer)),
            (None, Some(c)) => Sample::Categorical(Counts::from_pairs(
                c.iter()
                    .map(|(k, n)| {
                        let key = match k {
                            Value::Number(x) => Key::Num(x.as_f64().unwrap_or(f64::NAN)),
                            Value::String(s) => Key::Str(s.clone()),
                            other => Key::Str(other.to_string()),
                        };
                        (key, *n)
                    })
                    .collect(),
            )),
            (None, None) => Sample::Numeric(Numeric::default()),
        }
    }
}

/// A uniform sample of `k` values without replacement (Floyd's algorithm
/// with a fixed seed, so profiles are reproducible), returned sorted.
fn sample_sorted(sorted: &[f64], k: usize) -> Vec<f64> {
    let n = sorted.len();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |bound: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound as u64) as usize
    };
    let mut chosen = std::collections::HashSet::with_capacity(k);
    for j in (n - k)..n {
        let t = next(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    let mut idx: Vec<usize> = chosen.into_iter().collect();
    idx.sort_unstable();
    idx.into_iter().map(|i| sorted[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_k_distinct_positions_in_order() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        let s = sample_sorted(&v, 100);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
