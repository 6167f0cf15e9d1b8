//! Sums over a slice in a fixed order that the compiler can vectorise.
//!
//! A plain `for v in a { total += v }` is one chain of dependent additions:
//! each waits for the one before, so the loop runs at one addition per
//! addition latency (about 4 cycles) whatever the vector width. Here
//! [`LANES`] partial sums run side by side — value `i` goes to lane `i %
//! LANES` — and are added together at the end in a fixed tree. The order of
//! additions depends only on the length of the slice, never on threads or
//! on where the slice sits in memory, so results stay reproducible.
//!
//! ```
//! use convnet::kernels::reduce::lane_sum_by;
//! let a = [1.0f32, 2.0, 3.0, 4.0];
//! let b = [1.0f32, 1.0, 2.0, 2.0];
//! assert_eq!(lane_sum_by(&a, &b, |x, y| x * y), 17.0);
//! ```

use super::vectorize;
use crate::tensor::Float;

/// Partial sums kept side by side: 16 f32 fill one AVX-512 register (two
/// AVX2 ones), enough independent chains to hide the addition latency.
pub const LANES: usize = 16;

/// Σ f(a_i, b_i) over `a` and `b` (which must have the same length), in
/// [`LANES`] interleaved partial sums added in a fixed tree at the end.
#[inline]
pub fn lane_sum_by<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    assert_eq!(a.len(), b.len(), "lane_sum_by: slices of different lengths");
    let mut lanes = [T::zero(); LANES];
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (xs, ys) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for k in 0..LANES {
            lanes[k] += f(xs[k], ys[k]);
        }
    }
    for (k, (&x, &y)) in a_tail.iter().zip(b_tail).enumerate() {
        lanes[k] += f(x, y);
    }
    add_lanes(lanes)
}

/// Two sums in one pass, `(Σ f(a_i, b_i).0, Σ f(a_i, b_i).1)`, each in
/// [`lane_sum_by`]'s order and so with its bits: for two sums over the same
/// data, which then comes from memory once. Compiled for the widest vectors
/// the CPU has ([`vectorize::widest`]: two sets of 16 partial sums spill out
/// of the baseline's SSE registers): the same operations in the same order,
/// so the same bits.
#[inline]
pub fn lane_sum2_by<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> (T, T)) -> (T, T) {
    assert_eq!(
        a.len(),
        b.len(),
        "lane_sum2_by: slices of different lengths"
    );
    vectorize::widest(
        #[inline(always)]
        || lane_sum2_by_plain(a, b, &f),
    )
}

#[inline(always)]
fn lane_sum2_by_plain<T: Float>(a: &[T], b: &[T], f: &impl Fn(T, T) -> (T, T)) -> (T, T) {
    let (mut first, mut second) = ([T::zero(); LANES], [T::zero(); LANES]);
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (xs, ys) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for k in 0..LANES {
            let (p, q) = f(xs[k], ys[k]);
            first[k] += p;
            second[k] += q;
        }
    }
    for (k, (&x, &y)) in a_tail.iter().zip(b_tail).enumerate() {
        let (p, q) = f(x, y);
        first[k] += p;
        second[k] += q;
    }
    (add_lanes(first), add_lanes(second))
}

/// The partial sums of [`lane_sum_by`] added in its fixed pairwise tree:
/// lanes k and k + width, halving the width.
#[inline]
pub fn add_lanes<T: Float>(mut lanes: [T; LANES]) -> T {
    let mut width = LANES / 2;
    while width > 0 {
        for k in 0..width {
            let upper = lanes[k + width];
            lanes[k] += upper;
        }
        width /= 2;
    }
    lanes[0]
}

/// Σ a_i, by [`lane_sum_by`].
#[inline]
pub fn lane_sum<T: Float>(a: &[T]) -> T {
    lane_sum_by(a, a, |x, _| x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain definition the kernel replaces, in f64.
    fn plain_sum(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| f(x as f64, y as f64)).sum()
    }

    proptest! {
        #[test]
        fn matches_the_plain_sum(a in prop::collection::vec(-10.0f32..10.0, 0..200), shift in -1.0f32..1.0) {
            let b: Vec<f32> = a.iter().map(|&x| x * 0.5 + shift).collect();
            let total_abs: f64 = a.iter().map(|&x| x.abs() as f64).sum();
            let got = lane_sum(&a) as f64;
            prop_assert!((got - plain_sum(&a, &a, |x, _| x)).abs() <= 1e-6 * (1.0 + total_abs));
            let got = lane_sum_by(&a, &b, |x, y| x * y) as f64;
            let exact = plain_sum(&a, &b, |x, y| x * y);
            let scale: f64 = a.iter().zip(&b).map(|(&x, &y)| (x * y).abs() as f64).sum();
            prop_assert!((got - exact).abs() <= 1e-6 * (1.0 + scale));
        }
    }

    #[test]
    fn two_sums_in_one_pass_have_the_bits_of_two_passes() {
        let mut rng = crate::rng::Rng::new(7);
        for len in [0, 1, 15, 16, 17, 100, 784] {
            let a: Vec<f32> = (0..len).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.normal() as f32).collect();
            let (s, p) = lane_sum2_by(&a, &b, |x, y| (x - y, x * y));
            assert_eq!(
                s.to_bits(),
                lane_sum_by(&a, &b, |x, y| x - y).to_bits(),
                "length {len}"
            );
            assert_eq!(
                p.to_bits(),
                lane_sum_by(&a, &b, |x, y| x * y).to_bits(),
                "length {len}"
            );
        }
    }

    #[test]
    fn every_value_is_counted_once_whatever_the_length() {
        // Powers of two are exact in f32: any value missed or counted twice
        // changes the sum.
        for len in 0..70 {
            let a: Vec<f32> = (0..len).map(|i| (1u32 << (i % 20)) as f32).collect();
            let expected: f32 = a.iter().sum();
            assert_eq!(lane_sum(&a), expected, "length {len}");
        }
    }

    #[test]
    fn the_order_is_the_lanes_then_the_tree() {
        // 1e8 + 1 is 1e8 in f32, so the order of additions shows: lane 0
        // gets 1e8 and -1e8 (0), lane 1 the ones.
        let mut a = vec![0.0f32; 2 * LANES];
        a[0] = 1e8;
        a[LANES] = -1e8;
        a[1] = 1.0;
        a[LANES + 1] = 1.0;
        assert_eq!(lane_sum(&a), 2.0);
    }
}
