//! The driftwatch collector: statistics and offline reports (the live
//! collector service builds on these). The binary `driftwatch` is a thin CLI
//! over this library.
#![forbid(unsafe_code)]

pub mod report;
pub mod stats;
