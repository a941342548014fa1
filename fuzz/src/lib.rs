//! What the fuzz targets share: the example model as the collector loads
//! it, agent models of each protocol, and a scratch file per process for
//! the loaders that read paths.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use driftwatch_agent::config::Model as AgentModel;
use driftwatch::models::Model;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example credit model, loaded once as `driftwatch serve` loads it.
pub fn models() -> &'static [Model] {
    static MODELS: OnceLock<Vec<Model>> = OnceLock::new();
    MODELS.get_or_init(|| {
        let yaml = format!(
            "models:\n  - name: credit\n    reference: {}\n    windows: [1h]\n",
            repo().join("examples/credit/reference.csv").display()
        );
        let path = scratch("models.yaml", yaml.as_bytes());
        let raw = driftwatch::config::RawConfig::from_file(&path).expect("config");
        let config = raw.validate(&path, &|_| None).expect("valid config");
        config
            .models
            .iter()
            .map(|m| Model::load(m).expect("model"))
            .collect()
    })
}

/// An agent model of `yaml` (name and upstream given).
pub fn agent_model(yaml: &str) -> AgentModel {
    serde_yaml_ng::from_str(&format!("name: credit\nupstream: http://u\n{yaml}")).expect("model")
}

/// Writes `bytes` to this process's scratch file `name` and returns its path.
pub fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("driftwatch-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}

/// Feeds a body to an agent model's adapter, request and response: as
/// JSON, as a binary tensor body whose JSON is as long as the first byte
/// says (the rest of the data), and as a gRPC `ModelInfer` message,
/// uncompressed or flagged gzip or deflate.
pub fn adapt(model: &AgentModel, data: &[u8]) {
    use driftwatch_agent::adapters::grpc::Encoding;
    use driftwatch_agent::adapters::{read_request, read_response, Form};
    let binary = data.split_first().map(|(len, rest)| {
        let json_len = Some(usize::from(*len));
        (rest, Form::Http { json_len })
    });
    let grpc = [Encoding::Identity, Encoding::Gzip, Encoding::Deflate]
        .map(|encoding| (data, Form::Grpc { encoding }));
    let forms = [(data, Form::Http { json_len: None })]
        .into_iter()
        .chain(binary)
        .chain(grpc);
    for (body, form) in forms {
        if let Ok(rows) = read_request(model, body, form) {
            let _ = read_response(model, body, form, rows.len());
        }
        for n in [1, 3] {
            if let Ok(out) = read_response(model, body, form, n) {
                assert_eq!(out.len(), n, "one output per row");
            }
        }
    }
}
