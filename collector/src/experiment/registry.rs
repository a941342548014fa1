//! Every experiment's latest look, for the API and the gauges: evaluated
//! each cycle for the models this collector owns, with each treatment's
//! running intersection of its comparisons carried from look to look (in
//! memory: after a restart the intervals start wide again, which only
//! makes them more cautious).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::decide::{look, Report};
use crate::export::metrics::Metrics;
use crate::stats::sequential::Running;
use crate::window::Live;

/// What one experiment carries from one look to the next.
#[derive(Debug, Default)]
struct Memory {
    running: Vec<Running>,
    looks: u64,
    report: Option<Report>,
}

pub struct Experiments {
    live: Arc<Live>,
    memory: Mutex<HashMap<String, Memory>>,
}

impl Experiments {
    pub fn new(live: Arc<Live>) -> Experiments {
        Experiments {
            live,
            memory: Mutex::default(),
        }
    }

    /// Whether any model has experiments.
    pub fn any(&self) -> bool {
        self.live.models.iter().any(|m| !m.experiments.is_empty())
    }

    /// The model index an experiment belongs to.
    pub fn model_of(&self, name: &str) -> Option<usize> {
        self.live
            .models
            .iter()
            .position(|m| m.experiments.iter().any(|e| e.name == name))
    }

    /// Looks at the experiments of every model this collector owns and
    /// whose state is whole, and publishes them.
    pub fn evaluate(&self, metrics: &Metrics) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        for (mi, model) in self.live.models.iter().enumerate() {
            if model.experiments.is_empty() || !self.live.owns(mi) || !self.live.complete(mi) {
                continue;
            }
            let tallies = self.live.experiments(mi);
            for (e, tally) in model.experiments.iter().zip(&tallies) {
                let m = memory.entry(e.name.clone()).or_default();
                m.running
                    .resize(e.arms.len().saturating_sub(1), Running::default());
                let report = look(&model.name, e, tally, &mut m.running, &mut m.looks);
                publish(metrics, &report);
                m.report = Some(report);
            }
        }
    }

    /// The latest report of each experiment evaluated here, by name.
    pub fn reports(&self) -> Vec<Report> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Report> = memory.values().filter_map(|m| m.report.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The latest report of one experiment, if evaluated here.
    pub fn report(&self, name: &str) -> Option<Report> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory.get(name).and_then(|m| m.report.clone())
    }
}

/// Sets the experiment's gauges (a value not known yet: its series removed).
fn publish(m: &Metrics, r: &Report) {
    let set = |g: &prometheus::GaugeVec, labels: &[&str], v: Option<f64>| match v {
        Some(v) if v.is_finite() => g.with_label_values(labels).set(v),
        _ => {
            let _ = g.remove_label_values(labels);
        }
    };
    let (model, name) = (r.model.as_str(), r.name.as_str());
    for a in &r.arms {
        let arm = a.name.as_str();
        set(
            &m.experiment_samples,
            &[model, name, arm],
            Some(a.samples as f64),
        );
        set(
            &m.experiment_requests,
            &[model, name, arm],
            Some(a.requests as f64),
        );
        set(
            &m.experiment_metric,
            &[model, name, arm, r.metric],
            a.metric,
        );
        set(
            &m.experiment_error_ratio,
            &[model, name, arm],
            a.error_ratio,
        );
        set(
            &m.experiment_latency_p99,
            &[model, name, arm],
            a.latency_p99_ms.map(|ms| ms / 1000.0),
        );
    }
    for c in &r.comparisons {
        let labels = [model, name, c.arm.as_str()];
        set(&m.experiment_lift, &labels, c.lift);
        set(&m.experiment_lift_lower, &labels, c.lift_lower);
        set(&m.experiment_lift_upper, &labels, c.lift_upper);
        set(&m.experiment_p_value, &labels, c.p_value);
    }
    set(
        &m.experiment_decision,
        &[model, name],
        Some(r.decision.gauge()),
    );
    set(
        &m.experiment_invalid,
        &[model, name],
        Some(f64::from(u8::from(
            r.decision == super::decide::Decision::Invalid,
        ))),
    );
    set(
        &m.experiment_srm_p_value,
        &[model, name],
        Some(r.srm_p_value),
    );
}
