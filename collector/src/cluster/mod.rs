//! Cluster mode: collectors that share one log split the models between
//! them. Every model has a lease in the leases bucket; the collector that
//! holds it (its owner) reads the model's records from the log into its
//! store and windows and evaluates them; the others only accept events and
//! answer queries (forwarding to the owner). A model split into P
//! partitions has a lease per partition (partition 0's is the model's):
//! each partition's owner reads that partition's records, and the owner
//! of partition 0 merges the other owners' partial windows into its own
//! before it evaluates (`partials.rs`). A lease lives for the lease
//! TTL unless its owner writes it again (every third of the TTL, naming
//! the revision it last wrote: a stale owner's write fails, so it notices).
//! Each model goes to one collector by rendezvous hashing over the members
//! alive, so that the models spread and a joining collector gets its share
//! (the owner releases what is no longer its own). When an owner dies its
//! lease expires and the next collector takes the model over: it reads the
//! model's records again from the start of the oldest window kept, so its
//! windows are what the dead owner's were.

pub mod follow;
pub mod partials;
mod placement;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::bus::nats::{Nats, Settings};
use crate::bus::{token, Bucket, Bus, BusError, Entry};
use crate::export::cluster::ClusterMetrics;
use crate::export::metrics::Metrics;
use crate::ingest::cluster::ClusterLog;
use crate::ingest::Ingest;
use crate::window::Live;
pub use placement::{host_name, lease_key, preferred};
use placement::{parse_lease_key, unit_name};

/// A collector as the members bucket lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// Where its API answers.
    pub url: String,
}

/// What `GET /v1/cluster` shows: this node, the members alive and who
/// owns each model (`MODEL`: its partition 0, which evaluates it) and each
/// partition of a split model (`MODEL/PARTITION`), as of the last round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    pub node: String,
    pub connected: bool,
    pub members: Vec<Member>,
    pub owners: BTreeMap<String, String>,
    /// Split models: the owner of each partition (`None`: none yet).
    #[serde(skip)]
    pub partitions: BTreeMap<String, Vec<Option<String>>>,
}

/// What a lease is of: one partition of one model (a model that is not
/// split has partition 0 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unit {
    model: usize,
    partition: usize,
}

/// This collector's hold on one lease.
#[derive(Default)]
struct Hold {
    /// The revision of the lease it last wrote (`Some`: it holds it).
    revision: Option<u64>,
    /// Since when nobody has held the lease, as seen from here.
    free_since: Option<Instant>,
}

/// This collector's reading of one model's records: the partitions it
/// reads and the task (whether it caught up is the model's `Live::ready`).
#[derive(Default)]
struct Reading {
    partitions: Vec<usize>,
    task: Option<JoinHandle<()>>,
}

/// The running cluster membership of one collector.
pub struct Cluster {
    pub node: String,
    pub url: String,
    settings: Settings,
    live: Arc<Live>,
    ingest: Arc<Ingest>,
    metrics: Arc<ClusterMetrics>,
    model_metrics: Arc<Metrics>,
    /// Every model's partitions, in model order.
    units: Vec<Unit>,
    /// Per unit.
    holds: Mutex<Vec<Hold>>,
    /// Per model.
    readings: Mutex<Vec<Reading>>,
    view: Mutex<View>,
    /// How far back a taken-over model's records are read, per model.
    retention: Vec<Duration>,
    /// For queries forwarded to a model's owner.
    http: reqwest::Client,
}

/// The header a forwarded query carries (so that it is not forwarded
/// again when ownership moved in between).
pub const FORWARDED: &str = "x-driftwatch-forwarded-by";

/// Failures of a round, logged once a minute per cause.
static ROUND_FAILURES: std::sync::LazyLock<Repeats> = std::sync::LazyLock::new(Repeats::default);

