//! NannyML 0.13.1's direct loss estimation (DLE) of a regression model's
//! performance before its targets arrive, from the per-row losses a nanny
//! model predicts (`report::dle` runs it): a chunk's estimate is the mean
//! of the predicted losses clipped at 0 (its square root for rmse and
//! rmsle); the sampling error is the reference's standard deviation of the
//! loss over √n (n: rows with a prediction), and for rmse and rmsle
//! `sqrt(σ² / (4 n μ))`; thresholds are the mean ± 3 σ of the realized
//! metric over the reference's chunks (lower ones at least 0), the band ±
//! 3 sampling errors (its lower end at least 0), the realized metric is
//! scikit-learn's on the rows with a target and a prediction.

use std::ops::Range;

use super::estimation::{nan_mean_std, record, thresholds, Chunk, Estimate, Limits, Thresholds};
use super::sum::pairwise_sum;

/// A regression metric DLE estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Mae,
    Mape,
    Mse,
    Rmse,
    Msle,
    Rmsle,
}

/// What a nanny model predicts per row: the loss behind one or two
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loss {
    /// |y - p| (mae).
    Absolute,
    /// |y - p| / max(ε, |y|) (mape).
    AbsolutePercentage,
    /// (y - p)² (mse, rmse).
    Squared,
    /// (log1p y - log1p p)² (msle, rmsle).
    SquaredLog,
}

impl Metric {
    /// NannyML's order.
    pub const ALL: [Metric; 6] = [
        Metric::Mae,
        Metric::Mape,
        Metric::Mse,
        Metric::Rmse,
        Metric::Msle,
        Metric::Rmsle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Mae => "mae",
            Metric::Mape => "mape",
            Metric::Mse => "mse",
            Metric::Rmse => "rmse",
            Metric::Msle => "msle",
            Metric::Rmsle => "rmsle",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn loss(self) -> Loss {
        match self {
            Metric::Mae => Loss::Absolute,
            Metric::Mape => Loss::AbsolutePercentage,
            Metric::Mse | Metric::Rmse => Loss::Squared,
            Metric::Msle | Metric::Rmsle => Loss::SquaredLog,
        }
    }

    /// The root of a mean loss (rmse, rmsle).
    fn root(self) -> bool {
        matches!(self, Metric::Rmse | Metric::Rmsle)
    }

    /// Logarithmic metrics: targets and predictions must not be negative.
    pub fn logarithmic(self) -> bool {
        self.loss() == Loss::SquaredLog
    }
}

impl Loss {
    /// The metric NannyML names a model of this loss by.
    pub fn metric(self) -> Metric {
        match self {
            Loss::Absolute => Metric::Mae,
            Loss::AbsolutePercentage => Metric::Mape,
            Loss::Squared => Metric::Mse,
            Loss::SquaredLog => Metric::Msle,
        }
    }
}

/// A regression data set's targets and predictions (`None`: missing).
pub struct Rows<'a> {
    pub truth: Option<&'a [Option<f64>]>,
    pub predicted: &'a [Option<f64>],
}

/// The (target, prediction) pairs of `range` with both known.
fn known(rows: &Rows<'_>, range: Range<usize>) -> Vec<(f64, f64)> {
    let Some(truth) = rows.truth else {
        return Vec::new();
    };
    range
        .filter_map(|i| Some((truth[i]?, rows.predicted[i]?)))
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    pairwise_sum(xs) / xs.len() as f64
}

/// scikit-learn's metric over known pairs; `None` without a pair, or
/// (logarithmic metrics) with a negative value, where NannyML's chunk
/// fails.
fn realized(metric: Metric, pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.is_empty() || (metric.logarithmic() && pairs.iter().any(|&(y, p)| y < 0.0 || p < 0.0))
    {
        return None;
    }
    let per_row: Vec<f64> = pairs
        .iter()
        .map(|&(y, p)| match metric.loss() {
            Loss::Absolute => (p - y).abs(),
            Loss::AbsolutePercentage => (p - y).abs() / y.abs().max(f64::EPSILON),
            Loss::Squared => (y - p) * (y - p),
            Loss::SquaredLog => (y.ln_1p() - p.ln_1p()).powi(2),
        })
        .collect();
    let m = mean(&per_row);
    Some(if metric.root() { m.sqrt() } else { m })
}

