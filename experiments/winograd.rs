//! Winograd's minimal filtering F(2×2, 3×3), a faster route to the same
//! convolution as im2col (book §7.4.3) for 3×3 filters with stride 1
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//! Not in the book, and not used by the library: an experiment kept outside
//! `src/`, compiled into `benches/winograd.rs` (which times it against the
//! route [`Convolution`](convnet::layers::Convolution) takes) and into
//! `tests/winograd.rs` (which checks it against im2col). See
//! `experiments/README.md`.
//!
//! The output is cut into 2×2 tiles. A tile depends on a 4×4 patch `d` of
//! the padded input; for one filter `g` (3×3) and one channel
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A            (2×2; ⊙ multiplies elementwise)
//!
//!      ⎡1  0 −1  0⎤        ⎡1   0  0⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢½   ½  ½⎥    Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢½  −½  ½⎥         ⎣0  1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣0   0  1⎦
//! ```
//!
//! That is 16 multiplications per tile instead of 2·2·9 = 36; the transforms
//! are additions. Summed over the channels, the elementwise products become
//! 16 matrix products, one for each position ξ of the 4×4 tile:
//!
//! ```text
//! U[ξ]: (FN, C)    the filters transformed, G g Gᵀ
//! V[ξ]: (C, T)     the T tiles of the input transformed, Bᵀ d B
//! M[ξ] = U[ξ] · V[ξ]                       (FN, T)
//! out  = Aᵀ M A for each filter and tile, + b
//! ```
//!
//! Backward to the input is the same algorithm: `dx` is `dout` convolved,
//! with pad 2 − P, by the filters rotated by 180° with their two channel
//! axes swapped ([`transform_filters`] with `rotate`, [`WinogradGeometry::for_dx`]).
//!
//! ```ignore
//! use convnet::kernels::im2col::ConvGeometry;
//! use winograd::*; // this file, included as a module
//! // 1 channel, 4×4 input, pad 1, one filter that picks the centre: out = x.
//! let g = ConvGeometry::new((1, 4, 4), (3, 3), 1, 1).unwrap();
//! let wg = WinogradGeometry::new(g).unwrap();
//! let x: Vec<f64> = (0..16).map(f64::from).collect();
//! let weight = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
//! let (t, mut work) = (wg.tiles(), Vec::new());
//! let (mut u, mut v, mut m, mut out) = (vec![0.0; 16], vec![0.0; 16 * t], vec![0.0; 16 * t], vec![0.0; 16]);
//! transform_filters(&weight, 1, 1, false, &mut work, &mut u);
//! transform_input(&x, &wg, &mut work, &mut v, t, 0);
//! multiply(&u, &v, &mut m, 1, 1, t);
//! transform_output(&m, &wg, 1, t, 0, None, &mut work, &mut out);
//! assert_eq!(out, x);
//! ```

use convnet::kernels::gemm::{matmul, MatMut, MatRef};
use convnet::kernels::im2col::ConvGeometry;
use convnet::Float;

/// Positions in a 4×4 tile: the 16 products.
pub const TILE_POSITIONS: usize = 16;

/// A 3×3, stride-1 convolution cut into 2×2 output tiles.
///
/// Each row of tiles has one junk tile at its end (`row_tiles` = ⌈OW/2⌉ + 1),
/// so that tile `(ty, tx)` is number `ty · row_tiles + tx` and the plane rows
/// it reads start at the same offset: every transform step is then one
/// vector operation over the whole image. The output transform skips the
/// junk tiles. The tiles read a padded plane of 2·tiles_h + 2 rows by
/// 2·row_tiles columns: the padding P, then zeros below and to the right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinogradGeometry {
    pub g: ConvGeometry,
    /// Rows of tiles, ⌈OH/2⌉.
    pub tiles_h: usize,
    /// Tiles in a row, ⌈OW/2⌉ + 1 (the last is junk).
    pub row_tiles: usize,
}

