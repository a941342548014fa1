//! The ONNX Runtime library for tests, shared by the agent's tests and the
//! end-to-end tests (included by path).

use std::path::Path;

/// The ONNX Runtime library the tests use (scripts/test installs it).
pub fn ort_library() -> String {
    let path = std::env::var("ORT_DYLIB_PATH").unwrap_or_default();
    assert!(
        !path.is_empty() && Path::new(&path).exists(),
        "ORT_DYLIB_PATH ({path:?}) must name libonnxruntime: run ./scripts/test, or export ORT_DYLIB_PATH=\"$(scripts/setup-ort)\""
    );
    path
}
