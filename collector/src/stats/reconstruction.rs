//! Multivariate drift by data reconstruction, as NannyML 0.13.1's
//! `DataReconstructionDriftCalculator` computes it: missing values imputed
//! (the reference's mean for numeric columns, its most frequent value for
//! categorical ones), categories replaced by their share of the reference
//! (an unseen one by 0), every column standardized, and PCA fitted on the
//! reference keeping the fewest components that explain more than 65% of
//! its variance. A row's reconstruction error is the distance between its
//! standardized values and their projection back from those components; a
//! chunk's value is the mean error, its sampling error the errors'
//! standard deviation (ddof 1) over √n, and thresholds are the mean ± 3
//! standard deviations of the reference chunks' values (a lower one at or
//! below 0 dropped); a chunk alerts unless strictly between them.
//! Checked against NannyML on fixtures (`generate_calibration.py`).

use std::collections::BTreeMap;

use super::estimation::Chunk;
use super::sum::{mean_std, pairwise_sum};
use super::Key;

/// One reference column, row by row (`None`: missing).
pub enum Column<'a> {
    Numeric(&'a [Option<f64>]),
    Categorical(&'a [Option<Key>]),
}

/// One value of a row.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Missing,
    Num(f64),
    Cat(&'a Key),
}

/// How a column's value becomes a number.
#[derive(Debug, Clone, PartialEq)]
enum Encoding {
    Numeric {
        fill: f64,
    },
    Categorical {
        fill: Key,
        shares: BTreeMap<Key, f64>,
    },
}

/// A chunk's (or a window's) reconstruction drift, as NannyML reports it
/// (`None`: NaN).
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub value: Option<f64>,
    pub sampling_error: Option<f64>,
    pub lower_confidence_boundary: Option<f64>,
    pub upper_confidence_boundary: Option<f64>,
    pub lower_threshold: Option<f64>,
    pub upper_threshold: Option<f64>,
    pub alert: bool,
}

/// The fitted transformation and the reference's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    encodings: Vec<Encoding>,
    scale_mean: Vec<f64>,
    scale: Vec<f64>,
    pca_mean: Vec<f64>,
    /// The kept principal axes, each of unit length.
    components: Vec<Vec<f64>>,
    thresholds: (Option<f64>, Option<f64>),
}

/// The share of variance the kept components must explain (more than).
const VARIANCE: f64 = 0.65;

