//! The agent's chunked-body reader, fed whole and in pieces
//! (`proxy::chunked::fuzz::chunked`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| driftwatch_agent::proxy::chunked::fuzz::chunked(data));
