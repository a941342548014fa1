//! The agent's chunked-body reader, fed whole and in pieces
//! (`proxy::http1::fuzz::chunked`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| driftwatch_agent::proxy::http1::fuzz::chunked(data));
