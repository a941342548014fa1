//! Protocol adapters: a request body becomes rows of features, a response
//! body becomes one output per row. KServe v2 / Open Inference Protocol
//! (`inputs` / `outputs` tensors), TF Serving REST (`instances`, `inputs`,
//! `predictions`, `outputs`) and a generic JSON adapter with JSON pointers.
//! Output tensors, from a response or from the shadow model, are read by
//! one function (`outputs_from_tensors`).

use std::collections::BTreeMap;

use driftwatch_protocol::{FeatureValue, Output};
use serde_json::Value;

use crate::config::{Model, OutputNames, Protocol};

pub type Row = BTreeMap<String, FeatureValue>;

/// A tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Num(Vec<f64>),
    Str(Vec<String>),
    Bool(Vec<bool>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::Num(v) => v.len(),
            Data::Str(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// Element `i` as a label string (whole numbers without a fraction).
    fn label(&self, i: usize) -> Option<String> {
        match self {
            Data::Num(v) => v.get(i).map(|x| {
                // Class ids are small whole numbers: no formatting for them.
                const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
                if x.fract() == 0.0 && (0.0..10.0).contains(x) {
                    SMALL[*x as usize].to_string()
                } else if x.fract() == 0.0 && x.abs() < 1e15 {
                    format!("{}", *x as i64)
                } else {
                    x.to_string()
                }
            }),
            Data::Str(v) => v.get(i).cloned(),
            Data::Bool(v) => v.get(i).map(|b| b.to_string()),
        }
    }
}

/// A named tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    /// Columns per row (1 for `[N]` and `[N, 1]`).
    fn width(&self) -> usize {
        self.shape.iter().skip(1).product::<usize>().max(1)
    }
}

const LABEL_NAMES: &[&str] = &[
    "label",
    "output_label",
    "predicted_label",
    "class",
    "classes",
];
const PROBA_NAMES: &[&str] = &[
    "probabilities",
    "output_probability",
    "probability",
    "probs",
    "scores",
];
const VALUE_NAMES: &[&str] = &[
    "value",
    "variable",
    "prediction",
    "predictions",
    "output",
    "predict",
];

/// How to read a model's outputs.
#[derive(Debug, Clone)]
pub struct OutputSpec<'a> {
    pub names: &'a OutputNames,
    pub classes: Option<&'a [String]>,
    pub positive_class: &'a str,
}

impl<'a> OutputSpec<'a> {
    pub fn of(model: &'a Model, names: &'a OutputNames) -> OutputSpec<'a> {
        OutputSpec {
            names,
            classes: model.classes.as_deref(),
            positive_class: &model.positive_class,
        }
    }
}

fn pick<'t>(
    tensors: &'t [Tensor],
    given: Option<&String>,
    defaults: &[&str],
) -> Option<&'t Tensor> {
    match given {
        Some(name) => tensors.iter().find(|t| &t.name == name),
        None => defaults
            .iter()
            .find_map(|d| tensors.iter().find(|t| t.name.eq_ignore_ascii_case(d))),
    }
}

