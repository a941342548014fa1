//! Special functions the tests need that statrs does not provide.

pub use statrs::function::gamma::ln_gamma;

/// `e^q · K_{1/4}(q)` for `q > 0`, the scaled modified Bessel function of the
/// second kind of order 1/4, from `K_ν(q) = ∫_0^∞ e^{−q cosh t} cosh(νt) dt`.
/// The trapezoidal rule converges geometrically for this analytic, doubly
/// decaying integrand (error ~ exp(−π²/h); Trefethen & Weideman 2014, SIAM
/// Review 56(3)); with h = 0.05 it is exact to rounding.
pub fn scaled_bessel_k_quarter(q: f64) -> f64 {
    const H: f64 = 0.05;
    let f = |t: f64| (-q * (t.cosh() - 1.0)).exp() * (0.25 * t).cosh();
    let mut sum = 0.5 * f(0.0);
    let mut i = 1u32;
    loop {
        let term = f(f64::from(i) * H);
        sum += term;
        if term < sum * 1e-18 || i > 100_000 {
            break;
        }
        i += 1;
    }
    sum * H
}

/// Least-squares quadratic `c0·x² + c1·x + c2` through the points, as
/// `numpy.polyfit(x, y, 2)`: columns scaled to unit norm, then solved by
/// Householder QR (NumPy uses an SVD; both are exact to rounding here).
#[allow(clippy::needless_range_loop)] // index form mirrors the textbook Householder QR
pub fn polyfit2(x: &[f64], y: &[f64]) -> [f64; 3] {
    let rows = x.len();
    let mut a: Vec<[f64; 3]> = x.iter().map(|&v| [v * v, v, 1.0]).collect();
    let mut scale = [0.0f64; 3];
    for (c, s) in scale.iter_mut().enumerate() {
        *s = a.iter().map(|r| r[c] * r[c]).sum::<f64>().sqrt();
        for r in a.iter_mut() {
            r[c] /= *s;
        }
    }
    let mut b = y.to_vec();
    for c in 0..3 {
        let norm = (c..rows).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt();
        let alpha = if a[c][c] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (0..rows)
            .map(|r| if r < c { 0.0 } else { a[r][c] })
            .collect();
        v[c] -= alpha;
        let vnorm2: f64 = v.iter().map(|e| e * e).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        for cc in c..3 {
            let dot: f64 = (c..rows).map(|r| v[r] * a[r][cc]).sum();
            for r in c..rows {
                a[r][cc] -= 2.0 * v[r] * dot / vnorm2;
            }
        }
        let dot: f64 = (c..rows).map(|r| v[r] * b[r]).sum();
        for r in c..rows {
            b[r] -= 2.0 * v[r] * dot / vnorm2;
        }
    }
    let mut coef = [0.0f64; 3];
    for c in (0..3).rev() {
        let s: f64 = ((c + 1)..3).map(|cc| a[c][cc] * coef[cc]).sum();
        coef[c] = (b[c] - s) / a[c][c];
    }
    for (c, s) in coef.iter_mut().zip(scale) {
        *c /= s;
    }
    coef
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bessel_k_quarter_matches_known_values() {
        // scipy.special.kv(0.25, q) * exp(q) for q = 0.5, 2, 10.
        for (q, want) in [
            (0.5, 1.583_293_951_515_770_7),
            (2.0, 0.852_536_560_174_985_7),
            (10.0, 0.392_802_027_075_874_97),
        ] {
            let got = scaled_bessel_k_quarter(q);
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "q={q}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn polyfit_recovers_an_exact_quadratic() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0];
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v * v - 3.0 * v + 0.5).collect();
        let c = polyfit2(&x, &y);
        for (got, want) in c.iter().zip([2.0, -3.0, 0.5]) {
            assert!((got - want).abs() < 1e-12, "{c:?}");
        }
    }
}
