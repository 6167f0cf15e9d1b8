//! Winograd's minimal filtering F(4×4, 3×3): a 3×3, stride-1 convolution
//! with 4× fewer multiplications than its definition (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016). Not in the book;
//! the layer uses it where it is faster than the product without `col`
//! ([`direct_conv`]), and the tests check it against
//! that definition.
//!
//! The output is cut into 4×4 tiles. A tile depends on the 6×6 patch `d` of
//! the input under it; for one filter `g` (3×3) and one channel,
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A              (4×4; ⊙ multiplies elementwise)
//!
//!      ⎡4  0 −5  0  1  0⎤        ⎡ ¼     0     0 ⎤
//!      ⎢0 −4 −4  1  1  0⎥        ⎢−⅙    −⅙    −⅙ ⎥        ⎡1  1  1  1  1  0⎤
//! Bᵀ = ⎢0  4 −4 −1  1  0⎥    G = ⎢−⅙     ⅙    −⅙ ⎥   Aᵀ = ⎢0  1 −1  2 −2  0⎥
//!      ⎢0 −2 −1  2  1  0⎥        ⎢1/24  1/12  ⅙ ⎥        ⎢0  1  1  4  4  0⎥
//!      ⎢0  2 −1 −2  1  0⎥        ⎢1/24 −1/12  ⅙ ⎥        ⎣0  1 −1  8 −8  1⎦
//!      ⎣0  4  0 −5  0  1⎦        ⎣ 0     0     1 ⎦
//! ```
//!
//! 36 multiplications per tile and channel instead of 16·9 = 144; the
//! transforms are additions and multiplications by constants. Summed over
//! the channels, the elementwise products become 36 matrix products, one
//! per position ξ of the 6×6 transformed tile:
//!
//! ```text
//! U[ξ]: (FN, C)   the filters transformed, G g Gᵀ         (transform_filters)
//! V[ξ]: (C, T)    the T tiles of the input transformed, Bᵀ d B  (transform_input)
//! M[ξ] = U[ξ] · V[ξ]                       (FN, T)        (multiply)
//! out  = Aᵀ M A for each filter and tile                  (transform_output)
//! ```
//!
//! **Layout.** Tile `(ty, tx)` is number `t = ty · row_tiles + tx`, with one
//! junk tile at the end of each row (`row_tiles = tiles_w + 1`). The input is
//! first split into 16 phase planes, `Q[pr·4 + pc][R·row_tiles + X] =
//! in[4R + pr, 4X + pc]`, so that `d[i][j]` of 16 consecutive tiles is one
//! contiguous run of 16 values of a phase plane (the junk tile is what keeps
//! it contiguous across tile rows). Every transform then works on 16 tiles at
//! once, one per vector lane, and each lane is one tile from start to end:
//! whatever the junk lanes hold never reaches another lane. The output
//! transform writes phase planes too, which are interleaved into the
//! output's rows. The products are [`direct_conv`]'s
//! kernel as a 1×1 convolution.
//!
//! **Rounding.** The transforms add up to 36 terms of each sign, so the
//! results differ from the definition by a few units in the last place of
//! f32 more than a direct sum does (measured in the tests).
//!
//! The transforms are plain Rust over 16 lanes, compiled for AVX-512 when
//! `vector` is asked for and the CPU has it: the same operations in the
//! same order either way, so the same bits.
//!
//! ```
//! use convnet::kernels::winograd::{conv_image, Source, Tiling, WeightLayout};
//! // One 6×6 channel, unpadded: a 4×4 output; the filter picks the centre.
//! let tiling = Tiling::new(1, 1, 4, 4);
//! let x: Vec<f64> = (0..36).map(f64::from).collect();
//! let mut g = [0.0; 9];
//! g[4] = 1.0;
//! let source = Source { rows: 6, cols: 6, row: 6, plane: 36, shift: 0 };
//! let mut out = vec![0.0; 16];
//! conv_image(&x, source, &g, WeightLayout::forward(1), &tiling, &mut out, false);
//! for y in 0..4 {
//!     for x_ in 0..4 {
//!         assert!((out[y * 4 + x_] - x[(y + 1) * 6 + x_ + 1]).abs() < 1e-12);
//!     }
//! }
//! ```

pub mod packed;

use super::direct_conv::{self, Pointwise};
use super::gemm::{matmul, MatMut, MatRef};
use crate::tensor::Float;

/// Positions of a transformed 6×6 tile: the matrix products per layer.
pub const POSITIONS: usize = 36;

/// Tiles per vector: the transforms work on this many at once.
pub const LANES: usize = 16;

/// 16 tiles' values of one position.
type Lanes<T> = [T; LANES];

/// Where the input of one image is read: `channels` planes `plane` apart,
/// rows `row` apart, of which `rows × cols` values hold the image; the
/// convolution sees `in[y, x] = src[(y − shift)·row + (x − shift)]` where
/// that lies inside them, and 0 elsewhere (its zero padding, `shift` = P for
/// an unpadded image, 0 for one already padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// Rows of the image in each plane.
    pub rows: usize,
    /// Values of each of its rows.
    pub cols: usize,
    /// Distance between rows.
    pub row: usize,
    /// Distance between channel planes.
    pub plane: usize,
    /// Zero rows and columns before the image (the padding it lacks).
    pub shift: usize,
}

/// How the weights are read: the weight of input channel `c`, tap `t =
/// fy·3 + fx` and output `f` is `W[first + c·w_in + t·w_tap + f·w_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightLayout {
    /// Index of input channel 0, tap 0, output 0.
    pub first: usize,
    /// Step from one input channel to the next.
    pub w_in: isize,
    /// Step from one tap to the next.
    pub w_tap: isize,
    /// Step from one output to the next.
    pub w_out: isize,
}

impl WeightLayout {
    /// `W: (FN, C, 3, 3)` as the layer holds it, for its forward.
    pub fn forward(channels: usize) -> Self {
        WeightLayout {
            first: 0,
            w_in: 9,
            w_tap: 1,
            w_out: 9 * channels as isize,
        }
    }

    /// The same W for backward to the input: the input channels are the
    /// layer's filters, the outputs its channels, each 3×3 turned by 180°.
    pub fn turned(channels: usize) -> Self {
        WeightLayout {
            first: 8,
            w_in: 9 * channels as isize,
            w_tap: -1,
            w_out: 9,
        }
    }

    /// The weight gradient written transposed, `dW^T: (C·3·3, FN)`, as
    /// the convolution's backward hands it to the layer.
    pub fn grad_transposed(filters: usize) -> Self {
        WeightLayout {
            first: 0,
            w_in: 9 * filters as isize,
            w_tap: filters as isize,
            w_out: 1,
        }
    }

    fn index(&self, c: usize, tap: usize, f: usize) -> usize {
        let offset = c as isize * self.w_in + tap as isize * self.w_tap + f as isize * self.w_out;
        (self.first as isize + offset) as usize
    }
}

