//! What the collector exposes: Prometheus metrics (names fixed by DESIGN.md).

pub mod cluster;
pub mod metrics;
pub mod reject;
pub mod segments;

use std::collections::BTreeMap;

/// One value of a metric, as exported (name and labels) or given in a test.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Sets a gauge, or removes its series when there is no value (a test that
/// could not run, or one without a p-value). +Inf is kept: Prometheus has it.
pub fn set_or_remove(g: &prometheus::GaugeVec, labels: &[&str], v: Option<f64>) {
    match v.filter(|v| !v.is_nan()) {
        Some(v) => g.with_label_values(labels).set(v),
        None => {
            let _ = g.remove_label_values(labels);
        }
    }
}
