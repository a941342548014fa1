//! Email bodies: a subject that names the alert, a plain-text part and an
//! HTML part that say what drifted, by how much, since when, with the
//! labels and a link to the collector. Long annotations are cut (email
//! clients clip large messages) with a link to the full alert.

use super::{alerts_link, title, Message};
use crate::notify::deliver::truncate;

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

pub fn text(m: &Message, external_url: Option<&str>) -> String {
    let mut out = String::new();
    for a in m.alerts.iter().take(ALERTS_MAX) {
        let name = a.labels.get("alertname").map_or("", String::as_str);
        out.push_str(&format!("{} {name}\n", a.status.to_uppercase()));
        if let Some(s) = a.annotations.get("summary") {
            out.push_str(&format!("{}\n", cut(s, external_url)));
        }
        out.push_str(&format!(
            "\nvalue: {}\nthreshold: {}\nsince: {}\n",
            a.value, a.threshold, a.starts_at
        ));
        if let Some(end) = &a.ends_at {
            out.push_str(&format!("resolved: {end}\n"));
        }
        if !a.top_features.is_empty() {
            out.push_str("drifted features in the window:\n");
            for (f, test, v) in &a.top_features {
                out.push_str(&format!("  {f}: {test} {v:.4}\n"));
            }
        }
        for (k, v) in &a.annotations {
            if k != "summary" {
                out.push_str(&format!("{k}: {}\n", cut(v, external_url)));
            }
        }
        out.push_str("labels:\n");
        for (k, v) in &a.labels {
            out.push_str(&format!("  {k} = {v}\n"));
        }
        out.push('\n');
    }
    if m.alerts.len() > ALERTS_MAX {
        out.push_str(&format!(
            "... and {} more alerts\n",
            m.alerts.len() - ALERTS_MAX
        ));
    }
    if let Some(l) = alerts_link(external_url) {
        out.push_str(&format!("All active alerts: {l}\n"));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn html(m: &Message, external_url: Option<&str>) -> String {
    let mut out = String::from("<!doctype html><html><body style=\"font-family:sans-serif\">");
    for a in m.alerts.iter().take(ALERTS_MAX) {
        let name = a.labels.get("alertname").map_or("", String::as_str);
        let colour = if a.status == "firing" {
            "#b42318"
        } else {
            "#067647"
        };
        out.push_str(&format!(
            "<h2 style=\"color:{colour}\">{} {}</h2>",
            escape(&a.status.to_uppercase()),
            escape(name)
        ));
        if let Some(s) = a.annotations.get("summary") {
            out.push_str(&format!(
                "<p><strong>{}</strong></p>",
                escape(&cut(s, external_url))
            ));
        }
        out.push_str("<table cellpadding=\"4\">");
        let mut row = |k: &str, v: &str| {
            out.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape(k),
                escape(v)
            ));
        };
        row("value", &a.value.to_string());
        row("threshold", &a.threshold.to_string());
        row("since", &a.starts_at);
        if let Some(end) = &a.ends_at {
            row("resolved", end);
        }
        if !a.top_features.is_empty() {
            let list: Vec<String> = a
                .top_features
                .iter()
                .map(|(f, test, v)| format!("{f} ({test} {v:.4})"))
                .collect();
            row("drifted features", &list.join(", "));
        }
        for (k, v) in &a.annotations {
            if k != "summary" {
                row(k, &cut(v, external_url));
            }
        }
        for (k, v) in &a.labels {
            row(k, v);
        }
        out.push_str("</table>");
    }
    if m.alerts.len() > ALERTS_MAX {
        out.push_str(&format!(
            "<p>... and {} more alerts</p>",
            m.alerts.len() - ALERTS_MAX
        ));
    }
    if let Some(l) = alerts_link(external_url) {
        out.push_str(&format!(
            "<p><a href=\"{0}\">All active alerts</a></p>",
            escape(&l)
        ));
    }
    out.push_str("</body></html>");
    out
}
