//! The driftwatch collector: statistics, offline reports, and the live
//! service (ingest, windows, evaluation, metrics). The binary `driftwatch`
//! is a thin CLI over this library.
#![forbid(unsafe_code)]

pub mod alert;
pub mod bus;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod experiment;
pub mod export;
pub mod ingest;
pub mod models;
pub mod notify;
pub mod report;
pub mod rules;
pub mod serve;
pub mod service;
pub mod stats;
pub mod store;
pub mod window;
pub mod yaml;
