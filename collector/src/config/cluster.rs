//! The `cluster:` block: collectors that share a NATS JetStream log and
//! split the models between them (see the README's "Running more than one
//! collector"). Credentials come from environment variables or files.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Span;

/// The `cluster:` block as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// NATS servers, `nats://host:4222` (any one is enough to join).
    pub urls: Vec<String>,
    /// This collector's name in the cluster, distinct per process (default:
    /// host name and listen port).
    pub node: Option<String>,
    /// How the other collectors reach this one's API (default:
    /// `http://` or `https://` with the listen address, or the host name
    /// when it listens on every address).
    pub advertise_url: Option<String>,
    /// NATS token from this environment variable, or from `token_file`.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// NATS user, with its password from `password_env` or `password_file`.
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
    /// The JetStream stream (created if absent).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Subjects are `<subject_prefix>.events.<model>` and `.labels.`.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Key-value bucket of model leases (created if absent).
    #[serde(default = "default_leases")]
    pub leases_bucket: String,
    /// Key-value bucket of live collectors (created if absent).
    #[serde(default = "default_members")]
    pub members_bucket: String,
    /// Key-value bucket of alert states and silences (created if absent).
    #[serde(default = "default_alerts")]
    pub alerts_bucket: String,
    /// How long a model's owner may be silent before another takes over.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Span,
    /// How long the stream keeps records (default: what the models need,
    /// twice the longest window or the label TTL; less is refused).
    pub retention: Option<Span>,
    /// A retried publish within this time is stored once.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window: Span,
    /// Copies of the stream and buckets kept by the servers (default: the
    /// number of URLs listed, at most 3).
    pub replicas: Option<usize>,
}

/// The cluster settings as validated (secrets read).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub node: Option<String>,
    pub advertise_url: Option<String>,
    pub settings: crate::bus::nats::Settings,
    /// The retention asked for in the file, if any (checked against the
    /// models once they are loaded).
    pub retention: Option<Duration>,
}

fn default_stream() -> String {
    "DRIFTWATCH".into()
}
fn default_prefix() -> String {
    "driftwatch".into()
}
fn default_leases() -> String {
    "driftwatch-leases".into()
}
fn default_members() -> String {
    "driftwatch-members".into()
}
fn default_alerts() -> String {
    "driftwatch-alerts".into()
}
fn default_lease_ttl() -> Span {
    Span {
        duration: Duration::from_secs(10),
    }
}
fn default_duplicate_window() -> Span {
    Span {
        duration: Duration::from_secs(120),
    }
}

impl RawCluster {
    /// The block for `--cluster URL[,URL...]`: defaults everywhere.
    pub fn from_urls(urls: &str) -> RawCluster {
        RawCluster {
            urls: urls.split(',').map(|u| u.trim().to_string()).collect(),
            node: None,
            advertise_url: None,
            token_env: None,
            token_file: None,
            user: None,
            password_env: None,
            password_file: None,
            creds_file: None,
            stream: default_stream(),
            subject_prefix: default_prefix(),
            leases_bucket: default_leases(),
            members_bucket: default_members(),
            alerts_bucket: default_alerts(),
            lease_ttl: default_lease_ttl(),
            retention: None,
            duplicate_window: default_duplicate_window(),
            replicas: None,
        }
    }

    /// Checks the block and reads its secrets; every problem goes to
    /// `errors`.
    pub fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Option<Cluster> {
        let before = errors.len();
        if self.urls.is_empty() {
            errors.push("cluster.urls: at least one nats:// URL is needed".into());
        }
        for u in &self.urls {
            if !driftwatch_telemetry::nats::is_url(u) {
                errors.push(format!(
                    "cluster.urls: {u:?} is not a URL like nats://host:4222"
                ));
            }
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        for (field, value) in [
            ("stream", &self.stream),
            ("leases_bucket", &self.leases_bucket),
            ("members_bucket", &self.members_bucket),
            ("alerts_bucket", &self.alerts_bucket),
        ] {
            if !name_ok(value) {
                errors.push(format!(
                    "cluster.{field}: {value:?} must be letters, digits, _ and - only"
                ));
            }
        }
        if !self.subject_prefix.split('.').all(name_ok) {
            errors.push(format!(
                "cluster.subject_prefix: {:?} must be dot-separated tokens of letters, digits, _ and -",
                self.subject_prefix
            ));
        }
        if let Some(node) = &self.node {
            if !name_ok(node) {
                errors.push(format!(
                    "cluster.node: {node:?} must be letters, digits, _ and - only"
                ));
            }
        }
        if let Some(u) = &self.advertise_url {
            if !matches!(url::Url::parse(u), Ok(p) if matches!(p.scheme(), "http" | "https")) {
                errors.push(format!(
                    "cluster.advertise_url: {u:?} is not an http(s) URL"
                ));
            }
        }
        if self.lease_ttl.duration < Duration::from_secs(1) {
            errors.push("cluster.lease_ttl: must be at least 1s".into());
        }
        let replicas = self.replicas.unwrap_or(self.urls.len().clamp(1, 3));
        if !(1..=5).contains(&replicas) {
            errors.push(format!(
                "cluster.replicas: {replicas} is not between 1 and 5"
            ));
        }
        let auth = self.auth(env, errors);
        if errors.len() > before {
            return None;
        }
        Some(Cluster {
            node: self.node,
            advertise_url: self.advertise_url.map(|u| u.trim_end_matches('/').into()),
            retention: self.retention.map(|s| s.duration),
            settings: crate::bus::nats::Settings {
                urls: self.urls,
                node: String::new(),
                auth,
                stream: self.stream,
                prefix: self.subject_prefix,
                leases_bucket: self.leases_bucket,
                members_bucket: self.members_bucket,
                alerts_bucket: self.alerts_bucket,
                lease_ttl: self.lease_ttl.duration,
                retention: Duration::ZERO,
                duplicate_window: self.duplicate_window.duration,
                replicas,
            },
        })
    }

    /// At most one way to authenticate, its secret read.
    fn auth(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> crate::bus::nats::Auth {
        driftwatch_telemetry::nats::Credentials {
            token_env: self.token_env.as_deref(),
            token_file: self.token_file.as_deref(),
            user: self.user.as_deref(),
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_deref(),
            creds_file: self.creds_file.as_deref(),
        }
        .auth("cluster", env, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_block_is_checked_whole_and_its_secrets_read() {
        let raw: RawCluster = serde_yaml_ng::from_str(
            "urls: [nats://a:4222, 'http://b']\nstream: 'bad name'\ntoken_env: NATS_T\nlease_ttl: 500ms\n",
        )
        .expect("parses");
        let mut errors = Vec::new();
        assert!(raw.validate(&|_| None, &mut errors).is_none());
        let text = errors.join("\n");
        for want in [
            "cluster.urls: \"http://b\"",
            "cluster.stream: \"bad name\"",
            "cluster.token_env: environment variable NATS_T is not set",
            "cluster.lease_ttl: must be at least 1s",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let mut errors = Vec::new();
        let ok = RawCluster {
            token_env: Some("NATS_T".into()),
            ..RawCluster::from_urls("nats://a:4222,nats://b:4222")
        }
        .validate(&|v| (v == "NATS_T").then(|| "s3cret".into()), &mut errors)
        .expect("valid");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ok.settings.replicas, 2);
        assert!(matches!(ok.settings.auth, crate::bus::nats::Auth::Token(ref t) if t == "s3cret"));
        assert!(!format!("{:?}", ok.settings).contains("s3cret"));
    }
}
