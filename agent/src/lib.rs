//! The driftwatch agent: a reverse proxy (or mirror / KServe logger sink)
//! beside a production model server that turns every inference into an
//! event, scores it with an ONNX shadow model where capacity allows, and
//! ships the events to the collector. The champion's traffic comes first:
//! nothing here may delay or fail it.
//!
//! The stages, in the order a request meets them: `proxy` (the fast path
//! and the hyper path) or `tap` (mirror and KServe logger sinks), then
//! `observe` (request and response → rows → events, with `adapters` for
//! the protocols and `shadow` for the challenger), then `ship`. `run`
//! starts them on the listeners it is given.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod config;
pub mod http;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod redact;
pub mod run;
pub mod shadow;
pub mod ship;
pub mod tap;
pub mod threads;
