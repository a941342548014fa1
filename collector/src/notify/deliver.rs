//! Delivery of queued messages to receivers: the log receiver (a JSON line
//! on standard error or appended to a file), webhooks (driftwatch's JSON or
//! Alertmanager's version 4 payload, custom headers, optional HMAC-SHA256
//! signature), Slack incoming webhooks (Block Kit, cut to Slack's limits
//! with a link to the rest) and an existing Alertmanager
//! (`POST /api/v2/alerts`), and email over SMTP (lettre: STARTTLS, implicit
//! TLS or plain for local relays; a plain-text and an HTML part); and
//! action calls (retraining webhooks) with their rendered bodies.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{retry_at, Message};
use crate::rules::receivers::{ReceiverKind, Secret, Tls, WebhookFormat};
use crate::rules::{Action, Receiver};
use crate::serve::AppState;
use crate::store::{Attempt, Queued};

/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox is polled for due messages.
const POLL: Duration = Duration::from_millis(250);

/// Messages being attempted at once, at most.
const MAX_IN_FLIGHT: usize = 128;

/// Delivers due messages until the task is aborted. Each message is
/// attempted on its own task and recorded when its attempt ends, so a
/// receiver that hangs (up to `ATTEMPT_TIMEOUT`) delays no other message.
pub async fn run(state: Arc<AppState>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot build the HTTP client for notifications: {e}");
            return;
        }
    };
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let seed = chrono::Utc::now().timestamp_millis() as u64;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(alerting) = &state.alerting else {
            return;
        };
        let busy = lock(&in_flight).len();
        if busy >= MAX_IN_FLIGHT {
            continue;
        }
        let s = state.clone();
        let now = chrono::Utc::now().timestamp_millis();
        // Rows in flight are still pending: ask for enough to get past them.
        let limit = busy + MAX_IN_FLIGHT;
        let due = match tokio::task::spawn_blocking(move || s.store.due(now, limit)).await {
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
        let targets = Arc::new((alerting.receivers(), alerting.actions()));
        for q in due {
            {
                let mut set = lock(&in_flight);
                if set.len() >= MAX_IN_FLIGHT || !set.insert(q.id) {
                    continue;
                }
            }
            let (client, targets) = (client.clone(), targets.clone());
            let (state, in_flight) = (state.clone(), in_flight.clone());
            let jitter = crate::window::Rng::new(seed ^ q.id as u64 ^ q.attempts as u64).below(1000)
                as f64
                / 1000.0;
            tokio::spawn(async move {
                let started = std::time::SystemTime::now();
                let (message, external) = (q.clone(), state.external_url.clone());
                // A panic inside the attempt is retried like a failure.
                let result = tokio::spawn(async move {
                    let (receivers, actions) = &*targets;
                    match actions.iter().find(|a| a.name == message.receiver) {
                        Some(action) => call(&client, action, &message).await,
                        None => attempt(&client, receivers, &message, external.as_deref()).await,
                    }
                })
                .await
                .unwrap_or_else(|_| Err(("the delivery task failed".into(), true)));
                delivery_span(&state, &q, started, &result);
                record(&state, &q, result, jitter).await;
                lock(&in_flight).remove(&q.id);
            });
        }
    }
}

/// A span for one delivery attempt (a notification or an action call).
fn delivery_span(
    state: &AppState,
    q: &Queued,
    started: std::time::SystemTime,
    result: &Result<(), (String, bool)>,
) {
    use driftwatch_telemetry::{KeyValue, SpanKind};
    state.telemetry.span(
        "deliver notification",
        SpanKind::Client,
        None,
        started,
        std::time::SystemTime::now(),
        vec![
            KeyValue::new("driftwatch.receiver", q.receiver.clone()),
            KeyValue::new("driftwatch.attempt", i64::from(q.attempts) + 1),
            KeyValue::new(
                "driftwatch.outcome",
                if result.is_ok() {
                    "delivered"
                } else {
                    "failed"
                },
            ),
        ],
        result.as_ref().err().map(|(why, _)| why.clone()),
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts and stores one attempt's outcome: delivered, retried later with
/// backoff, or dead-lettered.
async fn record(
    state: &Arc<AppState>,
    q: &Queued,
    result: Result<(), (String, bool)>,
    jitter: f64,
) {
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
    if let Err(e) = state.store.record_attempts(vec![record]).await {
        // The row stays pending and is tried again: at least once.
        eprintln!("error: recording notification attempts failed: {e}");
    }
    // The outbox counts are a database read: off the reactor, like `due`.
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(a) = &s.alerting {
            a.publish_outbox(&s);
        }
    })
    .await;
}

