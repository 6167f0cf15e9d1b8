//! Direct convolution onto the wide grid: `wide = W · col` of
//! [`im2col_wide`](super::im2col_wide) computed straight from the padded
//! image, for stride 1, with no `col` written and no `gemm` packing.
//!
//! ```text
//! xpad: (C, HP, WP)         W: (FN, C, FH, FW), given as wt: (C·FH·FW, FN)
//! wide[f, oy·OWW + ox] = Σ_c Σ_fy Σ_fx  W[f, c, fy, fx] · xpad[c, oy + fy, ox + fx]
//!                        (c, fy, fx in this order, one fused multiply-add each)
//! ```
//!
//! On the wide grid (OWW = WP) a tap `(fy, fx)` reads every output pixel's
//! input at the same offset `fy·WP + fx` from the pixel, so 16 neighbouring
//! pixels are one vector load whatever rows they lie on. The kernel keeps
//! the sums of one such vector for up to [`MAX_FILTER_BLOCK`] filters in
//! registers and, for every `(c, fy, fx)`, loads the 16 inputs once and
//! multiplies them by each filter's weight, broadcast from `wt` (where the
//! filters of one tap lie side by side). That is one load per
//! [`MAX_FILTER_BLOCK`] multiply-adds: the cores run near their peak, as
//! `gemm`'s kernel does, without unrolling the image into `col` first.
//! On the book's grid (OWW = OW) each output row is one such run.
//!
//! Every output value is summed in the same order whatever the grid, the
//! band of rows or the vector lane it falls in, so the layer's batch-1 team
//! (which computes bands of rows) gives the same bits as one thread. Only
//! f32 on a CPU with AVX-512 takes this route ([`conv_wide`] returns
//! `false` otherwise, and the caller unrolls and multiplies);
//! [`conv_wide_plain`] is the same sums in plain Rust, which the tests
//! compare it with.
//!
//! ```
//! use convnet::kernels::direct_conv::{conv_wide_plain, weight_by_tap};
//! use convnet::kernels::im2col::ConvGeometry;
//! use convnet::kernels::im2col_wide::{pad_image, WideGeometry};
//! // One 3×3 image, pad 1, one filter that sums the 3×3 window.
//! let wg = WideGeometry::new(ConvGeometry::new((1, 3, 3), (3, 3), 1, 1).unwrap());
//! let x = [1.0f32; 9];
//! let mut xpad = vec![0.0; wg.padded_len()];
//! pad_image(&x, &wg, &mut xpad);
//! let mut wt = Vec::new();
//! weight_by_tap(&[1.0f32; 9], 1, &mut wt);
//! let mut wide = vec![0.0; wg.wide_pixels()];
//! conv_wide_plain(&xpad, &wg, &wt, 1, &mut wide);
//! // Corners see 4 ones, edges 6, the centre 9 (on the book's grid here:
//! // rows of 3).
//! assert_eq!(&wide[..3], &[4.0, 6.0, 4.0]);
//! assert_eq!(&wide[3..6], &[6.0, 9.0, 6.0]);
//! ```

use super::im2col_wide::WideGeometry;
use crate::tensor::Float;

/// Filters whose sums one pass keeps in registers: 24 of AVX-512's 32, the
/// rest for the inputs and the broadcast weight.
pub const MAX_FILTER_BLOCK: usize = 24;

/// `W: (FN, K)` (K = C·FH·FW) → `wt: (K, FN)`, the layout [`conv_wide`] reads:
/// the weights of one tap for every filter side by side.
pub fn weight_by_tap<T: Float>(weight: &[T], filters: usize, wt: &mut Vec<T>) {
    let k = weight.len() / filters.max(1);
    wt.clear();
    wt.resize(weight.len(), T::zero());
    for (f, row) in weight.chunks_exact(k.max(1)).enumerate() {
        for (tap, &w) in row.iter().enumerate() {
            wt[tap * filters + f] = w;
        }
    }
}

/// One run of output pixels that read the padded plane at one offset:
/// `wide[out_start..][..len]` from `xpad_c[in_start..]` (plus each tap's shift).
#[derive(Clone, Copy, Debug)]
struct Run {
    out_start: usize,
    in_start: usize,
    len: usize,
}

