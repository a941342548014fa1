//! The alert state machine, shared by the collector (live gauges) and
//! `driftwatch rules test` (synthetic series): inactive → pending (the
//! condition holds, `for:` not yet elapsed) → firing → resolved (the
//! condition, or the resolve threshold once firing, stopped holding for
//! longer than `keep_firing_for`). An alert's identity is its label set,
//! kept across evaluations and, through `alerts()` / `restore()`, restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Group, Rule, RuleSet, Threshold};
use crate::alert::{self, Alert, State};
use crate::clock::rfc3339;
use crate::export::Series;
use crate::window::WindowInfo;

/// Everything one evaluation sees.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub series: Vec<Series>,
    pub windows: Vec<WindowInfo>,
    /// Models not judged now whose alerts keep their state (cluster mode:
    /// an owner still reading the model's records, or waiting for a
    /// partition's windows).
    pub waiting: BTreeSet<String>,
}

/// What changed in one evaluation, for notifications.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Firing(Alert),
    /// The alert as it was when it resolved, and when.
    Resolved(Alert, i64),
}

/// Looks up a calibrated threshold for a rule and a series (None: unknown yet).
pub type Calibration<'a> = &'a dyn Fn(&Rule, &Series) -> Option<f64>;

#[derive(Debug, Default)]
pub struct Engine {
    alerts: BTreeMap<String, Alert>,
    last_eval_ms: HashMap<String, i64>,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Active (pending and firing) alerts, by identity.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Active alerts, to change their notification bookkeeping.
    pub fn alerts_mut(&mut self) -> impl Iterator<Item = &mut Alert> {
        self.alerts.values_mut()
    }

    /// Keeps only the alerts `keep` says (cluster mode: those of the models
    /// this collector owns), forgetting the others without a change.
    pub fn retain(&mut self, keep: impl Fn(&Alert) -> bool) {
        self.alerts.retain(|_, a| keep(a));
    }

    /// Takes back alerts saved before a restart, timers included.
    pub fn restore(&mut self, alerts: Vec<Alert>) {
        for a in alerts {
            self.alerts.insert(a.key(), a);
        }
    }