/// The tiles of one image's `out_h × out_w` output, with `channels` inputs
/// and `filters` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Input channels C.
    pub channels: usize,
    /// Outputs FN.
    pub filters: usize,
    /// Output rows OH.
    pub out_h: usize,
    /// Output columns OW.
    pub out_w: usize,
    /// ⌈OH / 4⌉
    pub tiles_h: usize,
    /// ⌈OW / 4⌉ + 1: a junk tile ends each row.
    pub row_tiles: usize,
}

impl Tiling {
    /// The tiles of an `out_h × out_w` output.
    pub fn new(channels: usize, filters: usize, out_h: usize, out_w: usize) -> Self {
        Tiling {
            channels,
            filters,
            out_h,
            out_w,
            tiles_h: out_h.div_ceil(4),
            row_tiles: out_w.div_ceil(4) + 1,
        }
    }

    /// Tiles of one image, junk tiles included: its columns of `V` and `M`.
    pub fn image_tiles(&self) -> usize {
        self.tiles_h * self.row_tiles
    }

    /// Columns the transforms touch per image: whole vectors of tiles.
    pub fn image_span(&self) -> usize {
        self.image_tiles().next_multiple_of(LANES)
    }

    /// Values of one phase plane of the input: the tile rows and one more,
    /// and what the last vector of tiles reads past them.
    fn phase_plane(&self) -> usize {
        ((self.tiles_h + 1) * self.row_tiles).max(self.image_span() + self.row_tiles + 1)
    }

    /// Length of [`transform_filters`]'s `u`: (36, FN, C).
    pub fn u_len(&self) -> usize {
        POSITIONS * self.filters * self.channels
    }

    /// Length of `v` for images whose tiles start at most at
    /// `last_offset`, `plane` apart per position and channel: see
    /// [`transform_input`].
    pub fn v_len(&self, plane: usize) -> usize {
        POSITIONS * self.channels * plane
    }

    /// Length of `m`, as [`Tiling::v_len`] for the filters.
    pub fn m_len(&self, plane: usize) -> usize {
        POSITIONS * self.filters * plane
    }
}

/// `u[ξ, f, c] = (G g Gᵀ)[ξ]` for every filter `f` and input channel `c`,
/// `g` read from `weight` as `layout` says; `u: (36, FN, C)`.
///
/// The pairs (f, c) are taken 16 at a time (`PAIRS_PER_BLOCK`), in the order
/// of `u`'s rows: each of the 36 positions then gets a run of consecutive
/// values, where one pair at a time would write 36 values a row of `u`
/// apart (36 cache lines touched per pair; the transform took 2.8 times
/// as long, docs/performance.md). Every value is the same arithmetic
/// either way.
pub fn transform_filters<T: Float>(
    weight: &[T],
    layout: WeightLayout,
    tiling: &Tiling,
    u: &mut [T],
) {
    let (channels, filters) = (tiling.channels, tiling.filters);
    assert_eq!(u.len(), tiling.u_len(), "winograd: u");
    let c = |x: f64| T::cast(x);
    let pairs = filters * channels;
    // block[j][ξ]: pair first + j's value at position ξ.
    let mut block = [[T::zero(); POSITIONS]; PAIRS_PER_BLOCK];
    for first in (0..pairs).step_by(PAIRS_PER_BLOCK) {
        let len = PAIRS_PER_BLOCK.min(pairs - first);
        for (j, values) in block[..len].iter_mut().enumerate() {
            let (f, ch) = ((first + j) / channels, (first + j) % channels);
            let g = |fy: usize, fx: usize| weight[layout.index(ch, fy * 3 + fx, f)];
            // t = G g: (6, 3)
            let t: [[T; 3]; 6] = std::array::from_fn(|k| {
                std::array::from_fn(|i| filter_1d(k, [g(0, i), g(1, i), g(2, i)], c))
            });
            for k in 0..6 {
                for l in 0..6 {
                    values[k * 6 + l] = filter_1d(l, t[k], c);
                }
            }
        }
        for position in 0..POSITIONS {
            let run = &mut u[position * pairs + first..][..len];
            for (value, pair) in run.iter_mut().zip(&block) {
                *value = pair[position];
            }
        }
    }
}

/// Pairs (filter, channel) that [`transform_filters`] transforms before it
/// writes them out: a cache line of f32 per position.
const PAIRS_PER_BLOCK: usize = 16;

/// Row `k` of `G` times `g`.
fn filter_1d<T: Float>(k: usize, g: [T; 3], c: impl Fn(f64) -> T) -> T {
    match k {
        0 => c(0.25) * g[0],
        1 => c(-1.0 / 6.0) * (g[0] + g[1] + g[2]),
        2 => c(-1.0 / 6.0) * (g[0] - g[1] + g[2]),
        3 => c(1.0 / 24.0) * g[0] + c(1.0 / 12.0) * g[1] + c(1.0 / 6.0) * g[2],
        4 => c(1.0 / 24.0) * g[0] - c(1.0 / 12.0) * g[1] + c(1.0 / 6.0) * g[2],
        _ => g[2],
    }
}

/// One image's `V = Bᵀ d B` for every tile and channel: `v[(ξ·C + c)·plane
/// + offset + t]` for `t` below [`Tiling::image_span`] (past
/// [`Tiling::image_tiles`], junk that a later image's `offset` may
/// overwrite). `phases` is a buffer for the phase planes.
#[allow(clippy::too_many_arguments)]
pub fn transform_input<T: Float>(
    src: &[T],
    source: Source,
    tiling: &Tiling,
    phases: &mut Vec<T>,
    v: &mut [T],
    plane: usize,
    offset: usize,
    vector: bool,
) {
    let span = tiling.image_span();
    assert!(offset + span <= plane, "winograd: v plane");
    assert!(v.len() >= tiling.v_len(plane), "winograd: v");
    let mut columns = [[[T::zero(); LANES]; 6]; 6];
    let planes = tiling.channels;
    split_each_plane(
        src,
        source,
        tiling,
        planes,
        phases,
        vector,
        |c, phases, fast| {
            let phase_plane = tiling.phase_plane();
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: `split_each_plane` says AVX-512F was detected.
                return unsafe {
                    avx512::input_channel(
                        tiling,
                        c,
                        phases,
                        phase_plane,
                        v,
                        plane,
                        offset,
                        &mut columns,
                    )
                };
            }
            let _ = fast;
            input_channel(
                tiling,
                c,
                phases,
                phase_plane,
                v,
                plane,
                offset,
                &mut columns,
            );
        },
    );
}

