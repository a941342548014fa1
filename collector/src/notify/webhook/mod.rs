//! The webhook receiver: any HTTP endpoint, driftwatch's JSON or
//! Alertmanager's webhook payload, optionally signed.

mod config;
mod deliver;

pub use config::{check, Config, Format};
pub use deliver::send;
