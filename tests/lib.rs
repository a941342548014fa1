//! The end-to-end tests live in `e2e.rs`; this crate has no code of its own.
