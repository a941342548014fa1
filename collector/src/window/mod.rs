//! Tumbling windows per model and window length, with state that does not
//! grow with traffic: per feature the first `limit` values exactly, then a
//! uniform reservoir of `limit` (Vitter's Algorithm R); category counts capped
//! at `MAX_CATEGORIES` distinct values (the rest pooled into one overflow
//! category); missing counts. While a window has seen no more values than
//! its limit, its samples are exactly the rows sent, so its statistics equal
//! `driftwatch report` on those rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

mod column;
mod estimated;
pub mod evaluate;
pub mod experiments;
mod merge;
pub mod performance;
pub mod reservoir;
pub mod roles;
pub mod segments;

use driftwatch_protocol::{Event, Label};
pub use performance::Performance;
pub use reservoir::Reservoir;
pub use roles::{quantile_sorted, AlwaysValid, Comparison, RoleTraffic, ShadowComparison};
use serde::{Deserialize, Serialize};

use crate::models::{Feature, Model};
use crate::report::estimator::ScoredRow;
use crate::stats::rng::Rng;
use crate::stats::{ColumnType, Counts, Key, Numeric, Sample};

/// Distinct categories kept per feature per window.
pub const MAX_CATEGORIES: usize = 1000;
/// The category that pools values beyond `MAX_CATEGORIES`.
pub const OVERFLOW_CATEGORY: &str = "__other__";
/// Windows kept per length: the newest and the one before, for late events.
const KEPT_WINDOWS: usize = 2;

/// A feature value after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Missing,
    Num(f64),
    Cat(Key),
}

/// The roles of a window's outputs, in the order of its per-role arrays.
pub const ROLES: [&str; 2] = ["champion", "shadow"];

/// An event that passed validation.
#[derive(Debug)]
pub struct Accepted {
    pub model: usize,
    pub ts_ms: i64,
    /// Feature values in the model's feature order.
    pub values: Vec<Value>,
    /// The champion's and the shadow's outputs in the field the reference's
    /// prediction column holds (`None`: no prediction column, or no shadow).
    pub predicted: [Option<Value>; 2],
    /// The champion's and the shadow's outputs as the model's performance
    /// estimator takes them (`None`: no estimator, no shadow, or an output
    /// it cannot use).
    pub scored: [Option<ScoredRow>; 2],
    /// The row's reconstruction error, for a model with multivariate drift.
    pub reconstruction: Option<f64>,
    pub event: Event,
    /// The event as sent, for storage: set by the ingest path that stores
    /// or publishes it (`validate` leaves it empty).
    pub json: String,
}

/// A window's context for annotation templates.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowInfo {
    pub model: String,
    pub window: String,
    pub start: String,
    pub end: String,
    /// Drifted features, most drifted first: (feature, default test, statistic).
    pub top_features: Vec<(String, String, f64)>,
}

