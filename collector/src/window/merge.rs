//! A partitioned model's windows put together: each partition's owner
//! keeps the windows of its share of the requests (a partial state), and
//! the owner of partition 0 merges them into the model's windows before
//! it evaluates them. Counts, sums, category tables and missing counts add
//! up; samples merge as `Reservoir::merge` says (every value while the
//! merged window is within its sample limit, a uniform sample beyond).
//! What is exact and what is approximate is in the README's "Running more
//! than one collector".

use std::collections::BTreeMap;

use super::{
    CatKey, Estimation, FeatureWindow, ModelWindows, Values, Window, KEPT_WINDOWS, MAX_CATEGORIES,
};
use crate::stats::rng::Rng;

impl FeatureWindow {
    /// Takes in another partition's values of the same feature and window.
    pub(super) fn merge(&mut self, other: &FeatureWindow, limit: usize, rng: &mut Rng) {
        self.missing += other.missing;
        self.version += other.version;
        match (&mut self.values, &other.values) {
            (Values::Numeric(mine), Values::Numeric(theirs)) => mine.merge(theirs, limit, rng),
            (
                Values::Categorical { counts, overflow },
                Values::Categorical {
                    counts: theirs,
                    overflow: their_overflow,
                },
            ) => {
                // In a fixed order, so that which categories are pooled
                // beyond the cap does not depend on a hash.
                let mut theirs: Vec<(&CatKey, &u64)> = theirs.iter().collect();
                theirs.sort_by(|a, b| cat_order(a.0, b.0));
                for (key, n) in theirs {
                    if let Some(c) = counts.get_mut(key) {
                        *c += n;
                    } else if counts.len() < MAX_CATEGORIES {
                        counts.insert(key.clone(), *n);
                    } else {
                        *overflow += n;
                    }
                }
                *overflow += their_overflow;
            }
            // Both come from the same feature configuration (checked by
            // `ModelWindows::merge`).
            _ => {}
        }
    }
}

fn cat_order(a: &CatKey, b: &CatKey) -> std::cmp::Ordering {
    match (a, b) {
        (CatKey::Num(x), CatKey::Num(y)) => x.cmp(y),
        (CatKey::Num(_), CatKey::Str(_)) => std::cmp::Ordering::Less,
        (CatKey::Str(_), CatKey::Num(_)) => std::cmp::Ordering::Greater,
        (CatKey::Str(x), CatKey::Str(y)) => x.cmp(y),
    }
}

impl Estimation {
    /// Takes in another partition's rows of the same role.
    pub(super) fn merge(&mut self, other: &Estimation, limit: usize, rng: &mut Rng) {
        self.rows.merge(&other.rows, limit, rng);
        self.unscored += other.unscored;
        self.version += other.version;
    }
}

impl Window {
    /// Takes in another partition's window of the same length and start.
    fn merge(&mut self, other: &Window, limit: usize) {
        let mut rng = std::mem::replace(&mut self.rng, Rng::new(0));
        self.events += other.events;
        self.labels += other.labels;
        self.version += other.version;
        for (mine, theirs) in self.features.iter_mut().zip(&other.features) {
            mine.merge(theirs, limit, &mut rng);
        }
        for (mine, theirs) in self.predictions.iter_mut().zip(&other.predictions) {
            mine.merge(theirs, limit, &mut rng);
        }
        self.shadow.merge(&other.shadow, limit, &mut rng);
        for (mine, theirs) in self.roles.iter_mut().zip(&other.roles) {
            mine.merge(theirs, limit, &mut rng);
        }
        // The optional analyses draw from their own generator.
        let analyses = &mut self.analyses_rng;
        self.multivariate
            .merge(&other.multivariate, limit, analyses);
        super::segments::merge(&mut self.segments, &other.segments, limit, analyses);
        for (mine, theirs) in self.estimation.iter_mut().zip(&other.estimation) {
            mine.merge(theirs, limit, analyses);
        }
        self.champion_performance
            .merge(&other.champion_performance, limit, &mut rng);
        self.shadow_performance
            .merge(&other.shadow_performance, limit, &mut rng);
        self.rng = rng;
    }

    /// Whether `other` is a window of the same shape (features, outputs).
    fn fits(&self, other: &Window) -> bool {
        let same_types = |a: &[FeatureWindow], b: &[FeatureWindow]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    matches!(
                        (&x.values, &y.values),
                        (Values::Numeric(_), Values::Numeric(_))
                            | (Values::Categorical { .. }, Values::Categorical { .. })
                    )
                })
        };
        same_types(&self.features, &other.features)
            && same_types(&self.predictions, &other.predictions)
    }
}

