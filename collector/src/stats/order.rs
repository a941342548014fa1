//! Rows put in another order: the positions of scores from the highest
//! to the lowest (what CBPE's ROC AUC, average precision and calibration
//! sweep walk along), and values gathered in such an order.

/// The positions of `score` from the highest score to the lowest (ties
/// in any order): each score's total-order bits, reversed, sorted as
/// integers (faster than comparing floats; a radix sort was slower on
/// probabilities, whose low bits all vary).
pub fn descending(score: &[f64]) -> Vec<usize> {
    let mut keyed: Vec<(u64, u32)> = score
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let bits = s.to_bits();
            // f64::total_cmp's order as unsigned integers, reversed.
            let key = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            (!key, i as u32)
        })
        .collect();
    keyed.sort_unstable_by_key(|&(key, _)| key);
    keyed.into_iter().map(|(_, i)| i as usize).collect()
}

/// `values` in `order` (rows put in another order: the calibrated
/// probabilities in `descending`'s order, where tied scores have equal
/// calibrated probabilities, calibration being a function of the score,
/// so their order changes nothing; a data set's rows in time order).
pub fn in_order<T: Copy>(values: &[T], order: &[usize]) -> Vec<T> {
    order.iter().map(|&i| values[i]).collect()
}

/// `in_order` in place.
pub fn put_in_order<T: Copy>(values: &mut Vec<T>, order: &[usize]) {
    *values = in_order(values, order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_the_scores_descending() {
        let mut rng = crate::stats::rng::Rng::new(5);
        for n in [0usize, 1, 2, 17, 1000, 70_000] {
            let score: Vec<f64> = (0..n)
                .map(|i| match i % 7 {
                    0 => 0.5,
                    1 => -(rng.below(1000) as f64) / 7.0,
                    2 => 0.0,
                    _ => rng.below(1 << 40) as f64 / (1u64 << 40) as f64,
                })
                .collect();
            let got: Vec<f64> = descending(&score).iter().map(|&i| score[i]).collect();
            let mut want = score.clone();
            want.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(got, want, "n = {n}");
        }
    }
}
