//! Sensitive features never leave the node: per model, an allow-list of
//! the request's fields (`request_fields`) and, per feature, `keep`, `drop`
//! or `hash` (`sensitive`). Applied to each row after the shadow scored it
//! and before its event is queued, spooled or shipped, so the shadow may
//! read a feature that is never shipped. A hashed value is the HMAC-SHA256
//! of its text under the agent's `hash_key`, in hex: equal values stay
//! equal (the collector reads them as a categorical feature), and the value
//! cannot be recovered or guessed without the key.

use std::collections::{BTreeMap, HashSet};

use driftwatch_protocol::FeatureValue;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::adapters::Row;
use crate::config::{Config, ConfigError, Model, Sensitivity};

/// Bytes of the HMAC kept (hex doubles them): 128 bits.
const HASH_BYTES: usize = 16;

/// What happened to a row's fields, counted in
/// `driftwatch_agent_features_redacted_total{model,action}`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Redacted {
    pub dropped: u64,
    pub hashed: u64,
    /// Fields outside `request_fields`.
    pub not_requested: u64,
}

/// One model's rules.
pub struct Redactor {
    allow: Option<HashSet<String>>,
    rules: BTreeMap<String, Sensitivity>,
    key: Option<Vec<u8>>,
}

/// The key of `hash` features: `hash_key_env`'s variable (which must be
/// set and not empty) or `hash_key_file`'s bytes (a trailing newline
/// trimmed); none when neither is configured.
pub fn hash_key(config: &Config) -> Result<Option<Vec<u8>>, ConfigError> {
    if let Some(var) = &config.hash_key_env {
        return match std::env::var(var) {
            Ok(k) if !k.is_empty() => Ok(Some(k.into_bytes())),
            _ => Err(ConfigError::HashKey(format!(
                "hash_key_env: the environment variable {var} is not set"
            ))),
        };
    }
    let Some(path) = &config.hash_key_file else {
        return Ok(None);
    };
    let mut key = std::fs::read(path)
        .map_err(|e| ConfigError::HashKey(format!("hash_key_file {}: {e}", path.display())))?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.is_empty() {
        return Err(ConfigError::HashKey(format!(
            "hash_key_file {}: the file is empty",
            path.display()
        )));
    }
    Ok(Some(key))
}

impl Redactor {
    /// `key` is the agent's `hash_key`; the configuration checks that one
    /// is given when a feature is hashed.
    pub fn new(m: &Model, key: Option<&[u8]>) -> Redactor {
        Redactor {
            allow: m
                .request_fields
                .as_ref()
                .map(|f| f.iter().cloned().collect()),
            rules: m.sensitive.clone(),
            key: key.map(<[u8]>::to_vec),
        }
    }

    /// Whether the rules change anything (none: rows are left alone).
    pub fn is_active(&self) -> bool {
        self.allow.is_some() || self.rules.values().any(|s| *s != Sensitivity::Keep)
    }

    /// Applies the rules to one row.
    pub fn apply(&self, row: &mut Row, counts: &mut Redacted) {
        if let Some(allow) = &self.allow {
            let before = row.len();
            row.retain(|k, _| allow.contains(k));
            counts.not_requested += (before - row.len()) as u64;
        }
        for (name, rule) in &self.rules {
            match rule {
                Sensitivity::Keep => {}
                Sensitivity::Drop => {
                    if row.remove(name).is_some() {
                        counts.dropped += 1;
                    }
                }
                Sensitivity::Hash => {
                    let Some(v) = row.get_mut(name) else { continue };
                    match &self.key {
                        Some(key) => {
                            if !matches!(v, FeatureValue::Null) {
                                *v = FeatureValue::String(hash(key, v));
                                counts.hashed += 1;
                            }
                        }
                        // Unreachable with a checked configuration; never
                        // ship the value in the clear.
                        None => {
                            row.remove(name);
                            counts.dropped += 1;
                        }
                    }
                }
            }
        }
    }
}

/// The text a value is hashed as: a string as it is, a number in its
/// shortest decimal form (`41`, `3.5`), `true`/`false`.
fn text(v: &FeatureValue) -> String {
    match v {
        FeatureValue::String(s) => s.clone(),
        FeatureValue::Number(n) => n.to_string(),
        FeatureValue::Bool(b) => b.to_string(),
        FeatureValue::Null => String::new(),
    }
}

/// The first `HASH_BYTES` of HMAC-SHA256(key, text), in lowercase hex.
pub fn hash(key: &[u8], v: &FeatureValue) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(text(v).as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..HASH_BYTES])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> Model {
        serde_yaml_ng::from_str(&format!("name: m\nupstream: http://u\n{yaml}")).expect("model")
    }

    fn row(pairs: &[(&str, FeatureValue)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn dropped_hashed_and_unrequested_fields_never_stay_in_the_row() {
        let m = model(
            "request_fields: [age, email, ssn, note]\nsensitive: {ssn: drop, email: hash, note: hash, age: keep}\n",
        );
        let r = Redactor::new(&m, Some(b"k1"));
        assert!(r.is_active());
        let mut counts = Redacted::default();
        let mut one = row(&[
            ("age", FeatureValue::Number(41.0)),
            ("email", FeatureValue::String("ann@example.com".into())),
            ("ssn", FeatureValue::String("123-45-6789".into())),
            ("note", FeatureValue::Null),
            ("free_text", FeatureValue::String("secret".into())),
        ]);
        r.apply(&mut one, &mut counts);
        assert_eq!(
            counts,
            Redacted {
                dropped: 1,
                hashed: 1,
                not_requested: 1
            }
        );
        assert_eq!(one.get("age"), Some(&FeatureValue::Number(41.0)));
        assert_eq!(one.get("note"), Some(&FeatureValue::Null));
        assert!(!one.contains_key("ssn") && !one.contains_key("free_text"));
        // Against an HMAC of the same text computed apart.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k1").expect("key");
        mac.update(b"ann@example.com");
        let want = hex::encode(&mac.finalize().into_bytes()[..16]);
        assert_eq!(one.get("email"), Some(&FeatureValue::String(want.clone())));
        // Equal values hash equal under one key, differently under another.
        let other = Redactor::new(&m, Some(b"k2"));
        let mut two = row(&[("email", FeatureValue::String("ann@example.com".into()))]);
        other.apply(&mut two, &mut counts);
        assert_ne!(two.get("email"), Some(&FeatureValue::String(want)));
        assert_eq!(
            hash(b"k", &FeatureValue::Number(3.0)),
            hash(b"k", &FeatureValue::Number(3.0))
        );
        assert_eq!(
            hash(b"k", &FeatureValue::Number(3.0)),
            hash(b"k", &FeatureValue::String("3".into()))
        );
        assert_ne!(
            hash(b"k", &FeatureValue::Number(3.0)),
            hash(b"k", &FeatureValue::Number(3.5))
        );
    }

    #[test]
    fn without_rules_rows_are_left_alone() {
        let r = Redactor::new(&model(""), None);
        assert!(!r.is_active());
        let r = Redactor::new(&model("sensitive: {a: keep}\n"), None);
        assert!(!r.is_active());
    }
}
