//! The generic JSON adapter: JSON pointers (`generic: {rows, outputs}`)
//! to the rows in the request and the outputs in the response.

use serde_json::Value;

use super::{row_from_value, tensors_from_rows, Adapter, AdapterError, Row, Section, Tensor};
use crate::config::Model;

pub struct Generic;

impl Adapter for Generic {
    fn rows(
        &self,
        model: &Model,
        v: &Value,
        _: &mut Section<'_>,
    ) -> Result<Vec<Row>, AdapterError> {
        let columns = model.features.as_deref();
        let pointer = &model.generic.as_ref().ok_or("no `generic` settings")?.rows;
        match v.pointer(pointer) {
            Some(Value::Array(items)) => Ok(items
                .iter()
                .map(|x| row_from_value(x, columns))
                .collect::<Result<_, _>>()?),
            Some(one) => Ok(vec![row_from_value(one, columns)?]),
            None => Err(format!("nothing at {pointer}").into()),
        }
    }

    fn outputs(
        &self,
        model: &Model,
        v: &Value,
        _: &mut Section<'_>,
        n: usize,
    ) -> Result<Vec<Tensor>, AdapterError> {
        let pointer = &model
            .generic
            .as_ref()
            .ok_or("no `generic` settings")?
            .outputs;
        Ok(match v.pointer(pointer) {
            Some(Value::Array(items)) if n != 1 || items.len() == 1 => tensors_from_rows(items)?,
            Some(one) => tensors_from_rows(std::slice::from_ref(one))?,
            None => return Err(format!("nothing at {pointer}").into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::adapters::testing::model;
    use crate::adapters::{parse_request, parse_response};

    #[test]
    fn generic_pointers_and_bad_bodies() {
        let m = model("protocol: generic\ngeneric: {rows: /data/rows, outputs: /result}\n");
        let rows =
            parse_request(&m, br#"{"data": {"rows": [{"x": 1}, {"x": 2}]}}"#, None).expect("rows");
        assert_eq!(rows.len(), 2);
        let out = parse_response(
            &m,
            br#"{"result": [{"label": "a"}, {"label": "b"}]}"#,
            None,
            2,
        )
        .expect("outputs");
        assert_eq!(out[1].label.as_deref(), Some("b"));
        let one = parse_request(&m, br#"{"data": {"rows": {"x": 1}}}"#, None).expect("one row");
        assert_eq!(one.len(), 1);
        let out = parse_response(&m, br#"{"result": 0.25}"#, None, 1).expect("one value");
        assert_eq!(out[0].value, Some(0.25));
        let not_json = parse_request(&m, b"not json", None).expect_err("not JSON");
        assert_eq!(not_json.reason(), "not_json", "{not_json}");
        let err = parse_request(&m, br#"{"data": 1}"#, None).expect_err("pointer");
        assert_eq!(err.reason(), "shape");
        assert_eq!(err.to_string(), "nothing at /data/rows");
        let kserve = model("");
        assert!(parse_request(&kserve, br#"{"instances": []}"#, None)
            .expect_err("shape")
            .to_string()
            .contains("no `inputs` list"));
    }
}
