//! The driftwatch agent: a reverse proxy (or mirror / KServe logger sink)
//! beside a production model server that turns every inference into an
//! event, scores it with an ONNX shadow model where capacity allows, and
//! ships the events to the collector. The champion's traffic comes first:
//! nothing here may delay or fail it.
#![forbid(unsafe_code)]

pub mod adapter;
pub mod config;
pub mod fast;
pub mod metrics;
pub mod onnx;
pub mod run;
pub mod server;
pub mod shadow;
pub mod ship;
