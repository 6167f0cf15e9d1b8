//! Max pooling over the book's 2×2 windows with stride 2 (book §7.4.4,
//! `Pooling.forward` and `Pooling.backward`), one row of windows at a time.
//!
//! Forward, window `ox` over the rows `row0`, `row1` of a plane `w` wide,
//! `row0` starting at index `top`; each value seen as `value(v)` = `v + b`,
//! or `relu(v + b)` where the convolution before fused its bias and ReLU:
//!
//! ```text
//! candidates, in NumPy's argmax order: value(row0[2·ox]), value(row0[2·ox+1]), value(row1[2·ox]), value(row1[2·ox+1])
//! out[ox] = the first maximum,  arg[ox] = top + 2·ox + {0, 1, w, w + 1} (its index in the plane)
//! ```
//!
//! Backward, the same window:
//!
//! ```text
//! d = dout[ox]  (or, after a ReLU, dout[ox] where out[ox] > 0, else 0)
//! at = arg[ox] − (top + 2·ox)   ∈ {0, 1, w, w + 1}
//! row0[2·ox .. 2·ox+2] = [d if at = 0, d if at = 1]    (else 0)
//! row1[2·ox .. 2·ox+2] = [d if at = w, d if at = w + 1]
//! ```
//!
//! The book's backward clears `dx` and adds each `dout` at its maximum's
//! index; with windows that do not overlap that is the same as writing
//! every value once, which is what this does, without a branch: where the
//! maximum lies is as unpredictable as the data, so a branch per value is
//! mispredicted about half the time. In f32 on a CPU with AVX-512 both
//! directions run 16 windows per step
//! ([`cpu_applies`]): a row's even and
//! odd values are parted, or joined again, by one permutation each, and
//! the comparisons are the scalar code's, so the results are the same to
//! the bit.

use crate::kernels::direct_conv::cpu_applies;
use crate::layers::relu::relu_backward;
use crate::tensor::Float;

/// One plane of 2×2 windows forward, each value seen as `v + bias` (or
/// `v` without one), then through a ReLU if `relu`: the input rows lie
/// `stride` values apart in `x_p` (a plane `w` wide, or the convolution's
/// wide product), the maxima go to `out_p: (OH, OW)` (OW = `out_w`), and
/// their indices in the plane to `arg_p` if given. Returns `false`, with
/// nothing written, where the vector path does not apply (not f32, no
/// AVX-512, indices past `i32`); the caller then runs its plain loop
/// (`layers::pooling`'s `max_pool_2x2`, which this matches to the bit).
///
/// ```
/// use convnet::kernels::pool_2x2::max_pool_2x2_plane;
/// let x: [f32; 8] = [1.0, 5.0, -3.0, -2.0, 4.0, 0.0, -1.0, -4.0];
/// let (mut out, mut arg) = ([0.0; 2], [0u32; 2]);
/// if max_pool_2x2_plane(&x, 4, 4, Some(1.0), true, &mut out, 2, Some(&mut arg)) {
///     // relu(v + 1): the first window's maximum 6 at (0, 1); the second's
///     // values are all 0, and the first of them wins.
///     assert_eq!((out, arg), ([6.0, 0.0], [1, 2]));
/// }
/// ```
#[allow(clippy::too_many_arguments)]
pub fn max_pool_2x2_plane<T: Float>(
    x_p: &[T],
    stride: usize,
    w: usize,
    bias: Option<T>,
    relu: bool,
    out_p: &mut [T],
    out_w: usize,
    mut arg_p: Option<&mut [u32]>,
) -> bool {
    if out_p.is_empty() {
        return true; // no window: nothing to write
    }
    assert!(
        out_w > 0 && out_p.len().is_multiple_of(out_w),
        "rows of {out_w} windows"
    );
    let out_h = out_p.len() / out_w;
    assert!(arg_p.as_ref().is_none_or(|arg| arg.len() == out_p.len()));
    assert!(out_h == 0 || x_p.len() >= (2 * out_h - 1) * stride + 2 * out_w);
    #[cfg(target_arch = "x86_64")]
    if cpu_applies::<T>() && fits_i32(2 * out_h.saturating_sub(1) * w, w, out_w) {
        // SAFETY: T is f32 (cpu_applies), so the casts are to the same
        // type; AVX-512F was detected; the lengths were checked above.
        unsafe {
            let x_p = std::slice::from_raw_parts(x_p.as_ptr().cast::<f32>(), x_p.len());
            let out_p =
                std::slice::from_raw_parts_mut(out_p.as_mut_ptr().cast::<f32>(), out_p.len());
            // v + (−0) is v, to the bit.
            let bias = bias.map_or(-0.0, |b| b.as_f64() as f32);
            let arg_p = arg_p.as_deref_mut();
            if relu {
                avx512::pool_plane::<true>(x_p, stride, w, bias, out_p, out_w, arg_p);
            } else {
                avx512::pool_plane::<false>(x_p, stride, w, bias, out_p, out_w, arg_p);
            }
        }
        return true;
    }
    let _ = (x_p, stride, w, bias, relu, out_p, arg_p);
    false
}

