//! The product of one row vector and a matrix, `out += x · W`: an affine
//! layer's forward for a batch of one image (book §5.6, `np.dot(x, W)`).
//!
//! ```text
//! x: (D)    W: (D, M), rows `w_stride` apart    out: (M)
//! out[j] += Σ_i x[i] · W[i, j]        i = 0, 1, …, D−1 in this order
//! ```
//!
//! At batch 1 the product reads every weight once and does one multiply-add
//! with it, so its speed is the speed at which W arrives from memory (the
//! affine layer shares a large W's rows out between two cores, see
//! `layers/affine.rs`).
//!
//! Up to 128 columns go in one pass down W's rows, their sums held in
//! registers (for f32 with AVX-512: 8 of its 32; narrower vectors or f64
//! may spill some to the stack). A pass loads a whole block (a multiple of 16 columns) from
//! every row: where the block is wider than the columns asked for, it reads
//! on into the next row, and those lanes' sums are thrown away. The last
//! rows, where such a load would run past the end of W, go one value at a
//! time. Compiled for AVX-512, AVX2 and SSE2 like
//! [`vectorize`](super::vectorize), the widest chosen when called; every
//! width does the same operations in the same order.
//!
//! ```
//! use convnet::kernels::gemv::gemv_accumulate;
//! // x = [1, 2], W = [[1, 2, 3], [4, 5, 6]]: x·W = [9, 12, 15]
//! let mut out = [0.5f32; 3];
//! gemv_accumulate(&mut out, &[1.0, 2.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3);
//! assert_eq!(out, [9.5, 12.5, 15.5]);
//! ```

use super::reduce::{add_lanes, LANES};
use crate::tensor::Float;

/// Columns summed in one pass down the rows.
const MAX_BLOCK: usize = 128;

/// `out[j] += Σ_i x[i]·w[i·w_stride + j]` for the `out.len() ≤ BLOCK`
/// columns from `w[0]`, loading `BLOCK` values from each row that has them.
#[inline(always)]
fn block<T: Float, const BLOCK: usize>(out: &mut [T], x: &[T], w: &[T], w_stride: usize) {
    let m = out.len();
    let mut sums = [T::zero(); BLOCK];
    sums[..m].copy_from_slice(out);
    // Rows from which BLOCK values can be loaded.
    let whole_rows = match w.len().checked_sub(BLOCK) {
        Some(last_start) => (last_start / w_stride + 1).min(x.len()),
        None => 0,
    };
    for (i, &xi) in x[..whole_rows].iter().enumerate() {
        let row: &[T; BLOCK] = w[i * w_stride..][..BLOCK].try_into().expect("BLOCK values");
        for (sum, &wij) in sums.iter_mut().zip(row) {
            *sum += xi * wij;
        }
    }
    for (i, &xi) in x.iter().enumerate().skip(whole_rows) {
        let row = &w[i * w_stride..][..m];
        for (sum, &wij) in sums.iter_mut().zip(row) {
            *sum += xi * wij;
        }
    }
    out.copy_from_slice(&sums[..m]);
}

#[inline(always)]
fn gemv_plain<T: Float>(out: &mut [T], x: &[T], w: &[T], w_stride: usize) {
    for (c, out) in out.chunks_mut(MAX_BLOCK).enumerate() {
        let w = &w[c * MAX_BLOCK..];
        match out.len().div_ceil(16) {
            1 => block::<T, 16>(out, x, w, w_stride),
            2 => block::<T, 32>(out, x, w, w_stride),
            3 => block::<T, 48>(out, x, w, w_stride),
            4 => block::<T, 64>(out, x, w, w_stride),
            5 => block::<T, 80>(out, x, w, w_stride),
            6 => block::<T, 96>(out, x, w, w_stride),
            7 => block::<T, 112>(out, x, w, w_stride),
            _ => block::<T, MAX_BLOCK>(out, x, w, w_stride),
        }
    }
}

/// Rows of W whose dot products share one pass over x.
const DOT_ROWS: usize = 4;

