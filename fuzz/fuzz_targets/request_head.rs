//! The agent's lean-path request head against httparse, and the head it
//! sends the champion read back (`proxy::http1::fuzz::request_head`); and
//! the champion's response head.
#![no_main]

use driftwatch_agent::proxy::http1::fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz::request_head(data);
    fuzz::response_head(data);
});
