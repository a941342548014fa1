//! Reads the two datasets of a report (Parquet or CSV by extension, through
//! polars, or a stored reference profile) and turns each column into cleaned
//! samples, deciding its type from the reference as Evidently does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rayon::prelude::*;

use super::profile::{Profile, ProfileColumn};
use super::{ColumnInput, Untestable};
use crate::stats::{ColumnType, Counts, Key, Numeric, Sample};

/// Integer columns with at most this many distinct reference values are
/// categorical (Evidently's `INTEGER_CARDINALITY_LIMIT`).
pub const INTEGER_CARDINALITY_LIMIT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },
    #[error("{path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: the file has no rows")]
    Empty { path: PathBuf },
    #[error("{path}: unknown format (expected .csv, .parquet or a driftwatch profile .json)")]
    UnknownFormat { path: PathBuf },
}

/// A loaded dataset. Parquet columns are read one at a time when a column
/// is compared, so memory holds a few columns, not two whole files; CSV has
/// to be parsed whole and is kept as a frame.
pub enum Dataset {
    Csv {
        path: PathBuf,
        frame: DataFrame,
    },
    Parquet {
        path: PathBuf,
        rows: usize,
        names: Vec<String>,
    },
    Profile {
        path: PathBuf,
        profile: Profile,
    },
}

impl Dataset {
    pub fn rows(&self) -> usize {
        match self {
            Dataset::Csv { frame, .. } => frame.height(),
            Dataset::Parquet { rows, .. } => *rows,
            Dataset::Profile { profile, .. } => profile.rows,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Dataset::Csv { path, .. }
            | Dataset::Parquet { path, .. }
            | Dataset::Profile { path, .. } => path,
        }
    }

    /// Profiles every column of a table; columns whose type is unsupported are skipped
    /// and returned by name with the reason.
    pub fn profile(&self, max_samples: usize) -> (Profile, Vec<(String, String)>) {
        let dataset = self;
        if let Dataset::Profile { profile, .. } = dataset {
            return (profile.clone(), Vec::new());
        }
        let mut columns = Vec::new();
        let mut skipped = Vec::new();
        for name in dataset.column_names() {
            let series = match dataset.series(&name) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(why) => {
                    skipped.push((name, why));
                    continue;
                }
            };
            let s = &series;
            let t = match infer_type(s) {
                Ok(t) => t,
                Err(why) => {
                    skipped.push((name, why));
                    continue;
                }
            };
            let integer = s.dtype().is_integer() && s.null_count() == 0;
            match to_side(s, t, integer) {
                Ok(side) => columns.push(ProfileColumn::of(
                    name,
                    t,
                    side.sample,
                    side.missing,
                    integer,
                    max_samples,
                )),
                Err(why) => skipped.push((name, why)),
            }
        }
        (
            Profile {
                format: super::profile::FORMAT.to_string(),
                rows: dataset.rows(),
                columns,
            },
            skipped,
        )
    }

    pub fn column_names(&self) -> Vec<String> {
        match self {
            Dataset::Csv { frame, .. } => frame
                .get_column_names()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            Dataset::Parquet { names, .. } => names.clone(),
            Dataset::Profile { profile, .. } => {
                profile.columns.iter().map(|c| c.name.clone()).collect()
            }
        }
    }

    /// One column of a table (`None` for a profile or an unknown column).
    pub fn series(&self, name: &str) -> Result<Option<Series>, String> {
        match self {
            Dataset::Csv { frame, .. } => Ok(frame
                .column(name)
                .ok()
                .map(|c| c.as_materialized_series().clone())),
            Dataset::Parquet { path, names, .. } => {
                if !names.iter().any(|n| n == name) {
                    return Ok(None);
                }
                let file =
                    std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let frame = ParquetReader::new(file)
                    .with_columns(Some(vec![name.to_string()]))
                    .finish()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(frame
                    .column(name)
                    .ok()
                    .map(|c| c.as_materialized_series().clone()))
            }
            Dataset::Profile { .. } => Ok(None),
        }
    }
}

/// The data set with every column in memory (a Parquet file read whole),
/// for taking rows out of it; a profile has no rows.
pub fn in_memory(data: &Dataset) -> Result<Dataset, String> {
    match data {
        Dataset::Csv { path, frame } => Ok(Dataset::Csv {
            path: path.clone(),
            frame: frame.clone(),
        }),
        Dataset::Parquet { path, .. } => {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let frame = ParquetReader::new(file)
                .finish()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Dataset::Csv {
                path: path.clone(),
                frame,
            })
        }
        Dataset::Profile { path, .. } => Err(format!(
            "{}: a profile has no rows to split; give the data set itself",
            path.display()
        )),
    }
}

