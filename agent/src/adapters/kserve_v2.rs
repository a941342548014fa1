//! KServe v2 / Open Inference Protocol: `inputs` and `outputs` lists of
//! tensor objects (`name`, `shape`, `datatype`, `data`). A `[N]` or
//! `[N, 1]` input tensor is one feature; an `[N, F]` one gives F features
//! named by the model's `features`. A tensor whose `parameters` give a
//! `binary_data_size` has its data in the body's binary section
//! (`binary`), read into the same tensor as its JSON form.

use serde_json::Value;

use super::{flatten, tensor_data, Adapter, AdapterError, Data, Row, Section, Tensor};
use crate::config::Model;
use driftwatch_protocol::FeatureValue;

pub struct KserveV2;

impl Adapter for KserveV2 {
    fn rows(
        &self,
        model: &Model,
        v: &Value,
        binary: &mut Section<'_>,
    ) -> Result<Vec<Row>, AdapterError> {
        let inputs = v["inputs"]
            .as_array()
            .ok_or("no `inputs` list (KServe v2)")?;
        let tensors: Vec<Tensor> = inputs
            .iter()
            .map(|t| v2_tensor(t, binary))
            .collect::<Result<_, _>>()?;
        Ok(rows_from_tensors(&tensors, model.features.as_deref())?)
    }

    fn outputs(
        &self,
        _: &Model,
        v: &Value,
        binary: &mut Section<'_>,
        _: usize,
    ) -> Result<Vec<Tensor>, AdapterError> {
        let outputs = v["outputs"]
            .as_array()
            .ok_or("no `outputs` list (KServe v2)")?;
        outputs.iter().map(|t| v2_tensor(t, binary)).collect()
    }
}

