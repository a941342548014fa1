//! Rule files checked: every problem in every file reported at once with
//! file:line:column (`driftwatch rules check`), groups and rules here,
//! receivers, routes and actions by `notify`'s checkers, then the names
//! rules use checked against those defined in any file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::Node;

use super::{catalog, Group, Op, Rule, RuleErrors, RuleSet, Threshold, RESERVED_LABELS};
use crate::notify;
use crate::yaml::{Checker, Diagnostic, Fields};

/// Loads and checks rule files together (a rule may name a receiver defined
/// in another file).
pub fn load_files(paths: &[PathBuf]) -> Result<RuleSet, RuleErrors> {
    let mut set = RuleSet {
        files: paths.to_vec(),
        ..RuleSet::default()
    };
    let mut diagnostics = Vec::new();
    // Receivers a rule names, with where, checked once all files are read.
    let mut wanted: Vec<(String, Diagnostic)> = Vec::new();
    let mut wanted_actions: Vec<(String, Diagnostic)> = Vec::new();
    let mut route_file: Option<String> = None;
    for path in paths {
        let name = path.display().to_string();
        let mut c = Checker::new(&name);
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut wants = Wanted {
                    receivers: &mut wanted,
                    actions: &mut wanted_actions,
                    route_file: &mut route_file,
                };
                check_file(&mut c, &text, &mut set, &mut wants)
            }
            Err(e) => c.diagnostics.push(Diagnostic {
                file: name.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read the file: {e}"),
            }),
        }
        diagnostics.extend(c.take_sorted());
    }
    let receivers: Vec<&str> = set
        .routing
        .receivers
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let actions: Vec<&str> = set
        .routing
        .actions
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    for (kind, uses, known) in [
        ("receiver", wanted, receivers),
        ("action", wanted_actions, actions),
    ] {
        for (name, mut at) in uses {
            if !known.contains(&name.as_str()) {
                at.message = format!(
                    "unknown {kind} `{name}`; defined: {}",
                    if known.is_empty() {
                        format!("none (add it under `{kind}s:`)")
                    } else {
                        known.join(", ")
                    }
                );
                diagnostics.push(at);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for g in &set.groups {
        if !seen.insert(g.name.clone()) {
            diagnostics.push(Diagnostic {
                file: paths
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                line: 1,
                column: 1,
                message: format!("group `{}` is defined twice", g.name),
            });
        }
    }
    if diagnostics.is_empty() {
        Ok(set)
    } else {
        Err(RuleErrors(diagnostics))
    }
}

/// Names used before they are known to exist (checked once every file is
/// read), and which file gave the route.
struct Wanted<'a> {
    receivers: &'a mut Vec<(String, Diagnostic)>,
    actions: &'a mut Vec<(String, Diagnostic)>,
    route_file: &'a mut Option<String>,
}

/// Checks one file's text into `set`.
fn check_file(c: &mut Checker, text: &str, set: &mut RuleSet, wants: &mut Wanted<'_>) {
    let Some(top) = c.parse(text) else { return };
    let routing = Arc::make_mut(&mut set.routing);
    let top = c.mapping(&top, "file", &["groups", "receivers", "route", "actions"]);
    if let Some(node) = top.get("route") {
        if let Some(first) = wants.route_file.as_ref() {
            c.at(
                node.span(),
                format!("a route is already given in {first}; give one `route:` in all rule files"),
            );
        } else if let Some(r) =
            notify::route::check(c, node, "route", "root", None, wants.receivers)
        {
            *wants.route_file = Some(c.file.clone());
            routing.route = r;
        }
    }
    if let Some(node) = top.get("actions") {
        if let Some(list) = c.sequence(node, "actions") {
            for (i, a) in list.iter().enumerate() {
                if let Some(a) = notify::action::check(c, a, &format!("actions[{i}]")) {
                    let taken = routing.actions.iter().any(|x| x.name == a.name)
                        || routing.receivers.iter().any(|x| x.name == a.name);
                    if taken {
                        c.at(
                            r_span(node, i),
                            format!(
                                "`{}` is already the name of a receiver or an action",
                                a.name
                            ),
                        );
                    }
                    routing.actions.push(a);
                }
            }
        }
    }
    if let Some(node) = top.get("receivers") {
        if let Some(list) = c.sequence(node, "receivers") {
            for (i, r) in list.iter().enumerate() {
                if let Some(r) = notify::receiver::check(c, r, &format!("receivers[{i}]")) {
                    if routing.receivers.iter().any(|x| x.name == r.name)
                        || routing.actions.iter().any(|x| x.name == r.name)
                    {
                        c.at(
                            r_span(node, i),
                            format!("receiver `{}` is defined twice", r.name),
                        );
                    }
                    routing.receivers.push(r);
                }
            }
        }
    }
    // A file may hold only receivers, a route or actions (rules split
    // across files); one with none of them needs groups.
    let shared = ["receivers", "route", "actions"]
        .iter()
        .any(|k| top.get(k).is_some());
    let groups = if shared {
        top.get("groups")
    } else {
        top.require(c, "groups")
    };
    let Some(groups) = groups else {
        return;
    };
    let Some(groups) = c.sequence(groups, "groups") else {
        return;
    };
    for (gi, g) in groups.iter().enumerate() {
        let what = format!("groups[{gi}]");
        let Some(f) = c.fields(g, &what, &["name", "interval", "rules"]) else {
            continue;
        };
        let name = f
            .require(c, "name")
            .and_then(|n| c.string(n, &f.path("name")));
        let interval = f
            .get("interval")
            .and_then(|n| c.duration(n, &f.path("interval"), false));
        let mut rules = Vec::new();
        if let Some(list) = f
            .require(c, "rules")
            .and_then(|n| c.sequence(n, &f.path("rules")))
        {
            for (ri, r) in list.iter().enumerate() {
                if let Some(rule) = check_rule(c, r, &format!("{what}.rules[{ri}]"), wants) {
                    rules.push(rule);
                }
            }
        }
        if let Some(name) = name {
            set.groups.push(Group {
                name,
                interval,
                rules,
            });
        }
    }
}

fn r_span(list: &Node, i: usize) -> &marked_yaml::Span {
    match list {
        Node::Sequence(s) => s.get(i).map_or(list.span(), Node::span),
        _ => list.span(),
    }
}

const RULE_FIELDS: &[&str] = &[
    "alert",
    "model",
    "metric",
    "test",
    "role",
    "performance",
    "quantile",
    "features",
    "window",
    "op",
    "threshold",
    "resolve_threshold",
    "min_samples",
    "for",
    "keep_firing_for",
    "severity",
    "labels",
    "annotations",
    "receivers",
    "actions",
];

fn check_rule(c: &mut Checker, node: &Node, what: &str, wants: &mut Wanted<'_>) -> Option<Rule> {
    let f = c.fields(node, what, RULE_FIELDS)?;
    let before = c.diagnostics.len();
    let alert = check_alert_name(c, &f);
    let model = f
        .get("model")
        .and_then(|n| c.string(n, &f.path("model")))
        .filter(|m| m != "*");
    let metric = check_metric(c, &f);
    let selectors = check_selectors(c, &f, what, metric);
    let features = check_features(c, &f, metric);
    let window = f.get("window").and_then(|n| {
        let d = c.duration(n, &f.path("window"), false)?;
        Some(crate::config::Span { duration: d }.label())
    });
    let condition = check_condition(c, &f, metric);
    let timing = check_timing(c, &f);
    let severity = f.get("severity").map_or(Some("warning".to_string()), |n| {
        c.string(n, &f.path("severity"))
    });
    let labels = check_labels(c, &f);
    let annotations = check_annotations(c, &f);
    let (receivers, actions) = check_targets(c, &f, wants);
    if c.diagnostics.len() > before {
        return None;
    }
    let (op, threshold, resolve_threshold) = condition?;
    let (min_samples, for_, keep_firing_for) = timing?;
    Some(Rule {
        alert: alert?,
        model,
        metric: metric?,
        test: selectors.test,
        role: selectors.role,
        performance: selectors.performance,
        quantile: selectors.quantile,
        features,
        window,
        op,
        threshold,
        resolve_threshold,
        min_samples,
        for_,
        keep_firing_for,
        severity: severity?,
        labels: labels?,
        annotations: annotations?,
        receivers: receivers?,
        actions: actions?,
    })
}

/// `alert`: letters, digits and underscores.
fn check_alert_name(c: &mut Checker, f: &Fields<'_>) -> Option<String> {
    let alert = f
        .require(c, "alert")
        .and_then(|n| c.string(n, &f.path("alert")));
    if let (Some(a), Some(n)) = (&alert, f.get("alert")) {
        if a.is_empty() || !a.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            c.at(
                n.span(),
                format!(
                    "{}: {a:?} must be letters, digits and underscores",
                    f.path("alert")
                ),
            );
        }
    }
    alert
}

