//! Criterion benchmarks: one per estimator on 100k vs 100k normal samples
//! (and category counts), so a slowdown in any test shows up on its own.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use driftwatch::stats::{self, Counts, Key, Numeric, Sample, TestKind};

/// Deterministic pseudo-normal values (sum of 12 uniforms from xorshift64*).
fn normal(seed: u64, n: usize, shift: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / 9_007_199_254_740_992.0
    };
    (0..n)
        .map(|_| (0..12).map(|_| uniform()).sum::<f64>() - 6.0 + shift)
        .collect()
}

fn bench_tests(c: &mut Criterion) {
    let n = 100_000;
    let a = Sample::Numeric(Numeric::new(normal(1, n, 0.0), false));
    let b = Sample::Numeric(Numeric::new(normal(2, n, 0.05), false));
    let cats = |seed| {
        let v = normal(seed, n, 0.0);
        Sample::Categorical(Counts::from_pairs(
            v.iter()
                .map(|x| (Key::Str(format!("c{}", (x.abs() * 3.0) as u32)), 1))
                .collect(),
        ))
    };
    let (ca, cb) = (cats(3), cats(4));
    let mut group = c.benchmark_group("drift_test_100k");
    group.sample_size(10);
    for kind in TestKind::ALL {
        let (r, s) = match kind {
            TestKind::ChiSquare | TestKind::ZTest => (&ca, &cb),
            _ => (&a, &b),
        };
        group.bench_with_input(
            BenchmarkId::from_parameter(kind.name()),
            &kind,
            |bench, &k| bench.iter(|| stats::run(k, r, s).expect("applicable")),
        );
    }
    group.finish();
    c.bench_function("sort_100k", |bench| {
        bench.iter(|| Numeric::new(normal(5, n, 0.0), false))
    });
}

/// Every applicable test of `report` on one numeric feature, default
/// choices, as a live window's evaluation runs them.
fn all_tests(reference: &Sample, current: &Sample) -> driftwatch::report::ColumnReport {
    driftwatch::report::evaluate_samples(
        "x",
        stats::ColumnType::Numeric,
        reference,
        current,
        (0, 0),
        &driftwatch::report::Overrides::default(),
    )
}

/// One live numeric feature-window as the collector evaluates it: every
/// applicable test of `report` on a 5,000-row reference against a window
/// holding 10,000 values (the default sample limit); after the first
/// iteration its KS p-value is remembered, as in a live collector whose
/// windows keep their sizes. And that p-value alone, computed every time.
fn bench_feature_window(c: &mut Criterion) {
    let reference = Sample::Numeric(Numeric::new(normal(11, 5_000, 0.0), false));
    let mut group = c.benchmark_group("feature_window_5k_vs_10k");
    group.sample_size(20);
    for (name, shift) in [("no_drift", 0.0), ("drift", 0.2)] {
        let current = Sample::Numeric(Numeric::new(normal(12, 10_000, shift), false));
        group.bench_function(format!("all_tests_{name}"), |bench| {
            bench.iter(|| all_tests(&reference, &current))
        });
    }
    // The exact KS p-value for 5,000 against 10,000 values at D = h / 10,000
    // (h = 170: no drift at these sizes), computed every time: the cost
    // of a KS statistic not seen before (ks_2samp remembers them).
    for h in [170, 400] {
        group.bench_function(format!("ks_lattice_h{h}"), |bench| {
            bench.iter(|| stats::ks::lattice_p_value(5_000, 10_000, h))
        });
    }
    group.bench_function("sort_10k", |bench| {
        bench.iter(|| Numeric::new(normal(13, 10_000, 0.0), false))
    });
    group.finish();
}

/// The sizing table of the README: one numeric feature-window by reference
/// size and window sample size, every test (KS remembered), the sort of
/// the window's sample, and the exact KS count of a statistic not seen
/// before at the typical no-drift D (1.36 / sqrt(n_eff), p about 0.05).
fn bench_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("feature_window_by_size");
    group.sample_size(10);
    for (r, w) in [
        (1_000, 1_000),
        (5_000, 1_000),
        (5_000, 10_000),
        (20_000, 10_000),
    ] {
        let reference = Sample::Numeric(Numeric::new(normal(21, r, 0.0), false));
        let values = normal(22, w, 0.0);
        let current = Sample::Numeric(Numeric::new(values.clone(), false));
        group.bench_function(format!("all_tests_{r}_vs_{w}"), |bench| {
            bench.iter(|| all_tests(&reference, &current))
        });
        group.bench_function(format!("sort_{w}_of_{r}_vs_{w}"), |bench| {
            bench.iter(|| Numeric::new(values.clone(), false))
        });
        if r.max(w) <= 10_000 {
            let (r64, w64) = (r as u64, w as u64);
            let g = (1..=r64.min(w64))
                .rev()
                .find(|g| r64 % g == 0 && w64 % g == 0)
                .unwrap_or(1);
            let lcm = r64 / g * w64;
            let n_eff = (r * w) as f64 / (r + w) as f64;
            let h = (1.36 / n_eff.sqrt() * lcm as f64).round() as u64;
            group.bench_function(format!("ks_lattice_{r}_vs_{w}"), |bench| {
                bench.iter(|| stats::ks::lattice_p_value(r64, w64, h))
            });
        }
    }
    group.finish();
}

/// Live estimation's share of a window's evaluation: CBPE (the six binary
/// metrics) fitted on the example's estimation reference, estimating one
/// role's window of 10,000 outputs (the default sample limit) as one
/// chunk; beside it the example model's window of 8 features is 8 times
/// `feature_window_5k_vs_10k/all_tests_*` (README, Evaluation cost).
fn bench_estimation(c: &mut Criterion) {
    use driftwatch::report::estimator::{settings, Asked, Estimator, Options, Outputs, ScoredRow};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/credit/estimation.csv");
    let reference = driftwatch::report::load::read(&path).expect("estimation.csv");
    let options = Options {
        target: "default".into(),
        prediction: "label".into(),
        outputs: Outputs::Score {
            column: "score".into(),
            positive_class: "1".into(),
        },
        settings: settings(&Asked::default()).expect("settings"),
        timestamp: None,
    };
    let (estimator, _) = Estimator::fit(&reference, &options).expect("fit");
    let rows: Vec<ScoredRow> = normal(31, 10_000, 0.0)
        .into_iter()
        .map(|z| {
            let p = 1.0 / (1.0 + (-(z - 1.5)).exp());
            ScoredRow {
                predicted: u32::from(p >= 0.5),
                p: smallvec::smallvec![p],
            }
        })
        .collect();
    let mut group = c.benchmark_group("estimation");
    group.sample_size(20);
    group.bench_function("cbpe_window_10k", |bench| {
        bench.iter(|| estimator.estimate_rows(&rows))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_tests,
    bench_feature_window,
    bench_sizes,
    bench_estimation
);
criterion_main!(benches);
