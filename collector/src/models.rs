//! The models the collector watches: each configured model with its
//! reference loaded once at start (typed and cleaned exactly as `report`
//! does), so live windows are compared with the same samples.

use std::collections::HashMap;

use crate::config::{RawCost, RawModel, Span, Task};
use crate::report::load::{self, Dataset};
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
    pub features: Vec<Feature>,
    index: HashMap<String, usize>,
}

impl Model {
    /// Loads the reference and builds the model, naming the file and column on failure.
    pub fn load(raw: &RawModel) -> Result<Model, String> {
        let dataset: Dataset =
            load::read(&raw.reference).map_err(|e| format!("model {}: {e}", raw.name))?;
        let names = match &raw.features {
            Some(f) => f.clone(),
            None => dataset.column_names(),
        };
        let mut features = Vec::with_capacity(names.len());
        for name in names {
            let col = load::reference_column(&dataset, &name, None)
                .map_err(|(_, why)| format!("model {}: feature {name}: {why}", raw.name))?;
            let numeric_keys = matches!(&col.side.sample, Sample::Categorical(c) if matches!(c.keys.first(), Some(Key::Num(_))));
            features.push(Feature {
                name,
                column_type: col.column_type,
                reference: col.side.sample,
                reference_missing: col.side.missing,
                integer: col.integer,
                numeric_keys,
            });
        }
        let index = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
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
            features,
            index,
        })
    }

    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}
