//! The log receiver: one JSON line per notification, on standard error or
//! appended to a file.

mod config;
mod deliver;

pub use config::{check, Config};
pub use deliver::send;
