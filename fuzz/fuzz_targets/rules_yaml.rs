//! Rule files as `driftwatch rules check` and a reload read them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = driftwatch_fuzz::scratch("rules.yaml", data);
    if let Err(errors) = driftwatch::rules::check::load_files(&[path]) {
        assert!(!errors.to_string().is_empty());
    }
});
