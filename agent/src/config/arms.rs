//! A model's traffic split as configured: arms (name, upstream, weight)
//! instead of one upstream, and the sticky key.

use serde::Deserialize;

use super::{Mode, Model};

/// One arm of a traffic split.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    pub name: String,
    pub upstream: String,
    pub weight: f64,
}

/// Where a request's sticky key is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmKey {
    pub header: Option<String>,
    pub json_pointer: Option<String>,
}

/// What is wrong with a model's traffic split.
pub(super) fn check(m: &Model) -> Vec<String> {
    let mut problems = Vec::new();
    if m.arms.is_empty() {
        if m.arm_key.is_some() {
            problems.push("`arm_key` needs `arms`".to_string());
        }
        return problems;
    }
    if m.upstream.is_some() {
        problems.push("give `upstream` or `arms`, not both".to_string());
    }
    if m.mode != Mode::Proxy {
        problems.push("`arms` split proxied traffic (mode: proxy)".to_string());
    }
    problems.extend(driftwatch_protocol::arm_problems(
        m.arms.iter().map(|a| (a.name.as_str(), a.weight)),
    ));
    if let Some(k) = &m.arm_key {
        match (&k.header, &k.json_pointer) {
            (Some(_), None) => {}
            (None, Some(p)) if p.is_empty() || p.starts_with('/') => {}
            (None, Some(p)) => {
                problems.push(format!("arm_key.json_pointer: {p:?} must start with `/`"))
            }
            _ => problems
                .push("arm_key: give exactly one of `header` and `json_pointer`".to_string()),
        }
    }
    problems
}
