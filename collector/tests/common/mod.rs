//! Helpers shared by the integration tests; each test crate uses part of them.
#![allow(dead_code)]

pub mod examples;
pub mod gen;
pub mod mail;
pub mod receiver;
pub mod server;
