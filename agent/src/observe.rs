//! The observe stage: an inference seen by the proxy or a sink (request,
//! the champion's answer) becomes events. The traffic side only hands an
//! `Observation` over (`Observer::observe`, never waiting: a full queue
//! drops it, counted); the observer collects them every few milliseconds
//! on the background runtime, so that handing one over never costs a
//! request a wakeup of another thread, then parses the rows (`adapters`),
//! the champion's outputs, scores the shadow where it keeps up (`shadow`)
//! and gives the events to the shipper (`ship`).

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use driftwatch_protocol::{Event, Output};

use crate::adapters::{read_request, read_response, Form, Row};
use crate::config::Model;
use crate::metrics::Metrics;
use crate::redact::{Redacted, Redactor};
use crate::shadow::{columns, Scorer};
use crate::ship::Shipper;

/// Observations waiting to be parsed, at most.
const OBSERVER_QUEUE: usize = 16_384;
/// How often the observer collects observations.
const OBSERVER_TICK: Duration = Duration::from_millis(5);
/// Observations being turned into events at once, at most.
const MAX_IN_FLIGHT: usize = 1024;

/// One seen inference, before parsing.
pub struct Observation {
    /// The model's index in the configuration.
    pub model: usize,
    pub request_id: String,
    pub timestamp: String,
    pub request: Bytes,
    /// How the request is framed.
    pub form: Form,
    /// The champion's answer, or why there is none.
    pub response: Option<Result<Answered, String>>,
    pub champion_ms: Option<f64>,
    /// The experiment arm that served it (the model's `arms` order).
    pub arm: Option<usize>,
}

/// The champion's answer as the proxy or a sink saw it.
pub struct Answered {
    pub status: u16,
    pub body: Bytes,
    /// How the answer is framed.
    pub form: Form,
}

/// The handle the traffic side observes through.
#[derive(Clone)]
pub struct Observer {
    tx: SyncSender<Observation>,
    metrics: Arc<Metrics>,
}

impl Observer {
    /// Hands an observation over, or drops it (counted) when the observer
    /// is behind.
    pub fn observe(&self, o: Observation) {
        if self.tx.try_send(o).is_err() {
            self.metrics
                .events_dropped
                .with_label_values(&["observer_busy"])
                .inc();
        }
    }
}

/// A model as the observer reads it: its adapter settings and its shadow.
pub struct Watched {
    pub cfg: Model,
    pub scorer: Option<Scorer>,
    /// Its `request_fields` and `sensitive` features.
    pub redactor: Redactor,
}

/// What turning observations into events needs.
pub struct Events {
    pub models: Vec<Watched>,
    pub metrics: Arc<Metrics>,
    pub shipper: Arc<Shipper>,
    /// The node's name in events.
    pub node: Option<String>,
    /// Share of observations turned into events (1.0: all).
    pub sample_rate: f64,
}

/// Starts the observer on `background`; it runs until every `Observer`
/// handle is gone.
pub fn start(events: Events, background: &tokio::runtime::Handle) -> Observer {
    let (tx, rx) = std::sync::mpsc::sync_channel(OBSERVER_QUEUE);
    let observer = Observer {
        tx,
        metrics: events.metrics.clone(),
    };
    background.spawn(run(Arc::new(events), rx));
    observer
}

/// The time now as events carry it (RFC 3339, milliseconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn run(events: Arc<Events>, rx: Receiver<Observation>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut rng: u64 = chrono::Utc::now().timestamp_subsec_nanos() as u64 | 1;
    let mut tick = tokio::time::interval(OBSERVER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let o = match rx.try_recv() {
            Ok(o) => o,
            Err(TryRecvError::Empty) => {
                tick.tick().await;
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
        };
        let rate = events.sample_rate;
        if rate < 1.0 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if (rng % 1_000_000) as f64 / 1_000_000.0 >= rate {
                let name = &events.models[o.model].cfg.name;
                events
                    .metrics
                    .events_sampled_out
                    .with_label_values(&[name])
                    .inc();
                continue;
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let built = events.build(o).await;
            if !built.is_empty() {
                events.shipper.push(built);
            }
            drop(permit);
        });
    }
}