    /// Evaluates every group that is due at `now_ms` (each group's own
    /// interval, `default_interval_ms` when it has none).
    pub fn evaluate(
        &mut self,
        rules: &RuleSet,
        now_ms: i64,
        default_interval_ms: i64,
        snap: &Snapshot,
        calibration: Calibration<'_>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for group in &rules.groups {
            let interval = group
                .interval
                .map_or(default_interval_ms, |d| d.as_millis() as i64);
            if self
                .last_eval_ms
                .get(&group.name)
                .is_some_and(|&last| now_ms - last < interval)
            {
                continue;
            }
            self.last_eval_ms.insert(group.name.clone(), now_ms);
            for rule in &group.rules {
                self.evaluate_rule(group, rule, now_ms, snap, calibration, &mut changes);
            }
        }
        // Alerts of rules (or groups) that no longer exist resolve.
        let live: BTreeSet<(&str, &str)> = rules
            .groups
            .iter()
            .flat_map(|g| {
                g.rules
                    .iter()
                    .map(move |r| (g.name.as_str(), r.alert.as_str()))
            })
            .collect();
        let gone: Vec<String> = self
            .alerts
            .iter()
            .filter(|(_, a)| !live.contains(&(a.group.as_str(), a.name())))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(a) = self.alerts.remove(&k) {
                if a.state == State::Firing {
                    changes.push(Change::Resolved(a, now_ms));
                }
            }
        }
        changes
    }

    fn evaluate_rule(
        &mut self,
        group: &Group,
        rule: &Rule,
        now_ms: i64,
        snap: &Snapshot,
        calibration: Calibration<'_>,
        changes: &mut Vec<Change>,
    ) {
        let mut judged: BTreeSet<String> = BTreeSet::new();
        for s in snap.series.iter().filter(|s| matches(rule, s)) {
            let labels = alert_labels(rule, s);
            let k = alert::key(&group.name, &labels);
            // Not judged: too few samples, or no calibrated threshold yet.
            judged.insert(k.clone());
            if rule.min_samples > 0 && rule.metric.windowed {
                let samples = window_samples(snap, s);
                if samples.is_none_or(|n| n < rule.min_samples as f64) {
                    continue;
                }
            }
            let threshold = match rule.threshold {
                Threshold::Value(t) => t,
                Threshold::Calibrated { .. } => match calibration(rule, s) {
                    Some(t) => t,
                    None => continue,
                },
            };
            let existing = self.alerts.get(&k);
            let firing = existing.is_some_and(|a| a.state == State::Firing);
            let holds = match (firing, rule.resolve_threshold) {
                (true, Some(r)) => rule.op.holds(s.value, r),
                _ => rule.op.holds(s.value, threshold),
            };
            let annotate = |a: &Alert| render(rule, a, s, snap);
            let top = window_info(snap, s)
                .map(|w| w.top_features.clone())
                .unwrap_or_default();
            match (existing.cloned(), holds) {
                (None, true) => {
                    let mut a = Alert {
                        group: group.name.clone(),
                        labels,
                        annotations: BTreeMap::new(),
                        state: State::Pending,
                        active_since_ms: now_ms,
                        fired_at_ms: None,
                        last_true_ms: now_ms,
                        value: s.value,
                        threshold,
                        receivers: rule.receivers.clone(),
                        top_features: top,
                        silenced: false,
                        actions: rule.actions.clone(),
                        actions_done: false,
                    };
                    if rule.for_.is_zero() {
                        a.state = State::Firing;
                        a.fired_at_ms = Some(now_ms);
                    }
                    a.annotations = annotate(&a);
                    if a.state == State::Firing {
                        changes.push(Change::Firing(a.clone()));
                    }
                    self.alerts.insert(k, a);
                }
                (Some(mut a), true) => {
                    a.value = s.value;
                    a.threshold = threshold;
                    a.last_true_ms = now_ms;
                    a.receivers = rule.receivers.clone();
                    a.actions = rule.actions.clone();
                    a.top_features = top;
                    let due = now_ms - a.active_since_ms >= rule.for_.as_millis() as i64;
                    let fires = a.state == State::Pending && due;
                    if fires {
                        a.state = State::Firing;
                        a.fired_at_ms = Some(now_ms);
                    }
                    a.annotations = annotate(&a);
                    if fires {
                        changes.push(Change::Firing(a.clone()));
                    }
                    self.alerts.insert(k, a);
                }
                (Some(mut a), false) => {
                    a.value = s.value;
                    self.quiet(k, a, rule, now_ms, changes);
                }
                (None, false) => {}
            }
        }
        // Series that vanished: the condition no longer holds for them.
        let stale: Vec<(String, Alert)> = self
            .alerts
            .iter()
            .filter(|(k, a)| {
                a.group == group.name
                    && a.name() == rule.alert
                    && !judged.contains(*k)
                    && !a
                        .labels
                        .get("model")
                        .is_some_and(|m| snap.waiting.contains(m))
            })
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        for (k, a) in stale {
            self.quiet(k, a, rule, now_ms, changes);
        }
    }

    /// The condition does not hold: a pending alert is dropped, a firing one
    /// resolves once `keep_firing_for` has passed since it last held.
    fn quiet(&mut self, k: String, a: Alert, rule: &Rule, now_ms: i64, changes: &mut Vec<Change>) {
        match a.state {
            State::Pending => {
                self.alerts.remove(&k);
            }
            State::Firing if now_ms - a.last_true_ms >= rule.keep_firing_for.as_millis() as i64 => {
                self.alerts.remove(&k);
                changes.push(Change::Resolved(a, now_ms));
            }
            State::Firing => {
                self.alerts.insert(k, a);
            }
        }
    }
}

/// Whether a series is one the rule judges.
fn matches(rule: &Rule, s: &Series) -> bool {
    let eq =
        |key: &str, want: &Option<String>| want.as_deref().is_none_or(|w| s.label(key) == Some(w));
    s.metric == rule.metric.name
        && eq("model", &rule.model)
        && (!rule.metric.windowed || eq("window", &rule.window))
        && eq("test", &rule.test)
        && eq("role", &rule.role)
        && eq("metric", &rule.performance)
        && eq("quantile", &rule.quantile)
        && rule
            .features
            .as_ref()
            .is_none_or(|f| s.label("feature").is_some_and(|x| f.iter().any(|w| w == x)))
}

