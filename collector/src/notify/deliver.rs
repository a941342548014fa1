//! Delivery of queued messages to receivers: the log receiver (a JSON line
//! on standard error or appended to a file) and webhooks (driftwatch's JSON
//! or Alertmanager's version 4 payload, custom headers, optional
//! HMAC-SHA256 signature). Email, Slack and Alertmanager receivers are
//! accepted by the rule checker but not delivered by this release: their
//! messages are dead-lettered at once with that reason, counted.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{retry_at, Message};
use crate::rules::receivers::{ReceiverKind, Secret, WebhookFormat};
use crate::rules::Receiver;
use crate::serve::AppState;
use crate::store::{Attempt, Queued};

/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox is polled for due messages.
const POLL: Duration = Duration::from_millis(250);

/// Delivers due messages until the task is aborted.
pub async fn run(state: Arc<AppState>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot build the HTTP client for notifications: {e}");
            return;
        }
    };
    let mut rng = crate::window::Rng::new(chrono::Utc::now().timestamp_millis() as u64);
    loop {
        tokio::time::sleep(POLL).await;
        let Some(alerting) = &state.alerting else {
            return;
        };
        let s = state.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let due = match tokio::task::spawn_blocking(move || s.store.due(now, 64)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                eprintln!("error: reading the notification outbox failed: {e}");
                continue;
            }
            Err(_) => continue,
        };
        if due.is_empty() {
            continue;
        }
        let receivers = Arc::new(alerting.receivers());
        let mut set = tokio::task::JoinSet::new();
        for (i, q) in due.iter().enumerate() {
            let (client, receivers, q) = (client.clone(), receivers.clone(), q.clone());
            set.spawn(async move { (i, attempt(&client, &receivers, &q).await) });
        }
        let mut results: Vec<Option<Result<(), (String, bool)>>> =
            due.iter().map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, r)) = joined {
                results[i] = Some(r);
            }
        }
        let mut records = Vec::with_capacity(due.len());
        for (q, result) in due.iter().zip(results) {
            // A task that panicked is retried like a failed attempt.
            let result = result.unwrap_or_else(|| Err(("the delivery task failed".into(), true)));
            let outcome = match &result {
                Ok(()) => "delivered",
                Err((_, false)) => "dead",
                Err(_) if q.attempts + 1 >= super::MAX_ATTEMPTS => "dead",
                Err(_) => "failed",
            };
            state
                .metrics
                .notifications
                .with_label_values(&[q.receiver.as_str(), outcome])
                .inc();
            let now = chrono::Utc::now().timestamp_millis();
            let jitter = rng.below(1000) as f64 / 1000.0;
            let record = match result {
                Ok(()) => Attempt {
                    id: q.id,
                    error: None,
                    retry_at_ms: None,
                },
                Err((why, retry)) => {
                    let retry_at_ms = retry
                        .then(|| retry_at(now, q.attempts + 1, jitter))
                        .flatten();
                    let what = if retry_at_ms.is_some() {
                        "will retry"
                    } else {
                        "dead-lettered"
                    };
                    eprintln!(
                        "warning: notification {} to {} failed (attempt {}), {what}: {why}",
                        q.id,
                        q.receiver,
                        q.attempts + 1
                    );
                    Attempt {
                        id: q.id,
                        error: Some(why),
                        retry_at_ms,
                    }
                }
            };
            records.push(record);
        }
        if let Err(e) = state.store.record_attempts(records).await {
            // The rows stay pending and are tried again: at least once.
            eprintln!("error: recording notification attempts failed: {e}");
        }
        alerting.publish_outbox(&state);
    }
}

