//! The listener: connections accepted up to a bound, each served over
//! HTTP/1.1 (inside TLS when configured) with a deadline for the TLS
//! handshake and the request head, and a bound on the head's size; every
//! connection refused or cut is counted. Stops gracefully: requests in
//! flight finish.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use driftwatch_telemetry::conn::Tracked;
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;
use driftwatch_telemetry::tls::{HandshakeError, ServerTls};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HttpLimits;
use crate::export::metrics::Metrics;

/// Failed accepts (out of file descriptors) logged once a minute.
static REPEATS: LazyLock<Repeats> = LazyLock::new(Repeats::default);

/// Why a connection was refused or cut (`driftwatch_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` were open.
    Limit,
    /// The head (or the TLS handshake) did not arrive within
    /// `header_timeout` (an idle keep-alive connection closed is not counted).
    HeaderTimeout,
    /// The head was larger than `max_header_bytes` (answered 431).
    HeaderTooLarge,
    /// The TLS handshake failed (no or a wrong client certificate, not TLS).
    Tls,
    /// A request body did not arrive within `body_timeout` (answered 408).
    BodyTimeout,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::Tls => "tls_handshake",
            Refusal::BodyTimeout => "body_timeout",
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the
/// connections' requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerTls>>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                // Out of file descriptors and the like: wait, then go on.
                Err(e) => {
                    throttled!(
                        REPEATS,
                        "accept",
                        tracing::Level::WARN,
                        {},
                        "accept failed: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&metrics, Refusal::Limit);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, metrics, tls) = (app.clone(), metrics.clone(), tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_header_size(limits.max_header_bytes);
            let mid_request;
            let served = match tls {
                None => {
                    let (io, flag) = Tracked::new(stream);
                    mid_request = flag;
                    let conn = http.serve_connection(TokioIo::new(io), service);
                    watcher.watch(conn).await
                }
                Some(tls) => match tls.accept(stream, limits.header_timeout).await {
                    Ok(stream) => {
                        let (io, flag) = Tracked::new(stream);
                        mid_request = flag;
                        let conn = http.serve_connection(TokioIo::new(io), service);
                        watcher.watch(conn).await
                    }
                    Err(HandshakeError::Failed) => return refuse(&metrics, Refusal::Tls),
                    Err(HandshakeError::TimedOut) => {
                        return refuse(&metrics, Refusal::HeaderTimeout)
                    }
                },
            };
            if let Err(e) = served {
                // An idle keep-alive connection closed is not a refusal.
                if e.is_timeout() && mid_request.load(Ordering::Relaxed) {
                    refuse(&metrics, Refusal::HeaderTimeout);
                } else if e.is_parse_too_large() {
                    refuse(&metrics, Refusal::HeaderTooLarge);
                }
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

pub fn refuse(metrics: &Metrics, why: Refusal) {
    metrics
        .connections_refused
        .with_label_values(&[why.as_str()])
        .inc();
}
