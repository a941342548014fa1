//! The email receiver: SMTP through lettre (STARTTLS, implicit TLS, or
//! plain for local relays), one message with a plain-text and an HTML part.

mod config;
mod deliver;
pub mod template;

pub use config::{check, Config, Tls};
pub use deliver::send;