/// `metric`: one of the catalog's.
fn check_metric(c: &mut Checker, f: &Fields<'_>) -> Option<&'static catalog::MetricDef> {
    f.require(c, "metric").and_then(|n| {
        let name = c.string(n, &f.path("metric"))?;
        let def = catalog::find(&name);
        if def.is_none() {
            c.at(
                n.span(),
                format!(
                    "{}: unknown metric `{name}`, expected one of: {}",
                    f.path("metric"),
                    catalog::names()
                ),
            );
        }
        def
    })
}

/// The series a rule selects besides model, feature and window.
#[derive(Default)]
struct Selectors {
    test: Option<String>,
    role: Option<String>,
    performance: Option<String>,
    quantile: Option<String>,
}

/// `test`, `role`, `performance`, `quantile`: each must suit the metric
/// and come from its closed list; a metric that needs one must have it.
fn check_selectors(
    c: &mut Checker,
    f: &Fields<'_>,
    what: &str,
    metric: Option<&catalog::MetricDef>,
) -> Selectors {
    // Selectors: each must suit the metric, and come from its closed list.
    let mut selector = |key: &str, allowed: Option<&[&str]>, applies: bool| -> Option<String> {
        let n = f.get(key)?;
        let v = c.string(n, &f.path(key))?;
        if let Some(m) = metric.filter(|_| !applies) {
            c.at(
                n.span(),
                format!("{}: `{}` has no `{key}` label", f.path(key), m.name),
            );
            return None;
        }
        if let Some(list) = allowed.filter(|l| !l.contains(&v.as_str())) {
            c.at(
                n.span(),
                format!(
                    "{}: unknown {key} `{v}`, expected one of: {}",
                    f.path(key),
                    list.join(", ")
                ),
            );
            return None;
        }
        Some(v)
    };
    let test_names = crate::stats::TestKind::names();
    let tests: Vec<&str> = test_names.split(", ").map(str::trim).collect();
    let test = selector("test", Some(&tests), metric.is_some_and(|m| m.test));
    let role = selector("role", Some(catalog::ROLES), metric.is_some_and(|m| m.role));
    let estimated = metric.is_some_and(|m| m.estimated);
    let performance = selector(
        "performance",
        (!estimated).then_some(catalog::PERFORMANCE),
        metric.is_some_and(|m| m.performance),
    );
    let quantile = selector(
        "quantile",
        Some(catalog::QUANTILES),
        metric.is_some_and(|m| m.quantile),
    );
    if let Some(v) = performance
        .as_ref()
        .filter(|v| estimated && !catalog::is_estimated(v))
    {
        let n = f.get("performance").map(|n| n.span());
        if let Some(span) = n {
            c.at(
                span,
                format!(
                    "{}: unknown estimated metric `{v}`, expected one of: {}, or a multiclass cell true_A_pred_B",
                    f.path("performance"),
                    catalog::ESTIMATED.join(", ")
                ),
            );
        }
    }
    if let Some(m) = metric {
        if m.test && test.is_none() && f.get("test").is_none() {
            c.at(
                f.span(),
                format!(
                    "{what}: `{}` needs `test` (one of: {})",
                    m.name,
                    tests.join(", ")
                ),
            );
        }
        if m.performance && f.get("performance").is_none() {
            c.at(
                f.span(),
                format!(
                    "{what}: `{}` needs `performance` (one of: {})",
                    m.name,
                    if m.estimated {
                        catalog::ESTIMATED
                    } else {
                        catalog::PERFORMANCE
                    }
                    .join(", ")
                ),
            );
        }
        if m.quantile && f.get("quantile").is_none() {
            c.at(
                f.span(),
                format!(
                    "{what}: `{}` needs `quantile` (one of: {})",
                    m.name,
                    catalog::QUANTILES.join(", ")
                ),
            );
        }
    }
    Selectors {
        test,
        role,
        performance,
        quantile,
    }
}

/// `features`: only for per-feature metrics.
fn check_features(
    c: &mut Checker,
    f: &Fields<'_>,
    metric: Option<&catalog::MetricDef>,
) -> Option<Vec<String>> {
    f.get("features").and_then(|n| {
        let list = c.strings(n, &f.path("features"))?;
        if metric.is_some_and(|m| !m.per_feature) {
            c.at(
                n.span(),
                format!(
                    "{}: only per-feature metrics take `features`",
                    f.path("features")
                ),
            );
        }
        Some(list)
    })
}

/// `op`, `threshold` and `resolve_threshold` (on the quiet side).
fn check_condition(
    c: &mut Checker,
    f: &Fields<'_>,
    metric: Option<&catalog::MetricDef>,
) -> Option<(Op, Threshold, Option<f64>)> {
    let op = f.require(c, "op").and_then(|n| {
        let s = c.string(n, &f.path("op"))?;
        let op = Op::ALL.iter().find(|(t, _)| *t == s).map(|(_, o)| *o);
        if op.is_none() {
            c.at(
                n.span(),
                format!(
                    "{}: unknown comparison {s:?}, expected one of: > >= < <= == !=",
                    f.path("op")
                ),
            );
        }
        op
    });
    let threshold = f
        .require(c, "threshold")
        .and_then(|n| check_threshold(c, n, &f.path("threshold"), metric));
    let resolve_threshold = f
        .get("resolve_threshold")
        .and_then(|n| c.number(n, &f.path("resolve_threshold")));
    if let (Some(op), Some(Threshold::Value(t)), Some(r), Some(n)) =
        (op, threshold, resolve_threshold, f.get("resolve_threshold"))
    {
        // Hysteresis: the resolve threshold must be on the quiet side.
        let wrong = match op {
            Op::Gt | Op::Ge => r > t,
            Op::Lt | Op::Le => r < t,
            Op::Eq | Op::Ne => true,
        };
        if wrong {
            c.at(
                n.span(),
                format!(
                    "{}: {r} is not on the resolving side of `{} {t}` (it keeps the alert while the value stays `{} {r}`)",
                    f.path("resolve_threshold"),
                    op.as_str(),
                    op.as_str()
                ),
            );
        }
    }
    Some((op?, threshold?, resolve_threshold))
}

/// `min_samples`, `for` and `keep_firing_for`.
fn check_timing(c: &mut Checker, f: &Fields<'_>) -> Option<(u64, Duration, Duration)> {
    let min_samples = match f.get("min_samples") {
        None => Some(0),
        Some(n) => c.number(n, &f.path("min_samples")).and_then(|x| {
            if x >= 0.0 && x.fract() == 0.0 {
                Some(x as u64)
            } else {
                c.at(
                    n.span(),
                    format!("{}: expected a whole number ≥ 0", f.path("min_samples")),
                );
                None
            }
        }),
    };
    let for_ = f.get("for").map_or(Some(Duration::ZERO), |n| {
        c.duration(n, &f.path("for"), true)
    });
    let keep_firing_for = f.get("keep_firing_for").map_or(Some(Duration::ZERO), |n| {
        c.duration(n, &f.path("keep_firing_for"), true)
    });
    Some((min_samples?, for_?, keep_firing_for?))
}

/// `labels`: valid names, none that driftwatch sets.
fn check_labels(c: &mut Checker, f: &Fields<'_>) -> Option<Vec<(String, String)>> {
    let labels = f
        .get("labels")
        .map_or(Some(Vec::new()), |n| c.string_map(n, &f.path("labels")));
    if let (Some(list), Some(n)) = (&labels, f.get("labels")) {
        for (k, _) in list {
            let bad = k.is_empty()
                || !k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                || k.starts_with(|ch: char| ch.is_ascii_digit());
            if bad || RESERVED_LABELS.contains(&k.as_str()) {
                c.at(
                    n.span(),
                    format!(
                        "{}: label `{k}` is {}",
                        f.path("labels"),
                        if bad {
                            "not a valid label name"
                        } else {
                            "set by driftwatch"
                        }
                    ),
                );
            }
        }
    }
    labels
}

/// `annotations`: templates that parse.
fn check_annotations(c: &mut Checker, f: &Fields<'_>) -> Option<Vec<(String, String)>> {
    let annotations = f.get("annotations").map_or(Some(Vec::new()), |n| {
        c.string_map(n, &f.path("annotations"))
    });
    if let (Some(list), Some(Node::Mapping(m))) = (&annotations, f.get("annotations")) {
        let env = minijinja::Environment::new();
        for ((k, text), (key, _)) in list.iter().zip(m.iter()) {
            if let Err(e) = env.template_from_str(text) {
                c.at(
                    key.span(),
                    format!(
                        "{}.{k}: the template does not parse: {}",
                        f.path("annotations"),
                        e.detail().unwrap_or(&e.to_string())
                    ),
                );
            }
        }
    }
    annotations
}

/// `receivers` and `actions`: names checked once every file is read.
fn check_targets(
    c: &mut Checker,
    f: &Fields<'_>,
    wants: &mut Wanted<'_>,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let receivers = f
        .get("receivers")
        .map_or(Some(Vec::new()), |n| c.strings(n, &f.path("receivers")));
    if let (Some(list), Some(Node::Sequence(seq))) = (&receivers, f.get("receivers")) {
        for (r, n) in list.iter().zip(seq.iter()) {
            wants.receivers.push((r.clone(), c.place(n)));
        }
    }
    let actions = f
        .get("actions")
        .map_or(Some(Vec::new()), |n| c.strings(n, &f.path("actions")));
    if let (Some(list), Some(Node::Sequence(seq))) = (&actions, f.get("actions")) {
        for (a, n) in list.iter().zip(seq.iter()) {
            wants.actions.push((a.clone(), c.place(n)));
        }
    }
    (receivers, actions)
}

fn check_threshold(
    c: &mut Checker,
    n: &Node,
    what: &str,
    metric: Option<&catalog::MetricDef>,
) -> Option<Threshold> {
    let calibrated = |c: &mut Checker, sigmas: f64, chunks: usize| {
        if metric.is_some_and(|m| !m.test || m.name.ends_with("p_value")) {
            c.at(
                n.span(),
                format!("{what}: `calibrated` learns a drift statistic from the reference; it applies to driftwatch_feature_drift_score and driftwatch_prediction_drift_score"),
            );
            return None;
        }
        Some(Threshold::Calibrated { sigmas, chunks })
    };
    match n {
        Node::Scalar(s) if s.as_str() == "calibrated" => calibrated(c, 3.0, 10),
        Node::Mapping(_) => {
            let f = c.fields(n, what, &["calibrated"])?;
            let inner = f.require(c, "calibrated")?;
            let g = c.fields(inner, &f.path("calibrated"), &["sigmas", "chunks"])?;
            let sigmas = g
                .get("sigmas")
                .map_or(Some(3.0), |x| c.number(x, &g.path("sigmas")))?;
            let chunks = g
                .get("chunks")
                .map_or(Some(10.0), |x| c.number(x, &g.path("chunks")))?;
            if !(2.0..=1000.0).contains(&chunks) || chunks.fract() != 0.0 {
                c.at(
                    inner.span(),
                    format!(
                        "{}: chunks must be a whole number from 2 to 1000",
                        g.path("chunks")
                    ),
                );
                return None;
            }
            calibrated(c, sigmas, chunks as usize)
        }
        Node::Scalar(s) => match (s.may_coerce(), s.as_str().parse::<f64>()) {
            (true, Ok(x)) if !x.is_nan() => Some(Threshold::Value(x)),
            (plain, _) => {
                let got = if plain { "" } else { "the quoted string " };
                c.at(
                    n.span(),
                    format!(
                        "{what}: expected a number or `calibrated`, got {got}{:?}",
                        s.as_str()
                    ),
                );
                None
            }
        },
        Node::Sequence(_) => {
            c.at(
                n.span(),
                format!("{what}: expected a number or `calibrated`, got a list"),
            );
            None
        }
    }
}