/// [`unpool_2x2_row`] over a plane's rows of windows, onto rows `stride`
/// apart in `dst` (the plane's own width, or the convolution's wide grid):
/// rows `2·oy` and `2·oy + 1` of `dst` get window row `oy`, each whole
/// (past the windows, zeros up to `stride`). `dout_p`, `relu_out_p` and
/// `arg_p` are `(POH, POW)`, `pooled_w` = POW, the plane `w` wide. Rows of
/// `dst` past the last pair are left alone.
///
/// ```
/// use convnet::kernels::pool_2x2::unpool_2x2_plane;
/// // A 2×4 plane pooled to 1×2 onto rows of 5: maxima at (0, 1) and (1, 2).
/// let mut dst = [9.0f32; 10];
/// unpool_2x2_plane(&[1.0, 2.0], None, &[1, 6], 4, 2, &mut dst, 5);
/// assert_eq!(dst, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
/// ```
pub fn unpool_2x2_plane<T: Float>(
    dout_p: &[T],
    relu_out_p: Option<&[T]>,
    arg_p: &[u32],
    w: usize,
    pooled_w: usize,
    dst: &mut [T],
    stride: usize,
) {
    let len = dout_p.len();
    if len == 0 {
        return; // no window: nothing to write
    }
    assert!(
        pooled_w > 0 && len.is_multiple_of(pooled_w),
        "rows of {pooled_w} windows"
    );
    let pooled_h = len / pooled_w;
    assert!(arg_p.len() == len && relu_out_p.is_none_or(|out| out.len() == len));
    assert!(stride >= 2 * pooled_w && dst.len() >= 2 * pooled_h * stride);
    #[cfg(target_arch = "x86_64")]
    if cpu_applies::<T>() && fits_i32(2 * pooled_h.saturating_sub(1) * w, w, pooled_w) {
        // SAFETY: T is f32 (cpu_applies), so the casts are to the same
        // type; AVX-512F was detected; the lengths were checked above.
        unsafe {
            let f32s = |s: &[T]| std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len());
            let dst = std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), dst.len());
            let relu_out_p = relu_out_p.map(f32s);
            avx512::unpool_plane(f32s(dout_p), relu_out_p, arg_p, w, pooled_w, dst, stride);
        }
        return;
    }
    match relu_out_p {
        Some(out) => {
            unpool_2x2_plane_by(dout_p, out, arg_p, w, pooled_w, dst, stride, relu_backward)
        }
        None => unpool_2x2_plane_by(dout_p, dout_p, arg_p, w, pooled_w, dst, stride, |_, g| g),
    }
}

/// [`unpool_2x2_plane`] value by value, with any activation's backward
/// `backward(y, g)` (`y` from `out_p`), by [`unpool_2x2_row`]: the path for
/// f64, for other CPUs and for the activations the vector path does not
/// take (sigmoid, tanh).
#[allow(clippy::too_many_arguments)]
pub fn unpool_2x2_plane_by<T: Float>(
    dout_p: &[T],
    out_p: &[T],
    arg_p: &[u32],
    w: usize,
    pooled_w: usize,
    dst: &mut [T],
    stride: usize,
    backward: impl Fn(T, T) -> T + Copy,
) {
    if dout_p.is_empty() {
        return; // no window: nothing to write
    }
    let pooled_h = dout_p.len() / pooled_w;
    let rows = dst[..2 * pooled_h * stride].chunks_exact_mut(2 * stride);
    for (oy, rows) in rows.enumerate() {
        let (row0, row1) = rows.split_at_mut(stride);
        let window_row = oy * pooled_w..(oy + 1) * pooled_w;
        let (dout, out) = (&dout_p[window_row.clone()], &out_p[window_row.clone()]);
        unpool_2x2_row(
            dout,
            out,
            &arg_p[window_row],
            2 * oy * w,
            w,
            row0,
            row1,
            backward,
        );
        // Past the windows: the plane's odd column, the junk columns.
        row0[2 * pooled_w..].fill(T::zero());
        row1[2 * pooled_w..].fill(T::zero());
    }
}

