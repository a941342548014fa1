//! Output tensors, from a model server's response or from the shadow
//! model, read by one function: a label tensor, a probability table
//! `[N, C]` (the score is the positive class's column), or values `[N]`,
//! found by name or, for a lone tensor, by its shape.

use driftwatch_protocol::Output;

use super::AdapterError;
use crate::config::{Model, OutputNames};

/// A tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Num(Vec<f64>),
    Str(Vec<String>),
    Bool(Vec<bool>),
}

impl Data {
    pub(crate) fn len(&self) -> usize {
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
    pub fn width(&self) -> usize {
        // Saturating: a shape of absurd sizes is refused by the length
        // checks, not an overflow.
        self.shape
            .iter()
            .skip(1)
            .fold(1usize, |a, &b| a.saturating_mul(b))
            .max(1)
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

/// The tensors that hold a batch's outputs.
struct Chosen<'t> {
    label: Option<&'t Tensor>,
    proba: Option<&'t Tensor>,
    value: Option<&'t Tensor>,
}

impl<'t> Chosen<'t> {
    /// By the configured or usual names; a "value" with several columns
    /// is a probability table; a lone tensor is read by its shape.
    fn of(tensors: &'t [Tensor], spec: &OutputSpec<'_>) -> Result<Chosen<'t>, AdapterError> {
        let mut c = Chosen {
            label: pick(tensors, spec.names.label.as_ref(), LABEL_NAMES),
            proba: pick(tensors, spec.names.probabilities.as_ref(), PROBA_NAMES),
            value: None,
        };
        if c.label.is_none() && c.proba.is_none() {
            c.value = pick(tensors, spec.names.value.as_ref(), VALUE_NAMES);
        }
        if let Some(t) = c.value.filter(|t| t.width() > 1) {
            c.proba = Some(t);
            c.value = None;
        }
        if c.is_empty() {
            match tensors {
                [t] if matches!(t.data, Data::Str(_) | Data::Bool(_)) => c.label = Some(t),
                [t] if t.width() > 1 => c.proba = Some(t),
                [t] => c.value = Some(t),
                _ => {}
            }
        }
        if c.is_empty() {
            let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            return Err(AdapterError::Shape(format!(
                "no label, probabilities or value among the outputs [{}] (name them under `outputs:`)",
                names.join(", ")
            )));
        }
        Ok(c)
    }

    fn is_empty(&self) -> bool {
        self.label.is_none() && self.proba.is_none() && self.value.is_none()
    }

    /// Each chosen tensor holds `n` whole rows.
    fn check_rows(&self, n: usize) -> Result<(), AdapterError> {
        for t in [self.label, self.proba, self.value].into_iter().flatten() {
            let rows = t.data.len() / t.width();
            if rows != n || t.data.len() % t.width() != 0 {
                return Err(AdapterError::Shape(format!(
                    "output `{}` has {} values for {n} rows",
                    t.name,
                    t.data.len()
                )));
            }
        }
        Ok(())
    }
}

/// A probability table with its class names and positive column, worked
/// out once per batch.
struct Probabilities<'t> {
    values: &'t [f64],
    classes: usize,
    names: Vec<String>,
    /// The score's column: the only one, or the positive class's of two.
    positive: Option<usize>,
}

impl<'t> Probabilities<'t> {
    fn of(t: &'t Tensor, spec: &OutputSpec<'_>) -> Result<Probabilities<'t>, AdapterError> {
        let Data::Num(values) = &t.data else {
            return Err(not_numeric(t));
        };
        let classes = t.width();
        let names: Vec<String> = (0..classes)
            .map(|j| {
                spec.classes
                    .and_then(|k| k.get(j).cloned())
                    .unwrap_or_else(|| j.to_string())
            })
            .collect();
        let positive = match classes {
            1 => Some(0),
            2 => Some(
                names
                    .iter()
                    .position(|n| n == spec.positive_class)
                    .unwrap_or(1),
            ),
            _ => None,
        };
        Ok(Probabilities {
            values,
            classes,
            names,
            positive,
        })
    }

    /// Row `i`'s score, label (the likeliest class, unless a label tensor
    /// gave one) and, for multiclass tasks, every class's probability.
    fn fill(&self, i: usize, o: &mut Output) {
        let c = self.classes;
        let row = &self.values[i * c..(i + 1) * c];
        o.score = self.positive.map(|j| row[j]);
        if c > 1 && o.label.is_none() {
            let best = (0..c)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            o.label = Some(self.names[best].clone());
        }
        // Binary tasks carry the positive class's `score` alone (the wire
        // protocol's `probabilities` are for multiclass tasks).
        if c > 2 {
            o.probabilities = Some(
                self.names
                    .iter()
                    .cloned()
                    .zip(row.iter().copied())
                    .collect(),
            );
        }
    }
}

fn not_numeric(t: &Tensor) -> AdapterError {
    AdapterError::Shape(format!("output `{}` is not numeric", t.name))
}

/// One output per row (`n` rows) from named tensors.
pub fn outputs_from_tensors(
    tensors: &[Tensor],
    n: usize,
    spec: &OutputSpec<'_>,
) -> Result<Vec<Output>, AdapterError> {
    let chosen = Chosen::of(tensors, spec)?;
    chosen.check_rows(n)?;
    let proba = chosen
        .proba
        .map(|t| Probabilities::of(t, spec))
        .transpose()?;
    let value = match chosen.value {
        Some(t) if n > 0 => match &t.data {
            Data::Num(v) => Some((v, t.width())),
            _ => return Err(not_numeric(t)),
        },
        _ => None,
    };
    let rows = (0..n).map(|i| {
        let mut o = Output::default();
        if let Some(t) = chosen.label {
            o.label = t.data.label(i);
        }
        if let Some(p) = &proba {
            p.fill(i, &mut o);
        }
        if let Some((v, width)) = value {
            o.value = v.get(i * width).copied();
        }
        o
    });
    Ok(rows.collect())
}
