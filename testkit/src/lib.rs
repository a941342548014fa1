//! What the test suites of every crate share (a dev-dependency only):
//! fresh temporary directories, paths into the repository, the ONNX
//! Runtime library the tests load, the workspace's binaries as child
//! processes (`process`), a real HTTP receiver that records what it is
//! sent (`receiver`), and the messages the test SMTP server stored
//! (`mail`), a NATS server with JetStream (`nats`), and a real
//! Prometheus with the dashboards' queries run against it (`prometheus`).
#![forbid(unsafe_code)]

pub mod mail;
pub mod nats;
pub mod process;
pub mod prometheus;
pub mod receiver;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory under the system's temp dir, unique to this
/// process and call (`dw-WHAT-PID-N`); the caller removes it.
pub fn temp_dir(what: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("dw-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `contents` to `dir/name`; the file's path.
pub fn file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A path in the repository (`examples/credit/reference.csv`).
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The ONNX Runtime library the tests use (scripts/test installs it).
pub fn ort_library() -> String {
    let path = std::env::var("ORT_DYLIB_PATH").unwrap_or_default();
    assert!(
        !path.is_empty() && Path::new(&path).exists(),
        "ORT_DYLIB_PATH ({path:?}) must name libonnxruntime: run ./scripts/test, or export ORT_DYLIB_PATH=\"$(scripts/setup-ort)\""
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_fresh_and_distinct() {
        let (a, b) = (temp_dir("kit"), temp_dir("kit"));
        assert_ne!(a, b);
        assert!(a.is_dir() && std::fs::read_dir(&a).expect("dir").next().is_none());
        assert!(repo("Cargo.toml").exists());
        let _ = (std::fs::remove_dir_all(a), std::fs::remove_dir_all(b));
    }
}
