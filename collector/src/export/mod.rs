//! What the collector exposes: Prometheus metrics (names fixed by DESIGN.md).

pub mod cluster;
pub mod metrics;

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
