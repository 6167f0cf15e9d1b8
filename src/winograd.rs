//! Winograd's minimal filtering F(2×2, 3×3), a faster route to the same
//! convolution as im2col (book §7.4.3) for 3×3 filters with stride 1
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//! Not in the book; [`Convolution`](crate::layers::Convolution) uses it for
//! its 3×3 layers, and the tests check it against im2col.
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
//! ```
//! use convnet::im2col::ConvGeometry;
//! use convnet::winograd::*;
//! // 1 channel, 4×4 input, pad 1, one filter that picks the centre: out = x.
//! let g = ConvGeometry::new((1, 4, 4), (3, 3), 1, 1).unwrap();
//! let wg = WinogradGeometry::new(g).unwrap();
//! let x: Vec<f64> = (0..16).map(f64::from).collect();
//! let weight = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
//! let (t, mut plane) = (wg.tiles(), Vec::new());
//! let (mut u, mut v, mut m, mut out) = (vec![0.0; 16], vec![0.0; 16 * t], vec![0.0; 16 * t], vec![0.0; 16]);
//! transform_filters(&weight, 1, 1, false, &mut u);
//! transform_input(&x, &wg, &mut plane, &mut v, t, 0);
//! multiply(&u, &v, &mut m, 1, 1, t);
//! transform_output(&m, &wg, 1, t, 0, None, &mut out);
//! assert_eq!(out, x);
//! ```

use crate::gemm::{matmul, MatMut, MatRef};
use crate::im2col::ConvGeometry;
use crate::tensor::Float;

/// Positions in a 4×4 tile: the 16 products.
pub const TILE_POSITIONS: usize = 16;

/// A 3×3, stride-1 convolution cut into 2×2 output tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinogradGeometry {
    pub g: ConvGeometry,
    /// Tiles down and across: ⌈OH/2⌉, ⌈OW/2⌉.
    pub tiles_h: usize,
    pub tiles_w: usize,
    /// The padded plane the tiles read, 2·tiles + 2 each way: the padding P,
    /// then zeros below and to the right where the last tile overhangs.
    pub plane_h: usize,
    pub plane_w: usize,
}

impl WinogradGeometry {
    /// The tiling of `g`, or `None` unless the filter is 3×3 with stride 1.
    pub fn new(g: ConvGeometry) -> Option<Self> {
        if (g.filter_h, g.filter_w, g.stride) != (3, 3, 1) {
            return None;
        }
        let (tiles_h, tiles_w) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
        Some(WinogradGeometry {
            g,
            tiles_h,
            tiles_w,
            plane_h: 2 * tiles_h + 2,
            plane_w: 2 * tiles_w + 2,
        })
    }

