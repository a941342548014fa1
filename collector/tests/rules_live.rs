//! Rules end to end: `driftwatch rules check` and `rules test` on the
//! shipped packs and on broken files, and rules running in the real
//! collector: alerts fire for the features the offline report finds
//! drifted, a broken reload is refused while the old rules keep running,
//! file changes and SIGHUP reload, and alert timers survive `kill -9`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::examples::{args_with_rules, drift_group, drifted_features, post_examples, run_cli};
use common::server::Server;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn packs() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo("rules"))
        .expect("rules/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn the_shipped_packs_pass_check_and_their_tests() {
    let files = packs();
    assert!(files.len() >= 5, "{files:?}");
    let mut args = vec!["rules", "check"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("14 rule(s)"), "{out}");
    let tests: Vec<String> = std::fs::read_dir(repo("rules/tests"))
        .expect("rules/tests")
        .filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
        .collect();
    assert!(tests.len() >= 4);
    let mut args = vec!["rules", "test"];
    args.extend(tests.iter().map(String::as_str));
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 failed"), "{out}");
}

#[test]
fn rules_judge_multivariate_segment_and_dle_metrics_and_refuse_a_misspelt_estimate() {
    let dir = common::server::temp_db_dir();
    let rules = driftwatch_testkit::file(
        &dir,
        "analyses.yaml",
        r#"groups:
  - name: analyses
    rules:
      - alert: MultivariateDrift
        metric: driftwatch_multivariate_drift_alert
        op: "=="
        threshold: 1
      - alert: SegmentDrift
        metric: driftwatch_segment_drift_detected
        features: [income]
        op: "=="
        threshold: 1
      - alert: SegmentAccuracyLow
        metric: driftwatch_segment_estimated_performance
        role: champion
        performance: accuracy
        op: "<"
        threshold: 0.7
      - alert: EstimatedErrorHigh
        metric: driftwatch_estimated_performance_alert
        role: champion
        performance: rmse
        op: "=="
        threshold: 1
"#,
    );
    let (code, out, err) = run_cli(&["rules", "check", rules.to_str().expect("UTF-8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 rule(s)"), "{out}");
    std::fs::write(
        &rules,
        "groups:\n  - name: x\n    rules:\n      - alert: Typo\n        metric: driftwatch_segment_estimated_performance\n        role: champion\n        performance: rmsel\n        op: \">\"\n        threshold: 1\n",
    )
    .expect("write");
    let (code, _, err) = run_cli(&["rules", "check", rules.to_str().expect("UTF-8")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("7:22: groups[0].rules[0].performance: unknown estimated metric `rmsel`"),
        "{err}"
    );
}

#[test]
fn rules_check_reports_every_problem_with_its_position() {
    let dir = common::server::temp_db_dir();
    let bad = driftwatch_testkit::file(
        &dir,
        "bad.yaml",
        r#"receivers:
  - name: hook
    webhook: {url: "not a url"}
groups:
  - name: bad
    rules:
      - alert: Bad Name
        metric: driftwatch_feature_drift_scor
        window: sometimes
        op: "=>"
        threshold: high
        annotations:
          summary: "{{ model "
        receivers: [nobody]
        colour: red
      - alert: Quoted
        metric: driftwatch_feature_drift_score
        test: psi
        op: ">"
        threshold: "0.2"
"#,
    );
    let (code, _, err) = run_cli(&["rules", "check", bad.to_str().expect("UTF-8")]);
    assert_eq!(code, 1, "{err}");
    let f = bad.display().to_string();
    for want in [
        format!("{f}:3:20: receivers[0].webhook.url: \"not a url\" is not a URL"),
        format!("{f}:7:16: groups[0].rules[0].alert: \"Bad Name\" must be letters, digits and underscores"),
        format!("{f}:8:17: groups[0].rules[0].metric: unknown metric `driftwatch_feature_drift_scor`, expected one of: driftwatch_feature_drift_score,"),
        format!("{f}:9:17: groups[0].rules[0].window: \"sometimes\" is not a duration"),
        format!("{f}:10:13: groups[0].rules[0].op: unknown comparison \"=>\""),
        format!("{f}:11:20: groups[0].rules[0].threshold: expected a number or `calibrated`, got \"high\""),
        format!("{f}:13:11: groups[0].rules[0].annotations.summary: the template does not parse"),
        format!("{f}:14:21: unknown receiver `nobody`"),
        format!("{f}:15:9: groups[0].rules[0]: unknown field `colour`"),
        format!("{f}:20:20: groups[0].rules[1].threshold: expected a number or `calibrated`, got the quoted string \"0.2\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("10 problem(s) found"), "{err}");
    // YAML-level problems stop the file with their position.
    std::fs::write(&bad, "groups:\n\t- name: x\n").expect("write");
    let (code, _, err) = run_cli(&["rules", "check", bad.to_str().expect("UTF-8")]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{f}:2:1: a tab in indentation")),
        "{err}"
    );
    // However deep a file nests, it is refused where it goes too deep (it
    // used to overflow the stack from 30,000 levels).
    for levels in [50_000, 1_000_000] {
        std::fs::write(&bad, format!("groups:\n  {}x\n", "- ".repeat(levels))).expect("write");
        let (code, _, err) = run_cli(&["rules", "check", bad.to_str().expect("UTF-8")]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("{f}:2:129: nested more than 64 levels deep")),
            "{err}"
        );
    }
    std::fs::write(&bad, "groups:\n  - name: x\n    name: y\n    rules: []\n").expect("write");
    let (_, _, err) = run_cli(&["rules", "check", bad.to_str().expect("UTF-8")]);
    assert!(
        err.contains(&format!("{f}:3:5: duplicate key `name`")),
        "{err}"
    );
    // Routes and actions are checked the same way.
    std::fs::write(
        &bad,
        r#"route:
  receiver: pager
  group_wait: soon
actions:
  - name: retrain
    webhook:
      url: ftp://x/y
      body: "{{ evidence | tojson "
groups:
  - name: g
    rules:
      - alert: A
        metric: driftwatch_label_coverage_ratio
        op: "<"
        threshold: 0.5
        actions: [retrian]
"#,
    )
    .expect("write");
    let (code, _, err) = run_cli(&["rules", "check", bad.to_str().expect("UTF-8")]);
    assert_eq!(code, 1);
    for want in [
        format!("{f}:2:13: unknown receiver `pager`"),
        format!("{f}:3:15: route.group_wait: \"soon\" is not a duration"),
        format!("{f}:7:12: actions[0].webhook.url: \"ftp://x/y\" is not an http(s) URL"),
        format!("{f}:8:13: actions[0].webhook.body: the template does not parse"),
        format!("{f}:16:19: unknown action `retrian`"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    // Rules split across files: receivers and the route in one file with no
    // groups; an empty file still needs something.
    let shared = driftwatch_testkit::file(
        &dir,
        "receivers.yaml",
        "route: {receiver: hook}\nreceivers:\n  - name: hook\n    log: {}\n",
    );
    let rules = driftwatch_testkit::file(
        &dir,
        "only-rules.yaml",
        "groups:\n  - name: g\n    rules:\n      - alert: Low\n        metric: driftwatch_label_coverage_ratio\n        op: \"<\"\n        threshold: 0.5\n",
    );
    let path = |p: &PathBuf| p.to_str().expect("UTF-8").to_string();
    let (code, _, err) = run_cli(&["rules", "check", &path(&shared), &path(&rules)]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&bad, "{}\n").expect("write");
    let (code, _, err) = run_cli(&["rules", "check", bad.to_str().expect("UTF-8")]);
    assert_eq!(code, 1);
    assert!(err.contains("missing required field `groups`"), "{err}");
    // A rule test whose expectation is wrong fails, naming what fired.
    std::fs::write(
        dir.join("rules.yaml"),
        "groups:\n  - name: g\n    rules:\n      - alert: Low\n        metric: driftwatch_label_coverage_ratio\n        op: \"<\"\n        threshold: 0.5\n",
    )
    .expect("write");
    let test = driftwatch_testkit::file(&dir, "rules.test.yaml", "rule_files: [rules.yaml]\ntests:\n  - input_series:\n      - series: 'driftwatch_label_coverage_ratio{model=\"m\", window=\"1h\"}'\n        values: \"0.1x3\"\n    alert_rule_test:\n      - eval_time: 2m\n        alertname: Low\n        exp_alerts: []\n");
    let (code, out, err) = run_cli(&["rules", "test", test.to_str().expect("UTF-8")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("unexpected firing alert {alertname=\"Low\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn drift_rule(for_: &str, threshold: &str) -> String {
    let group = drift_group(
        threshold,
        &format!(
            r#"        window: 1d
        min_samples: 1000
        for: {for_}
        annotations:
          summary: "{{{{ feature }}}} drifted; top: {{{{ top_features | map(attribute='name') | join(',') }}}}"
        receivers: [log]
"#
        ),
    );
    format!("receivers:\n  - name: log\n    log: {{}}\n{group}")
}

fn alerts(server: &Server) -> Vec<Value> {
    let (status, body) = server.request("GET", "/v1/alerts", &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["alerts"].as_array().cloned().unwrap_or_default()
}

fn firing_features(server: &Server) -> Vec<String> {
    let mut f: Vec<String> = alerts(server)
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["feature"].as_str().map(String::from))
        .collect();
    f.sort();
    f
}

#[test]
fn alerts_fire_for_the_drifted_features_and_reloads_keep_the_last_good_rules() {
    let dir = common::server::temp_db_dir();
    let rules = driftwatch_testkit::file(&dir, "rules.yaml", drift_rule("0s", "1"));
    let args = args_with_rules(&rules);
    let server = Server::start(&args, &[]);
    post_examples(&server);
    let drifted = drifted_features();
    assert!(!drifted.is_empty());
    server.wait_for(
        Duration::from_secs(20),
        "alerts for the drifted features",
        |s| firing_features(s) == drifted,
    );
    let firing = server.metric(
        "driftwatch_alerts_firing",
        &[
            ("alertname", "FeatureDrift"),
            ("model", "credit"),
            ("severity", "warning"),
        ],
    );
    assert_eq!(firing, Some(drifted.len() as f64));
    let first = alerts(&server)[0].clone();
    let summary = first["annotations"]["summary"].as_str().expect("summary");
    assert!(summary.contains("drifted; top: "), "{summary}");
    for f in &drifted {
        assert!(summary.contains(f.as_str()), "{summary} lacks {f}");
    }

    // A broken file is refused; the old rules keep running.
    std::fs::write(&rules, "groups:\n  - name: drift\n    rules:\n      - alert: FeatureDrift\n        threshold: high\n").expect("rules");
    let (status, body) = server.request("POST", "/-/reload", &[], b"");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("rules.yaml:5:20"), "{body}");
    assert_eq!(
        server.metric("driftwatch_rules_last_reload_success", &[]),
        Some(0.0)
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(firing_features(&server), drifted);
    // So is a file nested 10,000 deep (it used to overflow a worker's
    // stack and abort the collector).
    std::fs::write(&rules, format!("groups:\n  {}x\n", "- ".repeat(10_000))).expect("rules");
    let (status, body) = server.request("POST", "/-/reload", &[], b"");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("rules.yaml:2:129: nested more than 64 levels deep"),
        "{body}"
    );
    assert_eq!(firing_features(&server), drifted);
    let (_, body) = server.request("GET", "/v1/rules", &[], b"");
    assert!(
        body.contains("nested more than 64 levels deep") && body.contains("FeatureDrift"),
        "{body}"
    );

    // A good file is picked up on its own (modification time) and the
    // alerts whose condition no longer holds resolve.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&rules, drift_rule("0s", "2")).expect("rules");
    server.wait_for(Duration::from_secs(20), "the alerts to resolve", |s| {
        alerts(s).is_empty()
    });
    assert_eq!(
        server.metric("driftwatch_rules_last_reload_success", &[]),
        Some(1.0)
    );

    // SIGHUP reloads too.
    std::fs::write(&rules, drift_rule("0s", "1")).expect("rules");
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    server.wait_for(Duration::from_secs(20), "alerts after SIGHUP", |s| {
        firing_features(s) == drifted
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pending_timer_survives_kill_9() {
    let dir = common::server::temp_db_dir();
    let rules = driftwatch_testkit::file(&dir, "rules.yaml", drift_rule("1h", "1"));
    let db = dir.join("driftwatch.db");
    let args = args_with_rules(&rules);
    let first = Server::start_on(&args, &[], &db);
    post_examples(&first);
    first.wait_for(Duration::from_secs(20), "pending alerts", |s| {
        let a = alerts(s);
        !a.is_empty() && a.iter().all(|a| a["state"] == "pending")
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = alerts(&first);
    first.kill();
    let second = Server::start_on(&args, &[], &db);
    second.wait_for_samples("credit", "1d", 1500);
    let after = alerts(&second);
    assert_eq!(after.len(), before.len());
    for a in &before {
        let same = after
            .iter()
            .find(|b| b["labels"] == a["labels"])
            .expect("the same alert after the restart");
        assert_eq!(same["active_since"], a["active_since"], "timer kept");
        assert_eq!(same["state"], "pending");
    }
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn calibrated_thresholds_come_from_the_reference_chunks() {
    let dir = common::server::temp_db_dir();
    let rules = driftwatch_testkit::file(&dir, "rules.yaml", "groups:\n  - name: calibrated\n    rules:\n      - alert: PsiDrift\n        metric: driftwatch_feature_drift_score\n        test: psi\n        op: \">\"\n        threshold: {calibrated: {chunks: 5, sigmas: 3}}\n");
    let reference = repo("examples/credit/reference.csv");
    let args = args_with_rules(&rules);
    let server = Server::start(&args, &[]);
    post_examples(&server);
    server.wait_for_samples("credit", "1d", 1500);
    // The same thresholds, computed here from the same reference.
    let raw = driftwatch::config::from_flags("credit".into(), reference.clone(), Vec::new(), None);
    let model = driftwatch::models::Model::load(&raw.models[0]).expect("model");
    let mut want: Vec<String> = Vec::new();
    let mut judged = 0;
    for f in &model.features {
        let Some(t) = driftwatch::rules::calibrate::threshold(
            &f.reference,
            driftwatch::stats::TestKind::Psi,
            5,
            3.0,
        ) else {
            continue;
        };
        let Some(psi) = server.metric(
            "driftwatch_feature_drift_score",
            &[("feature", f.name.as_str()), ("test", "psi")],
        ) else {
            continue;
        };
        judged += 1;
        if psi > t {
            want.push(f.name.clone());
        }
    }
    want.sort();
    assert!(
        judged >= 4 && !want.is_empty() && want.len() < judged,
        "{judged} {want:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(firing_features(&server), want);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
