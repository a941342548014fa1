//! Tests of the configuration: spans, and errors named with their place.

use super::*;

#[test]
fn spans_parse_and_label() {
    assert_eq!(Span::parse("5m").map(|s| s.label()), Ok("5m".to_string()));
    assert_eq!(Span::parse("1h").map(|s| s.label()), Ok("1h".to_string()));
    assert_eq!(Span::parse("1d").map(|s| s.label()), Ok("1d".to_string()));
    assert_eq!(Span::parse("90s").map(|s| s.label()), Ok("90s".to_string()));
    assert!(Span::parse("soon").is_err());
    assert!(Span::parse("0s").is_err());
}

#[test]
fn yaml_errors_name_line_and_column() {
    let dir = driftwatch_testkit::temp_dir("config");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "models:\n  - name: m\n    reference: r.csv\n    windows: [5m, often]\n",
    )
    .expect("write");
    let err = RawConfig::from_file(&path).expect_err("bad duration");
    let text = err.to_string();
    assert!(text.contains("bad.yaml:4:"), "{text}");
    assert!(text.contains("often"), "{text}");
    std::fs::write(&path, "models: []\nlisten: nowhere\ncolour: blue\n").expect("write");
    let err = RawConfig::from_file(&path).expect_err("unknown field");
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    std::fs::write(&path, "models: []\nlisten: nowhere\n").expect("write");
    let raw = RawConfig::from_file(&path).expect("parses");
    let err = raw.validate(&path, &|_| None).expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains("listen") && text.contains("at least one model"),
        "{text}"
    );
    std::fs::write(
        &path,
        "models:\n  - {name: a, reference: r.csv, partitions: 5}\n  - {name: b, reference: r.csv, partitions: 6}\n",
    )
    .expect("write");
    let raw = RawConfig::from_file(&path).expect("parses");
    let text = raw
        .validate(&path, &|_| None)
        .expect_err("5 partitions")
        .to_string();
    assert!(
        text.contains("models[0] (a).partitions: 5 does not divide 12"),
        "{text}"
    );
    assert!(!text.contains("models[1] (b).partitions"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn experiments_are_checked_at_load() {
    let dir = driftwatch_testkit::temp_dir("config-experiments");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("x.yaml");
    std::fs::write(
        &path,
        "models:\n  - name: m\n    task: regression\n    reference: r.csv\n    experiments:\n      - {name: 'a b', metric: accuracy, alpha: 0.7, arms: [{name: c, weight: 0}]}\n      - {name: up, metric: mae, method: msprt, arms: [{name: c, weight: 1}, {name: t, weight: 1}], start: yesterday}\n  - name: n\n    reference: r.csv\n    experiments:\n      - {name: up, metric: reward, arms: [{name: c, weight: 1}, {name: t, weight: 1}]}\n",
    )
    .expect("write");
    let raw = RawConfig::from_file(&path).expect("parses");
    let text = raw
        .validate(&path, &|_| None)
        .expect_err("invalid")
        .to_string();
    for want in [
        "models[0] (m).experiments[0] (a b).name: use letters",
        "experiments[0] (a b).metric: `accuracy` needs a classifier",
        "experiments[0] (a b).alpha: 0.7 is not in (0, 0.5)",
        "experiments[0] (a b).arms: at least two arms",
        "experiments[0] (a b).arms: the weights must sum to a positive number",
        "experiments[1] (up).method: msprt compares proportions",
        "experiments[1] (up).start: \"yesterday\" is not an RFC 3339 time",
        "models[1] (n).experiments[0] (up).name: used twice",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    std::fs::write(
        &path,
        "models:\n  - name: m\n    reference: r.csv\n    experiments:\n      - {name: x, metric: clicks, arms: []}\n",
    )
    .expect("write");
    let err = RawConfig::from_file(&path)
        .expect_err("unknown metric")
        .to_string();
    assert!(
        err.contains("unknown variant `clicks`") && err.contains("x.yaml:5:"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
