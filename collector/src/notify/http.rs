//! The one HTTP sender of notifications: webhooks, Slack, Alertmanager and
//! action calls all POST a JSON body through `post`, with the message's
//! idempotency key on every attempt and, where a secret is configured, an
//! HMAC-SHA256 signature of the body.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secret::Secret;
use super::{truncate, DeliveryError};

/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs a JSON body; 2xx is delivered, 408/429/5xx and transport errors
/// are retried, other answers are final (the status is in the error).
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    idempotency_key: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<(), DeliveryError> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut all = HeaderMap::new();
    all.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A configured header replaces a default of the same name (two
    // Content-Type headers are refused by some servers, MLflow's among them).
    for (k, v) in std::iter::once(("Idempotency-Key", idempotency_key))
        .chain(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) else {
            return Err(DeliveryError::permanent(format!(
                "header {k:?} is not a valid HTTP header"
            )));
        };
        all.insert(k, v);
    }
    let req = client.post(url).headers(all);
    let resp = req.body(body).send().await.map_err(|e| {
        DeliveryError::retry(if e.is_timeout() {
            format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())
        } else {
            transport_error(e, url)
        })
    })?;
    let status = resp.status();
    let failed = |message: String, retry: bool| DeliveryError {
        message,
        retry,
        status: Some(status.as_u16()),
    };
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 429 => Err(failed(format!("HTTP {status}"), true)),
        400..=499 => {
            let text = resp.text().await.unwrap_or_default();
            Err(failed(
                format!("HTTP {status}: {}", truncate(&text, 200)),
                false,
            ))
        }
        _ => Err(failed(format!("HTTP {status}"), true)),
    }
}

/// A transport failure without the receiver's URL, whose path or query
/// may hold a key (Slack's webhooks): only its origin, then the causes.
/// The text is logged and stored with the notification.
fn transport_error(e: reqwest::Error, url: &str) -> String {
    let origin = url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "the receiver".to_string());
    let e = e.without_url();
    format!("{} to {origin}", driftwatch_telemetry::log::with_causes(&e))
}

/// The signature headers of a body signed now with the secret.
pub fn signature(secret: &Secret, body: &[u8]) -> Result<[(String, String); 2], DeliveryError> {
    let key = secret.read().map_err(DeliveryError::retry)?;
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

/// A value as JSON bytes; a value that cannot be serialised is final.
pub fn json_body(v: &impl serde::Serialize) -> Result<Vec<u8>, DeliveryError> {
    serde_json::to_vec(v).map_err(|e| DeliveryError::permanent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_post_says_where_without_the_urls_key() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let url = format!("http://{closed}/services/T0/B0/s3cretKey?token=s3cretToo");
        let client = reqwest::Client::new();
        let e = post(&client, &url, "key", &[], b"{}".to_vec())
            .await
            .expect_err("nothing listens");
        assert!(e.retry);
        assert!(
            e.message.contains(&format!("http://{closed}")),
            "{}",
            e.message
        );
        assert!(!e.message.contains("s3cret"), "{}", e.message);
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
