//! One look at an experiment: per arm its traffic and metric; the
//! sample-ratio check; each treatment against the baseline (the first arm)
//! by an always-valid comparison, intersected with the looks before; the
//! guardrails; and the decision with its reason. The report is the JSON of
//! `GET /v1/experiments/{name}` (DESIGN.md "Experiments").

use serde::Serialize;

use crate::config::experiment::{DifferenceKind, Method, RawExperiment};
use crate::stats::categorical::sample_ratio_mismatch;
use crate::stats::sequential::{Comparison, Difference, NotYet, Running, Sequential, Values};
use crate::window::experiments::Tally;

/// Below this sample-ratio p-value the split is broken: the arms' results
/// are not comparable (GrowthBook's and Optimizely's threshold).
pub const SRM_P_VALUE: f64 = 0.001;

/// The mSPRT's mixture variance when the experiment does not set one: most
/// powerful near differences of about √0.001 ≈ 0.03.
pub const DEFAULT_TAU2: f64 = 1e-3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Promote,
    Rollback,
    Continue,
    Invalid,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Rollback => "rollback",
            Decision::Continue => "continue",
            Decision::Invalid => "invalid",
        }
    }

    /// The gauge's value: 1 promote, −1 rollback, 0 otherwise.
    pub fn gauge(self) -> f64 {
        match self {
            Decision::Promote => 1.0,
            Decision::Rollback => -1.0,
            Decision::Continue | Decision::Invalid => 0.0,
        }
    }
}

/// One arm as the report shows it (`null`: not measured yet).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmReport {
    pub name: String,
    pub weight: f64,
    pub version: Option<String>,
    /// Requests the arm answered.
    pub requests: u64,
    pub errors: u64,
    pub error_ratio: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Labelled requests the metric was scored on.
    pub samples: u64,
    /// The metric's mean over them.
    pub metric: Option<f64>,
    pub variance: Option<f64>,
}

/// A treatment against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Versus {
    pub arm: String,
    /// Treatment − baseline (absolute) or that over the baseline (relative).
    pub lift: Option<f64>,
    pub lift_lower: Option<f64>,
    pub lift_upper: Option<f64>,
    pub p_value: Option<f64>,
    /// Why there is no comparison yet, or which guardrail it broke.
    pub note: Option<String>,
    /// The treatment broke a guardrail (`note` says which).
    pub guardrail_broken: bool,
    /// Better (1), worse (−1) or not known yet (0), by the metric's sense.
    pub verdict: i8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub name: String,
    pub model: String,
    pub metric: &'static str,
    pub higher_is_better: bool,
    pub method: &'static str,
    pub difference: &'static str,
    pub alpha: f64,
    pub min_samples: u64,
    pub arms: Vec<ArmReport>,
    /// The treatment the top-level comparison is of: the winner, else the
    /// one whose estimate is best.
    pub lift: Option<f64>,
    pub lift_lower: Option<f64>,
    pub lift_upper: Option<f64>,
    pub p_value: Option<f64>,
    pub comparisons: Vec<Versus>,
    pub srm_p_value: f64,
    pub decision: Decision,
    pub reason: String,
    pub winner: Option<String>,
    pub winner_version: Option<String>,
    /// Looks with enough samples to compare (evaluations so far).
    pub looks: u64,
    pub unknown_arm_events: u64,
    pub unscored_labels: u64,
}

