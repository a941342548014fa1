//! An action as written in a rule file: a webhook called when an alert
//! fires (to start retraining), with headers, secret headers, an optional
//! HMAC secret, a body template and a cooldown.

use std::time::Duration;

use marked_yaml::Node;

use crate::notify::secret::{self, Secret};
use crate::yaml::Checker;

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Headers whose values are secrets (`Authorization: Bearer ...`).
    pub secret_headers: Vec<(String, Secret)>,
    pub hmac_secret: Option<Secret>,
    /// A minijinja template rendering the JSON body; the evidence when absent.
    pub body: Option<String>,
    /// No second call for the same model and rule within this time.
    pub cooldown: Duration,
}

/// The cooldown when an action does not set one.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(6 * 3600);

/// Checks one entry of `actions:`.
pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Action> {
    let f = c.fields(node, what, &["name", "cooldown", "webhook"])?;
    let before = c.diagnostics.len();
    let name = f
        .require(c, "name")
        .and_then(|n| c.string(n, &f.path("name")));
    let cooldown = f.get("cooldown").map_or(Some(DEFAULT_COOLDOWN), |n| {
        c.duration(n, &f.path("cooldown"), true)
    });
    let webhook = f.require(c, "webhook")?;
    let g = c.fields(
        webhook,
        &f.path("webhook"),
        &[
            "url",
            "headers",
            "headers_env",
            "headers_file",
            "hmac_secret_env",
            "hmac_secret_file",
            "body",
        ],
    )?;
    let url = g.url(c, "url");
    let headers = g
        .get("headers")
        .map_or(Some(Vec::new()), |n| c.string_map(n, &g.path("headers")));
    let mut secret_headers = Vec::new();
    for (key, make) in [
        ("headers_env", Secret::Env as fn(String) -> Secret),
        ("headers_file", |p: String| Secret::File(p.into())),
    ] {
        if let Some(n) = g.get(key) {
            for (header, source) in c.string_map(n, &g.path(key)).unwrap_or_default() {
                secret_headers.push((header, make(source)));
            }
        }
    }
    let hmac_secret = secret::check(c, &g, "hmac_secret", false);
    let body = g.get("body").and_then(|n| {
        let text = c.string(n, &g.path("body"))?;
        if let Err(e) = minijinja::Environment::new().template_from_str(&text) {
            c.at(
                n.span(),
                format!(
                    "{}: the template does not parse: {}",
                    g.path("body"),
                    e.detail().unwrap_or(&e.to_string())
                ),
            );
        }
        Some(text)
    });
    if c.diagnostics.len() > before {
        return None;
    }
    Some(Action {
        name: name?,
        url: url?,
        headers: headers?,
        secret_headers,
        hmac_secret,
        body,
        cooldown: cooldown?,
    })
}
