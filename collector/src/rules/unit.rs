//! `driftwatch rules test`: rule unit tests in YAML, like `promtool test
//! rules`. Input series are given as values over time (`0.1 0.3x10`,
//! `1+1x5`, `_` for no sample); the rules are evaluated every
//! `evaluation_interval` from time 0 and, at each `eval_time`, the firing
//! alerts of `alertname` must be exactly the expected ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Node;

use super::engine::{Engine, Snapshot};
use super::RuleErrors;
use crate::alert::State;
use crate::export::Series;
use crate::yaml::{Checker, Diagnostic};

struct InputSeries {
    metric: String,
    labels: BTreeMap<String, String>,
    values: Vec<Option<f64>>,
}

struct Expected {
    labels: BTreeMap<String, String>,
    annotations: Option<BTreeMap<String, String>>,
}

struct Check {
    eval_time: Duration,
    alertname: String,
    alerts: Vec<Expected>,
}

struct Case {
    name: String,
    interval: Duration,
    series: Vec<InputSeries>,
    checks: Vec<Check>,
}

/// A test file's outcome: how many checks passed, and what failed.
pub struct Outcome {
    pub passed: usize,
    pub failures: Vec<String>,
}

/// Runs one test file. Errors in the file itself (or its rule files) are
/// `RuleErrors` with positions.
pub fn run_file(path: &Path) -> Result<Outcome, RuleErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        RuleErrors(vec![Diagnostic {
            file: name.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let mut c = Checker::new(&name);
    let parsed = parse(&mut c, &text, path);
    let (rule_files, eval_interval, cases) = match parsed {
        Some(p) if c.diagnostics.is_empty() => p,
        _ => return Err(RuleErrors(c.take_sorted())),
    };
    let rules = super::load_files(&rule_files)?;
    let step = eval_interval.as_millis() as i64;
    let mut outcome = Outcome {
        passed: 0,
        failures: Vec::new(),
    };
    for case in &cases {
        let mut engine = Engine::new();
        let end = case
            .checks
            .iter()
            .map(|c| c.eval_time.as_millis() as i64)
            .max()
            .unwrap_or(0);
        let mut checks: Vec<&Check> = case.checks.iter().collect();
        checks.sort_by_key(|c| c.eval_time);
        let mut next = checks.into_iter().peekable();
        let mut t = 0;
        while t <= end {
            let snap = snapshot(case, t);
            engine.evaluate(&rules, t, step, &snap, &|_, _| None);
            while let Some(check) = next.next_if(|c| (c.eval_time.as_millis() as i64) < t + step) {
                match compare(&engine, check) {
                    Ok(()) => outcome.passed += 1,
                    Err(why) => outcome.failures.push(format!(
                        "{}: test {:?}, at {}, alert {}: {why}",
                        name,
                        case.name,
                        humantime::format_duration(check.eval_time),
                        check.alertname
                    )),
                }
            }
            t += step;
        }
    }
    Ok(outcome)
}

/// The series' values at `t`: the latest sample at or before it.
fn snapshot(case: &Case, t: i64) -> Snapshot {
    let index = (t / case.interval.as_millis().max(1) as i64) as usize;
    let series: Vec<Series> = case
        .series
        .iter()
        .filter_map(|s| {
            let v = (*s.values.get(index)?)?;
            Some(Series {
                metric: s.metric.clone(),
                labels: s.labels.clone(),
                value: v,
            })
        })
        .collect();
    let windows = super::engine::windows_from_series(&series);
    Snapshot {
        series,
        windows,
        waiting: Default::default(),
    }
}

fn compare(engine: &Engine, check: &Check) -> Result<(), String> {
    let firing: Vec<_> = engine
        .alerts()
        .filter(|a| a.state == State::Firing && a.name() == check.alertname)
        .collect();
    let show = |labels: &BTreeMap<String, String>| {
        let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{{{}}}", parts.join(", "))
    };
    let mut unmatched: Vec<_> = firing.clone();
    for exp in &check.alerts {
        let mut want = exp.labels.clone();
        want.insert("alertname".into(), check.alertname.clone());
        let Some(pos) = unmatched.iter().position(|a| a.labels == want) else {
            let got: Vec<String> = firing.iter().map(|a| show(&a.labels)).collect();
            return Err(format!(
                "expected a firing alert {}, firing: [{}]",
                show(&want),
                got.join(", ")
            ));
        };
        let a = unmatched.remove(pos);
        if let Some(ann) = &exp.annotations {
            if &a.annotations != ann {
                return Err(format!(
                    "annotations of {}: expected {ann:?}, got {:?}",
                    show(&want),
                    a.annotations
                ));
            }
        }
    }
    if let Some(extra) = unmatched.first() {
        return Err(format!("unexpected firing alert {}", show(&extra.labels)));
    }
    Ok(())
}

type Parsed = (Vec<PathBuf>, Duration, Vec<Case>);

fn parse(c: &mut Checker, text: &str, path: &Path) -> Option<Parsed> {
    let top = c.parse(text)?;
    let f = c.mapping(
        &top,
        "file",
        &["rule_files", "evaluation_interval", "tests"],
    );
    let rule_files: Vec<PathBuf> = f
        .require(c, "rule_files")
        .and_then(|n| c.strings(n, "rule_files"))?
        .iter()
        .map(|p| super::relative_to(path, p))
        .collect();
    let eval_interval = f
        .get("evaluation_interval")
        .map_or(Some(Duration::from_secs(60)), |n| {
            c.duration(n, "evaluation_interval", false)
        })?;
    let tests = f.require(c, "tests").and_then(|n| c.sequence(n, "tests"))?;
    let mut cases = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        let what = format!("tests[{i}]");
        let Some(g) = c.fields(
            t,
            &what,
            &["name", "interval", "input_series", "alert_rule_test"],
        ) else {
            continue;
        };
        let name = g
            .get("name")
            .and_then(|n| c.string(n, &g.path("name")))
            .unwrap_or_else(|| what.clone());
        let interval = g.get("interval").map_or(Some(eval_interval), |n| {
            c.duration(n, &g.path("interval"), false)
        });
        let mut series = Vec::new();
        if let Some(list) = g
            .get("input_series")
            .and_then(|n| c.sequence(n, &g.path("input_series")))
        {
            for (j, s) in list.iter().enumerate() {
                let sw = format!("{}[{j}]", g.path("input_series"));
                let Some(h) = c.fields(s, &sw, &["series", "values"]) else {
                    continue;
                };
                let sel = h.require(c, "series").and_then(|n| {
                    let text = c.string(n, &h.path("series"))?;
                    match parse_selector(&text) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            c.at(n.span(), format!("{}: {e}", h.path("series")));
                            None
                        }
                    }
                });
                let values = h.require(c, "values").and_then(|n| {
                    let text = match n {
                        Node::Scalar(s) => s.as_str().to_string(),
                        other => {
                            c.at(
                                other.span(),
                                format!("{}: expected a string of values", h.path("values")),
                            );
                            return None;
                        }
                    };
                    match expand_values(&text) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            c.at(n.span(), format!("{}: {e}", h.path("values")));
                            None
                        }
                    }
                });
                if let (Some((metric, labels)), Some(values)) = (sel, values) {
                    series.push(InputSeries {
                        metric,
                        labels,
                        values,
                    });
                }
            }
        }
        let mut checks = Vec::new();
        if let Some(list) = g
            .require(c, "alert_rule_test")
            .and_then(|n| c.sequence(n, &g.path("alert_rule_test")))
        {
            for (j, a) in list.iter().enumerate() {
                let aw = format!("{}[{j}]", g.path("alert_rule_test"));
                let Some(h) = c.fields(a, &aw, &["eval_time", "alertname", "exp_alerts"]) else {
                    continue;
                };
                let eval_time = h
                    .require(c, "eval_time")
                    .and_then(|n| c.duration(n, &h.path("eval_time"), true));
                let alertname = h
                    .require(c, "alertname")
                    .and_then(|n| c.string(n, &h.path("alertname")));
                let mut alerts = Vec::new();
                if let Some(list) = h
                    .get("exp_alerts")
                    .and_then(|n| c.sequence(n, &h.path("exp_alerts")))
                {
                    for (k, e) in list.iter().enumerate() {
                        let ew = format!("{}[{k}]", h.path("exp_alerts"));
                        let Some(x) = c.fields(e, &ew, &["exp_labels", "exp_annotations"]) else {
                            continue;
                        };
                        let labels = x
                            .get("exp_labels")
                            .map_or(Some(Vec::new()), |n| c.string_map(n, &x.path("exp_labels")));
                        let annotations = x
                            .get("exp_annotations")
                            .and_then(|n| c.string_map(n, &x.path("exp_annotations")));
                        if let Some(labels) = labels {
                            alerts.push(Expected {
                                labels: labels.into_iter().collect(),
                                annotations: annotations.map(|a| a.into_iter().collect()),
                            });
                        }
                    }
                }
                if let (Some(eval_time), Some(alertname)) = (eval_time, alertname) {
                    checks.push(Check {
                        eval_time,
                        alertname,
                        alerts,
                    });
                }
            }
        }
        if let Some(interval) = interval {
            cases.push(Case {
                name,
                interval,
                series,
                checks,
            });
        }
    }
    Some((rule_files, eval_interval, cases))
}