/// A KServe v2 tensor object (`name`, `shape`, `datatype`, and `data` or
/// a `binary_data_size` of `binary`).
pub(crate) fn v2_tensor(t: &Value, binary: &mut Section<'_>) -> Result<Tensor, AdapterError> {
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
    let want = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| {
            format!("tensor `{name}`: shape {shape:?} needs more values than can be counted")
        })?;
    let datatype = t["datatype"].as_str().unwrap_or("");
    match &t["parameters"]["binary_data_size"] {
        Value::Null => {}
        size => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| format!("tensor `{name}`: binary_data_size is not a size"))?;
            let data = binary.tensor(&name, datatype, size, want)?;
            return Ok(Tensor { name, shape, data });
        }
    }
    let mut values = Vec::new();
    flatten(&t["data"], &mut values);
    if values.len() != want {
        return Err(format!(
            "tensor `{name}`: shape {shape:?} needs {want} values, data has {}",
            values.len()
        )
        .into());
    }
    let what = format!("tensor `{name}`");
    let data = match datatype {
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
pub(crate) fn rows_from_tensors(
    tensors: &[Tensor],
    columns: Option<&[String]>,
) -> Result<Vec<Row>, String> {
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
            let err = parse_request(&model(""), body, None).expect_err("refused");
            assert!(err.to_string().contains("values"), "{err}");
        }
        // No rows of an absurd width: no rows, at once.
        let body = br#"{"inputs": [{"name": "x", "shape": [0, 46000000000000092], "data": []}]}"#;
        assert!(parse_request(&model(""), body, None).map_or(true, |r| r.is_empty()));
    }

    #[test]
    fn kserve_v2_per_feature_and_matrix_inputs_give_rows() {
        let m = model("features: [age, income]\n");
        let body = br#"{"inputs": [
            {"name": "features", "shape": [2, 2], "datatype": "FP32", "data": [[30, 1000.5], [40, 2000]]},
            {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["DE", "FR"]},
            {"name": "has_card", "shape": [2, 1], "datatype": "BOOL", "data": [true, false]}]}"#;
        let rows = parse_request(&m, body, None).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["age"], num(30.0));
        assert_eq!(rows[1]["income"], num(2000.0));
        assert_eq!(rows[1]["country"], FeatureValue::String("FR".into()));
        assert_eq!(rows[0]["has_card"], FeatureValue::Bool(true));
        let resp = br#"{"model_name": "m", "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "data": [0.2, 0.8, 0.9, 0.1]}]}"#;
        let out = parse_response(&m, resp, None, 2).expect("outputs");
        assert_eq!(out[0].label.as_deref(), Some("1"));
        assert_eq!(out[0].score, Some(0.8));
        assert_eq!(out[1].score, Some(0.1));
        assert_eq!(out[1].probabilities, None, "binary: the score alone");
        // Shapes that do not add up are refused with the reason.
        let bad =
            br#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}"#;
        let err = parse_request(&m, bad, None).expect_err("bad shape");
        assert!(
            err.to_string()
                .contains("shape [3] needs 3 values, data has 2"),
            "{err}"
        );
        assert!(parse_response(&m, resp, None, 3)
            .expect_err("rows")
            .to_string()
            .contains("for 3 rows"));
    }

    /// A body in the binary tensor extension, as tritonclient makes one:
    /// the JSON (tensors with `binary_data_size` and no `data`), then
    /// each binary tensor's bytes in order; and its JSON length.
    fn binary_body(json: &str, sections: &[Vec<u8>]) -> (Vec<u8>, usize) {
        let mut body = json.as_bytes().to_vec();
        sections.iter().for_each(|s| body.extend_from_slice(s));
        (body, json.len())
    }

    fn le<T: Copy, const N: usize>(values: &[T], bytes: fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|v| bytes(*v)).collect()
    }

    #[test]
    fn binary_tensors_give_the_rows_and_outputs_of_their_json_form() {
        let m = model("features: [age, income]\n");
        let json = br#"{"inputs": [
            {"name": "features", "shape": [2, 2], "datatype": "FP32", "data": [[30, 1000.5], [40, 2000]]},
            {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["DE", "FR"]},
            {"name": "has_card", "shape": [2, 1], "datatype": "BOOL", "data": [true, false]},
            {"name": "dependents", "shape": [2], "datatype": "INT64", "data": [0, 3]}]}"#;
        let mut country = Vec::new();
        for c in ["DE", "FR"] {
            country.extend_from_slice(&2u32.to_le_bytes());
            country.extend_from_slice(c.as_bytes());
        }
        // All but `dependents` binary: a body may mix the two forms.
        let (body, len) = binary_body(
            r#"{"inputs": [
            {"name": "features", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
            {"name": "country", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 12}},
            {"name": "has_card", "shape": [2, 1], "datatype": "BOOL", "parameters": {"binary_data_size": 2}},
            {"name": "dependents", "shape": [2], "datatype": "INT64", "data": [0, 3]}],
            "parameters": {"binary_data_output": true}}"#,
            &[
                le(&[30f32, 1000.5, 40.0, 2000.0], f32::to_le_bytes),
                country,
                vec![1, 0],
            ],
        );
        let rows = parse_request(&m, &body, Some(len)).expect("binary rows");
        assert_eq!(rows, parse_request(&m, json, None).expect("json rows"));
        // The same body without its header is not JSON, and a header
        // whose lengths do not add up is refused as binary.
        assert_eq!(
            parse_request(&m, &body, None)
                .expect_err("no header")
                .reason(),
            "not_json"
        );
        for bad in [Some(len + 1), Some(body.len() + 1), Some(len - 1)] {
            assert!(parse_request(&m, &body, bad).is_err(), "{bad:?}");
        }
        let (short, _) = binary_body(
            std::str::from_utf8(&body[..len]).expect("utf-8"),
            &[vec![0; 29]],
        );
        assert_eq!(
            parse_request(&m, &short, Some(len))
                .expect_err("short")
                .reason(),
            "binary"
        );

        let resp = br#"{"model_name": "m", "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "data": [0.25, 0.75, 0.5, 0.5]}]}"#;
        let (binary, len) = binary_body(
            r#"{"model_name": "m", "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
            {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}"#,
            &[
                le(&[1i64, 0], i64::to_le_bytes),
                le(&[0.25f32, 0.75, 0.5, 0.5], f32::to_le_bytes),
            ],
        );
        assert_eq!(
            parse_response(&m, &binary, Some(len), 2).expect("binary outputs"),
            parse_response(&m, resp, None, 2).expect("json outputs")
        );
        // The header is the binary extension's: other protocols read the body whole.
        let tf = model("protocol: tfserving\n");
        let body = br#"{"instances": [[1]]}"#;
        assert_eq!(parse_request(&tf, body, Some(3)).expect("whole").len(), 1);
    }
}
