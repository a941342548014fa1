//! A `webhook:` receiver as written in a rule file: the URL, extra
//! headers, an optional HMAC secret (by env var or file) and the body's
//! format.

use marked_yaml::Node;

use crate::notify::secret::{self, Secret};
use crate::yaml::Checker;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub hmac_secret: Option<Secret>,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// driftwatch's own JSON body.
    Driftwatch,
    /// Alertmanager's version 4 webhook payload.
    Alertmanager,
}

/// Checks a `webhook:` receiver.
pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Config> {
    let g = c.fields(
        node,
        what,
        &[
            "url",
            "headers",
            "hmac_secret_env",
            "hmac_secret_file",
            "format",
        ],
    )?;
    let url = g.url(c, "url");
    let headers = g
        .get("headers")
        .map_or(Some(Vec::new()), |n| c.string_map(n, &g.path("headers")));
    let hmac_secret = secret::check(c, &g, "hmac_secret", false);
    let format = match g.get("format") {
        None => Some(Format::Driftwatch),
        Some(n) => match c.string(n, &g.path("format")).as_deref() {
            Some("driftwatch") => Some(Format::Driftwatch),
            Some("alertmanager") => Some(Format::Alertmanager),
            Some(other) => {
                c.at(
                    n.span(),
                    format!(
                        "{}: unknown {other:?}, expected driftwatch or alertmanager",
                        g.path("format")
                    ),
                );
                None
            }
            None => None,
        },
    };
    Some(Config {
        url: url?,
        headers: headers?,
        hmac_secret,
        format: format?,
    })
}
