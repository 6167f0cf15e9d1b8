//! The convolution's weight gradient `dW = dout · col^T` (book §7.4.3)
//! without unrolling the image again, for stride 1 on the wide grid
//! ([`crate::kernels::im2col_wide`]).
//!
//! On the wide grid, row (c, fy, fx) of `col` is the padded channel plane
//! read from offset `fy·WP + fx`. With the padded image channels-last
//! instead, `xhwc[(y·WP + x)·C + c]`, the FW·C rows (fx, c) of one filter
//! row fy form a single strided view of it: row (fx, c) starts at
//! `fy·WP·C + fx·C + c` and pixel p is `p·C` further on. So each filter
//! row's part of `dW` is one product that reads the image in place:
//!
//! ```text
//! xpad: (C, HP, WP)  →  xhwc: (HP·WP, C), then zeros     the kept padded image, transposed
//! dW[:, fy, :, :] += wide · X_fy                         (FN, FW·C) for fy = 0 .. FH−1
//!   wide: (FN, OH·OWW)   dout on the wide grid, zeros in the junk columns
//!   X_fy: (OH·OWW, FW·C) X_fy[p, fx·C + c] = xhwc[(fy·WP + p)·C + fx·C + c]
//! ```
//!
//! `dW` comes out as `(FN, FH, FW, C)`; backward reorders it to the
//! layer's `(FN, C, FH, FW)` when it adds the chunks' partial sums.
//!
//! Why: `dW^T = col · wide^T` ran on `gemm`'s narrowest kernel (16 rows, as
//! many as `deep`'s first layers have filters), after a full unrolling of
//! the image. Here `gemm` runs FW·C rows (48 for 16 channels) straight out
//! of `xhwc`, and the transposition costs less than the unrolling. For
//! `deep`'s conv3 and conv4 the sums are the same to the bit as through
//! `col`; for conv2 (848 pixels) they differ in the last place, as `gemm`
//! blocks the long sum differently. Where the channels are not a multiple
//! of 16 (fashion-fast's 24), the products run by
//! [`row_product`](crate::kernels::row_product) instead, which packs
//! nothing and was faster there.

use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::im2col_wide::WideGeometry;
use crate::kernels::row_product::{self, RowProduct};
use crate::kernels::transpose_into;
use crate::tensor::Float;

/// Whether the weight gradient takes this route: stride 1 on the wide
/// grid (one contiguous run per `col` row), and FW·C a multiple of
/// [`ROW_MULTIPLE`] (conv1 of `deep`, with 1 channel, is not).
pub(super) fn applies(wg: &WideGeometry) -> bool {
    let g = &wg.g;
    g.stride == 1
        && wg.wide_w == wg.padded_w
        && (g.filter_w * g.channels).is_multiple_of(ROW_MULTIPLE)
}

/// Values of one channels-last image: `C · (OH·OWW + (FH−1)·WP + FW − 1)`,
/// the last filter row's view included (never more than `col_len`, so the
/// `col` buffer, unused on this route, holds it).
pub(super) fn channels_last_len(wg: &WideGeometry) -> usize {
    let g = &wg.g;
    g.channels * (wg.wide_pixels() + (g.filter_h - 1) * wg.padded_w + g.filter_w - 1)
}

/// `xpad: (C, HP, WP)` → `xhwc: (HP·WP, C)`, zeros after it: the transpose
/// of the `C × HP·WP` matrix ([`transpose_into`], by tiles).
pub(super) fn to_channels_last<T: Float>(xpad: &[T], wg: &WideGeometry, xhwc: &mut [T]) {
    let channels = wg.g.channels;
    let plane = wg.padded_h * wg.padded_w;
    let (body, tail) = xhwc[..channels_last_len(wg)].split_at_mut(plane * channels);
    transpose_into(&xpad[..plane * channels], channels, plane, body);
    tail.fill(T::zero());
}

/// What FW·C, the length of `X_fy`'s rows, must be a multiple of for this
/// route: half an AVX-512 register. `gemm` reads any row length correctly;
/// the layers with other lengths (a one-channel first layer, LeNet-5's C3)
/// take the direct weight gradient ([`crate::kernels::direct_dw`]), which
/// is faster there; at 72 (24 channels) this route was faster, then with
/// `gemm` (docs/performance.md, *Figures behind the source comments*), and
/// its products now run by [`row_product`](crate::kernels::row_product).
pub(super) const ROW_MULTIPLE: usize = 8;

