//! F(4×4, 3×3) on small maps: the tiles of several images side by side.
//!
//! The phase-plane layout of [the parent module](super) ends each row of
//! tiles with a junk tile, which is what lets one image's transforms read
//! contiguous runs. On an 8×8 output (`deep`'s conv5 and conv6) that is 6
//! tiles for 4 real ones, and one image's tiles fill less than half a
//! vector. Here the tiles of a group of images are numbered one after
//! another, with none left over:
//!
//! ```text
//! tile t = n · (tiles_h · tiles_w) + ty · tiles_w + tx      (image n, tile (ty, tx))
//! padded[n, c]: (4·tiles_h + 2) × (4·tiles_w + 2)           each image padded to whole tiles
//! V[ξ][c][t] = (Bᵀ d B)[ξ]     d: the 6×6 patch of padded[n, c] at (4ty, 4tx)
//! M[ξ] = U[ξ] · V[ξ]                                        (super::multiply, unchanged)
//! out[n, f, 4ty + k, 4tx + l] = (Aᵀ M A)[k][l]              where inside the output
//! ```
//!
//! Sixteen consecutive tiles (four 8×8 images) are the vector lanes of
//! every transform; the input's patches are gathered value by value and
//! the output's values scattered, where the phase layout reads and writes
//! whole runs. Each lane is still one tile from start to end, with the same
//! operations in the same order as the phase layout's, so a tile's output
//! has the same bits by either layout.

use super::{input_1d, output_1d, transform_2d, Dest, Lanes, Source, Tiling, LANES, POSITIONS};
use crate::kernels::vectorize;
use crate::tensor::Float;

/// How the tiles of images with `out_h × out_w` outputs are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Channels, filters and the output's size (its junk tile is not used
    /// here).
    pub tiling: Tiling,
    /// ⌈OH / 4⌉
    pub tiles_h: usize,
    /// ⌈OW / 4⌉
    pub tiles_w: usize,
}

impl Packing {
    /// The packing of `out_h × out_w` outputs of `filters` over `channels`.
    pub fn new(channels: usize, filters: usize, out_h: usize, out_w: usize) -> Self {
        Packing {
            tiling: Tiling::new(channels, filters, out_h, out_w),
            tiles_h: out_h.div_ceil(4),
            tiles_w: out_w.div_ceil(4),
        }
    }

    /// Tiles of one image.
    pub fn image_tiles(&self) -> usize {
        self.tiles_h * self.tiles_w
    }

    /// Rows of an image padded to whole tiles: each tile reads 6 rows.
    pub fn padded_h(&self) -> usize {
        4 * self.tiles_h + 2
    }

    /// Columns of an image padded to whole tiles.
    pub fn padded_w(&self) -> usize {
        4 * self.tiles_w + 2
    }

    /// Values of one padded image, all its channels.
    pub fn padded_len(&self) -> usize {
        self.tiling.channels * self.padded_h() * self.padded_w()
    }

    /// Columns of `V` and `M` that `images` images need: their tiles,
    /// rounded up to whole vectors.
    pub fn plane(&self, images: usize) -> usize {
        (images * self.image_tiles()).next_multiple_of(LANES)
    }

    /// Where tile `t`'s patch starts in the padded images, channel 0.
    fn patch_start(&self, t: usize) -> usize {
        let (n, r) = (t / self.image_tiles(), t % self.image_tiles());
        let (ty, tx) = (r / self.tiles_w, r % self.tiles_w);
        n * self.padded_len() + 4 * ty * self.padded_w() + 4 * tx
    }
}

/// `images` images of `src` (`image_len` apart, each as `source` says)
/// into `padded`, [`Packing::padded_len`] values each: the image where
/// the convolution sees it, zeros around it and in the rest of the last
/// tiles.
pub fn pad_images<T: Float>(
    src: &[T],
    source: Source,
    image_len: usize,
    packing: &Packing,
    images: usize,
    padded: &mut [T],
) {
    let (ph, pw, channels) = (
        packing.padded_h(),
        packing.padded_w(),
        packing.tiling.channels,
    );
    let padded = &mut padded[..images * packing.padded_len()];
    padded.fill(T::zero());
    // The rows and columns of the image the tiles read.
    let rows = source.rows.min(ph.saturating_sub(source.shift));
    let cols = source.cols.min(pw.saturating_sub(source.shift));
    for (n, padded_n) in padded.chunks_exact_mut(packing.padded_len()).enumerate() {
        let src_n = &src[n * image_len..];
        for (c, padded_c) in padded_n
            .chunks_exact_mut(ph * pw)
            .enumerate()
            .take(channels)
        {
            for y in 0..rows {
                let from = &src_n[c * source.plane + y * source.row..][..cols];
                padded_c[(y + source.shift) * pw + source.shift..][..cols].copy_from_slice(from);
            }
        }
    }
}