impl ModelWindows {
    /// The kept windows of this and `others` (the other partitions' states
    /// of the same model), oldest first per length: (start, version), the
    /// version the merged window would have.
    pub fn merged_versions(&self, others: &[ModelWindows]) -> Vec<Vec<(i64, u64)>> {
        (0..self.by_length.len())
            .map(|li| {
                let mut versions = BTreeMap::<i64, u64>::new();
                for mw in std::iter::once(self).chain(others) {
                    for w in mw.by_length.get(li).into_iter().flat_map(|w| w.values()) {
                        *versions.entry(w.start_ms).or_default() += w.version;
                    }
                }
                let skip = versions.len().saturating_sub(KEPT_WINDOWS);
                versions.into_iter().skip(skip).collect()
            })
            .collect()
    }

    /// One window (length `li`, starting at `start_ms`) merged from this
    /// and `others`, if any of them holds it.
    pub fn merged_window(
        &self,
        others: &[ModelWindows],
        li: usize,
        start_ms: i64,
    ) -> Option<Window> {
        let mut merged: Option<Window> = None;
        for mw in std::iter::once(self).chain(others) {
            let Some(w) = mw.by_length.get(li).and_then(|w| w.get(&start_ms)) else {
                continue;
            };
            match &mut merged {
                None => merged = Some(w.clone()),
                Some(m) => m.merge(w, self.limit),
            }
        }
        merged
    }

    /// The experiments' tallies of this and `others` added up (arms in
    /// the configuration's order; a state of another configuration, with
    /// other experiments, adds nothing).
    pub fn merged_experiments(&self, others: &[ModelWindows]) -> Vec<super::experiments::Tally> {
        let mut merged = self.experiments.clone();
        for other in others {
            if other.experiments.len() != merged.len() {
                continue;
            }
            for (m, t) in merged.iter_mut().zip(&other.experiments) {
                m.merge(t, self.limit);
            }
        }
        merged
    }

