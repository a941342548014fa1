//! The Alertmanager receiver: alerts pushed to an existing Alertmanager,
//! which groups, routes and repeats them itself (`push`).

mod config;
mod deliver;
pub mod push;

pub use config::{check, Config};
pub(crate) use deliver::am_alert;
pub use deliver::{alerts, send};