impl Events {
    /// The events of one observation: a row each, with the champion's and
    /// (where it kept up) the shadow's outputs.
    async fn build(&self, o: Observation) -> Vec<Event> {
        let m = &self.models[o.model];
        let Some(rows) = self.rows(m, &o) else {
            return Vec::new();
        };
        let n = rows.len();
        let champion = self.champion(m, o.response, n, o.champion_ms);
        let shadow = match &m.scorer {
            Some(scorer) => self.shadow(&m.cfg.name, scorer, &rows).await,
            None => vec![None; n],
        };
        let rows = self.redact(m, rows);
        rows.into_iter()
            .zip(champion)
            .zip(shadow)
            .enumerate()
            .map(|(i, ((features, champion), shadow))| Event {
                model: m.cfg.name.clone(),
                request_id: if n == 1 {
                    o.request_id.clone()
                } else {
                    format!("{}-{i}", o.request_id)
                },
                timestamp: o.timestamp.clone(),
                features,
                champion,
                shadow,
                node: self.node.clone(),
                arm: o
                    .arm
                    .and_then(|a| m.cfg.arms.get(a))
                    .map(|a| a.name.clone()),
            })
            .collect()
    }

    /// The rows as they may leave the node (`redact`), once the shadow
    /// has read them.
    fn redact(&self, m: &Watched, mut rows: Vec<Row>) -> Vec<Row> {
        if !m.redactor.is_active() {
            return rows;
        }
        let mut counts = Redacted::default();
        for row in &mut rows {
            m.redactor.apply(row, &mut counts);
        }
        for (action, n) in [
            ("drop", counts.dropped),
            ("hash", counts.hashed),
            ("not_requested", counts.not_requested),
        ] {
            if n > 0 {
                self.metrics
                    .features_redacted
                    .with_label_values(&[&m.cfg.name, action])
                    .inc_by(n);
            }
        }
        rows
    }

    fn unparsed(&self, model: &str, part: &str, reason: &str) {
        self.metrics
            .unparsed
            .with_label_values(&[model, part, reason])
            .inc();
    }

    /// The request's rows, only the features the model watches; none (and
    /// counted) when the body cannot be read or holds no row.
    fn rows(&self, m: &Watched, o: &Observation) -> Option<Vec<Row>> {
        let name = m.cfg.name.as_str();
        let mut rows = match read_request(&m.cfg, &o.request, o.form) {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => {
                self.unparsed(name, "request", "no_rows");
                return None;
            }
            Err(e) => {
                self.unparsed(name, "request", e.reason());
                return None;
            }
        };
        if let Some(keep) = &m.cfg.features {
            for row in &mut rows {
                row.retain(|k, _| keep.contains(k));
            }
        }
        Some(rows)
    }

    /// The champion's output per row: read from its answer, or the reason
    /// it has none (a failed call, an error status, an unreadable body).
    fn champion(
        &self,
        m: &Watched,
        response: Option<Result<Answered, String>>,
        n: usize,
        champion_ms: Option<f64>,
    ) -> Vec<Output> {
        let failed = |why: String| {
            vec![
                Output {
                    error: Some(why),
                    ..Output::default()
                };
                n
            ]
        };
        let mut champion = match response {
            Some(Ok(a)) if (200..300).contains(&a.status) => {
                match read_response(&m.cfg, &a.body, a.form, n) {
                    Ok(out) => out,
                    Err(e) => {
                        self.unparsed(&m.cfg.name, "response", e.reason());
                        failed(format!("unreadable response: {e}"))
                    }
                }
            }
            Some(Ok(a)) => failed(format!("HTTP {}", a.status)),
            Some(Err(why)) => failed(why),
            None => vec![Output::default(); n],
        };
        for c in &mut champion {
            c.version = m.cfg.champion_version.clone();
            c.latency_ms = champion_ms;
        }
        champion
    }

    /// The shadow's output per row, where it scored them in time; rows it
    /// could not take or answer in time are shed (counted).
    async fn shadow(&self, name: &str, scorer: &Scorer, rows: &[Row]) -> Vec<Option<Output>> {
        let n = rows.len();
        let input: Vec<Vec<f32>> = rows.iter().map(|r| columns(r, &scorer.inputs)).collect();
        let gauge = self.metrics.shadow_queue_depth.with_label_values(&[name]);
        let shed = || {
            self.metrics
                .shadow_shed
                .with_label_values(&[name])
                .inc_by(n as u64);
            vec![None; n]
        };
        let Some(rx) = scorer.submit(input, &gauge) else {
            return shed();
        };
        match tokio::time::timeout(scorer.timeout, rx).await {
            Ok(Ok(Ok(outs))) => outs.into_iter().map(Some).collect(),
            Ok(Ok(Err(e))) => vec![
                Some(Output {
                    error: Some(e),
                    ..Output::default()
                });
                n
            ],
            _ => shed(),
        }
    }
}
