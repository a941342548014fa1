//! Always-valid inference for comparing two arms (A/B tests, canaries):
//! the asymptotic confidence sequence of Waudby-Smith et al., "Time-uniform
//! central limit theory and asymptotic confidence sequences" (2023,
//! arXiv:2103.06476v7: eq. 9 for the half-width, eq. 155 for the p-value,
//! eq. 161 for ρ), computed as GrowthBook's gbstats 0.8 computes it
//! (`SequentialTwoSidedTTest`). Unlike a fixed-horizon test, the sequence
//! covers the true difference at every look at once with probability
//! 1 − α, so a decision may be taken at any look.
//!
//! The mSPRT of Johari et al. (`Sequential::msprt`) is the alternative
//! for proportions. Pure functions over each arm's sufficient statistics
//! (count, sum, sum of squares); checked against gbstats, and against the
//! papers' formulas where gbstats has no such test, on the fixtures of
//! `collector/tests/fixtures/generate_sequential.py`.

/// What an arm's values are, which fixes their variance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Any real values (a loss, a reward): the sample variance.
    Mean,
    /// 0/1 outcomes (correct, converted): p (1 − p).
    Proportion,
}

/// How the arms are compared: `b − a`, or `(b − a) / a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    Absolute,
    Relative,
}

/// An arm's sufficient statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Arm {
    pub n: f64,
    pub sum: f64,
    pub sum_squares: f64,
}

impl Arm {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        self.n += 1.0;
        self.sum += x;
        self.sum_squares += x * x;
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0.0 {
            0.0
        } else {
            self.sum / self.n
        }
    }

    pub fn variance(&self, values: Values) -> f64 {
        match values {
            Values::Proportion => self.mean() * (1.0 - self.mean()),
            Values::Mean if self.n <= 1.0 => 0.0,
            Values::Mean => (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1.0),
        }
    }
}

/// The settings of a sequential comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sequential {
    pub values: Values,
    pub difference: Difference,
    /// The error rate over every look together (default 0.05).
    pub alpha: f64,
    /// The sample size the sequence is tightest at (gbstats' default 5000).
    pub tuning: f64,
}

impl Default for Sequential {
    fn default() -> Sequential {
        Sequential {
            values: Values::Proportion,
            difference: Difference::Absolute,
            alpha: 0.05,
            tuning: 5000.0,
        }
    }
}

/// The difference between two arms with its confidence sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    /// The always-valid p-value of "no difference": the inverse of the
    /// mixture e-value, capped at 1.
    pub p_value: f64,
}

/// What an mSPRT carries from one look to the next: the smallest p-value
/// and the intersection of the intervals so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running {
    pub p_value: f64,
    pub lower: f64,
    pub upper: f64,
}

impl Default for Running {
    fn default() -> Running {
        Running {
            p_value: 1.0,
            lower: f64::NEG_INFINITY,
            upper: f64::INFINITY,
        }
    }
}

impl Running {
    /// Takes in one look: the smallest p-value so far and the
    /// intersection of the intervals so far (both stay valid at every
    /// look: a confidence sequence holds at all looks at once, so it
    /// holds for their intersection), with this look's estimate.
    pub fn look(&mut self, c: Comparison) -> Comparison {
        self.p_value = self.p_value.min(c.p_value);
        self.lower = self.lower.max(c.lower);
        self.upper = self.upper.min(c.upper);
        Comparison {
            estimate: c.estimate,
            lower: self.lower,
            upper: self.upper,
            p_value: self.p_value,
        }
    }
}

/// Why two arms cannot be compared yet (gbstats answers these with an
/// uninformative result; the caller shows `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotYet {
    /// An arm without values, or with one value of a mean.
    TooFew,
    /// The baseline's mean is 0 (a relative difference is undefined).
    ZeroBaseline,
    /// An arm whose values are all the same.
    ZeroVariance,
}

