//! An `alertmanager:` receiver as written in a rule file: the base URL of
//! an existing Alertmanager, which groups, routes and repeats by itself.

use marked_yaml::Node;

use crate::yaml::Checker;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub url: String,
}

/// Checks an `alertmanager:` receiver.
pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Config> {
    let g = c.fields(node, what, &["url"])?;
    let url = g.url(c, "url")?;
    Some(Config { url })
}
