//! Routing as in Alertmanager: a tree of routes whose matchers pick the
//! receiver of an alert, and the grouping that turns many alerts into few
//! messages (`group_by`, `group_wait`, `group_interval`, `repeat_interval`,
//! inherited from the parent route when a child does not set them).

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::Node;
use serde::Serialize;

use super::matcher::Matcher;
use crate::yaml::{Checker, Diagnostic};

/// How alerts are grouped into messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum GroupBy {
    /// `group_by: ['...']`: every alert alone.
    Each,
    Labels(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Position in the tree (`root`, `root/0`, `root/0/1`), part of a group's identity.
    pub id: String,
    pub receiver: Option<String>,
    pub matchers: Vec<Matcher>,
    pub group_by: GroupBy,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Keep trying the following sibling routes after this one matched.
    #[serde(rename = "continue")]
    pub continue_: bool,
    pub routes: Vec<Route>,
}

impl Route {
    /// This route and those under it with `model` among their `group_by`
    /// labels (cluster mode: a model's groups travel with the model).
    pub fn group_by_model(&mut self) {
        if let GroupBy::Labels(names) = &mut self.group_by {
            if !names.iter().any(|n| n == "model") {
                names.push("model".into());
            }
        }
        for r in &mut self.routes {
            r.group_by_model();
        }
    }
}

impl Default for Route {
    /// The root route when a file gives none: Alertmanager's timings,
    /// grouped by alert name and model.
    fn default() -> Route {
        Route {
            id: "root".into(),
            receiver: None,
            matchers: Vec::new(),
            group_by: GroupBy::Labels(vec!["alertname".into(), "model".into()]),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(5 * 60),
            repeat_interval: Duration::from_secs(4 * 3600),
            continue_: false,
            routes: Vec::new(),
        }
    }
}

