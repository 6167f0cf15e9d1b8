//! im2col over a zero-padded image with rows as wide as the padded input: the
//! unrolling the [`Convolution`](crate::layers::Convolution) layer uses.
//!
//! The book's im2col ([`im2col`](crate::im2col)) copies every window, which
//! for a 3×3 filter means thousands of short runs per image (one per output
//! row and filter tap) and as much time in copying as in the matrix product.
//! If the image is padded first, and the output grid is computed as wide as
//! the padded row, then each row of `col` is a single run through the padded
//! channel plane:
//!
//! ```text
//! stride 1:
//! xpad: (C, HP, WP)       HP = H + 2P,  WP = W + 2P
//! OWW = WP                output columns per row, of which the last OWW − OW = FW − 1 are junk
//! col:  (C·FH·FW, OH·OWW)
//!
//! col[(c, fy, fx), oy·OWW + ox] = xpad[c, oy + fy, ox + fx]
//!                               = xpad_c[fy·WP + fx + (oy·OWW + ox)]
//! ```
//!
//! so each row of `col` is one contiguous copy. The product `W · col` then
//! gives an output `(FN, OH·OWW)` whose junk columns ([`narrow`] drops them)
//! cost `OWW/OW − 1` more work: 7 % for a 3×3 filter on 28×28, 25 % on 8×8.
//! Backward runs the same way: [`widen`] puts `dout` on the wide grid with
//! zeros in the junk columns, so they add nothing to `dW` or `dcol`, and
//! [`col2im_wide`], the adjoint of [`im2col_wide`], adds each row of `dcol`
//! back as one run.
//!
//! Where the junk would cost more than the copies save — more than a
//! sixth of extra columns, as for a 3×3 filter on an 8×8 map (OWW/OW =
//! 10/8) or a 5×5 filter on a 14×14 map (14/10) — and for strides above 1,
//! the grid keeps OWW = OW: each row of `col` is then OH runs (with step S)
//! out of the padded plane, the book's layout, still without any bounds
//! checks. (`deep`'s 8×8 layers took the wide grid until a quarter more
//! columns was the limit; on the book's grid their products run 10–40 %
//! faster, 64 columns being exactly one block of `gemm`'s kernel where 80
//! leave a narrow remainder, and that outweighs the eight runs per row.)
//!
//! Each row of `col` (and of the wide output) is then rounded up to a
//! multiple of 16 values, with zeros at the end, where that adds at most an
//! eighth: the `gemm` crate reads `col` in place only when its length is a
//! multiple of the SIMD width, and otherwise first copies ("packs") all of
//! it. On `deep`'s second layer (28 rows of 30: 840 → 848) that copy made
//! the product 1.3–1.6× slower.
//!
//! ```
//! use convnet::im2col::ConvGeometry;
//! use convnet::im2col_wide::{im2col_wide, pad_image, WideGeometry};
//! // One 7×7 image, a 2×2 filter, stride 1, no padding: OW = 6, OWW = 7.
//! let g = WideGeometry::new(ConvGeometry::new((1, 7, 7), (2, 2), 1, 0).unwrap());
//! assert_eq!((g.g.out_w, g.wide_w), (6, 7));
//! let x: Vec<f32> = (1..=49).map(|v| v as f32).collect();
//! let mut xpad = vec![0.0; g.padded_len()];
//! pad_image(&x, &g, &mut xpad);
//! let mut col = vec![0.0; g.col_len()];
//! im2col_wide(&xpad, &g, &mut col);
//! // Tap (0, 0) sees 1 to 6 in output row 0 and 8 to 13 in row 1; the
//! // junk column between them holds the 7 the copy runs over.
//! let want: Vec<f32> = (1..=14).map(|v| v as f32).collect();
//! assert_eq!(col[..14], want[..]);
//! ```

use crate::im2col::ConvGeometry;
use crate::tensor::Float;

