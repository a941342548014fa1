//! A window's column (a feature, a role's outputs, a feature within a
//! segment) against its reference, with `report`'s own statistics and
//! the model's overrides; reused while its sample is unchanged.

use super::FeatureWindow;
use crate::models::Feature;
use crate::report::{self, ColumnReport, Overrides};
use crate::stats::{Numeric, Sample};

/// A window's column against its reference, evaluated now.
fn evaluate_column(feature: &Feature, fw: &FeatureWindow, overrides: &Overrides) -> ColumnReport {
    // Integer histogram widths apply only when, as in a file, every
    // value is an integer and nothing is missing.
    let mut current = fw.sample(false);
    if let Sample::Numeric(n) = &current {
        if feature.integer && fw.missing == 0 && n.sorted.iter().all(|x| x.fract() == 0.0) {
            current = Sample::Numeric(Numeric::from_sorted(n.sorted.clone(), true));
        }
    }
    let reference = match (&feature.reference, &current) {
        (Sample::Numeric(r), Sample::Numeric(c)) if r.integer != c.integer => {
            std::borrow::Cow::Owned(Sample::Numeric(Numeric::from_sorted(
                r.sorted.clone(),
                c.integer,
            )))
        }
        (r, _) => std::borrow::Cow::Borrowed(r),
    };
    report::evaluate_samples(
        &feature.name,
        feature.column_type,
        &reference,
        &current,
        (feature.reference_missing, fw.missing),
        overrides,
    )
}

/// A column's report from the last evaluation when its sample has not
/// changed since, else evaluated now.
pub fn column(
    last: Option<&(u64, ColumnReport)>,
    feature: &Feature,
    fw: &FeatureWindow,
    overrides: &Overrides,
) -> (u64, ColumnReport) {
    match last {
        Some((version, r)) if *version == fw.version => (*version, r.clone()),
        _ => (fw.version, evaluate_column(feature, fw, overrides)),
    }
}
