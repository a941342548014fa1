//! A `log:` receiver as written in a rule file: one JSON line per
//! notification on standard error, or appended to `path`.

use std::path::PathBuf;

use marked_yaml::Node;

use crate::yaml::Checker;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: Option<PathBuf>,
}

/// Checks a `log:` receiver.
pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Config> {
    let g = c.fields(node, what, &["path"])?;
    let path = g
        .get("path")
        .and_then(|n| c.string(n, &g.path("path")))
        .map(PathBuf::from);
    Some(Config { path })
}
