//! Rules in the running collector: loaded at start (a broken file stops the
//! start), reloaded on SIGHUP, on `POST /-/reload` and when a file changes
//! (a broken file is refused, logged and exposed, and the previous rules
//! keep running), evaluated after every window evaluation against the
//! exported gauges, with alert states saved to SQLite so that pending
//! `for:` timers and firing alerts survive a restart. Changes are routed
//! through `notify` (groups, Alertmanager pushes, actions, silences) and
//! queued in the same transaction; delivery follows the receivers of the
//! rules running now (`routing()`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde_json::json;

use driftwatch_telemetry::{throttled, Telemetry};
use tokio::sync::watch;

use super::engine::{Change, Engine, Snapshot};
use super::{calibrate, Rule, RuleErrors, RuleSet, Threshold};
use crate::alert::{Alert, State};
use crate::clock::{now_ms, rfc3339};
use crate::export::metrics::Metrics;
use crate::export::Series;
use crate::models::Model;
use crate::notify::action::{self, Cooldowns};
use crate::notify::group::Groups;
use crate::notify::silence::Silence;
use crate::notify::{alertmanager, Routing};
use crate::stats::TestKind;
use crate::store::{AlertSave, Store, StoreError};
use crate::window::WindowInfo;

/// What the rules runtime works with besides its rule files.
pub struct Handles {
    /// The watched models (references for evidence and calibration).
    pub models: Arc<[Model]>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub telemetry: Arc<Telemetry>,
    /// Where users reach the collector, for links in notifications.
    pub external_url: Option<String>,
    /// Cluster mode: models' alert states travel with their ownership.
    pub cluster: Option<super::cluster::Cluster>,
    /// Experiments' latest looks, for actions' evidence.
    pub experiments: Option<Arc<crate::experiment::registry::Experiments>>,
}

pub struct Alerting {
    files: Vec<PathBuf>,
    rules: RwLock<Arc<RuleSet>>,
    engine: Mutex<Engine>,
    status: Mutex<Status>,
    /// Evaluation cadence for groups without their own `interval`.
    default_interval_ms: i64,
    /// Calibrated thresholds by model, column, test, chunks and sigmas.
    calibrated: Mutex<HashMap<String, Option<f64>>>,
    /// Aggregation groups, action cooldowns and Alertmanager resend times.
    notify: Mutex<NotifyState>,
    silences: RwLock<Vec<Silence>>,
    /// The routing of the rules running now, for delivery.
    routing: watch::Sender<Arc<Routing>>,
    h: Handles,
}

/// What routing remembers between evaluations (all but `resent` is stored).
#[derive(Debug, Default)]
struct NotifyState {
    groups: Groups,
    cooldowns: Cooldowns,
    /// When each firing alert was last sent to each Alertmanager receiver.
    resent: HashMap<String, i64>,
}

/// The outcome of the last (re)load, for the API.
#[derive(Debug, Clone, Default)]
struct Status {
    loaded_at_ms: i64,
    error: Option<String>,
    mtimes: Vec<Option<SystemTime>>,
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

impl Alerting {
    /// Loads the rule files; any problem refuses the start.
    pub fn load(
        files: Vec<PathBuf>,
        default_interval_ms: i64,
        h: Handles,
    ) -> Result<Alerting, RuleErrors> {
        let set = for_cluster(super::load_files(&files)?, &h);
        h.metrics
            .rules_reloads
            .with_label_values(&["success"])
            .inc();
        h.metrics.rules_reload_success.set(1.0);
        let (routing, _) = watch::channel(set.routing.clone());
        Ok(Alerting {
            status: Mutex::new(Status {
                loaded_at_ms: now_ms(),
                error: None,
                mtimes: mtimes(&files),
            }),
            files,
            rules: RwLock::new(Arc::new(set)),
            engine: Mutex::new(Engine::new()),
            default_interval_ms,
            calibrated: Mutex::new(HashMap::new()),
            notify: Mutex::new(NotifyState::default()),
            silences: RwLock::new(Vec::new()),
            routing,
            h,
        })
    }