/// Reads a dataset, choosing the reader by the file's extension.
pub fn read(path: &Path) -> Result<Dataset, LoadError> {
    if !path.exists() {
        return Err(LoadError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let read_err = |e: &dyn std::fmt::Display| LoadError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dataset = match ext.as_str() {
        "csv" => {
            let frame = match read_csv(path, None) {
                Ok(frame) => frame,
                // Polars' inference can pick a type some value does not fit (an
                // integer too large for i64); read text and type each column here.
                Err(first) => read_csv(path, Some(0))
                    .map(retype_text_columns)
                    .map_err(|_| read_err(&first))?,
            };
            Dataset::Csv {
                path: path.to_path_buf(),
                frame,
            }
        }
        "parquet" | "pq" => {
            let file = std::fs::File::open(path).map_err(|e| read_err(&e))?;
            let mut reader = ParquetReader::new(file);
            let names = reader
                .schema()
                .map_err(|e| read_err(&e))?
                .iter_names()
                .map(|n| n.to_string())
                .collect();
            let rows = reader.num_rows().map_err(|e| read_err(&e))?;
            Dataset::Parquet {
                path: path.to_path_buf(),
                rows,
                names,
            }
        }
        "json" => {
            let profile = Profile::read(path).map_err(|e| read_err(&e))?;
            return Ok(Dataset::Profile {
                path: path.to_path_buf(),
                profile,
            });
        }
        _ => {
            return Err(LoadError::UnknownFormat {
                path: path.to_path_buf(),
            })
        }
    };
    if dataset.rows() == 0 {
        return Err(LoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(dataset)
}

fn read_csv(path: &Path, infer_rows: Option<usize>) -> PolarsResult<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(infer_rows)
        .with_parse_options(CsvParseOptions::default().with_encoding(CsvEncoding::LossyUtf8))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()
}

/// Gives each all-text column the narrowest of i64, f64 or text that holds every value.
fn retype_text_columns(frame: DataFrame) -> DataFrame {
    let height = frame.height();
    let columns: Vec<Column> = frame
        .columns()
        .iter()
        .map(|c| {
            let s = c.as_materialized_series();
            let typed = [DataType::Int64, DataType::Float64]
                .iter()
                .find_map(|t| s.strict_cast(t).ok());
            typed.unwrap_or_else(|| s.clone()).into_column()
        })
        .collect();
    DataFrame::new(height, columns).unwrap_or_else(|_| DataFrame::empty())
}

/// Which columns to compare and how to type them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub columns: Option<Vec<String>>,
    pub exclude: HashSet<String>,
    pub categorical: HashSet<String>,
    pub numeric: HashSet<String>,
}

/// The type Evidently infers from the reference column: floats numeric;
/// integers numeric above 10 distinct values (or when values are missing,
/// since pandas then holds them as floats), else categorical; strings,
/// booleans and categoricals categorical.
pub fn infer_type(series: &Series) -> Result<ColumnType, String> {
    let dt = series.dtype();
    if dt.is_float() {
        Ok(ColumnType::Numeric)
    } else if dt.is_integer() {
        let distinct = series.n_unique().map_err(|e| e.to_string())?;
        if series.null_count() > 0 || distinct > INTEGER_CARDINALITY_LIMIT {
            Ok(ColumnType::Numeric)
        } else {
            Ok(ColumnType::Categorical)
        }
    } else if dt.is_bool() || dt.is_string() || dt.is_categorical() || dt.is_enum() || dt.is_null()
    {
        Ok(ColumnType::Categorical)
    } else {
        Err(format!(
            "type {dt} is not supported (numbers, strings and booleans are)"
        ))
    }
}

/// Cleaned values of one side: finite numbers, or category counts.
pub struct Side {
    pub sample: Sample,
    pub missing: u64,
}

fn is_integer_without_nulls(series: &Series) -> bool {
    series.dtype().is_integer() && series.null_count() == 0
}

/// Converts a column to a sample of the given type; missing values, NaN and
/// ±inf are dropped and counted.
pub fn to_side(series: &Series, column_type: ColumnType, integer: bool) -> Result<Side, String> {
    let dt = series.dtype().clone();
    let numeric_like = dt.is_primitive_numeric() || dt.is_bool() || dt.is_null();
    match column_type {
        ColumnType::Numeric => {
            let (finite, missing) = finite_values(series, numeric_like)?;
            Ok(Side {
                sample: Sample::Numeric(Numeric::new(finite, integer)),
                missing,
            })
        }
        ColumnType::Categorical if dt.is_primitive_numeric() || dt.is_null() => {
            let (finite, missing) = finite_values(series, true)?;
            Ok(Side {
                sample: Sample::Categorical(Numeric::new(finite, false).counts()),
                missing,
            })
        }
        ColumnType::Categorical => {
            let strings = series.cast(&DataType::String).map_err(|e| e.to_string())?;
            let ca = strings.str().map_err(|e| e.to_string())?;
            let mut missing = 0u64;
            let mut map: HashMap<&str, u64> = HashMap::new();
            for v in ca.iter() {
                match v {
                    Some(s) => *map.entry(s).or_default() += 1,
                    None => missing += 1,
                }
            }
            let counts = Counts::from_pairs(
                map.into_iter()
                    .map(|(k, c)| (Key::Str(k.to_string()), c))
                    .collect(),
            );
            Ok(Side {
                sample: Sample::Categorical(counts),
                missing,
            })
        }
    }
}

/// A column's values row by row, typed as `to_side` types them (missing,
/// NaN and ±inf as `None`; categories of a numeric column as numbers,
/// others as text, booleans as `true` / `false`).
pub enum RowValues {
    Numeric(Vec<Option<f64>>),
    Categorical(Vec<Option<Key>>),
}

pub fn to_rows(series: &Series, column_type: ColumnType) -> Result<RowValues, String> {
    let dt = series.dtype().clone();
    let numeric_like = dt.is_primitive_numeric() || dt.is_bool() || dt.is_null();
    let floats = |numeric_like: bool| -> Result<Vec<Option<f64>>, String> {
        Ok(as_f64(series, numeric_like)?
            .f64()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.filter(|x| x.is_finite()))
            .collect())
    };
    Ok(match column_type {
        ColumnType::Numeric => RowValues::Numeric(floats(numeric_like)?),
        ColumnType::Categorical if dt.is_primitive_numeric() || dt.is_null() => {
            RowValues::Categorical(floats(true)?.into_iter().map(|v| v.map(Key::Num)).collect())
        }
        ColumnType::Categorical => {
            let strings = series.cast(&DataType::String).map_err(|e| e.to_string())?;
            RowValues::Categorical(
                strings
                    .str()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|v| v.map(|s| Key::Str(s.to_string())))
                    .collect(),
            )
        }
    })
}

