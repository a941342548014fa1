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
use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{self, State};
use crate::shadow::Scorer;
use crate::ship::Shipper;

pub async fn run(config: Config) -> Result<(), String> {
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
    let shipping = tokio::spawn(shipper.clone().run(stop_rx, deadline));
    let traffic = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let admin = TcpListener::bind(&config.admin_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.admin_listen))?;
    let (traffic_addr, admin_addr) = (
        traffic.local_addr().map_err(|e| e.to_string())?,
        admin.local_addr().map_err(|e| e.to_string())?,
    );
    let state = State::new(config, models, metrics, shipper);
    // Tests and scripts read these lines for the ports.
    println!("listening on {traffic_addr}");
    println!("admin on {admin_addr}");
    eprintln!("driftwatch-agent listening on {traffic_addr} (admin {admin_addr})");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let admin_state = state.clone();
    let admin_task = tokio::spawn(async move {
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
    loop {
        tokio::select! {
            accepted = traffic.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let s = state.clone();
                let svc = service_fn(move |req| server::handle(s.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    eprintln!("shutting down: finishing requests in flight, flushing events");
    drop(traffic);
    let _ = tokio::time::timeout(deadline, graceful.shutdown()).await;
    // Give observations in flight a moment to reach the shipper.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(deadline + Duration::from_secs(1), shipping).await;
    admin_task.abort();
    Ok(())
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
