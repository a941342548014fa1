//! The running collector, assembled from a validated configuration: the
//! models and their references, the store, the counters and telemetry,
//! the rules runtime, the windows restored from the store; then run as the
//! HTTP API, the evaluation loop (windows, then rules), rule reloads on
//! SIGHUP and delivery of the outbox, until a shutdown future resolves.
//! `driftwatch serve` is a thin shell over this; tests build it too.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use driftwatch_telemetry::tls::{Protocols, ServerTls};
use driftwatch_telemetry::Telemetry;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::experiment::registry::Experiments;
use crate::export::metrics::Metrics;
use crate::ingest::cluster::ClusterLog;
use crate::ingest::Ingest;
use crate::models::Model;
use crate::notify::deliver::{self, Deliverer};
use crate::rules::runtime::{Alerting, Handles};
use crate::rules::RuleErrors;
use crate::serve::{self, AppState};
use crate::store::{Store, StoreError};
use crate::window::evaluate::Evaluator;
use crate::window::Live;

/// What a collector in cluster mode joins with.
struct ClusterPlan {
    config: crate::config::cluster::Cluster,
    /// How far back each model's records are read when it is taken over.
    retention: Vec<Duration>,
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A model's reference could not be loaded (the message names it).
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("otlp: {0}")]
    Telemetry(String),
    #[error("the rule files are refused:\n{0}")]
    Rules(RuleErrors),
    #[error("tls: {0}")]
    Tls(#[from] driftwatch_telemetry::tls::TlsError),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A collector ready to serve.
pub struct Collector {
    state: Arc<AppState>,
    /// Cluster mode: how to join (the node's name and address are known
    /// once it listens).
    cluster: Option<ClusterPlan>,
    evaluator: Arc<Evaluator>,
    deliverer: Option<Arc<Deliverer>>,
    eval_interval: Duration,
    eval_budget: Duration,
    /// Events replayed from the store into the windows at start.
    pub restored: usize,
}

impl Collector {
    /// Loads the models, opens (and migrates) the store, starts telemetry,
    /// loads the rule files and rebuilds the windows from the store. Call
    /// it inside a Tokio runtime.
    pub fn build(config: &Config) -> Result<Collector, StartError> {
        let models = config
            .models
            .iter()
            .map(Model::load)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Model)?;
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(ServerTls::load(files.clone(), Protocols::Http1)?)),
            None => None,
        };
        let kept = retention(&models);
        let store = Store::open(&config.db, kept.clone())?;
        let cluster = match &config.cluster {
            Some(c) => Some(plan(c, &kept)?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let telemetry = Arc::new(match &config.otlp {
            None => Telemetry::off(),
            Some(otlp) => {
                let t = Telemetry::start(
                    otlp,
                    "driftwatch-collector",
                    Vec::new(),
                    metrics.registry(),
                    "driftwatch",
                )
                .map_err(|e| StartError::Telemetry(e.to_string()))?;
                tracing::info!(
                    "exporting traces and metrics over OTLP to {}",
                    otlp.endpoint
                );
                t
            }
        });
        let live = Arc::new(Live::new(models));
        let ingest = Arc::new(Ingest {
            live: live.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            max_body_bytes: config.max_body_bytes,
            max_future_skew: config.max_future_skew,
            cluster: cluster
                .as_ref()
                .map(|c| ClusterLog::new(c.config.settings.prefix.clone())),
        });
        let experiments = Arc::new(Experiments::new(live.clone()));
        let alerting = match config.rules.is_empty() {
            true => None,
            false => Some(Arc::new(
                Alerting::load(
                    config.rules.clone(),
                    config.eval_interval.as_millis() as i64,
                    Handles {
                        models: live.models.clone(),
                        store: store.clone(),
                        metrics: metrics.clone(),
                        telemetry: telemetry.clone(),
                        external_url: config.external_url.clone(),
                        cluster: cluster.as_ref().map(|_| alert_cluster(&ingest)),
                        experiments: Some(experiments.clone()),
                    },
                )
                .map_err(StartError::Rules)?,
            )),
        };
        // In cluster mode a model's windows are read from the log by its
        // owner, when it takes the model.
        let restored = match cluster {
            Some(_) => 0,
            None => ingest.restore()?,
        };
        if let Some(a) = &alerting {
            a.restore();
        }
        let deliverer = alerting.as_ref().map(|a| {
            Arc::new(Deliverer {
                store: store.clone(),
                metrics: metrics.clone(),
                telemetry: telemetry.clone(),
                external_url: config.external_url.clone(),
                routing: a.routing(),
                repeats: Default::default(),
            })
        });
        let evaluator = Arc::new(Evaluator::new(
            live,
            store.clone(),
            metrics.clone(),
            telemetry.clone(),
        ));
        let state = Arc::new(AppState {
            ingest,
            experiments: experiments.clone(),
            alerting,
            store,
            metrics,
            telemetry,
            auth: serve::Auth::new(&config.tokens),
            http: config.http,
            tls,
            ready: AtomicBool::new(false),
            cluster: OnceLock::new(),
        });
        Ok(Collector {
            state,
            cluster,
            evaluator,
            deliverer,
            eval_interval: config.eval_interval,
            eval_budget: config.eval_budget,
            restored,
        })
    }

    /// Serves on `listener` until `shutdown` resolves: the API, the
    /// evaluation loop, reloads on SIGHUP and delivery; then flushes
    /// telemetry.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // A cluster whose servers refuse this collector stops it.
        let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
        let mut cluster_task = None;
        if let Some(plan) = self.cluster {
            let cluster = Arc::new(join(plan, &listener, &self.state)?);
            let _ = self.state.cluster.set(cluster.clone());
            cluster_task = Some(tokio::spawn(async move {
                if let Err(e) = cluster.run().await {
                    tracing::error!("cluster: {e}");
                    let _ = fatal_tx.send(e.to_string());
                }
            }));
        }
        let mut tasks = vec![tokio::spawn(evaluate_every(
            self.evaluator.clone(),
            self.state.experiments.clone(),
            self.state.alerting.clone(),
            self.eval_interval,
            self.eval_budget,
        ))];
        if let Some(a) = &self.state.alerting {
            tasks.push(tokio::spawn(reload_on_sighup(a.clone())));
        }
        if let Some(d) = &self.deliverer {
            tasks.push(tokio::spawn(deliver::run(d.clone())));
            // Cluster mode: models' notifications come from the cluster's queue.
            if self.state.ingest.cluster.is_some() {
                let bus = bus_handle(&self.state.ingest);
                tasks.push(tokio::spawn(crate::notify::jobs::run(d.clone(), bus)));
            }
        }
        if let Some(tls) = &self.state.tls {
            tasks.push(tokio::spawn(driftwatch_telemetry::tls::watch(
                tls.clone(),
                "tls",
                self.state.metrics.tls_reloads.clone(),
            )));
        }
        tasks.extend(cluster_task);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<Option<String>>();
        let stopping = async move {
            let why = tokio::select! {
                _ = shutdown => None,
                Ok(e) = fatal_rx => Some(e),
            };
            let _ = stop_tx.send(why);
        };
        let served = serve::run(listener, self.state.clone(), stopping).await;
        for t in tasks {
            t.abort();
        }
        if let Some(cluster) = self.state.cluster.get() {
            let leave = cluster.leave();
            if tokio::time::timeout(Duration::from_secs(5), leave)
                .await
                .is_err()
            {
                tracing::warn!("cluster: the NATS servers did not answer while leaving; the leases expire instead");
            }
        }
        if let Ok(Some(e)) = stop_rx.try_recv() {
            return Err(std::io::Error::other(format!("cluster: {e}")));
        }
        // The exporters block while they flush: off the reactor.
        let telemetry = self.state.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        served
    }
}