/// A column as f64: numbers and booleans cast, text parsed strictly
/// (any value that is not a number fails).
fn as_f64(series: &Series, numeric_like: bool) -> Result<Series, String> {
    if numeric_like {
        series.cast(&DataType::Float64).map_err(|e| e.to_string())
    } else {
        series
            .strict_cast(&DataType::Float64)
            .map_err(|_| "holds values that are not numbers".to_string())
    }
}

/// The finite values of a column as f64 and how many were missing, NaN or
/// infinite. Text is parsed strictly: any value that is not a number fails.
fn finite_values(series: &Series, numeric_like: bool) -> Result<(Vec<f64>, u64), String> {
    let cast = as_f64(series, numeric_like)?;
    let ca = cast.f64().map_err(|e| e.to_string())?;
    let mut finite = Vec::with_capacity(ca.len() - ca.null_count());
    let mut missing = 0u64;
    for v in ca.iter() {
        match v {
            Some(x) if x.is_finite() => finite.push(x),
            _ => missing += 1,
        }
    }
    Ok((finite, missing))
}

/// A reference column, typed and cleaned.
pub struct ReferenceColumn {
    pub column_type: ColumnType,
    pub side: Side,
    /// Integer values with nothing missing.
    pub integer: bool,
}

/// Reads, types (or takes the `forced` type) and cleans one reference column;
/// the error carries the type when it was known and a message naming the file.
pub fn reference_column(
    reference: &Dataset,
    name: &str,
    forced: Option<ColumnType>,
) -> Result<ReferenceColumn, (Option<ColumnType>, String)> {
    let path = reference.path().display();
    match reference {
        Dataset::Csv { .. } | Dataset::Parquet { .. } => {
            let series = reference
                .series(name)
                .map_err(|why| (None, why))?
                .ok_or_else(|| (None, format!("column is missing from {path}")))?;
            let t = match forced {
                Some(t) => t,
                None => infer_type(&series).map_err(|why| (None, format!("{path}: {why}")))?,
            };
            let integer = is_integer_without_nulls(&series);
            let side = to_side(&series, t, integer)
                .map_err(|why| (Some(t), format!("{path}: column {name} {why}")))?;
            Ok(ReferenceColumn {
                column_type: t,
                side,
                integer,
            })
        }
        Dataset::Profile { profile, .. } => {
            let col: &ProfileColumn = profile
                .column(name)
                .ok_or_else(|| (None, format!("column is missing from {path}")))?;
            if forced.is_some_and(|t| t != col.column_type) {
                let why = format!(
                    "{path}: the profile stores this column as {}",
                    col.column_type.as_str()
                );
                return Err((Some(col.column_type), why));
            }
            let side = Side {
                sample: col.sample(col.integer),
                missing: col.missing,
            };
            Ok(ReferenceColumn {
                column_type: col.column_type,
                side,
                integer: col.integer,
            })
        }
    }
}