/// `dw: (FN, FH, FW, C) += wide · X_fy` for each filter row (see the module
/// documentation), `wide: (FN, wide_pixels)`; `=` instead of `+=` unless
/// `accumulate`.
pub(super) fn accumulate_dw<T: Float>(
    wg: &WideGeometry,
    xhwc: &[T],
    wide: &[T],
    dw: &mut [T],
    accumulate: bool,
) {
    let g = &wg.g;
    let (k, pixels) = (g.col_width(), wg.wide_pixels());
    let filters = dw.len() / k;
    let row_len = g.filter_w * g.channels;
    let shape = RowProduct {
        filters,
        pixels,
        len: row_len,
        x_row: g.channels,
        out_row: k,
    };
    let by_rows = row_product::worth_it::<T>(g.channels);
    for fy in 0..g.filter_h {
        let x_fy = &xhwc[fy * wg.padded_w * g.channels..];
        let out = &mut dw[fy * row_len..];
        if by_rows && row_product::product(&shape, wide, x_fy, out, accumulate) {
            continue;
        }
        matmul(
            MatMut::with_row_stride(out, filters, row_len, k),
            MatRef::new(wide, filters, pixels),
            MatRef::strided(x_fy, pixels, row_len, g.channels, 1),
            accumulate,
            false,
        );
    }
}

/// `dw: (FN, FH, FW, C)` written into `grad: (FN, C, FH, FW)`, the layer's
/// order: each filter's `(FH·FW, C)` block transposed.
pub(super) fn reorder<T: Float>(wg: &WideGeometry, dw: &[T], grad: &mut [T]) {
    let g = &wg.g;
    let (k, taps) = (g.col_width(), g.filter_h * g.filter_w);
    for (dw_f, grad_f) in dw.chunks_exact(k).zip(grad.chunks_exact_mut(k)) {
        transpose_into(dw_f, taps, g.channels, grad_f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::ConvGeometry;
    use crate::kernels::im2col_wide::{im2col_wide, pad_image, widen};
    use crate::rng::Rng;

    /// The channels-last `dW` equals `dW^T = col · wide^T`, reordered, in
    /// f64 (to rounding: the sums are the same, `gemm` may block them
    /// differently), on the wide-grid layers it applies to.
    #[test]
    fn equals_the_unrolled_product() {
        let mut rng = Rng::new(11);
        // (C, H, pad, FN): deep's conv3 and conv4 shapes, fashion-fast's
        // conv3 (FW·C = 72), and an odd size.
        for (c, h, pad, filters) in [
            (16, 14, 1, 32),
            (32, 14, 2, 8),
            (24, 14, 1, 48),
            (16, 23, 1, 3),
        ] {
            let g = ConvGeometry::new((c, h, h), (3, 3), 1, pad).unwrap();
            let wg = WideGeometry::new(g);
            assert!(applies(&wg), "{c}×{h}×{h}");
            let x: Vec<f64> = (0..g.image_len()).map(|_| rng.normal()).collect();
            let dout: Vec<f64> = (0..filters * g.out_pixels())
                .map(|_| rng.normal())
                .collect();
            let mut xpad = vec![f64::NAN; wg.padded_len()];
            pad_image(&x, &wg, &mut xpad);
            let mut wide = vec![f64::NAN; filters * wg.wide_pixels()];
            widen(&dout, &wg, &mut wide);
            let k = g.col_width();

            let mut col = vec![f64::NAN; wg.col_len()];
            im2col_wide(&xpad, &wg, &mut col);
            let mut dw_t = vec![0.0; k * filters];
            let wide_t = MatRef::new(&wide, filters, wg.wide_pixels()).t();
            let col_m = MatRef::new(&col, k, wg.wide_pixels());
            matmul(
                MatMut::new(&mut dw_t, k, filters),
                col_m,
                wide_t,
                false,
                false,
            );

            // Garbage in the buffer: every value the products read is written.
            let mut xhwc = vec![f64::NAN; channels_last_len(&wg)];
            assert!(xhwc.len() <= wg.col_len());
            to_channels_last(&xpad, &wg, &mut xhwc);
            // Garbage in dw too: the first product writes it, the second adds.
            let mut dw = vec![f64::NAN; filters * k];
            accumulate_dw(&wg, &xhwc, &wide, &mut dw, false);
            accumulate_dw(&wg, &xhwc, &wide, &mut dw, true);
            dw.iter_mut().for_each(|v| *v /= 2.0);
            let mut grad = vec![f64::NAN; filters * k];
            reorder(&wg, &dw, &mut grad);
            for f in 0..filters {
                for j in 0..k {
                    let want = dw_t[j * filters + f];
                    let got = grad[f * k + j];
                    assert!(
                        (got - want).abs() < 1e-12,
                        "{c}×{h}: dW[{f}, {j}] {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn applies_only_to_the_wide_grid_with_rows_of_eights() {
        let wg =
            |c, h, f, s, p| WideGeometry::new(ConvGeometry::new((c, h, h), (f, f), s, p).unwrap());
        assert!(applies(&wg(16, 28, 3, 1, 1))); // deep's conv2
        assert!(applies(&wg(24, 14, 3, 1, 1))); // fashion-fast's conv3: FW·C = 72
        assert!(!applies(&wg(6, 10, 5, 1, 0))); // LeNet-5's C3: FW·C = 30
        assert!(!applies(&wg(1, 28, 3, 1, 1))); // conv1: FW·C = 3
        assert!(!applies(&wg(64, 8, 3, 1, 1))); // 8×8: the book's grid
        assert!(!applies(&wg(16, 28, 3, 2, 1))); // stride 2
    }
}