/// A [`ConvGeometry`] with the padded plane and the wide output grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WideGeometry {
    pub g: ConvGeometry,
    /// HP = H + 2P
    pub padded_h: usize,
    /// WP = W + 2P
    pub padded_w: usize,
    /// OWW ≥ OW, output columns per row of the wide grid: WP for stride 1
    /// when WP ≤ 7/6·OW, OW otherwise.
    pub wide_w: usize,
}

/// Row lengths the `gemm` crate reads in place (16 `f32` in an AVX-512
/// register); see the module documentation.
pub const ROW_ALIGN: usize = 16;

impl WideGeometry {
    pub fn new(g: ConvGeometry) -> Self {
        let padded_w = g.in_w + 2 * g.pad;
        // One run per col row, if the junk columns it brings are few.
        let wide_w = if g.stride == 1 && 6 * padded_w <= 7 * g.out_w {
            padded_w
        } else {
            g.out_w
        };
        WideGeometry {
            g,
            padded_h: g.in_h + 2 * g.pad,
            padded_w,
            wide_w,
        }
    }

    /// The geometry of a band of output rows `rows` (`oy` from `rows.start`
    /// to `rows.end`) computed on its own: its input is the padded rows the
    /// band reads, `(rows.len() − 1)·S + FH` of them, already padded (see
    /// [`pad_band`]). Its `col` and output are the band's pixels of the
    /// whole image's.
    ///
    /// The band's grid is as wide as the whole's, unless the book's grid
    /// (OWW = OW, one run per output row) has at least a fifth fewer
    /// columns. A band of 4 rows of an 8×8 map (on the book's grid, like
    /// the whole map) is 32 columns, a multiple of 16 that `gemm` reads in
    /// place, instead of 40.
    ///
    /// ```
    /// use convnet::im2col::ConvGeometry;
    /// use convnet::im2col_wide::WideGeometry;
    /// let wg = WideGeometry::new(ConvGeometry::new((16, 28, 28), (3, 3), 1, 1).unwrap());
    /// let band = wg.band(14..28);
    /// assert_eq!((band.padded_h, band.padded_w, band.g.out_h), (16, 30, 14));
    /// assert_eq!((band.wide_w, band.wide_pixels()), (30, 432));
    /// let wg = WideGeometry::new(ConvGeometry::new((64, 8, 8), (3, 3), 1, 1).unwrap());
    /// assert_eq!((wg.wide_w, wg.wide_pixels()), (8, 64));
    /// assert_eq!((wg.band(0..4).wide_w, wg.band(0..4).wide_pixels()), (8, 32));
    /// ```
    pub fn band(&self, rows: std::ops::Range<usize>) -> Self {
        let g = &self.g;
        let band_h = (rows.len() - 1) * g.stride + g.filter_h;
        let band = WideGeometry::new(ConvGeometry {
            in_h: band_h,
            in_w: self.padded_w,
            pad: 0,
            out_h: rows.len(),
            ..*g
        });
        let narrow = WideGeometry {
            wide_w: g.out_w,
            ..band
        };
        if 5 * narrow.wide_pixels() <= 4 * band.wide_pixels() {
            narrow
        } else {
            band
        }
    }

    /// Values in one padded image: `C · HP · WP`.
    pub fn padded_len(&self) -> usize {
        self.g.channels * self.padded_h * self.padded_w
    }

    /// Columns of `col` and of the wide output: the `OH · OWW` pixels of
    /// the wide grid, rounded up to a multiple of [`ROW_ALIGN`] with zeros
    /// when that adds at most an eighth.
    pub fn wide_pixels(&self) -> usize {
        let grid = self.grid_pixels();
        let aligned = grid.next_multiple_of(ROW_ALIGN);
        if 8 * (aligned - grid) <= grid {
            aligned
        } else {
            grid
        }
    }

    /// Pixels of the wide grid itself, `OH · OWW`.
    fn grid_pixels(&self) -> usize {
        self.g.out_h * self.wide_w
    }

    /// Values in one image's wide `col`: `C·FH·FW · wide_pixels`.
    pub fn col_len(&self) -> usize {
        self.g.col_width() * self.wide_pixels()
    }