impl WinogradGeometry {
    /// The tiling of `g`, or `None` unless the filter is 3×3 with stride 1.
    pub fn new(g: ConvGeometry) -> Option<Self> {
        if (g.filter_h, g.filter_w, g.stride) != (3, 3, 1) {
            return None;
        }
        let (tiles_h, row_tiles) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2) + 1);
        Some(WinogradGeometry {
            g,
            tiles_h,
            row_tiles,
        })
    }

    /// Tiles per image (and channel), junk tiles included.
    pub fn tiles(&self) -> usize {
        self.tiles_h * self.row_tiles
    }

    /// The convolution that gives backward's `dx` from `dout`: input
    /// `(FN, OH, OW)`, pad 2 − P, output `(C, H, W)`; `None` if P > 2.
    pub fn for_dx(&self, filters: usize) -> Option<Self> {
        let g = &self.g;
        let pad = 2usize.checked_sub(g.pad)?;
        let dx = ConvGeometry::new((filters, g.out_h, g.out_w), (3, 3), 1, pad).ok()?;
        debug_assert_eq!((dx.out_h, dx.out_w), (g.in_h, g.in_w));
        Self::new(dx)
    }
}

/// `u = G g Gᵀ` for every filter and channel of `weight: (FN, C, 3, 3)`,
/// into `u: (16, FN, C)`. With `rotate`, the filters of backward to the
/// input instead: each 3×3 rotated by 180° and `u: (16, C, FN)`.
/// `tiles` is a buffer for the transformed filters, tile by tile.
pub fn transform_filters<T: Float>(
    weight: &[T],
    filters: usize,
    channels: usize,
    rotate: bool,
    tiles: &mut Vec<T>,
    u: &mut [T],
) {
    let half = T::from(0.5).expect("0.5 is a float");
    // tiles: (FN, C, 16), written tile by tile
    tiles.resize(filters * channels * TILE_POSITIONS, T::zero());
    let filters_3x3 = weight.chunks_exact(9);
    for (w, tile) in filters_3x3.zip(tiles.chunks_exact_mut(TILE_POSITIONS)) {
        let g = |i: usize, j: usize| {
            if rotate {
                w[8 - 3 * i - j]
            } else {
                w[3 * i + j]
            }
        };
        // t = G g: (4, 3)
        let t: [[T; 3]; 4] = std::array::from_fn(|i| {
            std::array::from_fn(|j| match i {
                0 => g(0, j),
                1 => half * (g(0, j) + g(1, j) + g(2, j)),
                2 => half * (g(0, j) - g(1, j) + g(2, j)),
                _ => g(2, j),
            })
        });
        // u = t Gᵀ: (4, 4)
        for (row, t) in tile.chunks_exact_mut(4).zip(&t) {
            row[0] = t[0];
            row[1] = half * (t[0] + t[1] + t[2]);
            row[2] = half * (t[0] - t[1] + t[2]);
            row[3] = t[2];
        }
    }
    // Scatter the tiles into the 16 matrices, one contiguous row at a time.
    let (rows, row_len) = if rotate {
        (channels, filters)
    } else {
        (filters, channels)
    };
    for (xi, u) in u.chunks_exact_mut(rows * row_len).enumerate() {
        for (r, u_row) in u.chunks_exact_mut(row_len).enumerate() {
            for (s, value) in u_row.iter_mut().enumerate() {
                let (f, c) = if rotate { (s, r) } else { (r, s) };
                *value = tiles[(f * channels + c) * TILE_POSITIONS + xi];
            }
        }
    }
}

/// Bᵀ as (a, b, add): row i of `Bᵀ d` is `d[a] + d[b]` or `d[a] − d[b]`;
/// `B` does the same to the columns.
const BT: [(usize, usize, bool); 4] = [(0, 2, false), (1, 2, true), (2, 1, false), (1, 3, false)];

/// `dst = a + b`, or `a − b`: one vector operation.
fn add_or_sub<T: Float>(dst: &mut [T], a: &[T], b: &[T], add: bool) {
    let n = dst.len();
    let (a, b) = (&a[..n], &b[..n]);
    if add {
        (0..n).for_each(|k| dst[k] = a[k] + b[k]);
    } else {
        (0..n).for_each(|k| dst[k] = a[k] - b[k]);
    }
}

