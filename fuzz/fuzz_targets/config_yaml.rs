//! Both config files: the collector's (read and validated, references not
//! loaded) and the agent's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = driftwatch_fuzz::scratch("config.yaml", data);
    if let Ok(raw) = driftwatch::config::RawConfig::from_file(&path) {
        let _ = raw.validate(&path, &|_| None);
    }
    let _ = driftwatch_agent::config::Config::load(&path);
});
