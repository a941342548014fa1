//! The messages a test SMTP server (support/smtp_sink.py) stored.

use std::path::{Path, PathBuf};

/// The `.eml` files in `dir`, oldest first.
pub fn mails(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "eml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("mail"))
        .collect()
}