fn window_samples(snap: &Snapshot, s: &Series) -> Option<f64> {
    snap.series
        .iter()
        .find(|w| {
            w.metric == "driftwatch_window_samples"
                && w.label("model") == s.label("model")
                && w.label("window") == s.label("window")
        })
        .map(|w| w.value)
}

/// The alert's labels: its name and severity, the series' labels, the rule's.
fn alert_labels(rule: &Rule, s: &Series) -> BTreeMap<String, String> {
    let mut labels = s.labels.clone();
    labels.insert("alertname".into(), rule.alert.clone());
    labels.insert("severity".into(), rule.severity.clone());
    for (k, v) in &rule.labels {
        labels.insert(k.clone(), v.clone());
    }
    labels
}

/// The context of the window a series belongs to.
fn window_info<'a>(snap: &'a Snapshot, s: &Series) -> Option<&'a WindowInfo> {
    snap.windows.iter().find(|w| {
        Some(w.model.as_str()) == s.label("model") && Some(w.window.as_str()) == s.label("window")
    })
}

/// Renders the rule's annotations for an alert. A template that fails at
/// render time yields its error as the text, so the alert still goes out.
fn render(rule: &Rule, a: &Alert, s: &Series, snap: &Snapshot) -> BTreeMap<String, String> {
    let info = window_info(snap, s);
    let top: Vec<minijinja::Value> = info
        .map(|w| {
            w.top_features
                .iter()
                .map(|(name, test, value)| {
                    minijinja::context! { name => name, test => test, value => value }
                })
                .collect()
        })
        .unwrap_or_default();
    let ctx = minijinja::context! {
        alertname => rule.alert,
        severity => rule.severity,
        model => s.label("model"),
        window => s.label("window"),
        feature => s.label("feature"),
        role => s.label("role"),
        test => s.label("test"),
        metric => rule.metric.name,
        value => a.value,
        threshold => a.threshold,
        op => rule.op.as_str(),
        labels => a.labels,
        window_start => info.map(|w| w.start.clone()),
        window_end => info.map(|w| w.end.clone()),
        since => rfc3339(a.active_since_ms),
        top_features => top,
    };
    let env = minijinja::Environment::new();
    rule.annotations
        .iter()
        .map(|(k, text)| {
            let out = env
                .render_str(text, &ctx)
                .unwrap_or_else(|e| format!("(template error: {e})"));
            (k.clone(), out)
        })
        .collect()
}

/// Window contexts from the series alone (for rule tests): per model and
/// window, the features whose drift is detected, each with its largest
/// drift score, most drifted first; no window bounds.
pub fn windows_from_series(series: &[Series]) -> Vec<WindowInfo> {
    let mut out: Vec<WindowInfo> = Vec::new();
    for s in series
        .iter()
        .filter(|s| s.metric == "driftwatch_feature_drift_detected" && s.value == 1.0)
    {
        let (Some(model), Some(window), Some(feature)) =
            (s.label("model"), s.label("window"), s.label("feature"))
        else {
            continue;
        };
        let score = series
            .iter()
            .filter(|d| {
                d.metric == "driftwatch_feature_drift_score"
                    && d.label("model") == Some(model)
                    && d.label("window") == Some(window)
                    && d.label("feature") == Some(feature)
            })
            .max_by(|a, b| a.value.total_cmp(&b.value));
        let pos = out
            .iter()
            .position(|w| w.model == model && w.window == window);
        let info = match pos {
            Some(i) => &mut out[i],
            None => {
                out.push(WindowInfo {
                    model: model.to_string(),
                    window: window.to_string(),
                    ..WindowInfo::default()
                });
                out.last_mut().expect("just pushed")
            }
        };
        info.top_features.push((
            feature.to_string(),
            score
                .and_then(|d| d.label("test"))
                .unwrap_or("")
                .to_string(),
            score.map_or(f64::NAN, |d| d.value),
        ));
    }
    for w in &mut out {
        w.top_features.sort_by(|a, b| b.2.total_cmp(&a.2));
    }
    out
}