/// `V = Bᵀ d B` for every tile of one image `x: (C, H, W)`, into columns
/// `first_tile..first_tile + tiles()` of `v: (16, C, group_tiles)` (several
/// images share one `v`, so that the products are wider). `work` is a
/// buffer for one padded channel.
///
/// Tile `(ty, tx)` reads rows 2·ty … 2·ty + 3 and columns 2·tx … 2·tx + 3 of
/// the padded plane. With the plane split into four quarters by the parity
/// of row and column, "row 2·ty + a of every tile" is one contiguous block
/// of a quarter, and so is "column 2·tx + b": each of the 16 values is one
/// vector operation over the image.
pub fn transform_input<T: Float>(
    x: &[T],
    wg: &WinogradGeometry,
    work: &mut Vec<T>,
    v: &mut [T],
    group_tiles: usize,
    first_tile: usize,
) {
    let g = &wg.g;
    // The padded plane is 2·half_w wide; each quarter is half as wide and high.
    let (half_w, pad, tiles) = (wg.row_tiles, g.pad, wg.tiles());
    let (plane_w, quarter_len) = (2 * half_w, (wg.tiles_h + 1) * half_w);
    // work: one padded row; the four quarters, (tiles_h + 1, half_w) each,
    // [even row, even column], [even, odd], [odd, even], [odd, odd]; a row
    // of Bᵀ d on the even and on the odd columns (one spare value each).
    work.resize(plane_w + 4 * quarter_len + 2 * (tiles + 1), T::zero());
    let (row, rest) = work.split_at_mut(plane_w);
    let (quarters, bt_d) = rest.split_at_mut(4 * quarter_len);
    // `work` may hold anything: zero the row's padding and the spare values.
    row.fill(T::zero());
    bt_d.fill(T::zero());
    let (bt_even, bt_odd) = bt_d.split_at_mut(tiles + 1);
    for (c, x_c) in x.chunks_exact(g.in_h * g.in_w).enumerate() {
        quarters.fill(T::zero());
        for (y, x_row) in x_c.chunks_exact(g.in_w).enumerate() {
            row[pad..pad + g.in_w].copy_from_slice(x_row);
            let (py, line) = (y + pad, ((y + pad) / 2) * half_w);
            let (even, odd) = quarters[2 * (py % 2) * quarter_len..].split_at_mut(quarter_len);
            let columns = even[line..line + half_w]
                .iter_mut()
                .zip(&mut odd[line..line + half_w]);
            for ((e, o), pair) in columns.zip(row.chunks_exact(2)) {
                (*e, *o) = (pair[0], pair[1]);
            }
        }
        // Row a of every tile, on the columns of parity p.
        let rows = |a: usize, p: usize| {
            let quarter = &quarters[(2 * (a % 2) + p) * quarter_len..][..quarter_len];
            &quarter[(a / 2) * half_w..][..tiles]
        };
        for (i, &(a, b, add)) in BT.iter().enumerate() {
            // Row i of Bᵀ d, on the even and on the odd columns.
            add_or_sub(&mut bt_even[..tiles], rows(a, 0), rows(b, 0), add);
            add_or_sub(&mut bt_odd[..tiles], rows(a, 1), rows(b, 1), add);
            // Column k of every tile.
            let column = |k: usize| {
                let side: &[T] = if k.is_multiple_of(2) { bt_even } else { bt_odd };
                &side[k / 2..k / 2 + tiles]
            };
            for (j, &(a, b, add)) in BT.iter().enumerate() {
                let start = ((4 * i + j) * g.channels + c) * group_tiles + first_tile;
                add_or_sub(&mut v[start..start + tiles], column(a), column(b), add);
            }
        }
    }
}

/// `M[ξ] = U[ξ] · V[ξ]` for the 16 positions: `u: (16, FN, C)`,
/// `v: (16, C, T)`, `m: (16, FN, T)`. Runs on the calling thread.
pub fn multiply<T: Float>(
    u: &[T],
    v: &[T],
    m: &mut [T],
    filters: usize,
    channels: usize,
    group_tiles: usize,
) {
    let u = u.chunks(filters * channels);
    let v = v.chunks(channels * group_tiles);
    let m = m.chunks_mut(filters * group_tiles);
    for ((u, v), m) in u.zip(v).zip(m).take(TILE_POSITIONS) {
        matmul(
            MatMut::new(m, filters, group_tiles),
            MatRef::new(u, filters, channels),
            MatRef::new(v, channels, group_tiles),
            false,
            false,
        );
    }
}

/// Row i of `Aᵀ r` for four rows r: `r0 + r1 + r2` (i = 0) or
/// `r1 − r2 − r3` (i = 1); `A` does the same to the columns.
fn at_row<T: Float>(dst: &mut [T], r: [&[T]; 4], i: usize) {
    let n = dst.len();
    let [r0, r1, r2, r3] = r.map(|r| &r[..n]);
    if i == 0 {
        (0..n).for_each(|k| dst[k] = r0[k] + r1[k] + r2[k]);
    } else {
        (0..n).for_each(|k| dst[k] = r1[k] - r2[k] - r3[k]);
    }
}