/// The cluster to join: the stream must keep what the models need.
fn plan(
    config: &crate::config::cluster::Cluster,
    kept: &[(String, Duration)],
) -> Result<ClusterPlan, StartError> {
    let need = kept.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let mut config = config.clone();
    config.settings.retention = match config.retention {
        Some(asked) if asked < need => {
            return Err(StartError::Cluster(format!(
                "cluster.retention {} is shorter than the models need ({}: twice the longest window, or the label TTL)",
                humantime::format_duration(asked),
                humantime::format_duration(need)
            )))
        }
        Some(asked) => asked,
        None => need,
    };
    Ok(ClusterPlan {
        config,
        retention: kept.iter().map(|(_, d)| *d).collect(),
    })
}

/// This collector as a member of its cluster, named after its host and
/// port unless the config names it.
fn join(
    plan: ClusterPlan,
    listener: &tokio::net::TcpListener,
    state: &AppState,
) -> std::io::Result<Cluster> {
    let addr = listener.local_addr()?;
    let host = crate::cluster::host_name();
    let node = plan
        .config
        .node
        .clone()
        .unwrap_or_else(|| format!("{host}-{}", addr.port()));
    let url = plan.config.advertise_url.clone().unwrap_or_else(|| {
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        match addr.ip().is_unspecified() {
            true => format!("{scheme}://{host}:{}", addr.port()),
            false => format!("{scheme}://{addr}"),
        }
    });
    Ok(Cluster::new(
        node,
        url,
        plan.config.settings,
        state.ingest.clone(),
        state.metrics.clone(),
        plan.retention,
    ))
}

