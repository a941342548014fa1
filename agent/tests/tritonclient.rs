//! The agent in front of the example champion, called with the official
//! KServe v2 client, tritonclient[http] 2.73.0 (`tritonclient_calls.py`,
//! run by the test venv's Python): JSON and binary tensors each way,
//! health, readiness and metadata; and its gRPC endpoint through the
//! agent (tritonclient.grpc, raw tensors, and gzip-compressed both ways).
//! Every answer through the agent equals the direct one (checked by the
//! script), every inference's events equal those of its all-JSON form,
//! and nothing is counted as unparsed.

mod common;

use common::{
    assert_all_read, assert_same_events, repo, run_client, variants_and_rows, Agent, Champion,
    Collector,
};

const INPUTS: &str = "[age, income, loan_amount, bureau_score, dependents, has_card]";

#[test]
fn tritonclient_binary_and_json_tensors_give_the_same_events_and_answers() {
    let (champion, grpc) = Champion::start_with_grpc();
    let collector = Collector::start();
    let agent = Agent::start(&format!(
        "collector:\n  url: {}\n  batch_wait: 100ms\nmodels:\n  - name: credit\n    upstream: http://{}\n    grpc_upstream: http://{grpc}\n    champion_version: v3\n    shadow:\n      path: {}\n      version: v4\n      inputs: {INPUTS}\n",
        collector.url(),
        champion.addr,
        repo("examples/credit/challenger.onnx").display(),
    ));
    let report = run_client(
        "tritonclient_calls.py",
        &[&champion.addr, &grpc, &agent.addr],
        &agent,
    );
    let (variants, rows) = variants_and_rows(
        &report,
        &[
            "json-json",
            "json-binary",
            "binary-json",
            "binary-binary",
            "binary-default",
            "grpc-raw",
            "grpc-gzip",
        ],
    );
    let events = collector.wait_for_events(variants.len() * rows.len());
    assert_same_events(&events, &variants, rows);
    // Health, readiness and metadata passed through, counted as such;
    // nothing the client sent was unreadable to the agent.
    assert_all_read(&agent, 7.0);
}