impl Sequential {
    /// ρ of eq. 161: the mixture's spread that makes the sequence tightest
    /// at `tuning` samples.
    pub fn rho(&self) -> f64 {
        let l = -2.0 * self.alpha.ln();
        ((l + (l + 1.0).ln()) / self.tuning).sqrt()
    }

    /// Compares arm `b` (treatment) with arm `a` (baseline).
    pub fn compare(&self, a: &Arm, b: &Arm) -> Result<Comparison, NotYet> {
        let (estimate, variance) = self.difference(a, b)?;
        Ok(self.sequence(estimate, variance, a.n + b.n))
    }

    /// The mixture sequential probability ratio test (mSPRT) of Johari,
    /// Pekelis and Walsh, "Always valid inference: continuous monitoring
    /// of A/B tests" (Operations Research 70(3), 2022; arXiv:1512.04922),
    /// normal mixture N(0, τ²) over the difference, with the estimate's
    /// variance W in place of the paper's V/n (the same when the arms are
    /// equal; it allows unequal arms): Λ = √(W/(W+τ²)) · exp(τ²θ̂² /
    /// (2W(W+τ²))). The p-value is the smallest 1/Λ over the looks so far
    /// and the interval the intersection of every look's, so `running`
    /// carries them from one look to the next (start from its default).
    /// `tau2` is the mixture's variance: the test is most powerful near
    /// differences of about τ. An alternative to `compare` for
    /// proportions.
    pub fn msprt(
        &self,
        a: &Arm,
        b: &Arm,
        tau2: f64,
        running: &mut Running,
    ) -> Result<Comparison, NotYet> {
        let (estimate, w) = self.difference(a, b)?;
        let shrink = w / (w + tau2);
        let lambda = shrink.sqrt() * (tau2 * estimate.powi(2) / (2.0 * w * (w + tau2))).exp();
        let half = (w * (w + tau2) / tau2 * (-2.0 * self.alpha.ln() - shrink.ln())).sqrt();
        Ok(running.look(Comparison {
            estimate,
            lower: estimate - half,
            upper: estimate + half,
            p_value: 1.0 / lambda,
        }))
    }

    /// The difference of `b` from `a` and its variance, as gbstats
    /// computes them (the delta method for a relative difference).
    fn difference(&self, a: &Arm, b: &Arm) -> Result<(f64, f64), NotYet> {
        let min_n = match self.values {
            Values::Mean => 2.0,
            Values::Proportion => 1.0,
        };
        if a.n < min_n || b.n < min_n {
            return Err(NotYet::TooFew);
        }
        if self.difference == Difference::Relative && a.mean() == 0.0 {
            return Err(NotYet::ZeroBaseline);
        }
        let (var_a, var_b) = (a.variance(self.values), b.variance(self.values));
        if var_a <= 0.0 || var_b <= 0.0 {
            return Err(NotYet::ZeroVariance);
        }
        let (mean_a, mean_b) = (a.mean(), b.mean());
        Ok(match self.difference {
            Difference::Absolute => (mean_b - mean_a, var_b / b.n + var_a / a.n),
            Difference::Relative => (
                (mean_b - mean_a) / mean_a,
                var_b / (mean_a.powi(2) * b.n) + var_a * mean_b.powi(2) / (mean_a.powi(4) * a.n),
            ),
        })
    }

    /// Paired comparison: `d` holds per-request differences (b − a, e.g.
    /// the shadow's loss minus the champion's on the same request); the
    /// one-sample form of the same sequence (eq. 9 with the differences'
    /// variance), for a champion and a shadow that scored the same rows.
    pub fn paired(&self, d: &Arm) -> Result<Comparison, NotYet> {
        if d.n < 2.0 {
            return Err(NotYet::TooFew);
        }
        let variance = d.variance(Values::Mean);
        if variance <= 0.0 {
            return Err(NotYet::ZeroVariance);
        }
        Ok(self.sequence(d.mean(), variance / d.n, d.n))
    }

