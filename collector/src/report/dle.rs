//! A regression model's performance estimated before its targets arrive
//! (NannyML's DLE, `stats::dle`): nanny models, ONNX files that map the
//! features and the prediction to a row's loss, scored through ONNX
//! Runtime as the agent scores its shadow models
//! (`driftwatch_telemetry::onnx`).
//!
//! A nanny model says what it needs in its metadata property
//! `driftwatch.nanny` (JSON, written by
//! `examples/regression/train_nanny_models.py`): the metric whose loss it
//! predicts, its input columns in order (the features, and the prediction
//! named by `prediction`), and for a categorical column its categories,
//! coded as NannyML codes them (1 + the position in the list, 0 for a
//! value the reference never had; a missing value is the text
//! `NML_missing_value`). The model takes one float32 tensor `[N, F]` and
//! gives the loss per row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use driftwatch_protocol::FeatureValue;
use ort::session::Session;
use ort::value::TensorRef;
use polars::prelude::DataType;

use super::load::{to_rows, Dataset, RowValues};
use super::segments::key_text;
use crate::stats::dle::{Fitted, Loss, Metric, Rows};
use crate::stats::estimation::{Chunk, Estimate, Estimates};
use crate::stats::sample::Key;
use crate::stats::ColumnType;

const METADATA: &str = "driftwatch.nanny";
const MISSING: &str = "NML_missing_value";
/// Rows per ONNX Runtime call.
const BATCH: usize = 65_536;

#[derive(serde::Deserialize)]
struct Meta {
    metric: String,
    inputs: Vec<MetaInput>,
    prediction: String,
}

#[derive(serde::Deserialize)]
struct MetaInput {
    name: String,
    #[serde(default)]
    categories: Option<Vec<String>>,
}

/// One input column of a nanny model.
#[derive(Debug)]
struct Input {
    name: String,
    /// The prediction (read from the model's prediction column).
    prediction: bool,
    /// Category → code, for a categorical column.
    codes: Option<HashMap<String, f32>>,
}

impl Input {
    fn code(&self, text: Option<&str>) -> f32 {
        match &self.codes {
            Some(c) => c.get(text.unwrap_or(MISSING)).copied().unwrap_or(0.0),
            None => f32::NAN,
        }
    }
}

/// A loaded nanny model.
pub struct NannyModel {
    path: PathBuf,
    pub loss: Loss,
    inputs: Vec<Input>,
    input: String,
    session: Mutex<Session>,
}

