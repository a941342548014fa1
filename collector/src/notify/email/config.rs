//! An `email:` receiver as written in a rule file: recipients, sender,
//! the SMTP server and how to reach it; the password by env var or file.

use marked_yaml::Node;

use crate::notify::secret::{self, Secret};
use crate::yaml::Checker;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub to: Vec<String>,
    pub from: String,
    /// `host:port` of the SMTP server.
    pub smarthost: String,
    pub tls: Tls,
    pub username: Option<String>,
    pub password: Option<Secret>,
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

/// Checks an `email:` receiver.
pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Config> {
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
    let password = secret::check(c, &g, "password", false);
    Some(Config {
        to: to?,
        from: from?,
        smarthost: smarthost?,
        tls: tls?,
        username,
        password,
    })
}