    /// Whether `other` is a partial state of the same model configuration
    /// (window lengths, sample limit, features and outputs): why not.
    pub fn check_fits(&self, other: &ModelWindows) -> Result<(), String> {
        if self.lengths_ms != other.lengths_ms || self.limit != other.limit {
            return Err(format!(
                "its windows ({:?} ms, sample limit {}) differ from this collector's ({:?} ms, sample limit {})",
                other.lengths_ms, other.limit, self.lengths_ms, self.limit
            ));
        }
        let shapes = self
            .by_length
            .iter()
            .chain(&other.by_length)
            .flat_map(|w| w.values());
        let mut first: Option<&Window> = None;
        for w in shapes {
            match first {
                None => first = Some(w),
                Some(f) if !f.fits(w) => {
                    return Err("its features or outputs differ from this collector's".into())
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use driftwatch_protocol::Label;

    use super::super::Accepted;
    use super::*;
    use crate::config::Task;
    use crate::ingest::validate;
    use crate::models::Model;

    fn model(limit: usize) -> Model {
        crate::models::example_model(&format!(
            "    window_sample_limit: {limit}\n    positive_class: \"1\"\n    segments: {{columns: [country], top: 2}}\n"
        ))
    }

    fn event(m: &Model, i: u32) -> (Accepted, Label) {
        let age = match i % 11 {
            0 => "null".to_string(),
            _ => format!("{}", 18.0 + f64::from(i) * 0.37),
        };
        let json = format!(
            r#"{{"model": "credit", "request_id": "r{i}", "timestamp": "2026-12-06T00:{:02}:00Z", "features": {{"age": {age}, "country": "c{}"}}, "champion": {{"label": "{}", "score": {}, "latency_ms": {}}}, "shadow": {{"label": "{}", "score": {}}}}}"#,
            i % 60,
            i % 5,
            u32::from(i % 10 > 4),
            f64::from(i % 10) / 10.0,
            i % 7,
            u32::from(i % 9 > 4),
            f64::from(i % 9) / 9.0,
        );
        let a = validate(&json, std::slice::from_ref(m), i64::MAX / 2, 0).expect("valid");
        let label = Label {
            model: "credit".into(),
            request_id: format!("r{i}"),
            label: Some(u32::from(i.is_multiple_of(3)).to_string()),
            value: None,
            reward: None,
        };
        (a, label)
    }

    /// One state of every event and three partial ones (request `i` in
    /// partition `7i mod 3`).
    fn split(m: &Model, n: u32) -> (ModelWindows, [ModelWindows; 3]) {
        let mut whole = ModelWindows::new(m);
        let mut parts = [
            ModelWindows::new(m),
            ModelWindows::new(m),
            ModelWindows::new(m),
        ];
        for i in 0..n {
            let (a, label) = event(m, i);
            for mw in [&mut whole, &mut parts[(i as usize * 7) % 3]] {
                mw.add(m, &a);
                mw.add_label(m, a.ts_ms, &a.event, &label);
            }
        }
        (whole, parts)
    }

    #[test]
    fn three_partitions_merge_into_what_one_window_holds() {
        let m = model(10_000);
        let (whole, parts) = split(&m, 500);
        let [first, others @ ..] = &parts;
        for other in others {
            first.check_fits(other).expect("the same model");
        }
        assert_eq!(first.merged_versions(others), whole.versions());
        let start = whole.versions()[0][0].0;
        let merged = first.merged_window(others, 0, start).expect("a window");
        let one = whole.window(0, start).expect("a window");
        assert_eq!((merged.events, merged.labels), (500, 500));
        assert_eq!((merged.events, merged.labels), (one.events, one.labels));
        for (a, b) in merged.features.iter().zip(&one.features) {
            assert_eq!(
                (a.missing, a.seen(), a.version),
                (b.missing, b.seen(), b.version)
            );
            assert_eq!(a.sample(false), b.sample(false));
        }
        // Per segment the same samples (the events' countries are none of
        // the reference's two most frequent: all in `__other__`).
        assert_eq!(merged.segments.len(), 1);
        for (x, y) in merged.segments[0].iter().zip(&one.segments[0]) {
            for (a, b) in x.features.iter().zip(&y.features) {
                assert_eq!((a.missing, a.seen()), (b.missing, b.seen()));
                assert_eq!(a.sample(false), b.sample(false));
            }
            assert_eq!(x.labels, y.labels);
            let metrics =
                |p: &super::super::Performance| p.metrics(Task::BinaryClassification, "1");
            // Sums in another order: equal to the last bits but a few.
            for ((name, a), (_, b)) in metrics(&x.performance[0])
                .into_iter()
                .zip(metrics(&y.performance[0]))
            {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{name}: {a} {b}");
            }
        }
        let other = &merged.segments[0][2];
        assert_eq!(other.features[0].seen() + other.features[0].missing, 500);
        assert_eq!(other.labels, 500);
        assert_eq!(merged.shadow.mcnemar(0.05), one.shadow.mcnemar(0.05));
        assert_eq!(
            merged.shadow.agreement_ratio(),
            one.shadow.agreement_ratio()
        );
        for (a, b) in merged.roles.iter().zip(&one.roles) {
            assert_eq!(a.predictions, b.predictions);
            assert_eq!(a.latency_quantiles_ms(), b.latency_quantiles_ms());
        }
        let metrics = |p: &super::super::Performance| p.metrics(Task::BinaryClassification, "1");
        let (a, b) = (
            metrics(&merged.champion_performance),
            metrics(&one.champion_performance),
        );
        assert_eq!(a.len(), b.len());
        assert!(a.iter().any(|(name, _)| *name == "roc_auc"), "{a:?}");
        for ((name, a), (_, b)) in a.into_iter().zip(b) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{name}: {a} {b}");
        }
    }

    #[test]
    fn beyond_the_limit_the_merged_sample_keeps_the_limit_and_every_count() {
        let m = model(50);
        let (whole, parts) = split(&m, 500);
        let [first, others @ ..] = &parts;
        let start = whole.versions()[0][0].0;
        let merged = first.merged_window(others, 0, start).expect("a window");
        let age = m.feature_index("age").expect("age");
        let (a, b) = (
            &merged.features[age],
            &whole.window(0, start).expect("w").features[age],
        );
        assert_eq!((a.missing, a.seen()), (b.missing, b.seen()));
        let crate::stats::Sample::Numeric(n) = a.sample(false) else {
            panic!("numeric")
        };
        assert_eq!(n.len(), 50);
    }

    #[test]
    fn a_partial_state_of_another_configuration_is_refused() {
        assert!(ModelWindows::new(&model(10))
            .check_fits(&ModelWindows::new(&model(20)))
            .is_err());
    }
}