impl std::fmt::Debug for NannyModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NannyModel")
            .field("path", &self.path)
            .field("loss", &self.loss)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl NannyModel {
    /// Loads a model and its metadata (ONNX Runtime from
    /// `ORT_DYLIB_PATH`, as the agent without `ort_library`); `Err` names
    /// the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<NannyModel, String> {
        let at = |e: &dyn std::fmt::Display| format!("nanny model {}: {e}", path.display());
        let env = driftwatch_telemetry::onnx::environment(None)?;
        let bytes = std::fs::read(path).map_err(|e| at(&e))?;
        let session = Session::builder(&env)
            .map_err(|e| at(&e))?
            .with_intra_threads(1)
            .map_err(|e| at(&e))?
            .commit_from_memory(&bytes)
            .map_err(|e| at(&e))?;
        let text = session
            .metadata()
            .map_err(|e| at(&e))?
            .custom(METADATA)
            .ok_or_else(|| {
                at(&format!(
                    "no `{METADATA}` metadata (the metric and the input columns; examples/regression/train_nanny_models.py writes it)"
                ))
            })?;
        let meta: Meta =
            serde_json::from_str(&text).map_err(|e| at(&format!("`{METADATA}` metadata: {e}")))?;
        let metric = Metric::parse(&meta.metric).ok_or_else(|| {
            at(&format!(
                "metric {:?} is not one of mae, mape, mse, rmse, msle, rmsle",
                meta.metric
            ))
        })?;
        if !meta.inputs.iter().any(|i| i.name == meta.prediction) {
            return Err(at(&format!(
                "the prediction {:?} is not among its inputs",
                meta.prediction
            )));
        }
        let inputs: Vec<Input> = meta
            .inputs
            .into_iter()
            .map(|i| Input {
                prediction: i.name == meta.prediction,
                codes: i.categories.map(|c| {
                    c.into_iter()
                        .enumerate()
                        .map(|(k, v)| (v, (k + 1) as f32))
                        .collect()
                }),
                name: i.name,
            })
            .collect();
        let outlet = match session.inputs() {
            [one] => one,
            many => {
                return Err(at(&format!(
                    "it has {} inputs; a nanny model takes one float32 [N, {}] tensor",
                    many.len(),
                    inputs.len()
                )))
            }
        };
        let width = match outlet.dtype() {
            ort::value::ValueType::Tensor {
                ty: ort::value::TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 2 => shape[1],
            other => {
                return Err(at(&format!(
                    "input `{}` is {other:?}; a nanny model takes one float32 [N, F] tensor",
                    outlet.name()
                )))
            }
        };
        if width > 0 && width as usize != inputs.len() {
            return Err(at(&format!(
                "its input takes {width} columns but its metadata names {}",
                inputs.len()
            )));
        }
        let input = outlet.name().to_string();
        Ok(NannyModel {
            path: path.to_path_buf(),
            loss: metric.loss(),
            inputs,
            input,
            session: Mutex::new(session),
        })
    }

    /// A data set's inputs, row by row (`width` floats a row).
    fn encode(&self, data: &Dataset, prediction: &str) -> Result<Vec<f32>, String> {
        let n = data.rows();
        let width = self.inputs.len();
        let mut flat = vec![0f32; n * width];
        for (j, input) in self.inputs.iter().enumerate() {
            let name = if input.prediction {
                prediction
            } else {
                &input.name
            };
            let series = data.series(name)?.ok_or_else(|| {
                format!(
                    "{}: no column {name:?}, an input of nanny model {}",
                    data.path().display(),
                    self.path.display()
                )
            })?;
            let bad = |e: String| format!("{}: column {name:?}: {e}", data.path().display());
            let boolean = series.dtype() == &DataType::Boolean;
            let column_type = match input.codes {
                None => ColumnType::Numeric,
                Some(_) => ColumnType::Categorical,
            };
            match to_rows(&series, column_type).map_err(bad)? {
                RowValues::Numeric(v) => {
                    for (i, x) in v.into_iter().enumerate() {
                        flat[i * width + j] = x.map_or(f32::NAN, |x| x as f32);
                    }
                }
                RowValues::Categorical(keys) => {
                    for (i, k) in keys.iter().enumerate() {
                        flat[i * width + j] = input.code(text(k.as_ref(), boolean).as_deref());
                    }
                }
            }
        }
        Ok(flat)
    }

    /// A live event's inputs, its features by name.
    fn encode_event(
        &self,
        feature: &dyn Fn(&str) -> Option<FeatureValue>,
        prediction: f64,
        out: &mut Vec<f32>,
    ) {
        for input in &self.inputs {
            let value = feature(&input.name);
            out.push(match (&input.codes, value.as_ref()) {
                _ if input.prediction => prediction as f32,
                (None, Some(FeatureValue::Number(x))) => *x as f32,
                (None, Some(FeatureValue::Bool(b))) => f32::from(u8::from(*b)),
                (None, _) => f32::NAN,
                (Some(_), Some(FeatureValue::String(s))) => input.code(Some(s)),
                (Some(_), Some(FeatureValue::Bool(b))) => {
                    input.code(Some(if *b { "True" } else { "False" }))
                }
                (Some(_), Some(FeatureValue::Number(x))) => {
                    input.code(Some(&key_text(&Key::Num(*x))))
                }
                (Some(_), _) => input.code(None),
            });
        }
    }

    /// The predicted loss of each row of `flat` (`width` floats a row).
    fn predict(&self, flat: &[f32]) -> Result<Vec<f64>, String> {
        let width = self.inputs.len();
        let at = |e: &dyn std::fmt::Display| format!("nanny model {}: {e}", self.path.display());
        let mut out = Vec::with_capacity(flat.len() / width.max(1));
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        for batch in flat.chunks(BATCH * width) {
            let rows = batch.len() / width;
            let array =
                ndarray::ArrayView2::from_shape((rows, width), batch).map_err(|e| at(&e))?;
            let value = TensorRef::from_array_view(array).map_err(|e| at(&e))?;
            let outputs = session
                .run(ort::inputs![self.input.as_str() => value])
                .map_err(|e| at(&e))?;
            let (_, first) = outputs
                .iter()
                .next()
                .ok_or_else(|| at(&"the model gave no output"))?;
            let (_, losses) = first
                .try_extract_tensor::<f32>()
                .map_err(|e| at(&format!("its first output is not a float32 tensor: {e}")))?;
            if losses.len() != rows {
                return Err(at(&format!(
                    "it gave {} values for {rows} rows; a nanny model gives one loss per row",
                    losses.len()
                )));
            }
            out.extend(losses.iter().map(|&l| f64::from(l)));
        }
        Ok(out)
    }
}

