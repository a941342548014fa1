//! Starting and stopping the agent on listeners it is given: shadow models
//! (a model that cannot load leaves the agent running without it, said
//! once and shown by `driftwatch_agent_shadow_up`), the shipper, the
//! observer and the tap on the background runtime, the traffic threads,
//! the admin endpoints, and a graceful stop when `shutdown` resolves: no
//! new connections, requests in flight finish, events are flushed within
//! `shutdown_deadline` (the rest spooled or counted).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use driftwatch_telemetry::tls::{HandshakeError, Protocols, ServerTls, TlsFiles};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::http::{full, json_error, Body};
use crate::metrics::Metrics;
use crate::observe::{self, Events, Watched};
use crate::proxy::{fast, hyper as hyper_path, ProxyError, State};
use crate::redact::Redactor;
use crate::shadow::Scorer;
use crate::ship::{ShipError, Shipper};
use crate::tap::Tap;

/// Why the agent could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Ship(#[from] ShipError),
    #[error("otlp: {0}")]
    Telemetry(String),
    #[error(transparent)]
    Tls(#[from] driftwatch_telemetry::tls::TlsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// The listeners the agent serves, bound by the caller.
pub struct Listeners {
    /// Proxied, mirrored and KServe logger traffic.
    pub traffic: std::net::TcpListener,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin: std::net::TcpListener,
}

/// Serves until `shutdown` resolves: the traffic listener on the current
/// runtime, everything else on `background`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
    background: tokio::runtime::Handle,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let hash_key = crate::redact::hash_key(&config)?;
    let watched = config
        .models
        .iter()
        .map(|m| Watched {
            cfg: m.clone(),
            scorer: start_shadow(&config, m, &metrics),
            redactor: Redactor::new(m, hash_key.as_deref()),
        })
        .collect();
    let token = config.token()?;
    let shipper = Arc::new(Shipper::new(
        config.collector.clone(),
        token,
        metrics.clone(),
    )?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let deadline = config.shutdown_deadline;
    let shipping = background.spawn(shipper.clone().run(stop_rx, deadline));
    let observer = observe::start(
        Events {
            models: watched,
            metrics: metrics.clone(),
            shipper,
            node: config.node_name(),
            sample_rate: config.collector.sample_rate,
        },
        &background,
    );
    let tap = Tap::start(
        config.models.clone(),
        observer.clone(),
        metrics.clone(),
        &background,
    );
    let (traffic_addr, admin_addr) = (addr(&listeners.traffic)?, addr(&listeners.admin)?);
    listeners
        .traffic
        .set_nonblocking(true)
        .and_then(|()| listeners.admin.set_nonblocking(true))
        .map_err(io("the listeners"))?;
    let traffic = TcpListener::from_std(listeners.traffic).map_err(io("the traffic listener"))?;
    let threads = config.traffic_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let telemetry = telemetry(&config, &metrics)?;
    let load = |files: &Option<TlsFiles>, protocols| {
        files
            .clone()
            .map(|f| ServerTls::load(f, protocols).map(Arc::new))
            .transpose()
    };
    // gRPC clients offer HTTP/2 alone: the traffic listener accepts it.
    let (traffic_tls, admin_tls) = (
        load(&config.tls, Protocols::Http1AndH2)?,
        load(&config.admin_tls, Protocols::Http1)?,
    );
    for (tls, what) in [(&traffic_tls, "tls"), (&admin_tls, "admin_tls")] {
        if let Some(tls) = tls {
            background.spawn(driftwatch_telemetry::tls::watch(
                tls.clone(),
                what,
                metrics.tls_reloads.clone(),
            ));
        }
    }
    let state = State::new(config, metrics, observer, tap, telemetry)?;
    if let Some(path) = state.config.source.clone() {
        if state.models.iter().any(|m| m.split.is_some()) {
            background.spawn(crate::proxy::split::reload_on_sighup(state.clone(), path));
        }
    }
    // Turns true at shutdown: the fast path's connections close when idle.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    // This thread accepts; the traffic threads it starts inherit its nice.
    let nice = state.config.traffic_nice;
    if nice != 0 {
        crate::threads::set_nice(nice).map_err(io(format!(
            "traffic_nice: {nice} (a value below 0 needs CAP_SYS_NICE)"
        )))?;
    }
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        workers.push(traffic_thread(
            i,
            state.clone(),
            stop.clone(),
            traffic_tls.clone(),
        )?);
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(
        state.config.http.max_connections,
    ));
    // Tests and scripts read these lines for the ports.
    println!("listening on {traffic_addr}");
    println!("admin on {admin_addr}");
    tracing::info!(
        listen = %traffic_addr,
        admin = %admin_addr,
        threads,
        "driftwatch-agent listening on {traffic_addr} (admin {admin_addr}, {threads} traffic threads)"
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let admin_task = background.spawn(serve_admin(state.clone(), listeners.admin, admin_tls));
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        tokio::select! {
            accepted = traffic.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    state.metrics.refuse("limit");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // Connections are dealt to the traffic threads in turn.
                let handed = stream
                    .into_std()
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        workers[next % threads]
                            .send((s, graceful.watcher(), permit))
                            .map_err(|_| format!("traffic thread {} has stopped", next % threads))
                    });
                next += 1;
                if let Err(e) = handed {
                    tracing::warn!("a connection was closed unserved: {e}");
                }
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: finishing requests in flight, flushing events");
    drop(traffic);
    drop(workers);
    let _ = stopping.send(true);
    let _ = tokio::time::timeout(deadline, graceful.shutdown()).await;
    // Give observations in flight a moment to reach the shipper.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(deadline + Duration::from_secs(1), shipping).await;
    admin_task.abort();
    // The exporters block while they flush: off the reactor.
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || s.telemetry.shutdown()).await;
    Ok(())
}