/// One output per row from named tensors: a label tensor, a probability
/// tensor `[N, C]` (score = the positive class's column), or a value
/// tensor `[N]`; a lone tensor is read by its shape.
pub fn outputs_from_tensors(
    tensors: &[Tensor],
    n: usize,
    spec: &OutputSpec<'_>,
) -> Result<Vec<Output>, String> {
    let mut label = pick(tensors, spec.names.label.as_ref(), LABEL_NAMES);
    let mut proba = pick(tensors, spec.names.probabilities.as_ref(), PROBA_NAMES);
    let mut value = if label.is_none() && proba.is_none() {
        pick(tensors, spec.names.value.as_ref(), VALUE_NAMES)
    } else {
        None
    };
    // A "value" with several columns per row is a probability table.
    if let Some(t) = value.filter(|t| t.width() > 1) {
        proba = Some(t);
        value = None;
    }
    if label.is_none() && proba.is_none() && value.is_none() {
        match tensors {
            [t] if matches!(t.data, Data::Str(_) | Data::Bool(_)) => label = Some(t),
            [t] if t.width() > 1 => proba = Some(t),
            [t] => value = Some(t),
            _ => {}
        }
    }
    if label.is_none() && proba.is_none() && value.is_none() {
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "no label, probabilities or value among the outputs [{}] (name them under `outputs:`)",
            names.join(", ")
        ));
    }
    for t in [label, proba, value].into_iter().flatten() {
        let rows = t.data.len() / t.width();
        if rows != n || t.data.len() % t.width() != 0 {
            return Err(format!(
                "output `{}` has {} values for {n} rows",
                t.name,
                t.data.len()
            ));
        }
    }
    // Class names and the positive column, worked out once per batch.
    let proba = match proba {
        Some(t) => {
            let Data::Num(v) = &t.data else {
                return Err(format!("output `{}` is not numeric", t.name));
            };
            let c = t.width();
            let names: Vec<String> = (0..c)
                .map(|j| {
                    spec.classes
                        .and_then(|k| k.get(j).cloned())
                        .unwrap_or_else(|| j.to_string())
                })
                .collect();
            let positive = match c {
                1 => Some(0),
                2 => Some(
                    names
                        .iter()
                        .position(|n| n == spec.positive_class)
                        .unwrap_or(1),
                ),
                _ => None,
            };
            Some((v, c, names, positive))
        }
        None => None,
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = Output::default();
        if let Some(t) = label {
            o.label = t.data.label(i);
        }
        if let Some((v, c, names, positive)) = &proba {
            let row = &v[i * c..(i + 1) * c];
            o.score = positive.map(|j| row[j]);
            if *c > 1 && o.label.is_none() {
                let best = (0..*c)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0);
                o.label = Some(names[best].clone());
            }
            // Binary tasks carry the positive class's `score` alone (the
            // wire protocol's `probabilities` are for multiclass tasks).
            if *c > 2 {
                o.probabilities = Some(names.iter().cloned().zip(row.iter().copied()).collect());
            }
        }
        if let Some(t) = value {
            let Data::Num(v) = &t.data else {
                return Err(format!("output `{}` is not numeric", t.name));
            };
            o.value = v.get(i * t.width()).copied();
        }
        out.push(o);
    }
    Ok(out)
}

/// Nested arrays flattened row-major.
fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        other => out.push(other.clone()),
    }
}

fn feature(v: &Value) -> FeatureValue {
    match v {
        Value::Number(n) => n.as_f64().map_or(FeatureValue::Null, FeatureValue::Number),
        Value::String(s) => FeatureValue::String(s.clone()),
        Value::Bool(b) => FeatureValue::Bool(*b),
        _ => FeatureValue::Null,
    }
}

fn tensor_data(values: &[Value], what: &str) -> Result<Data, String> {
    // JSON has no NaN: a null among numbers is a missing value.
    if values.iter().all(|v| v.is_number() || v.is_null()) && values.iter().any(Value::is_number) {
        return Ok(Data::Num(
            values
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect(),
        ));
    }
    if values.iter().all(|v| v.is_string()) {
        return Ok(Data::Str(
            values
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        ));
    }
    if values.iter().all(|v| v.is_boolean()) {
        return Ok(Data::Bool(
            values.iter().filter_map(Value::as_bool).collect(),
        ));
    }
    Err(format!("{what}: mixed or unsupported values"))
}

/// A KServe v2 tensor object (`name`, `shape`, `datatype`, `data`).
fn v2_tensor(t: &Value) -> Result<Tensor, String> {
    let name = t["name"]
        .as_str()
        .ok_or("a tensor without a `name`")?
        .to_string();
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .ok_or_else(|| format!("tensor `{name}` has no `shape`"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("tensor `{name}`: the shape is not a list of sizes"))?;
    let mut values = Vec::new();
    flatten(&t["data"], &mut values);
    let want: usize = shape.iter().product();
    if values.len() != want {
        return Err(format!(
            "tensor `{name}`: shape {shape:?} needs {want} values, data has {}",
            values.len()
        ));
    }
    let what = format!("tensor `{name}`");
    let data = match t["datatype"].as_str().unwrap_or("") {
        // The declared type decides; JSON has no NaN, so null is missing.
        "BYTES" => Data::Str(
            values
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("{what}: BYTES data must be strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        "BOOL" => Data::Bool(
            values
                .iter()
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| format!("{what}: BOOL data must be true or false"))
                })
                .collect::<Result<_, _>>()?,
        ),
        d if d.starts_with("FP") || d.starts_with("INT") || d.starts_with("UINT") => Data::Num(
            values
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(f64::NAN),
                    v => v
                        .as_f64()
                        .ok_or_else(|| format!("{what}: {d} data must be numbers")),
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => tensor_data(&values, &what)?,
    };
    Ok(Tensor { name, shape, data })
}

