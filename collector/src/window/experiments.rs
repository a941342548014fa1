//! Experiments (A/B tests, canaries): per arm of each experiment, the
//! traffic it served (requests, failures, latencies: the guardrails and
//! the sample-ratio check) and the primary metric's count, sum and sum of
//! squares over its labelled requests (the sequential comparison). Bounded
//! state: sums, and latencies in a reservoir of the model's sample limit.
//! Kept beside the model's windows and fed by the same events and labels,
//! from the experiment's `start` (or what the store keeps) on.

use driftwatch_protocol::{Event, Label};
use serde::{Deserialize, Serialize};

use super::RoleTraffic;
use crate::config::experiment::{Metric, RawExperiment};
use crate::stats::rng::Rng;
use crate::stats::sequential::Arm;

/// One arm's tallies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArmTally {
    /// The requests the arm answered, failures and latencies included.
    pub traffic: RoleTraffic,
    /// The primary metric over the arm's labelled requests.
    pub metric: Arm,
}

/// One experiment's tallies, arms in the configuration's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tally {
    /// Events before this time are not counted.
    pub start_ms: i64,
    pub arms: Vec<ArmTally>,
    /// Events of the model that named an arm the experiment does not have.
    pub unknown_arm: u64,
    /// Labels of its arms' requests that gave no value for the metric (a
    /// failed request, no predicted class, no `reward`).
    pub unscored_labels: u64,
    rng: Rng,
}

impl Tally {
    pub fn new(e: &RawExperiment) -> Tally {
        Tally {
            start_ms: e.start_ms(),
            arms: vec![ArmTally::default(); e.arms.len()],
            unknown_arm: 0,
            unscored_labels: 0,
            rng: Rng::new(0x5eed),
        }
    }

    /// The arm an event belongs to (`None`: before the start, no arm, or
    /// one the experiment does not have, counted).
    fn arm(&mut self, e: &RawExperiment, ts_ms: i64, event: &Event, count: bool) -> Option<usize> {
        let name = event.arm.as_deref()?;
        if ts_ms < self.start_ms {
            return None;
        }
        let i = e.arms.iter().position(|a| a.name == name);
        if i.is_none() && count {
            self.unknown_arm += 1;
        }
        i
    }

    /// Counts one event's request in its arm.
    pub fn add_event(&mut self, e: &RawExperiment, ts_ms: i64, event: &Event, limit: usize) {
        if let Some(i) = self.arm(e, ts_ms, event, true) {
            self.arms[i]
                .traffic
                .add(Some(&event.champion), limit, &mut self.rng);
        }
    }

    /// Scores one label of a request in its arm.
    pub fn add_label(&mut self, e: &RawExperiment, ts_ms: i64, event: &Event, label: &Label) {
        let Some(i) = self.arm(e, ts_ms, event, false) else {
            return;
        };
        match value(e.metric, event, label) {
            Some(x) => self.arms[i].metric.add(x),
            None => self.unscored_labels += 1,
        }
    }

    /// Takes in another partition's tallies of the same experiment.
    pub fn merge(&mut self, other: &Tally, limit: usize) {
        for (a, b) in self.arms.iter_mut().zip(&other.arms) {
            a.traffic.merge(&b.traffic, limit, &mut self.rng);
            a.metric.n += b.metric.n;
            a.metric.sum += b.metric.sum;
            a.metric.sum_squares += b.metric.sum_squares;
        }
        self.unknown_arm += other.unknown_arm;
        self.unscored_labels += other.unscored_labels;
    }
}

/// The metric's value for one labelled request (`None`: the request
/// failed or the label or output lacks what the metric needs).
pub fn value(metric: Metric, event: &Event, label: &Label) -> Option<f64> {
    let out = &event.champion;
    if metric == Metric::Reward {
        return label.reward.filter(|r| r.is_finite());
    }
    if out.error.is_some() {
        return None;
    }
    match metric {
        Metric::Accuracy | Metric::ErrorRate => {
            let hit = out.label.as_deref()? == label.label.as_deref()?;
            Some(f64::from(u8::from(hit == (metric == Metric::Accuracy))))
        }
        Metric::Mae | Metric::Mse => {
            let e = out.value.filter(|v| v.is_finite())? - label.value.filter(|v| v.is_finite())?;
            Some(if metric == Metric::Mae {
                e.abs()
            } else {
                e * e
            })
        }
        Metric::Reward => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_protocol::Output;

    fn experiment(metric: &str) -> RawExperiment {
        serde_yaml_ng::from_str(&format!(
            "{{name: t, metric: {metric}, arms: [{{name: a, weight: 1}}, {{name: b, weight: 1}}], start: '2026-01-01T00:00:00Z'}}"
        ))
        .expect("experiment")
    }

    fn event(arm: Option<&str>, label: &str, error: bool) -> Event {
        Event {
            model: "m".into(),
            request_id: "r".into(),
            timestamp: String::new(),
            features: Default::default(),
            champion: Output {
                label: Some(label.into()),
                latency_ms: Some(5.0),
                error: error.then(|| "503".to_string()),
                ..Output::default()
            },
            shadow: None,
            node: None,
            arm: arm.map(String::from),
        }
    }

    fn truth(label: &str, reward: Option<f64>) -> Label {
        Label {
            model: "m".into(),
            request_id: "r".into(),
            label: Some(label.into()),
            value: None,
            reward,
        }
    }

    #[test]
    fn arms_count_requests_and_score_labels_by_the_metric() {
        let e = experiment("accuracy");
        let mut t = Tally::new(&e);
        let ts = t.start_ms;
        t.add_event(&e, ts, &event(Some("a"), "1", false), 10);
        t.add_event(&e, ts, &event(Some("b"), "1", true), 10);
        t.add_event(&e, ts, &event(Some("c"), "1", false), 10);
        t.add_event(&e, ts, &event(None, "1", false), 10);
        t.add_event(&e, ts - 1, &event(Some("a"), "1", false), 10);
        assert_eq!(
            t.arms[0].traffic.predictions, 1,
            "before the start: not counted"
        );
        assert_eq!(
            (t.arms[1].traffic.predictions, t.arms[1].traffic.errors),
            (1, 1)
        );
        assert_eq!(t.unknown_arm, 1);
        t.add_label(&e, ts, &event(Some("a"), "1", false), &truth("1", None));
        t.add_label(&e, ts, &event(Some("a"), "0", false), &truth("1", None));
        t.add_label(&e, ts, &event(Some("b"), "1", true), &truth("1", None));
        assert_eq!(t.arms[0].metric.n, 2.0);
        assert_eq!(t.arms[0].metric.sum, 1.0);
        assert_eq!(t.arms[1].metric.n, 0.0, "a failed request has no accuracy");
        assert_eq!(t.unscored_labels, 1);
        let r = experiment("reward");
        let mut t = Tally::new(&r);
        t.add_label(&r, ts, &event(Some("b"), "0", true), &truth("1", Some(2.5)));
        t.add_label(&r, ts, &event(Some("b"), "0", false), &truth("1", None));
        assert_eq!((t.arms[1].metric.n, t.arms[1].metric.sum), (1.0, 2.5));
        assert_eq!(t.unscored_labels, 1);
        let mut merged = Tally::new(&r);
        merged.merge(&t, 10);
        merged.merge(&t, 10);
        assert_eq!(merged.arms[1].metric.sum, 5.0);
    }
}