/// The cluster's bus as ingest holds it, once connected.
fn bus_handle(ingest: &Arc<Ingest>) -> crate::bus::BusHandle {
    let ingest = ingest.clone();
    Arc::new(move || ingest.cluster.as_ref()?.bus.get().cloned())
}

/// What cluster-mode alerting needs: the bus once connected, which
/// models this collector owns now (fenced by the lease deadline) and
/// which of them have whole windows.
fn alert_cluster(ingest: &Arc<Ingest>) -> crate::rules::cluster::Cluster {
    let model = |ingest: Arc<Ingest>, test: fn(&crate::window::Live, usize) -> bool| {
        Arc::new(move |m: &str| {
            let live = &ingest.live;
            live.model(m).is_some_and(|(i, _)| test(live, i))
        }) as Arc<dyn Fn(&str) -> bool + Send + Sync>
    };
    crate::rules::cluster::Cluster::new(
        bus_handle(ingest),
        model(ingest.clone(), crate::window::Live::owns),
        model(ingest.clone(), crate::window::Live::complete),
        ingest.live.models.iter().map(|m| m.name.clone()).collect(),
    )
}

/// How long each model's events are kept: the live window and the one
/// before (for the longest length), or until their labels may arrive.
fn retention(models: &[Model]) -> Vec<(String, Duration)> {
    models
        .iter()
        .map(|m| {
            let windows = 2 * m
                .windows
                .iter()
                .map(|w| w.duration)
                .max()
                .unwrap_or_default();
            (m.name.clone(), windows.max(m.label_ttl))
        })
        .collect()
}

/// Every `interval`: the windows that changed (as many as fit in the
/// interval), then the rules on what they published, on a blocking thread
/// (the statistics are CPU work).
async fn evaluate_every(
    evaluator: Arc<Evaluator>,
    experiments: Arc<Experiments>,
    alerting: Option<Arc<Alerting>>,
    interval: Duration,
    budget: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (e, x, a) = (evaluator.clone(), experiments.clone(), alerting.clone());
        let done = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let live = e.evaluate_all(budget);
            x.evaluate(&e.metrics);
            if let Some(a) = a {
                a.evaluate(live);
            }
            e.metrics
                .evaluation_cycle_seconds
                .observe(started.elapsed().as_secs_f64());
        })
        .await;
        if let Err(e) = done {
            tracing::error!("window evaluation failed: {e}");
        }
    }
}

/// Reloads the rule files on every SIGHUP.
async fn reload_on_sighup(alerting: Arc<Alerting>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let a = alerting.clone();
            let _ = tokio::task::spawn_blocking(move || a.reload()).await;
        }
    }
    #[cfg(not(unix))]
    let _ = alerting;
}