/// One attempt of an action call. A 409 Conflict counts as done: the
/// job exists already (Airflow answers so to a `dag_run_id` it has seen).
async fn call(client: &reqwest::Client, action: &Action, q: &Queued) -> Result<(), (String, bool)> {
    let call: super::action::Call = serde_json::from_str(&q.payload)
        .map_err(|e| (format!("unreadable queued action call: {e}"), false))?;
    let body = call.body.into_bytes();
    let mut headers = action.headers.clone();
    for (name, secret) in &action.secret_headers {
        let value = read_secret(secret).map_err(|e| (e, true))?;
        headers.push((
            name.clone(),
            String::from_utf8_lossy(&value).trim().to_string(),
        ));
    }
    if let Some(secret) = &action.hmac_secret {
        headers.extend(signature(secret, &body)?);
    }
    match post(client, &action.url, &call.idempotency_key, &headers, body).await {
        Err((why, _)) if why.starts_with("HTTP 409") => Ok(()),
        other => other,
    }
}

/// One attempt: Ok, or the reason and whether a retry makes sense.
async fn attempt(
    client: &reqwest::Client,
    receivers: &[Receiver],
    q: &Queued,
    external_url: Option<&str>,
) -> Result<(), (String, bool)> {
    let message: Message = serde_json::from_str(&q.payload)
        .map_err(|e| (format!("unreadable queued message: {e}"), false))?;
    let Some(receiver) = receivers.iter().find(|r| r.name == q.receiver) else {
        return Err((
            format!("receiver {} is no longer configured", q.receiver),
            false,
        ));
    };
    let json = |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| (e.to_string(), false));
    match &receiver.kind {
        ReceiverKind::Log { path } => log(path.as_deref(), &message).map_err(|e| (e, true)),
        ReceiverKind::Webhook {
            url,
            headers,
            hmac_secret,
            format,
        } => {
            let body = match format {
                WebhookFormat::Driftwatch => {
                    serde_json::to_vec(&message).map_err(|e| (e.to_string(), false))?
                }
                WebhookFormat::Alertmanager => json(&alertmanager_v4(&message, external_url))?,
            };
            let mut extra: Vec<(String, String)> = headers.clone();
            if let Some(secret) = hmac_secret {
                extra.extend(signature(secret, &body)?);
            }
            post(client, url, &message.idempotency_key, &extra, body).await
        }
        ReceiverKind::Slack { url } => {
            let url = read_secret(url)
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .map_err(|e| (e, true))?;
            let body = json(&slack_blocks(&message, external_url))?;
            post(client, &url, &message.idempotency_key, &[], body).await
        }
        ReceiverKind::Alertmanager { url } => {
            let body = json(&alertmanager_alerts(&message, external_url))?;
            let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
            post(client, &endpoint, &message.idempotency_key, &[], body).await
        }
        ReceiverKind::Email {
            to,
            from,
            smarthost,
            tls,
            username,
            password,
        } => {
            let mut email = lettre::Message::builder()
                .from(
                    from.parse()
                        .map_err(|e| (format!("from {from:?}: {e}"), false))?,
                )
                .subject(super::email::subject(&message));
            for t in to {
                email = email.to(t.parse().map_err(|e| (format!("to {t:?}: {e}"), false))?);
            }
            let email = email
                .multipart(lettre::message::MultiPart::alternative_plain_html(
                    super::email::text(&message, external_url),
                    super::email::html(&message, external_url),
                ))
                .map_err(|e| (e.to_string(), false))?;
            let (host, port) = smarthost
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| (format!("smarthost {smarthost:?} is not host:port"), false))?;
            type Smtp = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;
            let builder = match tls {
                Tls::StartTls => Smtp::starttls_relay(&host).map_err(|e| (e.to_string(), false))?,
                Tls::Tls => Smtp::relay(&host).map_err(|e| (e.to_string(), false))?,
                Tls::None => Smtp::builder_dangerous(&host),
            };
            let mut builder = builder.port(port).timeout(Some(ATTEMPT_TIMEOUT));
            if let Some(user) = username {
                let pass = match password {
                    Some(p) => String::from_utf8_lossy(&read_secret(p).map_err(|e| (e, true))?)
                        .into_owned(),
                    None => String::new(),
                };
                builder = builder.credentials(
                    lettre::transport::smtp::authentication::Credentials::new(user.clone(), pass),
                );
            }
            let transport = builder.build();
            match lettre::AsyncTransport::send(&transport, email).await {
                Ok(_) => Ok(()),
                // 5xx: the server refuses for good; anything else may pass later.
                Err(e) if e.is_permanent() => Err((format!("SMTP {smarthost}: {e}"), false)),
                Err(e) => Err((format!("SMTP {smarthost}: {e}"), true)),
            }
        }
    }
}