/// Builds the inputs of every selected column (in parallel), or the reason a
/// column cannot be compared.
pub fn columns(
    reference: &Dataset,
    current: &Dataset,
    sel: &Selection,
) -> Vec<Result<ColumnInput, Untestable>> {
    let ref_names = reference.column_names();
    let cur_names: HashSet<String> = current.column_names().into_iter().collect();
    let mut names: Vec<String> = match &sel.columns {
        Some(cols) => cols.clone(),
        None => {
            let mut all = ref_names.clone();
            all.extend(
                current
                    .column_names()
                    .into_iter()
                    .filter(|n| !ref_names.contains(n)),
            );
            all
        }
    };
    names.retain(|n| !sel.exclude.contains(n));
    let ref_set: HashSet<&String> = ref_names.iter().collect();
    names
        .par_iter()
        .map(|name| {
            let missing_from = |ds: &Dataset| Untestable {
                name: name.clone(),
                column_type: None,
                reason: format!("column is missing from {}", ds.path().display()),
            };
            if !ref_set.contains(name) {
                return Err(missing_from(reference));
            }
            if !cur_names.contains(name) {
                return Err(missing_from(current));
            }
            column(reference, current, name, sel)
        })
        .collect()
}

fn column(
    reference: &Dataset,
    current: &Dataset,
    name: &str,
    sel: &Selection,
) -> Result<ColumnInput, Untestable> {
    let fail = |t: Option<ColumnType>, why: String| Untestable {
        name: name.to_string(),
        column_type: t,
        reason: why,
    };
    let cur_series = match current {
        Dataset::Profile { path, .. } => {
            return Err(fail(
                None,
                format!("{}: a profile can only be the reference", path.display()),
            ));
        }
        table => table
            .series(name)
            .map_err(|why| fail(None, why))?
            .ok_or_else(|| {
                fail(
                    None,
                    format!("column is missing from {}", table.path().display()),
                )
            })?,
    };
    let forced = if sel.categorical.contains(name) {
        Some(ColumnType::Categorical)
    } else if sel.numeric.contains(name) {
        Some(ColumnType::Numeric)
    } else {
        None
    };
    let reference_column =
        reference_column(reference, name, forced).map_err(|(t, why)| fail(t, why))?;
    let (column_type, reference_side, integer_ref) = (
        reference_column.column_type,
        reference_column.side,
        reference_column.integer,
    );
    let integer = integer_ref && is_integer_without_nulls(&cur_series);
    let current_side = to_side(&cur_series, column_type, integer).map_err(|why| {
        fail(
            Some(column_type),
            format!("{}: column {name} {why}", current.path().display()),
        )
    })?;
    let reference_sample = match reference_side.sample {
        Sample::Numeric(n) if n.integer != integer => {
            Sample::Numeric(Numeric::from_sorted(n.sorted, integer))
        }
        s => s,
    };
    Ok(ColumnInput {
        name: name.to_string(),
        column_type,
        reference: reference_sample,
        current: current_side.sample,
        missing_reference: reference_side.missing,
        missing_current: current_side.missing,
    })
}
