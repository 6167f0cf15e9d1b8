//! A stride-1 convolution's weight gradient (book §7.4.3, `dW = dout ·
//! col^T`) computed from the padded image itself, without `col`, for the
//! layers with few channels (one, for a network's first layer).
//!
//! On the wide grid ([`crate::kernels::im2col_wide`], OWW = WP), row `k` =
//! (c, fy, fx) of `col` is the padded plane `c` read from offset
//! `off(k) = c·HP·WP + fy·WP + fx`, so each value of `dW` is one dot
//! product of a row of `dout` with a shifted run of the image:
//!
//! ```text
//! dW[f, k] = Σ_p wide[f, p] · xpad[off(k) + p]      p < run = (OH−1)·WP + OW
//! ```
//!
//! (past `run` the wide grid holds only zeros, and the image ends). The
//! kernel keeps a block of filters × taps of these sums in vector
//! registers, 16 pixels per lane, over the whole run: per step it loads
//! each filter's `dout` and each tap's image run once and does every
//! product of the block. The 16 lanes of each sum are added to a buffer
//! image after image ([`add_image`]) and folded into `dW^T` at the end of
//! the batch's chunk ([`finish`]), always in the same order, so the result
//! does not depend on the number of threads.
//!
//! Why: for a first layer, `dW^T = col · wide^T` is a product of 25 rows
//! (5×5 taps) by 30 columns (filters) over 672 pixels, a shape on which
//! `gemm` (after unrolling `col` and packing both sides) reaches a fraction
//! of what the same multiplications take here.

use crate::kernels::direct_conv::cpu_applies;
use crate::kernels::im2col_wide::WideGeometry;
use crate::kernels::reduce::add_lanes;
use crate::tensor::Float;

/// Lanes per partial sum: an AVX-512 register of f32, added at the end
/// in [`add_lanes`]'s fixed tree.
pub const LANES: usize = crate::kernels::reduce::LANES;

/// Filters per register block.
const MAX_FILTER_BLOCK: usize = 5;

/// Taps per register block (with [`MAX_FILTER_BLOCK`]: 25 sums, 5 `dout`
/// vectors and one image vector in the 32 registers; a first layer's 30
/// filters × 25 taps then split into whole 5 × 5 blocks).
const MAX_TAP_BLOCK: usize = 5;

/// Whether the kernel runs for `T` on this CPU and on `wg`: f32 with
/// AVX-512, stride 1 on the wide grid.
pub fn applies<T: 'static>(wg: &WideGeometry) -> bool {
    cpu_applies::<T>() && wg.g.stride == 1 && wg.wide_w == wg.padded_w
}

/// Values of the buffer of partial sums: `FN · C·FH·FW ·` [`LANES`].
pub fn lanes_len(wg: &WideGeometry, filters: usize) -> usize {
    filters * wg.g.col_width() * LANES
}

