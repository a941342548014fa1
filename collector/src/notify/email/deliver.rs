//! Delivery by email: one SMTP session per attempt. A 5xx answer is final;
//! anything else (the server away, a 4xx) may pass later.

use super::template;
use super::{Config, Tls};
use crate::notify::http::ATTEMPT_TIMEOUT;
use crate::notify::{Context, DeliveryError, Message};

type Smtp = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;

/// One attempt.
pub async fn send(
    config: &Config,
    message: &Message,
    cx: Context<'_>,
) -> Result<(), DeliveryError> {
    let email = build(config, message, cx.external_url)?;
    let transport = transport(config)?;
    let smarthost = &config.smarthost;
    match lettre::AsyncTransport::send(&transport, email).await {
        Ok(_) => Ok(()),
        // 5xx: the server refuses for good; anything else may pass later.
        Err(e) if e.is_permanent() => {
            Err(DeliveryError::permanent(format!("SMTP {smarthost}: {e}")))
        }
        Err(e) => Err(DeliveryError::retry(format!("SMTP {smarthost}: {e}"))),
    }
}

/// The message: subject, sender, recipients, a text and an HTML part; a
/// `Message-ID` and an `Idempotency-Key` that every attempt of the same
/// outbox message repeats (after a restart too), so that a mail system or
/// a reader can drop a resend.
fn build(
    config: &Config,
    message: &Message,
    external_url: Option<&str>,
) -> Result<lettre::Message, DeliveryError> {
    let from = &config.from;
    let mut email = lettre::Message::builder()
        .from(
            from.parse()
                .map_err(|e| DeliveryError::permanent(format!("from {from:?}: {e}")))?,
        )
        .subject(template::subject(message))
        .message_id(Some(message_id(message)))
        .raw_header(lettre::message::header::HeaderValue::new(
            lettre::message::header::HeaderName::new_from_ascii_str("Idempotency-Key"),
            message.idempotency_key.clone(),
        ));
    for t in &config.to {
        email = email.to(t
            .parse()
            .map_err(|e| DeliveryError::permanent(format!("to {t:?}: {e}")))?);
    }
    let body = template::Body::of(message, external_url);
    email
        .multipart(lettre::message::MultiPart::alternative_plain_html(
            body.text(),
            body.html(),
        ))
        .map_err(|e| DeliveryError::permanent(e.to_string()))
}

/// The `Message-ID` of an outbox message: its idempotency key.
pub fn message_id(message: &Message) -> String {
    format!("<{}@driftwatch>", message.idempotency_key)
}

/// The SMTP connection as configured, with credentials when a user is set.
fn transport(config: &Config) -> Result<Smtp, DeliveryError> {
    let smarthost = &config.smarthost;
    let (host, port) = smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            DeliveryError::permanent(format!("smarthost {smarthost:?} is not host:port"))
        })?;
    let refused = |e: lettre::transport::smtp::Error| DeliveryError::permanent(e.to_string());
    let builder = match config.tls {
        Tls::StartTls => Smtp::starttls_relay(&host).map_err(refused)?,
        Tls::Tls => Smtp::relay(&host).map_err(refused)?,
        Tls::None => Smtp::builder_dangerous(&host),
    };
    let mut builder = builder.port(port).timeout(Some(ATTEMPT_TIMEOUT));
    if let Some(user) = &config.username {
        let pass = match &config.password {
            Some(p) => {
                String::from_utf8_lossy(&p.read().map_err(DeliveryError::retry)?).into_owned()
            }
            None => String::new(),
        };
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            pass,
        ));
    }
    Ok(builder.build())
}
