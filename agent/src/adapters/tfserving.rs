//! TF Serving REST: requests as `instances` (rows) or `inputs` (columns),
//! answers as `predictions` (rows) or `outputs` (columns).

use serde_json::Value;

use super::{
    feature, row_from_value, tensors_from_rows, Adapter, AdapterError, Row, Section, Tensor,
};
use crate::config::Model;

pub struct TfServing;

impl Adapter for TfServing {
    fn rows(
        &self,
        model: &Model,
        v: &Value,
        _: &mut Section<'_>,
    ) -> Result<Vec<Row>, AdapterError> {
        let columns = model.features.as_deref();
        if let Some(instances) = v["instances"].as_array() {
            return Ok(instances
                .iter()
                .map(|x| row_from_value(x, columns))
                .collect::<Result<_, _>>()?);
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
            Value::Array(list) => Ok(list
                .iter()
                .map(|x| row_from_value(x, columns))
                .collect::<Result<_, _>>()?),
            _ => Err("no `instances` or `inputs` (TF Serving)".into()),
        }
    }

    fn outputs(
        &self,
        _: &Model,
        v: &Value,
        _: &mut Section<'_>,
        _: usize,
    ) -> Result<Vec<Tensor>, AdapterError> {
        Ok(match (&v["predictions"], &v["outputs"]) {
            (Value::Array(items), _) => tensors_from_rows(items)?,
            (_, Value::Object(cols)) => cols
                .iter()
                .map(|(name, col)| {
                    let items = col
                        .as_array()
                        .ok_or_else(|| format!("output `{name}` is not a list"))?;
                    let mut t = tensors_from_rows(items)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| format!("output `{name}` holds no values"))?;
                    t.name = name.clone();
                    Ok(t)
                })
                .collect::<Result<Vec<_>, String>>()?,
            (_, Value::Array(items)) => tensors_from_rows(items)?,
            _ => return Err("no `predictions` or `outputs` (TF Serving)".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::adapters::testing::{model, num};
    use crate::adapters::{parse_request, parse_response};
    use driftwatch_protocol::FeatureValue;

    #[test]
    fn tf_serving_rows_columns_and_predictions() {
        let m = model(
            "protocol: tfserving\nfeatures: [a, b]\nclasses: [no, yes]\npositive_class: yes\n",
        );
        let rows = parse_request(
            &m,
            br#"{"instances": [{"a": 1, "b": "x"}, [2, "y"]]}"#,
            None,
        )
        .expect("rows");
        assert_eq!(rows[1]["a"], num(2.0));
        assert_eq!(rows[1]["b"], FeatureValue::String("y".into()));
        let rows = parse_request(
            &m,
            br#"{"inputs": {"a": [1, 2, 3], "b": [true, false, null]}}"#,
            None,
        )
        .expect("columnar");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2]["b"], FeatureValue::Null);
        // Probabilities per row: the label is the most likely class.
        let out = parse_response(&m, br#"{"predictions": [[0.3, 0.7], [0.6, 0.4]]}"#, None, 2)
            .expect("proba");
        assert_eq!(out[0].label.as_deref(), Some("yes"));
        assert_eq!(out[0].score, Some(0.7));
        assert_eq!(out[1].label.as_deref(), Some("no"));
        // Regression: numbers are values.
        let out = parse_response(&m, br#"{"predictions": [1.5, 2.5]}"#, None, 2).expect("values");
        assert_eq!(out[1].value, Some(2.5));
        // Objects per row.
        let out = parse_response(
            &m,
            br#"{"predictions": [{"classes": "yes", "scores": [0.1, 0.9]}]}"#,
            None,
            1,
        )
        .expect("objects");
        assert_eq!(out[0].label.as_deref(), Some("yes"));
        assert_eq!(out[0].score, Some(0.9));
    }

    /// Found by the adapter_tfserving fuzz target: a columnar output whose
    /// rows are empty objects made no tensor, and taking the first of none
    /// panicked in the observer (the event was lost uncounted).
    #[test]
    fn a_columnar_output_of_empty_objects_is_refused_not_a_panic() {
        let m = model("protocol: tfserving\nfeatures: [a]\n");
        let err = parse_response(&m, br#"{"outputs":{"p":[ {}]}}"#, None, 1).expect_err("refused");
        assert!(
            err.to_string().contains("output `p` holds no values"),
            "{err}"
        );
    }
}