/// Hashable form of a category key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum CatKey {
    Num(u64),
    Str(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Values {
    Numeric(Reservoir<f64>),
    Categorical {
        counts: HashMap<CatKey, u64>,
        overflow: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureWindow {
    values: Values,
    pub missing: u64,
    /// Changes of the sample or the missing count so far: equal versions,
    /// equal statistics (a value the reservoir let go changes nothing).
    pub version: u64,
}

impl FeatureWindow {
    fn new(feature: &Feature) -> FeatureWindow {
        let values = match feature.column_type {
            ColumnType::Numeric => Values::Numeric(Reservoir::default()),
            ColumnType::Categorical => Values::Categorical {
                counts: HashMap::new(),
                overflow: 0,
            },
        };
        FeatureWindow {
            values,
            missing: 0,
            version: 0,
        }
    }

    fn add(&mut self, value: &Value, limit: usize, rng: &mut Rng) {
        match (&mut self.values, value) {
            (_, Value::Missing) => self.missing += 1,
            (Values::Numeric(values), Value::Num(x)) => {
                if !values.add(*x, limit, rng) {
                    return;
                }
            }
            (Values::Categorical { counts, overflow }, Value::Cat(k)) => {
                let key = match k {
                    Key::Num(x) => CatKey::Num((x + 0.0).to_bits()),
                    Key::Str(s) => CatKey::Str(s.clone()),
                };
                if let Some(c) = counts.get_mut(&key) {
                    *c += 1;
                } else if counts.len() < MAX_CATEGORIES {
                    counts.insert(key, 1);
                } else {
                    *overflow += 1;
                }
            }
            // Validation guarantees the value matches the feature's type.
            _ => self.missing += 1,
        }
        self.version += 1;
    }

    /// The window's sample, as the statistics take it.
    pub fn sample(&self, integer: bool) -> Sample {
        match &self.values {
            Values::Numeric(values) => {
                Sample::Numeric(Numeric::new(values.items().to_vec(), integer))
            }
            Values::Categorical { counts, overflow } => {
                let mut pairs: Vec<(Key, u64)> = counts
                    .iter()
                    .map(|(k, &c)| {
                        let key = match k {
                            CatKey::Num(bits) => Key::Num(f64::from_bits(*bits)),
                            CatKey::Str(s) => Key::Str(s.clone()),
                        };
                        (key, c)
                    })
                    .collect();
                if *overflow > 0 {
                    pairs.push((Key::Str(OVERFLOW_CATEGORY.to_string()), *overflow));
                }
                Sample::Categorical(Counts::from_pairs(pairs))
            }
        }
    }

    /// Values seen (not missing), including those the reservoir let go.
    pub fn seen(&self) -> u64 {
        match &self.values {
            Values::Numeric(values) => values.seen(),
            Values::Categorical { counts, overflow } => counts.values().sum::<u64>() + overflow,
        }
    }
}

/// One tumbling window of one length.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: i64,
    pub length_ms: i64,
    pub events: u64,
    pub features: Vec<FeatureWindow>,
    /// Champion's and shadow's outputs, when the model has a prediction column.
    pub predictions: Vec<FeatureWindow>,
    pub shadow: ShadowComparison,
    /// Champion [0] and shadow [1] traffic in this window.
    pub roles: [RoleTraffic; 2],
    /// Labels received for this window's predictions.
    pub labels: u64,
    pub champion_performance: Performance,
    pub shadow_performance: Performance,
    /// Champion [0] and shadow [1] outputs for the performance estimator.
    #[serde(default)]
    pub estimation: [Estimation; 2],
    /// The events' reconstruction errors (multivariate drift).
    #[serde(default)]
    pub multivariate: Reservoir<f64>,
    /// Per segment column and segment, every feature's sample.
    #[serde(default)]
    pub segments: segments::SegmentWindows,
    /// Events and labels added so far: an unchanged version, unchanged
    /// contents.
    pub version: u64,
    rng: Rng,
    /// The optional analyses' own draws (estimation, multivariate drift,
    /// segments): configuring one leaves the window's other samples as
    /// they would be without it.
    #[serde(default = "analyses_rng_of_old_windows")]
    analyses_rng: Rng,
}

/// The optional analyses' generator of a window kept before it had one.
fn analyses_rng_of_old_windows() -> Rng {
    Rng::new(ANALYSES_SEED)
}

/// Mixed into a window's start for its analyses' generator.
const ANALYSES_SEED: u64 = 0x5EED_A7A1_7535;

/// A role's outputs in a window as the performance estimator takes them:
/// every row while within the sample limit, a uniform sample beyond;
/// outputs it could not use counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Estimation {
    pub rows: Reservoir<ScoredRow>,
    pub unscored: u64,
    /// Changes so far: an unchanged version, unchanged estimates.
    pub version: u64,
}

impl Estimation {
    fn add(&mut self, row: Option<&ScoredRow>, limit: usize, rng: &mut Rng) {
        match row {
            Some(r) => {
                self.rows.add(r.clone(), limit, rng);
            }
            None => self.unscored += 1,
        }
        self.version += 1;
    }
}

/// Why an event could not be placed in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    TooOld,
}

/// What the other partitions of a split model hold, as this collector
/// (the owner of its partition 0) last gathered it.
#[derive(Debug, Clone, Default)]
pub enum Partials {
    /// The model is not split, or every partition is this collector's.
    #[default]
    Own,
    /// A partition's state could not be gathered (its owner is reading its
    /// records again, gone or unreachable): the model is not evaluated
    /// meanwhile, so that its figures never show a part as the whole.
    Missing,
    /// The other owners' states, and where they came from (node and the
    /// generation of its windows there).
    Gathered {
        sources: Vec<(String, u64)>,
        windows: Arc<Vec<ModelWindows>>,
    },
}

/// The live state of every model: its configuration and reference, and
/// its windows behind a lock of their own (ingest adds, evaluation clones).
pub struct Live {
    pub models: Arc<[Model]>,
    windows: Vec<Mutex<ModelWindows>>,
    /// Per model: the other partitions' states (cluster mode).
    partials: Vec<Mutex<Partials>>,
    /// Per model: whether its windows hold every record read so far
    /// (cluster mode: false from a reset until the reading caught up).
    ready: Vec<std::sync::atomic::AtomicBool>,
    /// Per model: until when this process evaluates it, in milliseconds
    /// after `base` (`u64::MAX`: always; 0: another collector owns it).
    owned_until: Vec<AtomicU64>,
    base: Instant,
    /// Per model: how many times its windows were emptied (`reset`); what
    /// was evaluated before one says nothing of the windows after it.
    generations: Vec<AtomicU64>,
}