    /// The sequence around `estimate`, whose variance is `variance`, after
    /// `n` observations in all; and the always-valid p-value of 0.
    fn sequence(&self, estimate: f64, variance: f64, n: f64) -> Comparison {
        let rho2 = self.rho().powi(2);
        let t = n * rho2 + 1.0;
        // eq. 9: the half-width at n observations.
        let s2 = variance * n;
        let width = s2.sqrt() * (2.0 * t * (t.sqrt() / self.alpha).ln() / (n * n * rho2)).sqrt();
        // eq. 155: the mixture e-value of "the difference is 0".
        let st2 = estimate.powi(2) * n / variance;
        let evalue = (rho2 * st2 / (2.0 * t)).exp() / t.sqrt();
        Comparison {
            estimate,
            lower: estimate - width,
            upper: estimate + width,
            p_value: (1.0 / evalue).min(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_arms_are_not_compared() {
        let s = Sequential::default();
        let mut a = Arm::default();
        let b = Arm {
            n: 10.0,
            sum: 5.0,
            sum_squares: 5.0,
        };
        assert_eq!(s.compare(&a, &b), Err(NotYet::TooFew));
        a.add(0.0);
        a.add(0.0);
        assert_eq!(s.compare(&a, &b), Err(NotYet::ZeroVariance));
        let relative = Sequential {
            difference: Difference::Relative,
            ..s
        };
        assert_eq!(relative.compare(&a, &b), Err(NotYet::ZeroBaseline));
        let mean = Sequential {
            values: Values::Mean,
            ..s
        };
        let one = Arm {
            n: 1.0,
            sum: 1.0,
            sum_squares: 1.0,
        };
        assert_eq!(mean.compare(&one, &b), Err(NotYet::TooFew));
    }

    /// Looks every 100 samples per arm up to 20,000: (a) with equal arms
    /// the share of experiments whose sequence ever excludes 0 stays within
    /// α plus three binomial standard errors, where a fixed-horizon z-test
    /// at the same looks rejects far more often; (b) with accuracies 0.80
    /// and 0.77 the sequence excludes 0 on the wrong side at most α of the
    /// time, and the median samples to a decision is printed.
    #[test]
    fn peeking_keeps_the_error_rate_where_a_z_test_loses_it() {
        use crate::stats::rng::Rng;
        let s = Sequential::default();
        let (looks, every) = (200, 100);
        // Runs one experiment; the look (samples per arm) at which the
        // sequence and the z-test first exclude 0, and the sequence's sign.
        let run = |rng: &mut Rng, p_a: u64, p_b: u64| {
            let (mut a, mut b) = (Arm::default(), Arm::default());
            let (mut cs, mut z, mut msprt) = (None, None, None);
            let mut running = Running::default();
            for look in 1..=looks {
                for _ in 0..every {
                    a.add(f64::from(u8::from(rng.below(1000) < p_a)));
                    b.add(f64::from(u8::from(rng.below(1000) < p_b)));
                }
                let Ok(c) = s.compare(&a, &b) else { continue };
                if cs.is_none() && (c.lower > 0.0 || c.upper < 0.0) {
                    cs = Some((look * every, c.upper < 0.0));
                }
                let se = (a.variance(Values::Proportion) / a.n
                    + b.variance(Values::Proportion) / b.n)
                    .sqrt();
                if z.is_none() && (c.estimate / se).abs() > 1.959_963_984_540_054 {
                    z = Some(look * every);
                }
                if let Ok(m) = s.msprt(&a, &b, 1e-3, &mut running) {
                    if msprt.is_none() && m.p_value <= s.alpha {
                        msprt = Some(look * every);
                    }
                }
            }
            (cs, z, msprt)
        };
        let mut rng = Rng::new(18);
        let experiments = 2000;
        let (mut cs_rejects, mut z_rejects, mut m_rejects) = (0, 0, 0);
        for _ in 0..experiments {
            let (cs, z, m) = run(&mut rng, 800, 800);
            cs_rejects += usize::from(cs.is_some());
            z_rejects += usize::from(z.is_some());
            m_rejects += usize::from(m.is_some());
        }
        let share = cs_rejects as f64 / experiments as f64;
        let z_share = z_rejects as f64 / experiments as f64;
        let m_share = m_rejects as f64 / experiments as f64;
        let bound = s.alpha + 3.0 * (s.alpha * (1.0 - s.alpha) / experiments as f64).sqrt();
        println!(
            "A/A, {experiments} experiments, {looks} looks: the confidence sequence ever rejected {share:.4}, the mSPRT (tau2 1e-3) {m_share:.4} (bound {bound:.4}), a z-test at every look {z_share:.4}"
        );
        assert!(share <= bound, "{share} > {bound}");
        assert!(m_share <= bound, "{m_share} > {bound}");
        assert!(z_share > 3.0 * s.alpha, "{z_share}");
        let experiments = 500;
        let (mut decided, mut wrong) = (Vec::new(), 0);
        for _ in 0..experiments {
            if let (Some((n, b_worse)), _, _) = run(&mut rng, 800, 770) {
                decided.push(n);
                wrong += usize::from(!b_worse);
            }
        }
        decided.sort_unstable();
        let median = decided.get(decided.len() / 2).copied().unwrap_or(0);
        println!(
            "0.80 against 0.77, {experiments} experiments: {} decided within 20,000 per arm, median {median} per arm, {wrong} wrong",
            decided.len()
        );
        assert!(wrong as f64 / experiments as f64 <= s.alpha);
        assert!(decided.len() * 2 > experiments);
    }

    /// Paired A/A: per-request differences of two models that agree 60%
    /// of the time and err alike otherwise (−1, 0, 1, symmetric), looked
    /// at every 100 requests up to 10,000: the share that ever excludes 0
    /// stays within α plus three standard errors.
    #[test]
    fn paired_peeking_keeps_the_error_rate() {
        use crate::stats::rng::Rng;
        let s = Sequential::default();
        let mut rng = Rng::new(7);
        let experiments = 1000;
        let mut rejects = 0;
        for _ in 0..experiments {
            let mut d = Arm::default();
            let mut rejected = false;
            for _ in 0..100 {
                for _ in 0..100 {
                    d.add(match rng.below(10) {
                        0 | 1 => -1.0,
                        2 | 3 => 1.0,
                        _ => 0.0,
                    });
                }
                if let Ok(c) = s.paired(&d) {
                    rejected |= c.lower > 0.0 || c.upper < 0.0;
                }
            }
            rejects += usize::from(rejected);
        }
        let share = rejects as f64 / experiments as f64;
        let bound = s.alpha + 3.0 * (s.alpha * (1.0 - s.alpha) / experiments as f64).sqrt();
        println!("paired A/A, {experiments} experiments, 100 looks: ever rejected {share:.4} (bound {bound:.4})");
        assert!(share <= bound, "{share} > {bound}");
    }

    #[test]
    fn the_sequence_is_wider_than_a_fixed_horizon_interval_and_narrows() {
        // At equal samples the always-valid interval is wider than the
        // z-interval (the price of looking at will), and it narrows as
        // samples grow.
        let s = Sequential::default();
        let arm = |n: f64, p: f64| Arm {
            n,
            sum: n * p,
            sum_squares: n * p,
        };
        let small = s
            .compare(&arm(1000.0, 0.8), &arm(1000.0, 0.77))
            .expect("ok");
        let large = s
            .compare(&arm(100_000.0, 0.8), &arm(100_000.0, 0.77))
            .expect("ok");
        let z_half = 1.959_963_984_540_054 * (2.0 * 0.8 * 0.2 / 1000.0_f64).sqrt();
        assert!(small.upper - small.estimate > z_half * 1.0001);
        assert!(large.upper - large.lower < small.upper - small.lower);
        assert!(large.upper < 0.0 && large.p_value < 0.05);
        assert!(small.p_value > 0.05);
    }
}