/// The sums of [`dots_into`]: `lanes[r][k]` for row r.
#[inline(always)]
fn dot_block<T: Float, const ROWS: usize>(w: &[T], x: &[T]) -> [T; ROWS] {
    let d = x.len();
    let mut lanes = [[T::zero(); LANES]; ROWS];
    let body = d - d % LANES;
    for start in (0..body).step_by(LANES) {
        let xs: &[T; LANES] = x[start..][..LANES].try_into().expect("LANES values");
        for (r, lanes) in lanes.iter_mut().enumerate() {
            let ws: &[T; LANES] = w[r * d + start..][..LANES]
                .try_into()
                .expect("LANES values");
            for k in 0..LANES {
                lanes[k] += ws[k] * xs[k];
            }
        }
    }
    for (r, lanes) in lanes.iter_mut().enumerate() {
        for (k, i) in (body..d).enumerate() {
            lanes[k] += w[r * d + i] * x[i];
        }
    }
    lanes.map(add_lanes)
}

#[inline(always)]
fn dots_plain<T: Float>(out: &mut [T], w: &[T], x: &[T]) {
    let d = x.len();
    let done = out.len() - out.len() % DOT_ROWS;
    for (b, out) in out[..done].chunks_exact_mut(DOT_ROWS).enumerate() {
        out.copy_from_slice(&dot_block::<T, DOT_ROWS>(&w[b * DOT_ROWS * d..], x));
    }
    for j in done..out.len() {
        out[j] = dot_block::<T, 1>(&w[j * d..], x)[0];
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use crate::tensor::Float;
    #[target_feature(enable = "avx512f")]
    pub(super) fn dots_avx512<T: Float>(out: &mut [T], w: &[T], x: &[T]) {
        super::dots_plain(out, w, x)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn dots_avx2<T: Float>(out: &mut [T], w: &[T], x: &[T]) {
        super::dots_plain(out, w, x)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn gemv_avx512<T: Float>(out: &mut [T], x: &[T], w: &[T], w_stride: usize) {
        super::gemv_plain(out, x, w, w_stride)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn gemv_avx2<T: Float>(out: &mut [T], x: &[T], w: &[T], w_stride: usize) {
        super::gemv_plain(out, x, w, w_stride)
    }
}

/// `out += x · W` for `x: (D)` and the `out.len()` columns of `W: (D, ·)`
/// that start at `w[0]`, its rows `w_stride` values apart.
///
/// Panics if `w` is shorter than those columns need (a caller's bug: the
/// layer checks the shapes).
pub fn gemv_accumulate<T: Float>(out: &mut [T], x: &[T], w: &[T], w_stride: usize) {
    let (d, m) = (x.len(), out.len());
    if d == 0 || m == 0 {
        return;
    }
    assert!(
        m <= w_stride && w.len() >= (d - 1) * w_stride + m,
        "gemv: W holds {} values, too few for {d} rows of {m} columns {w_stride} apart",
        w.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::gemv_avx512(out, x, w, w_stride) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { wide::gemv_avx2(out, x, w, w_stride) };
        }
    }
    gemv_plain(out, x, w, w_stride)
}

/// `out[j] = W[j] · x` for `W: (M, D)` row-major, `x: (D)` and `out: (M)`:
/// each dot product in the interleaved partial sums of
/// [`reduce::lane_sum_by`](super::reduce::lane_sum_by), and so its bits.
/// Four rows share each pass over x.
///
/// Panics if `w` holds fewer than M·D values.
pub fn dots_into<T: Float>(out: &mut [T], w: &[T], x: &[T]) {
    assert!(
        out.len().checked_mul(x.len()).is_some_and(|n| w.len() >= n),
        "dots: W holds {} values, too few for {} rows of {}",
        w.len(),
        out.len(),
        x.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::dots_avx512(out, w, x) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { wide::dots_avx2(out, w, x) };
        }
    }
    dots_plain(out, w, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition, one column at a time, in the documented order.
    fn naive(out: &mut [f32], x: &[f32], w: &[f32], w_stride: usize) {
        for (j, o) in out.iter_mut().enumerate() {
            for (i, &xi) in x.iter().enumerate() {
                *o += xi * w[i * w_stride + j];
            }
        }
    }

    /// Every block width and the remainder, on column windows of a wider W:
    /// the same bits as the definition.
    #[test]
    fn every_width_of_columns_gives_the_definitions_bits() {
        let mut rng = Rng::new(11);
        let (d, stride) = (37, 131);
        let x: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
        let w: Vec<f32> = (0..d * stride).map(|_| rng.normal() as f32).collect();
        for (start, m) in [
            (0, 131),
            (3, 100),
            (50, 50),
            (1, 7),
            (0, 64),
            (9, 122),
            (0, 100),
        ] {
            let bias: Vec<f32> = (0..m).map(|_| rng.normal() as f32).collect();
            let (mut want, mut got) = (bias.clone(), bias.clone());
            naive(&mut want, &x, &w[start..], stride);
            gemv_accumulate(&mut got, &x, &w[start..], stride);
            assert_eq!(want, got, "columns {start}..{}", start + m);
            #[cfg(target_arch = "x86_64")]
            for (has, wide_gemv) in [
                (
                    std::arch::is_x86_feature_detected!("avx512f"),
                    wide::gemv_avx512::<f32> as unsafe fn(&mut [f32], &[f32], &[f32], usize),
                ),
                (std::arch::is_x86_feature_detected!("avx2"), wide::gemv_avx2),
            ] {
                if has {
                    let mut wide_out = bias.clone();
                    // SAFETY: the feature was detected.
                    unsafe { wide_gemv(&mut wide_out, &x, &w[start..], stride) };
                    assert_eq!(want, wide_out);
                }
            }
        }
    }

    /// Splitting the columns in two changes no output (each column's sum is
    /// the same, in the same order).
    #[test]
    fn two_halves_of_the_columns_give_the_whole_products_bits() {
        let mut rng = Rng::new(12);
        let (d, m) = (300, 100);
        let x: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
        let w: Vec<f32> = (0..d * m).map(|_| rng.normal() as f32).collect();
        let mut whole = vec![0.0f32; m];
        gemv_accumulate(&mut whole, &x, &w, m);
        let mut halves = vec![0.0f32; m];
        let (left, right) = halves.split_at_mut(48);
        gemv_accumulate(left, &x, &w, m);
        gemv_accumulate(right, &x, &w[48..], m);
        assert_eq!(whole, halves);
    }

    /// Each dot product has `lane_sum_by`'s bits, for every row count
    /// around the four-row blocks and lengths around the lanes.
    #[test]
    fn dot_products_give_lane_sum_bys_bits() {
        use crate::kernels::reduce::lane_sum_by;
        let mut rng = Rng::new(13);
        for (m, d) in [(1, 5), (4, 16), (7, 400), (9, 33), (120, 400)] {
            let w: Vec<f32> = (0..m * d).map(|_| rng.normal() as f32).collect();
            let x: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
            let want: Vec<f32> = w
                .chunks(d)
                .map(|w| lane_sum_by(w, &x, |a, b| a * b))
                .collect();
            let mut got = vec![f32::NAN; m];
            dots_into(&mut got, &w, &x);
            assert_eq!(want, got, "{m}×{d}");
            let mut plain = vec![f32::NAN; m];
            dots_plain(&mut plain, &w, &x);
            assert_eq!(want, plain, "{m}×{d}");
            #[cfg(target_arch = "x86_64")]
            for (has, wide_dots) in [
                (
                    std::arch::is_x86_feature_detected!("avx512f"),
                    wide::dots_avx512::<f32> as unsafe fn(&mut [f32], &[f32], &[f32]),
                ),
                (std::arch::is_x86_feature_detected!("avx2"), wide::dots_avx2),
            ] {
                if has {
                    let mut wide_out = vec![f32::NAN; m];
                    // SAFETY: the feature was detected.
                    unsafe { wide_dots(&mut wide_out, &w, &x) };
                    assert_eq!(want, wide_out, "{m}×{d}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "too few")]
    fn a_matrix_too_short_for_its_columns_is_a_bug_caught() {
        gemv_accumulate(&mut [0.0f32; 4], &[1.0, 1.0], &[0.0; 7], 4);
    }
}
