//! Receivers as written in rule files: where notifications go. Secrets
//! (SMTP passwords, Slack webhook URLs, HMAC keys) are named by environment
//! variable or file, never written in the YAML.

use std::path::PathBuf;

use marked_yaml::Node;

use super::yaml::{Checker, Fields};

#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    /// Also notify when an alert resolves (Alertmanager's default: true).
    pub send_resolved: bool,
}

/// A secret's source.
#[derive(Debug, Clone, PartialEq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: local relays and test servers only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// driftwatch's own JSON body.
    Driftwatch,
    /// Alertmanager's version 4 webhook payload.
    Alertmanager,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    Email {
        to: Vec<String>,
        from: String,
        /// `host:port` of the SMTP server.
        smarthost: String,
        tls: Tls,
        username: Option<String>,
        password: Option<Secret>,
    },
    Slack {
        url: Secret,
    },
    Webhook {
        url: String,
        headers: Vec<(String, String)>,
        hmac_secret: Option<Secret>,
        format: WebhookFormat,
    },
    Alertmanager {
        url: String,
    },
    /// One JSON line per notification on standard error or appended to a file.
    Log {
        path: Option<PathBuf>,
    },
}

const KINDS: &[&str] = &["email", "slack", "webhook", "alertmanager", "log"];

pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Receiver> {
    let mut allowed = vec!["name", "send_resolved"];
    allowed.extend_from_slice(KINDS);
    let f = c.fields(node, what, &allowed)?;
    let name = f
        .require(c, "name")
        .and_then(|n| c.string(n, &f.path("name")));
    let send_resolved = match f.get("send_resolved") {
        None => true,
        Some(n) => c.boolean(n, &f.path("send_resolved"))?,
    };
    let given: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| f.get(k).is_some())
        .collect();
    let kind = match given.as_slice() {
        [k] => {
            let node = f.get(k)?;
            let path = f.path(k);
            match *k {
                "email" => email(c, node, &path),
                "slack" => {
                    let g = c.fields(node, &path, &["url_env", "url_file"])?;
                    let url = secret(c, &g, "url", true)?;
                    Some(ReceiverKind::Slack { url })
                }
                "webhook" => webhook(c, node, &path),
                "alertmanager" => {
                    let g = c.fields(node, &path, &["url"])?;
                    let url = url(c, &g, "url")?;
                    Some(ReceiverKind::Alertmanager { url })
                }
                _ => {
                    let g = c.fields(node, &path, &["path"])?;
                    let path = g
                        .get("path")
                        .and_then(|n| c.string(n, &g.path("path")))
                        .map(PathBuf::from);
                    Some(ReceiverKind::Log { path })
                }
            }
        }
        _ => {
            c.at(
                f.span(),
                format!("{what}: give exactly one of: {}", KINDS.join(", ")),
            );
            None
        }
    };
    Some(Receiver {
        name: name?,
        kind: kind?,
        send_resolved,
    })
}

fn email(c: &mut Checker, node: &Node, what: &str) -> Option<ReceiverKind> {
    let g = c.fields(
        node,
        what,
        &[
            "to",
            "from",
            "smarthost",
            "tls",
            "username",
            "password_env",
            "password_file",
        ],
    )?;
    let to = g.require(c, "to").and_then(|n| c.strings(n, &g.path("to")));
    let from = g
        .require(c, "from")
        .and_then(|n| c.string(n, &g.path("from")));
    for (addr, key) in to
        .iter()
        .flatten()
        .map(|a| (a, "to"))
        .chain(from.iter().map(|a| (a, "from")))
    {
        if !addr.contains('@') {
            let at = g.get(key).map_or(g.span(), Node::span);
            c.at(
                at,
                format!("{}: {addr:?} is not an email address", g.path(key)),
            );
        }
    }
    let smarthost = g.require(c, "smarthost").and_then(|n| {
        let s = c.string(n, &g.path("smarthost"))?;
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Some(s),
            _ => {
                c.at(
                    n.span(),
                    format!("{}: {s:?} is not host:port", g.path("smarthost")),
                );
                None
            }
        }
    });
    let tls = match g.get("tls") {
        None => Some(Tls::StartTls),
        Some(n) => match c.string(n, &g.path("tls")).as_deref() {
            Some("starttls") => Some(Tls::StartTls),
            Some("tls") => Some(Tls::Tls),
            Some("none") => Some(Tls::None),
            Some(other) => {
                c.at(
                    n.span(),
                    format!(
                        "{}: unknown {other:?}, expected one of: starttls, tls, none",
                        g.path("tls")
                    ),
                );
                None
            }
            None => None,
        },
    };
    let username = g
        .get("username")
        .and_then(|n| c.string(n, &g.path("username")));
    let password = secret(c, &g, "password", false);
    Some(ReceiverKind::Email {
        to: to?,
        from: from?,
        smarthost: smarthost?,
        tls: tls?,
        username,
        password,
    })
}

fn webhook(c: &mut Checker, node: &Node, what: &str) -> Option<ReceiverKind> {
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
    let url = url(c, &g, "url");
    let headers = g
        .get("headers")
        .map_or(Some(Vec::new()), |n| c.string_map(n, &g.path("headers")));
    let hmac_secret = secret(c, &g, "hmac_secret", false);
    let format = match g.get("format") {
        None => Some(WebhookFormat::Driftwatch),
        Some(n) => match c.string(n, &g.path("format")).as_deref() {
            Some("driftwatch") => Some(WebhookFormat::Driftwatch),
            Some("alertmanager") => Some(WebhookFormat::Alertmanager),
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
    Some(ReceiverKind::Webhook {
        url: url?,
        headers: headers?,
        hmac_secret,
        format: format?,
    })
}

/// An http(s) URL with a host.
pub(super) fn url(c: &mut Checker, g: &Fields<'_>, key: &str) -> Option<String> {
    let n = g.require(c, key)?;
    let s = c.string(n, &g.path(key))?;
    match url::Url::parse(&s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(s),
        Ok(u) => {
            c.at(
                n.span(),
                format!(
                    "{}: {s:?} is not an http(s) URL (scheme {})",
                    g.path(key),
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            c.at(
                n.span(),
                format!("{}: {s:?} is not a URL: {e}", g.path(key)),
            );
            None
        }
    }
}

/// `KEY_env` or `KEY_file` (one of them; `required` demands it).
pub(super) fn secret(c: &mut Checker, g: &Fields<'_>, key: &str, required: bool) -> Option<Secret> {
    let env = g.get(&format!("{key}_env"));
    let file = g.get(&format!("{key}_file"));
    match (env, file) {
        (Some(n), None) => c.string(n, &g.path(&format!("{key}_env"))).map(Secret::Env),
        (None, Some(n)) => c
            .string(n, &g.path(&format!("{key}_file")))
            .map(|p| Secret::File(PathBuf::from(p))),
        (Some(_), Some(_)) => {
            c.at(
                g.span(),
                format!(
                    "{}: give one of `{key}_env` and `{key}_file`, not both",
                    g.what
                ),
            );
            None
        }
        (None, None) => {
            if required {
                c.at(g.span(), format!("{}: missing `{key}_env` or `{key}_file` (secrets are never written in the YAML)", g.what));
            }
            None
        }
    }
}
