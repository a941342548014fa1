//! Summation that reproduces NumPy's pairwise `add.reduce`, so that sums over
//! long columns agree with the reference implementations to the last bits.

/// NumPy's block size for pairwise summation (`PW_BLOCKSIZE` in `loops_utils.h`).
const BLOCK: usize = 128;

/// Sum of `xs` in the same order of operations as `numpy.sum` on a contiguous
/// float64 array: eight interleaved accumulators inside a block of 128, and a
/// recursive halving (on a multiple of 8) above it.
pub fn pairwise_sum(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 8 {
        // NumPy starts from -0.0 so that an all -0.0 input sums to -0.0.
        return xs.iter().fold(-0.0, |acc, &x| acc + x);
    }
    if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&xs[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += xs[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &xs[i..] {
            res += x;
        }
        return res;
    }
    let mut half = n / 2;
    half -= half % 8;
    pairwise_sum(&xs[..half]) + pairwise_sum(&xs[half..])
}

/// `pairwise_sum` of `f(i)` for each `i` of `range` (in order), without
/// the array: the same blocks of 128 and the same halving.
pub fn pairwise_sum_with(range: std::ops::Range<usize>, f: &impl Fn(usize) -> f64) -> f64 {
    let n = range.len();
    if n <= BLOCK {
        let mut block = [0.0f64; BLOCK];
        for (slot, i) in block.iter_mut().zip(range) {
            *slot = f(i);
        }
        return pairwise_sum(&block[..n]);
    }
    let mut half = n / 2;
    half -= half % 8;
    let middle = range.start + half;
    pairwise_sum_with(range.start..middle, f) + pairwise_sum_with(middle..range.end, f)
}

/// `pairwise_sum` of `f(x)` for each `x`, without allocating when the input is
/// short enough to fit one block.
pub fn pairwise_sum_map<T>(xs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mapped: Vec<f64> = xs.iter().map(f).collect();
    pairwise_sum(&mapped)
}

/// Population mean and standard deviation (ddof = 0) computed as NumPy and
/// pandas do: a pairwise mean, then the pairwise sum of squared deviations.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = pairwise_sum(xs) / n;
    let var = pairwise_sum_map(xs, |&x| (mean - x) * (mean - x)) / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_inputs_sum_exactly_for_integers() {
        for n in [0usize, 1, 7, 8, 9, 127, 128, 129, 1000, 4097] {
            let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let expected = (n * n.saturating_sub(1) / 2) as f64;
            assert_eq!(pairwise_sum(&xs), expected, "n = {n}");
        }
    }

    #[test]
    fn summing_a_function_is_summing_its_array() {
        for n in [0usize, 5, 8, 100, 128, 129, 1000, 10_007] {
            let xs: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 1e3).collect();
            assert_eq!(
                pairwise_sum_with(0..n, &|i| xs[i]).to_bits(),
                pairwise_sum(&xs).to_bits()
            );
        }
    }

    #[test]
    fn std_of_constant_is_zero() {
        let (m, s) = mean_std(&[2.5; 300]);
        assert_eq!(m, 2.5);
        assert_eq!(s, 0.0);
    }
}