/// A category's text as NannyML sees it (Python's `str`).
fn text(k: Option<&Key>, boolean: bool) -> Option<String> {
    Some(match k? {
        Key::Str(s) if boolean => match s.as_str() {
            "true" => "True".into(),
            "false" => "False".into(),
            other => other.into(),
        },
        k => key_text(k),
    })
}

/// A fitted DLE estimator: its nanny models and metrics.
#[derive(Debug)]
pub struct Regression {
    models: Vec<NannyModel>,
    /// Each metric and the model of its loss.
    metrics: Vec<(Fitted, usize)>,
}

/// A regression data set as DLE reads it: targets, predictions, and each
/// model's predicted losses.
pub struct Parsed {
    pub truth: Option<Vec<Option<f64>>>,
    pub predicted: Vec<Option<f64>>,
    pub losses: Vec<Vec<f64>>,
}

impl Parsed {
    pub fn rows(&self) -> usize {
        self.predicted.len()
    }

    pub fn reorder(&mut self, order: &[usize]) {
        use crate::stats::order::put_in_order as pick;
        pick(&mut self.predicted, order);
        self.truth.iter_mut().for_each(|t| pick(t, order));
        self.losses.iter_mut().for_each(|l| pick(l, order));
    }

    fn rows_view(&self) -> Rows<'_> {
        Rows {
            truth: self.truth.as_deref(),
            predicted: &self.predicted,
        }
    }
}

/// Nanny models, and each metric with the index of the model of its loss.
pub type Loaded = (Vec<NannyModel>, Vec<(Metric, usize)>);

/// The models for `metrics` (default: each model's own metric and its
/// root or square), loaded; `Err` names a file, or a metric without a
/// model of its loss.
pub fn load(paths: &[PathBuf], metrics: Option<&[String]>) -> Result<Loaded, String> {
    if paths.is_empty() {
        return Err("a regression task needs its nanny models (--nanny-model F.onnx,...)".into());
    }
    let models: Vec<NannyModel> = paths
        .iter()
        .map(|p| NannyModel::load(p))
        .collect::<Result<_, _>>()?;
    let wanted: Vec<Metric> = match metrics {
        Some(list) => list
            .iter()
            .map(|m| {
                Metric::parse(m).ok_or_else(|| {
                    format!("unknown metric {m:?}; DLE has mae, mape, mse, rmse, msle, rmsle")
                })
            })
            .collect::<Result<_, _>>()?,
        None => Metric::ALL
            .into_iter()
            .filter(|m| models.iter().any(|n| n.loss == m.loss()))
            .collect(),
    };
    let metrics = wanted
        .into_iter()
        .map(|m| {
            let model = models
                .iter()
                .position(|n| n.loss == m.loss())
                .ok_or_else(|| {
                    format!(
                        "no nanny model predicts the loss of {} (a model of {} serves it)",
                        m.name(),
                        m.loss().metric().name()
                    )
                })?;
            Ok((m, model))
        })
        .collect::<Result<_, String>>()?;
    Ok((models, metrics))
}