/// For each of the `planes` planes of `src` (as `source` says), its phase
/// planes into `phases` ([`split_phases`]), then `each(plane, phases,
/// fast)`, where `fast` says that the AVX-512 code may run (`vector`
/// asked for, and [`direct_conv::cpu_applies`]).
fn split_each_plane<T: Float>(
    src: &[T],
    source: Source,
    tiling: &Tiling,
    planes: usize,
    phases: &mut Vec<T>,
    vector: bool,
    mut each: impl FnMut(usize, &[T], bool),
) {
    assert!(
        (planes - 1) * source.plane + (source.rows - 1) * source.row + source.cols <= src.len(),
        "winograd: source"
    );
    let phase_plane = tiling.phase_plane();
    phases.resize(16 * phase_plane, T::zero());
    let fast = vector && direct_conv::cpu_applies::<T>();
    for p in 0..planes {
        let src_p = &src[p * source.plane..];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F was detected (`fast`); T is f32 (cpu_applies).
        let split =
            fast && unsafe { avx512::split_phases(src_p, source, tiling, phase_plane, phases) };
        #[cfg(not(target_arch = "x86_64"))]
        let split = false;
        if !split {
            split_phases(src_p, source, tiling, phase_plane, phases);
        }
        each(p, phases, fast);
    }
}

/// `phases[(pr·4 + pc)·phase_plane + R·row_tiles + X] = in[4R + pr, 4X + pc]`
/// of one channel, for the tile rows and the one below them.
fn split_phases<T: Float>(
    src_c: &[T],
    source: Source,
    tiling: &Tiling,
    phase_plane: usize,
    phases: &mut [T],
) {
    let (rows, row_tiles) = (tiling.tiles_h + 1, tiling.row_tiles);
    for y in 0..4 * rows {
        let (pr, r) = (y % 4, y / 4);
        let src_y = y.checked_sub(source.shift).filter(|&sy| sy < source.rows);
        for pc in 0..4 {
            let phase = &mut phases[(pr * 4 + pc) * phase_plane + r * row_tiles..][..row_tiles];
            let Some(sy) = src_y else {
                phase.fill(T::zero());
                continue;
            };
            let src_row = &src_c[sy * source.row..];
            for (x_tile, value) in phase.iter_mut().enumerate() {
                let x = 4 * x_tile + pc;
                *value = match x.checked_sub(source.shift) {
                    Some(sx) if sx < source.cols => src_row[sx],
                    _ => T::zero(),
                };
            }
        }
    }
}

/// [`transform_input`] for channel `c` once its phases are split.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_channel<T: Float>(
    tiling: &Tiling,
    c: usize,
    phases: &[T],
    phase_plane: usize,
    v: &mut [T],
    plane: usize,
    offset: usize,
    columns: &mut [[Lanes<T>; 6]; 6],
) {
    let (channels, row_tiles) = (tiling.channels, tiling.row_tiles);
    for t0 in (0..tiling.image_span()).step_by(LANES) {
        // Bᵀ d B: d[i][j] is a run of the phase plane (i % 4, j % 4).
        let load = |i: usize, j: usize, d: &mut Lanes<T>| {
            let start = ((i % 4) * 4 + j % 4) * phase_plane + t0 + (i / 4) * row_tiles + j / 4;
            d.copy_from_slice(&phases[start..start + LANES]);
        };
        transform_2d(load, input_1d, columns, |k, l, values| {
            let start = ((k * 6 + l) * channels + c) * plane + offset + t0;
            v[start..start + LANES].copy_from_slice(values);
        });
    }
}

/// `T d Tᵀ` of 16 tiles at once, for a 1-D transform `one_d` (`T`,
/// OUT × IN): `one_d` on each column of `d` (IN × IN, `load(i, j)`), into
/// `columns[j][k]` = `(T d)[k][j]`, then on each row of that; `store(k, l,
/// values)` takes each of the OUT × OUT results.
#[inline(always)]
// (`k` indexes the inner arrays of `columns`: no iterator stands in for it.)
#[allow(clippy::needless_range_loop)]
fn transform_2d<T: Float, const IN: usize, const OUT: usize>(
    load: impl Fn(usize, usize, &mut Lanes<T>),
    one_d: impl Fn(&[Lanes<T>; IN]) -> [Lanes<T>; OUT],
    columns: &mut [[Lanes<T>; OUT]; IN],
    mut store: impl FnMut(usize, usize, &Lanes<T>),
) {
    for (j, column) in columns.iter_mut().enumerate() {
        let mut d_j = [[T::zero(); LANES]; IN];
        for (i, d_ij) in d_j.iter_mut().enumerate() {
            load(i, j, d_ij);
        }
        *column = one_d(&d_j);
    }
    for k in 0..OUT {
        let mut row_k = [[T::zero(); LANES]; IN];
        for (j, row) in row_k.iter_mut().enumerate() {
            *row = columns[j][k];
        }
        for (l, values) in one_d(&row_k).iter().enumerate() {
            store(k, l, values);
        }
    }
}

/// `Bᵀ d` of six vectors of lanes.
#[inline(always)]
fn input_1d<T: Float>(d: &[Lanes<T>; 6]) -> [Lanes<T>; 6] {
    let (four, five, two) = (T::cast(4.0), T::cast(5.0), T::cast(2.0));
    let mut r = [[T::zero(); LANES]; 6];
    for i in 0..LANES {
        r[0][i] = four * d[0][i] - five * d[2][i] + d[4][i];
        r[1][i] = (d[3][i] + d[4][i]) - four * (d[1][i] + d[2][i]);
        r[2][i] = (d[4][i] - d[3][i]) + four * (d[1][i] - d[2][i]);
        r[3][i] = (d[4][i] - d[2][i]) + two * (d[3][i] - d[1][i]);
        r[4][i] = (d[4][i] - d[2][i]) - two * (d[3][i] - d[1][i]);
        r[5][i] = four * d[1][i] - five * d[3][i] + d[5][i];
    }
    r
}

/// `m[ξ] = u[ξ] · v[ξ]` for the first `len` columns: 36 products of `(FN,
/// C)` by `(C, len)`, `plane` apart as in [`transform_input`].
pub fn multiply<T: Float>(
    u: &[T],
    v: &[T],
    tiling: &Tiling,
    plane: usize,
    len: usize,
    m: &mut [T],
    vector: bool,
) {
    let (channels, filters) = (tiling.channels, tiling.filters);
    assert!(len <= plane && m.len() >= tiling.m_len(plane) && u.len() == tiling.u_len());
    let us = u.chunks_exact(filters * channels);
    let vs = v.chunks_exact(channels * plane);
    let ms = m.chunks_exact_mut(filters * plane);
    let shape = Pointwise {
        channels,
        plane,
        filters,
        weight_row: channels,
        out_plane: plane,
        len,
    };
    for ((u, v), m) in us.zip(vs).zip(ms) {
        direct_conv::pointwise(v, u, shape, m, vector);
    }
}

/// Where [`transform_output`] writes: filter `f`'s value at `(y, x)` goes
/// to `out[f·plane + offset + y·row + x]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest {
    /// Distance between filters' planes.
    pub plane: usize,
    /// Where value (0, 0) of filter 0 goes.
    pub offset: usize,
    /// Distance between rows.
    pub row: usize,
}

