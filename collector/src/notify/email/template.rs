//! Email bodies: a subject that names the alert, and one body (what
//! drifted, by how much, since when, the labels and a link to the
//! collector) rendered twice, as the plain-text part and the HTML part.
//! Long annotations are cut (email clients clip large messages) with a
//! link to the full alert.

use crate::notify::{alerts_link, title, truncate, Message};

/// Characters kept of one annotation.
const ANNOTATION_MAX: usize = 4000;
/// Alerts listed in one message.
const ALERTS_MAX: usize = 50;

pub fn subject(m: &Message) -> String {
    // One alert: its summary; several: the features they name.
    let detail = match m.alerts.as_slice() {
        [a] => a.annotations.get("summary").cloned(),
        many => {
            let features: Vec<&str> = many
                .iter()
                .filter_map(|a| a.labels.get("feature").map(String::as_str))
                .collect();
            (!features.is_empty()).then(|| features.join(", "))
        }
    };
    let detail = detail.map_or(String::new(), |d| format!(": {d}"));
    // One header line: well under RFC 5322's 998 characters.
    truncate(
        &format!("{}{detail}", title(m)).replace(['\r', '\n'], " "),
        200,
    )
}

fn cut(text: &str, external_url: Option<&str>) -> String {
    if text.chars().count() <= ANNOTATION_MAX {
        return text.to_string();
    }
    let rest = alerts_link(external_url).map_or(String::new(), |l| format!(" (the rest: {l})"));
    truncate(text, ANNOTATION_MAX) + &rest
}

/// What an email says, decided once for both parts.
pub struct Body {
    alerts: Vec<Section>,
    /// Alerts beyond `ALERTS_MAX`, not listed.
    more: usize,
    link: Option<String>,
}

/// One alert of the message.
struct Section {
    firing: bool,
    /// `FIRING FeatureDrift`.
    heading: String,
    summary: Option<String>,
    /// Value, threshold, since and (once resolved) when it resolved.
    facts: Vec<(&'static str, String)>,
    /// The window's drifted features: (feature, test, statistic).
    features: Vec<(String, String, f64)>,
    /// The annotations but the summary, cut.
    annotations: Vec<(String, String)>,
    labels: Vec<(String, String)>,
}

impl Body {
    pub fn of(m: &Message, external_url: Option<&str>) -> Body {
        let alerts = m
            .alerts
            .iter()
            .take(ALERTS_MAX)
            .map(|a| {
                let name = a.labels.get("alertname").map_or("", String::as_str);
                let mut facts = vec![
                    ("value", a.value.to_string()),
                    ("threshold", a.threshold.to_string()),
                    ("since", a.starts_at.clone()),
                ];
                if let Some(end) = &a.ends_at {
                    facts.push(("resolved", end.clone()));
                }
                Section {
                    firing: a.status == "firing",
                    heading: format!("{} {name}", a.status.to_uppercase()),
                    summary: a.annotations.get("summary").map(|s| cut(s, external_url)),
                    facts,
                    features: a.top_features.clone(),
                    annotations: a
                        .annotations
                        .iter()
                        .filter(|(k, _)| *k != "summary")
                        .map(|(k, v)| (k.clone(), cut(v, external_url)))
                        .collect(),
                    labels: a.labels.clone().into_iter().collect(),
                }
            })
            .collect();
        Body {
            alerts,
            more: m.alerts.len().saturating_sub(ALERTS_MAX),
            link: alerts_link(external_url),
        }
    }

    /// The plain-text part.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for a in &self.alerts {
            out.push_str(&format!("{}\n", a.heading));
            if let Some(s) = &a.summary {
                out.push_str(&format!("{s}\n"));
            }
            out.push('\n');
            for (k, v) in &a.facts {
                out.push_str(&format!("{k}: {v}\n"));
            }
            if !a.features.is_empty() {
                out.push_str("drifted features in the window:\n");
                for (f, test, v) in &a.features {
                    out.push_str(&format!("  {f}: {test} {v:.4}\n"));
                }
            }
            for (k, v) in &a.annotations {
                out.push_str(&format!("{k}: {v}\n"));
            }
            out.push_str("labels:\n");
            for (k, v) in &a.labels {
                out.push_str(&format!("  {k} = {v}\n"));
            }
            out.push('\n');
        }
        if self.more > 0 {
            out.push_str(&format!("... and {} more alerts\n", self.more));
        }
        if let Some(l) = &self.link {
            out.push_str(&format!("All active alerts: {l}\n"));
        }
        out
    }

    /// The HTML part.
    pub fn html(&self) -> String {
        let mut out = String::from("<!doctype html><html><body style=\"font-family:sans-serif\">");
        for a in &self.alerts {
            let colour = if a.firing { "#b42318" } else { "#067647" };
            out.push_str(&format!(
                "<h2 style=\"color:{colour}\">{}</h2>",
                escape(&a.heading)
            ));
            if let Some(s) = &a.summary {
                out.push_str(&format!("<p><strong>{}</strong></p>", escape(s)));
            }
            out.push_str("<table cellpadding=\"4\">");
            let mut row = |k: &str, v: &str| {
                out.push_str(&format!(
                    "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                    escape(k),
                    escape(v)
                ));
            };
            for (k, v) in &a.facts {
                row(k, v);
            }
            if !a.features.is_empty() {
                let list: Vec<String> = a
                    .features
                    .iter()
                    .map(|(f, test, v)| format!("{f} ({test} {v:.4})"))
                    .collect();
                row("drifted features", &list.join(", "));
            }
            for (k, v) in a.annotations.iter().chain(&a.labels) {
                row(k, v);
            }
            out.push_str("</table>");
        }
        if self.more > 0 {
            out.push_str(&format!("<p>... and {} more alerts</p>", self.more));
        }
        if let Some(l) = &self.link {
            out.push_str(&format!(
                "<p><a href=\"{0}\">All active alerts</a></p>",
                escape(l)
            ));
        }
        out.push_str("</body></html>");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
