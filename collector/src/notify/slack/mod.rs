//! The Slack receiver: an incoming webhook, its URL a secret.

mod config;
mod deliver;

pub use config::{check, Config};
pub use deliver::{blocks, send};
