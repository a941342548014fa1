//! The collector's wire protocol decoder: a body as `POST /v1/events` and
//! `POST /v1/feedback` get it (the first byte picks no encoding, gzip or
//! zstd), split into events and validated against the example model, or
//! read as labels.
#![no_main]

use driftwatch::ingest::{decode, parse_labels, split_events, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let encoding = [None, Some("gzip"), Some("zstd"), Some("identity")][usize::from(pick % 4)];
    let Ok(text) = decode(encoding, body, 1 << 20) else {
        return;
    };
    assert!(text.len() <= 1 << 20);
    let models = driftwatch_fuzz::models();
    if let Ok(events) = split_events(&text) {
        for raw in events {
            if let Err((_, message)) = validate(raw.get(), models, 1_765_000_000_000, 300_000) {
                assert!(message.len() <= 2 * driftwatch_protocol::MAX_ERROR_BYTES);
            }
        }
    }
    let _ = parse_labels(&text, models);
});
