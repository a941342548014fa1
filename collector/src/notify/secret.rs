//! Secrets of receivers and actions (SMTP passwords, Slack webhook URLs,
//! HMAC keys, header values): named in the YAML by environment variable
//! (`KEY_env`) or file (`KEY_file`), read at each delivery, never written
//! in the YAML and never logged.

use std::path::PathBuf;

use crate::yaml::{Checker, Fields};

/// A secret's source.
#[derive(Debug, Clone, PartialEq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

impl Secret {
    /// The secret's bytes (a file's trailing line end dropped), or why not.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Secret::Env(var) => std::env::var(var)
                .map(String::into_bytes)
                .map_err(|_| format!("environment variable {var} is not set")),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
                .map_err(|e| format!("{}: {e}", path.display())),
        }
    }

    /// The secret as text, trimmed (URLs, header values).
    pub fn read_text(&self) -> Result<String, String> {
        self.read()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
    }
}

/// `KEY_env` or `KEY_file` (one of them; `required` demands it).
pub fn check(c: &mut Checker, g: &Fields<'_>, key: &str, required: bool) -> Option<Secret> {
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
