//! What the collector exposes: Prometheus metrics (names fixed by DESIGN.md).

pub mod metrics;