/// Rows from input tensors: `[N]` and `[N, 1]` tensors are one feature
/// each, named by the tensor; `[N, F]` tensors give F features named by
/// `columns` (or `name_0`, `name_1`, ...).
fn rows_from_tensors(tensors: &[Tensor], columns: Option<&[String]>) -> Result<Vec<Row>, String> {
    let n = tensors
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(0);
    let mut rows: Vec<Row> = vec![Row::new(); n];
    for t in tensors {
        if t.shape.first() != Some(&n) {
            return Err(format!(
                "tensor `{}` has {:?} rows, the first tensor {n}",
                t.name,
                t.shape.first()
            ));
        }
        let width = t.width();
        let names: Vec<String> = if width == 1 {
            vec![t.name.clone()]
        } else {
            match columns {
                Some(c) if c.len() == width => c.to_vec(),
                Some(c) => {
                    return Err(format!(
                        "tensor `{}` has {width} columns, `features` names {}",
                        t.name,
                        c.len()
                    ))
                }
                None => (0..width).map(|j| format!("{}_{j}", t.name)).collect(),
            }
        };
        for (i, row) in rows.iter_mut().enumerate() {
            for (j, name) in names.iter().enumerate() {
                let k = i * width + j;
                let v = match &t.data {
                    Data::Num(v) if v[k].is_nan() => FeatureValue::Null,
                    Data::Num(v) => FeatureValue::Number(v[k]),
                    Data::Str(v) => FeatureValue::String(v[k].clone()),
                    Data::Bool(v) => FeatureValue::Bool(v[k]),
                };
                row.insert(name.clone(), v);
            }
        }
    }
    Ok(rows)
}

/// A row from a JSON value: an object's scalar fields, or a list's items
/// named by `columns` (or `f0`, `f1`, ...).
fn row_from_value(v: &Value, columns: Option<&[String]>) -> Result<Row, String> {
    match v {
        Value::Object(o) => Ok(o
            .iter()
            .filter(|(_, x)| !x.is_object() && !x.is_array())
            .map(|(k, x)| (k.clone(), feature(x)))
            .collect()),
        Value::Array(items) => Ok(items
            .iter()
            .enumerate()
            .map(|(j, x)| {
                let name = columns
                    .and_then(|c| c.get(j).cloned())
                    .unwrap_or_else(|| format!("f{j}"));
                (name, feature(x))
            })
            .collect()),
        scalar => {
            let name = columns
                .and_then(|c| c.first().cloned())
                .unwrap_or_else(|| "input".into());
            Ok([(name, feature(scalar))].into())
        }
    }
}

/// Tensors from predictions given per row (TF Serving, generic): objects
/// give one tensor per key; numbers, strings and lists one tensor `predictions`.
fn tensors_from_rows(items: &[Value]) -> Result<Vec<Tensor>, String> {
    let n = items.len();
    let column = |name: &str, values: Vec<&Value>| -> Result<Tensor, String> {
        let width = values
            .first()
            .and_then(|v| v.as_array())
            .map_or(1, Vec::len);
        let mut flat = Vec::new();
        for v in &values {
            if v.as_array().map_or(1, Vec::len) != width {
                return Err(format!("output `{name}`: rows of different lengths"));
            }
            flatten(v, &mut flat);
        }
        let shape = if width == 1 && !values.first().is_some_and(|v| v.is_array()) {
            vec![n]
        } else {
            vec![n, width]
        };
        Ok(Tensor {
            name: name.to_string(),
            shape,
            data: tensor_data(&flat, &format!("output `{name}`"))?,
        })
    };
    if items.first().is_some_and(Value::is_object) {
        let keys: Vec<String> = items[0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.iter()
            .map(|k| column(k, items.iter().map(|v| &v[k.as_str()]).collect()))
            .collect()
    } else {
        Ok(vec![column("predictions", items.iter().collect())?])
    }
}

fn json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))
}

