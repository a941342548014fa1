//! Cluster mode: collectors that share one log split the models between
//! them. Every model has a lease in the leases bucket; the collector that
//! holds it (its owner) reads the model's records from the log into its
//! store and windows and evaluates them; the others only accept events and
//! answer queries (forwarding to the owner). A lease lives for the lease
//! TTL unless its owner writes it again (every third of the TTL, naming
//! the revision it last wrote: a stale owner's write fails, so it notices).
//! Each model goes to one collector by rendezvous hashing over the members
//! alive, so that the models spread and a joining collector gets its share
//! (the owner releases what is no longer its own). When an owner dies its
//! lease expires and the next collector takes the model over: it reads the
//! model's records again from the start of the oldest window kept, so its
//! windows are what the dead owner's were.

pub mod follow;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::bus::nats::{Nats, Settings};
use crate::bus::{token, untoken, Bucket, Bus, BusError, Entry};
use crate::export::cluster::ClusterMetrics;
use crate::export::metrics::Metrics;
use crate::ingest::cluster::ClusterLog;
use crate::ingest::Ingest;
use crate::window::Live;

/// A collector as the members bucket lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// Where its API answers.
    pub url: String,
}

/// What `GET /v1/cluster` shows: this node, the members alive and who
/// owns each model, as of the last round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    pub node: String,
    pub connected: bool,
    pub members: Vec<Member>,
    pub owners: BTreeMap<String, String>,
}

/// This collector's hold on one model.
#[derive(Default)]
struct Hold {
    /// The revision of the lease it last wrote (`Some`: it owns the model).
    revision: Option<u64>,
    /// Reading the model's records (while it owns it).
    follower: Option<JoinHandle<()>>,
    /// Since when nobody has held the lease, as seen from here.
    free_since: Option<Instant>,
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
    holds: Mutex<Vec<Hold>>,
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
        Cluster {
            metrics: Arc::new(ClusterMetrics::register(metrics.registry())),
            model_metrics: metrics,
            holds: Mutex::new(live.models.iter().map(|_| Hold::default()).collect()),
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
        let mut ticker = tokio::time::interval(self.settings.lease_ttl / 3);
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
    pub async fn leave(&self) {
        let Some(bus) = self.log().bus.get() else {
            return;
        };
        for (mi, model) in self.live.models.iter().enumerate() {
            let Some(revision) = self.hold(mi, |h| h.revision) else {
                continue;
            };
            self.lose(mi, "released");
            if let Err(e) = bus
                .delete(Bucket::Leases, token(&model.name), revision)
                .await
            {
                tracing::warn!("cluster: handing over model {}: {e}", model.name);
            }
        }
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
        let leases: BTreeMap<String, (String, u64)> = bus
            .entries(Bucket::Leases)
            .await?
            .into_iter()
            .filter_map(|e| {
                let model = untoken(&e.key)?;
                Some((
                    model,
                    (String::from_utf8_lossy(&e.value).into_owned(), e.revision),
                ))
            })
            .collect();
        // A collector keeps what it owns (a move costs a replay) unless it
        // owns more than its share; then it hands over the models another
        // member is preferred for.
        let models = self.live.models.len();
        let share = models.div_ceil(members.len().max(1));
        let mut owned = (0..models)
            .filter(|mi| self.hold(*mi, |h| h.revision.is_some()))
            .count();
        let mut owners = BTreeMap::new();
        for (mi, model) in self.live.models.iter().enumerate() {
            let key = token(&model.name);
            let preferred = preferred(&members, &model.name);
            let held = self.hold(mi, |h| h.revision);
            let hand_over = owned > share && preferred.is_some_and(|p| p != self.node);
            let owner = match (held, leases.get(&model.name)) {
                (Some(revision), _) => {
                    let owner = self.renew(bus, mi, &key, revision, hand_over).await?;
                    if owner.is_none() {
                        owned -= 1;
                    }
                    owner
                }
                // A lease this node wrote before it restarted: take it back.
                (None, Some((holder, revision))) if holder == &self.node => {
                    self.renew(bus, mi, &key, *revision, false).await?
                }
                (None, Some((holder, _))) => {
                    self.hold(mi, |h| h.free_since = None);
                    Some(holder.clone())
                }
                (None, None) => {
                    let free_since =
                        self.hold(mi, |h| *h.free_since.get_or_insert_with(Instant::now));
                    // The preferred node takes a free lease at once, any
                    // other after a TTL (the preferred may be gone).
                    let mine = preferred == Some(self.node.as_str())
                        || free_since.elapsed() >= self.settings.lease_ttl;
                    match mine {
                        true => self.take(bus, mi, &key).await?,
                        false => None,
                    }
                }
            };
            if let Some(owner) = owner {
                owners.insert(model.name.clone(), owner);
            }
        }
        let owned = (0..self.live.models.len())
            .filter(|mi| self.hold(*mi, |h| h.revision.is_some()))
            .count();
        self.metrics.owned_models.set(owned as i64);
        self.metrics.members.set(members.len() as i64);
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = View {
            node: self.node.clone(),
            connected: true,
            members,
            owners,
        };
        Ok(())
    }

    /// Writes a held lease again, or hands it over (`hand_over`). The
    /// model's owner after it (`None`: not this node any more).
    async fn renew(
        self: &Arc<Self>,
        bus: &Arc<dyn Bus>,
        mi: usize,
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
            self.lose(mi, "lost");
            return Ok(None);
        };
        if hand_over {
            bus.delete(Bucket::Leases, key.to_string(), revision)
                .await?;
            self.lose(mi, "released");
            return Ok(None);
        }
        let started = self.hold(mi, |h| h.revision.replace(revision).is_none());
        self.live.own_until(mi, Some(self.deadline(sent)));
        if started {
            self.start(mi);
        }
        Ok(Some(self.node.clone()))
    }

