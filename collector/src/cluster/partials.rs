//! A split model's partial windows between collectors. Every collector
//! answers the question "your state of model m" with the partitions of m
//! it reads, whether it has caught up with their records, the generation
//! of its windows and the windows themselves (MessagePack: floats bit for
//! bit). The owner of a split model's partition 0 asks the owners of the
//! other partitions, as the leases name them, every round; when every
//! partition's state is at hand and caught up it merges them into its
//! own before evaluating, otherwise the model waits (it is not evaluated
//! on a part of its traffic) and the gathering is counted as missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::bus::Bus;
use crate::window::{ModelWindows, Partials};

/// A collector's state of one model, as it answers for it.
#[derive(Debug, Serialize, Deserialize)]
struct PartialState {
    /// How many partitions its configuration splits the model into.
    of: usize,
    /// The partitions its windows hold (none: it does not read the model).
    partitions: Vec<usize>,
    /// Whether it has read every record stored when it started reading.
    caught_up: bool,
    /// How many times its windows of the model were emptied.
    generation: u64,
    windows: Option<ModelWindows>,
}

static FAILURES: std::sync::LazyLock<Repeats> = std::sync::LazyLock::new(Repeats::default);

/// Answers the other collectors' questions for this collector's state of
/// a model, until the task is dropped.
pub async fn answer(cluster: Arc<Cluster>, bus: Arc<dyn Bus>) {
    loop {
        let mut questions = match bus.questions(cluster.node.clone()).await {
            Ok(q) => q,
            Err(e) => {
                throttled!(FAILURES, "answer", tracing::Level::WARN, {}, "cluster: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(q) = questions.next().await {
            let model = String::from_utf8_lossy(&q.body).into_owned();
            let state = cluster.partial_state(&model);
            let body = tokio::task::spawn_blocking(move || rmp_serde::to_vec(&state))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            if let Err(e) = q.answer(Bytes::from(body)).await {
                throttled!(
                    FAILURES,
                    "answer",
                    tracing::Level::WARN,
                    {},
                    "cluster: answering for model {model}: {e}"
                );
            }
        }
    }
}

/// Every `every` (every quarter second while one is missing): the other
/// partitions' states of each split model whose partition 0 this
/// collector holds, merged into its evaluation when all are at hand.
pub async fn gather(cluster: Arc<Cluster>, bus: Arc<dyn Bus>, every: Duration) {
    let mut missing = false;
    loop {
        let pause = match missing {
            true => every.min(Duration::from_millis(250)),
            false => every,
        };
        tokio::time::sleep(pause).await;
        missing = false;
        for (mi, model) in cluster.live.models.iter().enumerate() {
            if model.partitions < 2 || !cluster.holds(mi, 0) {
                continue;
            }
            let (partials, outcome) = match gather_model(&cluster, &bus, mi, every).await {
                Ok(p) => {
                    FAILURES.clear(&model.name);
                    (p, "complete")
                }
                Err(why) => {
                    throttled!(
                        FAILURES,
                        &model.name,
                        tracing::Level::WARN,
                        {},
                        "cluster: model {} is not evaluated until every partition's windows are at hand: {why}",
                        model.name
                    );
                    missing = true;
                    (Partials::Missing, "missing")
                }
            };
            cluster
                .metrics
                .gathers
                .with_label_values(&[model.name.as_str(), outcome])
                .inc();
            // Only while partition 0 is still this collector's.
            if cluster.holds(mi, 0) {
                cluster.live.set_partials(mi, partials);
            }
        }
    }
}

/// The other partitions' states of model `mi`, or why they are not all
/// at hand.
async fn gather_model(
    cluster: &Arc<Cluster>,
    bus: &Arc<dyn Bus>,
    mi: usize,
    timeout: Duration,
) -> Result<Partials, String> {
    let name = &cluster.live.models[mi].name;
    let owners = cluster
        .view()
        .partitions
        .get(name)
        .cloned()
        .ok_or("the partitions' owners are not known yet")?;
    let (mine, caught_up) = cluster.reading(mi);
    let mut others = BTreeMap::<String, Vec<usize>>::new();
    for (p, owner) in owners.into_iter().enumerate() {
        let owner = owner.ok_or(format!("partition {p} has no owner"))?;
        if owner == cluster.node {
            if !mine.contains(&p) {
                return Err(format!("this collector does not read partition {p} yet"));
            }
        } else {
            others.entry(owner).or_default().push(p);
        }
    }
    if !caught_up {
        return Err("this collector is still reading its partitions' records".into());
    }
    if others.is_empty() {
        return Ok(Partials::Own);
    }
    let asked = others.keys().map(|node| {
        bus.ask(
            node.clone(),
            Bytes::from(name.clone().into_bytes()),
            timeout,
        )
    });
    let answers = futures_util::future::join_all(asked).await;
    let answers: Vec<Bytes> = answers
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let states = tokio::task::spawn_blocking(move || {
        answers
            .iter()
            .map(|a| rmp_serde::from_slice::<PartialState>(a))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("an answer could not be read: {e}"))?;
    let mut sources = Vec::new();
    let mut windows = Vec::new();
    let of = cluster.live.models[mi].partitions;
    for ((node, partitions), state) in others.into_iter().zip(states) {
        if state.of != of {
            return Err(format!(
                "collector {node} splits the model into {} partitions, this one into {of}: give every collector the same configuration",
                state.of
            ));
        }
        if state.partitions != partitions {
            return Err(format!(
                "collector {node} reads partitions {:?}, the leases give it {partitions:?}",
                state.partitions
            ));
        }
        if !state.caught_up {
            return Err(format!(
                "collector {node} is still reading the records of partitions {partitions:?}"
            ));
        }
        let w = state
            .windows
            .ok_or(format!("collector {node} has no windows of the model"))?;
        cluster
            .live
            .windows(mi)
            .check_fits(&w)
            .map_err(|e| format!("collector {node}'s state of the model: {e}"))?;
        sources.push((node, state.generation));
        windows.push(w);
    }
    Ok(Partials::Gathered {
        sources,
        windows: Arc::new(windows),
    })
}

impl Cluster {
    /// This collector's state of model `name`, as it answers for it.
    fn partial_state(&self, name: &str) -> PartialState {
        let Some((mi, _)) = self.live.model(name) else {
            return PartialState {
                of: 0,
                partitions: Vec::new(),
                caught_up: false,
                generation: 0,
                windows: None,
            };
        };
        let (partitions, caught_up) = self.reading(mi);
        // The generation before the windows: a reset in between shows as
        // a newer generation next time.
        let generation = self.live.generation(mi);
        PartialState {
            of: self.live.models[mi].partitions,
            windows: Some(self.live.windows(mi).clone()),
            partitions,
            caught_up,
            generation,
        }
    }
}