/// The runs of `wg`'s output, and where its values end (the rest of each
/// `wide` row, up to `wide_pixels`, is zero as in `W · col`).
fn runs(wg: &WideGeometry) -> (Vec<Run>, usize) {
    let g = &wg.g;
    if wg.wide_w == wg.padded_w {
        // One run: pixel p reads xpad_c[p + fy·WP + fx]; the junk columns at
        // the end of each row read the next row's start, within the plane.
        let len = (g.out_h - 1) * wg.wide_w + g.out_w;
        let run = Run {
            out_start: 0,
            in_start: 0,
            len,
        };
        return (vec![run], len);
    }
    let runs = (0..g.out_h)
        .map(|oy| Run {
            out_start: oy * wg.wide_w,
            in_start: oy * wg.padded_w,
            len: g.out_w,
        })
        .collect();
    (runs, g.out_h * wg.wide_w)
}

/// Whether [`conv_wide`] can compute `wg`'s product: stride 1, and the
/// wide grid as wide as either the padded row or the output row.
pub fn geometry_applies(wg: &WideGeometry) -> bool {
    wg.g.stride == 1 && (wg.wide_w == wg.padded_w || wg.wide_w == wg.g.out_w)
}

/// Whether a layer should compute `wg`'s product by [`conv_wide`]: for `T`
/// on this CPU, on the wide grid (OWW = WP). On the book's grid (an 8×8
/// map) the runs of 8 fill half a vector, and unrolling into `col` for
/// `gemm` is faster (see docs/performance.md).
pub fn worth_it<T: 'static>(wg: &WideGeometry) -> bool {
    cpu_applies::<T>() && geometry_applies(wg) && wg.wide_w == wg.padded_w
}

/// Whether [`conv_wide`] runs for `T` on this CPU (f32 with AVX-512).
pub fn cpu_applies<T: 'static>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::any::TypeId;
        TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Checks the slices against the geometry; a mismatch is a bug in the caller.
fn check_lengths<T>(xpad: &[T], wg: &WideGeometry, wt: &[T], filters: usize, wide: &[T]) {
    assert!(xpad.len() >= wg.padded_len(), "conv_wide: xpad too short");
    assert_eq!(wt.len(), wg.g.col_width() * filters, "conv_wide: wt");
    assert!(
        wide.len() >= filters * wg.wide_pixels(),
        "conv_wide: wide too short"
    );
    assert!(
        geometry_applies(wg),
        "conv_wide: stride 1 on a wide or book grid only"
    );
}

/// `wide: (FN, wide_pixels) = W · col` computed from `xpad` (see the module
/// documentation), with `wt` from [`weight_by_tap`]. Returns `false`, and
/// writes nothing, unless [`cpu_applies`] and [`geometry_applies`].
pub fn conv_wide<T: Float>(
    xpad: &[T],
    wg: &WideGeometry,
    wt: &[T],
    filters: usize,
    wide: &mut [T],
) -> bool {
    if !cpu_applies::<T>() || !geometry_applies(wg) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        check_lengths(xpad, wg, wt, filters, wide);
        // SAFETY: T is f32 (cpu_applies), so the casts are to the same type.
        let cast =
            |s: &[T]| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) };
        let wide =
            unsafe { std::slice::from_raw_parts_mut(wide.as_mut_ptr().cast::<f32>(), wide.len()) };
        // SAFETY: AVX-512F was detected; the lengths are checked above.
        unsafe { avx512::conv_wide(cast(xpad), wg, cast(wt), filters, wide) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xpad, wt, filters, wide);
        false
    }
}