    /// Whether each `col` row is one run through the plane (else OH runs).
    fn one_run(&self) -> bool {
        self.g.stride == 1 && self.wide_w == self.padded_w
    }

    /// With [`one_run`](Self::one_run), the first `run` columns of each `col`
    /// row come from the plane; the rest of the last output row is past it
    /// and reads as zero.
    fn run(&self) -> usize {
        (self.g.out_h - 1) * self.wide_w + self.g.out_w
    }
}

/// `x: (C, H, W)` → `xpad: (C, HP, WP)`, the image in the middle of a zero border.
pub fn pad_image<T: Float>(x: &[T], wg: &WideGeometry, xpad: &mut [T]) {
    let g = &wg.g;
    let (p, wp) = (g.pad, wg.padded_w);
    let planes = xpad[..wg.padded_len()].chunks_exact_mut(wg.padded_h * wp);
    for (xpad_c, x_c) in planes.zip(x.chunks_exact(g.in_h * g.in_w)) {
        // Top border, then each row with its left and right border, then the bottom.
        xpad_c[..p * wp].fill(T::zero());
        for (iy, src) in x_c.chunks_exact(g.in_w).enumerate() {
            let row = &mut xpad_c[(iy + p) * wp..][..wp];
            row[..p].fill(T::zero());
            row[p..p + g.in_w].copy_from_slice(src);
            row[p + g.in_w..].fill(T::zero());
        }
        xpad_c[(g.in_h + p) * wp..].fill(T::zero());
    }
}

/// [`pad_image`] for the band of output rows `rows` only: `x: (C, H, W)` →
/// `xpad: (C, (rows.len() − 1)·S + FH, WP)`, the padded rows those output
/// rows read (geometry [`WideGeometry::band`]), every element overwritten.
pub fn pad_band<T: Float>(
    x: &[T],
    wg: &WideGeometry,
    rows: std::ops::Range<usize>,
    xpad: &mut [T],
) {
    let g = &wg.g;
    let (p, wp) = (g.pad, wg.padded_w);
    let band = wg.band(rows.clone());
    let first_row = rows.start * g.stride;
    let planes = xpad[..band.padded_len()].chunks_exact_mut(band.padded_h * wp);
    for (xpad_c, x_c) in planes.zip(x.chunks_exact(g.in_h * g.in_w)) {
        for (r, row) in xpad_c.chunks_exact_mut(wp).enumerate() {
            // Padded row first_row + r is input row first_row + r − P, if any.
            match (first_row + r).checked_sub(p).filter(|&iy| iy < g.in_h) {
                Some(iy) => {
                    row[..p].fill(T::zero());
                    row[p..p + g.in_w].copy_from_slice(&x_c[iy * g.in_w..][..g.in_w]);
                    row[p + g.in_w..].fill(T::zero());
                }
                None => row.fill(T::zero()),
            }
        }
    }
}

/// The adjoint of [`pad_image`]: the middle of `xpad`, back to `x: (C, H, W)`.
pub fn unpad_image<T: Float>(xpad: &[T], wg: &WideGeometry, x: &mut [T]) {
    let g = &wg.g;
    let (p, wp) = (g.pad, wg.padded_w);
    let planes = xpad[..wg.padded_len()].chunks_exact(wg.padded_h * wp);
    for (xpad_c, x_c) in planes.zip(x.chunks_exact_mut(g.in_h * g.in_w)) {
        for (iy, dst) in x_c.chunks_exact_mut(g.in_w).enumerate() {
            dst.copy_from_slice(&xpad_c[(iy + p) * wp + p..][..g.in_w]);
        }
    }
}