fn addr(l: &std::net::TcpListener) -> Result<SocketAddr, RunError> {
    l.local_addr().map_err(io("a listener's address"))
}

/// The model's shadow scorer, or none (said once, and shown by
/// `driftwatch_agent_shadow_up`) when it has no shadow or it cannot load.
fn start_shadow(
    config: &Config,
    m: &crate::config::Model,
    metrics: &Arc<Metrics>,
) -> Option<Scorer> {
    let s = m.shadow.as_ref()?;
    let up = metrics.shadow_up.with_label_values(&[&m.name]);
    match Scorer::start(
        m,
        s,
        config.ort_library.as_deref(),
        config.background_scheduling,
        metrics.clone(),
    ) {
        Ok(scorer) => {
            up.set(1);
            Some(scorer)
        }
        Err(e) => {
            tracing::warn!(
                model = %m.name,
                "model {}: the shadow model is unavailable, proxying without it: {e}",
                m.name
            );
            up.set(0);
            None
        }
    }
}

/// Request spans and metrics over OTLP, when configured.
fn telemetry(
    config: &Config,
    metrics: &Metrics,
) -> Result<driftwatch_telemetry::Telemetry, RunError> {
    let Some(otlp) = &config.otlp else {
        return Ok(driftwatch_telemetry::Telemetry::off());
    };
    let attributes = config
        .node_name()
        .map(|n| vec![driftwatch_telemetry::KeyValue::new("k8s.node.name", n)])
        .unwrap_or_default();
    let t = driftwatch_telemetry::Telemetry::start(
        otlp,
        "driftwatch-agent",
        attributes,
        metrics.registry(),
        "driftwatch_agent",
    )
    .map_err(|e| RunError::Telemetry(e.to_string()))?;
    tracing::info!(
        "exporting request spans and metrics over OTLP to {}",
        otlp.endpoint
    );
    Ok(t)
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz`, over HTTPS when
/// `admin_tls` is configured, with the traffic listener's head timeout.
async fn serve_admin(
    state: Arc<State>,
    listener: std::net::TcpListener,
    tls: Option<Arc<ServerTls>>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        tracing::error!("the admin listener cannot be served");
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (s, tls) = (state.clone(), tls.clone());
        tokio::spawn(async move {
            let http = hyper_path::server_http1(s.config.http.header_timeout);
            let svc = service_fn({
                let s = s.clone();
                move |req| admin(s.clone(), req)
            });
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(tls) => {
                    if let Some(stream) = handshake(&s, &tls, stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
    }
}

/// The TLS handshake of a client connection within `header_timeout`; a
/// failed or late one is counted (`tls_handshake`, `header_timeout`).
async fn handshake(
    state: &State,
    tls: &ServerTls,
    stream: tokio::net::TcpStream,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tls.accept(stream, state.config.http.header_timeout).await {
        Ok(s) => Some(s),
        Err(e) => {
            state.metrics.refuse(match e {
                HandshakeError::Failed => "tls_handshake",
                HandshakeError::TimedOut => "header_timeout",
            });
            None
        }
    }
}

async fn admin(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(full(driftwatch_telemetry::render_metrics(
                state.metrics.registry(),
            )));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/healthz" | "/readyz" => Response::new(full("ok\n")),
        _ => json_error(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz",
        ),
    })
}

/// A connection dealt to a traffic thread, with its place among
/// `max_connections` (given back when it closes).
type Handoff = (
    std::net::TcpStream,
    Watcher,
    tokio::sync::OwnedSemaphorePermit,
);

/// A thread serving the connections it is dealt on a runtime of its own
/// (thread per core, like nginx's workers: a request never changes
/// threads, and no wakeup crosses to another one), with its own pools of
/// connections to the champions (the fast path's and hyper's). It ends
/// when the acceptor is gone and its connections have closed.
fn traffic_thread(
    i: usize,
    state: Arc<State>,
    stop: tokio::sync::watch::Receiver<bool>,
    tls: Option<Arc<ServerTls>>,
) -> Result<tokio::sync::mpsc::UnboundedSender<Handoff>, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("cannot start a traffic runtime"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
    std::thread::Builder::new()
        .name(format!("driftwatch-traffic-{i}"))
        .spawn(move || {
            runtime.block_on(async move {
                let pool = Arc::new(fast::Pool::new(state.pool_slots()));
                // A timer that always comes before any request's deadline:
                // without it, the first timer of an idle thread (a request's
                // upstream timeout) costs a wakeup of its own driver. It
                // also closes the fast path's stale champion connections.
                let p = pool.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(250));
                    loop {
                        tick.tick().await;
                        p.sweep();
                    }
                });
                let client = hyper_path::upstream_client();
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        handed = rx.recv() => {
                            let Some((stream, watcher, permit)) = handed else { break };
                            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                                continue;
                            };
                            let (s, c) = (state.clone(), client.clone());
                            if let Some(tls) = &tls {
                                // HTTPS is served through hyper.
                                let tls = tls.clone();
                                conns.spawn(async move {
                                    if let Some(stream) = handshake(&s, &tls, stream).await {
                                        hyper_path::serve_hyper(s, c, stream, Bytes::new(), watcher).await;
                                    }
                                    drop(permit);
                                });
                            } else if s.config.fast_path {
                                let (p, stop) = (pool.clone(), stop.clone());
                                conns.spawn(async move {
                                    fast::serve(s, p, c, stream, watcher, stop).await;
                                    drop(permit);
                                });
                            } else {
                                conns.spawn(async move {
                                    hyper_path::serve_hyper(s, c, stream, Bytes::new(), watcher).await;
                                    drop(permit);
                                });
                            }
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
                while conns.join_next().await.is_some() {}
            });
        })
        .map_err(io("cannot start a traffic thread"))?;
    Ok(tx)
}

/// Resolves on SIGTERM or Ctrl-C: the agent's default shutdown.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