impl Route {
    /// The routes an alert reaches: the deepest matching ones, first match
    /// only unless a route says `continue: true` (the root always matches).
    pub fn find(&self, labels: &BTreeMap<String, String>) -> Vec<&Route> {
        let mut out = Vec::new();
        for child in &self.routes {
            if child.matchers.iter().all(|m| m.matches(labels)) {
                out.extend(child.find(labels));
                if !child.continue_ {
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    /// The route with this id, if the tree still has it.
    pub fn by_id(&self, id: &str) -> Option<&Route> {
        if self.id == id {
            return Some(self);
        }
        self.routes.iter().find_map(|r| r.by_id(id))
    }

    /// The labels that name an alert's group under this route.
    pub fn group_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match &self.group_by {
            GroupBy::Each => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }
}

const FIELDS: &[&str] = &[
    "receiver",
    "matchers",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "continue",
    "routes",
];

/// Checks a route (the root when `parent` is None); receivers it names
/// are pushed to `wanted` to be checked once every file is read.
pub fn check(
    c: &mut Checker,
    node: &Node,
    what: &str,
    id: &str,
    parent: Option<&Route>,
    wanted: &mut Vec<(String, Diagnostic)>,
) -> Option<Route> {
    let f = c.fields(node, what, FIELDS)?;
    let before = c.diagnostics.len();
    let base = parent.cloned().unwrap_or_default();
    let receiver = match f.get("receiver") {
        Some(n) => {
            let name = c.string(n, &f.path("receiver"));
            if let Some(name) = &name {
                wanted.push((name.clone(), c.place(n)));
            }
            name
        }
        None => base.receiver.clone(),
    };
    let mut matchers = Vec::new();
    if let Some(n) = f.get("matchers") {
        if parent.is_none() {
            c.at(
                n.span(),
                format!(
                    "{}: the root route matches every alert; put matchers on its `routes`",
                    f.path("matchers")
                ),
            );
        }
        for text in c.strings(n, &f.path("matchers")).unwrap_or_default() {
            match Matcher::parse(&text) {
                Ok(m) => matchers.push(m),
                Err(e) => c.at(n.span(), format!("{}: {e}", f.path("matchers"))),
            }
        }
    }
    let group_by = match f.get("group_by") {
        None => base.group_by.clone(),
        Some(n) => {
            let list = c.strings(n, &f.path("group_by")).unwrap_or_default();
            if list.iter().any(|l| l == "...") {
                if list.len() > 1 {
                    c.at(
                        n.span(),
                        format!(
                            "{}: `...` (every alert alone) stands alone",
                            f.path("group_by")
                        ),
                    );
                }
                GroupBy::Each
            } else {
                GroupBy::Labels(list)
            }
        }
    };
    let mut duration = |key: &str, inherited: Duration, zero_ok: bool| match f.get(key) {
        None => inherited,
        Some(n) => c.duration(n, &f.path(key), zero_ok).unwrap_or(inherited),
    };
    let group_wait = duration("group_wait", base.group_wait, true);
    let group_interval = duration("group_interval", base.group_interval, false);
    let repeat_interval = duration("repeat_interval", base.repeat_interval, false);
    let continue_ = f
        .get("continue")
        .and_then(|n| c.boolean(n, &f.path("continue")))
        .unwrap_or(false);
    let mut route = Route {
        id: id.to_string(),
        receiver,
        matchers,
        group_by,
        group_wait,
        group_interval,
        repeat_interval,
        continue_,
        routes: Vec::new(),
    };
    if let Some(n) = f.get("routes") {
        if let Some(list) = c.sequence(n, &f.path("routes")) {
            for (i, child) in list.iter().enumerate() {
                let child_id = format!("{id}/{i}");
                let what = format!("{}[{i}]", f.path("routes"));
                if let Some(r) = check(c, child, &what, &child_id, Some(&route), wanted) {
                    route.routes.push(r);
                }
            }
        }
    }
    (c.diagnostics.len() == before).then_some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Route, Vec<String>> {
        let mut c = Checker::new("r.yaml");
        let top = c.parse(text).expect("YAML");
        let node = top.get_node("route").expect("route").clone();
        let mut wanted = Vec::new();
        check(&mut c, &node, "route", "root", None, &mut wanted)
            .ok_or_else(|| c.take_sorted().iter().map(ToString::to_string).collect())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn routes_match_in_order_inherit_and_continue() {
        let route = parse(
            r#"route:
  receiver: team
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      group_by: ['...']
    - matchers: ['model=~"credit.*"']
      receiver: risk
      repeat_interval: 1h
      routes:
        - matchers: [feature=age]
          receiver: age-owner
"#,
        )
        .expect("valid");
        let names = |l: &BTreeMap<String, String>| -> Vec<(String, Option<String>)> {
            route
                .find(l)
                .iter()
                .map(|r| (r.id.clone(), r.receiver.clone()))
                .collect()
        };
        assert_eq!(
            names(&labels(&[("model", "fraud")])),
            [("root".to_string(), Some("team".to_string()))]
        );
        assert_eq!(
            names(&labels(&[("model", "credit_v2"), ("severity", "critical")])),
            [
                ("root/0".to_string(), Some("pager".to_string())),
                ("root/1".to_string(), Some("risk".to_string()))
            ]
        );
        let deep = route.find(&labels(&[("model", "credit"), ("feature", "age")]));
        assert_eq!(deep[0].id, "root/1/0");
        assert_eq!(deep[0].receiver.as_deref(), Some("age-owner"));
        // Inherited from root/1 and the root.
        assert_eq!(deep[0].repeat_interval, Duration::from_secs(3600));
        assert_eq!(deep[0].group_wait, Duration::from_secs(10));
        assert_eq!(deep[0].group_interval, Duration::from_secs(300));
        assert_eq!(
            deep[0].group_labels(&labels(&[("model", "credit"), ("feature", "age")])),
            labels(&[("model", "credit")])
        );
        assert_eq!(
            route.by_id("root/0").map(|r| &r.group_by),
            Some(&GroupBy::Each)
        );
    }

    #[test]
    fn bad_routes_are_reported_with_positions() {
        let errors = parse(
            "route:\n  matchers: [a=b]\n  group_wait: soon\n  routes:\n    - matchers: ['=x']\n      continue: maybe\n      colour: red\n",
        )
        .expect_err("invalid");
        let text = errors.join("\n");
        assert!(
            text.contains("r.yaml:2:13: route.matchers: the root route matches every alert"),
            "{text}"
        );
        assert!(text.contains("r.yaml:3:15: route.group_wait:"), "{text}");
        assert!(
            text.contains("route.routes[0].matchers: \"=x\" is not a matcher"),
            "{text}"
        );
        assert!(
            text.contains("route.routes[0].continue: expected true or false"),
            "{text}"
        );
        assert!(text.contains("unknown field `colour`"), "{text}");
    }
}