/// `xpad: (C, HP, WP)` → `col: (C·FH·FW, wide_pixels)`, every element overwritten.
pub fn im2col_wide<T: Float>(xpad: &[T], wg: &WideGeometry, col: &mut [T]) {
    let g = &wg.g;
    let (plane, run, s) = (wg.padded_h * wg.padded_w, wg.run(), g.stride);
    let mut rows = col[..wg.col_len()].chunks_exact_mut(wg.wide_pixels());
    for xpad_c in xpad[..wg.padded_len()].chunks_exact(plane) {
        for fy in 0..g.filter_h {
            for fx in 0..g.filter_w {
                let row = rows.next().expect("col has C·FH·FW rows");
                let src = &xpad_c[fy * wg.padded_w + fx..];
                if wg.one_run() {
                    row[..run].copy_from_slice(&src[..run]);
                    row[run..].fill(T::zero());
                    continue;
                }
                let (grid, tail) = row.split_at_mut(wg.grid_pixels());
                tail.fill(T::zero());
                // Output row oy reads input row oy·S + fy, every S-th value.
                if s == 1 {
                    copy_runs(grid, src, g.out_w, wg.padded_w);
                    continue;
                }
                for (oy, dst) in grid.chunks_exact_mut(g.out_w).enumerate() {
                    let line = &src[oy * s * wg.padded_w..];
                    for (d, &v) in dst.iter_mut().zip(line.iter().step_by(s)) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col_wide`]: `col: (C·FH·FW, wide_pixels)` → `dxpad: (C, HP, WP)`,
/// overwritten with the sum of every row added back onto the run it came from.
pub fn col2im_wide<T: Float>(col: &[T], wg: &WideGeometry, dxpad: &mut [T]) {
    let g = &wg.g;
    let (plane, run, s) = (wg.padded_h * wg.padded_w, wg.run(), g.stride);
    dxpad[..wg.padded_len()].fill(T::zero());
    let mut rows = col[..wg.col_len()].chunks_exact(wg.wide_pixels());
    for dxpad_c in dxpad[..wg.padded_len()].chunks_exact_mut(plane) {
        for fy in 0..g.filter_h {
            for fx in 0..g.filter_w {
                let row = rows.next().expect("col has C·FH·FW rows");
                let dst = &mut dxpad_c[fy * wg.padded_w + fx..];
                if wg.one_run() {
                    // Contiguous: the compiler vectorises this add.
                    for (d, &v) in dst[..run].iter_mut().zip(&row[..run]) {
                        *d += v;
                    }
                    continue;
                }
                let grid = &row[..wg.grid_pixels()];
                if s == 1 {
                    add_runs(grid, dst, g.out_w, wg.padded_w);
                    continue;
                }
                for (oy, src) in grid.chunks_exact(g.out_w).enumerate() {
                    let line = &mut dst[oy * s * wg.padded_w..];
                    for (d, &v) in line.iter_mut().step_by(s).zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
}

// Stride 1 on the book's grid: run `oy` of a `col` row (`out_w` values) is
// the `out_w` values at `oy · line_step` of the padded plane, from the
// filter tap on. Runs of 8 or 16 (an 8×8 or 16×16 map) go through
// fixed-size arrays, which the compiler turns into a few vector moves with
// no loop: on `deep`'s conv5 (8×8) that took the unrolling from 7.4 to
// 2.8–4.1 µs per image (one thread, a throwaway timing program). Other
// widths are a plain loop per run (memcpy's call costs more than such
// short copies).

/// `grid` ← the runs of `plane` (see above).
#[inline(always)]
fn copy_runs<T: Float>(grid: &mut [T], plane: &[T], out_w: usize, line_step: usize) {
    #[inline(always)]
    fn fixed<T: Float, const W: usize>(grid: &mut [T], plane: &[T], line_step: usize) {
        for (oy, dst) in grid.chunks_exact_mut(W).enumerate() {
            let src: &[T; W] = plane[oy * line_step..][..W].try_into().expect("W values");
            *<&mut [T; W]>::try_from(dst).expect("W values") = *src;
        }
    }
    match out_w {
        8 => fixed::<T, 8>(grid, plane, line_step),
        16 => fixed::<T, 16>(grid, plane, line_step),
        _ => {
            for (oy, dst) in grid.chunks_exact_mut(out_w).enumerate() {
                let src = &plane[oy * line_step..][..out_w];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// The runs of `plane` += `grid` (see above).
#[inline(always)]
fn add_runs<T: Float>(grid: &[T], plane: &mut [T], out_w: usize, line_step: usize) {
    #[inline(always)]
    fn fixed<T: Float, const W: usize>(grid: &[T], plane: &mut [T], line_step: usize) {
        for (oy, src) in grid.chunks_exact(W).enumerate() {
            let src: &[T; W] = src.try_into().expect("W values");
            let start = oy * line_step;
            let dst: &mut [T; W] = (&mut plane[start..start + W]).try_into().expect("W values");
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
        }
    }
    match out_w {
        8 => fixed::<T, 8>(grid, plane, line_step),
        16 => fixed::<T, 16>(grid, plane, line_step),
        _ => {
            for (oy, src) in grid.chunks_exact(out_w).enumerate() {
                let dst = &mut plane[oy * line_step..][..out_w];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
            }
        }
    }
}

/// `wide: (rows, wide_pixels)` → `out: (rows, OH, OW)`, dropping the junk
/// columns and writing `activation(value + bias[row])`: the epilogue of the
/// convolution's product, in one pass (pass `|v| v` for none).
pub fn narrow<T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    bias: &[T],
    out: &mut [T],
    activation: impl Fn(T) -> T,
) {
    narrow_planes(
        wide,
        wg,
        bias,
        out.chunks_exact_mut(wg.g.out_pixels()),
        activation,
    );
}

/// [`narrow`] into one slice per row of `wide` (each `OH·OW` long), wherever
/// they lie: a band of rows writes into every output plane.
pub fn narrow_planes<'a, T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    bias: &[T],
    out: impl IntoIterator<Item = &'a mut [T]>,
    activation: impl Fn(T) -> T,
) {
    let g = &wg.g;
    let rows = out.into_iter().zip(wide.chunks_exact(wg.wide_pixels()));
    for ((out_r, wide_r), &b) in rows.zip(bias) {
        let lines = out_r[..g.out_pixels()]
            .chunks_exact_mut(g.out_w)
            .zip(wide_r.chunks_exact(wg.wide_w));
        for (dst, src) in lines {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = activation(v + b);
            }
        }
    }
}

/// The adjoint of [`narrow`] without the bias: `out: (rows, OH, OW)` →
/// `wide: (rows, wide_pixels)` with zeros in the junk columns and at the end.
pub fn widen<T: Float>(out: &[T], wg: &WideGeometry, wide: &mut [T]) {
    let g = &wg.g;
    let rows = wide
        .chunks_exact_mut(wg.wide_pixels())
        .zip(out.chunks_exact(g.out_pixels()));
    for (wide_r, out_r) in rows {
        let (grid, tail) = wide_r.split_at_mut(wg.grid_pixels());
        tail.fill(T::zero());
        let lines = grid
            .chunks_exact_mut(wg.wide_w)
            .zip(out_r.chunks_exact(g.out_w));
        for (dst, src) in lines {
            dst[..g.out_w].copy_from_slice(src);
            dst[g.out_w..].fill(T::zero());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im2col::{col2im_image, im2col_image};
    use crate::rng::Rng;
    use proptest::prelude::*;

    /// Without its junk columns, the wide col of `g` is the book's col, and
    /// col2im through the wide grid gives the book's col2im bit for bit
    /// (the junk columns only ever add zeros).
    fn assert_wide_equals_books(g: ConvGeometry, seed: u64) {
        let wg = WideGeometry::new(g);
        let mut rng = Rng::new(seed);
        let x: Vec<f64> = (0..g.image_len()).map(|_| rng.normal()).collect();
        let (k, pixels) = (g.col_width(), g.out_pixels());

        let mut want = vec![f64::NAN; k * pixels];
        im2col_image(&x, &g, &mut want);
        let mut xpad = vec![f64::NAN; wg.padded_len()];
        pad_image(&x, &wg, &mut xpad);
        let mut col = vec![f64::NAN; wg.col_len()];
        im2col_wide(&xpad, &wg, &mut col);
        // Junk columns and row ends are written too (the products read them).
        assert!(col.iter().all(|v| v.is_finite()));
        let mut got = vec![f64::NAN; k * pixels];
        narrow(&col, &wg, &vec![0.0; k], &mut got, |v| v);
        assert_eq!(got, want);

        let dcol: Vec<f64> = (0..k * pixels).map(|_| rng.normal()).collect();
        let mut want_dx = vec![f64::NAN; g.image_len()];
        col2im_image(&dcol, &g, &mut want_dx);
        let mut dcol_wide = vec![f64::NAN; wg.col_len()];
        widen(&dcol, &wg, &mut dcol_wide);
        assert!(dcol_wide.iter().all(|v| v.is_finite()));
        let mut dxpad = vec![f64::NAN; wg.padded_len()];
        col2im_wide(&dcol_wide, &wg, &mut dxpad);
        let mut dx = vec![f64::NAN; g.image_len()];
        unpad_image(&dxpad, &wg, &mut dx);
        assert_eq!(dx, want_dx);
    }

    #[test]
    fn runs_of_8_and_16_on_the_books_grid() {
        // 3×3 on 8×8 with padding 1 (deep's conv5/conv6), 5×5 on 20×20 →
        // 16 wide, 3×3 on 10×10 and 5×5 on 12×12 → 8 wide: the
        // fixed-size runs of copy_runs/add_runs; and 7 wide, the loop.
        for (c, h, f, pad, out_w) in [
            (3, 8, 3, 1, 8),
            (2, 20, 5, 0, 16),
            (2, 10, 3, 0, 8),
            (1, 12, 5, 0, 8),
            (2, 9, 3, 0, 7),
        ] {
            let g = ConvGeometry::new((c, h, h), (f, f), 1, pad).unwrap();
            let wg = WideGeometry::new(g);
            assert_eq!((g.out_w, wg.wide_w), (out_w, out_w), "{h}×{h}, {f}×{f}");
            assert_wide_equals_books(g, h as u64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// [`assert_wide_equals_books`] on any geometry.
        #[test]
        fn wide_unrolling_equals_the_books(
            c in 1usize..4, h in 1usize..32, w in 1usize..32,
            fh in 1usize..5, fw in 1usize..5, stride in 1usize..5, pad in 0usize..3,
            seed in any::<u64>(),
        ) {
            prop_assume!(fh <= h + 2 * pad && fw <= w + 2 * pad);
            let g = ConvGeometry::new((c, h, w), (fh, fw), stride, pad).unwrap();
            assert_wide_equals_books(g, seed);
        }

        /// A band of output rows unrolled on its own ([`pad_band`],
        /// [`WideGeometry::band`]) is those rows' columns of the whole col,
        /// and fits in the whole image's buffers.
        #[test]
        fn a_band_unrolls_to_its_columns_of_the_whole(
            c in 1usize..4, h in 1usize..40, w in 1usize..40,
            fh in 1usize..6, fw in 1usize..6, stride in 1usize..5, pad in 0usize..3,
            cut in 0.0f64..1.0, seed in any::<u64>(),
        ) {
            prop_assume!(fh <= h + 2 * pad && fw <= w + 2 * pad);
            let g = ConvGeometry::new((c, h, w), (fh, fw), stride, pad).unwrap();
            prop_assume!(g.out_h >= 2);
            let wg = WideGeometry::new(g);
            let mut rng = Rng::new(seed);
            let x: Vec<f64> = (0..g.image_len()).map(|_| rng.normal()).collect();
            let mut whole = vec![f64::NAN; g.col_width() * g.out_pixels()];
            im2col_image(&x, &g, &mut whole);
            let split = 1 + (cut * (g.out_h - 1) as f64) as usize;
            for rows in [0..split, split..g.out_h] {
                let band = wg.band(rows.clone());
                // A band fits in the buffers sized for the whole image.
                prop_assert!(band.padded_len() <= wg.padded_len());
                prop_assert!(band.wide_pixels() <= wg.wide_pixels());
                let mut xpad = vec![f64::NAN; band.padded_len()];
                pad_band(&x, &wg, rows.clone(), &mut xpad);
                let mut col = vec![f64::NAN; band.col_len()];
                im2col_wide(&xpad, &band, &mut col);
                let mut got = vec![f64::NAN; g.col_width() * band.g.out_pixels()];
                narrow(&col, &band, &vec![0.0; g.col_width()], &mut got, |v| v);
                let columns = rows.start * g.out_w..rows.end * g.out_w;
                let want: Vec<f64> = whole
                    .chunks_exact(g.out_pixels())
                    .flat_map(|row| row[columns.clone()].iter().copied())
                    .collect();
                prop_assert_eq!(got, want);
            }
        }

        /// <im2col_wide(xpad), y> = <xpad, col2im_wide(y)> for any y.
        #[test]
        fn col2im_wide_is_the_adjoint_of_im2col_wide(
            c in 1usize..4, h in 1usize..32, w in 1usize..32,
            fh in 1usize..5, fw in 1usize..5, stride in 1usize..5, pad in 0usize..3,
            seed in any::<u64>(),
        ) {
            prop_assume!(fh <= h + 2 * pad && fw <= w + 2 * pad);
            let wg = WideGeometry::new(ConvGeometry::new((c, h, w), (fh, fw), stride, pad).unwrap());
            let mut rng = Rng::new(seed);
            let xpad: Vec<f64> = (0..wg.padded_len()).map(|_| rng.normal()).collect();
            let mut col = vec![0.0; wg.col_len()];
            im2col_wide(&xpad, &wg, &mut col);
            let y: Vec<f64> = (0..col.len()).map(|_| rng.normal()).collect();
            let mut dxpad = vec![0.0; wg.padded_len()];
            col2im_wide(&y, &wg, &mut dxpad);
            let lhs: f64 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = xpad.iter().zip(&dxpad).map(|(a, b)| a * b).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
        }
    }

    #[test]
    fn junk_columns_only_where_few() {
        // 3×3 "same" on 28×28: rows of 30, of which 28 are output.
        let g = ConvGeometry::new((16, 28, 28), (3, 3), 1, 1).unwrap();
        let wg = WideGeometry::new(g);
        assert_eq!((wg.padded_h, wg.padded_w, wg.wide_w), (30, 30, 30));
        assert_eq!(wg.grid_pixels(), 28 * 30);
        assert_eq!(wg.wide_pixels(), 848); // 840 rounded up to a multiple of 16
        assert!(wg.one_run());
        // deep's conv4, 16×16 out of 18-wide rows: an eighth more, one run.
        let wg = WideGeometry::new(ConvGeometry::new((32, 14, 14), (3, 3), 1, 2).unwrap());
        assert_eq!((wg.wide_w, wg.wide_pixels()), (18, 288));
        assert!(wg.one_run());
        // On 8×8, 10 for 8 would be a quarter more: the book's grid.
        let wg = WideGeometry::new(ConvGeometry::new((64, 8, 8), (3, 3), 1, 1).unwrap());
        assert_eq!((wg.wide_w, wg.wide_pixels()), (8, 64));
        assert!(!wg.one_run());
        // A 2×2 output is not padded to 16: that would be 4× the work.
        let wg = WideGeometry::new(ConvGeometry::new((1, 2, 2), (1, 1), 1, 0).unwrap());
        assert_eq!(wg.wide_pixels(), 4);
        // LeNet's second layer, 5×5 on 14×14: 14 for 10 would be too many.
        let wg = WideGeometry::new(ConvGeometry::new((6, 14, 14), (5, 5), 1, 0).unwrap());
        assert_eq!(wg.wide_w, 10);
        assert!(!wg.one_run());
        // AlexNet's first layer: 227 wide, 11×11, stride 4 → OW 55, no junk.
        let g = ConvGeometry::new((3, 227, 227), (11, 11), 4, 0).unwrap();
        let wg = WideGeometry::new(g);
        assert_eq!((g.out_w, wg.padded_w, wg.wide_w), (55, 227, 55));
    }
}