/// Whether every index of the row and of the windows fits an `i32`, as
/// the vector path compares them.
fn fits_i32(top: usize, w: usize, len: usize) -> bool {
    let last = top.checked_add(w).and_then(|v| v.checked_add(2 * len + 1));
    last.is_some_and(|last| last <= i32::MAX as usize)
}

/// One row of 2×2 windows backward, value by value: `d = backward(out[ox],
/// dout[ox])` (the activation's backward; `|_, g| g` for none), the
/// maxima's indices `arg` in a plane `w` wide whose row `row0` starts at
/// index `top` → `row0[..2·dout.len()]` and `row1[..2·dout.len()]`, every
/// value written. The reference the vector path
/// ([`unpool_2x2_plane`]) is tested against, and the path for f64, for
/// other CPUs and for the other activations.
///
/// ```
/// use convnet::kernels::pool_2x2::unpool_2x2_row;
/// // Two windows of a 4-wide plane: the first's maximum at (0, 1), the
/// // second's at (1, 2).
/// let (mut row0, mut row1) = ([9.0f32; 4], [9.0f32; 4]);
/// let dout = [1.0, 2.0];
/// unpool_2x2_row(&dout, &dout, &[1, 6], 0, 4, &mut row0, &mut row1, |_, g| g);
/// assert_eq!((row0, row1), ([0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]));
/// ```
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn unpool_2x2_row<T: Float>(
    dout: &[T],
    out: &[T],
    arg: &[u32],
    top: usize,
    w: usize,
    row0: &mut [T],
    row1: &mut [T],
    backward: impl Fn(T, T) -> T,
) {
    let values = dout.iter().zip(out).zip(arg);
    let pairs = row0.chunks_exact_mut(2).zip(row1.chunks_exact_mut(2));
    for (ox, (((&g, &y), &arg), (pair0, pair1))) in values.zip(pairs).enumerate() {
        // As the book's backward adds it to a zero.
        let d = T::zero() + backward(y, g);
        let at = (arg as usize).wrapping_sub(top + 2 * ox);
        let pick = |place: usize| if at == place { d } else { T::zero() };
        pair0[0] = pick(0);
        pair0[1] = pick(1);
        pair1[0] = pick(w);
        pair1[1] = pick(w + 1);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Two output values per window: the masks of `2·lanes` bits in halves.
    #[inline(always)]
    fn pair_mask(lanes: usize, half: u32) -> __mmask16 {
        let bits = (2 * lanes as u32).saturating_sub(16 * half).min(16);
        if bits == 16 {
            !0
        } else {
            (1u16 << bits) - 1
        }
    }

    /// `2·lanes` values of a row from `at`, parted into the windows' left
    /// (even) and right (odd) columns, each seen as `relu?(v + bias)`.
    /// (Helpers are functions with the target feature, not closures: a
    /// closure does not inherit it, and when left out of line its
    /// intrinsics become calls.)
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row_pairs<const RELU: bool>(
        at: *const f32,
        lanes: usize,
        bias: __m512,
    ) -> (__m512, __m512) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let first = _mm512_maskz_loadu_ps(pair_mask(lanes, 0), at);
        let second = _mm512_maskz_loadu_ps(pair_mask(lanes, 1), at.add(16));
        (
            value::<RELU>(_mm512_permutex2var_ps(first, even, second), bias),
            value::<RELU>(_mm512_permutex2var_ps(first, odd, second), bias),
        )
    }

    /// `d` where the maximum's place `at` is `place`, else 0.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pick(at: __m512i, place: i32, d: __m512) -> __m512 {
        _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(place)), d)
    }

    /// `v + bias`, then `v > 0 ? v : 0` (NaN gives 0, as `relu`) if `RELU`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn value<const RELU: bool>(v: __m512, bias: __m512) -> __m512 {
        let v = _mm512_add_ps(v, bias);
        if RELU {
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps()), v)
        } else {
            v
        }
    }

    /// [`super::max_pool_2x2_plane`]'s rows, each by [`pool_row`] (inlined
    /// here: one call per plane, not per row of windows).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool_plane<const RELU: bool>(
        x_p: &[f32],
        stride: usize,
        w: usize,
        bias: f32,
        out_p: &mut [f32],
        out_w: usize,
        mut arg_p: Option<&mut [u32]>,
    ) {
        for (oy, out_row) in out_p.chunks_exact_mut(out_w).enumerate() {
            let rows = [&x_p[2 * oy * stride..], &x_p[(2 * oy + 1) * stride..]];
            // A match, not `Option::map`'s closure, which would not inherit
            // the target feature (see `row_pairs`).
            #[allow(clippy::manual_map)]
            let arg_row = match arg_p.as_mut() {
                Some(arg) => Some(&mut arg[oy * out_w..][..out_w]),
                None => None,
            };
            let top = (2 * oy * w) as i32;
            pool_row::<RELU>(rows, bias, top, w as i32, out_row, arg_row);
        }
    }

    /// One row of [`super::max_pool_2x2_plane`], 16 windows at a time, the
    /// last step masked: the candidates in the scalar code's order, each
    /// replacing the best so far only where it is greater (so NaN never
    /// does).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pool_row<const RELU: bool>(
        rows: [&[f32]; 2],
        bias: f32,
        top: i32,
        w: i32,
        out: &mut [f32],
        mut arg: Option<&mut [u32]>,
    ) {
        let len = out.len();
        // Window i of the step starts 2·i values after the first.
        let lane_offsets =
            _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let bias = _mm512_set1_ps(bias);
        let mut ox = 0;
        while ox < len {
            let lanes = (len - ox).min(16);
            let mask: __mmask16 = if lanes == 16 { !0 } else { (1u16 << lanes) - 1 };
            // Each row's 2·lanes values, parted into the windows' left and
            // right columns, each seen as `value` sees it.
            let (left0, right0) = row_pairs::<RELU>(rows[0].as_ptr().add(2 * ox), lanes, bias);
            let (left1, right1) = row_pairs::<RELU>(rows[1].as_ptr().add(2 * ox), lanes, bias);
            let mut best = left0;
            let mut place = _mm512_setzero_si512();
            for (v, offset) in [(right0, 1), (left1, w), (right1, w + 1)] {
                let better = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
                best = _mm512_mask_mov_ps(best, better, v);
                place = _mm512_mask_mov_epi32(place, better, _mm512_set1_epi32(offset));
            }
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(ox), mask, best);
            if let Some(arg) = arg.as_mut() {
                let corner = _mm512_add_epi32(_mm512_set1_epi32(top + 2 * ox as i32), lane_offsets);
                let index = _mm512_add_epi32(corner, place);
                _mm512_mask_storeu_epi32(arg.as_mut_ptr().add(ox).cast::<i32>(), mask, index);
            }
            ox += lanes;
        }
    }

    /// [`super::unpool_2x2_plane`]: each row of windows by [`unpool_row`]
    /// (inlined here), the rest of each row cleared.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn unpool_plane(
        dout_p: &[f32],
        relu_out_p: Option<&[f32]>,
        arg_p: &[u32],
        w: usize,
        pooled_w: usize,
        dst: &mut [f32],
        stride: usize,
    ) {
        let pooled_h = dout_p.len() / pooled_w;
        let rows = dst[..2 * pooled_h * stride].chunks_exact_mut(2 * stride);
        for (oy, rows) in rows.enumerate() {
            let (row0, row1) = rows.split_at_mut(stride);
            let window_row = oy * pooled_w..(oy + 1) * pooled_w;
            let (dout, arg) = (&dout_p[window_row.clone()], &arg_p[window_row.clone()]);
            #[allow(clippy::manual_map)] // no closure here: see `pool_plane`
            let relu_out = match relu_out_p {
                Some(out) => Some(&out[window_row]),
                None => None,
            };
            let top = (2 * oy * w) as i32;
            unpool_row(dout, relu_out, arg, top, w as i32, row0, row1);
            row0[2 * pooled_w..].fill(0.0);
            row1[2 * pooled_w..].fill(0.0);
        }
    }

    /// One row of [`super::unpool_2x2_plane`], 16 windows at a time, the
    /// last step masked.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn unpool_row(
        dout: &[f32],
        relu_out: Option<&[f32]>,
        arg: &[u32],
        top: i32,
        w: i32,
        row0: &mut [f32],
        row1: &mut [f32],
    ) {
        let len = dout.len();
        // Lane i of the interleaved halves: window i/2's value, left or right.
        let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let lane_offsets =
            _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let zero = _mm512_setzero_ps();
        let mut ox = 0;
        while ox < len {
            let lanes = (len - ox).min(16);
            let mask: __mmask16 = if lanes == 16 { !0 } else { (1u16 << lanes) - 1 };
            let g = _mm512_maskz_loadu_ps(mask, dout.as_ptr().add(ox));
            let d = match relu_out {
                Some(out) => {
                    let y = _mm512_maskz_loadu_ps(mask, out.as_ptr().add(ox));
                    // y > 0 (false for NaN), as `relu_backward`.
                    _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, zero), g)
                }
                None => g,
            };
            // As the book's backward adds it to a zero (−0 becomes +0).
            let d = _mm512_add_ps(zero, d);
            let args = _mm512_maskz_loadu_epi32(mask, arg.as_ptr().add(ox).cast::<i32>());
            let corner = _mm512_add_epi32(_mm512_set1_epi32(top + 2 * ox as i32), lane_offsets);
            let at = _mm512_sub_epi32(args, corner);
            let (left0, right0) = (pick(at, 0, d), pick(at, 1, d));
            let (left1, right1) = (pick(at, w, d), pick(at, w + 1, d));
            for (row, left, right) in [(&mut *row0, left0, right0), (&mut *row1, left1, right1)] {
                let at = row.as_mut_ptr().add(2 * ox);
                let first = _mm512_permutex2var_ps(left, low, right);
                let second = _mm512_permutex2var_ps(left, high, right);
                _mm512_mask_storeu_ps(at, pair_mask(lanes, 0), first);
                _mm512_mask_storeu_ps(at.add(16), pair_mask(lanes, 1), second);
            }
            ox += lanes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Random windows of a `2·len + extra`-wide plane, the maxima anywhere
    /// in their windows, some outputs ≤ 0 and some `dout` −0.
    fn row_case(len: usize, extra: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, Vec<u32>, usize) {
        let w = 2 * len + extra;
        let dout = (0..len)
            .map(|i| {
                if i % 7 == 3 {
                    -0.0
                } else {
                    rng.normal() as f32
                }
            })
            .collect();
        let out = (0..len).map(|_| rng.normal() as f32).collect();
        let arg = (0..len)
            .map(|ox| {
                let place = [0, 1, w, w + 1][rng.below(4)];
                (2 * ox + place) as u32
            })
            .collect();
        (dout, out, arg, w)
    }

    /// One row of windows through the plane kernel (in vector registers
    /// where the CPU has AVX-512) against the plain row, to the bit, with
    /// the rows' zeros past the windows.
    #[test]
    fn the_vector_row_matches_the_plain_one_to_the_bit() {
        let mut rng = Rng::new(5);
        for len in [1, 5, 15, 16, 17, 31, 32, 33, 50] {
            for extra in [0, 1, 4] {
                let (dout, out, arg, w) = row_case(len, extra, &mut rng);
                for relu in [false, true] {
                    let relu_out = relu.then_some(&out[..]);
                    let stride = 2 * len + 3;
                    let mut dst = vec![7.0; 2 * stride];
                    unpool_2x2_plane(&dout, relu_out, &arg, w, len, &mut dst, stride);
                    let mut want = vec![0.0; 2 * stride];
                    let backward = |y: f32, g: f32| if !relu || y > 0.0 { g } else { 0.0 };
                    let ys = if relu { &out } else { &dout };
                    let (w0, w1) = want.split_at_mut(stride);
                    unpool_2x2_row(&dout, ys, &arg, 0, w, w0, w1, backward);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let case = format!("len {len}, extra {extra}, relu {relu}");
                    assert_eq!(bits(&dst), bits(&want), "{case}");
                }
            }
        }
    }

    /// The vector forward against the plain loop of `layers::pooling`, to
    /// the bit: maxima and their indices, with a bias and a ReLU or
    /// neither, with and without indices, on rows longer than the plane
    /// (the wide grid) and with ties, zeros of both signs and NaN.
    #[test]
    fn the_vector_pooling_matches_the_plain_one_to_the_bit() {
        use crate::kernels::im2col::ConvGeometry;
        use crate::layers::pooling::{max_pool_2x2, max_pool_2x2_values};
        let mut rng = Rng::new(7);
        for (out_h, out_w, extra) in [
            (1, 1, 0),
            (3, 5, 1),
            (12, 12, 4),
            (2, 16, 0),
            (4, 17, 2),
            (2, 40, 6),
        ] {
            let (w, stride) = (2 * out_w + extra % 2, 2 * out_w + extra);
            let g = ConvGeometry::new((1, 2 * out_h, w), (2, 2), 2, 0).unwrap();
            let x: Vec<f32> = (0..2 * out_h * stride)
                .map(|i| match i % 11 {
                    0 => 0.5,
                    1 => -0.0,
                    2 if i % 3 == 0 => f32::NAN,
                    _ => (rng.normal() as f32 * 4.0).round() / 4.0,
                })
                .collect();
            for (bias, relu) in [
                (None, false),
                (Some(0.25f32), false),
                (Some(-0.5), true),
                (None, true),
            ] {
                let value = |v: f32| {
                    let v = bias.map_or(v, |b| v + b);
                    if relu {
                        crate::layers::relu::relu(v)
                    } else {
                        v
                    }
                };
                let len = out_h * out_w;
                let (mut out, mut arg) = (vec![9.0f32; len], vec![9u32; len]);
                if !max_pool_2x2_plane(&x, stride, w, bias, relu, &mut out, out_w, Some(&mut arg)) {
                    return; // no AVX-512 here: nothing to compare
                }
                let (mut want, mut want_arg) = (vec![0.0f32; len], vec![0u32; len]);
                max_pool_2x2(&x, stride, w, &g, value, &mut want, &mut want_arg);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let case = format!("{out_h}×{out_w}, rows of {stride}, bias {bias:?}, relu {relu}");
                assert_eq!(bits(&out), bits(&want), "{case}");
                assert_eq!(arg, want_arg, "{case}");
                let mut values = vec![9.0f32; len];
                assert!(max_pool_2x2_plane(
                    &x,
                    stride,
                    w,
                    bias,
                    relu,
                    &mut values,
                    out_w,
                    None
                ));
                max_pool_2x2_values(&x, stride, &g, value, &mut want);
                assert_eq!(bits(&values), bits(&want), "{case}, values only");
            }
        }
    }

    /// A plane's rows of windows onto wider rows (the wide grid): each
    /// value at its maximum, after the ReLU's mask, zeros elsewhere up to
    /// the stride, the rows after the last pair untouched; as the plain
    /// rows give, to the bit.
    #[test]
    fn a_plane_unpools_onto_wider_rows() {
        let mut rng = Rng::new(9);
        for (pooled_h, pooled_w, w, stride) in [
            (1, 1, 2, 2),
            (3, 5, 11, 14),
            (12, 12, 24, 28),
            (2, 17, 34, 40),
        ] {
            let len = pooled_h * pooled_w;
            let dout: Vec<f32> = (0..len).map(|_| rng.normal() as f32).collect();
            let out: Vec<f32> = (0..len).map(|_| rng.normal() as f32).collect();
            let arg: Vec<u32> = (0..len)
                .map(|i| {
                    let (oy, ox) = (i / pooled_w, i % pooled_w);
                    (2 * oy * w + 2 * ox + [0, 1, w, w + 1][rng.below(4)]) as u32
                })
                .collect();
            for relu in [false, true] {
                let relu_out = relu.then_some(&out[..]);
                let mut dst = vec![5.0f32; (2 * pooled_h + 1) * stride];
                unpool_2x2_plane(&dout, relu_out, &arg, w, pooled_w, &mut dst, stride);
                let mut want = vec![0.0f32; (2 * pooled_h + 1) * stride];
                want[2 * pooled_h * stride..].fill(5.0);
                for i in 0..len {
                    let keep = !relu || out[i] > 0.0;
                    let (y, x) = (arg[i] as usize / w, arg[i] as usize % w);
                    want[y * stride + x] += if keep { dout[i] } else { 0.0 };
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&dst),
                    bits(&want),
                    "{pooled_h}×{pooled_w} of {w}, rows of {stride}, relu {relu}"
                );
            }
        }
    }

    /// No windows (an empty batch's plane): nothing written, no panic.
    #[test]
    fn no_windows_write_nothing() {
        let (mut out, mut dst) = (Vec::<f32>::new(), vec![3.0f32; 4]);
        assert!(max_pool_2x2_plane(
            &[1.0f32; 4],
            2,
            2,
            None,
            true,
            &mut out,
            0,
            None
        ));
        unpool_2x2_plane(&[], None, &[], 2, 0, &mut dst, 0);
        assert_eq!(dst, [3.0; 4]);
    }
}