impl Live {
    /// Every model's windows, empty, each owned by this process.
    pub fn new(models: Vec<Model>) -> Live {
        Live {
            windows: models
                .iter()
                .map(|m| Mutex::new(ModelWindows::new(m)))
                .collect(),
            owned_until: models.iter().map(|_| AtomicU64::new(u64::MAX)).collect(),
            partials: models.iter().map(|_| Mutex::default()).collect(),
            ready: models
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(true))
                .collect(),
            generations: models.iter().map(|_| AtomicU64::new(0)).collect(),
            models: models.into(),
            base: Instant::now(),
        }
    }

    /// Whether this process evaluates model `mi` now (in cluster mode: it
    /// holds the model's lease and its last renewal is recent enough that
    /// no other collector can have taken it since).
    pub fn owns(&self, mi: usize) -> bool {
        let now = self.base.elapsed().as_millis() as u64;
        self.owned_until[mi].load(Ordering::SeqCst) > now
    }

    /// Model `mi` is this process's until `until` (`None`: not at all).
    pub fn own_until(&self, mi: usize, until: Option<Instant>) {
        let ms = until.map_or(0, |t| {
            t.saturating_duration_since(self.base).as_millis() as u64
        });
        self.owned_until[mi].store(ms, Ordering::SeqCst);
    }

    /// Empties model `mi`'s windows (its events are read again elsewhere).
    pub fn reset(&self, mi: usize) {
        let mut windows = self.windows(mi);
        *windows = ModelWindows::new(&self.models[mi]);
        // A split model waits for the other partitions' states again.
        *self.partials(mi) = match self.models[mi].partitions {
            1 => Partials::Own,
            _ => Partials::Missing,
        };
        self.ready[mi].store(false, Ordering::SeqCst);
        self.generations[mi].fetch_add(1, Ordering::SeqCst);
    }

    /// Model `mi`'s windows hold every record stored when its reading
    /// started (after a reset).
    pub fn set_ready(&self, mi: usize) {
        self.ready[mi].store(true, Ordering::SeqCst);
    }

    /// Whether model `mi`'s windows hold every record stored when its
    /// reading started (always, but between a reset and `set_ready`).
    pub fn ready(&self, mi: usize) -> bool {
        self.ready[mi].load(Ordering::SeqCst)
    }

    fn partials(&self, mi: usize) -> MutexGuard<'_, Partials> {
        self.partials[mi].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets what the other partitions of model `mi` hold; states from
    /// other sources than before count as other windows (a new
    /// generation: nothing evaluated before is reused).
    pub fn set_partials(&self, mi: usize, partials: Partials) {
        let mut held = self.partials(mi);
        let same = match (&*held, &partials) {
            (Partials::Gathered { sources: a, .. }, Partials::Gathered { sources: b, .. }) => {
                a == b
            }
            (Partials::Own, Partials::Own) | (_, Partials::Missing) => true,
            _ => false,
        };
        *held = partials;
        if !same {
            self.generations[mi].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether model `mi`'s windows are whole here: its records read up
    /// to now since the last reset, every partition's state at hand.
    pub fn complete(&self, mi: usize) -> bool {
        self.ready(mi) && !matches!(*self.partials(mi), Partials::Missing)
    }

    /// Model `mi`'s kept windows as (start, version) per length, oldest
    /// first, merged with the other partitions' states.
    pub fn versions(&self, mi: usize) -> Vec<Vec<(i64, u64)>> {
        let others = self.others(mi);
        self.windows(mi).merged_versions(&others)
    }

    /// A copy of one of model `mi`'s windows (length `li`, starting at
    /// `start_ms`), merged with the other partitions' states.
    pub fn window(&self, mi: usize, li: usize, start_ms: i64) -> Option<Window> {
        let others = self.others(mi);
        self.windows(mi).merged_window(&others, li, start_ms)
    }

    /// Model `mi`'s experiments' tallies, merged with the other
    /// partitions' states.
    pub fn experiments(&self, mi: usize) -> Vec<experiments::Tally> {
        let others = self.others(mi);
        self.windows(mi).merged_experiments(&others)
    }

    /// The other partitions' states of model `mi` as last gathered (none
    /// when it is not split or they are not at hand).
    fn others(&self, mi: usize) -> Arc<Vec<ModelWindows>> {
        match &*self.partials(mi) {
            Partials::Gathered { windows, .. } => windows.clone(),
            _ => Arc::default(),
        }
    }

    /// How many times model `mi`'s windows were emptied.
    pub fn generation(&self, mi: usize) -> u64 {
        self.generations[mi].load(Ordering::SeqCst)
    }

    /// The windows of model `mi` (a poisoned lock is taken over: the
    /// windows stay consistent between single updates).
    pub fn windows(&self, mi: usize) -> MutexGuard<'_, ModelWindows> {
        self.windows[mi].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A model by name, with its index.
    pub fn model(&self, name: &str) -> Option<(usize, &Model)> {
        self.models.iter().enumerate().find(|(_, m)| m.name == name)
    }
}

/// All windows of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelWindows {
    /// Per window length (the model's order): windows by start time.
    by_length: Vec<BTreeMap<i64, Window>>,
    lengths_ms: Vec<i64>,
    limit: usize,
    /// Per experiment of the model: its arms' tallies since its start.
    #[serde(default)]
    pub experiments: Vec<experiments::Tally>,
}