/// `V = Bᵀ d B` of every tile of the first `images` padded images:
/// `v[(ξ·C + c)·plane + t]`, `t` as in the module documentation. The
/// columns from the last tile to [`Packing::plane`] hold copies of the
/// last tile. The AVX-512 (or AVX2) build of the same code when `vector`.
pub fn transform_input<T: Float>(
    padded: &[T],
    packing: &Packing,
    images: usize,
    v: &mut [T],
    plane: usize,
    vector: bool,
) {
    let channels = packing.tiling.channels;
    let tiles = images * packing.image_tiles();
    assert!(
        tiles > 0 && packing.plane(images) <= plane,
        "winograd: v plane"
    );
    assert!(v.len() >= POSITIONS * channels * plane, "winograd: v");
    assert!(
        padded.len() >= images * packing.padded_len(),
        "winograd: padded"
    );
    // The loops as a function the wide build inlines (a closure it might
    // compile once, without the wide vectors).
    if vector {
        vectorize::widest(
            #[inline(always)]
            || input_tiles(padded, packing, tiles, v, plane),
        )
    } else {
        input_tiles(padded, packing, tiles, v, plane)
    }
}

/// [`transform_input`]'s loops over `tiles` tiles.
#[inline(always)]
fn input_tiles<T: Float>(padded: &[T], packing: &Packing, tiles: usize, v: &mut [T], plane: usize) {
    let channels = packing.tiling.channels;
    let (pw, channel_len) = (packing.padded_w(), packing.padded_h() * packing.padded_w());
    let mut columns = [[[T::zero(); LANES]; 6]; 6];
    for t0 in (0..tiles).step_by(LANES) {
        let starts: [usize; LANES] =
            std::array::from_fn(|lane| packing.patch_start((t0 + lane).min(tiles - 1)));
        for c in 0..channels {
            let load = |i: usize, j: usize, d: &mut Lanes<T>| {
                let at = c * channel_len + i * pw + j;
                for (value, start) in d.iter_mut().zip(&starts) {
                    *value = padded[start + at];
                }
            };
            transform_2d(load, input_1d, &mut columns, |k, l, values| {
                let start = ((k * 6 + l) * channels + c) * plane + t0;
                v[start..start + LANES].copy_from_slice(values);
            });
        }
    }
}

/// Each image's output `Aᵀ M A` from `m` (as [`super::multiply`] writes
/// it, `plane` apart): filter `f`'s value at `(y, x)` of image `n` goes to
/// `out[n·image_stride + f·dest.plane + dest.offset + y·dest.row + x]`, for
/// the `out_h × out_w` values of each filter only.
#[allow(clippy::too_many_arguments)]
pub fn transform_output<T: Float>(
    m: &[T],
    packing: &Packing,
    images: usize,
    plane: usize,
    dest: Dest,
    image_stride: usize,
    out: &mut [T],
    vector: bool,
) {
    let tiling = &packing.tiling;
    let filters = tiling.filters;
    let tiles = images * packing.image_tiles();
    assert!(
        tiles > 0 && packing.plane(images) <= plane,
        "winograd: m plane"
    );
    assert!(m.len() >= tiling.m_len(plane), "winograd: m");
    let last = (images - 1) * image_stride
        + (filters - 1) * dest.plane
        + dest.offset
        + (tiling.out_h - 1) * dest.row
        + tiling.out_w;
    assert!(last <= out.len(), "winograd: output");
    if vector {
        vectorize::widest(
            #[inline(always)]
            || output_tiles(m, packing, tiles, plane, dest, image_stride, out),
        )
    } else {
        output_tiles(m, packing, tiles, plane, dest, image_stride, out)
    }
}

