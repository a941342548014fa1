//! The models the collector watches: each configured model with its
//! reference loaded once at start (typed and cleaned exactly as `report`
//! does), so live windows are compared with the same samples.

use crate::config::{OutputField, RawCost, RawModel, Span, Task};
use crate::report::estimator::Estimator;
use crate::report::load::{self, Dataset};
use crate::report::Overrides;
use crate::report::{multivariate, segments};
use crate::stats::{ColumnType, Key, Sample};

/// One watched feature and its reference sample.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    pub column_type: ColumnType,
    pub reference: Sample,
    pub reference_missing: u64,
    /// Integer reference values with nothing missing (histogram bin widths).
    pub integer: bool,
    /// Categorical feature whose reference categories are numbers.
    pub numeric_keys: bool,
}

/// The model's outputs on the reference rows, compared with each role's
/// live outputs of the same field.
impl Feature {
    /// The reference column `name` as a feature; `forced` overrides type inference.
    fn load(
        dataset: &Dataset,
        name: String,
        forced: Option<ColumnType>,
    ) -> Result<Feature, String> {
        let col = load::reference_column(dataset, &name, forced)
            .map_err(|(_, why)| format!("{name}: {why}"))?;
        let numeric_keys = matches!(&col.side.sample, Sample::Categorical(c) if matches!(c.keys.first(), Some(Key::Num(_))));
        Ok(Feature {
            name,
            column_type: col.column_type,
            reference: col.side.sample,
            reference_missing: col.side.missing,
            integer: col.integer,
            numeric_keys,
        })
    }

    /// `f` without reference values (a segment that has none).
    fn empty(f: &Feature) -> Feature {
        Feature {
            name: f.name.clone(),
            column_type: f.column_type,
            reference: match f.column_type {
                ColumnType::Numeric => {
                    Sample::Numeric(crate::stats::Numeric::new(Vec::new(), false))
                }
                ColumnType::Categorical => {
                    Sample::Categorical(crate::stats::Counts::from_pairs(Vec::new()))
                }
            },
            reference_missing: 0,
            integer: false,
            numeric_keys: f.numeric_keys,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Prediction {
    pub output: OutputField,
    /// The reference column as a feature (its name is the column's).
    pub reference: Feature,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub task: Task,
    /// The positive class of a binary task (labels and `score` refer to it).
    pub positive_class: String,
    /// How long predictions wait for their labels.
    pub label_ttl: std::time::Duration,
    pub cost: RawCost,
    pub windows: Vec<Span>,
    pub sample_limit: usize,
    /// Partitions of its traffic in cluster mode (1: not split).
    pub partitions: usize,
    pub features: Vec<Feature>,
    pub prediction: Option<Prediction>,
    /// Which reference the model was loaded from (for retraining evidence).
    pub reference: ReferenceId,
    /// Verdict tests and thresholds of its live windows, as `report` takes them.
    pub drift: Overrides,
    /// Its experiments (arms, metric, decision settings).
    pub experiments: Vec<crate::config::experiment::RawExperiment>,
    /// Its performance estimator (CBPE), fitted on the reference's targets
    /// and outputs, when the model asks for estimation.
    pub estimator: Option<std::sync::Arc<Estimator>>,
    /// Its multivariate drift by data reconstruction, when asked for.
    pub reconstruction: Option<std::sync::Arc<Reconstruction>>,
    /// Drift per segment, per segment column.
    pub segmentations: Vec<Segmentation>,
    /// Feature positions by name (FxHash: looked up per feature of every
    /// event; the keys are the configuration's).
    index: rustc_hash::FxHashMap<String, usize>,
}

/// Multivariate drift by data reconstruction over some of a model's
/// features: fitted on the reference, each event's row error computed as
/// it arrives.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    pub fitted: crate::stats::reconstruction::Fitted,
    /// The reconstructed features (positions in the model's features).
    pub features: Vec<usize>,
}

/// Drift per segment of one categorical feature: its top reference
/// values (segment `values.len()` is `__other__`) and each segment's
/// reference of every feature.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// The segment column (a position in the model's features).
    pub feature: usize,
    pub values: Vec<String>,
    /// Per segment: its reference rows, and each feature's reference on them.
    pub reference: Vec<(usize, Vec<Feature>)>,
    index: rustc_hash::FxHashMap<String, usize>,
}

impl Segmentation {
    fn load(
        dataset: &Dataset,
        features: &[Feature],
        column: &str,
        top: usize,
    ) -> Result<Segmentation, String> {
        let feature = features
            .iter()
            .position(|f| f.name == column)
            .filter(|&i| features[i].column_type == ColumnType::Categorical)
            .ok_or_else(|| format!("{column:?} is not one of the model's categorical features"))?;
        let (values, parts) = segments::split_reference(dataset, column, top)?;
        let reference = parts
            .iter()
            .map(|part| {
                let each = features
                    .iter()
                    .map(|f| {
                        // A segment without a feature's values has nothing to compare.
                        Feature::load(part, f.name.clone(), Some(f.column_type))
                            .unwrap_or_else(|_| Feature::empty(f))
                    })
                    .collect();
                (part.rows(), each)
            })
            .collect();
        let index = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), i))
            .collect();
        Ok(Segmentation {
            feature,
            values,
            reference,
            index,
        })
    }

    /// The segment of a value of the segment column (`None`: missing).
    pub fn segment(&self, key: Option<&Key>) -> usize {
        let other = self.values.len();
        match key {
            Some(Key::Str(s)) => self.index.get(s.as_str()).copied().unwrap_or(other),
            Some(k) => self
                .index
                .get(&segments::key_text(k))
                .copied()
                .unwrap_or(other),
            None => other,
        }
    }

    /// A segment's name: a top value, or `__other__`.
    pub fn name(&self, segment: usize) -> &str {
        segments::name(&self.values, segment)
    }
}

