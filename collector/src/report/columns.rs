//! Reading a data set's columns for performance estimation: scores and
//! class probabilities (in [0, 1], none missing), class labels as text,
//! targets, timestamps; each failure names the file, the column and the
//! row.

use chrono::NaiveDateTime;
use polars::prelude::*;

use super::load::Dataset;

pub(super) fn column(data: &Dataset, name: &str) -> Result<Series, String> {
    data.series(name)?.ok_or_else(|| {
        format!(
            "{}: no column {name:?} (it has {})",
            data.path().display(),
            data.column_names().join(", ")
        )
    })
}

/// A score column: finite numbers in [0, 1], none missing.
pub(super) fn scores(data: &Dataset, name: &str) -> Result<Vec<f64>, String> {
    let s = column(data, name)?;
    let s = s
        .cast(&DataType::Float64)
        .map_err(|_| format!("{}: column {name:?} is not numeric", data.path().display()))?;
    let values = s.f64().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(values.len());
    for (row, v) in values.iter().enumerate() {
        match v {
            Some(x) if (0.0..=1.0).contains(&x) => out.push(x),
            Some(x) => {
                return Err(format!(
                    "{}: column {name:?}, row {row}: {x} is not a probability in [0, 1]",
                    data.path().display()
                ))
            }
            None => {
                return Err(format!(
                    "{}: column {name:?}, row {row}: missing score",
                    data.path().display()
                ))
            }
        }
    }
    Ok(out)
}

/// A number as a label's text: as it reads (`1`, not `1.0`).
pub(super) fn number_text(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        x.to_string()
    }
}

/// A class column mapped row by row through `f` of each label's text
/// (`None`: missing); a number is written as it reads (`1`, not `1.0`),
/// the text made once per distinct number.
pub(super) fn map_labels<T: Clone>(
    data: &Dataset,
    name: &str,
    f: impl Fn(&str) -> T,
) -> Result<Vec<Option<T>>, String> {
    let s = column(data, name)?;
    if s.dtype().is_integer() {
        // Read as they are (a cast to floats would copy the column).
        let s = s.cast(&DataType::Int64).map_err(|e| e.to_string())?;
        let mut seen: Vec<(i64, T)> = Vec::new();
        return Ok(s
            .i64()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| {
                v.map(|x| {
                    if let Some((_, t)) = seen.iter().find(|(k, _)| *k == x) {
                        return t.clone();
                    }
                    let t = f(&x.to_string());
                    seen.push((x, t.clone()));
                    t
                })
            })
            .collect());
    }
    if s.dtype().is_primitive_numeric() {
        let s = s.cast(&DataType::Float64).map_err(|e| e.to_string())?;
        // Class columns hold few distinct numbers: a short list beats a hash.
        let mut seen: Vec<(u64, T)> = Vec::new();
        return Ok(s
            .f64()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| {
                v.map(|x| {
                    let bits = x.to_bits();
                    if let Some((_, t)) = seen.iter().find(|(b, _)| *b == bits) {
                        return t.clone();
                    }
                    let t = f(&number_text(x));
                    seen.push((bits, t.clone()));
                    t
                })
            })
            .collect());
    }
    if let Ok(b) = s.bool() {
        let (yes, no) = (f("1"), f("0"));
        return Ok(b
            .iter()
            .map(|v| v.map(|x| if x { yes.clone() } else { no.clone() }))
            .collect());
    }
    let s = s.cast(&DataType::String).map_err(|e| e.to_string())?;
    Ok(s.str()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.map(&f))
        .collect())
}

