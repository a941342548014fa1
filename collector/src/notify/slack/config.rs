//! A `slack:` receiver as written in a rule file: the incoming webhook's
//! URL, which holds a key, by env var or file only.

use marked_yaml::Node;

use crate::notify::secret::{self, Secret};
use crate::yaml::Checker;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub url: Secret,
}

/// Checks a `slack:` receiver.
pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Config> {
    let g = c.fields(node, what, &["url_env", "url_file"])?;
    let url = secret::check(c, &g, "url", true)?;
    Some(Config { url })
}