    /// Tiles per image (and channel).
    pub fn tiles(&self) -> usize {
        self.tiles_h * self.tiles_w
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
pub fn transform_filters<T: Float>(
    weight: &[T],
    filters: usize,
    channels: usize,
    rotate: bool,
    u: &mut [T],
) {
    let half = T::from(0.5).expect("0.5 is a float");
    for f in 0..filters {
        for c in 0..channels {
            let w = &weight[(f * channels + c) * 9..][..9];
            let g = |i: usize, j: usize| if rotate { w[8 - 3 * i - j] } else { w[3 * i + j] };
            // t = G g: (4, 3)
            let mut t = [[T::zero(); 3]; 4];
            for j in 0..3 {
                t[0][j] = g(0, j);
                t[1][j] = half * (g(0, j) + g(1, j) + g(2, j));
                t[2][j] = half * (g(0, j) - g(1, j) + g(2, j));
                t[3][j] = g(2, j);
            }
            // u = t Gᵀ: (4, 4)
            let (row, col, row_len) = if rotate { (c, f, filters) } else { (f, c, channels) };
            for (i, t) in t.iter().enumerate() {
                let tile = [
                    t[0],
                    half * (t[0] + t[1] + t[2]),
                    half * (t[0] - t[1] + t[2]),
                    t[2],
                ];
                for (j, &value) in tile.iter().enumerate() {
                    let xi = 4 * i + j;
                    let per_position = filters * channels;
                    u[xi * per_position + row * row_len + col] = value;
                }
            }
        }
    }
}

/// `V = Bᵀ d B` for every tile of one image `x: (C, H, W)`, into columns
/// `first_tile..first_tile + tiles()` of `v: (16, C, group_tiles)` (several
/// images share one `v`, so that the products are wider). `plane` is a
/// buffer for one padded channel.
pub fn transform_input<T: Float>(
    x: &[T],
    wg: &WinogradGeometry,
    plane: &mut Vec<T>,
    v: &mut [T],
    group_tiles: usize,
    first_tile: usize,
) {
    let g = &wg.g;
    let (pw, pad) = (wg.plane_w, g.pad);
    plane.resize(wg.plane_h * pw, T::zero());
    // Rows of (B^T d) for one row of tiles, across the whole plane.
    let mut t = [vec![T::zero(); pw], vec![T::zero(); pw], vec![T::zero(); pw], vec![T::zero(); pw]];
    for (c, x_c) in x.chunks(g.in_h * g.in_w).enumerate() {
        // The padded channel, zero outside the image.
        plane.fill(T::zero());
        for (y, row) in x_c.chunks(g.in_w).enumerate() {
            let start = (y + pad) * pw + pad;
            plane[start..start + g.in_w].copy_from_slice(row);
        }
        for ty in 0..wg.tiles_h {
            let d = |i: usize| &plane[(2 * ty + i) * pw..][..pw];
            let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
            for x in 0..pw {
                t[0][x] = d0[x] - d2[x];
                t[1][x] = d1[x] + d2[x];
                t[2][x] = d2[x] - d1[x];
                t[3][x] = d1[x] - d3[x];
            }
            for tx in 0..wg.tiles_w {
                let tile = first_tile + ty * wg.tiles_w + tx;
                for (i, t) in t.iter().enumerate() {
                    let r = &t[2 * tx..2 * tx + 4];
                    let row = [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]];
                    for (j, &value) in row.iter().enumerate() {
                        v[((4 * i + j) * g.channels + c) * group_tiles + tile] = value;
                    }
                }
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

/// `out = Aᵀ M A (+ b)` for the tiles `first_tile..first_tile + tiles()` of
/// `m: (16, FN, group_tiles)`, into one image `out: (FN, OH, OW)`; the parts
/// of the last tiles that overhang the output are dropped.
pub fn transform_output<T: Float>(
    m: &[T],
    wg: &WinogradGeometry,
    filters: usize,
    group_tiles: usize,
    first_tile: usize,
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let (out_h, out_w) = (wg.g.out_h, wg.g.out_w);
    for (f, out_f) in out.chunks_mut(out_h * out_w).take(filters).enumerate() {
        let b = bias.map_or(T::zero(), |b| b[f]);
        let stream = |xi: usize| &m[(xi * filters + f) * group_tiles..][..group_tiles];
        let streams: [&[T]; TILE_POSITIONS] = std::array::from_fn(stream);
        for ty in 0..wg.tiles_h {
            for tx in 0..wg.tiles_w {
                let tile = first_tile + ty * wg.tiles_w + tx;
                let m = |i: usize, j: usize| streams[4 * i + j][tile];
                // s = Aᵀ m: (2, 4), then y = s A: (2, 2)
                let mut y = [[T::zero(); 2]; 2];
                for (i, y) in y.iter_mut().enumerate() {
                    let s: [T; 4] = std::array::from_fn(|j| {
                        if i == 0 {
                            m(0, j) + m(1, j) + m(2, j)
                        } else {
                            m(1, j) - m(2, j) - m(3, j)
                        }
                    });
                    *y = [s[0] + s[1] + s[2], s[1] - s[2] - s[3]];
                }
                for (i, y) in y.iter().enumerate() {
                    let oy = 2 * ty + i;
                    if oy >= out_h {
                        break;
                    }
                    for (j, &value) in y.iter().enumerate() {
                        let ox = 2 * tx + j;
                        if ox < out_w {
                            out_f[oy * out_w + ox] = value + b;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im2col::{col2im_image, im2col_image};
    use crate::rng::Rng;
    use proptest::prelude::*;

    /// The book's route for one image: `out = W · im2col(x) + b`.
    fn book_convolution(x: &[f64], g: &ConvGeometry, weight: &[f64], bias: &[f64]) -> Vec<f64> {
        let (k, pixels) = (g.col_width(), g.out_pixels());
        let mut col = vec![0.0; k * pixels];
        im2col_image(x, g, &mut col);
        let mut out = vec![0.0; bias.len() * pixels];
        for (f, out_f) in out.chunks_mut(pixels).enumerate() {
            for (p, o) in out_f.iter_mut().enumerate() {
                *o = bias[f] + (0..k).map(|j| weight[f * k + j] * col[j * pixels + p]).sum::<f64>();
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
        let mut plane = Vec::new();
        for (i, x) in images.iter().enumerate() {
            transform_input(x, wg, &mut plane, &mut v, group_tiles, i * t);
        }
        multiply(u, &v, &mut m, filters, c, group_tiles);
        let out_len = filters * wg.g.out_pixels();
        (0..images.len())
            .map(|i| {
                let mut out = vec![f64::NAN; out_len];
                transform_output(&m, wg, filters, group_tiles, i * t, bias, &mut out);
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
            transform_filters(&weight, filters, c, false, &mut u);
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
            transform_filters(&weight, filters, c, true, &mut u);
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
        assert_eq!(wg.tiles(), 36); // 12×12 output
    }
}
