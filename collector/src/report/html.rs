//! The self-contained HTML report: a summary, then one section per column
//! (drifted first) with reference-vs-current distributions as inline SVG and
//! every test's result. No scripts, fonts or other network assets.

use std::fmt::Write;

use super::{ColumnReport, Report};
use crate::stats::sample::align;
use crate::stats::{Key, Sample};

const NUMERIC_BINS: usize = 30;
const MAX_CATEGORIES: usize = 20;

/// Reference and current shares over common bins, for drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

impl Histogram {
    pub fn of(reference: &Sample, current: &Sample) -> Histogram {
        match (reference, current) {
            (Sample::Numeric(a), Sample::Numeric(b)) if a.distinct() > MAX_CATEGORIES => {
                let lo = a.sorted[0].min(b.sorted[0]);
                let hi = a.sorted[a.len() - 1].max(b.sorted[b.len() - 1]);
                let width = (hi - lo) / NUMERIC_BINS as f64;
                let edges: Vec<f64> = (0..=NUMERIC_BINS).map(|i| lo + width * i as f64).collect();
                let share = |s: &[f64]| -> Vec<f64> {
                    let counts = crate::stats::binning::histogram(s, &edges);
                    counts.iter().map(|&c| c as f64 / s.len() as f64).collect()
                };
                let labels = edges[..NUMERIC_BINS]
                    .iter()
                    .map(|e| format_number(*e))
                    .collect();
                Histogram {
                    labels,
                    reference: share(&a.sorted),
                    current: share(&b.sorted),
                }
            }
            _ => {
                let (rc, cc) = (reference.counts(), current.counts());
                let mut keys: Vec<Key> = rc.keys.iter().chain(cc.keys.iter()).cloned().collect();
                keys.sort();
                keys.dedup();
                let pairs = align(&rc, &cc);
                let (nr, nc) = (rc.total.max(1) as f64, cc.total.max(1) as f64);
                let mut rows: Vec<(String, f64, f64)> = keys
                    .iter()
                    .zip(pairs)
                    .map(|(k, (r, c))| (k.to_string(), r as f64 / nr, c as f64 / nc))
                    .collect();
                rows.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
                rows.truncate(MAX_CATEGORIES);
                Histogram {
                    labels: rows.iter().map(|r| r.0.clone()).collect(),
                    reference: rows.iter().map(|r| r.1).collect(),
                    current: rows.iter().map(|r| r.2).collect(),
                }
            }
        }
    }
}

/// About four significant digits, plain notation between 0.001 and 10⁶.
pub(super) fn format_number(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 || (1e-3..1e6).contains(&a) {
        let decimals = if a >= 1000.0 {
            0
        } else if a >= 10.0 {
            2
        } else {
            4
        };
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.3e}")
    }
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), format_number)
}

