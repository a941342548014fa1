//! Accuracy of one role (champion or shadow) in one window, from the labels
//! that have arrived for its predictions. Bounded state: a confusion table
//! (classes capped), running sums for log loss, Brier and the regression
//! errors, and up to `limit` (score, truth) pairs for ROC AUC.

use std::collections::HashMap;

use driftwatch_protocol::{Label, Output};

use super::Reservoir;
use crate::config::Task;
use crate::stats::rng::Rng;
use crate::stats::roc_auc;

/// Distinct classes tracked per window; labels beyond are pooled.
const MAX_CLASSES: usize = 100;
const OTHER_CLASS: &str = "__other__";
/// Probabilities are clipped like scikit-learn's log_loss before the log.
const EPS: f64 = 1e-15;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Performance {
    /// (truth, predicted) → count.
    confusion: HashMap<(String, String), u64>,
    classes: Vec<String>,
    scored: u64,
    log_loss_sum: f64,
    brier_sum: f64,
    /// (score of the positive class, truth is positive), binary tasks.
    pairs: Reservoir<(f64, bool)>,
    // Regression.
    n: u64,
    abs_err: f64,
    sq_err: f64,
    ape: f64,
    ape_n: u64,
    sum_y: f64,
    sum_y2: f64,
}

impl Performance {
    fn class(&mut self, c: &str) -> String {
        if self.classes.iter().any(|k| k == c) {
            return c.to_string();
        }
        if self.classes.len() < MAX_CLASSES {
            self.classes.push(c.to_string());
            return c.to_string();
        }
        OTHER_CLASS.to_string()
    }

    /// Takes in another partition's labelled predictions of the same
    /// window (classes beyond the cap pooled as when they are added).
    pub fn merge(&mut self, other: &Performance, limit: usize, rng: &mut Rng) {
        for c in &other.classes {
            self.class(c);
        }
        let mut confusion: Vec<_> = other.confusion.iter().collect();
        confusion.sort();
        for ((truth, predicted), n) in confusion {
            let key = (self.class(truth), self.class(predicted));
            *self.confusion.entry(key).or_default() += n;
        }
        self.scored += other.scored;
        self.log_loss_sum += other.log_loss_sum;
        self.brier_sum += other.brier_sum;
        self.pairs.merge(&other.pairs, limit, rng);
        self.n += other.n;
        self.abs_err += other.abs_err;
        self.sq_err += other.sq_err;
        self.ape += other.ape;
        self.ape_n += other.ape_n;
        self.sum_y += other.sum_y;
        self.sum_y2 += other.sum_y2;
    }

    /// Adds one labelled prediction. `limit` bounds the AUC pairs kept
    /// (the first `limit` exactly; later ones replace by reservoir).
    pub fn add(
        &mut self,
        task: Task,
        positive: &str,
        output: &Output,
        truth: &Label,
        limit: usize,
        rng: &mut Rng,
    ) {
        let (truth_label, truth_value) = (truth.label.as_deref(), truth.value);
        if output.error.is_some() {
            return;
        }
        match task {
            Task::Regression => {
                let (Some(pred), Some(y)) = (output.value, truth_value) else {
                    return;
                };
                if !pred.is_finite() || !y.is_finite() {
                    return;
                }
                let e = pred - y;
                self.n += 1;
                self.abs_err += e.abs();
                self.sq_err += e * e;
                if y != 0.0 {
                    self.ape += (e / y).abs();
                    self.ape_n += 1;
                }
                self.sum_y += y;
                self.sum_y2 += y * y;
            }
            Task::BinaryClassification | Task::MulticlassClassification => {
                let Some(truth) = truth_label else { return };
                if let Some(pred) = &output.label {
                    let key = (self.class(truth), self.class(pred));
                    *self.confusion.entry(key).or_default() += 1;
                }
                let p_truth = match task {
                    Task::BinaryClassification => {
                        output
                            .score
                            .map(|s| if truth == positive { s } else { 1.0 - s })
                    }
                    _ => output
                        .probabilities
                        .as_ref()
                        .map(|p| p.get(truth).copied().unwrap_or(0.0)),
                };
                if let Some(p) = p_truth.filter(|p| p.is_finite()) {
                    self.scored += 1;
                    self.log_loss_sum += -p.clamp(EPS, 1.0 - EPS).ln();
                    self.brier_sum += match (task, &output.probabilities) {
                        (Task::MulticlassClassification, Some(probs)) => {
                            probs
                                .iter()
                                .map(|(k, &q)| if k == truth { (1.0 - q).powi(2) } else { q * q })
                                .sum::<f64>()
                                + if probs.contains_key(truth) { 0.0 } else { 1.0 }
                        }
                        _ => (1.0 - p).powi(2),
                    };
                }
                if let (Task::BinaryClassification, Some(s)) =
                    (task, output.score.filter(|s| s.is_finite()))
                {
                    self.pairs.add((s, truth == positive), limit, rng);
                }
            }
        }
    }

