//! Alerting in cluster mode. A model's alerts are judged by the collector
//! that owns the model, and their state travels with the model: after
//! every evaluation the owner writes the model's alert states, its
//! aggregation groups, its action cooldowns and the notifications it has
//! decided but not yet queued to the alerts bucket (one entry per model,
//! written only by naming the revision it last wrote, so a collector that
//! lost the model cannot overwrite its new owner), and only then queues
//! those notifications on the cluster's work queue, each with an id made
//! of its receiver and content. A new owner takes that entry before it
//! judges the model: `for` clocks, firing alerts, groups and cooldowns go
//! on where they were, and what the old owner decided but may not have
//! queued is queued again under the same id, which the queue stores once.
//! Alerts without a model (about the collector itself) stay local.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;
use serde::{Deserialize, Serialize};

use super::engine::Engine;
use crate::alert::Alert;
use crate::bus::{token, Bucket, BusHandle, Entry};
use crate::notify::action::Cooldowns;
use crate::notify::fingerprint;
use crate::notify::group::{Group, Groups};
use crate::notify::silence::Silence;
use crate::store::NewNotification;

/// What alerting needs of the cluster.
pub struct Cluster {
    /// The bus, once connected.
    pub bus: BusHandle,
    /// Whether this collector owns a model now (and may act for it).
    pub owns: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Whether a model's windows are whole here (its records read, every
    /// partition's state at hand): an owned model that is not waits.
    pub complete: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// The models of the configuration.
    pub models: Vec<String>,
    /// The models whose alert state this collector took, by name.
    adopted: Mutex<HashMap<String, Adopted>>,
}

/// A model's alert state as this collector last wrote or read it.
#[derive(Debug, Default)]
struct Adopted {
    /// The entry's revision (`None`: there was no entry).
    revision: Option<u64>,
    /// What was last written, to skip writing the same again.
    written: Bytes,
    /// Notifications decided and stored but not yet queued.
    unsent: Vec<Unsent>,
}

/// A notification on its way to the work queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsent {
    pub id: String,
    pub receiver: String,
    pub payload: String,
}

/// A model's entry in the alerts bucket.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ModelState {
    alerts: Vec<Alert>,
    groups: BTreeMap<String, Group>,
    cooldowns: BTreeMap<String, i64>,
    unsent: Vec<Unsent>,
}

/// The key of the cluster's silences in the alerts bucket (a model's key
/// never holds a dot).
const SILENCES: &str = "silences.all";

/// Failures logged once a minute per cause.
static FAILURES: LazyLock<Repeats> = LazyLock::new(Repeats::default);

/// The model an alert is about, if any.
fn model_of(a: &Alert) -> Option<&str> {
    a.labels.get("model").map(String::as_str)
}

/// The model of a group (cluster mode groups by model).
fn group_model(g: &Group) -> Option<&str> {
    g.labels.get("model").map(String::as_str)
}

/// The model of a cooldown key (`action \x1f model \x1f rule`).
fn cooldown_model(key: &str) -> Option<&str> {
    key.split('\u{1f}').nth(1)
}

/// Runs `f` to completion from the rule evaluation's blocking thread.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|h| h.block_on(f))
}

impl Cluster {
    pub fn new(
        bus: BusHandle,
        owns: Arc<dyn Fn(&str) -> bool + Send + Sync>,
        complete: Arc<dyn Fn(&str) -> bool + Send + Sync>,
        models: Vec<String>,
    ) -> Cluster {
        Cluster {
            bus,
            owns,
            complete,
            models,
            adopted: Mutex::new(HashMap::new()),
        }
    }