/// NannyML's sampling-error components of the reference: the standard
/// deviation of the loss (MAPE's without ε, the logarithmic ones with
/// `log(1 + x)`) and, for the root metrics, its mean.
fn components(metric: Metric, pairs: &[(f64, f64)]) -> (f64, f64) {
    let per_row: Vec<Option<f64>> = pairs
        .iter()
        .map(|&(y, p)| {
            Some(match metric.loss() {
                Loss::Absolute => (y - p).abs(),
                Loss::AbsolutePercentage => (y - p).abs() / y,
                Loss::Squared => (y - p).powi(2),
                Loss::SquaredLog => ((1.0 + y).ln() - (1.0 + p).ln()).powi(2),
            })
        })
        .collect();
    nan_mean_std(&per_row).map_or((f64::NAN, f64::NAN), |(m, s)| (s, m))
}

/// A metric fitted on the reference.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub metric: Metric,
    std: f64,
    mean: f64,
    pub thresholds: Thresholds,
}

const LIMITS: Limits = Limits {
    lower: Some(0.0),
    upper: None,
};

impl Fitted {
    /// Fits on the reference's rows (targets required) and its chunks;
    /// `Err` when no row has a target and a prediction, or a logarithmic
    /// metric meets a negative value.
    pub fn fit(metric: Metric, rows: &Rows<'_>, chunks: &[Chunk]) -> Result<Fitted, String> {
        let pairs = known(rows, 0..rows.predicted.len());
        if pairs.is_empty() {
            return Err(format!(
                "{}: no reference row has both a target and a prediction",
                metric.name()
            ));
        }
        if metric.logarithmic() && pairs.iter().any(|&(y, p)| y < 0.0 || p < 0.0) {
            return Err(format!(
                "{} needs targets and predictions of at least 0; the reference has negative ones",
                metric.name()
            ));
        }
        let (std, mean) = components(metric, &pairs);
        let thresholds = thresholds(chunks, LIMITS, |r| realized(metric, &known(rows, r)));
        Ok(Fitted {
            metric,
            std,
            mean,
            thresholds,
        })
    }

    /// `n` rows with a prediction.
    fn sampling_error(&self, n: usize) -> f64 {
        if n == 0 {
            return f64::NAN;
        }
        let n = n as f64;
        if self.metric.root() {
            (self.std * self.std / (4.0 * n * self.mean)).sqrt()
        } else {
            self.std / n.sqrt()
        }
    }

    /// One chunk: `losses` the nanny model's predicted loss for each of
    /// its rows (a model of this metric's loss).
    pub fn estimate(&self, losses: &[f64], rows: &Rows<'_>, range: Range<usize>) -> Estimate {
        let pairs = known(rows, range.clone());
        if self.metric.logarithmic() && pairs.iter().any(|&(y, p)| y < 0.0 || p < 0.0) {
            // NannyML's metric fails on this chunk: every value NaN.
            return Estimate {
                value: None,
                sampling_error: None,
                realized: None,
                lower_confidence_boundary: None,
                upper_confidence_boundary: None,
                lower_threshold: self.thresholds.0,
                upper_threshold: self.thresholds.1,
                alert: false,
            };
        }
        let clipped: Vec<f64> = losses.iter().map(|&l| l.max(0.0)).collect();
        let m = if clipped.is_empty() {
            f64::NAN
        } else {
            mean(&clipped)
        };
        let value = if self.metric.root() { m.sqrt() } else { m };
        let with_prediction = rows.predicted[range].iter().flatten().count();
        record(
            value,
            self.sampling_error(with_prediction),
            realized(self.metric, &pairs),
            self.thresholds,
            LIMITS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realized_metrics_follow_scikit_learn() {
        let pairs = [(1.0, 2.0), (3.0, 1.0), (0.0, 0.5)];
        let r = |m| realized(m, &pairs).unwrap_or(f64::NAN);
        assert!((r(Metric::Mae) - 3.5 / 3.0).abs() < 1e-15);
        assert!((r(Metric::Mse) - 5.25 / 3.0).abs() < 1e-15);
        assert!((r(Metric::Rmse) - (5.25f64 / 3.0).sqrt()).abs() < 1e-15);
        // |0 - 0.5| / ε dominates MAPE, as in scikit-learn.
        assert!(r(Metric::Mape) > 1e14);
        assert_eq!(realized(Metric::Msle, &[(1.0, -0.5)]), None);
        assert_eq!(realized(Metric::Mae, &[]), None);
    }

    #[test]
    fn root_metrics_use_the_delta_method() {
        let f = Fitted {
            metric: Metric::Rmse,
            std: 2.0,
            mean: 4.0,
            thresholds: (None, None),
        };
        assert!((f.sampling_error(100) - (4.0f64 / 1600.0).sqrt()).abs() < 1e-15);
        assert!(f.sampling_error(0).is_nan());
    }
}