/// [`conv_wide`]'s sums in plain Rust, one output value at a time in the
/// same order (`mul_add`, the fused multiply-add the vector kernel does):
/// the same bits, for any `T`.
pub fn conv_wide_plain<T: Float>(
    xpad: &[T],
    wg: &WideGeometry,
    wt: &[T],
    filters: usize,
    wide: &mut [T],
) {
    check_lengths(xpad, wg, wt, filters, wide);
    let g = &wg.g;
    let plane = wg.padded_h * wg.padded_w;
    let (runs, end) = runs(wg);
    for (f, row) in wide
        .chunks_exact_mut(wg.wide_pixels())
        .take(filters)
        .enumerate()
    {
        row[end..].fill(T::zero());
        for run in &runs {
            for p in 0..run.len {
                let mut sum = T::zero();
                for c in 0..g.channels {
                    for fy in 0..g.filter_h {
                        for fx in 0..g.filter_w {
                            let tap = (c * g.filter_h + fy) * g.filter_w + fx;
                            let x = xpad[c * plane + run.in_start + p + fy * wg.padded_w + fx];
                            sum = wt[tap * filters + f].mul_add(x, sum);
                        }
                    }
                }
                row[run.out_start + p] = sum;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{runs, Run, MAX_FILTER_BLOCK};
    use crate::kernels::im2col_wide::WideGeometry;
    use std::arch::x86_64::*;

    /// See [`super::conv_wide`]; the caller has checked the lengths and the CPU.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn conv_wide(
        xpad: &[f32],
        wg: &WideGeometry,
        wt: &[f32],
        filters: usize,
        wide: &mut [f32],
    ) {
        let (runs, end) = runs(wg);
        let wide_pixels = wg.wide_pixels();
        for row in wide.chunks_exact_mut(wide_pixels).take(filters) {
            row[end..].fill(0.0);
        }
        // Blocks of filters as even as possible, none over MAX_FILTER_BLOCK.
        let blocks = filters.div_ceil(MAX_FILTER_BLOCK);
        let mut first = 0;
        for b in 0..blocks {
            let size = (filters - first) / (blocks - b);
            let block = Block {
                xpad: xpad.as_ptr(),
                wg,
                wt: wt.as_ptr().add(first),
                filters,
                wide: wide.as_mut_ptr().add(first * wide_pixels),
                wide_pixels,
            };
            for &run in &runs {
                block_dispatch(&block, size, run);
            }
            first += size;
        }
    }

    /// One block of filters: pointers to its first weight and output row.
    struct Block<'a> {
        xpad: *const f32,
        wg: &'a WideGeometry,
        wt: *const f32,
        filters: usize,
        wide: *mut f32,
        wide_pixels: usize,
    }

    /// Calls [`block_run`] with the block's size as a constant.
    #[target_feature(enable = "avx512f")]
    unsafe fn block_dispatch(block: &Block<'_>, size: usize, run: Run) {
        macro_rules! sizes {
            ($($n:literal)*) => {
                match size {
                    $($n => block_run::<$n>(block, run),)*
                    _ => unreachable!("filter blocks hold 1 to {MAX_FILTER_BLOCK}"),
                }
            };
        }
        sizes!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24);
    }

    /// The `FB` filters of `block` over one run, 16 pixels at a time (the
    /// last vector masked).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block_run<const FB: usize>(block: &Block<'_>, run: Run) {
        let wg = block.wg;
        let g = &wg.g;
        let plane = wg.padded_h * wg.padded_w;
        let (fh, fw, wp) = (g.filter_h, g.filter_w, wg.padded_w);
        let mut p = 0;
        while p < run.len {
            let lanes = (run.len - p).min(16);
            let mask: __mmask16 = if lanes == 16 { !0 } else { (1u16 << lanes) - 1 };
            let mut sums = [_mm512_setzero_ps(); FB];
            let mut w = block.wt;
            for c in 0..g.channels {
                let base = block.xpad.add(c * plane + run.in_start + p);
                for fy in 0..fh {
                    for fx in 0..fw {
                        let x = _mm512_maskz_loadu_ps(mask, base.add(fy * wp + fx));
                        for (f, sum) in sums.iter_mut().enumerate() {
                            *sum = _mm512_fmadd_ps(_mm512_set1_ps(*w.add(f)), x, *sum);
                        }
                        w = w.add(block.filters);
                    }
                }
            }
            for (f, sum) in sums.iter().enumerate() {
                let out = block.wide.add(f * block.wide_pixels + run.out_start + p);
                _mm512_mask_storeu_ps(out, mask, *sum);
            }
            p += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{matmul, MatMut, MatRef};
    use crate::kernels::im2col::ConvGeometry;
    use crate::kernels::im2col_wide::{im2col_wide, pad_image};
    use crate::rng::Rng;

    fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    /// Geometries of every kind the layer meets: wide and book grids, rows
    /// rounded up to 16, filter counts that fill blocks unevenly.
    fn cases() -> Vec<(WideGeometry, usize)> {
        let shapes = [
            ((3, 7, 7), (3, 3), 1, 5),     // wide grid 9, 7 rows
            ((16, 28, 28), (3, 3), 1, 16), // deep's conv2
            ((24, 14, 14), (3, 3), 1, 48), // two blocks of 24
            ((5, 8, 8), (3, 3), 1, 64),    // book grid (8 of 10), three blocks
            ((2, 9, 11), (5, 3), 2, 25),   // a 5×3 filter, pad 2
            ((4, 6, 6), (2, 2), 0, 3),     // no padding
            ((1, 28, 28), (5, 5), 0, 30),  // SimpleConvNet's conv1 (book grid)
        ];
        shapes
            .into_iter()
            .map(|(input, filter, pad, filters)| {
                let g = ConvGeometry::new(input, filter, 1, pad).unwrap();
                (WideGeometry::new(g), filters)
            })
            .collect()
    }

    #[test]
    fn geometries_cover_both_grids() {
        let cases = cases();
        assert!(cases.iter().any(|(wg, _)| wg.wide_w == wg.padded_w));
        assert!(cases
            .iter()
            .any(|(wg, _)| wg.wide_w == wg.g.out_w && wg.padded_w != wg.g.out_w));
        assert!(cases.iter().all(|(wg, _)| geometry_applies(wg)));
        let stride_2 = ConvGeometry::new((1, 8, 8), (3, 3), 2, 1).unwrap();
        assert!(!geometry_applies(&WideGeometry::new(stride_2)));
    }

    /// The plain sums are `W · col` of the unrolled image, to rounding.
    #[test]
    fn plain_sums_are_the_product_with_col() {
        let mut rng = Rng::new(3);
        for (wg, filters) in cases() {
            let g = &wg.g;
            let x = random(g.channels * g.in_h * g.in_w, &mut rng);
            let weight = random(filters * g.col_width(), &mut rng);
            let mut xpad = vec![0.0; wg.padded_len()];
            pad_image(&x, &wg, &mut xpad);
            let mut col = vec![0.0; wg.col_len()];
            im2col_wide(&xpad, &wg, &mut col);
            let mut want = vec![0.0; filters * wg.wide_pixels()];
            matmul(
                MatMut::new(&mut want, filters, wg.wide_pixels()),
                MatRef::new(&weight, filters, g.col_width()),
                MatRef::new(&col, g.col_width(), wg.wide_pixels()),
                false,
                false,
            );
            let mut wt = Vec::new();
            weight_by_tap(&weight, filters, &mut wt);
            let mut got = vec![f32::NAN; want.len()];
            conv_wide_plain(&xpad, &wg, &wt, filters, &mut got);
            // Every value, the junk columns and the zeros past the grid too.
            for (i, (&got, &want)) in got.iter().zip(&want).enumerate() {
                let tolerance = 1e-5 * (1.0 + want.abs());
                assert!(
                    (got - want).abs() <= tolerance,
                    "{wg:?} [{i}]: {got} vs {want}"
                );
            }
        }
    }

    /// The vector kernel gives the plain sums' bits, every value of `wide`
    /// (junk columns included), and overwrites whatever `wide` held.
    #[test]
    fn vector_kernel_gives_the_plain_bits() {
        if !cpu_applies::<f32>() {
            return;
        }
        let mut rng = Rng::new(4);
        for (wg, filters) in cases() {
            let g = &wg.g;
            let x = random(g.channels * g.in_h * g.in_w, &mut rng);
            let weight = random(filters * g.col_width(), &mut rng);
            let mut xpad = vec![0.0; wg.padded_len()];
            pad_image(&x, &wg, &mut xpad);
            let mut wt = Vec::new();
            weight_by_tap(&weight, filters, &mut wt);
            let mut plain = vec![0.0; filters * wg.wide_pixels()];
            conv_wide_plain(&xpad, &wg, &wt, filters, &mut plain);
            let mut fast = vec![f32::NAN; plain.len()];
            assert!(conv_wide(&xpad, &wg, &wt, filters, &mut fast));
            let same = plain
                .iter()
                .zip(&fast)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{wg:?} {filters}");
        }
        // f64 is not this kernel's: the caller unrolls instead.
        let (wg, filters) = cases()[0];
        let xpad = vec![0.0f64; wg.padded_len()];
        let wt = vec![0.0f64; wg.g.col_width() * filters];
        let mut wide = vec![0.0f64; filters * wg.wide_pixels()];
        assert!(!conv_wide(&xpad, &wg, &wt, filters, &mut wide));
    }
}