    /// The receivers and actions of the rules running now, updated at
    /// every reload (what delivery follows).
    pub fn routing(&self) -> watch::Receiver<Arc<Routing>> {
        self.routing.subscribe()
    }

    /// Takes back the alerts and silences stored before a restart.
    pub fn restore(&self) {
        let store = &self.h.store;
        match store.silences() {
            Ok(rows) => {
                *self.silences.write().unwrap_or_else(|p| p.into_inner()) = rows
                    .iter()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect();
            }
            Err(e) => tracing::error!("cannot read the stored silences: {e}"),
        }
        let stored = match store.alerts() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("cannot read the stored alerts: {e}");
                return;
            }
        };
        let alerts: Vec<Alert> = stored
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect();
        if alerts.len() < stored.len() {
            tracing::warn!(
                "{} stored alerts could not be read and were dropped",
                stored.len() - alerts.len()
            );
        }
        self.lock_engine().restore(alerts);
        match store.notify_state() {
            Ok(rows) => {
                let mut n = self.notify.lock().unwrap_or_else(|p| p.into_inner());
                for (key, json) in rows {
                    let read = match key.as_str() {
                        "groups" => serde_json::from_str(&json).map(|g| n.groups = g),
                        "cooldowns" => serde_json::from_str(&json).map(|c| n.cooldowns = c),
                        _ => Ok(()),
                    };
                    if let Err(e) = read {
                        tracing::warn!("the stored notification {key} could not be read ({e}); starting afresh");
                    }
                }
            }
            Err(e) => tracing::error!("cannot read the stored notification state: {e}"),
        }
        self.publish();
    }

    fn lock_engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reloads every rule file; on any problem the previous rules stay.
    pub fn reload(&self) -> Result<(), RuleErrors> {
        let metrics = &self.h.metrics;
        let result = super::load_files(&self.files).map(|set| for_cluster(set, &self.h));
        let mut status = self.lock_status();
        status.mtimes = mtimes(&self.files);
        status.loaded_at_ms = now_ms();
        match result {
            Ok(set) => {
                self.routing.send_replace(set.routing.clone());
                *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                status.error = None;
                metrics.rules_reloads.with_label_values(&["success"]).inc();
                metrics.rules_reload_success.set(1.0);
                tracing::info!("rules reloaded from {} file(s)", self.files.len());
                Ok(())
            }
            Err(errors) => {
                status.error = Some(errors.to_string());
                metrics.rules_reloads.with_label_values(&["failure"]).inc();
                metrics.rules_reload_success.set(0.0);
                tracing::error!("rules not reloaded, the previous rules keep running:\n{errors}");
                Err(errors)
            }
        }
    }

    /// Reloads when a rule file's modification time changed.
    pub fn reload_if_changed(&self) {
        let changed = self.lock_status().mtimes != mtimes(&self.files);
        if changed {
            let _ = self.reload();
        }
    }

    /// One evaluation after the windows': reloads changed files, judges the
    /// live windows' gauges and routes what changed (blocking: run it off
    /// the reactor).
    pub fn evaluate(&self, windows: Vec<WindowInfo>) {
        use driftwatch_telemetry::{KeyValue, SpanKind};
        let started = std::time::SystemTime::now();
        self.reload_if_changed();
        let live = windows.len() as i64;
        self.tick(windows);
        self.h.telemetry.span(
            "evaluate rules",
            SpanKind::Internal,
            None,
            started,
            std::time::SystemTime::now(),
            vec![
                KeyValue::new("driftwatch.live_windows", live),
                KeyValue::new("driftwatch.alerts_firing", self.firing_count() as i64),
            ],
            None,
        );
    }

    /// Evaluates the rules against the current gauges, then routes the
    /// changes: aggregation groups, Alertmanager pushes and actions, saved
    /// with the alert states in one transaction.
    fn tick(&self, windows: Vec<WindowInfo>) {
        let metrics = &self.h.metrics;
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut series = metrics.gauge_series();
        let mut waiting = std::collections::BTreeSet::new();
        if let Some(c) = &self.h.cluster {
            // Only the models whose alert state this collector holds.
            let mut engine = self.lock_engine();
            let mut n = self.notify.lock().unwrap_or_else(|p| p.into_inner());
            let n = &mut *n;
            let judged = c.adopt(&mut engine, &mut n.groups, &mut n.cooldowns);
            // Owned models not evaluated yet keep their alerts as they are.
            waiting = c.waiting();
            series.retain(|s| {
                judged(s.label("model")) && !s.label("model").is_some_and(|m| waiting.contains(m))
            });
            // Silences made at any collector.
            if let Some(list) = c.silences() {
                *self.silences.write().unwrap_or_else(|p| p.into_inner()) = list;
            }
        }
        let snap = Snapshot {
            series,
            windows,
            waiting,
        };
        let now = now_ms();
        let silences = self
            .silences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let silenced = |labels: &std::collections::BTreeMap<String, String>| {
            silences.iter().any(|s| s.silences(labels, now))
        };
        let reference = |model: &str| {
            self.h
                .models
                .iter()
                .find(|m| m.name == model)
                .map_or(serde_json::Value::Null, |m| json!(m.reference))
        };
        let (changes, save, outcomes) = {
            let mut engine = self.lock_engine();
            let calibration = |rule: &Rule, s: &Series| self.calibrated_threshold(rule, s);
            let changes =
                engine.evaluate(&rules, now, self.default_interval_ms, &snap, &calibration);
            for a in engine.alerts_mut() {
                let muted = a.state == State::Firing && silenced(&a.labels);
                if muted && !a.silenced {
                    metrics.notifications_silenced.inc();
                }
                a.silenced = muted;
            }
            let resolved: Vec<(&Alert, i64)> = changes
                .iter()
                .filter_map(|c| match c {
                    Change::Resolved(a, at) if !silenced(&a.labels) => Some((a, *at)),
                    _ => None,
                })
                .collect();
            let mut n = self.notify.lock().unwrap_or_else(|p| p.into_inner());
            let n = &mut *n;
            let mut firing: Vec<&mut Alert> = engine
                .alerts_mut()
                .filter(|a| a.state == State::Firing && !a.silenced)
                .collect();
            let experiment = |name: &str| {
                self.h
                    .experiments
                    .as_ref()
                    .and_then(|x| x.report(name))
                    .map_or(serde_json::Value::Null, |r| json!(r))
            };
            let cx = action::Context {
                windows: &snap.windows,
                reference: &reference,
                experiment: &experiment,
                external_url: self.h.external_url.as_deref(),
                now_ms: now,
            };
            let (calls, outcomes) = n.cooldowns.calls(&rules.routing, &mut firing, &cx);
            let firing: Vec<&Alert> = firing.into_iter().map(|a| &*a).collect();
            let mut queued = n.groups.step(&rules.routing, &firing, &resolved, now);
            queued.extend(alertmanager::push::pushes(
                &rules.routing,
                &firing,
                &resolved,
                &mut n.resent,
                now,
            ));
            queued.extend(calls);
            if let Some(c) = &self.h.cluster {
                queued = c.store(&engine, &n.groups, &n.cooldowns, queued);
            }
            let save = AlertSave {
                alerts: engine
                    .alerts()
                    .map(|a| (a.key(), serde_json::to_string(a).unwrap_or_default()))
                    .collect(),
                state: vec![
                    (
                        "groups".into(),
                        serde_json::to_string(&n.groups).unwrap_or_default(),
                    ),
                    (
                        "cooldowns".into(),
                        serde_json::to_string(&n.cooldowns).unwrap_or_default(),
                    ),
                ],
                notifications: queued,
            };
            (changes, save, outcomes)
        };
        for change in &changes {
            log_change(change);
        }
        for o in outcomes {
            metrics
                .actions
                .with_label_values(&[o.action.as_str(), o.model.as_str(), o.outcome])
                .inc();
        }
        self.publish();
        if let Err(e) = self.h.store.save_alerts_blocking(save) {
            throttled!(
                crate::store::FAILURES_LOGGED,
                "store alert states",
                tracing::Level::ERROR,
                {},
                "storing alert states and notifications failed: {e}"
            );
        }
    }

    /// Adds a silence (stored first, so it survives a restart; in cluster
    /// mode stored for the whole cluster).
    pub async fn add_silence(&self, silence: Silence) -> Result<(), String> {
        if let Some(c) = &self.h.cluster {
            let (list, _) = c
                .change_silences(|list| {
                    list.retain(|s| s.id != silence.id);
                    list.push(silence.clone());
                    true
                })
                .await?;
            *self.silences.write().unwrap_or_else(|p| p.into_inner()) = list;
            return Ok(());
        }
        self.persist(&silence).await.map_err(|e| e.to_string())?;
        self.silences
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(silence);
        Ok(())
    }

    /// Ends a silence now; false when there is no such silence.
    pub async fn expire_silence(&self, id: &str) -> Result<bool, String> {
        let now = now_ms();
        let expire = |s: &mut Silence| {
            s.ends_at_ms = s.ends_at_ms.min(now);
            s.starts_at_ms = s.starts_at_ms.min(now);
        };
        if let Some(c) = &self.h.cluster {
            let (list, found) = c
                .change_silences(|list| list.iter_mut().find(|s| s.id == id).map(expire).is_some())
                .await?;
            *self.silences.write().unwrap_or_else(|p| p.into_inner()) = list;
            return Ok(found);
        }
        let found = {
            let list = self.silences.read().unwrap_or_else(|p| p.into_inner());
            list.iter().find(|s| s.id == id).cloned()
        };
        let Some(mut silence) = found else {
            return Ok(false);
        };
        expire(&mut silence);
        self.persist(&silence).await.map_err(|e| e.to_string())?;
        let mut list = self.silences.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = list.iter_mut().find(|s| s.id == id) {
            *s = silence;
        }
        Ok(true)
    }

    /// Stores a silence (new or changed).
    async fn persist(&self, silence: &Silence) -> Result<(), StoreError> {
        let json = serde_json::to_string(silence).unwrap_or_default();
        self.h.store.save_silence(silence.id.clone(), json).await
    }

    /// `GET /v1/silences`: every silence with its state, newest first.
    pub fn silences_json(&self) -> serde_json::Value {
        let now = now_ms();
        let mut list = self
            .silences
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        list.sort_by_key(|s| std::cmp::Reverse(s.starts_at_ms));
        let items: Vec<serde_json::Value> = list
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "state": s.state(now),
                    "matchers": s.matchers,
                    "starts_at": rfc3339(s.starts_at_ms),
                    "ends_at": rfc3339(s.ends_at_ms),
                    "created_by": s.created_by,
                    "comment": s.comment,
                })
            })
            .collect();
        json!({ "silences": items })
    }

    /// A rule's calibrated threshold for a series' column and test, computed
    /// from the model's reference once and kept.
    fn calibrated_threshold(&self, rule: &Rule, s: &Series) -> Option<f64> {
        let Threshold::Calibrated { sigmas, chunks } = rule.threshold else {
            return None;
        };
        let model = self
            .h
            .models
            .iter()
            .find(|m| Some(m.name.as_str()) == s.label("model"))?;
        let column = match s.label("feature") {
            Some(f) => model.features.iter().find(|x| x.name == f)?,
            None => &model.prediction.as_ref()?.reference,
        };
        let kind = TestKind::parse(s.label("test")?)?;
        let key = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{chunks}\u{1f}{sigmas}",
            model.name,
            column.name,
            kind.name()
        );
        let mut cache = self.calibrated.lock().unwrap_or_else(|p| p.into_inner());
        *cache.entry(key).or_insert_with(|| {
            let t = calibrate::threshold(&column.reference, kind, chunks, sigmas);
            if t.is_none() {
                tracing::warn!(
                    rule = %rule.alert,
                    model = %model.name,
                    "rule {}: no calibrated {} threshold for {}/{} (the reference is too small for {chunks} chunks); it is not judged",
                    rule.alert,
                    kind.name(),
                    model.name,
                    column.name
                );
            }
            t
        })
    }

    /// `driftwatch_alerts_firing`: firing alerts per name, model and severity.
    fn publish(&self) {
        let metrics = &self.h.metrics;
        let mut counts: std::collections::BTreeMap<[String; 3], f64> = Default::default();
        for a in self
            .lock_engine()
            .alerts()
            .filter(|a| a.state == State::Firing)
        {
            let get = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
            *counts
                .entry([get("alertname"), get("model"), get("severity")])
                .or_default() += 1.0;
        }
        metrics.alerts_firing.reset();
        for ([name, model, severity], n) in counts {
            metrics
                .alerts_firing
                .with_label_values(&[name.as_str(), model.as_str(), severity.as_str()])
                .set(n);
        }
    }

    /// How many alerts are firing now.
    pub fn firing_count(&self) -> usize {
        self.lock_engine()
            .alerts()
            .filter(|a| a.state == State::Firing)
            .count()
    }

    /// `GET /v1/alerts`: active alerts (in cluster mode every model's, as
    /// their owners stored them, and this collector's own).
    pub async fn alerts_json(&self) -> serde_json::Value {
        let mut alerts: Vec<Alert> = self.lock_engine().alerts().cloned().collect();
        if let Some(c) = &self.h.cluster {
            match c.stored_alerts().await {
                Ok(stored) => {
                    alerts.retain(|a| !a.labels.contains_key("model"));
                    alerts.extend(stored);
                }
                Err(e) => tracing::warn!(
                    "cluster: cannot read the other models' alerts ({e}); listing this collector's"
                ),
            }
        }
        let alerts: Vec<serde_json::Value> = alerts
            .iter()
            .map(|a| {
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "state": a.state,
                    "active_since": rfc3339(a.active_since_ms),
                    "fired_at": a.fired_at_ms.map(rfc3339),
                    "value": a.value,
                    "threshold": a.threshold,
                    "receivers": a.receivers,
                    "silenced": a.silenced,
                    "actions": a.actions,
                })
            })
            .collect();
        json!({ "alerts": alerts })
    }

    /// `GET /v1/rules`: the groups and rules running, and the last reload's outcome.
    pub fn rules_json(&self) -> serde_json::Value {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        let status = self.lock_status().clone();
        let groups: Vec<serde_json::Value> = rules
            .groups
            .iter()
            .map(|g| {
                json!({
                    "name": g.name,
                    "interval_seconds": g.interval.map(|d| d.as_secs_f64()),
                    "rules": g.rules.iter().map(|r| json!({
                        "alert": r.alert,
                        "model": r.model,
                        "metric": r.metric.name,
                        "window": r.window,
                        "condition": format!("{} {:?}", r.op.as_str(), r.threshold),
                        "for_seconds": r.for_.as_secs_f64(),
                        "severity": r.severity,
                        "receivers": r.receivers,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "files": self.files,
            "loaded_at": rfc3339(status.loaded_at_ms),
            "last_reload_error": status.error,
            "groups": groups,
        })
    }
}

/// Rules as cluster mode runs them: every route groups by model too, so
/// that a group's state is one model's and travels with it.
fn for_cluster(mut set: RuleSet, h: &Handles) -> RuleSet {
    if h.cluster.is_some() {
        let mut routing = (*set.routing).clone();
        routing.route.group_by_model();
        set.routing = Arc::new(routing);
    }
    set
}

/// One line per transition on standard error (notifications come from receivers).
fn log_change(change: &Change) {
    let (what, a) = match change {
        Change::Firing(a) => ("firing", a),
        Change::Resolved(a, _) => ("resolved", a),
    };
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let summary = a.annotations.get("summary").map_or("", String::as_str);
    tracing::info!(
        alertname = a.labels.get("alertname").map(String::as_str),
        model = a.labels.get("model").map(String::as_str),
        "alert {what}: {{{}}} value={} {summary}",
        labels.join(", "),
        a.value
    );
}
