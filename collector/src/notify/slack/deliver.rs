//! Delivery to Slack: an incoming webhook gets a Block Kit message (a
//! header, one section per alert, its labels as context), cut to Slack's
//! limits with a link to the rest.

use serde_json::json;

use super::Config;
use crate::notify::http::{json_body, post};
use crate::notify::{alerts_link, title, truncate, Context, DeliveryError, Message};

/// One attempt.
pub async fn send(
    config: &Config,
    message: &Message,
    cx: Context<'_>,
) -> Result<(), DeliveryError> {
    let url = config.url.read_text().map_err(DeliveryError::retry)?;
    let body = json_body(&blocks(message, cx.external_url))?;
    post(cx.client, &url, &message.idempotency_key, &[], body).await
}

/// Slack's limits: header text 150 characters, section text 3000.
const SLACK_HEADER_MAX: usize = 150;
const SLACK_SECTION_MAX: usize = 3000;

/// A Slack message with Block Kit blocks: a header, one section per alert
/// (its summary or description, value and threshold), its labels as
/// context, and a link to the full alert list when `external_url` is set.
/// Sections longer than Slack allows are cut, with the link to the rest.
pub fn blocks(m: &Message, external_url: Option<&str>) -> serde_json::Value {
    let title = title(m);
    let link = alerts_link(external_url);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_message as message;

    #[test]
    fn slack_blocks_stay_within_slacks_limits_and_link_to_the_rest() {
        let long = "x".repeat(5000);
        let v = blocks(&message(&long), Some("http://dw:8080"));
        let list = v["blocks"].as_array().expect("blocks");
        assert_eq!(list[0]["type"], "header");
        assert_eq!(list[0]["text"]["text"], "[FIRING] FeatureDrift credit");
        let section = list[1]["text"]["text"].as_str().expect("text");
        assert_eq!(section.chars().count(), SLACK_SECTION_MAX);
        assert!(
            section.ends_with("… <http://dw:8080/v1/alerts|the rest>"),
            "{section}"
        );
        assert!(list[2]["elements"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("feature=age")));
        let short = blocks(&message("age drifted"), None);
        let text = short["blocks"][1]["text"]["text"].as_str().expect("text");
        assert!(
            text.starts_with("*age drifted*\nvalue `0.42` (threshold `0.2`)"),
            "{text}"
        );
    }
}