impl Cluster {
    /// A member that owns nothing yet; `run` connects and takes part.
    pub fn new(
        node: String,
        url: String,
        settings: Settings,
        ingest: Arc<Ingest>,
        metrics: Arc<Metrics>,
        retention: Vec<Duration>,
    ) -> Cluster {
        let live = ingest.live.clone();
        for mi in 0..live.models.len() {
            live.own_until(mi, None);
        }
        let units: Vec<Unit> = live
            .models
            .iter()
            .enumerate()
            .flat_map(|(model, m)| {
                (0..m.partitions.max(1)).map(move |partition| Unit { model, partition })
            })
            .collect();
        Cluster {
            metrics: Arc::new(ClusterMetrics::register(metrics.registry())),
            model_metrics: metrics,
            holds: Mutex::new(units.iter().map(|_| Hold::default()).collect()),
            readings: Mutex::new(live.models.iter().map(|_| Reading::default()).collect()),
            units,
            view: Mutex::new(View {
                node: node.clone(),
                ..View::default()
            }),
            settings: Settings {
                node: node.clone(),
                ..settings
            },
            node,
            url,
            live,
            ingest,
            retention,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Asks `model`'s owner for `path_and_query` with the caller's
    /// authorization: its status and body, or why it did not answer.
    pub async fn forward(
        &self,
        owner_url: &str,
        path_and_query: &str,
        authorization: Option<&str>,
    ) -> Result<(u16, Bytes), String> {
        let mut request = self
            .http
            .get(format!("{owner_url}{path_and_query}"))
            .header(FORWARDED, &self.node);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("the owner at {owner_url} did not answer: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("the owner at {owner_url} did not answer: {e}"))?;
        Ok((status, body))
    }

    fn log(&self) -> &ClusterLog {
        self.ingest
            .cluster
            .as_ref()
            .expect("a cluster's ingest appends to its log")
    }

    /// The members and owners as of the last round.
    pub fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The API of the collector that owns `model`, if another one does.
    pub fn owner_url(&self, model: &str) -> Option<String> {
        let view = self.view();
        let owner = view.owners.get(model)?;
        (owner != &self.node)
            .then(|| view.members.iter().find(|m| &m.node == owner))
            .flatten()
            .map(|m| m.url.clone())
    }

    /// Connects (retrying every second while the servers cannot be
    /// reached), then takes part in a round every third of the lease TTL
    /// until the task is dropped. Returns only when the servers refuse
    /// the configuration (the collector cannot work then).
    pub async fn run(self: Arc<Self>) -> Result<(), BusError> {
        let timeout = self.settings.lease_ttl.max(Duration::from_secs(2));
        let bus: Arc<dyn Bus> = loop {
            match Nats::connect(&self.settings, timeout).await {
                Ok(nats) => break Arc::new(nats),
                Err(e @ BusError::Refused(_)) => return Err(e),
                Err(e) => {
                    throttled!(
                        ROUND_FAILURES,
                        "connect",
                        tracing::Level::WARN,
                        {},
                        "cluster: {e}; retrying every second"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::info!(
            node = %self.node,
            "cluster: connected to {} as {}",
            self.settings.urls.join(","),
            self.node
        );
        let _ = self.log().bus.set(bus.clone());
        self.metrics.connected.set(1);
        let every = self.settings.lease_ttl / 3;
        if self.live.models.iter().any(|m| m.partitions > 1) {
            tokio::spawn(partials::answer(self.clone(), bus.clone()));
            tokio::spawn(partials::gather(self.clone(), bus.clone(), every));
        }
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.round(&bus).await {
                Ok(()) => {
                    self.metrics.connected.set(1);
                    ROUND_FAILURES.clear("round");
                }
                Err(e) => {
                    self.metrics.connected.set(0);
                    throttled!(
                        ROUND_FAILURES,
                        "round",
                        tracing::Level::WARN,
                        {},
                        "cluster: {e}"
                    );
                }
            }
        }
    }

    /// Leaves the cluster on a clean stop: hands over every lease and
    /// removes this member, so that the others take the models at once
    /// instead of after a TTL.
    pub async fn leave(self: &Arc<Self>) {
        let Some(bus) = self.log().bus.get() else {
            return;
        };
        for (ui, unit) in self.units.iter().enumerate() {
            let Some(revision) = self.hold(ui, |h| h.revision) else {
                continue;
            };
            self.lose(ui, "released");
            let name = &self.live.models[unit.model].name;
            if let Err(e) = bus
                .delete(Bucket::Leases, lease_key(name, unit.partition), revision)
                .await
            {
                tracing::warn!("cluster: handing over {}: {e}", self.describe(*unit));
            }
        }
        self.read_held();
        let me = token(&self.node);
        if let Ok(members) = bus.entries(Bucket::Members).await {
            for m in members.into_iter().filter(|m| m.key == me) {
                let _ = bus.delete(Bucket::Members, m.key, m.revision).await;
            }
        }
    }

    /// One round: say this collector is alive, renew what it holds, take
    /// what is free and its own, hand over what is another's.
    async fn round(self: &Arc<Self>, bus: &Arc<dyn Bus>) -> Result<(), BusError> {
        let me = Member {
            node: self.node.clone(),
            url: self.url.clone(),
        };
        bus.put(Bucket::Members, token(&self.node), json(&me))
            .await?;
        let mut members: Vec<Member> = bus
            .entries(Bucket::Members)
            .await?
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.value).ok())
            .collect();
        members.sort_by(|a, b| a.node.cmp(&b.node));
        let leases: BTreeMap<(String, usize), (String, u64)> = bus
            .entries(Bucket::Leases)
            .await?
            .into_iter()
            .filter_map(|e| {
                Some((
                    parse_lease_key(&e.key)?,
                    (String::from_utf8_lossy(&e.value).into_owned(), e.revision),
                ))
            })
            .collect();
        // A collector keeps what it holds (a move costs a replay) unless it
        // holds more than its share; then it hands over the leases another
        // member is preferred for.
        let share = self.units.len().div_ceil(members.len().max(1));
        let mut owned = self.held().len();
        let mut owners = BTreeMap::new();
        let mut partitions = BTreeMap::new();
        let result = self
            .round_units(
                bus,
                &members,
                &leases,
                share,
                &mut owned,
                &mut owners,
                &mut partitions,
            )
            .await;
        // What this collector reads follows what it holds, even after a
        // failure half-way.
        self.read_held();
        result?;
        let held = self.held();
        let count = |f: &dyn Fn(&Unit) -> bool| held.iter().filter(|u| f(u)).count() as i64;
        self.metrics.owned_models.set(count(&|u| u.partition == 0));
        self.metrics
            .owned_partitions
            .set(count(&|u| self.live.models[u.model].partitions > 1));
        self.metrics.members.set(members.len() as i64);
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = View {
            node: self.node.clone(),
            connected: true,
            members,
            owners,
            partitions,
        };
        Ok(())
    }

    /// The leases of a round, one by one: renewed, taken, handed over or
    /// left to their holder; `owners` and `partitions` get who holds what.
    #[allow(clippy::too_many_arguments)]
    async fn round_units(
        self: &Arc<Self>,
        bus: &Arc<dyn Bus>,
        members: &[Member],
        leases: &BTreeMap<(String, usize), (String, u64)>,
        share: usize,
        owned: &mut usize,
        owners: &mut BTreeMap<String, String>,
        partitions: &mut BTreeMap<String, Vec<Option<String>>>,
    ) -> Result<(), BusError> {
        for (ui, unit) in self.units.iter().enumerate() {
            let model = &self.live.models[unit.model];
            let key = lease_key(&model.name, unit.partition);
            let preferred = preferred(members, &unit_name(&model.name, unit.partition));
            let held = self.hold(ui, |h| h.revision);
            let hand_over = *owned > share && preferred.is_some_and(|p| p != self.node);
            let owner = match (held, leases.get(&(model.name.clone(), unit.partition))) {
                (Some(revision), _) => {
                    let owner = self.renew(bus, ui, &key, revision, hand_over).await?;
                    if owner.is_none() {
                        *owned -= 1;
                    }
                    owner
                }
                // A lease this node wrote before it restarted: take it back.
                (None, Some((holder, revision))) if holder == &self.node => {
                    self.renew(bus, ui, &key, *revision, false).await?
                }
                (None, Some((holder, _))) => {
                    self.hold(ui, |h| h.free_since = None);
                    Some(holder.clone())
                }
                (None, None) => {
                    let free_since =
                        self.hold(ui, |h| *h.free_since.get_or_insert_with(Instant::now));
                    // The preferred node takes a free lease at once, any
                    // other after a TTL (the preferred may be gone).
                    let mine = preferred == Some(self.node.as_str())
                        || free_since.elapsed() >= self.settings.lease_ttl;
                    match mine {
                        true => self.take(bus, ui, &key).await?,
                        false => None,
                    }
                }
            };
            if model.partitions > 1 {
                let slots = partitions
                    .entry(model.name.clone())
                    .or_insert_with(|| vec![None; model.partitions]);
                slots[unit.partition] = owner.clone();
                if let Some(owner) = &owner {
                    owners.insert(format!("{}/{}", model.name, unit.partition), owner.clone());
                }
            }
            if let (Some(owner), 0) = (owner, unit.partition) {
                owners.insert(model.name.clone(), owner);
            }
        }
        Ok(())
    }

    /// Writes a held lease again, or hands it over (`hand_over`). The
    /// model's owner after it (`None`: not this node any more).
    async fn renew(
        self: &Arc<Self>,
        bus: &Arc<dyn Bus>,
        ui: usize,
        key: &str,
        revision: u64,
        hand_over: bool,
    ) -> Result<Option<String>, BusError> {
        let sent = Instant::now();
        let lease = Entry {
            key: key.to_string(),
            value: Bytes::from(self.node.clone()),
            revision,
        };
        let renewed = bus.update(Bucket::Leases, lease).await?;
        let Some(revision) = renewed else {
            self.lose(ui, "lost");
            return Ok(None);
        };
        if hand_over {
            bus.delete(Bucket::Leases, key.to_string(), revision)
                .await?;
            self.lose(ui, "released");
            return Ok(None);
        }
        let started = self.hold(ui, |h| h.revision.replace(revision).is_none());
        self.fence(ui, Some(self.deadline(sent)));
        if started {
            self.acquired(ui);
        }
        Ok(Some(self.node.clone()))
    }

    /// Creates a free lease; starts owning the model if it got it.
    async fn take(
        self: &Arc<Self>,
        bus: &Arc<dyn Bus>,
        ui: usize,
        key: &str,
    ) -> Result<Option<String>, BusError> {
        let sent = Instant::now();
        let created = bus
            .create(
                Bucket::Leases,
                key.to_string(),
                Bytes::from(self.node.clone()),
            )
            .await?;
        let Some(revision) = created else {
            return Ok(None);
        };
        self.hold(ui, |h| {
            h.revision = Some(revision);
            h.free_since = None;
        });
        self.fence(ui, Some(self.deadline(sent)));
        self.acquired(ui);
        Ok(Some(self.node.clone()))
    }

    /// Until when a lease written at `sent` is surely still this node's:
    /// no other can create it before `sent` + TTL; a tenth is left for the
    /// clocks' rates.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.settings.lease_ttl - self.settings.lease_ttl / 10
    }

    /// A lease of partition 0 lets this collector evaluate the model (and
    /// act on its rules) until `until`; other partitions' leases do not.
    fn fence(&self, ui: usize, until: Option<Instant>) {
        let unit = self.units[ui];
        if unit.partition == 0 {
            self.live.own_until(unit.model, until);
        }
    }

    /// "model m" or "partition p of model m".
    fn describe(&self, unit: Unit) -> String {
        let name = &self.live.models[unit.model].name;
        match self.live.models[unit.model].partitions {
            1 => format!("model {name}"),
            _ => format!("partition {} of model {name}", unit.partition),
        }
    }

    /// Counts and logs a lease this collector came to hold (what it reads
    /// changes at the end of the round).
    fn acquired(&self, ui: usize) {
        let what = self.describe(self.units[ui]);
        let name = &self.live.models[self.units[ui].model].name;
        tracing::info!(model = %name, node = %self.node, "cluster: {} owns {what}", self.node);
        self.metrics
            .lease_changes
            .with_label_values(&["acquired"])
            .inc();
    }

    /// Stops holding a lease (`change`: lost or released): no more
    /// evaluation at once if it was partition 0; what this collector
    /// reads changes at the end of the round.
    fn lose(&self, ui: usize, change: &str) {
        let what = self.describe(self.units[ui]);
        let name = &self.live.models[self.units[ui].model].name;
        tracing::warn!(model = %name, node = %self.node, change, "cluster: {} no longer owns {what} ({change})", self.node);
        self.metrics
            .lease_changes
            .with_label_values(&[change])
            .inc();
        self.fence(ui, None);
        self.hold(ui, |h| h.revision = None);
    }

    /// Makes what this collector reads follow the leases it holds: a model
    /// whose held partitions changed starts again with empty windows (and
    /// no gauges) and reads the records of the partitions it now holds
    /// from the start of the oldest window kept.
    fn read_held(self: &Arc<Self>) {
        let units = self.held();
        for (mi, model) in self.live.models.iter().enumerate() {
            let held: Vec<usize> = units
                .iter()
                .filter(|u| u.model == mi)
                .map(|u| u.partition)
                .collect();
            let mut readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
            let reading = &mut readings[mi];
            if reading.partitions == held && (held.is_empty() || reading.task.is_some()) {
                continue;
            }
            if let Some(task) = reading.task.take() {
                task.abort();
            }
            self.live.reset(mi);
            self.model_metrics.forget_model(&model.name);
            let _ = self.metrics.pending.remove_label_values(&[&model.name]);
            reading.partitions = held.clone();
            if !held.is_empty() {
                if model.partitions > 1 {
                    tracing::info!(model = %model.name, node = %self.node, "cluster: {} reads partitions {held:?} of model {}", self.node, model.name);
                }
                reading.task = Some(tokio::spawn(follow::follow(self.clone(), mi, held)));
            }
        }
    }

    /// The partitions of model `mi` this collector reads, and whether it
    /// has caught up with their records.
    fn reading(&self, mi: usize) -> (Vec<usize>, bool) {
        let readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        (readings[mi].partitions.clone(), self.live.ready(mi))
    }

    /// Whether this collector holds partition `partition` of model `mi`.
    fn holds(&self, mi: usize, partition: usize) -> bool {
        self.held().contains(&Unit {
            model: mi,
            partition,
        })
    }

    /// The leases this collector holds now.
    fn held(&self) -> Vec<Unit> {
        let holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        self.units
            .iter()
            .zip(holds.iter())
            .filter(|(_, h)| h.revision.is_some())
            .map(|(u, _)| *u)
            .collect()
    }

    /// Reads or changes this node's hold on lease `ui`.
    fn hold<T>(&self, ui: usize, f: impl FnOnce(&mut Hold) -> T) -> T {
        f(&mut self.holds.lock().unwrap_or_else(|p| p.into_inner())[ui])
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