/// Looks at an experiment. `running` holds one entry per treatment (the
/// intersection of its comparisons so far), `looks` the looks before.
pub fn look(
    model: &str,
    e: &RawExperiment,
    tally: &Tally,
    running: &mut [Running],
    looks: &mut u64,
) -> Report {
    let arms: Vec<ArmReport> = e
        .arms
        .iter()
        .zip(&tally.arms)
        .map(|(cfg, t)| {
            let q = t.traffic.latency_quantiles_ms();
            ArmReport {
                name: cfg.name.clone(),
                weight: cfg.weight,
                version: cfg.version.clone(),
                requests: t.traffic.predictions,
                errors: t.traffic.errors,
                error_ratio: t.traffic.error_ratio(),
                latency_p50_ms: q.map(|q| q[0]),
                latency_p99_ms: q.map(|q| q[2]),
                samples: t.metric.n as u64,
                metric: (t.metric.n > 0.0).then(|| t.metric.mean()),
                variance: (t.metric.n > 1.0).then(|| t.metric.variance(values(e))),
            }
        })
        .collect();
    // The requests each arm answered: a failed one gives no outcome to
    // compare, so an arm that loses requests (crashes, timeouts, dropped
    // connections) skews what is compared just as a broken split does.
    let counts: Vec<u64> = arms.iter().map(|a| a.requests - a.errors).collect();
    let weights: Vec<f64> = arms.iter().map(|a| a.weight).collect();
    let srm_p_value = sample_ratio_mismatch(&counts, &weights);
    let sense = e.metric.sense();
    let ready = arms
        .iter()
        .all(|a| a.samples >= e.min_samples && a.requests >= e.min_samples);
    if ready {
        *looks += 1;
    }
    let treatments = e.arms.len().saturating_sub(1).max(1);
    let test = Sequential {
        values: values(e),
        difference: match e.difference {
            DifferenceKind::Absolute => Difference::Absolute,
            DifferenceKind::Relative => Difference::Relative,
        },
        // Each treatment against the baseline: Bonferroni over them.
        alpha: e.alpha / treatments as f64,
        tuning: e.tuning,
    };
    let mut comparisons = Vec::new();
    for (i, arm) in arms.iter().enumerate().skip(1) {
        let mut versus = Versus {
            arm: arm.name.clone(),
            lift: None,
            lift_lower: None,
            lift_upper: None,
            p_value: None,
            note: None,
            guardrail_broken: false,
            verdict: 0,
        };
        let (a, b) = (&tally.arms[0].metric, &tally.arms[i].metric);
        let compared = match e.method {
            Method::ConfidenceSequence => test.compare(a, b),
            Method::Msprt => {
                let mut fresh = Running::default();
                test.msprt(a, b, e.msprt_tau2.unwrap_or(DEFAULT_TAU2), &mut fresh)
            }
        };
        match compared {
            Ok(c) => {
                let c: Comparison = if ready { running[i - 1].look(c) } else { c };
                versus.lift = Some(c.estimate);
                versus.lift_lower = Some(c.lower);
                versus.lift_upper = Some(c.upper);
                versus.p_value = Some(c.p_value);
                if ready && sense * c.lower > 0.0 {
                    versus.verdict = 1;
                } else if ready && sense * c.upper < 0.0 {
                    versus.verdict = -1;
                }
            }
            Err(why) => versus.note = Some(not_yet(why).to_string()),
        }
        if let Some(broken) = guardrail(e, &arms[0], arm) {
            versus.note = Some(broken);
            versus.guardrail_broken = true;
            versus.verdict = -1;
        }
        comparisons.push(versus);
    }
    let (decision, reason, winner) = decide(e, &arms, &comparisons, srm_p_value, ready);
    let shown = winner
        .as_ref()
        .and_then(|w| comparisons.iter().find(|c| &c.arm == w))
        .or_else(|| best_lift(sense, comparisons.iter().filter(|c| c.lift.is_some())));
    Report {
        name: e.name.clone(),
        model: model.to_string(),
        metric: e.metric.as_str(),
        higher_is_better: e.metric.higher_is_better(),
        method: match e.method {
            Method::ConfidenceSequence => "confidence_sequence",
            Method::Msprt => "msprt",
        },
        difference: match e.difference {
            DifferenceKind::Absolute => "absolute",
            DifferenceKind::Relative => "relative",
        },
        alpha: e.alpha,
        min_samples: e.min_samples,
        lift: shown.and_then(|c| c.lift),
        lift_lower: shown.and_then(|c| c.lift_lower),
        lift_upper: shown.and_then(|c| c.lift_upper),
        p_value: shown.and_then(|c| c.p_value),
        winner_version: winner
            .as_ref()
            .and_then(|w| arms.iter().find(|a| &a.name == w))
            .and_then(|a| a.version.clone()),
        arms,
        comparisons,
        srm_p_value,
        decision,
        reason,
        winner,
        looks: *looks,
        unknown_arm_events: tally.unknown_arm,
        unscored_labels: tally.unscored_labels,
    }
}

/// The comparison whose lift is best by the metric's sense.
fn best_lift<'a>(sense: f64, comparisons: impl Iterator<Item = &'a Versus>) -> Option<&'a Versus> {
    comparisons
        .max_by(|x, y| (sense * x.lift.unwrap_or(0.0)).total_cmp(&(sense * y.lift.unwrap_or(0.0))))
}

fn values(e: &RawExperiment) -> Values {
    match e.metric.proportion() {
        true => Values::Proportion,
        false => Values::Mean,
    }
}

fn not_yet(why: NotYet) -> &'static str {
    match why {
        NotYet::TooFew => "an arm has too few labelled requests to compare",
        NotYet::ZeroBaseline => "the baseline's metric is 0: a relative lift is undefined",
        NotYet::ZeroVariance => "every labelled request of both arms has the same value",
    }
}

