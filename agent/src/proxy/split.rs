//! A model's traffic split into experiment arms: each request goes to one
//! arm's upstream, drawn by weight from a hash of its sticky key (a header
//! or a JSON pointer into the body: the same key, the same arm, while the
//! weights stay) or, without one, of its request id (unique, so each
//! request is drawn on its own). Weights change on a reload without a
//! restart; a failed arm's requests fail as they would without the agent
//! (never re-routed to another arm).

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::Uri;

use crate::config::{Arm, ArmKey};

/// One arm as the proxy routes to it.
pub struct ArmTarget {
    pub name: String,
    pub upstream: Uri,
    /// f64 bits: read per request, replaced on a reload.
    weight: AtomicU64,
}

/// A model's arms, in the configuration's order.
pub struct Split {
    pub arms: Vec<ArmTarget>,
    pub key: Option<ArmKey>,
}

impl Split {
    /// The arms with their upstreams parsed (`None`: a URL that is not
    /// `http://host:port`, named).
    pub fn new(arms: &[Arm], key: Option<ArmKey>) -> Result<Split, String> {
        let arms = arms
            .iter()
            .map(|a| {
                a.upstream
                    .parse::<Uri>()
                    .ok()
                    .filter(|u| u.scheme_str() == Some("http") && u.authority().is_some())
                    .map(|upstream| ArmTarget {
                        name: a.name.clone(),
                        upstream,
                        weight: AtomicU64::new(a.weight.to_bits()),
                    })
                    .ok_or_else(|| a.upstream.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Split { arms, key })
    }

    /// The arm for a request: by its sticky key when it has one, else by
    /// its id. `header` looks a request header up; `body` is the request
    /// body when it was read.
    pub fn pick<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        body: Option<&[u8]>,
        id: &str,
    ) -> usize {
        let keyed = self
            .key
            .as_ref()
            .and_then(|k| match (&k.header, &k.json_pointer) {
                (Some(h), _) => header(h).map(|v| hash(v.as_bytes())),
                (None, Some(p)) => body
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|v| {
                        v.pointer(p).map(|x| match x {
                            serde_json::Value::String(s) => hash(s.as_bytes()),
                            other => hash(other.to_string().as_bytes()),
                        })
                    }),
                (None, None) => None,
            });
        self.by_weight(keyed.unwrap_or_else(|| hash(id.as_bytes())))
    }

    /// The arm a 64-bit hash falls in, by the current weights.
    fn by_weight(&self, h: u64) -> usize {
        let weights: Vec<f64> = self
            .arms
            .iter()
            .map(|a| f64::from_bits(a.weight.load(Ordering::Relaxed)))
            .collect();
        let total: f64 = weights.iter().sum();
        // 53 bits of the hash as a fraction in [0, 1).
        let mut at = (h >> 11) as f64 / (1u64 << 53) as f64 * total;
        for (i, w) in weights.iter().enumerate() {
            if at < *w {
                return i;
            }
            at -= w;
        }
        // Rounding at the very end: the last arm that has weight.
        weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
    }

    /// Whether `arms` are these arms (names and upstreams, in order).
    pub fn same_arms(&self, arms: &[Arm]) -> bool {
        arms.len() == self.arms.len()
            && arms.iter().zip(&self.arms).all(|(a, t)| {
                a.name == t.name && a.upstream.parse::<Uri>().ok().as_ref() == Some(&t.upstream)
            })
    }

    /// New weights for the same arms (a reload); `false` when the arms
    /// differ in names or upstreams (that needs a restart).
    pub fn reweigh(&self, arms: &[Arm]) -> bool {
        let same = self.same_arms(arms);
        if same {
            for (a, t) in arms.iter().zip(&self.arms) {
                t.weight.store(a.weight.to_bits(), Ordering::Relaxed);
            }
        }
        same
    }
}

/// Reads the config file again on every `SIGHUP` and gives each split
/// model its new arm weights (connections and requests in flight go on:
/// only the weights the next requests are drawn by change). Anything else
/// that changed is left for a restart; a file that does not load, or arms
/// that changed beyond their weights, keep the running weights (logged,
/// counted as `failure`).
pub async fn reload_on_sighup(state: std::sync::Arc<super::State>, path: std::path::PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let outcome = match reweigh_from(&state, &path) {
                Ok(()) => "success",
                Err(e) => {
                    tracing::error!(
                        "reload of {}: {e}; the running weights stay",
                        path.display()
                    );
                    "failure"
                }
            };
            state
                .metrics
                .config_reloads
                .with_label_values(&[outcome])
                .inc();
        }
    }
    #[cfg(not(unix))]
    let _ = (state, path);
}

