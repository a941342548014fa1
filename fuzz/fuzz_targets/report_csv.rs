//! `driftwatch report`'s dataset reading (CSV through polars).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = driftwatch_fuzz::scratch("data.csv", data);
    let _ = driftwatch::report::load::read(&path);
});