    /// The models this collector owns whose windows are not whole yet:
    /// not judged, their alerts keep their state.
    pub fn waiting(&self) -> std::collections::BTreeSet<String> {
        self.models
            .iter()
            .filter(|m| (self.owns)(m) && !(self.complete)(m))
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Adopted>> {
        self.adopted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before an evaluation: takes the stored alert state of each model
    /// this collector came to own, and forgets (without a change) the
    /// state of every model it does not own. Returns whether a model's
    /// series may be judged now.
    pub fn adopt(
        &self,
        engine: &mut Engine,
        groups: &mut Groups,
        cooldowns: &mut Cooldowns,
    ) -> impl Fn(Option<&str>) -> bool {
        let bus = (self.bus)();
        let mut adopted = self.lock();
        adopted.retain(|m, _| (self.owns)(m));
        let mut taken = Vec::new();
        for m in self.models.iter().filter(|m| (self.owns)(m)) {
            if adopted.contains_key(m) {
                continue;
            }
            let Some(bus) = &bus else { break };
            match block_on(bus.get(Bucket::Alerts, token(m))) {
                Some(Ok(entry)) => {
                    let state = entry
                        .as_ref()
                        .and_then(|e| serde_json::from_slice::<ModelState>(&e.value).ok());
                    if entry.is_some() && state.is_none() {
                        tracing::warn!(
                            model = %m,
                            "cluster: the stored alert state of model {m} could not be read; its alerts start afresh"
                        );
                    }
                    let state = state.unwrap_or_default();
                    adopted.insert(
                        m.clone(),
                        Adopted {
                            revision: entry.as_ref().map(|e| e.revision),
                            written: entry.map(|e| e.value).unwrap_or_default(),
                            unsent: state.unsent.clone(),
                        },
                    );
                    tracing::info!(
                        model = %m,
                        alerts = state.alerts.len(),
                        "cluster: took the alert state of model {m} ({} alerts, {} groups)",
                        state.alerts.len(),
                        state.groups.len()
                    );
                    taken.push(state);
                }
                Some(Err(e)) => throttled!(
                    FAILURES,
                    "read",
                    tracing::Level::WARN,
                    {},
                    "cluster: cannot read the alert state of model {m} yet: {e}"
                ),
                None => {}
            }
        }
        let keep: std::collections::HashSet<String> = adopted.keys().cloned().collect();
        let keeps = move |m: Option<&str>| m.is_none_or(|m| keep.contains(m));
        engine.retain(|a| keeps(model_of(a)));
        groups.groups.retain(|_, g| keeps(group_model(g)));
        cooldowns.last_ms.retain(|k, _| keeps(cooldown_model(k)));
        for state in taken {
            engine.restore(state.alerts);
            groups.groups.extend(state.groups);
            cooldowns.last_ms.extend(state.cooldowns);
        }
        keeps
    }

    /// After an evaluation: stores each owned model's state with the
    /// notifications decided for it, then queues them. Returns the
    /// notifications of alerts without a model, for the local outbox.
    pub fn store(
        &self,
        engine: &Engine,
        groups: &Groups,
        cooldowns: &Cooldowns,
        queued: Vec<NewNotification>,
    ) -> Vec<NewNotification> {
        let mut adopted = self.lock();
        let mut local = Vec::new();
        for n in queued {
            let owner = n.model.as_ref().and_then(|m| adopted.get_mut(m));
            match owner {
                Some(a) => a.unsent.push(Unsent {
                    id: fingerprint(&format!("{}\u{1f}{}", n.receiver, n.payload)),
                    receiver: n.receiver,
                    payload: n.payload,
                }),
                None if n.model.is_none() => local.push(n),
                // Decided for a model this collector no longer holds: its
                // new owner decides again from the stored state.
                None => {}
            }
        }
        let Some(bus) = (self.bus)() else {
            return local;
        };
        let mut lost = Vec::new();
        for (m, a) in adopted.iter_mut() {
            let state = ModelState {
                alerts: engine
                    .alerts()
                    .filter(|x| model_of(x) == Some(m))
                    .cloned()
                    .collect(),
                groups: groups
                    .groups
                    .iter()
                    .filter(|(_, g)| group_model(g) == Some(m))
                    .map(|(k, g)| (k.clone(), g.clone()))
                    .collect(),
                cooldowns: cooldowns
                    .last_ms
                    .iter()
                    .filter(|(k, _)| cooldown_model(k) == Some(m))
                    .map(|(k, t)| (k.clone(), *t))
                    .collect(),
                unsent: a.unsent.clone(),
            };
            let value = Bytes::from(serde_json::to_vec(&state).unwrap_or_default());
            if value != a.written {
                // Fenced: a collector past its lease neither writes nor queues.
                if !(self.owns)(m) {
                    lost.push(m.clone());
                    continue;
                }
                let write = match a.revision {
                    Some(revision) => bus.update(
                        Bucket::Alerts,
                        Entry {
                            key: token(m),
                            value: value.clone(),
                            revision,
                        },
                    ),
                    None => bus.create(Bucket::Alerts, token(m), value.clone()),
                };
                match block_on(write) {
                    Some(Ok(Some(revision))) => {
                        a.revision = Some(revision);
                        a.written = value;
                    }
                    Some(Ok(None)) => {
                        tracing::warn!(
                            model = %m,
                            "cluster: another collector wrote the alert state of model {m}; this one lets it go"
                        );
                        lost.push(m.clone());
                        continue;
                    }
                    Some(Err(e)) => {
                        throttled!(
                            FAILURES,
                            "write",
                            tracing::Level::WARN,
                            {},
                            "cluster: cannot store the alert state of model {m} (its notifications wait): {e}"
                        );
                        continue;
                    }
                    None => continue,
                }
            }
            // Stored: now queue what was decided (stored once per id).
            let mut sent = 0;
            for u in &a.unsent {
                let job = Bytes::from(serde_json::to_vec(u).unwrap_or_default());
                match block_on(bus.enqueue(u.id.clone(), job)) {
                    Some(Ok(_)) => sent += 1,
                    Some(Err(e)) => {
                        throttled!(
                            FAILURES,
                            "queue",
                            tracing::Level::WARN,
                            {},
                            "cluster: cannot queue a notification of model {m} yet: {e}"
                        );
                        break;
                    }
                    None => break,
                }
            }
            a.unsent.drain(..sent);
        }
        for m in lost {
            adopted.remove(&m);
        }
        local
    }

    /// The cluster's silences, as last stored (`None`: not readable now).
    pub fn silences(&self) -> Option<Vec<Silence>> {
        let bus = (self.bus)()?;
        match block_on(bus.get(Bucket::Alerts, SILENCES.into()))? {
            Ok(Some(e)) => serde_json::from_slice(&e.value).ok(),
            Ok(None) => Some(Vec::new()),
            Err(_) => None,
        }
    }

    /// Changes the cluster's silences with `change` (which says whether it
    /// changed anything), written by naming the revision read, again if
    /// another collector wrote meanwhile. The silences after.
    pub async fn change_silences(
        &self,
        change: impl Fn(&mut Vec<Silence>) -> bool,
    ) -> Result<(Vec<Silence>, bool), String> {
        let bus = (self.bus)().ok_or("not connected to the cluster's NATS servers yet")?;
        for _ in 0..16 {
            let entry = bus
                .get(Bucket::Alerts, SILENCES.into())
                .await
                .map_err(|e| e.to_string())?;
            let mut list: Vec<Silence> = match &entry {
                Some(e) => serde_json::from_slice(&e.value).map_err(|e| e.to_string())?,
                None => Vec::new(),
            };
            if !change(&mut list) {
                return Ok((list, false));
            }
            let value = Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
            let written = match entry {
                Some(e) => {
                    bus.update(
                        Bucket::Alerts,
                        Entry {
                            key: SILENCES.into(),
                            value,
                            revision: e.revision,
                        },
                    )
                    .await
                }
                None => bus.create(Bucket::Alerts, SILENCES.into(), value).await,
            };
            if written.map_err(|e| e.to_string())?.is_some() {
                return Ok((list, true));
            }
        }
        Err("the silences kept changing under this write; try again".into())
    }

    /// Every model's alerts as their owners last stored them.
    pub async fn stored_alerts(&self) -> Result<Vec<Alert>, String> {
        let bus = (self.bus)().ok_or("not connected to the cluster's NATS servers yet")?;
        let entries = bus
            .entries(Bucket::Alerts)
            .await
            .map_err(|e| e.to_string())?;
        Ok(entries
            .into_iter()
            .filter(|e| e.key != SILENCES)
            .filter_map(|e| serde_json::from_slice::<ModelState>(&e.value).ok())
            .flat_map(|s| s.alerts)
            .collect())
    }
}
