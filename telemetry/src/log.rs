//! Logs: `tracing` events written to stderr as text or JSON lines, the
//! level filter in `RUST_LOG` syntax (`DRIFTWATCH_LOG`, else the config's
//! `log.level`, else `info`), and `Repeats`, which keeps a failure that
//! repeats from flooding the log: its first occurrence is logged, later
//! ones within a minute only counted, and the next one logged after that
//! says how many there were (`repeated`, `over_s`). Counters stay exact;
//! only log lines are held back.
//!
//! Stdout is not a log: it carries only the lines scripts read (the
//! listening addresses).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
pub use tracing;

/// The environment variable holding the level filter.
pub const LOG_ENV: &str = "DRIFTWATCH_LOG";
/// The filter when none is given (the NATS client says every reconnect attempt at `info`; driftwatch
/// says a cluster outage itself, once a minute).
pub const DEFAULT_LEVEL: &str = "info,async_nats=warn";
/// How long a repeated failure stays quiet after it was logged.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message field=value ...`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: use text or json")),
        }
    }
}

/// `log:` in the agent's and the collector's configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A filter in `RUST_LOG` syntax, e.g. `info,driftwatch::notify=debug`;
    /// `DRIFTWATCH_LOG` replaces it.
    pub level: Option<String>,
}

impl LogConfig {
    /// The filter in effect: `env` (the value of `DRIFTWATCH_LOG`) when set,
    /// else `level`, else `info`.
    pub fn filter(&self, env: Option<String>) -> String {
        env.filter(|s| !s.trim().is_empty())
            .or_else(|| self.level.clone())
            .unwrap_or_else(|| DEFAULT_LEVEL.to_string())
    }

    /// What is wrong with the configured filter, if anything.
    pub fn check(&self) -> Vec<String> {
        match &self.level {
            Some(level) => parse_filter(level)
                .err()
                .map(|e| format!("log.level: {e}"))
                .into_iter()
                .collect(),
            None => Vec::new(),
        }
    }
}

fn parse_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(spec)
        .map_err(|e| {
            format!(
                "{spec:?} is not a level filter like info or warn,driftwatch::notify=debug ({e})"
            )
        })
}

/// Starts writing log lines to stderr as `config` says, the filter taken
/// from `DRIFTWATCH_LOG` when it is set. Once per process; a second call
/// changes nothing.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let spec = config.filter(std::env::var(LOG_ENV).ok());
    let filter = parse_filter(&spec).map_err(|e| format!("{LOG_ENV} or log.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

/// An error and its causes, `error: cause: cause` (an HTTP client's error
/// says "error sending request" and keeps the reason in its sources).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// What to do with one occurrence of a failure (see `Repeats::note`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// Log it: the first in a while.
    First,
    /// Log it with how many were held back since the last line, over how
    /// many seconds.
    Again { repeated: u64, over_s: u64 },
    /// Only count it.
    Quiet,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    held: u64,
}

/// Repeated failures by cause: the first logged, the rest of each
/// `REPEAT_WINDOW` held back and summed into the next line.
#[derive(Debug)]
pub struct Repeats {
    window: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

/// Distinct causes remembered; past it the memory starts afresh (a few
/// extra lines, never a lost count).
const MAX_CAUSES: usize = 1024;

impl Default for Repeats {
    fn default() -> Repeats {
        Repeats::new(REPEAT_WINDOW)
    }
}

impl Repeats {
    pub fn new(window: Duration) -> Repeats {
        Repeats {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// One occurrence of `cause` (a short key: what failed and where).
    pub fn note(&self, cause: &str) -> Say {
        self.note_at(cause, Instant::now())
    }

    fn note_at(&self, cause: &str, now: Instant) -> Say {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = seen.get_mut(cause) {
            let since = now.saturating_duration_since(s.logged_at);
            if since < self.window {
                s.held += 1;
                return Say::Quiet;
            }
            let held = std::mem::take(&mut s.held);
            s.logged_at = now;
            return if held == 0 {
                Say::First
            } else {
                Say::Again {
                    repeated: held,
                    over_s: since.as_secs(),
                }
            };
        }
        if seen.len() >= MAX_CAUSES {
            seen.clear();
        }
        seen.insert(
            cause.to_string(),
            Seen {
                logged_at: now,
                held: 0,
            },
        );
        Say::First
    }

    /// `cause` is over (the collector answers again): forgets it, and says
    /// how many occurrences were held back since its last line.
    pub fn clear(&self, cause: &str) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(cause).map(|s| s.held)
    }
}

/// Logs an event through `Repeats`: `throttled!(repeats, cause, LEVEL,
/// { field = value, ... }, "format", args...)`. The first occurrence of a
/// cause is logged as given; later ones within the window are held back;
/// the next one after it carries `repeated` and `over_s` and says so in
/// its message.
#[macro_export]
macro_rules! throttled {
    ($repeats:expr, $cause:expr, $level:expr, { $($field:tt)* }, $($msg:tt)+) => {
        match $repeats.note($cause) {
            $crate::log::Say::Quiet => {}
            $crate::log::Say::First => {
                $crate::log::tracing::event!($level, $($field)* "{}", format_args!($($msg)+))
            }
            $crate::log::Say::Again { repeated, over_s } => $crate::log::tracing::event!(
                $level,
                $($field)*
                repeated,
                over_s,
                "{} (repeated {} times in the last {} s)",
                format_args!($($msg)+),
                repeated,
                over_s
            ),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_cause_is_logged_once_a_window_with_what_was_held_back() {
        let r = Repeats::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(r.note_at("ship", at(0)), Say::First);
        for s in 1..=30 {
            assert_eq!(r.note_at("ship", at(s)), Say::Quiet);
        }
        // Another cause is its own.
        assert_eq!(r.note_at("tls", at(5)), Say::First);
        assert_eq!(
            r.note_at("ship", at(61)),
            Say::Again {
                repeated: 30,
                over_s: 61
            }
        );
        assert_eq!(r.note_at("ship", at(62)), Say::Quiet);
        assert_eq!(r.clear("ship"), Some(1));
        assert_eq!(r.clear("ship"), None);
        assert_eq!(r.note_at("ship", at(63)), Say::First);
        // Nothing held back: the next line after the window is a first.
        assert_eq!(r.note_at("tls", at(200)), Say::First);
    }

    #[test]
    fn the_filter_comes_from_the_environment_then_the_config() {
        let mut c = LogConfig::default();
        assert_eq!(c.filter(None), "info,async_nats=warn");
        c.level = Some("warn".into());
        assert_eq!(c.filter(None), "warn");
        assert_eq!(c.filter(Some(" ".into())), "warn");
        assert_eq!(c.filter(Some("debug".into())), "debug");
        assert!(c.check().is_empty());
        c.level = Some("info,driftwatch::notify=debug".into());
        assert!(c.check().is_empty());
        c.level = Some("info,x=loud".into());
        assert!(c.check()[0].starts_with("log.level: "), "{:?}", c.check());
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