/// One image's output `Aᵀ M A` from `m` (laid out as [`multiply`] writes
/// it, the image's tiles from `offset`), into `out` as `dest` says: only
/// the `out_h × out_w` values of each filter are written. `phases` is a
/// buffer for one filter's phase planes.
#[allow(clippy::too_many_arguments)]
pub fn transform_output<T: Float>(
    m: &[T],
    tiling: &Tiling,
    plane: usize,
    offset: usize,
    phases: &mut Vec<T>,
    dest: Dest,
    out: &mut [T],
    vector: bool,
) {
    let span = tiling.image_span();
    assert!(offset + span <= plane && m.len() >= tiling.m_len(plane));
    let last = (tiling.filters - 1) * dest.plane
        + dest.offset
        + (tiling.out_h - 1) * dest.row
        + tiling.out_w;
    assert!(last <= out.len(), "winograd: output");
    phases.resize(16 * span + LANES, T::zero());
    let mut columns = [[[T::zero(); LANES]; 4]; 6];
    for f in 0..tiling.filters {
        let out_f = &mut out[f * dest.plane + dest.offset..];
        #[cfg(target_arch = "x86_64")]
        if vector && direct_conv::cpu_applies::<T>() {
            // SAFETY: AVX-512F was detected; T is f32 (cpu_applies).
            unsafe {
                avx512::output_filter(tiling, f, m, plane, offset, phases, &mut columns);
                if !avx512::interleave_phases(phases, tiling, dest.row, out_f) {
                    interleave_phases(phases, tiling, dest.row, out_f);
                }
            }
            continue;
        }
        let _ = vector;
        output_filter(tiling, f, m, plane, offset, phases, &mut columns);
        interleave_phases(phases, tiling, dest.row, out_f);
    }
}

/// `out_f[y·row + x] = phases[(pr·4 + pc)·span + R·row_tiles + X]` for
/// `y = 4R + pr`, `x = 4X + pc`: one filter's phase planes into its rows.
fn interleave_phases<T: Float>(phases: &[T], tiling: &Tiling, row: usize, out_f: &mut [T]) {
    let span = tiling.image_span();
    for y in 0..tiling.out_h {
        let (pr, r) = (y % 4, y / 4);
        let out_row = &mut out_f[y * row..][..tiling.out_w];
        let tiles = &phases[r * tiling.row_tiles..];
        for (x, value) in out_row.iter_mut().enumerate() {
            *value = tiles[(pr * 4 + x % 4) * span + x / 4];
        }
    }
}

/// The 4×4 outputs of filter `f`'s tiles, into its 16 phase planes
/// (`span` apart).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_filter<T: Float>(
    tiling: &Tiling,
    f: usize,
    m: &[T],
    plane: usize,
    offset: usize,
    phases: &mut [T],
    columns: &mut [[Lanes<T>; 4]; 6],
) {
    let (filters, span) = (tiling.filters, tiling.image_span());
    for t0 in (0..span).step_by(LANES) {
        // Aᵀ M A into the phase planes (p, q).
        let load = |k: usize, l: usize, values: &mut Lanes<T>| {
            let start = ((6 * k + l) * filters + f) * plane + offset + t0;
            values.copy_from_slice(&m[start..start + LANES]);
        };
        transform_2d(load, output_1d, columns, |p, q, values| {
            phases[(p * 4 + q) * span + t0..][..LANES].copy_from_slice(values);
        });
    }
}

/// `Aᵀ m` of six vectors of lanes.
#[inline(always)]
fn output_1d<T: Float>(m: &[Lanes<T>; 6]) -> [Lanes<T>; 4] {
    let (two, four, eight) = (T::cast(2.0), T::cast(4.0), T::cast(8.0));
    let mut r = [[T::zero(); LANES]; 4];
    for i in 0..LANES {
        r[0][i] = m[0][i] + (m[1][i] + m[2][i]) + (m[3][i] + m[4][i]);
        r[1][i] = (m[1][i] - m[2][i]) + two * (m[3][i] - m[4][i]);
        r[2][i] = (m[1][i] + m[2][i]) + four * (m[3][i] + m[4][i]);
        r[3][i] = (m[1][i] - m[2][i]) + eight * (m[3][i] - m[4][i]) + m[5][i];
    }
    r
}

/// The weight gradient by the same transforms. With `Y = Aᵀ [U ⊙ V] A`,
/// the gradient with respect to `U` is `(A dY Aᵀ) ⊙ V` summed over the
/// tiles, and with respect to the filter `g`, `Gᵀ (that) G`:
///
/// ```text
/// Ŷ[ξ]: (FN, T)   each 4×4 tile of dout transformed, A dY Aᵀ      (transform_dout)
/// S[ξ] += Ŷ[ξ] · V[ξ]ᵀ                     (FN, C)                (weight_grad_products)
/// dW[f, c] = Gᵀ S[f, c] G                  (3×3)                  (weight_grad_from_sums)
/// ```
///
/// `dout` is read as `source` says (its rows and columns past the output
/// are zeros, so the junk tiles add nothing); `y[(ξ·FN + f)·plane + offset
/// + t]`, like [`transform_input`]'s `v` for the filters.
#[allow(clippy::too_many_arguments)]
pub fn transform_dout<T: Float>(
    dout: &[T],
    source: Source,
    tiling: &Tiling,
    phases: &mut Vec<T>,
    y: &mut [T],
    plane: usize,
    offset: usize,
    vector: bool,
) {
    let span = tiling.image_span();
    assert!(offset + span <= plane, "winograd: y plane");
    assert!(y.len() >= tiling.m_len(plane), "winograd: y");
    let planes = tiling.filters;
    split_each_plane(
        dout,
        source,
        tiling,
        planes,
        phases,
        vector,
        |f, phases, fast| {
            let phase_plane = tiling.phase_plane();
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: `split_each_plane` says AVX-512F was detected.
                return unsafe {
                    avx512::dout_filter(tiling, f, phases, phase_plane, y, plane, offset)
                };
            }
            let _ = fast;
            dout_filter(tiling, f, phases, phase_plane, y, plane, offset);
        },
    );
}

/// [`transform_dout`] for filter `f` once its phases are split: a tile's
/// 4×4 values are the 16 phase planes at the tile's index.
#[inline(always)]
fn dout_filter<T: Float>(
    tiling: &Tiling,
    f: usize,
    phases: &[T],
    phase_plane: usize,
    y: &mut [T],
    plane: usize,
    offset: usize,
) {
    let filters = tiling.filters;
    let mut columns = [[[T::zero(); LANES]; 6]; 4];
    for t0 in (0..tiling.image_span()).step_by(LANES) {
        // A dY Aᵀ: a tile's 4×4 values are the phase planes at its index.
        let load = |p: usize, q: usize, d: &mut Lanes<T>| {
            let start = (p * 4 + q) * phase_plane + t0;
            d.copy_from_slice(&phases[start..start + LANES]);
        };
        transform_2d(load, dout_1d, &mut columns, |k, l, values| {
            let start = ((k * 6 + l) * filters + f) * plane + offset + t0;
            y[start..start + LANES].copy_from_slice(values);
        });
    }
}