/// Whether a class label is the positive class: the same text, the same
/// number, or both a spelling of true.
pub(super) fn positive(value: &str, positive: &str) -> bool {
    let truthy = |v: &str| matches!(v, "1" | "true" | "True");
    value == positive
        || (truthy(positive) && truthy(value))
        || matches!((value.parse::<f64>(), positive.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
}

/// A class column as an index into `classes` per row (`None`: missing);
/// a value outside the classes is an error naming it.
pub(super) fn class_indices(
    data: &Dataset,
    name: &str,
    classes: &[String],
) -> Result<Vec<Option<usize>>, String> {
    map_labels(data, name, |v| {
        classes
            .iter()
            .position(|c| c == v)
            .ok_or_else(|| v.to_string())
    })?
    .into_iter()
    .enumerate()
    .map(|(row, v)| match v {
        None => Ok(None),
        Some(Ok(c)) => Ok(Some(c)),
        Some(Err(v)) => Err(format!(
            "{}: column {name:?}, row {row}: class {v:?} has no probability column (--probabilities names {})",
            data.path().display(),
            classes.join(", ")
        )),
    })
    .collect()
}

pub(super) fn complete<T>(
    values: Vec<Option<T>>,
    data: &Dataset,
    name: &str,
) -> Result<Vec<T>, String> {
    values
        .into_iter()
        .enumerate()
        .map(|(row, v)| {
            v.ok_or_else(|| {
                format!(
                    "{}: column {name:?}, row {row}: missing value",
                    data.path().display()
                )
            })
        })
        .collect()
}

/// The analysis targets, if the column is there and complete (realized
/// metrics); a warning when it is there with gaps.
pub(super) fn optional_truth<T>(
    analysis: &Dataset,
    target: &str,
    read: impl Fn() -> Result<Vec<Option<T>>, String>,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<T>>, String> {
    if analysis.series(target)?.is_none() {
        return Ok(None);
    }
    let t = read()?;
    if t.iter().all(Option::is_some) {
        return Ok(Some(t.into_iter().flatten().collect()));
    }
    warnings.push(format!(
        "the analysis target {target:?} has missing values: realized metrics are left out"
    ));
    Ok(None)
}

/// Per class (sorted), its probability column; rows must sum to 1.
pub(super) fn probabilities(
    data: &Dataset,
    columns: &[(String, String)],
) -> Result<Vec<Vec<f64>>, String> {
    let p: Vec<Vec<f64>> = columns
        .iter()
        .map(|(_, c)| scores(data, c))
        .collect::<Result<_, _>>()?;
    for row in 0..p.first().map_or(0, Vec::len) {
        let sum: f64 = p.iter().map(|c| c[row]).sum();
        // numpy.allclose(1, sum), as scikit-learn checks it.
        if (sum - 1.0).abs() > 1e-8 + 1e-5 {
            return Err(format!(
                "{}: row {row}: the class probabilities ({}) sum to {sum}, not 1",
                data.path().display(),
                columns
                    .iter()
                    .map(|(_, c)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(p)
}

/// A timestamp column as date-times: a datetime or date column, or text
/// in RFC 3339 (the wall time at its own offset, as pandas' periods take
/// it), `YYYY-MM-DD HH:MM:SS[.f]` or `YYYY-MM-DD`. Missing or unreadable
/// values are errors naming the row.
pub(super) fn timestamps(data: &Dataset, name: &str) -> Result<Vec<NaiveDateTime>, String> {
    let s = column(data, name)?;
    let at = |row: usize, why: &str| {
        format!(
            "{}: column {name:?}, row {row}: {why}",
            data.path().display()
        )
    };
    if matches!(s.dtype(), DataType::Datetime(..) | DataType::Date) {
        let ms = s
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
            .and_then(|s| s.cast(&DataType::Int64))
            .map_err(|e| e.to_string())?;
        return ms
            .i64()
            .map_err(|e| e.to_string())?
            .iter()
            .enumerate()
            .map(|(row, v)| {
                v.and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.naive_utc())
                    .ok_or_else(|| at(row, "missing timestamp"))
            })
            .collect();
    }
    let text = s.cast(&DataType::String).map_err(|e| e.to_string())?;
    text.str()
        .map_err(|e| e.to_string())?
        .iter()
        .enumerate()
        .map(|(row, v)| {
            let v = v.ok_or_else(|| at(row, "missing timestamp"))?.trim();
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.naive_local())
                .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f"))
                .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f"))
                .or_else(|_| {
                    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                        .map(|d| d.and_time(chrono::NaiveTime::MIN))
                })
                .map_err(|_| at(row, &format!("{v:?} is not a date-time")))
        })
        .collect()
}