impl Fitted {
    /// Fits on the reference's columns (each as long as the others) and
    /// sets the thresholds from `reference_chunks` of it. `Err` says what
    /// is wrong (a column without any value).
    pub fn fit(
        names: &[&str],
        columns: &[Column<'_>],
        reference_chunks: &[Chunk],
    ) -> Result<Fitted, String> {
        let n = match columns.first() {
            Some(Column::Numeric(v)) => v.len(),
            Some(Column::Categorical(v)) => v.len(),
            None => return Err("reconstruction drift needs at least one column".into()),
        };
        let mut encodings = Vec::with_capacity(columns.len());
        for (name, c) in names.iter().zip(columns) {
            encodings.push(match c {
                Column::Numeric(v) => {
                    let count = v.iter().flatten().count();
                    if count == 0 {
                        return Err(format!("column {name:?} has no value"));
                    }
                    // scikit-learn's masked mean: missing values as 0 in the sum.
                    let filled: Vec<f64> = v.iter().map(|x| x.unwrap_or(0.0)).collect();
                    Encoding::Numeric {
                        fill: pairwise_sum(&filled) / count as f64,
                    }
                }
                Column::Categorical(v) => {
                    let mut counts: BTreeMap<Key, usize> = BTreeMap::new();
                    for k in v.iter().flatten() {
                        *counts.entry(k.clone()).or_default() += 1;
                    }
                    // The most frequent, the smallest of a tie.
                    let most = counts.values().copied().max().unwrap_or(0);
                    let fill = counts
                        .iter()
                        .find(|(_, &c)| c == most)
                        .map(|(k, _)| k.clone())
                        .ok_or_else(|| format!("column {name:?} has no value"))?;
                    let missing = v.len() - v.iter().flatten().count();
                    *counts.entry(fill.clone()).or_default() += missing;
                    let shares = counts
                        .into_iter()
                        .map(|(k, c)| (k, c as f64 / n as f64))
                        .collect();
                    Encoding::Categorical { fill, shares }
                }
            });
        }
        let mut fitted = Fitted {
            encodings,
            scale_mean: Vec::new(),
            scale: Vec::new(),
            pca_mean: Vec::new(),
            components: Vec::new(),
            thresholds: (None, None),
        };
        let d = columns.len();
        let encoded: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                fitted.encode(|j| match &columns[j] {
                    Column::Numeric(v) => v[i].map_or(Input::Missing, Input::Num),
                    Column::Categorical(v) => v[i].as_ref().map_or(Input::Missing, Input::Cat),
                })
            })
            .collect();
        // StandardScaler: the mean and the population standard deviation
        // per column (1 where it is 0).
        for j in 0..d {
            let col: Vec<f64> = encoded.iter().map(|r| r[j]).collect();
            let (mean, std) = mean_std(&col);
            fitted.scale_mean.push(mean);
            fitted.scale.push(if std > 0.0 { std } else { 1.0 });
        }
        let scaled: Vec<Vec<f64>> = encoded.iter().map(|r| fitted.standardize(r)).collect();
        fitted.pca_mean = (0..d)
            .map(|j| pairwise_sum(&scaled.iter().map(|r| r[j]).collect::<Vec<f64>>()) / n as f64)
            .collect();
        // The covariance of the centred rows, its eigenvectors by
        // decreasing eigenvalue.
        let mut cov = vec![vec![0.0; d]; d];
        for a in 0..d {
            for b in a..d {
                let v: Vec<f64> = scaled
                    .iter()
                    .map(|r| (r[a] - fitted.pca_mean[a]) * (r[b] - fitted.pca_mean[b]))
                    .collect();
                cov[a][b] = pairwise_sum(&v) / (n as f64 - 1.0);
                cov[b][a] = cov[a][b];
            }
        }
        let (values, vectors) = symmetric_eigen(cov);
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        let mut cumulative = 0.0;
        let mut k = 0;
        for v in &values {
            k += 1;
            cumulative += v.max(0.0) / total;
            if cumulative > VARIANCE {
                break;
            }
        }
        fitted.components = vectors.into_iter().take(k).collect();
        let values: Vec<Option<f64>> = reference_chunks
            .iter()
            .map(|c| fitted.chunk_errors(&scaled[c.rows()]).0)
            .collect();
        fitted.thresholds = match super::estimation::nan_mean_std(&values) {
            None => (None, None),
            Some((mean, std)) => {
                let lower = mean - 3.0 * std;
                ((lower > 0.0).then_some(lower), Some(mean + 3.0 * std))
            }
        };
        Ok(fitted)
    }

    /// How many principal components were kept.
    pub fn components(&self) -> usize {
        self.components.len()
    }

    pub fn thresholds(&self) -> (Option<f64>, Option<f64>) {
        self.thresholds
    }

    fn encode<'a>(&self, value: impl Fn(usize) -> Input<'a>) -> Vec<f64> {
        self.encodings
            .iter()
            .enumerate()
            .map(|(j, e)| match (e, value(j)) {
                (Encoding::Numeric { fill }, Input::Missing) => *fill,
                (Encoding::Numeric { .. }, Input::Num(x)) => x,
                (Encoding::Categorical { fill, shares }, Input::Missing) => shares[fill],
                (Encoding::Categorical { shares, .. }, Input::Cat(k)) => {
                    shares.get(k).copied().unwrap_or(0.0)
                }
                // A value of the other kind is treated as unseen.
                (Encoding::Numeric { fill }, Input::Cat(_)) => *fill,
                (Encoding::Categorical { .. }, Input::Num(_)) => 0.0,
            })
            .collect()
    }

    fn standardize(&self, encoded: &[f64]) -> Vec<f64> {
        encoded
            .iter()
            .zip(self.scale_mean.iter().zip(&self.scale))
            .map(|(x, (m, s))| (x - m) / s)
            .collect()
    }

    /// The distance between a standardized row and its reconstruction.
    fn scaled_error(&self, z: &[f64]) -> f64 {
        let r: Vec<f64> = z.iter().zip(&self.pca_mean).map(|(x, m)| x - m).collect();
        let mut residual = r.clone();
        for axis in &self.components {
            let t: f64 = axis.iter().zip(&r).map(|(a, x)| a * x).sum();
            for (res, a) in residual.iter_mut().zip(axis) {
                *res -= t * a;
            }
        }
        residual.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    /// A row's reconstruction error; `value(j)` is its value of column `j`.
    pub fn row_error<'a>(&self, value: impl Fn(usize) -> Input<'a>) -> f64 {
        self.scaled_error(&self.standardize(&self.encode(value)))
    }

    /// The mean and standard deviation (ddof 1) of the rows' errors.
    fn chunk_errors(&self, scaled: &[Vec<f64>]) -> (Option<f64>, f64, usize) {
        let errors: Vec<f64> = scaled.iter().map(|z| self.scaled_error(z)).collect();
        summarize(&errors)
    }

    /// A chunk's (or a window's) drift from its rows' errors.
    pub fn drift(&self, errors: &[f64]) -> Drift {
        let (mean, std, n) = summarize(errors);
        self.drift_from(mean, std, n)
    }

    /// The drift from a chunk's mean error, its standard deviation (ddof
    /// 1) and its row count.
    pub fn drift_from(&self, mean: Option<f64>, std: f64, n: usize) -> Drift {
        let error = std / (n as f64).sqrt();
        let finite = |v: f64| v.is_finite().then_some(v);
        let (lower, upper) = self.thresholds;
        let v = mean.unwrap_or(f64::NAN);
        Drift {
            value: mean,
            sampling_error: finite(error),
            upper_confidence_boundary: finite(v + 3.0 * error),
            lower_confidence_boundary: finite(v - 3.0 * error).map(|b| b.max(0.0)),
            lower_threshold: lower,
            upper_threshold: upper,
            // NannyML's inclusive rule: not strictly inside.
            alert: !(lower.unwrap_or(f64::NEG_INFINITY) < v && v < upper.unwrap_or(f64::INFINITY)),
        }
    }
}