/// A guardrail the treatment broke, once both arms served `min_samples`
/// requests.
fn guardrail(e: &RawExperiment, base: &ArmReport, arm: &ArmReport) -> Option<String> {
    if base.requests < e.min_samples || arm.requests < e.min_samples {
        return None;
    }
    let g = &e.guardrails;
    if let (Some(limit), Some(a), Some(b)) =
        (g.error_ratio_increase, base.error_ratio, arm.error_ratio)
    {
        if b - a > limit {
            return Some(format!(
                "guardrail: {} failed {:.2}% of its requests against {:.2}% for {} (more than {:.2} points above)",
                arm.name,
                100.0 * b,
                100.0 * a,
                base.name,
                100.0 * limit
            ));
        }
    }
    if let (Some(limit), Some(a), Some(b)) =
        (g.latency_p99_ratio, base.latency_p99_ms, arm.latency_p99_ms)
    {
        if a > 0.0 && b / a > limit {
            return Some(format!(
                "guardrail: {}'s latency p99 is {b:.1} ms, {:.2}× {}'s {a:.1} ms (limit {limit}×)",
                arm.name,
                b / a,
                base.name
            ));
        }
    }
    None
}

/// The decision, its reason and the winning arm.
fn decide(
    e: &RawExperiment,
    arms: &[ArmReport],
    comparisons: &[Versus],
    srm_p_value: f64,
    ready: bool,
) -> (Decision, String, Option<String>) {
    let split: Vec<String> = arms
        .iter()
        .map(|a| format!("{} {}", a.name, a.requests - a.errors))
        .collect();
    if srm_p_value < SRM_P_VALUE {
        let weights: Vec<String> = arms.iter().map(|a| format!("{}", a.weight)).collect();
        return (
            Decision::Invalid,
            format!(
                "sample ratio mismatch: answered requests {} against weights {} (p = {srm_p_value:.2e} < {SRM_P_VALUE}); the split is broken or an arm loses requests, and the arms are not comparable",
                split.join(", "),
                weights.join(":")
            ),
            None,
        );
    }
    if let Some(broken) = comparisons
        .iter()
        .filter(|c| c.guardrail_broken)
        .find_map(|c| c.note.clone())
    {
        return (Decision::Rollback, broken, None);
    }
    if arms.iter().all(|a| a.requests == 0) {
        return (Decision::Continue, "no traffic yet".into(), None);
    }
    if !ready {
        let short: Vec<String> = arms
            .iter()
            .filter(|a| a.samples < e.min_samples || a.requests < e.min_samples)
            .map(|a| {
                format!(
                    "{} has {} labelled of {} requests",
                    a.name, a.samples, a.requests
                )
            })
            .collect();
        return (
            Decision::Continue,
            format!(
                "waiting for {} labelled requests per arm: {}",
                e.min_samples,
                short.join(", ")
            ),
            None,
        );
    }
    let best = best_lift(
        e.metric.sense(),
        comparisons.iter().filter(|c| c.verdict == 1),
    );
    let interval = |c: &Versus| {
        format!(
            "{} {:+.4} [{:+.4}, {:+.4}], p = {:.3e}",
            e.metric.as_str(),
            c.lift.unwrap_or(f64::NAN),
            c.lift_lower.unwrap_or(f64::NAN),
            c.lift_upper.unwrap_or(f64::NAN),
            c.p_value.unwrap_or(f64::NAN)
        )
    };
    if let Some(c) = best {
        return (
            Decision::Promote,
            format!("{} is better than {}: {}", c.arm, arms[0].name, interval(c)),
            Some(c.arm.clone()),
        );
    }
    if comparisons.iter().all(|c| c.verdict == -1) {
        let all: Vec<String> = comparisons.iter().map(interval).collect();
        return (
            Decision::Rollback,
            format!("no arm is better than {}: {}", arms[0].name, all.join("; ")),
            None,
        );
    }
    let open: Vec<String> = comparisons
        .iter()
        .filter(|c| c.verdict == 0)
        .map(|c| match &c.note {
            Some(n) => format!("{}: {n}", c.arm),
            None => format!("{}: {}", c.arm, interval(c)),
        })
        .collect();
    (
        Decision::Continue,
        format!("no decision yet: {}", open.join("; ")),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::sequential::Arm;

    fn experiment(extra: &str) -> RawExperiment {
        serde_yaml_ng::from_str(&format!(
            "{{name: t, metric: accuracy, min_samples: 100, arms: [{{name: a, weight: 1}}, {{name: b, weight: 1, version: '7'}}]{extra}}}"
        ))
        .expect("experiment")
    }

    /// Arms with `n` requests each, labelled, at accuracies `p`; `errors`
    /// failed requests and latencies of `ms` per arm.
    fn tally(e: &RawExperiment, n: [u64; 2], p: [f64; 2], errors: [u64; 2], ms: [f64; 2]) -> Tally {
        let mut t = Tally::new(e);
        for i in 0..2 {
            let hits = (p[i] * n[i] as f64).round();
            t.arms[i].metric = Arm {
                n: n[i] as f64,
                sum: hits,
                sum_squares: hits,
            };
            t.arms[i].traffic.predictions = n[i];
            t.arms[i].traffic.errors = errors[i];
            let mut rng = crate::stats::rng::Rng::new(1);
            for _ in 0..100 {
                t.arms[i].traffic.latencies_ms.add(ms[i], 1000, &mut rng);
            }
        }
        t
    }

    fn decide_on(e: &RawExperiment, t: &Tally) -> Report {
        let (mut running, mut looks) = (vec![Running::default()], 0);
        look("credit", e, t, &mut running, &mut looks)
    }

    #[test]
    fn decisions_follow_the_sequence_the_split_and_the_guardrails() {
        let e = experiment("");
        let r = decide_on(&e, &tally(&e, [50, 50], [0.5, 0.9], [0, 0], [5.0, 5.0]));
        assert_eq!(r.decision, Decision::Continue);
        assert!(r.reason.contains("waiting for 100"), "{}", r.reason);
        let r = decide_on(
            &e,
            &tally(&e, [5000, 5000], [0.70, 0.80], [0, 0], [5.0, 5.0]),
        );
        assert_eq!(r.decision, Decision::Promote, "{}", r.reason);
        assert_eq!(r.winner.as_deref(), Some("b"));
        assert_eq!(r.winner_version.as_deref(), Some("7"));
        assert!(r.lift_lower.is_some_and(|l| l > 0.0));
        let r = decide_on(
            &e,
            &tally(&e, [5000, 5000], [0.80, 0.70], [0, 0], [5.0, 5.0]),
        );
        assert_eq!(r.decision, Decision::Rollback, "{}", r.reason);
        let r = decide_on(
            &e,
            &tally(&e, [5000, 5000], [0.80, 0.80], [0, 0], [5.0, 5.0]),
        );
        assert_eq!(r.decision, Decision::Continue, "{}", r.reason);
        // Lower is better for an error rate: the same counts, read the other way.
        let er = RawExperiment {
            metric: crate::config::experiment::Metric::ErrorRate,
            ..e.clone()
        };
        let r = decide_on(
            &er,
            &tally(&er, [5000, 5000], [0.30, 0.20], [0, 0], [5.0, 5.0]),
        );
        assert_eq!(r.decision, Decision::Promote, "{}", r.reason);
        // One arm got a third of the traffic: invalid, whatever the metric says.
        let r = decide_on(
            &e,
            &tally(&e, [6000, 3000], [0.70, 0.80], [0, 0], [5.0, 5.0]),
        );
        assert_eq!(r.decision, Decision::Invalid, "{}", r.reason);
        assert!(r.srm_p_value < SRM_P_VALUE);
        let g = experiment(", guardrails: {latency_p99_ratio: 1.2, error_ratio_increase: 0.01}");
        let r = decide_on(
            &g,
            &tally(&g, [5000, 5000], [0.70, 0.80], [0, 200], [5.0, 5.0]),
        );
        assert_eq!(r.decision, Decision::Rollback, "{}", r.reason);
        assert!(r.reason.contains("failed 4.00%"), "{}", r.reason);
        let r = decide_on(
            &g,
            &tally(&g, [5000, 5000], [0.70, 0.80], [0, 0], [5.0, 9.0]),
        );
        assert_eq!(r.decision, Decision::Rollback, "{}", r.reason);
        assert!(r.reason.contains("latency p99"), "{}", r.reason);
    }

    #[test]
    fn intervals_only_narrow_from_look_to_look() {
        let e = experiment("");
        let (mut running, mut looks) = (vec![Running::default()], 0);
        let first = look(
            "m",
            &e,
            &tally(&e, [4000, 4000], [0.70, 0.75], [0, 0], [5.0, 5.0]),
            &mut running,
            &mut looks,
        );
        let second = look(
            "m",
            &e,
            &tally(&e, [4100, 4100], [0.70, 0.70], [0, 0], [5.0, 5.0]),
            &mut running,
            &mut looks,
        );
        assert_eq!(looks, 2);
        assert!(second.lift_lower >= first.lift_lower && second.lift_upper <= first.lift_upper);
        assert!(second.p_value <= first.p_value);
        assert_eq!(
            second.decision,
            Decision::Promote,
            "the first look's decision stands: {}",
            second.reason
        );
    }
}
