//! KServe v2 / Open Inference Protocol: `inputs` and `outputs` lists of
//! tensor objects (`name`, `shape`, `datatype`, `data`). A `[N]` or
//! `[N, 1]` input tensor is one feature; an `[N, F]` one gives F features
//! named by the model's `features`.

use serde_json::Value;

use super::{flatten, tensor_data, Adapter, AdapterError, Data, Row, Tensor};
use crate::config::Model;
use driftwatch_protocol::FeatureValue;

pub struct KserveV2;

impl Adapter for KserveV2 {
    fn rows(&self, model: &Model, v: &Value) -> Result<Vec<Row>, AdapterError> {
        let inputs = v["inputs"]
            .as_array()
            .ok_or("no `inputs` list (KServe v2)")?;
        let tensors: Vec<Tensor> = inputs.iter().map(v2_tensor).collect::<Result<_, _>>()?;
        Ok(rows_from_tensors(&tensors, model.features.as_deref())?)
    }

    fn outputs(&self, _: &Model, v: &Value, _: usize) -> Result<Vec<Tensor>, AdapterError> {
        let outputs = v["outputs"]
            .as_array()
            .ok_or("no `outputs` list (KServe v2)")?;
        Ok(outputs
            .iter()
            .map(v2_tensor)
            .collect::<Result<Vec<_>, _>>()?)
    }
}

/// A KServe v2 tensor object (`name`, `shape`, `datatype`, `data`).
pub(crate) fn v2_tensor(t: &Value) -> Result<Tensor, String> {
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
    let want = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| {
            format!("tensor `{name}`: shape {shape:?} needs more values than can be counted")
        })?;
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
    // Every tensor checked before any row is made: the data must fill the
    // shape (`[4, 0]` with no data used to be read past its end, and
    // `[264810701, 0]` to allocate its rows first; both found by the
    // `adapter_kserve_v2` fuzz target).
    for t in tensors {
        if t.shape.first() != Some(&n) {
            return Err(format!(
                "tensor `{}` has {:?} rows, the first tensor {n}",
                t.name,
                t.shape.first()
            ));
        }
        let width = t.width();
        if n.checked_mul(width) != Some(t.data.len()) {
            return Err(format!(
                "tensor `{}` holds {} values, its shape {:?} needs {}",
                t.name,
                t.data.len(),
                t.shape,
                n.saturating_mul(width)
            ));
        }
    }
    let mut rows: Vec<Row> = vec![Row::new(); n];
    for t in tensors {
        let width = t.width();
        if n == 0 {
            // No rows: nothing to name (nor `[0, 10^16]`'s columns).
            continue;
        }
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

#[cfg(test)]
mod tests {
    use crate::adapters::testing::{model, num};
    use crate::adapters::{parse_request, parse_response};
    use driftwatch_protocol::FeatureValue;

    #[test]
    fn tensors_whose_data_does_not_fill_their_shape_are_refused() {
        for body in [
            &br#"{"inputs": [{"name": "put", "shape": [4, 0], "data": []}]}"#[..],
            br#"{"inputs": [{"name": "x", "shape": [2, 2], "data": [1, 2, 3]}]}"#,
            br#"{"inputs": [{"name": "x", "shape": [3], "data": [1, 2]}]}"#,
            br#"{"inputs": [{"name": "x", "shape": [2, 18446744073709551615, 2], "data": [1, 2]}]}"#,
            br#"{"inputs": [{"name": "x", "shape": [264810701, 0], "data": []}]}"#,
        ] {
            let err = parse_request(&model(""), body).expect_err("refused");
            assert!(err.to_string().contains("values"), "{err}");
        }
        // No rows of an absurd width: no rows, at once.
        let body = br#"{"inputs": [{"name": "x", "shape": [0, 46000000000000092], "data": []}]}"#;
        assert!(parse_request(&model(""), body).map_or(true, |r| r.is_empty()));
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
            err.to_string()
                .contains("shape [3] needs 3 values, data has 2"),
            "{err}"
        );
        assert!(parse_response(&m, resp, 3)
            .expect_err("rows")
            .to_string()
            .contains("for 3 rows"));
    }
}