/// POSTs a JSON body; 2xx is delivered, 408/429/5xx and transport errors
/// are retried, other answers are final.
async fn post(
    client: &reqwest::Client,
    url: &str,
    idempotency_key: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<(), (String, bool)> {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", idempotency_key);
    for (k, v) in headers {
        req = req.header(k, v);
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
        408 | 429 => Err((format!("HTTP {status}"), true)),
        400..=499 => {
            let text = resp.text().await.unwrap_or_default();
            Err((format!("HTTP {status}: {}", truncate(&text, 200)), false))
        }
        _ => Err((format!("HTTP {status}"), true)),
    }
}

/// `text` cut to at most `max` characters, ending in "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's limits: header text 150 characters, section text 3000.
const SLACK_HEADER_MAX: usize = 150;
const SLACK_SECTION_MAX: usize = 3000;

/// A Slack message with Block Kit blocks: a header, one section per alert
/// (its summary or description, value and threshold), its labels as
/// context, and a link to the full alert list when `external_url` is set.
/// Sections longer than Slack allows are cut, with the link to the rest.
pub fn slack_blocks(m: &Message, external_url: Option<&str>) -> serde_json::Value {
    let title = super::title(m);
    let link = super::alerts_link(external_url);
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(&title, SLACK_HEADER_MAX)},
    })];
    // Slack allows 50 blocks; keep room for the header and the link.
    for a in m.alerts.iter().take(23) {
        let summary = a
            .annotations
            .get("summary")
            .or_else(|| a.annotations.get("description"))
            .cloned()
            .unwrap_or_default();
        let mut text = format!(
            "*{summary}*\nvalue `{}` (threshold `{}`), since {}",
            a.value, a.threshold, a.starts_at
        );
        if let Some(d) = a
            .annotations
            .get("description")
            .filter(|_| a.annotations.contains_key("summary"))
        {
            text.push('\n');
            text.push_str(d);
        }
        if text.chars().count() > SLACK_SECTION_MAX {
            let tail = match &link {
                Some(l) => format!("… <{l}|the rest>"),
                None => "…".to_string(),
            };
            let keep = SLACK_SECTION_MAX - tail.chars().count();
            text = text.chars().take(keep).collect::<String>() + &tail;
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": truncate(&labels.join("  "), SLACK_SECTION_MAX)}],
        }));
    }
    if let Some(l) = &link {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("<{l}|All active alerts>")},
        }));
    }
    json!({ "text": truncate(&title, SLACK_SECTION_MAX), "blocks": blocks })
}

/// Alertmanager's `POST /api/v2/alerts` body. A firing alert is valid for 4
/// minutes (`endsAt`) and resent every minute while it fires, as Prometheus
/// does; a resolved one ends when it resolved.
pub fn alertmanager_alerts(m: &Message, external_url: Option<&str>) -> serde_json::Value {
    let valid_until = rfc3339_now_plus(4 * 60);
    let alerts: Vec<serde_json::Value> = m
        .alerts
        .iter()
        .map(|a| am_alert(a, external_url, &valid_until).into())
        .collect();
    json!(alerts)
}