/// The rows of a request body.
pub fn parse_request(model: &Model, body: &[u8]) -> Result<Vec<Row>, String> {
    let v = json(body)?;
    let columns = model.features.as_deref();
    match model.protocol {
        Protocol::KserveV2 => {
            let inputs = v["inputs"]
                .as_array()
                .ok_or("no `inputs` list (KServe v2)")?;
            let tensors: Vec<Tensor> = inputs.iter().map(v2_tensor).collect::<Result<_, _>>()?;
            rows_from_tensors(&tensors, columns)
        }
        Protocol::Tfserving => {
            if let Some(instances) = v["instances"].as_array() {
                return instances
                    .iter()
                    .map(|x| row_from_value(x, columns))
                    .collect();
            }
            match &v["inputs"] {
                Value::Object(cols) => {
                    let n = cols
                        .values()
                        .next()
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    let mut rows = vec![Row::new(); n];
                    for (name, col) in cols {
                        let col = col
                            .as_array()
                            .filter(|c| c.len() == n)
                            .ok_or_else(|| format!("input `{name}` is not a list of {n} values"))?;
                        for (row, x) in rows.iter_mut().zip(col) {
                            row.insert(name.clone(), feature(x));
                        }
                    }
                    Ok(rows)
                }
                Value::Array(list) => list.iter().map(|x| row_from_value(x, columns)).collect(),
                _ => Err("no `instances` or `inputs` (TF Serving)".into()),
            }
        }
        Protocol::Generic => {
            let pointer = &model.generic.as_ref().ok_or("no `generic` settings")?.rows;
            match v.pointer(pointer) {
                Some(Value::Array(items)) => {
                    items.iter().map(|x| row_from_value(x, columns)).collect()
                }
                Some(one) => Ok(vec![row_from_value(one, columns)?]),
                None => Err(format!("nothing at {pointer}")),
            }
        }
    }
}

