//! `driftwatch performance --format html`: the estimates drawn over the
//! chunks, one chart per metric (inline SVG, no scripts or network
//! assets): the estimate with its band of ± 3 sampling errors, the
//! thresholds from the reference's chunks, the realized value where the
//! targets are known, alerts marked, the reference and the analysis
//! apart.

use std::fmt::Write;

use serde_json::Value;

use super::html::{escape, format_number, PAGE_STYLE};

const W: f64 = 900.0;
const H: f64 = 230.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;

/// One metric's chart from the result's chunks.
fn chart(metric: &str, chunks: &[Value]) -> String {
    let field = |c: &Value, f: &str| c["metrics"][metric][f].as_f64();
    let n = chunks.len();
    let all: Vec<f64> = chunks
        .iter()
        .flat_map(|c| {
            [
                "value",
                "realized",
                "lower_confidence_boundary",
                "upper_confidence_boundary",
                "lower_threshold",
                "upper_threshold",
            ]
            .map(|f| field(c, f))
        })
        .flatten()
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if n == 0 || !lo.is_finite() {
        return format!("<p class=\"why\">{}: no values to draw</p>", escape(metric));
    }
    let pad = ((hi - lo) * 0.08).max(1e-9);
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * (i as f64 + 0.5) / n as f64;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (hi - v) / (hi - lo);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        escape(metric)
    );
    // The analysis side, shaded.
    if let Some(first) = chunks.iter().position(|c| c["period"] == "analysis") {
        let x0 = (x(first) + x(first.saturating_sub(1))) / 2.0;
        let _ = write!(
            svg,
            r#"<rect class="analysis" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}"/>"#,
            W - RIGHT - x0,
            H - TOP - BOTTOM
        );
    }
    // The band: upper edge left to right, lower edge back.
    let band: Vec<(usize, f64, f64)> = chunks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            Some((
                i,
                field(c, "lower_confidence_boundary")?,
                field(c, "upper_confidence_boundary")?,
            ))
        })
        .collect();
    if !band.is_empty() {
        let points: Vec<String> = band
            .iter()
            .map(|&(i, _, u)| format!("{:.1},{:.1}", x(i), y(u)))
            .chain(
                band.iter()
                    .rev()
                    .map(|&(i, l, _)| format!("{:.1},{:.1}", x(i), y(l))),
            )
            .collect();
        let _ = write!(
            svg,
            r#"<polygon class="band" points="{}"/>"#,
            points.join(" ")
        );
    }
    for (f, class) in [
        ("lower_threshold", "threshold"),
        ("upper_threshold", "threshold"),
    ] {
        if let Some(t) = chunks.iter().find_map(|c| field(c, f)) {
            let _ = write!(
                svg,
                r#"<line class="{class}" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/><text class="lbl" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                W - RIGHT,
                y(t),
                y(t),
                LEFT - 4.0,
                y(t) + 3.0,
                format_number(t)
            );
        }
    }
    for (f, class) in [("realized", "realized"), ("value", "estimate")] {
        let points: Vec<String> = chunks
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some(format!("{:.1},{:.1}", x(i), y(field(c, f)?))))
            .collect();
        if points.len() > 1 {
            let _ = write!(
                svg,
                r#"<polyline class="{class}" points="{}"/>"#,
                points.join(" ")
            );
        }
        for (i, c) in chunks.iter().enumerate() {
            let Some(v) = field(c, f) else { continue };
            let alert = f == "value" && c["metrics"][metric]["alert"] == true;
            let _ = write!(
                svg,
                r#"<circle class="{}" cx="{:.1}" cy="{:.1}" r="{}"><title>{} {}: {}</title></circle>"#,
                if alert { "alert" } else { class },
                x(i),
                y(v),
                if alert { 4.5 } else { 2.5 },
                escape(c["key"].as_str().unwrap_or("")),
                if f == "value" {
                    "estimated"
                } else {
                    "realized"
                },
                format_number(v)
            );
        }
    }
    // Every k-th chunk key under the axis.
    let step = n.div_ceil(6).max(1);
    for i in (0..n).step_by(step) {
        let _ = write!(
            svg,
            r#"<text class="lbl" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(i),
            H - BOTTOM + 14.0,
            escape(chunks[i]["key"].as_str().unwrap_or(""))
        );
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/></svg>"#,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    let alerts = chunks
        .iter()
        .filter(|c| c["period"] == "analysis" && c["metrics"][metric]["alert"] == true)
        .count();
    format!(
        r#"<section><h2>{}<span class="badge {}">{} analysis chunk(s) out of range</span></h2>{svg}</section>"#,
        escape(metric),
        if alerts > 0 { "drift" } else { "ok" },
        alerts
    )
}

/// The whole page from `driftwatch performance`'s JSON result.
pub fn render(result: &Value, reference: &str, analysis: &str) -> String {
    let chunks: Vec<Value> = result["chunks"].as_array().cloned().unwrap_or_default();
    let mut metrics: Vec<String> = chunks
        .first()
        .and_then(|c| c["metrics"].as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    metrics.sort();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>driftwatch estimated performance</title><style>
{PAGE_STYLE}.why{{color:#52606d}}
rect.analysis{{fill:#f7f3ea}}polygon.band{{fill:#cfe0f3}}polyline.estimate{{fill:none;stroke:#2f6db5;stroke-width:2}}
polyline.realized{{fill:none;stroke:#6b7b8c;stroke-width:1.5;stroke-dasharray:2 3}}circle.estimate{{fill:#2f6db5}}
circle.realized{{fill:#6b7b8c}}circle.alert{{fill:#d1342f}}line.threshold{{stroke:#d1342f;stroke-dasharray:6 4}}
</style></head><body><h1>Estimated performance ({} {})</h1><div class="summary">
<p>Reference: {} · Analysis: {} · {} reference chunks{}</p>
<p class="legend"><span style="background:#2f6db5"></span>estimate<span style="background:#cfe0f3"></span>± 3 sampling errors<span style="background:#6b7b8c"></span>realized<span style="background:#d1342f"></span>thresholds, alerts<span style="background:#f7f3ea"></span>analysis</p>"#,
        escape(result["method"].as_str().unwrap_or("")),
        escape(result["task"].as_str().unwrap_or("")),
        escape(reference),
        escape(analysis),
        result["reference_chunks"],
        match &result["calibrated"] {
            // Regression (DLE) has no calibration.
            Value::Null => String::new(),
            c => format!(" · calibrated: {c}"),
        },
    );
    for w in result["warnings"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            r#"<p class="why">warning: {}</p>"#,
            escape(w.as_str().unwrap_or(""))
        );
    }
    out.push_str("</div>");
    for m in &metrics {
        out.push_str(&chart(m, &chunks));
    }
    out.push_str("</body></html>\n");
    out
}