    /// Named metrics (DESIGN.md's `metric` label values) with their values.
    pub fn metrics(&self, task: Task, positive: &str) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        match task {
            Task::Regression => {
                if self.n == 0 {
                    return out;
                }
                let n = self.n as f64;
                out.push(("mae", self.abs_err / n));
                out.push(("rmse", (self.sq_err / n).sqrt()));
                if self.ape_n > 0 {
                    out.push(("mape", self.ape / self.ape_n as f64));
                }
                let sst = self.sum_y2 - self.sum_y * self.sum_y / n;
                if sst > 0.0 {
                    out.push(("r2", 1.0 - self.sq_err / sst));
                }
            }
            _ => {
                let total: u64 = self.confusion.values().sum();
                if total > 0 {
                    let correct: u64 = self
                        .confusion
                        .iter()
                        .filter(|((t, p), _)| t == p)
                        .map(|(_, c)| c)
                        .sum();
                    out.push(("accuracy", correct as f64 / total as f64));
                    let per_class = |c: &str| {
                        let tp = self
                            .confusion
                            .get(&(c.to_string(), c.to_string()))
                            .copied()
                            .unwrap_or(0) as f64;
                        let predicted: u64 = self
                            .confusion
                            .iter()
                            .filter(|((_, p), _)| p == c)
                            .map(|(_, n)| n)
                            .sum();
                        let actual: u64 = self
                            .confusion
                            .iter()
                            .filter(|((t, _), _)| t == c)
                            .map(|(_, n)| n)
                            .sum();
                        let precision = if predicted > 0 {
                            tp / predicted as f64
                        } else {
                            0.0
                        };
                        let recall = if actual > 0 { tp / actual as f64 } else { 0.0 };
                        let f1 = if precision + recall > 0.0 {
                            2.0 * precision * recall / (precision + recall)
                        } else {
                            0.0
                        };
                        (precision, recall, f1)
                    };
                    let (precision, recall, f1) = if task == Task::BinaryClassification {
                        per_class(positive)
                    } else {
                        // Macro averages over the classes seen in truth or prediction.
                        let k = self.classes.len().max(1) as f64;
                        let sums = self
                            .classes
                            .iter()
                            .map(|c| per_class(c))
                            .fold((0.0, 0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
                        (sums.0 / k, sums.1 / k, sums.2 / k)
                    };
                    out.push(("precision", precision));
                    out.push(("recall", recall));
                    out.push(("f1", f1));
                }
                if self.scored > 0 {
                    out.push(("log_loss", self.log_loss_sum / self.scored as f64));
                    out.push(("brier", self.brier_sum / self.scored as f64));
                }
                if let Some(auc) = roc_auc(self.pairs.items()) {
                    out.push(("roc_auc", auc));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(label: &str, score: f64) -> Output {
        Output {
            label: Some(label.into()),
            score: Some(score),
            ..Output::default()
        }
    }

    #[test]
    fn binary_metrics_by_hand() {
        let mut p = Performance::default();
        let mut rng = Rng::new(1);
        // (prediction, score, truth)
        for (pred, score, truth) in [
            ("1", 0.9, "1"),
            ("1", 0.8, "0"),
            ("0", 0.3, "1"),
            ("0", 0.1, "0"),
        ] {
            let truth = Label {
                model: "m".into(),
                request_id: "r".into(),
                label: Some(truth.into()),
                value: None,
                reward: None,
            };
            p.add(
                Task::BinaryClassification,
                "1",
                &out(pred, score),
                &truth,
                100,
                &mut rng,
            );
        }
        let m: HashMap<_, _> = p
            .metrics(Task::BinaryClassification, "1")
            .into_iter()
            .collect();
        assert_eq!(m["accuracy"], 0.5);
        assert_eq!(m["precision"], 0.5);
        assert_eq!(m["recall"], 0.5);
        assert_eq!(m["f1"], 0.5);
        // Positives score 0.9 and 0.3, negatives 0.8 and 0.1: 3 of 4 pairs ordered.
        assert_eq!(m["roc_auc"], 0.75);
        let ll = -(0.9f64.ln() + 0.2f64.ln() + 0.3f64.ln() + 0.9f64.ln()) / 4.0;
        assert!((m["log_loss"] - ll).abs() < 1e-12);
        let brier = (0.01 + 0.64 + 0.49 + 0.01) / 4.0;
        assert!((m["brier"] - brier).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics_by_hand() {
        let mut p = Performance::default();
        let mut rng = Rng::new(1);
        for (pred, y) in [(2.0, 1.0), (2.0, 3.0), (5.0, 5.0)] {
            let o = Output {
                value: Some(pred),
                ..Output::default()
            };
            let truth = Label {
                model: "m".into(),
                request_id: "r".into(),
                label: None,
                value: Some(y),
                reward: None,
            };
            p.add(Task::Regression, "", &o, &truth, 10, &mut rng);
        }
        let m: HashMap<_, _> = p.metrics(Task::Regression, "").into_iter().collect();
        assert!((m["mae"] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m["rmse"] - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m["mape"] - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        // SST = 8 (mean 3), SSE = 2.
        assert!((m["r2"] - 0.75).abs() < 1e-12);
    }
}
