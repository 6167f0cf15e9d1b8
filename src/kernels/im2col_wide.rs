//! im2col over a zero-padded image with rows as wide as the padded input: the
//! unrolling the [`Convolution`](crate::layers::Convolution) layer uses.
//!
//! The book's im2col ([`im2col`](crate::kernels::im2col)) copies every window, which
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
//! 10/8) — and for strides above 1, the grid keeps OWW = OW. Filters of
//! 5×5 or more take the wide grid below half again as many columns (a
//! 5×5 filter on a 14×14 map, LeNet-5's C3: 14/10): on the wide grid
//! their products run from the padded image by the direct kernel
//! (`direct_conv`), with no unrolling of FH·FW values per output value and
//! channel, which saves more than the junk columns cost (LeNet-5 ran a
//! fifth faster at batch 1, a quarter at 1,000 and a tenth in training;
//! docs/performance.md). On the book's grid each row of `col` is OH runs (with step S)
//! out of the padded plane, the book's layout, still without any bounds
//! checks. (On an 8×8 map the book's grid also suits the product: 64
//! columns are exactly one block of `gemm`'s kernel, where the wide grid's
//! 80 leave a narrow remainder, and that outweighs the eight runs per row.
//! The limit was a quarter more columns, which gave `deep`'s 8×8 layers the
//! wide grid, until timing showed their products slower that way.)
//!
//! Each row of `col` (and of the wide output) is then rounded up to a
//! multiple of 16 values, with zeros at the end, where that adds at most an
//! eighth: the `gemm` crate reads `col` in place only when its length is a
//! multiple of the SIMD width, and otherwise first copies ("packs") all of
//! it, an extra pass over all of `col` before every product. (`deep`'s
//! second layer: 28 rows of 30, 840 → 848.)
//!
//! ```
//! use convnet::kernels::im2col::ConvGeometry;
//! use convnet::kernels::im2col_wide::{im2col_wide, pad_image, WideGeometry};
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

use crate::kernels::im2col::ConvGeometry;
use crate::tensor::Float;
use runs::{add_filter_row_3, add_runs, copy_runs, copy_short, write_padded_row};

mod narrow;
mod runs;

pub use narrow::{narrow, narrow_planes, narrow_planes_then_map, widen};

/// A [`ConvGeometry`] with the padded plane and the wide output grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WideGeometry {
    /// The geometry of the whole image.
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
    /// Adds the padded plane's size to `g` and chooses the grid's width `wide_w`.
    pub fn new(g: ConvGeometry) -> Self {
        let padded_w = g.in_w + 2 * g.pad;
        // One run per col row, if the junk columns it brings are few, or
        // for a large filter, not too many (see the module documentation).
        let few_junk = 6 * padded_w <= 7 * g.out_w;
        let large_filter = g.filter_w >= 5 && 2 * padded_w < 3 * g.out_w;
        let wide_w = if g.stride == 1 && (few_junk || large_filter) {
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
    /// use convnet::kernels::im2col::ConvGeometry;
    /// use convnet::kernels::im2col_wide::WideGeometry;
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
            write_padded_row(&mut xpad_c[(iy + p) * wp..][..wp], p, src);
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
                Some(iy) => write_padded_row(row, p, &x_c[iy * g.in_w..][..g.in_w]),
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
            copy_short(dst, &xpad_c[(iy + p) * wp + p..][..g.in_w]);
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
    // (One run per row with FW = 3 means OW ≥ 12: runs of at least 12.)
    if wg.one_run() && g.filter_w == 3 {
        col2im_wide_3(col, wg, dxpad);
        return;
    }
    if s == 1 && g.filter_w == 3 && wg.wide_w == g.out_w && g.out_w == 8 {
        col2im_books_3(col, wg, dxpad);
        return;
    }
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

/// [`col2im_wide`] for one run per `col` row and a filter 3 wide: each
/// filter row's three taps added back in one pass ([`add_filter_row_3`]),
/// the first filter row writing the plane instead of adding to zeros.
fn col2im_wide_3<T: Float>(col: &[T], wg: &WideGeometry, dxpad: &mut [T]) {
    let (plane, run, wp) = (wg.padded_h * wg.padded_w, wg.run(), wg.padded_w);
    // The C·FH filter rows of `col`, three taps (rows) each.
    let mut filter_rows = col[..wg.col_len()].chunks_exact(3 * wg.wide_pixels());
    for dxpad_c in dxpad[..wg.padded_len()].chunks_exact_mut(plane) {
        // Filter row 0 writes the first run + 2 values; the rest starts at zero.
        dxpad_c[run + 2..].fill(T::zero());
        for fy in 0..wg.g.filter_h {
            let rows = filter_rows.next().expect("col has C·FH filter rows");
            let taps = [0, 1, 2].map(|fx| &rows[fx * wg.wide_pixels()..][..run]);
            let dst = &mut dxpad_c[fy * wp..][..run + 2];
            if fy == 0 {
                add_filter_row_3::<T, true>(dst, taps);
            } else {
                add_filter_row_3::<T, false>(dst, taps);
            }
        }
    }
}

/// [`col2im_wide`] on the book's grid for stride 1, a filter 3 wide and
/// output rows of 8 (`deep`'s 8×8 layers; a 3-wide filter takes the book's
/// grid only below 12 columns): each row of the padded plane (10 values)
/// is summed in a local array from the runs that land on it, filter row by
/// filter row and tap by tap, and written once. Each value gets the same
/// terms in the same order as adding whole `col` rows one after the other
/// onto a zeroed plane, so the same sums to the bit; but without reading
/// and writing the plane once per tap (`add_runs`).
fn col2im_books_3<T: Float>(col: &[T], wg: &WideGeometry, dxpad: &mut [T]) {
    const W: usize = 8;
    let (g, wp) = (&wg.g, wg.padded_w);
    assert_eq!(wp, W + 2, "rows of 10");
    let taps_len = g.filter_h * 3 * wg.wide_pixels();
    let planes = dxpad[..wg.padded_len()].chunks_exact_mut(wg.padded_h * wp);
    for (dxpad_c, taps) in planes.zip(col[..wg.col_len()].chunks_exact(taps_len)) {
        for (y, dst) in dxpad_c.chunks_exact_mut(wp).enumerate() {
            let mut sums = [T::zero(); W + 2];
            // Output row oy of filter row fy lands on padded row oy + fy.
            for fy in 0..g.filter_h {
                let Some(oy) = y.checked_sub(fy).filter(|&oy| oy < g.out_h) else {
                    continue;
                };
                for fx in 0..3 {
                    let tap = &taps[(fy * 3 + fx) * wg.wide_pixels() + oy * W..];
                    let run: &[T; W] = tap[..W].try_into().expect("W values");
                    let sums: &mut [T; W] = (&mut sums[fx..fx + W]).try_into().expect("W values");
                    sums.iter_mut().zip(run).for_each(|(s, &v)| *s += v);
                }
            }
            dst.copy_from_slice(&sums);
        }
    }
}

#[cfg(test)]
mod tests;