/// [`transform_output`]'s loops over `tiles` tiles.
#[inline(always)]
fn output_tiles<T: Float>(
    m: &[T],
    packing: &Packing,
    tiles: usize,
    plane: usize,
    dest: Dest,
    image_stride: usize,
    out: &mut [T],
) {
    let tiling = &packing.tiling;
    let filters = tiling.filters;
    let mut columns = [[[T::zero(); LANES]; 4]; 6];
    for t0 in (0..tiles).step_by(LANES) {
        let lanes = LANES.min(tiles - t0);
        // Each lane's first output value, and its tile's rows and
        // columns inside the output.
        let places: [(usize, usize, usize); LANES] = std::array::from_fn(|lane| {
            let t = t0 + lane.min(lanes - 1);
            let (n, r) = (t / packing.image_tiles(), t % packing.image_tiles());
            let (ty, tx) = (r / packing.tiles_w, r % packing.tiles_w);
            let start = n * image_stride + dest.offset + 4 * ty * dest.row + 4 * tx;
            let rows = (tiling.out_h - 4 * ty).min(4);
            (start, rows, (tiling.out_w - 4 * tx).min(4))
        });
        for f in 0..filters {
            let load = |i: usize, j: usize, d: &mut Lanes<T>| {
                let start = ((i * 6 + j) * filters + f) * plane + t0;
                d.copy_from_slice(&m[start..start + LANES]);
            };
            let out_f = f * dest.plane;
            transform_2d(load, output_1d, &mut columns, |k, l, values| {
                for (&value, &(start, rows, cols)) in values.iter().zip(&places).take(lanes) {
                    if k < rows && l < cols {
                        out[start + out_f + k * dest.row + l] = value;
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{conv_image, multiply, transform_filters, WeightLayout};
    use super::*;
    use crate::rng::Rng;

    /// Several images through the packed layout, each compared with the
    /// phase layout's [`conv_image`] of the same image.
    fn packed_images<T: Float>(
        src: &[T],
        source: Source,
        image_len: usize,
        images: usize,
        weight: &[T],
        packing: &Packing,
        vector: bool,
    ) -> Vec<T> {
        let tiling = &packing.tiling;
        let plane = packing.plane(images);
        let mut padded = vec![T::cast(f64::NAN); images * packing.padded_len()];
        let mut u = vec![T::zero(); tiling.u_len()];
        let mut v = vec![T::zero(); tiling.v_len(plane)];
        let mut m = vec![T::zero(); tiling.m_len(plane)];
        transform_filters(
            weight,
            WeightLayout::forward(tiling.channels),
            tiling,
            &mut u,
        );
        pad_images(src, source, image_len, packing, images, &mut padded);
        transform_input(&padded, packing, images, &mut v, plane, vector);
        multiply(
            &u,
            &v,
            tiling,
            plane,
            images * packing.image_tiles(),
            &mut m,
            vector,
        );
        // Rows 3 values wider than the output, planes 5 apart, images 7:
        // what lies between them must stay untouched.
        let dest = Dest {
            plane: tiling.out_h * (tiling.out_w + 3) + 5,
            offset: 2,
            row: tiling.out_w + 3,
        };
        let image_stride = tiling.filters * dest.plane + 7;
        let mut out = vec![T::cast(-7.0); images * image_stride];
        transform_output(
            &m,
            packing,
            images,
            plane,
            dest,
            image_stride,
            &mut out,
            vector,
        );
        let mut got = Vec::new();
        for n in 0..images {
            for (i, &value) in out[n * image_stride..][..image_stride].iter().enumerate() {
                let inside = i.checked_sub(dest.offset).is_some_and(|i| {
                    let (f, p) = (i / dest.plane, i % dest.plane);
                    f < tiling.filters && p / dest.row < tiling.out_h && p % dest.row < tiling.out_w
                });
                if inside {
                    got.push(value);
                } else {
                    assert_eq!(value, T::cast(-7.0), "image {n}, [{i}] written");
                }
            }
        }
        got
    }

    /// (channels, filters, rows, cols, pad, images): 8×8 maps as `deep`
    /// has them, partial tiles, no padding, a group that does not fill
    /// its last vector.
    const CASES: [(usize, usize, usize, usize, usize, usize); 6] = [
        (32, 64, 8, 8, 1, 16),
        (5, 7, 8, 8, 1, 3),
        (3, 5, 7, 9, 1, 5),
        (2, 3, 14, 14, 2, 2),
        (4, 2, 6, 6, 0, 7),
        (1, 1, 4, 4, 0, 1),
    ];

    /// The packed layout gives each image the phase layout's bits, in f64
    /// and in f32, plain and vector; the phase layout is checked against
    /// the definition in the parent module's tests.
    #[test]
    fn packed_tiles_give_the_phase_layouts_bits() {
        let mut rng = Rng::new(21);
        for (channels, filters, rows, cols, pad, images) in CASES {
            let source = Source {
                rows,
                cols,
                row: cols + 1,
                plane: rows * (cols + 1) + 2,
                shift: pad,
            };
            let image_len = channels * source.plane + 3;
            let (out_h, out_w) = (rows + 2 * pad - 2, cols + 2 * pad - 2);
            let packing = Packing::new(channels, filters, out_h, out_w);
            let src: Vec<f64> = (0..images * image_len).map(|_| rng.normal()).collect();
            let weight: Vec<f64> = (0..filters * channels * 9).map(|_| rng.normal()).collect();
            let src32: Vec<f32> = src.iter().map(|&v| v as f32).collect();
            let w32: Vec<f32> = weight.iter().map(|&v| v as f32).collect();
            let case = (channels, filters, rows, cols, pad, images);
            let mut want64 = Vec::new();
            let mut want32 = Vec::new();
            for n in 0..images {
                let tiling = &packing.tiling;
                let mut out64 = vec![0.0; filters * out_h * out_w];
                let at = n * image_len;
                conv_image(
                    &src[at..],
                    source,
                    &weight,
                    WeightLayout::forward(channels),
                    tiling,
                    &mut out64,
                    false,
                );
                want64.extend(out64);
                let mut out32 = vec![0.0f32; filters * out_h * out_w];
                conv_image(
                    &src32[at..],
                    source,
                    &w32,
                    WeightLayout::forward(channels),
                    tiling,
                    &mut out32,
                    true,
                );
                want32.extend(out32);
            }
            let got64 = packed_images(&src, source, image_len, images, &weight, &packing, false);
            assert!(
                got64
                    .iter()
                    .zip(&want64)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{case:?} f64"
            );
            for vector in [false, true] {
                let got32 =
                    packed_images(&src32, source, image_len, images, &w32, &packing, vector);
                assert_eq!(got32.len(), want32.len());
                let same = got32
                    .iter()
                    .zip(&want32)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{case:?} f32, vector {vector}");
            }
        }
    }
}
