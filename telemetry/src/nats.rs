//! Connecting to NATS and publishing to JetStream, as collectors in
//! cluster mode and agents that publish there directly both do: one way
//! to read credentials, to connect, and to publish a record with its id
//! (stored once within the stream's duplicate window).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use async_nats::jetstream;
use bytes::Bytes;

/// Credentials for the servers, read from env or files at start.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Token(String),
    UserPassword(String, String),
    /// A `.creds` file (JWT and NKey seed).
    CredsFile(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret in a log or an error.
        f.write_str(match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::UserPassword(..) => "user and password",
            Auth::CredsFile(_) => "credentials file",
        })
    }
}

/// The credential fields of a configuration block, as written.
#[derive(Debug, Clone, Default)]
pub struct Credentials<'a> {
    pub token_env: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    pub user: Option<&'a str>,
    pub password_env: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub creds_file: Option<&'a Path>,
}

impl Credentials<'_> {
    /// At most one way to authenticate, its secret read; problems go to
    /// `errors`, each naming its field under `block`.
    pub fn auth(
        &self,
        block: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Auth {
        let token = self.token_env.is_some() || self.token_file.is_some();
        let password = self.password_env.is_some() || self.password_file.is_some();
        let ways = [
            token,
            self.user.is_some() || password,
            self.creds_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            errors.push(format!(
                "{block}: give one of a token, a user with a password, or creds_file"
            ));
            return Auth::None;
        }
        if token {
            return secret(block, "token", self.token_env, self.token_file, env, errors)
                .map_or(Auth::None, Auth::Token);
        }
        if let Some(user) = self.user {
            return secret(
                block,
                "password",
                self.password_env,
                self.password_file,
                env,
                errors,
            )
            .map_or(Auth::None, |p| Auth::UserPassword(user.to_string(), p));
        }
        if password {
            errors.push(format!("{block}.user: a password needs its user"));
        }
        match self.creds_file {
            Some(path) if !path.is_file() => {
                errors.push(format!(
                    "{block}.creds_file: {} does not exist",
                    path.display()
                ));
                Auth::None
            }
            Some(path) => Auth::CredsFile(path.to_path_buf()),
            None => Auth::None,
        }
    }
}

/// A secret from `<what>_env` or `<what>_file` (exactly one), trimmed.
fn secret(
    block: &str,
    what: &str,
    var: Option<&str>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<String> {
    let value = match (var, file) {
        (Some(_), Some(_)) => {
            errors.push(format!("{block}: give {what}_env or {what}_file, not both"));
            return None;
        }
        (Some(var), None) => env(var)
            .ok_or_else(|| format!("{block}.{what}_env: environment variable {var} is not set")),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| format!("{block}.{what}_file: {}: {e}", file.display())),
        (None, None) => return None,
    };
    match value.map(|v| v.trim().to_string()) {
        Ok(v) if !v.is_empty() => Some(v),
        Ok(_) => {
            errors.push(format!("{block}: the {what} is empty"));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Whether `url` names a NATS server (`nats://host:port` or `tls://...`).
pub fn is_url(url: &str) -> bool {
    (url.starts_with("nats://") || url.starts_with("tls://"))
        && url
            .parse::<async_nats::ServerAddr>()
            .is_ok_and(|a| !a.host().is_empty())
}

/// The TLS files of a connection: the CAs that verify the servers, and a
/// client certificate with its key (mTLS).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Why a connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// No server answered in time: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The settings cannot work (a URL, a credentials file).
    #[error("{0}")]
    Refused(String),
}

/// Connects to the first of `urls` that answers within `timeout`, named
/// `name` in the servers' connection lists; reconnects on its own after.
pub async fn connect(
    urls: &[String],
    name: &str,
    auth: &Auth,
    tls: Option<&TlsFiles>,
    timeout: Duration,
) -> Result<async_nats::Client, ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(timeout)
        .max_reconnects(None);
    options = match auth {
        Auth::None => options,
        Auth::Token(t) => options.token(t.clone()),
        Auth::UserPassword(u, p) => options.user_and_password(u.clone(), p.clone()),
        Auth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
            ConnectError::Refused(format!("NATS credentials {}: {e}", path.display()))
        })?,
    };
    if let Some(tls) = tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let joined = urls.join(",");
    let addrs = urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::Refused(format!("NATS URLs {joined}: {e}")))?;
    tokio::time::timeout(timeout, options.connect(addrs))
        .await
        .map_err(|_| ConnectError::Unavailable(format!("no NATS server answered at {joined}")))?
        .map_err(|e| ConnectError::Unavailable(format!("cannot connect to NATS at {joined}: {e}")))
}

/// Appends `payload` under `subject` with the record id `id` and waits for
/// the stream's acknowledgement: `Ok(true)` when a record with that id was
/// stored before (within the duplicate window) and nothing was added.
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    id: String,
    payload: Bytes,
) -> Result<bool, String> {
    let message = jetstream::message::PublishMessage::build()
        .message_id(id)
        .payload(payload);
    let ack = js
        .send_publish(subject.clone(), message)
        .await
        .map_err(|e| format!("NATS: publish to {subject}: {e}"))?
        .await
        .map_err(|e| format!("NATS: publish to {subject}: {e}"))?;
    Ok(ack.duplicate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_one_way_and_read_from_env_or_file() {
        let mut errors = Vec::new();
        let both = Credentials {
            token_env: Some("T"),
            user: Some("u"),
            ..Default::default()
        };
        assert!(matches!(
            both.auth("nats", &|_| None, &mut errors),
            Auth::None
        ));
        assert_eq!(
            errors,
            ["nats: give one of a token, a user with a password, or creds_file"]
        );
        let mut errors = Vec::new();
        let token = Credentials {
            token_env: Some("T"),
            ..Default::default()
        };
        let auth = token.auth(
            "nats",
            &|v| (v == "T").then(|| " s3cret\n".into()),
            &mut errors,
        );
        assert!(
            matches!(auth, Auth::Token(ref t) if t == "s3cret"),
            "{errors:?}"
        );
        assert!(!format!("{auth:?}").contains("s3cret"));
        token.auth("cluster", &|_| None, &mut errors);
        assert_eq!(
            errors,
            ["cluster.token_env: environment variable T is not set"]
        );
        let mut errors = Vec::new();
        let lone = Credentials {
            password_env: Some("P"),
            ..Default::default()
        };
        lone.auth("nats", &|_| Some("p".into()), &mut errors);
        assert_eq!(errors, ["nats.user: a password needs its user"]);
    }

    #[test]
    fn only_nats_and_tls_urls_name_servers() {
        assert!(is_url("nats://a:4222"));
        assert!(is_url("tls://a.example:4443"));
        assert!(!is_url("http://a:4222"));
        assert!(!is_url("nats://"));
    }
}