impl ModelWindows {
    pub fn new(model: &Model) -> ModelWindows {
        ModelWindows {
            experiments: model
                .experiments
                .iter()
                .map(experiments::Tally::new)
                .collect(),
            by_length: model.windows.iter().map(|_| BTreeMap::new()).collect(),
            lengths_ms: model
                .windows
                .iter()
                .map(|w| w.duration.as_millis() as i64)
                .collect(),
            limit: model.sample_limit,
        }
    }

    /// Whether an event at `ts_ms` still has a window in every length at
    /// `now_ms`: the live window and the one before it, whether or not they
    /// hold events, and never older than the oldest window kept.
    pub fn check(&self, ts_ms: i64, now_ms: i64) -> Result<(), Placement> {
        for (len, windows) in self.lengths_ms.iter().zip(&self.by_length) {
            let start = ts_ms.div_euclid(*len) * len;
            let live = now_ms.div_euclid(*len) * len;
            let oldest_kept = (windows.len() >= KEPT_WINDOWS)
                .then(|| windows.keys().next().copied())
                .flatten();
            if start < live - (KEPT_WINDOWS as i64 - 1) * len
                || oldest_kept.is_some_and(|oldest| start < oldest)
            {
                return Err(Placement::TooOld);
            }
        }
        Ok(())
    }

    /// Counts an event in the experiments of its arm (`add` does too;
    /// alone, for events older than the windows kept).
    pub fn add_to_experiments(&mut self, model: &Model, ts_ms: i64, event: &Event) {
        for (e, t) in model.experiments.iter().zip(&mut self.experiments) {
            t.add_event(e, ts_ms, event, self.limit);
        }
    }

    /// Scores a label in the experiments of its request's arm (`add_label`
    /// does too; alone, for predictions older than the windows kept).
    pub fn label_experiments(&mut self, model: &Model, ts_ms: i64, event: &Event, label: &Label) {
        for (e, t) in model.experiments.iter().zip(&mut self.experiments) {
            t.add_label(e, ts_ms, event, label);
        }
    }

    /// Adds one validated event.
    pub fn add(&mut self, model: &Model, a: &Accepted) {
        if a.event.arm.is_some() {
            self.add_to_experiments(model, a.ts_ms, &a.event);
        }
        let (champion, shadow) = (&a.event.champion, a.event.shadow.as_ref());
        for (len, windows) in self.lengths_ms.iter().zip(self.by_length.iter_mut()) {
            let start = a.ts_ms.div_euclid(*len) * len;
            let window = windows.entry(start).or_insert_with(|| Window {
                start_ms: start,
                length_ms: *len,
                events: 0,
                features: model.features.iter().map(FeatureWindow::new).collect(),
                predictions: model
                    .prediction
                    .iter()
                    .flat_map(|p| {
                        [
                            FeatureWindow::new(&p.reference),
                            FeatureWindow::new(&p.reference),
                        ]
                    })
                    .collect(),
                shadow: ShadowComparison::default(),
                roles: Default::default(),
                labels: 0,
                champion_performance: Performance::default(),
                shadow_performance: Performance::default(),
                estimation: Default::default(),
                multivariate: Reservoir::default(),
                segments: segments::empty(model),
                version: 0,
                rng: Rng::new(start as u64),
                analyses_rng: Rng::new(start as u64 ^ ANALYSES_SEED),
            });
            window.events += 1;
            window.version += 1;
            window.shadow.add(champion, shadow);
            window.roles[0].add(Some(champion), self.limit, &mut window.rng);
            window.roles[1].add(shadow, self.limit, &mut window.rng);
            for (fw, v) in window.features.iter_mut().zip(&a.values) {
                fw.add(v, self.limit, &mut window.rng);
            }
            let analyses = &mut window.analyses_rng;
            if let Some(e) = a.reconstruction {
                window.multivariate.add(e, self.limit, analyses);
            }
            segments::add(&mut window.segments, model, a, self.limit, analyses);
            if model.estimator.is_some() {
                window.estimation[0].add(a.scored[0].as_ref(), self.limit, analyses);
                if shadow.is_some() {
                    window.estimation[1].add(a.scored[1].as_ref(), self.limit, analyses);
                }
            }
            for (pw, v) in window.predictions.iter_mut().zip(&a.predicted) {
                if let Some(v) = v {
                    pw.add(v, self.limit, &mut window.rng);
                }
            }
            while windows.len() > KEPT_WINDOWS {
                windows.pop_first();
            }
        }
    }