/// Mean (NumPy's) and standard deviation with ddof 1 (NaN for one row).
fn summarize(errors: &[f64]) -> (Option<f64>, f64, usize) {
    let n = errors.len();
    if n == 0 {
        return (None, f64::NAN, 0);
    }
    let (mean, std0) = mean_std(errors);
    let std1 = if n > 1 {
        std0 * (n as f64 / (n as f64 - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    (Some(mean), std1, n)
}

/// Eigenvalues (decreasing) and unit eigenvectors of a symmetric matrix,
/// by cyclic Jacobi rotations until the off-diagonal part vanishes.
fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let d = a.len();
    let mut v: Vec<Vec<f64>> = (0..d)
        .map(|i| (0..d).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _ in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..d).map(|i| a[i][i] * a[i][i]).sum();
        if off <= f64::EPSILON * f64::EPSILON * scale || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                if a[p][q] == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (low, high) = a.split_at_mut(q);
                for (x, y) in low[p].iter_mut().zip(high[0].iter_mut()) {
                    let (apk, aqk) = (*x, *y);
                    *x = c * apk - s * aqk;
                    *y = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&x, &y| a[y][y].total_cmp(&a[x][x]));
    let values = order.iter().map(|&i| a[i][i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..d).map(|k| v[k][i]).collect())
        .collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_the_eigenpairs_of_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, axes (1, 1) and (1, -1).
        let (values, vectors) = symmetric_eigen(vec![vec![2.0, 1.0], vec![1.0, 2.0]]);
        assert!((values[0] - 3.0).abs() < 1e-14 && (values[1] - 1.0).abs() < 1e-14);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vectors[0][0].abs() - h).abs() < 1e-14);
        assert!((vectors[0][0] - vectors[0][1]).abs() < 1e-14);
    }
}
