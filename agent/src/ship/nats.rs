//! Shipping straight to a cluster's log (NATS JetStream) instead of a
//! collector's HTTP ingest: `collector.url: nats://host:4222[,nats://...]`.
//! Each event is published under `<prefix>.events.<model>` with an id made
//! of its model and request id, so a batch retried after a failure (or
//! read again from the spool) is stored once within the stream's duplicate
//! window; a batch counts as sent once the stream acknowledged every
//! event. The model's owning collector validates and counts them.

use std::time::Duration;

use bytes::Bytes;
use driftwatch_protocol::subjects::{self, Kind};
use driftwatch_protocol::Event;
use driftwatch_telemetry::nats::{jetstream, Auth, Credentials, TlsFiles};

use crate::config::Collector;

/// A connection to the log, made at the first batch and kept (the client
/// reconnects on its own).
pub struct Target {
    urls: Vec<String>,
    prefix: String,
    auth: Auth,
    tls: Option<TlsFiles>,
    timeout: Duration,
    js: tokio::sync::Mutex<Option<jetstream::Context>>,
}

/// Why a batch was not sent (it is retried).
pub struct Failed {
    /// The stream did not acknowledge in time (else: not reachable).
    pub timeout: bool,
    pub why: String,
}

/// What the log said of a batch.
pub struct Sent {
    pub stored: u64,
    /// Events it held already (a retry): not lost, not counted again.
    pub duplicates: u64,
}

impl Target {
    /// The target of `cfg`, its credentials read (`None`: not NATS URLs).
    pub fn new(cfg: &Collector) -> Result<Option<Target>, String> {
        let Some(urls) = cfg.nats_urls() else {
            return Ok(None);
        };
        let nats = cfg.nats.clone().unwrap_or_default();
        let mut errors = Vec::new();
        // As over HTTP, a token variable that is not set means no token.
        let token_env = cfg
            .token_env
            .as_deref()
            .filter(|v| std::env::var_os(v).is_some());
        let auth = Credentials {
            token_env,
            token_file: cfg.token_file.as_deref(),
            user: nats.user.as_deref(),
            password_env: nats.password_env.as_deref(),
            password_file: nats.password_file.as_deref(),
            creds_file: nats.creds_file.as_deref(),
        }
        .auth("collector", &|v| std::env::var(v).ok(), &mut errors);
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let tls = cfg.tls.as_ref().map(|t| TlsFiles {
            ca_file: t.ca_file.clone(),
            client: t.client_cert_file.clone().zip(t.client_key_file.clone()),
        });
        Ok(Some(Target {
            urls,
            prefix: cfg.subject_prefix().to_string(),
            auth,
            tls,
            timeout: cfg.timeout,
            js: tokio::sync::Mutex::new(None),
        }))
    }

    /// The URLs, for messages.
    pub fn describe(&self) -> String {
        self.urls.join(",")
    }

    async fn context(&self) -> Result<jetstream::Context, String> {
        let mut js = self.js.lock().await;
        if let Some(js) = js.as_ref() {
            return Ok(js.clone());
        }
        let client = driftwatch_telemetry::nats::connect(
            &self.urls,
            "driftwatch-agent",
            &self.auth,
            self.tls.as_ref(),
            self.timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        let context = jetstream::new(client);
        *js = Some(context.clone());
        Ok(context)
    }

    /// Publishes every event and waits for the stream to acknowledge all
    /// of them, within the shipping timeout.
    pub async fn send(&self, events: Vec<Event>) -> Result<Sent, Failed> {
        let unreachable = |why: String| Failed {
            timeout: false,
            why,
        };
        let js = self.context().await.map_err(unreachable)?;
        let publishes = events.into_iter().map(|e| {
            let subject =
                subjects::record_subject(&self.prefix, Kind::Events, &e.model, &e.request_id);
            let id = subjects::event_id(&e.model, &e.request_id);
            let payload = Bytes::from(serde_json::to_vec(&e).unwrap_or_default());
            driftwatch_telemetry::nats::publish(&js, subject, id, payload)
        });
        let outcomes =
            tokio::time::timeout(self.timeout, futures_util::future::join_all(publishes))
                .await
                .map_err(|_| Failed {
                    timeout: true,
                    why: format!("the stream did not acknowledge within {:?}", self.timeout),
                })?;
        let mut sent = Sent {
            stored: 0,
            duplicates: 0,
        };
        for outcome in outcomes {
            match outcome.map_err(unreachable)? {
                true => sent.duplicates += 1,
                false => sent.stored += 1,
            }
        }
        Ok(sent)
    }
}
