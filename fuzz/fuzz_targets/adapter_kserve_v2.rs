//! The agent's KServe v2 (Open Inference Protocol) adapter: any body as a
//! request and as a response, with and without named feature columns.
#![no_main]

use std::sync::OnceLock;

use driftwatch_agent::config::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static MODELS: OnceLock<[Model; 2]> = OnceLock::new();
    let models = MODELS.get_or_init(|| {
        [
            driftwatch_fuzz::agent_model("protocol: kserve-v2\n"),
            driftwatch_fuzz::agent_model(
                "protocol: kserve-v2\nfeatures: [age, income, loan_amount]\nclasses: [no, yes]\n",
            ),
        ]
    });
    for m in models {
        driftwatch_fuzz::adapt(m, data);
    }
});
