//! Experiments (A/B tests, canaries) judged: each look at an experiment's
//! tallies (kept with the windows, `window::experiments`) gives per arm
//! its traffic and metric, the sample-ratio check, each treatment against
//! the baseline by an always-valid comparison, the guardrails and a
//! decision (`decide`); the latest looks are kept for the API and the
//! gauges (`registry`).

pub mod decide;
pub mod registry;