/// `out = Aᵀ M A (+ b)` for the tiles `first_tile..first_tile + tiles()` of
/// `m: (16, FN, group_tiles)`, into one image `out: (FN, OH, OW)`; the junk
/// tiles, and the parts of the last tiles that overhang the output, are
/// dropped. Each step but the last is one vector operation over the image;
/// `work` holds the steps.
#[allow(clippy::too_many_arguments)] // the four shapes, the bias and two buffers
pub fn transform_output<T: Float>(
    m: &[T],
    wg: &WinogradGeometry,
    filters: usize,
    group_tiles: usize,
    first_tile: usize,
    bias: Option<&[T]>,
    work: &mut Vec<T>,
    out: &mut [T],
) {
    let (out_h, out_w, tiles) = (wg.g.out_h, wg.g.out_w, wg.tiles());
    // work: Aᵀ M, (2, 4) rows of every tile; then Y, (2, 2)
    work.resize(12 * tiles, T::zero());
    let (at_m, y) = work.split_at_mut(8 * tiles);
    for (f, out_f) in out
        .chunks_exact_mut(out_h * out_w)
        .take(filters)
        .enumerate()
    {
        // Position ξ of every tile; Aᵀ M, row by row
        let m_xi = |xi: usize| &m[(xi * filters + f) * group_tiles + first_tile..][..tiles];
        for (i, at_m_i) in at_m.chunks_exact_mut(4 * tiles).enumerate() {
            for (j, dst) in at_m_i.chunks_exact_mut(tiles).enumerate() {
                at_row(dst, [0, 1, 2, 3].map(|r| m_xi(4 * r + j)), i);
            }
        }
        // Y = (Aᵀ M) A, row i of Y from row i of Aᵀ M
        for (at_m_i, y_i) in at_m
            .chunks_exact(4 * tiles)
            .zip(y.chunks_exact_mut(2 * tiles))
        {
            let s: [&[T]; 4] = std::array::from_fn(|j| &at_m_i[j * tiles..][..tiles]);
            let (y_i0, y_i1) = y_i.split_at_mut(tiles);
            at_row(y_i0, s, 0);
            at_row(y_i1, s, 1);
        }
        // Out pixel (2·ty + i, 2·tx + j) is Y[i][j] of tile (ty, tx), + b.
        let b = bias.map_or(T::zero(), |b| b[f]);
        for (oy, out_row) in out_f.chunks_exact_mut(out_w).enumerate() {
            let first = (oy / 2) * wg.row_tiles;
            let y_i = &y[(oy % 2) * 2 * tiles..][..2 * tiles];
            let (y_i0, y_i1) = y_i.split_at(tiles);
            let tiles_in_row = y_i0[first..].iter().zip(&y_i1[first..]);
            for (pair, (&y0, &y1)) in out_row.chunks_mut(2).zip(tiles_in_row) {
                pair[0] = y0 + b;
                if let Some(second) = pair.get_mut(1) {
                    *second = y1 + b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convnet::kernels::im2col::{col2im_image, im2col_image};
    use convnet::Rng;
    use proptest::prelude::*;

    /// The book's route for one image: `out = W · im2col(x) + b`.
    fn book_convolution(x: &[f64], g: &ConvGeometry, weight: &[f64], bias: &[f64]) -> Vec<f64> {
        let (k, pixels) = (g.col_width(), g.out_pixels());
        let mut col = vec![0.0; k * pixels];
        im2col_image(x, g, &mut col);
        let mut out = vec![0.0; bias.len() * pixels];
        for (f, out_f) in out.chunks_mut(pixels).enumerate() {
            for (p, o) in out_f.iter_mut().enumerate() {
                *o = bias[f]
                    + (0..k)
                        .map(|j| weight[f * k + j] * col[j * pixels + p])
                        .sum::<f64>();
            }
        }
        out
    }

    /// All of `images` through one shared `v` and `m`, as the layer does.
    fn winograd_convolution(
        images: &[Vec<f64>],
        wg: &WinogradGeometry,
        u: &[f64],
        filters: usize,
        bias: Option<&[f64]>,
    ) -> Vec<Vec<f64>> {
        let (t, c) = (wg.tiles(), wg.g.channels);
        let group_tiles = t * images.len();
        let mut v = vec![f64::NAN; 16 * c * group_tiles];
        let mut m = vec![f64::NAN; 16 * filters * group_tiles];
        // A used buffer: the transforms must not count on zeros in it.
        let mut plane = vec![f64::NAN; 4096];
        for (i, x) in images.iter().enumerate() {
            transform_input(x, wg, &mut plane, &mut v, group_tiles, i * t);
        }
        multiply(u, &v, &mut m, filters, c, group_tiles);
        let out_len = filters * wg.g.out_pixels();
        (0..images.len())
            .map(|i| {
                let mut out = vec![f64::NAN; out_len];
                transform_output(
                    &m,
                    wg,
                    filters,
                    group_tiles,
                    i * t,
                    bias,
                    &mut plane,
                    &mut out,
                );
                out
            })
            .collect()
    }

    fn assert_close(got: &[f64], want: &[f64]) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{} vs {}", a, b);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// The same numbers as im2col, to rounding, for any size and padding
        /// (odd sizes leave overhanging tiles) and several images per product.
        #[test]
        fn forward_equals_im2col(
            c in 1usize..5, filters in 1usize..5, h in 1usize..10, w in 1usize..10,
            pad in 0usize..4, images in 1usize..4, seed in any::<u64>(),
        ) {
            prop_assume!(3 <= h + 2 * pad && 3 <= w + 2 * pad);
            let g = ConvGeometry::new((c, h, w), (3, 3), 1, pad).unwrap();
            let wg = WinogradGeometry::new(g).unwrap();
            let mut rng = Rng::new(seed);
            let mut normals = |len: usize| -> Vec<f64> { (0..len).map(|_| rng.normal()).collect() };
            let weight = normals(filters * c * 9);
            let bias = normals(filters);
            let xs: Vec<Vec<f64>> = (0..images).map(|_| normals(g.image_len())).collect();

            let mut u = vec![f64::NAN; 16 * filters * c];
            transform_filters(&weight, filters, c, false, &mut Vec::new(), &mut u);
            let got = winograd_convolution(&xs, &wg, &u, filters, Some(&bias));
            for (x, got) in xs.iter().zip(&got) {
                assert_close(got, &book_convolution(x, &g, &weight, &bias))?;
            }
        }

        /// Backward to the input: `dout` through the rotated filters equals
        /// the book's `col2im(Wᵀ · dout)`.
        #[test]
        fn dx_equals_col2im(
            c in 1usize..5, filters in 1usize..5, h in 1usize..10, w in 1usize..10,
            pad in 0usize..3, images in 1usize..3, seed in any::<u64>(),
        ) {
            prop_assume!(3 <= h + 2 * pad && 3 <= w + 2 * pad);
            let g = ConvGeometry::new((c, h, w), (3, 3), 1, pad).unwrap();
            let wg_dx = WinogradGeometry::new(g).unwrap().for_dx(filters).unwrap();
            let (k, pixels) = (g.col_width(), g.out_pixels());
            let mut rng = Rng::new(seed);
            let mut normals = |len: usize| -> Vec<f64> { (0..len).map(|_| rng.normal()).collect() };
            let weight = normals(filters * k);
            let douts: Vec<Vec<f64>> = (0..images).map(|_| normals(filters * pixels)).collect();

            let mut u = vec![f64::NAN; 16 * filters * c];
            transform_filters(&weight, filters, c, true, &mut Vec::new(), &mut u);
            let got = winograd_convolution(&douts, &wg_dx, &u, c, None);
            for (dout, got) in douts.iter().zip(&got) {
                // dcol = Wᵀ · dout: (C·9, pixels)
                let dcol: Vec<f64> = (0..k * pixels)
                    .map(|i| (0..filters).map(|f| weight[f * k + i / pixels] * dout[f * pixels + i % pixels]).sum())
                    .collect();
                let mut want = vec![0.0; g.image_len()];
                col2im_image(&dcol, &g, &mut want);
                assert_close(got, &want)?;
            }
        }
    }

    #[test]
    fn only_three_by_three_with_stride_one() {
        let geometry = |f, s, p| ConvGeometry::new((1, 8, 8), (f, f), s, p).unwrap();
        assert!(WinogradGeometry::new(geometry(3, 1, 0)).is_some());
        assert!(WinogradGeometry::new(geometry(3, 2, 1)).is_none());
        assert!(WinogradGeometry::new(geometry(5, 1, 2)).is_none());
        // dx needs pad 2 − P ≥ 0
        let wg = WinogradGeometry::new(geometry(3, 1, 3)).unwrap();
        assert!(wg.for_dx(4).is_none());
        assert_eq!(wg.tiles(), 6 * 7); // 12×12 output, one junk tile a row
    }
}