/// The outputs of a response body, one per row (`n` rows).
pub fn parse_response(model: &Model, body: &[u8], n: usize) -> Result<Vec<Output>, String> {
    let v = json(body)?;
    let spec = OutputSpec::of(model, &model.outputs);
    let tensors = match model.protocol {
        Protocol::KserveV2 => {
            let outputs = v["outputs"]
                .as_array()
                .ok_or("no `outputs` list (KServe v2)")?;
            outputs
                .iter()
                .map(v2_tensor)
                .collect::<Result<Vec<_>, _>>()?
        }
        Protocol::Tfserving => match (&v["predictions"], &v["outputs"]) {
            (Value::Array(items), _) => tensors_from_rows(items)?,
            (_, Value::Object(cols)) => cols
                .iter()
                .map(|(name, col)| {
                    let items = col
                        .as_array()
                        .ok_or_else(|| format!("output `{name}` is not a list"))?;
                    let mut t = tensors_from_rows(items)?.remove(0);
                    t.name = name.clone();
                    Ok(t)
                })
                .collect::<Result<Vec<_>, String>>()?,
            (_, Value::Array(items)) => tensors_from_rows(items)?,
            _ => return Err("no `predictions` or `outputs` (TF Serving)".into()),
        },
        Protocol::Generic => {
            let pointer = &model
                .generic
                .as_ref()
                .ok_or("no `generic` settings")?
                .outputs;
            match v.pointer(pointer) {
                Some(Value::Array(items)) if n != 1 || items.len() == 1 => {
                    tensors_from_rows(items)?
                }
                Some(one) => tensors_from_rows(std::slice::from_ref(one))?,
                None => return Err(format!("nothing at {pointer}")),
            }
        }
    };
    outputs_from_tensors(&tensors, n, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Model;

    fn model(yaml: &str) -> Model {
        serde_yaml_ng::from_str(&format!("name: m\nupstream: http://u\n{yaml}")).expect("model")
    }

    fn num(x: f64) -> FeatureValue {
        FeatureValue::Number(x)
    }

    #[test]
    fn kserve_v2_per_feature_and_matrix_inputs_give_rows() {
        let m = model("features: [age, income]\n");
        let body = br#"{"inputs": [
            {"name": "features", "shape": [2, 2], "datatype": "FP32", "data": [[30, 1000.5], [40, 2000]]},
            {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["DE", "FR"]},
            {"name": "has_card", "shape": [2, 1], "datatype": "BOOL", "data": [true, false]}]}"#;
        let rows = parse_request(&m, body).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["age"], num(30.0));
        assert_eq!(rows[1]["income"], num(2000.0));
        assert_eq!(rows[1]["country"], FeatureValue::String("FR".into()));
        assert_eq!(rows[0]["has_card"], FeatureValue::Bool(true));
        let resp = br#"{"model_name": "m", "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "data": [0.2, 0.8, 0.9, 0.1]}]}"#;
        let out = parse_response(&m, resp, 2).expect("outputs");
        assert_eq!(out[0].label.as_deref(), Some("1"));
        assert_eq!(out[0].score, Some(0.8));
        assert_eq!(out[1].score, Some(0.1));
        assert_eq!(out[1].probabilities, None, "binary: the score alone");
        // Shapes that do not add up are refused with the reason.
        let bad =
            br#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}"#;
        let err = parse_request(&m, bad).expect_err("bad shape");
        assert!(
            err.contains("shape [3] needs 3 values, data has 2"),
            "{err}"
        );
        assert!(parse_response(&m, resp, 3)
            .expect_err("rows")
            .contains("for 3 rows"));
    }

    #[test]
    fn tf_serving_rows_columns_and_predictions() {
        let m = model(
            "protocol: tfserving\nfeatures: [a, b]\nclasses: [no, yes]\npositive_class: yes\n",
        );
        let rows =
            parse_request(&m, br#"{"instances": [{"a": 1, "b": "x"}, [2, "y"]]}"#).expect("rows");
        assert_eq!(rows[1]["a"], num(2.0));
        assert_eq!(rows[1]["b"], FeatureValue::String("y".into()));
        let rows = parse_request(
            &m,
            br#"{"inputs": {"a": [1, 2, 3], "b": [true, false, null]}}"#,
        )
        .expect("columnar");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2]["b"], FeatureValue::Null);
        // Probabilities per row: the label is the most likely class.
        let out =
            parse_response(&m, br#"{"predictions": [[0.3, 0.7], [0.6, 0.4]]}"#, 2).expect("proba");
        assert_eq!(out[0].label.as_deref(), Some("yes"));
        assert_eq!(out[0].score, Some(0.7));
        assert_eq!(out[1].label.as_deref(), Some("no"));
        // Regression: numbers are values.
        let out = parse_response(&m, br#"{"predictions": [1.5, 2.5]}"#, 2).expect("values");
        assert_eq!(out[1].value, Some(2.5));
        // Objects per row.
        let out = parse_response(
            &m,
            br#"{"predictions": [{"classes": "yes", "scores": [0.1, 0.9]}]}"#,
            1,
        )
        .expect("objects");
        assert_eq!(out[0].label.as_deref(), Some("yes"));
        assert_eq!(out[0].score, Some(0.9));
    }

    #[test]
    fn generic_pointers_and_bad_bodies() {
        let m = model("protocol: generic\ngeneric: {rows: /data/rows, outputs: /result}\n");
        let rows = parse_request(&m, br#"{"data": {"rows": [{"x": 1}, {"x": 2}]}}"#).expect("rows");
        assert_eq!(rows.len(), 2);
        let out = parse_response(&m, br#"{"result": [{"label": "a"}, {"label": "b"}]}"#, 2)
            .expect("outputs");
        assert_eq!(out[1].label.as_deref(), Some("b"));
        let one = parse_request(&m, br#"{"data": {"rows": {"x": 1}}}"#).expect("one row");
        assert_eq!(one.len(), 1);
        let out = parse_response(&m, br#"{"result": 0.25}"#, 1).expect("one value");
        assert_eq!(out[0].value, Some(0.25));
        assert!(parse_request(&m, b"not json")
            .expect_err("not JSON")
            .starts_with("not JSON"));
        assert_eq!(
            parse_request(&m, br#"{"data": 1}"#).expect_err("pointer"),
            "nothing at /data/rows"
        );
        let kserve = model("");
        assert!(parse_request(&kserve, br#"{"instances": []}"#)
            .expect_err("shape")
            .contains("no `inputs` list"));
    }
}