/// A reference file as it was read: path, SHA-256 of its bytes, rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReferenceId {
    pub path: String,
    pub sha256: String,
    pub rows: usize,
}

impl Model {
    /// Loads the reference and builds the model, naming the file and column on failure.
    pub fn load(raw: &RawModel) -> Result<Model, String> {
        let dataset: Dataset =
            load::read(&raw.reference).map_err(|e| format!("model {}: {e}", raw.name))?;
        // Without a feature list, every column but the model's outputs and
        // (when this file holds them) the estimation's targets and outputs.
        let mut outputs: Vec<&str> = raw.prediction.iter().map(|p| p.column.as_str()).collect();
        if let Some(e) = raw.estimation.as_ref().filter(|e| e.reference.is_none()) {
            outputs.extend([e.target.as_str(), e.prediction.as_str()]);
            outputs.extend(e.score.as_deref());
            outputs.extend(e.probabilities.values().map(String::as_str));
        }
        let names = match &raw.features {
            Some(f) => f.clone(),
            None => dataset
                .column_names()
                .into_iter()
                .filter(|c| !outputs.contains(&c.as_str()))
                .collect(),
        };
        let mut features = Vec::with_capacity(names.len());
        for name in names {
            let feature = Feature::load(&dataset, name, None)
                .map_err(|why| format!("model {}: feature {why}", raw.name))?;
            features.push(feature);
        }
        let prediction = match &raw.prediction {
            None => None,
            Some(p) => {
                let forced = match (raw.task, p.output) {
                    (Task::Regression, _) | (_, Some(OutputField::Score | OutputField::Value)) => {
                        Some(ColumnType::Numeric)
                    }
                    (Task::MulticlassClassification, _) | (_, Some(OutputField::Label)) => {
                        Some(ColumnType::Categorical)
                    }
                    // Binary without `output`: the column's own type decides.
                    (Task::BinaryClassification, None) => None,
                };
                let reference = Feature::load(&dataset, p.column.clone(), forced)
                    .map_err(|why| format!("model {}: prediction column {why}", raw.name))?;
                let output = match (raw.task, reference.column_type) {
                    (Task::Regression, _) => OutputField::Value,
                    (_, ColumnType::Numeric) => OutputField::Score,
                    (_, ColumnType::Categorical) => OutputField::Label,
                };
                Some(Prediction { output, reference })
            }
        };
        let index: rustc_hash::FxHashMap<String, usize> = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let drift = raw
            .drift
            .overrides()
            .map_err(|e| format!("model {}: drift: {e}", raw.name))?;
        let columns: Vec<&str> = features
            .iter()
            .chain(prediction.iter().map(|p| &p.reference))
            .map(|f| f.name.as_str())
            .collect();
        if let Some(unknown) = drift.columns().find(|c| !columns.contains(c)) {
            return Err(format!(
                "model {}: drift: {unknown:?} is not a watched column (the features, or the prediction column); watched: {}",
                raw.name,
                columns.join(", ")
            ));
        }
        let sha256 = std::fs::read(&raw.reference)
            .map(|bytes| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)))
            .map_err(|e| format!("model {}: {}: {e}", raw.name, raw.reference.display()))?;
        let reference = ReferenceId {
            path: raw.reference.display().to_string(),
            sha256,
            rows: dataset.rows(),
        };
        let estimator = match &raw.estimation {
            None => None,
            Some(e) => {
                let at = |why: String| format!("model {}: estimation: {why}", raw.name);
                let options = e
                    .options(raw.task, raw.positive_class.as_deref().unwrap_or("1"))
                    .map_err(at)?;
                let fitted = match &e.reference {
                    Some(path) if *path != raw.reference => {
                        let data = load::read(path).map_err(|e| at(e.to_string()))?;
                        Estimator::fit(&data, &options)
                    }
                    _ => Estimator::fit(&dataset, &options),
                };
                let fitted = fitted.map_err(at)?.0;
                if let Estimator::Regression(r) = &fitted {
                    // Live rows give the nanny models the model's features.
                    if let Some(name) = r.inputs().find(|n| !features.iter().any(|f| &f.name == n))
                    {
                        return Err(at(format!(
                            "nanny model input {name:?} is not one of the model's features"
                        )));
                    }
                }
                Some(std::sync::Arc::new(fitted))
            }
        };
        let reconstruction = match &raw.multivariate {
            None => None,
            Some(m) => {
                let at = |why: String| format!("model {}: multivariate: {why}", raw.name);
                let names: Vec<String> = m
                    .columns
                    .clone()
                    .unwrap_or_else(|| features.iter().map(|f| f.name.clone()).collect());
                let mut positions = Vec::with_capacity(names.len());
                for name in &names {
                    positions.push(features.iter().position(|f| f.name == *name).ok_or_else(
                        || at(format!("{name:?} is not one of the model's features")),
                    )?);
                }
                let columns: Vec<(String, ColumnType)> = positions
                    .iter()
                    .map(|&i| (features[i].name.clone(), features[i].column_type))
                    .collect();
                let (fitted, _) =
                    multivariate::fit(&dataset, &columns, m.chunking().map_err(at)?).map_err(at)?;
                Some(std::sync::Arc::new(Reconstruction {
                    fitted,
                    features: positions,
                }))
            }
        };
        let segmentations = match &raw.segments {
            None => Vec::new(),
            Some(s) if s.top == 0 => {
                return Err(format!(
                    "model {}: segments.top must be at least 1",
                    raw.name
                ))
            }
            Some(s) => s
                .columns
                .iter()
                .map(|c| Segmentation::load(&dataset, &features, c, s.top))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("model {}: segments: {e}", raw.name))?,
        };
        let mut windows = raw.windows.clone();
        windows.sort();
        windows.dedup();
        Ok(Model {
            name: raw.name.clone(),
            task: raw.task,
            positive_class: raw
                .positive_class
                .clone()
                .unwrap_or_else(|| "1".to_string()),
            label_ttl: raw.label_ttl.duration,
            cost: raw.cost.clone(),
            windows,
            sample_limit: raw.window_sample_limit,
            partitions: raw.partitions,
            features,
            prediction,
            reference,
            drift,
            experiments: raw.experiments.clone(),
            estimator,
            reconstruction,
            segmentations,
            index,
        })
    }

    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// The example credit model (examples/credit/reference.csv, 1 h windows),
/// its configuration given `extra` lines (`    key: value\n`), for tests.
#[cfg(test)]
pub fn example_model(extra: &str) -> Model {
    // A directory of its own per call: tests run in parallel, several with
    // the same `extra`.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dw-model-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("models.yaml");
    let reference =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/credit/reference.csv");
    std::fs::write(
        &path,
        format!(
            "models:\n  - name: credit\n    reference: {}\n    windows: [1h]\n{extra}",
            reference.display()
        ),
    )
    .expect("write");
    let raw = crate::config::RawConfig::from_file(&path).expect("config");
    let config = raw.validate(&path, &|_| None).expect("valid config");
    let _ = std::fs::remove_dir_all(&dir);
    Model::load(&config.models[0]).expect("model")
}