/// One image's products into `lanes: (FN, C·FH·FW, LANES)`: written if
/// `first`, else added. `xpad: (C, HP, WP)` is the padded image and `wide:
/// (FN, wide_pixels)` its `dout` on the wide grid (zeros in the junk
/// columns). Panics unless [`applies`].
pub fn add_image<T: Float>(
    xpad: &[T],
    wg: &WideGeometry,
    wide: &[T],
    filters: usize,
    lanes: &mut [T],
    first: bool,
) {
    assert!(
        applies::<T>(wg),
        "direct_dw: not f32 with AVX-512 on the wide grid"
    );
    let g = &wg.g;
    assert!(xpad.len() >= wg.padded_len());
    assert!(wide.len() >= filters * wg.wide_pixels());
    assert_eq!(lanes.len(), lanes_len(wg, filters));
    let image = |xpad: *const f32, wide: *const f32| avx512::Image {
        xpad,
        wide,
        wide_stride: wg.wide_pixels(),
        run: (g.out_h - 1) * wg.padded_w + g.out_w,
        taps: g.col_width(),
        plane: wg.padded_h * wg.padded_w,
        row: wg.padded_w,
        filter_w: g.filter_w,
        filter_taps: g.filter_h * g.filter_w,
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: T is f32 (applies), so the casts are to the same type;
    // AVX-512F was detected; every tap's run lies in `xpad` (its last value
    // is the padded image's last), every filter's in `wide`, and `lanes`
    // holds FN · taps · LANES values (checked above).
    unsafe {
        let lanes = std::slice::from_raw_parts_mut(lanes.as_mut_ptr().cast::<f32>(), lanes.len());
        let image = image(xpad.as_ptr().cast::<f32>(), wide.as_ptr().cast::<f32>());
        // The last tap's run ends at the padded image's last value.
        debug_assert_eq!(
            image.tap_offset(image.taps - 1) + image.run,
            wg.padded_len()
        );
        avx512::add_image(&image, filters, lanes, first);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (image, first);
        unreachable!("applies() is false off x86_64");
    }
}

/// `lanes: (FN, K, LANES)` → `dw_t: (K, FN)`, each sum's lanes added in
/// order: the chunk's `dW^T`, as the `gemm` route writes it.
pub fn finish<T: Float>(lanes: &[T], taps: usize, filters: usize, dw_t: &mut [T]) {
    assert_eq!(lanes.len(), filters * taps * LANES);
    assert_eq!(dw_t.len(), taps * filters);
    for (f, sums) in lanes.chunks_exact(taps * LANES).enumerate() {
        for (k, lanes) in sums.chunks_exact(LANES).enumerate() {
            let lanes: [T; LANES] = lanes.try_into().expect("LANES values");
            dw_t[k * filters + f] = add_lanes(lanes);
        }
    }
}

/// Sizes from 1 to `max` as even as possible, for `count` things.
fn blocks(count: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let n = count.div_ceil(max);
    let mut first = 0;
    (0..n).map(move |b| {
        let size = (count - first) / (n - b);
        let block = (first, size);
        first += size;
        block
    })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{blocks, LANES, MAX_FILTER_BLOCK, MAX_TAP_BLOCK};
    use std::arch::x86_64::*;

    /// One image: its padded planes, its `dout` rows on the wide grid.
    pub(super) struct Image {
        pub xpad: *const f32,
        pub wide: *const f32,
        pub wide_stride: usize,
        pub run: usize,
        /// K = C·FH·FW taps, each a padded plane read from its offset.
        pub taps: usize,
        pub plane: usize,
        pub row: usize,
        pub filter_w: usize,
        pub filter_taps: usize,
    }

    impl Image {
        /// Where tap k = (c, fy, fx) reads the padded image: `c·HP·WP +
        /// fy·WP + fx`.
        pub(super) fn tap_offset(&self, k: usize) -> usize {
            let (c, in_filter) = (k / self.filter_taps, k % self.filter_taps);
            c * self.plane + (in_filter / self.filter_w) * self.row + in_filter % self.filter_w
        }
    }

    /// Every (filter block, tap block) of the image, filters outermost so
    /// that a block's `dout` rows stay in the L1 cache over the taps.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_image(image: &Image, filters: usize, lanes: &mut [f32], first: bool) {
        for (f0, fb) in blocks(filters, MAX_FILTER_BLOCK) {
            for (k0, kb) in blocks(image.taps, MAX_TAP_BLOCK) {
                let block = Block {
                    image,
                    f0,
                    k0,
                    lanes: lanes.as_mut_ptr(),
                    first,
                };
                macro_rules! sizes {
                    ($(($f:literal, $k:literal))*) => {
                        match (fb, kb) {
                            $(($f, $k) => block_sums::<$f, $k>(&block),)*
                            _ => unreachable!("blocks of 1 to {MAX_FILTER_BLOCK} × 1 to {MAX_TAP_BLOCK}"),
                        }
                    };
                }
                sizes!(
                    (1, 1)(1, 2)(1, 3)(1, 4)(1, 5)(2, 1)(2, 2)(2, 3)(2, 4)(2, 5)(3, 1)(3, 2)(3, 3)(
                        3, 4
                    )(3, 5)(4, 1)(4, 2)(4, 3)(4, 4)(4, 5)(5, 1)(5, 2)(5, 3)(
                        5, 4
                    )(5, 5)
                );
            }
        }
    }

    struct Block<'a> {
        image: &'a Image,
        f0: usize,
        k0: usize,
        lanes: *mut f32,
        first: bool,
    }

    /// One vector of the run at `p` into the block's sums: a whole one,
    /// or with `MASKED` the last, partial one, loaded under `mask` (the
    /// lanes past the run are zeros, so they add nothing).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn step<const FB: usize, const KB: usize, const MASKED: bool>(
        sums: &mut [[__m512; KB]; FB],
        dout: &[*const f32; FB],
        x: &[*const f32; KB],
        p: usize,
        mask: __mmask16,
    ) {
        // (Loops, not closures: a closure does not inherit the target
        // feature, and out of line its intrinsics become calls.)
        let mut g = [_mm512_setzero_ps(); FB];
        for (g, dout) in g.iter_mut().zip(dout) {
            *g = if MASKED {
                _mm512_maskz_loadu_ps(mask, dout.add(p))
            } else {
                _mm512_loadu_ps(dout.add(p))
            };
        }
        for t in 0..KB {
            let xv = if MASKED {
                _mm512_maskz_loadu_ps(mask, x[t].add(p))
            } else {
                _mm512_loadu_ps(x[t].add(p))
            };
            for f in 0..FB {
                sums[f][t] = _mm512_fmadd_ps(g[f], xv, sums[f][t]);
            }
        }
    }

    /// `FB` filters × `KB` taps: the sums over the run in registers, the
    /// last step masked, then written or added to their lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block_sums<const FB: usize, const KB: usize>(b: &Block) {
        let im = b.image;
        let mut sums = [[_mm512_setzero_ps(); KB]; FB];
        let mut dout = [im.wide; FB];
        for (f, dout) in dout.iter_mut().enumerate() {
            *dout = im.wide.add((b.f0 + f) * im.wide_stride);
        }
        let mut x = [im.xpad; KB];
        for (t, x) in x.iter_mut().enumerate() {
            *x = im.xpad.add(im.tap_offset(b.k0 + t));
        }
        // Whole vectors, then the last one masked: a masked load takes an
        // arithmetic port as well on the CPUs measured, which the FMAs need
        // (docs/performance.md).
        let mut p = 0;
        while p + LANES <= im.run {
            step::<FB, KB, false>(&mut sums, &dout, &x, p, 0);
            p += LANES;
        }
        if p < im.run {
            let mask: __mmask16 = (1u16 << (im.run - p)) - 1;
            step::<FB, KB, true>(&mut sums, &dout, &x, p, mask);
        }
        for (f, sums_f) in sums.iter().enumerate() {
            for (t, &sum) in sums_f.iter().enumerate() {
                let at = b.lanes.add(((b.f0 + f) * im.taps + b.k0 + t) * LANES);
                let sum = if b.first {
                    sum
                } else {
                    _mm512_add_ps(_mm512_loadu_ps(at), sum)
                };
                _mm512_storeu_ps(at, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::ConvGeometry;
    use crate::kernels::im2col_wide::{pad_image, widen};
    use crate::rng::Rng;

    /// Against the definition in f64, `dW[f, c, fy, fx] = Σ dout[f, oy, ox]
    /// · x[c, oy + fy − P, ox + fx − P]`, over two images added, for the
    /// first layers of `simple`, `lenet5` and `deep`, LeNet-5's C3 and odd
    /// sizes (runs not a multiple of 16 and one that is, one filter, one tap
    /// row).
    #[test]
    fn the_gradient_matches_the_definition() {
        if !cpu_applies::<f32>() {
            return; // no AVX-512 here
        }
        let mut rng = Rng::new(11);
        let cases = [
            ((1, 28, 28), 30, 5, 0),
            ((1, 28, 28), 6, 5, 2),
            ((6, 14, 14), 16, 5, 0),
            ((1, 28, 28), 16, 3, 1),
            ((3, 9, 11), 7, 3, 1),
            ((2, 5, 7), 1, 1, 0),
            ((1, 6, 6), 5, 6, 0),
            // A run of whole vectors (64 pixels), no masked step.
            ((1, 4, 16), 5, 1, 0),
        ];
        for ((c, h, w), filters, size, pad) in cases {
            let g = ConvGeometry::new((c, h, w), (size, size), 1, pad).unwrap();
            let wg = WideGeometry::new(g);
            if !applies::<f32>(&wg) {
                // The book's first layer and the run of whole vectors must run.
                assert!(!matches!((c, h, w, size), (1, 28, 28, 5) | (1, 4, 16, 1)));
                continue;
            }
            let k = g.col_width();
            let mut lanes = vec![f32::NAN; lanes_len(&wg, filters)];
            let mut want = vec![0.0f64; filters * k];
            for image in 0..2 {
                let x: Vec<f32> = (0..g.image_len()).map(|_| rng.normal() as f32).collect();
                let dout: Vec<f32> = (0..filters * g.out_pixels())
                    .map(|_| rng.normal() as f32)
                    .collect();
                let mut xpad = vec![0.0; wg.padded_len()];
                pad_image(&x, &wg, &mut xpad);
                let mut wide = vec![f32::NAN; filters * wg.wide_pixels()];
                widen(&dout, &wg, &mut wide);
                add_image(&xpad, &wg, &wide, filters, &mut lanes, image == 0);
                for (f, ch, fy, fx) in (0..filters).flat_map(|f| {
                    (0..c).flat_map(move |ch| {
                        (0..size).flat_map(move |fy| (0..size).map(move |fx| (f, ch, fy, fx)))
                    })
                }) {
                    let mut s = 0.0;
                    for oy in 0..g.out_h {
                        for ox in 0..g.out_w {
                            let (y, x_) = (
                                (oy + fy) as isize - pad as isize,
                                (ox + fx) as isize - pad as isize,
                            );
                            if y < 0 || x_ < 0 || y >= h as isize || x_ >= w as isize {
                                continue;
                            }
                            let v = x[(ch * h + y as usize) * w + x_ as usize] as f64;
                            s += dout[(f * g.out_h + oy) * g.out_w + ox] as f64 * v;
                        }
                    }
                    want[f * k + (ch * size + fy) * size + fx] += s;
                }
            }
            let mut dw_t = vec![0.0f32; k * filters];
            finish(&lanes, k, filters, &mut dw_t);
            for f in 0..filters {
                for kk in 0..k {
                    let (got, want) = (dw_t[kk * filters + f] as f64, want[f * k + kk]);
                    let scale = 1.0 + want.abs();
                    assert!(
                        (got - want).abs() <= 1e-4 * scale,
                        "{c}×{h}×{w}, {filters} filters {size}×{size} pad {pad}: dW[{f}, {kk}] = {got}, want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_cover_the_range_evenly() {
        let sizes: Vec<_> = blocks(30, 4).collect();
        assert_eq!(
            sizes.iter().map(|b| b.1).collect::<Vec<_>>(),
            [3, 3, 4, 4, 4, 4, 4, 4]
        );
        assert_eq!(sizes[0].0, 0);
        assert!(sizes.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        assert_eq!(
            blocks(25, 6).map(|b| b.1).collect::<Vec<_>>(),
            [5, 5, 5, 5, 5]
        );
        // A first layer's 30 filters × 25 taps in the kernel's blocks.
        assert_eq!(
            blocks(30, MAX_FILTER_BLOCK)
                .map(|b| b.1)
                .collect::<Vec<_>>(),
            [5; 6]
        );
        assert_eq!(
            blocks(25, MAX_TAP_BLOCK).map(|b| b.1).collect::<Vec<_>>(),
            [5; 5]
        );
        assert_eq!(blocks(0, 6).count(), 0);
    }
}