    /// Scores a label against the prediction it belongs to, in every window
    /// still kept that holds it; returns how many windows it reached.
    pub fn add_label(&mut self, model: &Model, ts_ms: i64, event: &Event, label: &Label) -> usize {
        if event.arm.is_some() {
            self.label_experiments(model, ts_ms, event, label);
        }
        let mut reached = 0;
        for (len, windows) in self.lengths_ms.iter().zip(self.by_length.iter_mut()) {
            let start = ts_ms.div_euclid(*len) * len;
            let Some(w) = windows.get_mut(&start) else {
                continue;
            };
            w.labels += 1;
            w.version += 1;
            let limit = self.limit;
            w.champion_performance.add(
                model.task,
                &model.positive_class,
                &event.champion,
                label,
                limit,
                &mut w.rng,
            );
            if let Some(shadow) = &event.shadow {
                w.shadow_performance.add(
                    model.task,
                    &model.positive_class,
                    shadow,
                    label,
                    limit,
                    &mut w.rng,
                );
            }
            w.shadow.add_truth(
                &event.champion,
                event.shadow.as_ref(),
                label,
                limit,
                &mut w.rng,
            );
            segments::add_label(
                &mut w.segments,
                model,
                event,
                label,
                limit,
                &mut w.analyses_rng,
            );
            reached += 1;
        }
        reached
    }

    /// Every kept window of each length as (start, version), oldest first
    /// (the last one is the live window): what changed since the last look.
    pub fn versions(&self) -> Vec<Vec<(i64, u64)>> {
        self.by_length
            .iter()
            .map(|w| w.values().map(|w| (w.start_ms, w.version)).collect())
            .collect()
    }

    /// A copy of one kept window (length `li`, starting at `start_ms`), for
    /// evaluation off the lock.
    pub fn window(&self, li: usize, start_ms: i64) -> Option<Window> {
        self.by_length.get(li)?.get(&start_ms).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_feature() -> Feature {
        Feature {
            name: "x".into(),
            column_type: ColumnType::Numeric,
            reference: Sample::Numeric(Numeric::new(vec![1.0, 2.0], false)),
            reference_missing: 0,
            integer: false,
            numeric_keys: false,
        }
    }

    #[test]
    fn reservoir_keeps_the_limit_and_counts_everything() {
        let f = numeric_feature();
        let mut w = FeatureWindow::new(&f);
        let mut rng = Rng::new(7);
        for i in 0..10_000 {
            w.add(&Value::Num(f64::from(i)), 100, &mut rng);
        }
        w.add(&Value::Missing, 100, &mut rng);
        assert_eq!(w.seen(), 10_000);
        assert_eq!(w.missing, 1);
        let Sample::Numeric(n) = w.sample(false) else {
            panic!("numeric")
        };
        assert_eq!(n.len(), 100);
        // A uniform sample of 0..10000 has a mean near 5000.
        let mean = n.sorted.iter().sum::<f64>() / 100.0;
        assert!((3500.0..6500.0).contains(&mean), "{mean}");
    }

    #[test]
    fn categories_beyond_the_cap_pool_into_overflow() {
        let f = Feature {
            column_type: ColumnType::Categorical,
            ..numeric_feature()
        };
        let mut w = FeatureWindow::new(&f);
        let mut rng = Rng::new(1);
        for i in 0..(MAX_CATEGORIES + 5) {
            w.add(&Value::Cat(Key::Str(format!("c{i}"))), 10, &mut rng);
        }
        let Sample::Categorical(c) = w.sample(false) else {
            panic!("categorical")
        };
        assert_eq!(c.distinct(), MAX_CATEGORIES + 1);
        assert_eq!(c.total, (MAX_CATEGORIES + 5) as u64);
    }
}
