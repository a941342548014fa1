//! Shadow scoring: the shadow ONNX model runs on its own thread, taking
//! rows from a bounded queue in micro-batches (up to `max_batch` rows or
//! `max_wait`). A full queue sheds rows at once (counted); a row not
//! answered within `timeout` is shipped without the shadow (counted). The
//! champion's requests never wait for any of it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftwatch_protocol::{FeatureValue, Output};
use tokio::sync::oneshot;

pub mod onnx;

use crate::adapters::{outputs_from_tensors, OutputSpec, Row};
use crate::config::{Background, Model, OutputNames, Shadow};
use crate::metrics::Metrics;
use onnx::OnnxModel;

/// Why a shadow model is unavailable (the agent runs without it).
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// ONNX Runtime could not be loaded or started.
    #[error("{0}")]
    Runtime(String),
    /// The model file could not be loaded, or not in the shape driftwatch feeds.
    #[error("{0}")]
    Model(String),
    #[error("name the model's input columns in `shadow.inputs` (or the model's `features`)")]
    NoInputs,
    #[error("{path}: the model takes {width} columns, `shadow.inputs` names {inputs}")]
    Width {
        path: String,
        width: usize,
        inputs: usize,
    },
    /// A first inference failed, or gave outputs driftwatch cannot read.
    #[error("{path}: {why}")]
    Probe { path: String, why: String },
    #[error("cannot start the shadow thread: {0}")]
    Thread(std::io::Error),
}

struct Job {
    rows: Vec<Vec<f32>>,
    reply: oneshot::Sender<Result<Vec<Output>, String>>,
}

pub struct Scorer {
    tx: SyncSender<Job>,
    /// Rows queued or being scored.
    depth: Arc<AtomicI64>,
    queue: i64,
    /// The model's input columns, in order.
    pub inputs: Vec<String>,
    pub timeout: Duration,
}

/// The shadow thread: micro-batches of queued rows through the model.
struct Worker {
    onnx: OnnxModel,
    names: OutputNames,
    classes: Option<Vec<String>>,
    positive: String,
    version: Option<String>,
    max_batch: usize,
    max_wait: Duration,
    /// Rows queued or being scored (shared with `Scorer::submit`).
    depth: Arc<AtomicI64>,
    gauge: prometheus::IntGauge,
    errors: prometheus::IntCounter,
    metrics: Arc<Metrics>,
    background: Background,
}

impl Worker {
    /// Scores until every `Scorer` is gone, at the background priority.
    fn run(mut self, rx: Receiver<Job>) {
        self.background.apply();
        while let Ok(first) = rx.recv() {
            let jobs = self.gather(first, &rx);
            let rows: usize = jobs.iter().map(|j| j.rows.len()).sum();
            self.score(jobs);
            let left = self.depth.fetch_sub(rows as i64, Ordering::Relaxed) - rows as i64;
            self.gauge.set(left.max(0));
        }
    }

