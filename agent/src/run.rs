//! Starting and stopping the agent: shadow models (a model that cannot
//! load leaves the agent running without it, said once and shown by
//! `driftwatch_agent_shadow_up`), the shipper, the traffic and admin
//! listeners, and a graceful shutdown on SIGTERM or Ctrl-C: no new
//! connections, requests in flight finish, events are flushed within
//! `shutdown_deadline` (the rest spooled or counted).

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::fast;
use crate::metrics::Metrics;
use crate::server::{self, State};
use crate::shadow::Scorer;
use crate::ship::Shipper;

/// Serves until SIGTERM or Ctrl-C: the traffic listener on the current
/// runtime, everything else on `background`.
pub async fn run(config: Config, background: tokio::runtime::Handle) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let mut models = Vec::with_capacity(config.models.len());
    for m in &config.models {
        let scorer = match &m.shadow {
            None => None,
            Some(s) => {
                let up = metrics.shadow_up.with_label_values(&[&m.name]);
                match Scorer::start(m, s, config.ort_library.as_deref(), metrics.clone()) {
                    Ok(scorer) => {
                        up.set(1);
                        Some(scorer)
                    }
                    Err(e) => {
                        eprintln!(
                            "warning: model {}: the shadow model is unavailable, proxying without it: {e}",
                            m.name
                        );
                        up.set(0);
                        None
                    }
                }
            }
        };
        models.push(server::model_runtime(m.clone(), scorer)?);
    }
    let token = config.token()?;
    let shipper = Arc::new(Shipper::new(
        config.collector.clone(),
        token,
        metrics.clone(),
    )?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let deadline = config.shutdown_deadline;
    let shipping = background.spawn(shipper.clone().run(stop_rx, deadline));
    let traffic = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let admin = std::net::TcpListener::bind(&config.admin_listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot listen on {}: {e}", config.admin_listen))?;
    let (traffic_addr, admin_addr) = (
        traffic.local_addr().map_err(|e| e.to_string())?,
        admin.local_addr().map_err(|e| e.to_string())?,
    );
    let threads = config.traffic_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let telemetry = match &config.otlp {
        None => driftwatch_telemetry::Telemetry::off(),
        Some(otlp) => {
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
            .map_err(|e| format!("otlp: {e}"))?;
            eprintln!(
                "exporting request spans and metrics over OTLP to {}",
                otlp.endpoint
            );
            t
        }
    };
    let state = State::new(config, models, metrics, shipper, telemetry, &background);
    // Turns true at shutdown: the fast path's connections close when idle.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        workers.push(traffic_thread(i, state.clone(), stop.clone())?);
    }
    // Tests and scripts read these lines for the ports.
    println!("listening on {traffic_addr}");
    println!("admin on {admin_addr}");
    eprintln!(
        "driftwatch-agent listening on {traffic_addr} (admin {admin_addr}, {threads} traffic threads)"
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let admin_state = state.clone();
    let admin_task = background.spawn(async move {
        let Ok(admin) = TcpListener::from_std(admin) else {
            eprintln!("error: the admin listener cannot be served");
            return;
        };
        loop {
            let Ok((stream, _)) = admin.accept().await else {
                continue;
            };
            let s = admin_state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| server::admin(s.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        tokio::select! {
            accepted = traffic.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                // Connections are dealt to the traffic threads in turn.
                let handed = stream
                    .into_std()
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        workers[next % threads]
                            .send((s, graceful.watcher()))
                            .map_err(|_| format!("traffic thread {} has stopped", next % threads))
                    });
                next += 1;
                if let Err(e) = handed {
                    eprintln!("error: a connection was closed unserved: {e}");
                }
            }
            _ = &mut shutdown => break,
        }
    }
    eprintln!("shutting down: finishing requests in flight, flushing events");
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

type Handoff = (std::net::TcpStream, Watcher);

/// A thread serving the connections it is dealt on a runtime of its own
/// (thread per core, like nginx's workers: a request never changes
/// threads, and no wakeup crosses to another one), with its own pools of
/// connections to the champions (the fast path's and hyper's). It ends
/// when the acceptor is gone and its connections have closed.
fn traffic_thread(
    i: usize,
    state: Arc<State>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::sync::mpsc::UnboundedSender<Handoff>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a traffic runtime: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
    std::thread::Builder::new()
        .name(format!("driftwatch-traffic-{i}"))
        .spawn(move || {
            runtime.block_on(async move {
                let pool = Arc::new(fast::Pool::new(state.models.len()));
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
                let client = server::upstream_client();
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        handed = rx.recv() => {
                            let Some((stream, watcher)) = handed else { break };
                            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                                continue;
                            };
                            let (s, c) = (state.clone(), client.clone());
                            if s.config.fast_path {
                                let (p, stop) = (pool.clone(), stop.clone());
                                conns.spawn(fast::serve(s, p, c, stream, watcher, stop));
                            } else {
                                conns.spawn(server::serve_hyper(s, c, stream, watcher));
                            }
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
                while conns.join_next().await.is_some() {}
            });
        })
        .map_err(|e| format!("cannot start a traffic thread: {e}"))?;
    Ok(tx)
}

/// The nice value of the threads that do the agent's own work (parsing,
/// events, shipping, shadow scoring): when the cores are all busy, the
/// champion's traffic runs first and that work waits, then sheds (counted).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to `BACKGROUND_NICE`
/// (Linux; threads it starts inherit it). Raising it back is not allowed
/// without privileges, so this is done once per thread, at its start.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
            eprintln!("warning: cannot lower the priority of a background thread: {e}");
        }
    }
}

async fn shutdown_signal() {
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