fn svg(h: &Histogram) -> String {
    let (w, ht, pad) = (640.0, 180.0, 24.0);
    let n = h.labels.len().max(1) as f64;
    let max = h
        .reference
        .iter()
        .chain(&h.current)
        .cloned()
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let slot = (w - 2.0 * pad) / n;
    let bar = slot * 0.4;
    let mut out = format!(
        r#"<svg viewBox="0 0 {w} {}" width="{w}" height="{}" role="img">"#,
        ht + 40.0,
        ht + 40.0
    );
    for (i, (r, c)) in h.reference.iter().zip(&h.current).enumerate() {
        let x = pad + i as f64 * slot;
        let rh = r / max * ht;
        let ch = c / max * ht;
        let label = escape(&h.labels[i]);
        let _ = write!(
            out,
            r#"<rect class="ref" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{rh:.1}"><title>{label}: reference {:.2}%</title></rect><rect class="cur" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{ch:.1}"><title>{label}: current {:.2}%</title></rect>"#,
            x,
            ht - rh,
            r * 100.0,
            x + bar,
            ht - ch,
            c * 100.0
        );
        let every = (h.labels.len() / 10).max(1);
        if i % every == 0 {
            let _ = write!(
                out,
                r#"<text x="{x:.1}" y="{:.1}" class="lbl">{}</text>"#,
                ht + 14.0,
                escape(&truncate(&h.labels[i], 12))
            );
        }
    }
    let _ = write!(
        out,
        r#"<line x1="{pad}" y1="{ht}" x2="{}" y2="{ht}" class="axis"/></svg>"#,
        w - pad
    );
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn column_section(c: &ColumnReport) -> String {
    let mut out = String::new();
    let verdict = match (&c.untestable, c.drift) {
        (Some(_), _) => r#"<span class="badge na">not compared</span>"#,
        (None, true) => r#"<span class="badge drift">drift</span>"#,
        (None, false) => r#"<span class="badge ok">no drift</span>"#,
    };
    let _ = write!(
        out,
        r#"<section><h2>{} {verdict}</h2><p class="meta">{} · missing: reference {}, current {}"#,
        escape(&c.name),
        c.column_type.map_or("unknown type", |t| t.as_str()),
        c.missing_reference,
        c.missing_current
    );
    if let Some(v) = c.verdict() {
        let _ = write!(out, " · verdict by <b>{}</b>", v.test);
    }
    out.push_str("</p>");
    if let Some(why) = &c.untestable {
        let _ = write!(out, r#"<p class="why">{}</p></section>"#, escape(why));
        return out;
    }
    if let Some(h) = &c.histogram {
        out.push_str(&svg(h));
    }
    out.push_str("<table><tr><th>test</th><th>statistic</th><th>p-value</th><th>threshold</th><th>drift</th><th>note</th></tr>");
    for t in &c.tests {
        let chosen = c.verdict().is_some_and(|v| v.test == t.test);
        let _ = write!(
            out,
            r#"<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            if chosen { r#" class="chosen""# } else { "" },
            t.test,
            opt(t.statistic),
            opt(t.p_value),
            format_number(t.threshold),
            if t.drift { "yes" } else { "no" },
            escape(t.note.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table></section>");
    out
}

/// The style both HTML pages share (the drift report, `driftwatch
/// performance --format html`): page, headings, summary box, badges,
/// chart labels and legend.
pub(super) const PAGE_STYLE: &str = r#"body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:60rem;color:#1d2733;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-bottom:.2rem}section{border-top:1px solid #d8dee6;padding:1rem 0}
.summary{background:#f3f6f9;border-radius:8px;padding:1rem 1.25rem}
.badge{font-size:.75rem;border-radius:4px;padding:.1rem .45rem;vertical-align:middle;margin-left:.4rem}
.drift{background:#fde2e1;color:#a4161a}.ok{background:#dcf2e3;color:#17663a}
.lbl{font-size:9px;fill:#52606d}.axis{stroke:#9aa5b1}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
"#;

/// Renders the whole report as one HTML document.
pub fn render(report: &Report, reference: &str, current: &str) -> String {
    let d = &report.dataset_drift;
    let tested = report
        .columns
        .iter()
        .filter(|c| c.untestable.is_none())
        .count();
    let mut columns: Vec<&ColumnReport> = report.columns.iter().collect();
    // Drifted first, then by how strongly the verdict test speaks, untestable last.
    let strength = |c: &ColumnReport| -> f64 {
        match c.verdict() {
            Some(t) if t.p_value.is_some() => 1.0 - t.p_value.unwrap_or(1.0),
            Some(t) => t.statistic.unwrap_or(f64::INFINITY),
            None => f64::NEG_INFINITY,
        }
    };
    columns.sort_by(|a, b| {
        b.drift
            .cmp(&a.drift)
            .then(strength(b).total_cmp(&strength(a)))
    });
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>driftwatch drift report</title><style>
{PAGE_STYLE}.big{{font-size:1.3rem;font-weight:600}}.na{{background:#eceff3;color:#555}}
.meta,.why{{color:#52606d;margin:.2rem 0 .6rem}}table{{border-collapse:collapse;font-size:.85rem;margin-top:.5rem}}
td,th{{padding:.25rem .6rem;border-bottom:1px solid #e5e9ee;text-align:left}}tr.chosen{{font-weight:600;background:#fff8e1}}
rect.ref{{fill:#7f97b2}}rect.cur{{fill:#f08c3a}}
</style></head><body><h1>Data drift report</h1><div class="summary"><p class="big">{} of {} columns drifted ({:.1}%) · dataset drift: {}</p>
<p>Reference: {} ({} rows) · Current: {} ({} rows) · dataset drift when at least {:.0}% of columns drift</p>
<p class="legend"><span style="background:#7f97b2"></span>reference<span style="background:#f08c3a"></span>current</p></div>"#,
        d.drifted_columns,
        tested,
        d.share * 100.0,
        if d.drift { "<b>yes</b>" } else { "no" },
        escape(reference),
        report.reference_rows,
        escape(current),
        report.current_rows,
        d.threshold * 100.0
    );
    for c in columns {
        out.push_str(&column_section(c));
    }
    out.push_str("</body></html>\n");
    out
}