    /// `first` and the jobs that arrive within `max_wait`, up to `max_batch` rows.
    fn gather(&self, first: Job, rx: &Receiver<Job>) -> Vec<Job> {
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        let deadline = Instant::now() + self.max_wait;
        while rows < self.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => {
                    rows += j.rows.len();
                    jobs.push(j);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        jobs
    }

    /// One inference over the jobs' rows; each job gets its outputs (or
    /// the error), stamped with the version and the batch's latency.
    fn score(&mut self, jobs: Vec<Job>) {
        let batch: Vec<Vec<f32>> = jobs.iter().flat_map(|j| j.rows.iter().cloned()).collect();
        self.metrics.shadow_batch_rows.observe(batch.len() as f64);
        let spec = OutputSpec {
            names: &self.names,
            classes: self.classes.as_deref(),
            positive_class: &self.positive,
        };
        let started = Instant::now();
        let result = self
            .onnx
            .run(&batch)
            .and_then(|t| outputs_from_tensors(&t, batch.len(), &spec).map_err(|e| e.to_string()));
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if result.is_err() {
            self.errors.inc();
        }
        let mut offset = 0;
        for job in jobs {
            let n = job.rows.len();
            let answer = match &result {
                Ok(all) => Ok(all[offset..offset + n]
                    .iter()
                    .cloned()
                    .map(|mut o| {
                        o.version = self.version.clone();
                        o.latency_ms = Some(ms);
                        o
                    })
                    .collect()),
                Err(e) => Err(e.clone()),
            };
            offset += n;
            let _ = job.reply.send(answer);
        }
    }
}

/// A row's features as the model's float columns: numbers as they are,
/// booleans 1/0, numeric strings parsed, anything else missing (NaN).
pub fn columns(row: &Row, inputs: &[String]) -> Vec<f32> {
    inputs
        .iter()
        .map(|name| match row.get(name) {
            Some(FeatureValue::Number(x)) => *x as f32,
            Some(FeatureValue::Bool(b)) => f32::from(u8::from(*b)),
            Some(FeatureValue::String(s)) => s.trim().parse().unwrap_or(f32::NAN),
            _ => f32::NAN,
        })
        .collect()
}

impl Scorer {
    /// Loads the shadow model and starts its thread; an error says why the
    /// shadow is unavailable (the agent runs without it).
    pub fn start(
        model: &Model,
        shadow: &Shadow,
        library: Option<&std::path::Path>,
        background: Background,
        metrics: Arc<Metrics>,
    ) -> Result<Scorer, ShadowError> {
        let env = onnx::environment(library).map_err(ShadowError::Runtime)?;
        let mut onnx = OnnxModel::load(
            &env,
            &shadow.path,
            shadow.input.as_deref(),
            shadow.device,
            shadow.threads,
            Some(background),
        )
        .map_err(ShadowError::Model)?;
        let inputs = shadow
            .inputs
            .clone()
            .or_else(|| model.features.clone())
            .ok_or(ShadowError::NoInputs)?;
        let path = shadow.path.display().to_string();
        if let Some(width) = onnx.width {
            if width != inputs.len() {
                return Err(ShadowError::Width {
                    path,
                    width,
                    inputs: inputs.len(),
                });
            }
        }
        // A first run proves the model answers in the shape we read.
        let probe = onnx
            .run(&[vec![0.0; inputs.len()]])
            .map_err(|e| ShadowError::Probe {
                path: path.clone(),
                why: format!("a test inference failed: {e}"),
            })?;
        let (names, classes, positive) = (
            shadow.outputs.clone(),
            model.classes.clone(),
            model.positive_class.clone(),
        );
        let spec = OutputSpec {
            names: &names,
            classes: classes.as_deref(),
            positive_class: &positive,
        };
        outputs_from_tensors(&probe, 1, &spec).map_err(|e| ShadowError::Probe {
            path,
            why: e.to_string(),
        })?;
        tracing::info!(
            model = %model.name,
            "shadow model {} for {} loaded ({} columns, {} execution provider)",
            shadow.path.display(),
            model.name,
            inputs.len(),
            onnx.provider
        );
        let (tx, rx) = sync_channel::<Job>(shadow.queue);
        let depth = Arc::new(AtomicI64::new(0));
        let worker = Worker {
            onnx,
            names,
            classes,
            positive,
            version: shadow.version.clone(),
            max_batch: shadow.max_batch,
            max_wait: shadow.max_wait,
            depth: depth.clone(),
            gauge: metrics.shadow_queue_depth.with_label_values(&[&model.name]),
            errors: metrics.shadow_errors.with_label_values(&[&model.name]),
            metrics,
            background,
        };
        std::thread::Builder::new()
            .name(format!("shadow-{}", model.name))
            .spawn(move || worker.run(rx))
            .map_err(ShadowError::Thread)?;
        Ok(Scorer {
            tx,
            depth,
            queue: shadow.queue as i64,
            inputs,
            timeout: shadow.timeout,
        })
    }

    /// Queues rows; None when the queue is full (the rows are shed).
    pub fn submit(
        &self,
        rows: Vec<Vec<f32>>,
        gauge: &prometheus::IntGauge,
    ) -> Option<oneshot::Receiver<Result<Vec<Output>, String>>> {
        let n = rows.len() as i64;
        let now = self.depth.fetch_add(n, Ordering::Relaxed) + n;
        if now > self.queue {
            self.depth.fetch_sub(n, Ordering::Relaxed);
            return None;
        }
        gauge.set(now);
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { rows, reply }) {
            Ok(()) => Some(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(n, Ordering::Relaxed);
                None
            }
        }
    }
}
