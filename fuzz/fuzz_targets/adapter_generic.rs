//! The agent's generic JSON adapter (rows and outputs at JSON pointers).
#![no_main]

use std::sync::OnceLock;

use driftwatch_agent::config::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static MODELS: OnceLock<[Model; 2]> = OnceLock::new();
    let models = MODELS.get_or_init(|| {
        [
            driftwatch_fuzz::agent_model(
                "protocol: generic\ngeneric: {rows: /rows, outputs: /outputs}\n",
            ),
            driftwatch_fuzz::agent_model(
                "protocol: generic\ngeneric: {rows: '', outputs: /a/0/b~1c}\n",
            ),
        ]
    });
    for m in models {
        driftwatch_fuzz::adapt(m, data);
    }
});
