//! Bearer tokens by scope: `ingest` (events, labels), `read` (the JSON API,
//! and `/metrics` when configured), `admin` (reload, silences: anything
//! that changes state; admin tokens may read too). A request's token is
//! compared with every configured token, in constant time and without
//! stopping at a match; refusals say nothing about which tokens exist.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::Tokens;
use crate::export::metrics::RejectReason;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    /// `/metrics`: read when `auth.metrics` is on, else open.
    Metrics,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Metrics => "metrics",
            Scope::Admin => "admin",
        }
    }
}

/// The configured tokens, kept as SHA-256 digests so that every
/// comparison takes the same time whatever the lengths.
pub struct Auth {
    /// Each token's digest with the scopes it holds.
    tokens: Vec<([u8; 32], Held)>,
    read_open: bool,
    metrics_open: bool,
}

/// What a token list gives each of its tokens.
type Grant = fn(&mut Held);

#[derive(Debug, Clone, Copy, Default)]
struct Held {
    ingest: bool,
    read: bool,
    admin: bool,
}

impl Auth {
    pub fn new(t: &Tokens) -> Auth {
        let mut tokens: Vec<([u8; 32], Held)> = Vec::new();
        let scopes: [(&Vec<String>, Grant); 3] = [
            (&t.ingest, |h| h.ingest = true),
            (&t.read, |h| h.read = true),
            (&t.admin, |h| {
                h.admin = true;
                h.read = true;
            }),
        ];
        for (list, grant) in scopes {
            for token in list {
                let d = digest(token.as_bytes());
                match tokens.iter_mut().find(|(k, _)| *k == d) {
                    Some((_, held)) => grant(held),
                    None => {
                        let mut held = Held::default();
                        grant(&mut held);
                        tokens.push((d, held));
                    }
                }
            }
        }
        Auth {
            read_open: t.read.is_empty(),
            metrics_open: !t.metrics,
            tokens,
        }
    }

    /// Whether `scope` needs no token at all.
    fn open(&self, scope: Scope) -> bool {
        self.tokens.is_empty()
            || match scope {
                Scope::Read => self.read_open,
                Scope::Metrics => self.metrics_open,
                Scope::Ingest | Scope::Admin => false,
            }
    }

    /// Ok, or 401 (no token, or one that is not configured) or 403 (a
    /// token without this scope; also when no token holds it).
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        if self.open(scope) {
            return Ok(());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim().as_bytes()));
        let Some(given) = given else {
            return Err(ApiError::Unauthorized);
        };
        // Look at every token; no early exit.
        let mut found = Held::default();
        let mut known = false;
        for (d, held) in &self.tokens {
            let hit = bool::from(d.ct_eq(&given));
            known |= hit;
            found.ingest |= hit & held.ingest;
            found.read |= hit & held.read;
            found.admin |= hit & held.admin;
        }
        let allowed = match scope {
            Scope::Ingest => found.ingest,
            Scope::Read | Scope::Metrics => found.read,
            Scope::Admin => found.admin,
        };
        match (known, allowed) {
            (_, true) => Ok(()),
            (true, false) => Err(ApiError::Forbidden),
            (false, _) => Err(ApiError::Unauthorized),
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The route layer that holds a group of routes to `scope`: refusals are
/// counted (`driftwatch_auth_refusals_total`) and answered before the
/// handler runs.
pub async fn guard(
    State((state, scope)): State<(Arc<AppState>, Scope)>,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.check(request.headers(), scope) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            let (reason, status) = match e {
                ApiError::Forbidden => (RejectReason::Forbidden, "403"),
                _ => (RejectReason::Unauthorized, "401"),
            };
            state
                .metrics
                .auth_refusals
                .with_label_values(&[scope.as_str(), status])
                .inc();
            if scope == Scope::Ingest {
                // As ever, refused ingest requests count with refused events.
                state.metrics.reject(reason, 1);
            }
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        h
    }

    #[test]
    fn each_scope_takes_its_own_tokens_and_admin_may_read() {
        let auth = Auth::new(&Tokens {
            ingest: vec!["agent".into()],
            read: vec!["grafana".into()],
            admin: vec!["ops".into()],
            metrics: false,
        });
        use ApiError::{Forbidden as F, Unauthorized as U};
        let table: [(Option<&str>, Scope, Result<(), ApiError>); 14] = [
            (Some("agent"), Scope::Ingest, Ok(())),
            (Some("agent"), Scope::Read, Err(F)),
            (Some("agent"), Scope::Admin, Err(F)),
            (Some("grafana"), Scope::Read, Ok(())),
            (Some("grafana"), Scope::Ingest, Err(F)),
            (Some("grafana"), Scope::Admin, Err(F)),
            (Some("ops"), Scope::Admin, Ok(())),
            (Some("ops"), Scope::Read, Ok(())),
            (Some("ops"), Scope::Ingest, Err(F)),
            (None, Scope::Ingest, Err(U)),
            (None, Scope::Admin, Err(U)),
            (Some("opsx"), Scope::Admin, Err(U)),
            (Some(""), Scope::Read, Err(U)),
            // Metrics stay open unless `auth.metrics` is on.
            (None, Scope::Metrics, Ok(())),
        ];
        for (token, scope, want) in table {
            assert_eq!(
                auth.check(&headers(token), scope),
                want,
                "{token:?} {scope:?}"
            );
        }
    }

    #[test]
    fn read_is_open_until_read_tokens_exist_and_no_tokens_means_no_auth() {
        let legacy = Auth::new(&Tokens {
            ingest: vec!["t".into()],
            admin: vec!["t".into()],
            ..Tokens::default()
        });
        assert_eq!(legacy.check(&headers(None), Scope::Read), Ok(()));
        assert_eq!(legacy.check(&headers(Some("t")), Scope::Admin), Ok(()));
        assert_eq!(legacy.check(&headers(Some("t")), Scope::Ingest), Ok(()));
        let ingest_only = Auth::new(&Tokens {
            ingest: vec!["t".into()],
            ..Tokens::default()
        });
        // Admin is closed when auth is on and no token holds it.
        assert_eq!(
            ingest_only.check(&headers(Some("t")), Scope::Admin),
            Err(ApiError::Forbidden)
        );
        let none = Auth::new(&Tokens::default());
        for scope in [Scope::Ingest, Scope::Read, Scope::Metrics, Scope::Admin] {
            assert_eq!(none.check(&headers(None), scope), Ok(()));
        }
        let metrics = Auth::new(&Tokens {
            read: vec!["r".into()],
            metrics: true,
            ..Tokens::default()
        });
        assert_eq!(
            metrics.check(&headers(None), Scope::Metrics),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(metrics.check(&headers(Some("r")), Scope::Metrics), Ok(()));
    }
}