fn reweigh_from(state: &super::State, path: &std::path::Path) -> Result<(), String> {
    let config = crate::config::Config::load(path).map_err(|e| e.to_string())?;
    let mut changed = Vec::new();
    for m in &state.models {
        let Some(split) = &m.split else { continue };
        let Some(new) = config.models.iter().find(|n| n.name == m.cfg.name) else {
            return Err(format!(
                "model {} is gone (a restart removes it)",
                m.cfg.name
            ));
        };
        // Check every model before changing any.
        if !split.same_arms(&new.arms) {
            return Err(format!(
                "model {}: its arms changed beyond their weights (names or upstreams): restart to take them",
                m.cfg.name
            ));
        }
        changed.push((split, &new.arms, &m.cfg.name));
    }
    for (split, arms, model) in changed {
        split.reweigh(arms);
        let weights: Vec<String> = arms
            .iter()
            .map(|a| format!("{} {}", a.name, a.weight))
            .collect();
        tracing::info!(model = %model, "model {model}: arm weights now {}", weights.join(", "));
    }
    Ok(())
}

/// FNV-1a over the bytes, then splitmix64's finalizer (FNV alone leaves
/// the high bits of short keys poorly mixed).
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Adds `x-driftwatch-arm` to an HTTP/1.1 message (a head, or a head and
/// its body), as the head's last header.
pub fn with_arm_header(message: Vec<u8>, arm: &str) -> Vec<u8> {
    let Some(end) = message.windows(4).position(|w| w == b"\r\n\r\n") else {
        return message;
    };
    let mut out = Vec::with_capacity(message.len() + 20 + arm.len());
    out.extend_from_slice(&message[..end + 2]);
    out.extend_from_slice(b"x-driftwatch-arm: ");
    out.extend_from_slice(arm.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&message[end + 2..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[f64], key: Option<ArmKey>) -> Split {
        let arms: Vec<Arm> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Arm {
                name: format!("a{i}"),
                upstream: format!("http://127.0.0.1:{}", 9000 + i),
                weight: *w,
            })
            .collect();
        Split::new(&arms, key).expect("split")
    }

    #[test]
    fn requests_split_by_weight_and_keys_stick() {
        let s = split(&[1.0, 3.0], None);
        let mut counts = [0u32; 2];
        for i in 0..40_000 {
            counts[s.pick(|_| None, None, &format!("req-{i}"))] += 1;
        }
        // 10,000 expected in a0; 4 binomial standard errors ≈ 346.
        assert!((counts[0] as i64 - 10_000).abs() < 350, "{counts:?}");
        let sticky = split(
            &[1.0, 1.0],
            Some(ArmKey {
                header: Some("x-user-id".into()),
                json_pointer: None,
            }),
        );
        let user = |u: &'static str| move |n: &str| (n == "x-user-id").then_some(u);
        for u in ["alice", "bob", "carol", "dave"] {
            let first = sticky.pick(user(u), None, "id-1");
            assert!((2..50).all(|i| sticky.pick(user(u), None, &format!("id-{i}")) == first));
        }
        let by_body = split(
            &[1.0, 1.0],
            Some(ArmKey {
                header: None,
                json_pointer: Some("/user/id".into()),
            }),
        );
        let body = br#"{"user": {"id": 42}, "instances": [[1]]}"#;
        let first = by_body.pick(|_| None, Some(body), "x");
        assert!((0..20).all(|i| by_body.pick(|_| None, Some(body), &format!("y{i}")) == first));
        // Weight 0 gets nothing; a reload moves traffic without a restart.
        let s = split(&[0.0, 1.0], None);
        assert!((0..1000).all(|i| s.pick(|_| None, None, &i.to_string()) == 1));
        let arms = |w: [f64; 2]| -> Vec<Arm> {
            (0..2)
                .map(|i| Arm {
                    name: format!("a{i}"),
                    upstream: format!("http://127.0.0.1:{}", 9000 + i),
                    weight: w[i],
                })
                .collect()
        };
        assert!(s.reweigh(&arms([1.0, 0.0])));
        assert!((0..1000).all(|i| s.pick(|_| None, None, &i.to_string()) == 0));
        let mut other = arms([1.0, 1.0]);
        other[1].upstream = "http://127.0.0.1:1".into();
        assert!(!s.reweigh(&other), "another upstream needs a restart");
        assert_eq!(
            with_arm_header(b"HTTP/1.1 200 OK\r\na: b\r\n\r\n".to_vec(), "t"),
            b"HTTP/1.1 200 OK\r\na: b\r\nx-driftwatch-arm: t\r\n\r\n"
        );
        // An answer the agent makes itself (502) comes with its body.
        assert_eq!(
            with_arm_header(b"HTTP/1.1 502 Bad Gateway\r\na: b\r\n\r\n{}".to_vec(), "t"),
            b"HTTP/1.1 502 Bad Gateway\r\na: b\r\nx-driftwatch-arm: t\r\n\r\n{}"
        );
    }
}
