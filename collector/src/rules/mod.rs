//! Alerting rules: YAML files in the spirit of Prometheus alerting rules,
//! checked with every problem reported at once (`driftwatch rules check`),
//! evaluated by a state machine that `driftwatch rules test` drives with
//! synthetic series and the collector drives with its live gauges.

pub mod calibrate;
pub mod catalog;
pub mod check;
pub mod cluster;
pub mod engine;
pub mod runtime;
pub mod unit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use check::load_files;

use crate::notify::Routing;
use crate::yaml::Diagnostic;

/// Every loaded rule file, validated.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub groups: Vec<Group>,
    /// Receivers, the route tree (Alertmanager's defaults when no file
    /// gives one) and actions: where alerts go.
    pub routing: Arc<Routing>,
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// How often the group is evaluated; the collector's `eval_interval` when absent.
    pub interval: Option<Duration>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    const ALL: [(&'static str, Op); 6] = [
        (">", Op::Gt),
        (">=", Op::Ge),
        ("<", Op::Lt),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
    ];

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("?", |(s, _)| s)
    }
}

/// A rule's threshold: a number, or learned from the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Value(f64),
    /// Mean + `sigmas` standard deviations of the statistic over `chunks`
    /// random chunks of the reference, each against the whole reference.
    Calibrated {
        sigmas: f64,
        chunks: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub alert: String,
    /// The model judged; every model when absent (or `*`).
    pub model: Option<String>,
    pub metric: &'static catalog::MetricDef,
    pub test: Option<String>,
    pub role: Option<String>,
    pub performance: Option<String>,
    pub quantile: Option<String>,
    /// Only these features (per-feature metrics); all when absent.
    pub features: Option<Vec<String>>,
    /// The window length judged (label form, `1h`); every window when absent.
    pub window: Option<String>,
    pub op: Op,
    pub threshold: Threshold,
    /// Once firing, the alert stays while `value op resolve_threshold` holds.
    pub resolve_threshold: Option<f64>,
    /// Windows with fewer events are not judged (alerts keep their state).
    pub min_samples: u64,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub severity: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub receivers: Vec<String>,
    /// Actions (retraining webhooks) called when the alert fires.
    pub actions: Vec<String>,
}

/// Why rule files were refused: every problem, each with its position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct RuleErrors(pub Vec<Diagnostic>);

/// Labels an alert gets from driftwatch; a rule cannot set them.
pub const RESERVED_LABELS: &[&str] = &[
    "alertname",
    "severity",
    "model",
    "window",
    "feature",
    "role",
    "test",
    "metric",
    "quantile",
];

/// A path relative to `base`'s directory (for files that name other files).
pub fn relative_to(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}