/// Reads the predictions of a data set and scores its rows with each
/// model; `truth` its targets, where it has them.
pub fn parse(
    data: &Dataset,
    models: &[NannyModel],
    prediction: &str,
    truth: Option<Vec<Option<f64>>>,
) -> Result<Parsed, String> {
    let predicted = numbers(data, prediction)?
        .ok_or_else(|| format!("{}: no column {prediction:?}", data.path().display()))?;
    let losses = models
        .iter()
        .map(|m| m.predict(&m.encode(data, prediction)?))
        .collect::<Result<_, _>>()?;
    Ok(Parsed {
        truth,
        predicted,
        losses,
    })
}

/// A numeric column (`None`: no such column; missing values `None`).
pub fn numbers(data: &Dataset, name: &str) -> Result<Option<Vec<Option<f64>>>, String> {
    let Some(series) = data.series(name)? else {
        return Ok(None);
    };
    match to_rows(&series, ColumnType::Numeric)
        .map_err(|e| format!("{}: column {name:?}: {e}", data.path().display()))?
    {
        RowValues::Numeric(v) => Ok(Some(v)),
        RowValues::Categorical(_) => Err(format!(
            "{}: column {name:?} is not numeric",
            data.path().display()
        )),
    }
}

impl Regression {
    /// Fits each metric on the reference's rows and chunks.
    pub fn fit(
        models: Vec<NannyModel>,
        metrics: &[(Metric, usize)],
        reference: &Parsed,
        chunks: &[Chunk],
    ) -> Result<Regression, String> {
        let rows = reference.rows_view();
        let metrics = metrics
            .iter()
            .map(|&(m, model)| Ok((Fitted::fit(m, &rows, chunks)?, model)))
            .collect::<Result<_, String>>()?;
        Ok(Regression { models, metrics })
    }

    /// Every chunk of a parsed data set.
    pub fn estimate(&self, data: &Parsed, chunks: &[Chunk]) -> Estimates {
        let rows = data.rows_view();
        chunks
            .iter()
            .map(|c| {
                let columns = self
                    .metrics
                    .iter()
                    .map(|(f, model)| {
                        let losses = &data.losses[*model][c.rows()];
                        (
                            f.metric.name().to_string(),
                            f.estimate(losses, &rows, c.rows()),
                        )
                    })
                    .collect();
                (c.clone(), columns)
            })
            .collect()
    }

    /// A live event's inputs for every model, the prediction first;
    /// `feature` gives the event's value of a feature by name.
    pub fn row(&self, feature: &dyn Fn(&str) -> Option<FeatureValue>, prediction: f64) -> Vec<f64> {
        let mut encoded = Vec::new();
        for m in &self.models {
            m.encode_event(feature, prediction, &mut encoded);
        }
        std::iter::once(prediction)
            .chain(encoded.into_iter().map(f64::from))
            .collect()
    }

    /// The features the nanny models take (the prediction left out).
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.models
            .iter()
            .flat_map(|m| m.inputs.iter().filter(|i| !i.prediction))
            .map(|i| i.name.as_str())
    }

    pub fn models(&self) -> &[NannyModel] {
        &self.models
    }

    /// A live window's rows (`row`'s) as one chunk; `Err` when a model
    /// fails to run.
    pub fn estimate_rows(&self, rows: &[&[f64]]) -> Result<Vec<(String, Estimate)>, String> {
        let predicted: Vec<Option<f64>> = rows.iter().map(|r| Some(r[0])).collect();
        let mut losses = Vec::with_capacity(self.models.len());
        let mut offset = 1;
        for m in &self.models {
            let width = m.inputs.len();
            let flat: Vec<f32> = rows
                .iter()
                .flat_map(|r| r[offset..offset + width].iter().map(|&x| x as f32))
                .collect();
            losses.push(m.predict(&flat)?);
            offset += width;
        }
        let parsed = Parsed {
            truth: None,
            predicted,
            losses,
        };
        let all = Chunk {
            key: "window".into(),
            start: 0,
            end: rows.len().saturating_sub(1),
        };
        Ok(self
            .estimate(&parsed, std::slice::from_ref(&all))
            .pop()
            .map(|(_, e)| e)
            .unwrap_or_default())
    }
}