/// `A d` of four vectors of lanes (A = (Aᵀ)ᵀ, 6 × 4).
#[inline(always)]
fn dout_1d<T: Float>(d: &[Lanes<T>; 4]) -> [Lanes<T>; 6] {
    let (two, four, eight) = (T::cast(2.0), T::cast(4.0), T::cast(8.0));
    let mut r = [[T::zero(); LANES]; 6];
    for i in 0..LANES {
        let (even, odd) = (d[0][i] + d[2][i], d[1][i] + d[3][i]);
        let (even4, odd2) = (d[0][i] + four * d[2][i], two * d[1][i] + eight * d[3][i]);
        r[0][i] = d[0][i];
        r[1][i] = even + odd;
        r[2][i] = even - odd;
        r[3][i] = even4 + odd2;
        r[4][i] = even4 - odd2;
        r[5][i] = d[3][i];
    }
    r
}

/// `sums[ξ] (FN, C) += ŷ[ξ] · v[ξ]ᵀ` over the first `len` tiles (`=`
/// unless `accumulate`), `ŷ` and `v` laid out as [`transform_dout`] and
/// [`transform_input`] write them: 36 products by `gemm`, or with `vector`
/// on a CPU with AVX-512, by dot products of their rows, 4 filters × 4
/// channels at a time. The outputs are small (24–48 × 24–48 per position)
/// and the rows long (all the chunk's tiles), where `gemm`'s packing
/// costs as much as the multiplications.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_products<T: Float>(
    y: &[T],
    v: &[T],
    tiling: &Tiling,
    plane: usize,
    len: usize,
    sums: &mut [T],
    accumulate: bool,
    vector: bool,
) {
    let (channels, filters) = (tiling.channels, tiling.filters);
    assert!(len <= plane && y.len() >= tiling.m_len(plane) && v.len() >= tiling.v_len(plane));
    assert_eq!(sums.len(), tiling.u_len(), "winograd: sums");
    #[cfg(target_arch = "x86_64")]
    if vector && direct_conv::cpu_applies::<T>() {
        // SAFETY: AVX-512F was detected and T is f32 (cpu_applies); the
        // lengths are checked above.
        unsafe { avx512::weight_grad_products(y, v, tiling, plane, len, sums, accumulate) };
        return;
    }
    let _ = vector;
    let ys = y.chunks_exact(filters * plane);
    let vs = v.chunks_exact(channels * plane);
    for ((y, v), sum) in ys.zip(vs).zip(sums.chunks_exact_mut(filters * channels)) {
        matmul(
            MatMut::new(sum, filters, channels),
            MatRef::strided(y, filters, len, plane, 1),
            // vᵀ: (len, C), column c is v's row c.
            MatRef::strided(v, len, channels, 1, plane),
            accumulate,
            false,
        );
    }
}

/// `dW[f, c] = Gᵀ sums[:, f, c] G` for every filter and channel, written to
/// `dw` where `layout` puts the weight of channel `c`, tap `t`, filter `f`.
pub fn weight_grad_from_sums<T: Float>(
    sums: &[T],
    tiling: &Tiling,
    layout: WeightLayout,
    dw: &mut [T],
) {
    let (channels, filters) = (tiling.channels, tiling.filters);
    assert_eq!(sums.len(), tiling.u_len(), "winograd: sums");
    let c = |x: f64| T::cast(x);
    for f in 0..filters {
        for ch in 0..channels {
            let s = |k: usize, l: usize| sums[((k * 6 + l) * filters + f) * channels + ch];
            // t = Gᵀ S: (3, 6), then (Gᵀ S) G: (3, 3)
            let t: [[T; 6]; 3] = std::array::from_fn(|i| {
                std::array::from_fn(|l| g_transposed_1d(i, std::array::from_fn(|k| s(k, l)), c))
            });
            for (fy, t_row) in t.iter().enumerate() {
                for fx in 0..3 {
                    dw[layout.index(ch, fy * 3 + fx, f)] = g_transposed_1d(fx, *t_row, c);
                }
            }
        }
    }
}

/// Row `i` of `Gᵀ` times six values.
fn g_transposed_1d<T: Float>(i: usize, m: [T; 6], c: impl Fn(f64) -> T) -> T {
    let (quarter, sixth) = (c(0.25), c(1.0 / 6.0));
    let (twelfth, twenty_fourth) = (c(1.0 / 12.0), c(1.0 / 24.0));
    match i {
        0 => quarter * m[0] - sixth * (m[1] + m[2]) + twenty_fourth * (m[3] + m[4]),
        1 => sixth * (m[2] - m[1]) + twelfth * (m[3] - m[4]),
        _ => sixth * ((m[3] + m[4]) - (m[1] + m[2])) + m[5],
    }
}

