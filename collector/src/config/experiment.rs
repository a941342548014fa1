//! A model's experiments (A/B tests, canaries) as written in the
//! configuration: arms with their traffic weights, the primary metric,
//! guardrails, α and the sequential method. DESIGN.md "Experiments".

use serde::Deserialize;

use super::Task;

/// One experiment of a model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    /// Unique over every model (`GET /v1/experiments/{name}`).
    pub name: String,
    pub metric: Metric,
    /// The error rate over every look together.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Labelled requests per arm before any decision.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// The first arm is the baseline.
    pub arms: Vec<RawArm>,
    #[serde(default)]
    pub guardrails: Guardrails,
    /// `absolute` (treatment − baseline) or `relative` ((t − b) / b).
    #[serde(default)]
    pub difference: DifferenceKind,
    #[serde(default)]
    pub method: Method,
    /// The sample size per arm where the confidence sequence is tightest.
    #[serde(default = "default_tuning")]
    pub tuning: f64,
    /// mSPRT: the mixture's variance τ² (default 0.001: most powerful near
    /// differences of about 0.03).
    pub msprt_tau2: Option<f64>,
    /// Events before this time (RFC 3339) are not counted.
    pub start: Option<String>,
}

/// An arm: its name (the events' `arm`), its share of traffic and the
/// model version it serves (for a promotion's webhook).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArm {
    pub name: String,
    pub weight: f64,
    pub version: Option<String>,
}

/// Limits a treatment must keep whatever its primary metric says.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// The treatment's latency p99 over the baseline's at most this.
    pub latency_p99_ratio: Option<f64>,
    /// The treatment's share of failed requests over the baseline's at
    /// most this much more (0.01: one point).
    pub error_ratio_increase: Option<f64>,
}

/// The primary metric: per labelled request, a value whose mean the arms
/// compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 1 when the predicted class is the label's (classifiers).
    Accuracy,
    /// 1 when it is not (classifiers); lower is better.
    ErrorRate,
    /// The label's `reward` (any task); higher is better.
    Reward,
    /// |prediction − value| (regression); lower is better.
    Mae,
    /// (prediction − value)² (regression); lower is better.
    Mse,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::ErrorRate => "error_rate",
            Metric::Reward => "reward",
            Metric::Mae => "mae",
            Metric::Mse => "mse",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::Reward)
    }

    /// 1 when a larger value is better, −1 when a smaller one is: a
    /// difference times this is positive when the treatment does better.
    pub fn sense(self) -> f64 {
        if self.higher_is_better() {
            1.0
        } else {
            -1.0
        }
    }

    /// Whether each value is 0 or 1.
    pub fn proportion(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::ErrorRate)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    #[default]
    Absolute,
    Relative,
}

/// How the arms are compared at every look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The asymptotic confidence sequence of Waudby-Smith et al. (gbstats).
    #[default]
    ConfidenceSequence,
    /// The mixture SPRT of Johari, Pekelis and Walsh (0/1 metrics).
    Msprt,
}

impl RawExperiment {
    /// When its counting starts, in milliseconds (no `start`: the earliest).
    pub fn start_ms(&self) -> i64 {
        self.start
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(i64::MIN, |t| t.timestamp_millis())
    }
}

fn default_alpha() -> f64 {
    0.05
}
fn default_min_samples() -> u64 {
    1000
}
fn default_tuning() -> f64 {
    5000.0
}

/// Checks a model's experiments (`at`: the model's place in the file);
/// `names` collects experiment names over every model.
pub fn check(
    at: &str,
    task: Task,
    experiments: &[RawExperiment],
    names: &mut std::collections::HashSet<String>,
    errors: &mut Vec<String>,
) {
    for (i, e) in experiments.iter().enumerate() {
        let at = format!("{at}.experiments[{i}] ({})", e.name);
        if !driftwatch_protocol::plain_name(&e.name) {
            errors.push(format!(
                "{at}.name: use letters, digits, `_`, `.` and `-` (it is part of a URL path)"
            ));
        }
        if !names.insert(e.name.clone()) {
            errors.push(format!(
                "{at}.name: used twice (names are unique over all models)"
            ));
        }
        match (e.metric, task) {
            (Metric::Accuracy | Metric::ErrorRate, Task::Regression) => errors.push(format!(
                "{at}.metric: `{}` needs a classifier; a regression model takes mae, mse or reward",
                e.metric.as_str()
            )),
            (Metric::Mae | Metric::Mse, Task::BinaryClassification | Task::MulticlassClassification) => {
                errors.push(format!(
                    "{at}.metric: `{}` needs a regression model; a classifier takes accuracy, error_rate or reward",
                    e.metric.as_str()
                ))
            }
            _ => {}
        }
        if !(e.alpha > 0.0 && e.alpha < 0.5) {
            errors.push(format!("{at}.alpha: {} is not in (0, 0.5)", e.alpha));
        }
        if e.min_samples < 2 {
            errors.push(format!("{at}.min_samples: must be at least 2"));
        }
        if !(e.tuning.is_finite() && e.tuning >= 1.0) {
            errors.push(format!(
                "{at}.tuning: must be a number of samples, at least 1"
            ));
        }
        if e.method == Method::Msprt && !e.metric.proportion() {
            errors.push(format!(
                "{at}.method: msprt compares proportions (accuracy, error_rate); `{}` takes confidence_sequence",
                e.metric.as_str()
            ));
        }
        if let Some(t) = e.msprt_tau2 {
            if !(t.is_finite() && t > 0.0) {
                errors.push(format!("{at}.msprt_tau2: must be a positive number"));
            }
        }
        if let Some(s) = &e.start {
            if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                errors.push(format!("{at}.start: {s:?} is not an RFC 3339 time"));
            }
        }
        if e.arms.len() < 2 {
            errors.push(format!(
                "{at}.arms: at least two arms (the first is the baseline)"
            ));
        }
        errors.extend(
            driftwatch_protocol::arm_problems(e.arms.iter().map(|a| (a.name.as_str(), a.weight)))
                .into_iter()
                .map(|p| format!("{at}.{p}")),
        );
        let g = &e.guardrails;
        if g.latency_p99_ratio
            .is_some_and(|r| !(r.is_finite() && r >= 1.0))
        {
            errors.push(format!(
                "{at}.guardrails.latency_p99_ratio: must be at least 1"
            ));
        }
        if g.error_ratio_increase
            .is_some_and(|r| !(r.is_finite() && (0.0..1.0).contains(&r)))
        {
            errors.push(format!(
                "{at}.guardrails.error_ratio_increase: must be in [0, 1)"
            ));
        }
    }
}
