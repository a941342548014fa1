//! The `driftwatch report` and `profile` commands end to end on files: every
//! kind of bad input gets a clear message and no panic, and a profile gives
//! the same numbers as the raw reference.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_driftwatch")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/credit")
        .join(name)
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        Dir(driftwatch_testkit::temp_dir(tag))
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write fixture");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn report(reference: &Path, current: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .args(["report", "--reference"])
        .arg(reference)
        .arg("--current")
        .arg(current)
        .args(extra)
        .output()
        .expect("run driftwatch")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// A successful run's JSON report (and no panic on the way).
fn ok_json(out: &Output) -> Value {
    no_panic(out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == name)
        .expect("column present")
}

fn no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "panic: {err}");
}

#[test]
fn example_report_names_the_drifted_columns() {
    let out = report(&example("reference.csv"), &example("current.csv"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["reference_rows"], 2000);
    assert_eq!(r["current_rows"], 1500);
    let drifted: Vec<&str> = r["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["drift"] == true)
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(drifted, vec!["income", "country"]);
    assert_eq!(column(&r, "country")["type"], "categorical");
    assert_eq!(
        column(&r, "dependents")["type"],
        "categorical",
        "integer with <= 10 values"
    );
    assert_eq!(column(&r, "bureau_score")["missing_reference"], 66);
    let chi = column(&r, "country")["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["test"] == "chisquare")
        .expect("chisquare")
        .clone();
    assert_eq!(
        chi["statistic"],
        Value::Null,
        "unseen category gives an infinite statistic"
    );
    assert_eq!(chi["p_value"], 0.0);
    assert!(chi["note"].as_str().expect("note").contains("category"));
    assert_eq!(r["dataset_drift"]["drifted_columns"], 2);
    assert_eq!(r["dataset_drift"]["drift"], false);
}

#[test]
fn overrides_change_the_verdict_test_and_threshold() {
    let out = report(
        &example("reference.csv"),
        &example("current.csv"),
        &[
            "--test",
            "age=ks",
            "--threshold",
            "income:wasserstein=0.9",
            "--columns",
            "age,income",
        ],
    );
    let r = json(&out);
    assert_eq!(r["columns"].as_array().expect("columns").len(), 2);
    assert_eq!(column(&r, "age")["verdict_test"], "ks");
    assert_eq!(
        column(&r, "income")["drift"],
        false,
        "0.48 is below the raised threshold"
    );
    let bad = report(
        &example("reference.csv"),
        &example("current.csv"),
        &["--test", "nope"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown test \"nope\""));
}

#[test]
fn bad_files_get_clear_messages() {
    let d = Dir::new("badfiles");
    let good = d.file("good.csv", b"a,b\n1.5,x\n2.5,y\n");
    let missing = d.0.join("nope.csv");
    let out = report(&missing, &good, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.csv: file not found"));
    let empty = d.file("empty.csv", b"a,b\n");
    let out = report(&good, &empty, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty.csv"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zero = d.file("zero.csv", b"");
    let out = report(&zero, &good, &[]);
    assert_eq!(out.status.code(), Some(2));
    no_panic(&out);
    let weird = d.file("data.txt", b"a\n1\n");
    let out = report(&weird, &good, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown format"));
    let garbage = d.file("garbage.parquet", b"this is not parquet");
    let out = report(&garbage, &good, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("garbage.parquet: cannot read"));
    no_panic(&out);
}

#[test]
fn awkward_columns_are_reported_not_fatal() {
    let d = Dir::new("awkward");
    let mut reference = String::from("num,only_ref,all_missing,constant,typed,huge,text\n");
    let mut current = String::from("num,only_cur,all_missing,constant,typed,huge,text\n");
    for i in 0..40 {
        reference.push_str(&format!(
            "{},{i},,3.0,{}.5,{},t{}\n",
            i as f64 * 0.5,
            i,
            1e300 * (i as f64 + 1.0),
            i % 3
        ));
        current.push_str(&format!(
            "{},{i},,3.0,word{i},{},t{}\n",
            i as f64 * 0.5 + 1.0,
            -1e300 * (i as f64 + 1.0),
            i % 4
        ));
    }
    let (r, c) = (
        d.file("r.csv", reference.as_bytes()),
        d.file("c.csv", current.as_bytes()),
    );
    let out = report(&r, &c, &[]);
    let rep = ok_json(&out);
    assert!(column(&rep, "only_ref")["untestable"]
        .as_str()
        .expect("reason")
        .contains("missing from"));
    assert!(column(&rep, "only_cur")["untestable"]
        .as_str()
        .expect("reason")
        .contains("missing from"));
    assert!(column(&rep, "all_missing")["untestable"]
        .as_str()
        .expect("reason")
        .contains("no values"));
    assert!(column(&rep, "typed")["untestable"]
        .as_str()
        .expect("reason")
        .contains("not numbers"));
    let constant = column(&rep, "constant");
    assert_eq!(constant["drift"], false);
    let anderson = constant["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["test"] == "anderson")
        .expect("anderson");
    assert!(anderson["note"]
        .as_str()
        .expect("note")
        .contains("distinct"));
    let huge = column(&rep, "huge");
    assert_eq!(huge["drift"], true);
    assert!(huge["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .all(|t| t["statistic"].is_null() || t["statistic"].is_number()));
    assert_eq!(column(&rep, "num")["type"], "numeric");
    // The untestable columns are left out of the share.
    let share = rep["dataset_drift"]["share"].as_f64().expect("share");
    let drifted = rep["dataset_drift"]["drifted_columns"]
        .as_f64()
        .expect("count");
    assert!((share - drifted / 4.0).abs() < 1e-12, "{share} {drifted}");
}

#[test]
fn one_row_and_non_utf8_do_not_panic() {
    let d = Dir::new("tiny");
    let r = d.file("r.csv", b"x,s\n1.0,caf\xe9\n");
    let c = d.file("c.csv", b"x,s\n2.0,caf\xe9\n");
    let out = report(&r, &c, &[]);
    let rep = ok_json(&out);
    assert_eq!(column(&rep, "s")["type"], "categorical");
    let x = column(&rep, "x");
    assert!(x["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .any(|t| t["note"].is_string()));
}

#[test]
fn nothing_comparable_exits_one() {
    let d = Dir::new("nothing");
    let r = d.file("r.csv", b"a\n1\n2\n");
    let c = d.file("c.csv", b"b\n1\n2\n");
    let out = report(&r, &c, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no column could be compared"));
}

#[test]
fn profile_gives_the_same_numbers_as_the_raw_reference() {
    let d = Dir::new("profile");
    let p = d.0.join("ref.json");
    let out = Command::new(bin())
        .args(["profile", "--reference"])
        .arg(example("reference.csv"))
        .arg("--out")
        .arg(&p)
        .output()
        .expect("profile");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = json(&report(
        &example("reference.csv"),
        &example("current.csv"),
        &[],
    ));
    let from_profile = json(&report(&p, &example("current.csv"), &[]));
    assert_eq!(raw, from_profile);
    // A capped profile keeps a sample and says so.
    let small = d.0.join("small.json");
    let out = Command::new(bin())
        .args(["profile", "--max-samples", "100", "--reference"])
        .arg(example("reference.csv"))
        .arg("--out")
        .arg(&small)
        .output()
        .expect("profile");
    assert!(out.status.success());
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&small).expect("profile file"))
            .expect("profile JSON");
    let age = stored["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "age")
        .expect("age");
    assert_eq!(age["values"].as_array().expect("values").len(), 100);
    assert_eq!(age["sampled_from"], 2000);
}

#[test]
fn html_report_is_self_contained() {
    let d = Dir::new("html");
    let out_path = d.0.join("r.html");
    let out = report(
        &example("reference.csv"),
        &example("current.csv"),
        &[
            "--format",
            "html",
            "--out",
            out_path.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success());
    let html = std::fs::read_to_string(&out_path).expect("html");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("2 of 8 columns drifted"));
    assert_eq!(html.matches("<svg").count(), 8);
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
    // Drifted columns come first.
    assert!(html.find("<h2>income").expect("income") < html.find("<h2>age").expect("age"));
}

#[test]
fn parquet_and_csv_give_the_same_report() {
    use polars::prelude::*;
    let d = Dir::new("parquet");
    let mut paths = Vec::new();
    for name in ["reference", "current"] {
        let mut frame = CsvReadOptions::default()
            .with_infer_schema_length(None)
            .try_into_reader_with_file_path(Some(example(&format!("{name}.csv"))))
            .and_then(|r| r.finish())
            .expect("read example CSV");
        let path = d.0.join(format!("{name}.parquet"));
        ParquetWriter::new(std::fs::File::create(&path).expect("create parquet"))
            .finish(&mut frame)
            .expect("write parquet");
        paths.push(path);
    }
    let from_csv = ok_json(&report(
        &example("reference.csv"),
        &example("current.csv"),
        &[],
    ));
    let from_parquet = ok_json(&report(&paths[0], &paths[1], &[]));
    assert_eq!(from_csv, from_parquet);
    // Mixed formats work too.
    let mixed = ok_json(&report(&paths[0], &example("current.csv"), &[]));
    assert_eq!(from_csv, mixed);
}

/// The rows of a CSV whose column `col` (by position) is in `keep`, or
/// (`keep` empty) in none of `top`: the file's text, header first.
fn rows_where(text: &str, col: usize, keep: &[&str], top: &[&str]) -> String {
    let mut lines = text.lines();
    let mut out = lines.next().expect("header").to_string() + "\n";
    for l in lines {
        let v = l.split(',').nth(col).unwrap_or("");
        let wanted = if keep.is_empty() {
            !top.contains(&v)
        } else {
            keep.contains(&v)
        };
        if wanted {
            out += &(l.to_string() + "\n");
        }
    }
    out
}

#[test]
fn segments_are_the_report_of_their_rows_judged_on_q_values() {
    let dir = Dir::new("segments");
    let out = report(
        &example("reference.csv"),
        &example("current.csv"),
        &["--segment", "country", "--segment-top", "3"],
    );
    let v = ok_json(&out);
    let segments = v["segments"]["segments"].as_array().expect("segments");
    let reference = std::fs::read_to_string(example("reference.csv")).expect("reference");
    let current = std::fs::read_to_string(example("current.csv")).expect("current");
    let country = 4;
    // The top 3 countries of the reference by count, then the rest.
    let top: Vec<&str> = segments[..3]
        .iter()
        .map(|s| s["value"].as_str().expect("value"))
        .collect();
    assert_eq!(segments.len(), 4);
    assert_eq!(segments[3]["value"], "__other__");
    let count = |text: &str, v: &str| {
        text.lines()
            .skip(1)
            .filter(|l| l.split(',').nth(country) == Some(v))
            .count()
    };
    let counts: Vec<usize> = top.iter().map(|v| count(&reference, v)).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    let (mut q_values, mut rows) = (0, 0);
    for s in segments {
        let keep: Vec<&str> = match s["value"].as_str().expect("value") {
            "__other__" => Vec::new(),
            v => vec![v],
        };
        let r = dir.file(
            "r.csv",
            rows_where(&reference, country, &keep, &top).as_bytes(),
        );
        let c = dir.file(
            "c.csv",
            rows_where(&current, country, &keep, &top).as_bytes(),
        );
        // The segment's rows alone, through `report` itself.
        let alone = ok_json(&report(&r, &c, &["--exclude", "country"]));
        assert_eq!(s["reference_rows"], alone["reference_rows"]);
        assert_eq!(s["current_rows"], alone["current_rows"]);
        rows += s["reference_rows"].as_u64().expect("rows");
        for col in s["columns"].as_array().expect("columns") {
            let whole = column(&alone, col["name"].as_str().expect("name"));
            let test = whole["verdict_test"]
                .as_str()
                .or(whole["default_test"].as_str())
                .expect("verdict test");
            assert_eq!(col["test"], test);
            let verdict = whole["tests"]
                .as_array()
                .expect("tests")
                .iter()
                .find(|t| t["test"] == test)
                .expect("verdict");
            assert_eq!(col["p_value"], verdict["p_value"], "{}", col["name"]);
            assert_eq!(col["statistic"], verdict["statistic"], "{}", col["name"]);
            if let (Some(p), Some(q)) = (col["p_value"].as_f64(), col["q_value"].as_f64()) {
                q_values += 1;
                assert!(q >= p, "{col}");
                let threshold = col["threshold"].as_f64().expect("threshold");
                // ks, chi-square and z-test: drift below the threshold.
                assert_eq!(col["drift"], q < threshold, "{col}");
            }
        }
    }
    assert_eq!(rows as usize, reference.lines().count() - 1);
    assert_eq!(v["segments"]["fdr"]["tests"], q_values);
    assert!(q_values >= 20, "{q_values}");
    // Income drifted everywhere; the corrected verdicts still see it.
    assert!(segments.iter().all(|s| s["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .any(|c| c["name"] == "income" && c["drift"] == true)));
    // A segment column that is not there; a profile cannot be split.
    let out = report(
        &example("reference.csv"),
        &example("current.csv"),
        &["--segment", "planet"],
    );
    no_panic(&out);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no segment column \"planet\""));
}