/// One attempt: Ok, or the reason and whether a retry makes sense.
async fn attempt(
    client: &reqwest::Client,
    receivers: &[Receiver],
    q: &Queued,
) -> Result<(), (String, bool)> {
    let message: Message = serde_json::from_str(&q.payload)
        .map_err(|e| (format!("unreadable queued message: {e}"), false))?;
    let Some(receiver) = receivers.iter().find(|r| r.name == q.receiver) else {
        return Err((
            format!("receiver {} is no longer configured", q.receiver),
            false,
        ));
    };
    match &receiver.kind {
        ReceiverKind::Log { path } => log(path.as_deref(), &message).map_err(|e| (e, true)),
        ReceiverKind::Webhook {
            url,
            headers,
            hmac_secret,
            format,
        } => {
            let body = match format {
                WebhookFormat::Driftwatch => serde_json::to_vec(&message),
                WebhookFormat::Alertmanager => serde_json::to_vec(&alertmanager_v4(&message)),
            }
            .map_err(|e| (e.to_string(), false))?;
            let mut req = client
                .post(url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", &message.idempotency_key);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(secret) = hmac_secret {
                let key = read_secret(secret).map_err(|e| (e, true))?;
                let ts = chrono::Utc::now().timestamp().to_string();
                req = req
                    .header("X-Driftwatch-Timestamp", &ts)
                    .header("X-Driftwatch-Signature", sign(&key, &ts, &body));
            }
            let resp = req.body(body).send().await.map_err(|e| {
                let why = if e.is_timeout() {
                    format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())
                } else {
                    format!("{e}")
                };
                (why, true)
            })?;
            let status = resp.status();
            match status.as_u16() {
                200..=299 => Ok(()),
                // Client errors other than throttling will not improve on retry.
                408 | 429 => Err((format!("HTTP {status}"), true)),
                400..=499 => Err((format!("HTTP {status}"), false)),
                _ => Err((format!("HTTP {status}"), true)),
            }
        }
        ReceiverKind::Email { .. }
        | ReceiverKind::Slack { .. }
        | ReceiverKind::Alertmanager { .. } => Err((
            "delivery to email, Slack and Alertmanager receivers is not in this release".into(),
            false,
        )),
    }
}

/// `sha256=HEX(HMAC-SHA256(key, "TIMESTAMP.BODY"))`.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn read_secret(secret: &Secret) -> Result<Vec<u8>, String> {
    match secret {
        Secret::Env(var) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable {var} is not set")),
        Secret::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
            .map_err(|e| format!("{}: {e}", path.display())),
    }
}

fn log(path: Option<&std::path::Path>, message: &Message) -> Result<(), String> {
    let line = serde_json::to_string(message).map_err(|e| e.to_string())?;
    match path {
        None => {
            eprintln!("notification {line}");
            Ok(())
        }
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| format!("{}: {e}", p.display())),
    }
}

/// Alertmanager's webhook payload, version 4.
fn alertmanager_v4(m: &Message) -> serde_json::Value {
    let common = |pick: fn(&super::AlertView) -> &std::collections::BTreeMap<String, String>| {
        let mut it = m.alerts.iter().map(pick);
        let first = it.next().cloned().unwrap_or_default();
        let rest: Vec<_> = it.collect();
        first
            .into_iter()
            .filter(|(k, v)| rest.iter().all(|o| o.get(k) == Some(v)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let labels = common(|a| &a.labels);
    let group: std::collections::BTreeMap<_, _> = labels
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "alertname" | "model"))
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{:?}", group),
        "truncatedAlerts": 0,
        "status": m.status,
        "receiver": m.receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": common(|a| &a.annotations),
        "externalURL": "",
        "alerts": m.alerts.iter().map(|a| json!({
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.fired_at.clone().unwrap_or_else(|| a.starts_at.clone()),
            "endsAt": a.ends_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "generatorURL": "",
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_python_hmac() {
        // python3 -c "import hmac, hashlib; print(hmac.new(b'secret',
        //   b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())"
        let sig = sign(b"secret", "1700000000", br#"{"a":1}"#);
        assert_eq!(
            sig,
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
