//! The process's ONNX Runtime environment, shared by the agent (shadow
//! models) and the collector (DLE's nanny models): the library loaded at
//! run time (`load-dynamic`) from the path given, else `ORT_DYLIB_PATH`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use ort::environment::Environment;

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The environment, loaded once per process (the first caller's path
/// wins); `Err` says which library is missing or failed to load.
pub fn environment(library: Option<&Path>) -> Result<Environment, String> {
    ENV.get_or_init(|| {
        let path: PathBuf = match library {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or(
                "no ONNX Runtime library: set ORT_DYLIB_PATH (or the agent's `ort_library`); `scripts/setup-ort` installs it and prints its path",
            )?,
        };
        if !path.exists() {
            return Err(format!("ONNX Runtime library {} does not exist", path.display()));
        }
        ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("driftwatch")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .clone()
}
