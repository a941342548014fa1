//! Helpers shared by the integration tests; each test crate uses part of them.
#![allow(dead_code)]

pub mod cluster;
pub mod examples;
pub mod gen;
pub mod server;