/// `name{key="value", ...}`.
fn parse_selector(text: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let text = text.trim();
    let (name, rest) = match text.find('{') {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    };
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{text:?} is not a series like name{{label=\"value\"}}"
        ));
    }
    let mut labels = BTreeMap::new();
    if !rest.is_empty() {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| format!("{text:?}: labels must be enclosed in {{...}}"))?;
        let mut chars = inner.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
            if chars.peek().is_none() {
                break;
            }
            let key: String =
                std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_'))
                    .collect();
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if key.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
                return Err(format!("{text:?}: expected label=\"value\""));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("{text:?}: unterminated label value")),
                }
            }
            labels.insert(key, value);
        }
    }
    Ok((name.to_string(), labels))
}

/// promtool's expanding notation: `a`, `_`, `axN` (N+1 times a), `a+bxN`
/// and `a-bxN` (a, a±b, ..., a±N·b), `_xN` (N blanks).
fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        let bad = || format!("{token:?} is not a value like 1, _, 1x5, 1+2x5 or _x3");
        match token.split_once('x') {
            None if token == "_" => out.push(None),
            None => out.push(Some(token.parse::<f64>().map_err(|_| bad())?)),
            Some(("_", n)) => {
                let n: usize = n.parse().map_err(|_| bad())?;
                out.extend(std::iter::repeat_n(None, n));
            }
            Some((start, n)) => {
                let n: usize = n.parse().map_err(|_| bad())?;
                // The step starts at the last + or - that is neither the
                // first character nor an exponent's sign.
                let bytes = start.as_bytes();
                let split = (1..bytes.len()).rev().find(|&i| {
                    matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E')
                });
                let (a, b) = match split {
                    Some(i) => {
                        let a: f64 = start[..i].parse().map_err(|_| bad())?;
                        let b: f64 = start[i..].parse().map_err(|_| bad())?;
                        (a, b)
                    }
                    None => (start.parse().map_err(|_| bad())?, 0.0),
                };
                out.extend((0..=n).map(|k| Some(a + b * k as f64)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expand_like_promtool() {
        assert_eq!(
            expand_values("1 _ 2x2 1+1x3 5-2x2 _x2").expect("values"),
            [
                1.0,
                f64::NAN,
                2.0,
                2.0,
                2.0,
                1.0,
                2.0,
                3.0,
                4.0,
                5.0,
                3.0,
                1.0,
                f64::NAN,
                f64::NAN
            ]
            .iter()
            .map(|v| (!v.is_nan()).then_some(*v))
            .collect::<Vec<_>>()
        );
        assert!(expand_values("high").is_err());
        assert_eq!(
            expand_values("1e-3x1").expect("values"),
            vec![Some(1e-3), Some(1e-3)]
        );
    }

    #[test]
    fn selectors_parse_names_and_labels() {
        let (name, labels) = parse_selector(
            r#"driftwatch_feature_drift_score{model="m", feature="a\"b",test="psi"}"#,
        )
        .expect("selector");
        assert_eq!(name, "driftwatch_feature_drift_score");
        assert_eq!(labels["feature"], "a\"b");
        assert_eq!(labels.len(), 3);
        assert!(parse_selector("x{model=m}").is_err());
    }
}