    /// Creates a free lease; starts owning the model if it got it.
    async fn take(
        self: &Arc<Self>,
        bus: &Arc<dyn Bus>,
        mi: usize,
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
        self.hold(mi, |h| {
            h.revision = Some(revision);
            h.free_since = None;
        });
        self.live.own_until(mi, Some(self.deadline(sent)));
        self.start(mi);
        Ok(Some(self.node.clone()))
    }

    /// Until when a lease written at `sent` is surely still this node's:
    /// no other can create it before `sent` + TTL; a tenth is left for the
    /// clocks' rates.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.settings.lease_ttl - self.settings.lease_ttl / 10
    }

    /// Starts owning model `mi`: empty windows, its records read from the
    /// start of the oldest window kept.
    fn start(self: &Arc<Self>, mi: usize) {
        let name = &self.live.models[mi].name;
        tracing::info!(model = %name, node = %self.node, "cluster: {} owns model {name}", self.node);
        self.metrics
            .lease_changes
            .with_label_values(&["acquired"])
            .inc();
        self.live.reset(mi);
        let follower = tokio::spawn(follow::follow(self.clone(), mi));
        if let Some(old) = self.hold(mi, |h| h.follower.replace(follower)) {
            old.abort();
        }
    }

    /// Stops owning model `mi` (`change`: lost or released): no more
    /// evaluation, reading or gauges for it here.
    fn lose(&self, mi: usize, change: &str) {
        let name = &self.live.models[mi].name;
        tracing::warn!(model = %name, node = %self.node, change, "cluster: {} no longer owns model {name} ({change})", self.node);
        self.metrics
            .lease_changes
            .with_label_values(&[change])
            .inc();
        self.live.own_until(mi, None);
        if let Some(f) = self.hold(mi, |h| {
            h.revision = None;
            h.follower.take()
        }) {
            f.abort();
        }
        self.live.reset(mi);
        self.model_metrics.forget_model(name);
        let _ = self.metrics.pending.remove_label_values(&[name]);
    }

    /// Reads or changes this node's hold on model `mi`.
    fn hold<T>(&self, mi: usize, f: impl FnOnce(&mut Hold) -> T) -> T {
        f(&mut self.holds.lock().unwrap_or_else(|p| p.into_inner())[mi])
    }
}

/// This machine's name (for default node names and addresses).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "collector".into())
}

/// The member a model belongs to: the highest score of node and model
/// (rendezvous hashing), so that a member joining or leaving moves only
/// its own share of the models.
pub fn preferred<'a>(members: &'a [Member], model: &str) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| mixed_hash(&[m.node.as_bytes(), b"\0", model.as_bytes()]))
        .map(|m| m.node.as_str())
}

/// FNV-1a, 64 bits, then MurmurHash3's finalizer (FNV alone leaves names
/// that differ in one byte close together): stable across processes and
/// versions.
fn mixed_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_spread_over_members_and_move_only_with_their_member() {
        let member = |n: &str| Member {
            node: n.into(),
            url: String::new(),
        };
        let three = [member("a"), member("b"), member("c")];
        let models: Vec<String> = (0..300).map(|i| format!("model-{i}")).collect();
        let owners: Vec<&str> = models
            .iter()
            .map(|m| preferred(&three, m).expect("an owner"))
            .collect();
        for n in ["a", "b", "c"] {
            let share = owners.iter().filter(|o| **o == n).count();
            assert!((70..=130).contains(&share), "{n}: {share} of 300");
        }
        // "c" leaves: only its models move.
        let two = [member("a"), member("b")];
        for (m, before) in models.iter().zip(&owners) {
            let after = preferred(&two, m).expect("an owner");
            if *before != "c" {
                assert_eq!(after, *before, "{m}");
            }
        }
        assert_eq!(preferred(&[], "m"), None);
    }
}
