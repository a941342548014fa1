//! The agent's TF Serving adapter: any body as a request and a response.
#![no_main]

use std::sync::OnceLock;

use driftwatch_agent::config::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static MODELS: OnceLock<[Model; 2]> = OnceLock::new();
    let models = MODELS.get_or_init(|| {
        [
            driftwatch_fuzz::agent_model("protocol: tfserving\n"),
            driftwatch_fuzz::agent_model(
                "protocol: tfserving\nfeatures: [a, b]\noutputs: {probabilities: probs}\n",
            ),
        ]
    });
    for m in models {
        driftwatch_fuzz::adapt(m, data);
    }
});