/// One image's whole convolution by the four steps, into `out:
/// (FN, out_h, out_w)`: for tests and examples.
pub fn conv_image<T: Float>(
    src: &[T],
    source: Source,
    weight: &[T],
    layout: WeightLayout,
    tiling: &Tiling,
    out: &mut [T],
    vector: bool,
) {
    let plane = tiling.image_span();
    let mut u = vec![T::zero(); tiling.u_len()];
    let mut v = vec![T::zero(); tiling.v_len(plane)];
    let mut m = vec![T::zero(); tiling.m_len(plane)];
    let mut phases = Vec::new();
    transform_filters(weight, layout, tiling, &mut u);
    transform_input(src, source, tiling, &mut phases, &mut v, plane, 0, vector);
    multiply(&u, &v, tiling, plane, plane, &mut m, vector);
    let dest = Dest {
        plane: tiling.out_h * tiling.out_w,
        offset: 0,
        row: tiling.out_w,
    };
    transform_output(&m, tiling, plane, 0, &mut phases, dest, out, vector);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Source, Tiling};
    use crate::tensor::Float;
    use std::arch::x86_64::*;

    /// Lanes 0, 2, …, 30 and 1, 3, …, 31 of two vectors.
    const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
    const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
    /// Lanes 0, 16, 1, 17, …, 7, 23 and 8, 24, …, 15, 31: two vectors
    /// interleaved.
    const LOW: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
    const HIGH: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];

    /// The first `n` lanes.
    fn first_lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            !0
        } else {
            (1u16 << n) - 1
        }
    }

    /// [`super::weight_grad_products`] by dot products of the rows of `ŷ`
    /// and `v`: for each position, blocks of 4 filters × 4 channels (1 × 1
    /// at the edges) with 16 partial sums each, added lane by lane in order
    /// of the tiles and reduced at the end: a fixed order.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad_products<T: Float>(
        y: &[T],
        v: &[T],
        tiling: &Tiling,
        plane: usize,
        len: usize,
        sums: &mut [T],
        accumulate: bool,
    ) {
        let (channels, filters) = (tiling.channels, tiling.filters);
        let (y, v) = (y.as_ptr().cast::<f32>(), v.as_ptr().cast::<f32>());
        let sums = sums.as_mut_ptr().cast::<f32>();
        for xi in 0..super::POSITIONS {
            let (y_xi, v_xi) = (y.add(xi * filters * plane), v.add(xi * channels * plane));
            let s_xi = sums.add(xi * filters * channels);
            let (f_full, c_full) = (filters / 4 * 4, channels / 4 * 4);
            // Whole 4 × 4 blocks, then the edges' pairs one by one.
            for f in (0..f_full).step_by(4) {
                for c in (0..c_full).step_by(4) {
                    let (y_f, v_c) = (y_xi.add(f * plane), v_xi.add(c * plane));
                    let dots = dot_block::<4, 4>(y_f, v_c, plane, len);
                    for (i, row) in dots.iter().enumerate() {
                        for (j, &dot) in row.iter().enumerate() {
                            add_or_set(s_xi.add((f + i) * channels + c + j), dot, accumulate);
                        }
                    }
                }
            }
            for f in 0..filters {
                let first_c = if f < f_full { c_full } else { 0 };
                for c in first_c..channels {
                    let (y_f, v_c) = (y_xi.add(f * plane), v_xi.add(c * plane));
                    let dot = dot_block::<1, 1>(y_f, v_c, plane, len)[0][0];
                    add_or_set(s_xi.add(f * channels + c), dot, accumulate);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn add_or_set(sum: *mut f32, dot: f32, accumulate: bool) {
        *sum = if accumulate { *sum + dot } else { dot };
    }

    /// `dots[i][j] = Σ_{t < len} y[i·plane + t] · v[j·plane + t]`.
    #[inline(always)]
    // (`j` and `i` index two dimensions of `acc`.)
    #[allow(clippy::needless_range_loop)]
    unsafe fn dot_block<const BF: usize, const BC: usize>(
        y: *const f32,
        v: *const f32,
        plane: usize,
        len: usize,
    ) -> [[f32; BC]; BF] {
        let mut acc = [[_mm512_setzero_ps(); BC]; BF];
        let mut t = 0;
        while t + 16 <= len {
            dot_step::<BF, BC, false>(&mut acc, y, v, plane, t, !0);
            t += 16;
        }
        if t < len {
            dot_step::<BF, BC, true>(&mut acc, y, v, plane, t, first_lanes(len - t));
        }
        let mut dots = [[0.0; BC]; BF];
        for i in 0..BF {
            for j in 0..BC {
                dots[i][j] = _mm512_reduce_add_ps(acc[i][j]);
            }
        }
        dots
    }

    /// One vector of [`dot_block`]'s sums from `t`: the lanes of `mask`
    /// only if `MASKED` (a masked load takes an arithmetic port as well on
    /// the CPUs measured, which the FMAs need, so whole vectors load
    /// without one).
    #[inline(always)]
    unsafe fn dot_step<const BF: usize, const BC: usize, const MASKED: bool>(
        acc: &mut [[__m512; BC]; BF],
        y: *const f32,
        v: *const f32,
        plane: usize,
        t: usize,
        mask: __mmask16,
    ) {
        let mut ys = [_mm512_setzero_ps(); BF];
        for (i, y_i) in ys.iter_mut().enumerate() {
            let at = y.add(i * plane + t);
            *y_i = if MASKED {
                _mm512_maskz_loadu_ps(mask, at)
            } else {
                _mm512_loadu_ps(at)
            };
        }
        for j in 0..BC {
            let at = v.add(j * plane + t);
            let v_j = if MASKED {
                _mm512_maskz_loadu_ps(mask, at)
            } else {
                _mm512_loadu_ps(at)
            };
            for (acc_i, &y_i) in acc.iter_mut().zip(&ys) {
                acc_i[j] = _mm512_fmadd_ps(y_i, v_j, acc_i[j]);
            }
        }
    }

    /// [`super::split_phases`] by vectors: each input row is loaded as 64
    /// values and split into its four phases by six permutes. `false`, and
    /// nothing written, for rows of more than 16 tiles.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn split_phases<T: Float>(
        src_c: &[T],
        source: Source,
        tiling: &Tiling,
        phase_plane: usize,
        phases: &mut [T],
    ) -> bool {
        let row_tiles = tiling.row_tiles;
        if row_tiles > 16 {
            return false;
        }
        let rows = tiling.tiles_h + 1;
        assert!(phases.len() >= 16 * phase_plane && rows * row_tiles <= phase_plane);
        assert!(source.rows == 0 || (source.rows - 1) * source.row + source.cols <= src_c.len());
        let (src, out) = (
            src_c.as_ptr().cast::<f32>(),
            phases.as_mut_ptr().cast::<f32>(),
        );
        let even = _mm512_loadu_si512(EVEN.as_ptr().cast());
        let odd = _mm512_loadu_si512(ODD.as_ptr().cast());
        let store = first_lanes(row_tiles);
        // Lane i of vector k is x = 16k + i, source column x − shift: the
        // lanes that lie on the image, the same for every row.
        let loads: [__mmask16; 4] = std::array::from_fn(|k| {
            let first = 16 * k;
            let from = source.shift.saturating_sub(first).min(16);
            let to = (source.shift + source.cols).saturating_sub(first).min(16);
            first_lanes(to) & !first_lanes(from)
        });
        for y in 0..4 * rows {
            let (pr, r) = (y % 4, y / 4);
            let mut v = [_mm512_setzero_ps(); 4];
            if let Some(sy) = y.checked_sub(source.shift).filter(|&sy| sy < source.rows) {
                let row = src.add(sy * source.row).wrapping_sub(source.shift);
                for ((k, v), &mask) in v.iter_mut().enumerate().zip(&loads) {
                    if mask != 0 {
                        *v = _mm512_maskz_loadu_ps(mask, row.wrapping_add(16 * k));
                    }
                }
            }
            // Evens and odds of x, then of those: x % 4 = 0, 2 and 1, 3.
            let e1 = _mm512_permutex2var_ps(v[0], even, v[1]);
            let o1 = _mm512_permutex2var_ps(v[0], odd, v[1]);
            let e2 = _mm512_permutex2var_ps(v[2], even, v[3]);
            let o2 = _mm512_permutex2var_ps(v[2], odd, v[3]);
            let split = [
                _mm512_permutex2var_ps(e1, even, e2),
                _mm512_permutex2var_ps(o1, even, o2),
                _mm512_permutex2var_ps(e1, odd, e2),
                _mm512_permutex2var_ps(o1, odd, o2),
            ];
            for (pc, values) in split.into_iter().enumerate() {
                let at = out.add((pr * 4 + pc) * phase_plane + r * row_tiles);
                _mm512_mask_storeu_ps(at, store, values);
            }
        }
        true
    }

    /// [`super::interleave_phases`] by vectors: four phase rows of up to 16
    /// tiles become an output row of up to 64 values by eight permutes.
    /// `false`, and nothing written, for rows of more than 16 tiles.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interleave_phases<T: Float>(
        phases: &[T],
        tiling: &Tiling,
        row: usize,
        out_f: &mut [T],
    ) -> bool {
        let (row_tiles, span, out_w) = (tiling.row_tiles, tiling.image_span(), tiling.out_w);
        if row_tiles > 16 {
            return false;
        }
        let last_read = 15 * span + (tiling.tiles_h - 1) * row_tiles + 16;
        assert!(phases.len() >= last_read, "winograd: phases");
        assert!(
            (tiling.out_h - 1) * row + out_w <= out_f.len(),
            "winograd: output"
        );
        let (src, out) = (
            phases.as_ptr().cast::<f32>(),
            out_f.as_mut_ptr().cast::<f32>(),
        );
        let low = _mm512_loadu_si512(LOW.as_ptr().cast());
        let high = _mm512_loadu_si512(HIGH.as_ptr().cast());
        for y in 0..tiling.out_h {
            let (pr, r) = (y % 4, y / 4);
            let p: [__m512; 4] = std::array::from_fn(|pc| {
                _mm512_loadu_ps(src.add((pr * 4 + pc) * span + r * row_tiles))
            });
            // x % 4 = 0 with 2, 1 with 3; then those two together.
            let (e_lo, e_hi) = (
                _mm512_permutex2var_ps(p[0], low, p[2]),
                _mm512_permutex2var_ps(p[0], high, p[2]),
            );
            let (o_lo, o_hi) = (
                _mm512_permutex2var_ps(p[1], low, p[3]),
                _mm512_permutex2var_ps(p[1], high, p[3]),
            );
            let values = [
                _mm512_permutex2var_ps(e_lo, low, o_lo),
                _mm512_permutex2var_ps(e_lo, high, o_lo),
                _mm512_permutex2var_ps(e_hi, low, o_hi),
                _mm512_permutex2var_ps(e_hi, high, o_hi),
            ];
            for (k, values) in values.into_iter().enumerate() {
                if 16 * k >= out_w {
                    break;
                }
                let mask = first_lanes(out_w - 16 * k);
                _mm512_mask_storeu_ps(out.add(y * row + 16 * k), mask, values);
            }
        }
        true
    }

    /// [`super::input_channel`] compiled for AVX-512.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn input_channel<T: Float>(
        tiling: &Tiling,
        c: usize,
        phases: &[T],
        phase_plane: usize,
        v: &mut [T],
        plane: usize,
        offset: usize,
        columns: &mut [[super::Lanes<T>; 6]; 6],
    ) {
        super::input_channel(tiling, c, phases, phase_plane, v, plane, offset, columns)
    }

    /// [`super::dout_filter`] compiled for AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dout_filter<T: Float>(
        tiling: &Tiling,
        f: usize,
        phases: &[T],
        phase_plane: usize,
        y: &mut [T],
        plane: usize,
        offset: usize,
    ) {
        super::dout_filter(tiling, f, phases, phase_plane, y, plane, offset)
    }

    /// [`super::output_filter`] compiled for AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_filter<T: Float>(
        tiling: &Tiling,
        f: usize,
        m: &[T],
        plane: usize,
        offset: usize,
        phases: &mut [T],
        columns: &mut [[super::Lanes<T>; 4]; 6],
    ) {
        super::output_filter(tiling, f, m, plane, offset, phases, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition: `out[f, y, x] = Σ_c Σ_fy Σ_fx g · in[y + fy, x + fx]`.
    fn reference(
        src: &[f64],
        source: Source,
        weight: &[f64],
        layout: WeightLayout,
        tiling: &Tiling,
    ) -> Vec<f64> {
        let at = |c: usize, y: usize, x: usize| input_at(src, source, c, y, x);
        let (oh, ow) = (tiling.out_h, tiling.out_w);
        let mut out = vec![0.0; tiling.filters * oh * ow];
        for f in 0..tiling.filters {
            for y in 0..oh {
                for x in 0..ow {
                    let mut sum = 0.0;
                    for c in 0..tiling.channels {
                        for tap in 0..9 {
                            let (fy, fx) = (tap / 3, tap % 3);
                            sum += weight[layout.index(c, tap, f)] * at(c, y + fy, x + fx);
                        }
                    }
                    out[(f * oh + y) * ow + x] = sum;
                }
            }
        }
        out
    }

    /// `in[c, y, x]` of `src` as `source` says: 0 in the padding.
    fn input_at<T: Float>(src: &[T], source: Source, c: usize, y: usize, x: usize) -> T {
        match (y.checked_sub(source.shift), x.checked_sub(source.shift)) {
            (Some(sy), Some(sx)) if sy < source.rows && sx < source.cols => {
                src[c * source.plane + sy * source.row + sx]
            }
            _ => T::zero(),
        }
    }

    /// `len` standard normal values.
    fn normal(len: usize, rng: &mut Rng) -> Vec<f64> {
        (0..len).map(|_| rng.normal()).collect()
    }

    /// (channels, filters, rows, cols, pad): the layers' shapes and odd ones.
    const CASES: [(usize, usize, usize, usize, usize); 6] = [
        (1, 1, 4, 4, 0),
        (3, 5, 7, 9, 1),
        (24, 24, 28, 28, 1),
        (24, 48, 14, 14, 1),
        (2, 3, 14, 14, 2),
        (5, 7, 8, 8, 1),
    ];

    fn case(
        (channels, filters, rows, cols, pad): (usize, usize, usize, usize, usize),
    ) -> (Source, Tiling) {
        let source = Source {
            rows,
            cols,
            row: cols + 3, // rows further apart than the image is wide
            plane: (rows + 1) * (cols + 3),
            shift: pad,
        };
        let (out_h, out_w) = (rows + 2 * pad - 2, cols + 2 * pad - 2);
        (source, Tiling::new(channels, filters, out_h, out_w))
    }

    /// In f64, the four steps are the definition, to rounding.
    #[test]
    fn f64_is_the_definition() {
        let mut rng = Rng::new(11);
        for shape in CASES {
            let (source, tiling) = case(shape);
            let src = normal(tiling.channels * source.plane, &mut rng);
            let weight = normal(tiling.filters * tiling.channels * 9, &mut rng);
            for layout in [
                WeightLayout::forward(tiling.channels),
                // W: (C', FN', 3, 3) read turned: channels C = FN', filters FN = C'.
                WeightLayout::turned(tiling.filters),
            ] {
                let want = reference(&src, source, &weight, layout, &tiling);
                let mut got = vec![f64::NAN; want.len()];
                conv_image(&src, source, &weight, layout, &tiling, &mut got, false);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() < 1e-12 * (1.0 + w.abs()),
                        "{shape:?} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// In f32, within a rounding bound that a wrong tap would break; the
    /// vector code gives the plain code's bits.
    #[test]
    fn f32_is_the_definition_to_rounding_and_vector_is_plain() {
        let mut rng = Rng::new(12);
        for shape in CASES {
            let (source, tiling) = case(shape);
            let src = normal(tiling.channels * source.plane, &mut rng);
            let weight = normal(tiling.filters * tiling.channels * 9, &mut rng);
            let layout = WeightLayout::forward(tiling.channels);
            let want = reference(&src, source, &weight, layout, &tiling);
            let src32: Vec<f32> = src.iter().map(|&v| v as f32).collect();
            let w32: Vec<f32> = weight.iter().map(|&v| v as f32).collect();
            let mut plain = vec![f32::NAN; want.len()];
            conv_image(&src32, source, &w32, layout, &tiling, &mut plain, false);
            // The same sums, directly in f32 (fused multiply-adds in (c, tap)
            // order, as the direct kernel does): its worst rounding error.
            let direct_worst = {
                let at = |c: usize, y: usize, x: usize| input_at(&src32, source, c, y, x);
                let (oh, ow) = (tiling.out_h, tiling.out_w);
                let mut worst = 0.0f64;
                for f in 0..tiling.filters {
                    for y in 0..oh {
                        for x in 0..ow {
                            let mut sum = 0.0f32;
                            for c in 0..tiling.channels {
                                for tap in 0..9 {
                                    let value = at(c, y + tap / 3, x + tap % 3);
                                    sum = w32[layout.index(c, tap, f)].mul_add(value, sum);
                                }
                            }
                            let error = (sum as f64 - want[(f * oh + y) * ow + x]).abs();
                            worst = worst.max(error);
                        }
                    }
                }
                worst
            };
            let worst = plain
                .iter()
                .zip(&want)
                .map(|(&g, w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            // The transforms amplify rounding: in these cases 2 to 25 times
            // a direct sum's worst error (2e-4 at most), where one wrong
            // term would be off by about 1.
            let bound = 32.0 * direct_worst.max(1e-6);
            assert!(worst < bound, "{shape:?}: {worst} vs {bound}");
            let mut fast = vec![f32::NAN; want.len()];
            conv_image(&src32, source, &w32, layout, &tiling, &mut fast, true);
            assert!(
                plain
                    .iter()
                    .zip(&fast)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{shape:?}"
            );
        }
    }

    /// The weight gradient of two images summed by the transforms is the
    /// definition's `Σ dout[f, y, x] · in[c, y + fy, x + fx]`, in f64 to
    /// rounding; in f32 the vector route (transforms and products) to f32
    /// rounding.
    #[test]
    fn weight_gradient_is_the_definition() {
        let mut rng = Rng::new(13);
        for shape in CASES {
            let (source, tiling) = case(shape);
            let (oh, ow) = (tiling.out_h, tiling.out_w);
            let images = 2;
            let src = normal(images * tiling.channels * source.plane, &mut rng);
            let dout = normal(images * tiling.filters * oh * ow, &mut rng);
            let image_src = tiling.channels * source.plane;
            let image_dout = tiling.filters * oh * ow;
            let at = |n: usize, c: usize, y: usize, x: usize| {
                input_at(&src[n * image_src..], source, c, y, x)
            };
            let layout = WeightLayout::forward(tiling.channels);
            let mut want = vec![0.0; tiling.filters * tiling.channels * 9];
            for n in 0..images {
                for f in 0..tiling.filters {
                    for c in 0..tiling.channels {
                        for tap in 0..9 {
                            let mut sum = 0.0;
                            for y in 0..oh {
                                for x in 0..ow {
                                    let d = dout[n * image_dout + (f * oh + y) * ow + x];
                                    sum += d * at(n, c, y + tap / 3, x + tap % 3);
                                }
                            }
                            want[layout.index(c, tap, f)] += sum;
                        }
                    }
                }
            }
            let got = weight_grad_of(
                &src, image_src, source, &dout, image_dout, &tiling, images, false,
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-10 * (1.0 + w.abs()),
                    "{shape:?} [{i}]: {g} vs {w}"
                );
            }
            let src32: Vec<f32> = src.iter().map(|&v| v as f32).collect();
            let dout32: Vec<f32> = dout.iter().map(|&v| v as f32).collect();
            let plain = weight_grad_of(
                &src32, image_src, source, &dout32, image_dout, &tiling, images, false,
            );
            let fast = weight_grad_of(
                &src32, image_src, source, &dout32, image_dout, &tiling, images, true,
            );
            // The transforms give the plain bits; the products' dot-product
            // kernel adds in its own order: the same sums to f32 rounding
            // (of terms about 1 in size, n·OH·OW of them).
            let tolerance = 1e-5 * (images * oh * ow) as f32;
            for (i, ((a, b), w)) in plain.iter().zip(&fast).zip(&want).enumerate() {
                assert!((a - b).abs() < tolerance, "{shape:?} [{i}]: {a} vs {b}");
                assert!(
                    (*b as f64 - w).abs() < tolerance as f64,
                    "{shape:?} [{i}]: {b} vs {w}"
                );
            }
        }
    }

    /// `dW: (FN, C, 3, 3)` of `images` images by the three steps.
    #[allow(clippy::too_many_arguments)]
    fn weight_grad_of<T: Float>(
        src: &[T],
        image_src: usize,
        source: Source,
        dout: &[T],
        image_dout: usize,
        tiling: &Tiling,
        images: usize,
        vector: bool,
    ) -> Vec<T> {
        let (oh, ow) = (tiling.out_h, tiling.out_w);
        let plane = (images - 1) * tiling.image_tiles() + tiling.image_span();
        let mut v = vec![T::zero(); tiling.v_len(plane)];
        let mut y = vec![T::zero(); tiling.m_len(plane)];
        let mut phases = Vec::new();
        let dout_source = Source {
            rows: oh,
            cols: ow,
            row: ow,
            plane: oh * ow,
            shift: 0,
        };
        for n in 0..images {
            let offset = n * tiling.image_tiles();
            let src_n = &src[n * image_src..][..image_src];
            transform_input(
                src_n,
                source,
                tiling,
                &mut phases,
                &mut v,
                plane,
                offset,
                vector,
            );
            let dout_n = &dout[n * image_dout..][..image_dout];
            transform_dout(
                dout_n,
                dout_source,
                tiling,
                &mut phases,
                &mut y,
                plane,
                offset,
                vector,
            );
        }
        let mut sums = vec![T::zero(); tiling.u_len()];
        let len = images * tiling.image_tiles();
        weight_grad_products(&y, &v, tiling, plane, len, &mut sums, false, vector);
        let mut dw = vec![T::zero(); tiling.filters * tiling.channels * 9];
        let layout = WeightLayout::forward(tiling.channels);
        weight_grad_from_sums(&sums, tiling, layout, &mut dw);
        dw
    }
}