/// An alert as Alertmanager takes it; `open_end` is the `endsAt` of an
/// alert that has not resolved.
fn am_alert(
    a: &super::AlertView,
    external_url: Option<&str>,
    open_end: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut alert = serde_json::Map::new();
    alert.insert("labels".into(), json!(a.labels));
    alert.insert("annotations".into(), json!(a.annotations));
    let starts = a.fired_at.as_ref().unwrap_or(&a.starts_at);
    alert.insert("startsAt".into(), json!(starts));
    alert.insert(
        "endsAt".into(),
        json!(a.ends_at.as_deref().unwrap_or(open_end)),
    );
    let generator = super::alerts_link(external_url).unwrap_or_default();
    alert.insert("generatorURL".into(), json!(generator));
    alert
}

fn rfc3339_now_plus(seconds: i64) -> String {
    crate::rules::engine::rfc3339(chrono::Utc::now().timestamp_millis() + seconds * 1000)
}

/// The signature headers of a body signed now with the secret.
fn signature(secret: &Secret, body: &[u8]) -> Result<[(String, String); 2], (String, bool)> {
    let key = read_secret(secret).map_err(|e| (e, true))?;
    let ts = chrono::Utc::now().timestamp().to_string();
    Ok([
        ("X-Driftwatch-Signature".into(), sign(&key, &ts, body)),
        ("X-Driftwatch-Timestamp".into(), ts),
    ])
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
        // One write per line: deliveries run concurrently, and an
        // appending write of a whole line is not interleaved with another.
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
            .map_err(|e| format!("{}: {e}", p.display())),
    }
}

/// Alertmanager's webhook payload, version 4.
fn alertmanager_v4(m: &Message, external_url: Option<&str>) -> serde_json::Value {
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
        "externalURL": external_url.unwrap_or(""),
        "alerts": m.alerts.iter().map(|a| {
            // Alertmanager's zero time marks an alert that has not ended.
            let mut alert = am_alert(a, external_url, "0001-01-01T00:00:00Z");
            alert.insert("status".into(), json!(a.status));
            alert.insert("fingerprint".into(), json!(a.fingerprint));
            serde_json::Value::Object(alert)
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(summary: &str) -> Message {
        Message {
            receiver: "slack".into(),
            status: "firing".into(),
            idempotency_key: "k".into(),
            alerts: vec![super::super::AlertView {
                status: "firing".into(),
                labels: [
                    ("alertname", "FeatureDrift"),
                    ("model", "credit"),
                    ("feature", "age"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
                annotations: [("summary".to_string(), summary.to_string())].into(),
                starts_at: "2026-11-29T10:00:00Z".into(),
                fired_at: Some("2026-11-29T10:05:00Z".into()),
                ends_at: None,
                value: 0.42,
                threshold: 0.2,
                fingerprint: "f".into(),
                top_features: Vec::new(),
            }],
        }
    }

    #[test]
    fn concurrent_deliveries_to_a_log_file_write_whole_lines() {
        let dir = std::env::temp_dir().join(format!("dw-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notifications.jsonl");
        let _ = std::fs::remove_file(&path);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let m = message(&format!("{t}-{i} {}", "x".repeat(300)));
                        log(Some(&path), &m).expect("written");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 * 200);
        for l in lines {
            let m: Message = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(m.alerts.len(), 1);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slack_blocks_stay_within_slacks_limits_and_link_to_the_rest() {
        let long = "x".repeat(5000);
        let v = slack_blocks(&message(&long), Some("http://dw:8080"));
        let blocks = v["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "[FIRING] FeatureDrift credit");
        let section = blocks[1]["text"]["text"].as_str().expect("text");
        assert_eq!(section.chars().count(), SLACK_SECTION_MAX);
        assert!(
            section.ends_with("… <http://dw:8080/v1/alerts|the rest>"),
            "{section}"
        );
        assert!(blocks[2]["elements"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("feature=age")));
        let short = slack_blocks(&message("age drifted"), None);
        let text = short["blocks"][1]["text"]["text"].as_str().expect("text");
        assert!(
            text.starts_with("*age drifted*\nvalue `0.42` (threshold `0.2`)"),
            "{text}"
        );
    }

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
