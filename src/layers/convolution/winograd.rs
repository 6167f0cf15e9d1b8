//! The 3×3, stride-1 layers' forward by Winograd's F(4×4, 3×3)
//! ([`crate::kernels::winograd`]), a few images at a time:
//!
//! ```text
//! U = G W Gᵀ                                   when the weights have changed
//! for each group of images in the thread's chunk:
//!     V[:, :, image's tiles] = Bᵀ x_n B         each image, from x itself (the padding is implied)
//!     M = U · V                                36 products over the group's tiles
//!     wide = Aᵀ M A                            each image, then as the other routes:
//!     out_n = act(narrow(wide) + b), pooled if a pooling is fused
//! ```
//!
//! A group holds enough images for the products' rows to fill whole
//! vectors: one 28×28 image has 56 tiles, a 14×14 one 20.
//!
//! It applies where the product without `col` does (f32, AVX-512, stride 1
//! on the wide grid), to 3×3 filters over at least [`MIN_CHANNELS`]
//! channels, and to batches of two or more with [`MIN_TILES`] output tiles
//! in all: at batch 1 the team's bands keep the direct kernel, so one image
//! gives the same bits on any number of threads, and a few small images
//! (16 maps of 8×8 make a group) are faster by it too.
//!
//! Backward's `dx` takes the same route with the turned filters
//! ([`DxRoute`]), and on maps whose tiles cover little more than the
//! output, so does its weight gradient ([`DwRoute`]).

use super::forward::{finish_image, Finish, ForwardParams};
use super::fused_pool::FusedPool;
use super::scratch::Scratch;
use super::weight_grad;
use crate::kernels::direct_conv;
use crate::kernels::im2col_wide::{pad_image, WideGeometry};
use crate::kernels::winograd::packed::{self, Packing};
use crate::kernels::winograd::{self, Dest, Source, Tiling, WeightLayout};
use crate::tensor::Float;

/// Fewer input channels than this keep the direct kernel: the transforms
/// cost about as much per channel as the products they save (a first layer
/// on grey images has one).
pub const MIN_CHANNELS: usize = 8;

/// Tiles a group of images should reach: four vectors.
const GROUP_TILES: usize = 64;

/// Output tiles (4×4, edges included) that a call must have in all for
/// this route: the products read all of `U` (36·FN·C values) for each
/// group of tiles, and with fewer tiles than a group they are too narrow
/// to pay for it. Below this the direct kernel was faster, on `deep`'s
/// layers at batches 2 and 8 (docs/performance.md). A rule on the batch,
/// not on each thread's share of it, so that the route, and with it the
/// output's bits, does not depend on the number of threads.
pub const MIN_TILES: usize = GROUP_TILES;

/// Whether `n` images through `wg` have [`MIN_TILES`] output tiles.
fn enough_tiles(wg: &WideGeometry, n: usize) -> bool {
    let image_tiles = wg.g.out_h.div_ceil(4) * wg.g.out_w.div_ceil(4);
    n.saturating_mul(image_tiles) >= MIN_TILES
}

/// Whether a forward of `n` images through `wg` takes this route (two
/// images or more, with [`MIN_TILES`] tiles in all).
pub(super) fn applies<T: 'static>(wg: &WideGeometry, n: usize) -> bool {
    let g = &wg.g;
    direct_conv::worth_it::<T>(wg)
        && (g.filter_h, g.filter_w) == (3, 3)
        && g.channels >= MIN_CHANNELS
        && (g.channels >= POOR_COVER_MIN_CHANNELS || covers_well(wg))
        && n >= 2
        && enough_tiles(wg, n)
}

/// Input channels from which a map that its tiles cover poorly (see
/// [`covers_well`]) still takes this route. Below it the direct kernel
/// was faster in the forward on 14×14 maps: on 16 channels (`deep`'s
/// conv3) and 24 (fashion-fast's conv3), where Winograd's transforms are
/// spread over few products; on 48 (fashion-fast's conv4) Winograd was
/// faster at inference and as fast in training. 32 lies between, not
/// measured (docs/performance.md).
pub const POOR_COVER_MIN_CHANNELS: usize = 32;

/// Whether the 4×4 tiles (a junk tile ending each row included) hold at
/// least 70 % output values: 28×28 maps 88 % (56 tile places for 49
/// tiles' worth), 16×16 80 %; 14×14 maps only 61 % and 8×8 67 %.
fn covers_well(wg: &WideGeometry) -> bool {
    let places = 16 * tiling(wg, 1).image_tiles();
    10 * places <= 14 * wg.g.out_pixels()
}

/// Whether an inference forward of `n` images through `wg` takes the
/// packed route ([`forward_chunk_packed`]): 3×3 filters, stride 1, on the
/// book's grid (8×8 maps, where [`applies`] does not), f32 with AVX-512,
/// at least [`MIN_CHANNELS`] channels, two images and [`MIN_TILES`]
/// tiles (16 images of 8×8). Training keeps the
/// unrolling and `gemm` there: it was faster in training's forward, whose
/// backward needs the padded images the unrolling makes anyway.
pub(super) fn packed_applies<T: 'static>(wg: &WideGeometry, n: usize, train: bool) -> bool {
    let g = &wg.g;
    !train
        && direct_conv::cpu_applies::<T>()
        && g.stride == 1
        && wg.wide_w == g.out_w
        && wg.wide_w != wg.padded_w
        && (g.filter_h, g.filter_w) == (3, 3)
        && g.channels >= MIN_CHANNELS
        && n >= 2
        && enough_tiles(wg, n)
}

/// The tiling of `wg`'s output for `filters`.
pub(super) fn tiling(wg: &WideGeometry, filters: usize) -> Tiling {
    let g = &wg.g;
    Tiling::new(g.channels, filters, g.out_h, g.out_w)
}

/// `u = G W Gᵀ` of the layer's weights.
pub(super) fn transform_weights<T: Float>(
    wg: &WideGeometry,
    weight: &[T],
    filters: usize,
    u: &mut Vec<T>,
) {
    let tiling = tiling(wg, filters);
    u.resize(tiling.u_len(), T::zero());
    winograd::transform_filters(weight, WeightLayout::forward(wg.g.channels), &tiling, u);
}

/// The forward's `U = G W Gᵀ`, kept with a copy of the weights it came
/// from and remade only when they differ: inference calls with the same
/// weights transform them once (at small batches the transform cost more
/// than the convolution), while training, whose weights change every
/// step, remakes it each time as before. The weights are compared bit for
/// bit (a NaN never matches, so it is always remade), so `U` is always
/// what [`transform_weights`] would give now.
#[derive(Default)]
pub(super) struct TransformedWeights<T> {
    /// The weights `u` was made from, and their input channels.
    source: Vec<T>,
    channels: usize,
    u: Vec<T>,
}

impl<T: Float> TransformedWeights<T> {
    /// `U` of `weight` (`(filters, C, 3, 3)`, C from `wg`).
    pub(super) fn get(&mut self, wg: &WideGeometry, weight: &[T], filters: usize) -> &[T] {
        if self.channels != wg.g.channels || !same_bits(&self.source, weight) {
            transform_weights(wg, weight, filters, &mut self.u);
            self.source.clear();
            self.source.extend_from_slice(weight);
            self.channels = wg.g.channels;
        }
        &self.u
    }
}

/// Whether `a` and `b` hold the same values to the bit (zeros' signs
/// included; NaN never matches).
fn same_bits<T: Float>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y && x.is_sign_negative() == y.is_sign_negative())
}

/// Each image of the layer's input as it is: its padding implied.
fn unpadded_source(wg: &WideGeometry) -> Source {
    let g = &wg.g;
    Source {
        rows: g.in_h,
        cols: g.in_w,
        row: g.in_w,
        plane: g.in_h * g.in_w,
        shift: g.pad,
    }
}

/// One image's output on the grid of `wide`, for [`finish_image`].
fn wide_dest(wg: &WideGeometry) -> Dest {
    Dest {
        plane: wg.wide_pixels(),
        offset: 0,
        row: wg.wide_w,
    }
}

/// A thread's buffers for the route: `V`, `M` and the phase planes; for
/// the packed route, the group's padded images and outputs too.
#[derive(Default)]
pub(super) struct Buffers<T> {
    v: Vec<T>,
    m: Vec<T>,
    phases: Vec<T>,
    padded: Vec<T>,
    wides: Vec<T>,
}

/// The forward of one chunk of images (see the module documentation):
/// `x_chunk` in, `out_chunk` out (`out_len` values per image), each image
/// padded into `kept_xpad` on the way when given (a training forward), the
/// fused pooling's `arg_max` into `arg_chunk`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_chunk<T: Float>(
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    u: &[T],
    scratch: &mut Scratch<T>,
    x_chunk: &[T],
    mut kept_xpad: Option<&mut [T]>,
    out_chunk: &mut [T],
    out_len: usize,
    pool: Option<&FusedPool>,
    mut arg_chunk: Option<&mut [u32]>,
    mut moments_chunk: Option<&mut [(T, T)]>,
) {
    let g = &wg.g;
    let filters = params.bias.len();
    let tiling = tiling(wg, filters);
    let image_tiles = tiling.image_tiles();
    let group = GROUP_TILES.div_ceil(image_tiles);
    let plane = (group - 1) * image_tiles + tiling.image_span();
    let Scratch {
        wide,
        planes,
        winograd: Buffers { v, m, phases, .. },
        ..
    } = scratch;
    v.resize(tiling.v_len(plane), T::zero());
    m.resize(tiling.m_len(plane), T::zero());
    // x itself, its padding implied.
    let (source, dest) = (unpadded_source(wg), wide_dest(wg));
    let images = x_chunk.len() / g.image_len();
    for first in (0..images).step_by(group) {
        let count = group.min(images - first);
        for i in 0..count {
            let x_n = &x_chunk[(first + i) * g.image_len()..][..g.image_len()];
            if let Some(kept) = kept_xpad.as_deref_mut() {
                pad_image(
                    x_n,
                    wg,
                    &mut kept[(first + i) * wg.padded_len()..][..wg.padded_len()],
                );
            }
            let offset = i * image_tiles;
            winograd::transform_input(x_n, source, &tiling, phases, v, plane, offset, true);
        }
        winograd::multiply(u, v, &tiling, plane, count * image_tiles, m, true);
        for i in 0..count {
            let n = first + i;
            let offset = i * image_tiles;
            winograd::transform_output(m, &tiling, plane, offset, phases, dest, wide, true);
            let out_n = &mut out_chunk[n * out_len..][..out_len];
            let pool = pool.map(|pool| {
                let arg_chunk = arg_chunk.as_deref_mut().expect("sized with the pool");
                (pool, &mut arg_chunk[n * out_len..][..out_len])
            });
            let moments_n = moments_chunk
                .as_deref_mut()
                .map(|m| &mut m[n * filters..][..filters]);
            let finish = Finish { pool, moments_n };
            finish_image(wg, params, wide, planes, out_n, finish);
        }
    }
}

/// An inference forward of one chunk of images on small maps, their tiles
/// packed side by side ([`winograd::packed`]): per group of images, each
/// padded to whole tiles, `V` of all their tiles, the 36 products, then
/// each image's output on the book's grid into `wides`, finished as the
/// other routes finish it.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_chunk_packed<T: Float>(
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    u: &[T],
    scratch: &mut Scratch<T>,
    x_chunk: &[T],
    out_chunk: &mut [T],
    out_len: usize,
    pool: Option<&FusedPool>,
    mut arg_chunk: Option<&mut [u32]>,
) {
    let g = &wg.g;
    let filters = params.bias.len();
    let packing = Packing::new(g.channels, filters, g.out_h, g.out_w);
    let group = GROUP_TILES.div_ceil(packing.image_tiles());
    let plane = packing.plane(group);
    let wide_len = filters * wg.wide_pixels();
    let Scratch {
        planes,
        winograd:
            Buffers {
                v,
                m,
                padded,
                wides,
                ..
            },
        ..
    } = scratch;
    v.resize(packing.tiling.v_len(plane), T::zero());
    m.resize(packing.tiling.m_len(plane), T::zero());
    padded.resize(group * packing.padded_len(), T::zero());
    wides.resize(group * wide_len, T::zero());
    let (source, dest) = (unpadded_source(wg), wide_dest(wg));
    let images = x_chunk.len() / g.image_len();
    for first in (0..images).step_by(group) {
        let count = group.min(images - first);
        let x_group = &x_chunk[first * g.image_len()..];
        packed::pad_images(x_group, source, g.image_len(), &packing, count, padded);
        packed::transform_input(padded, &packing, count, v, plane, true);
        let tiles = count * packing.image_tiles();
        winograd::multiply(u, v, &packing.tiling, plane, tiles, m, true);
        packed::transform_output(m, &packing, count, plane, dest, wide_len, wides, true);
        for (i, wide) in wides.chunks_exact(wide_len).take(count).enumerate() {
            let n = first + i;
            let out_n = &mut out_chunk[n * out_len..][..out_len];
            let pool = pool.map(|pool| {
                let arg_chunk = arg_chunk.as_deref_mut().expect("sized with the pool");
                (pool, &mut arg_chunk[n * out_len..][..out_len])
            });
            let finish = Finish {
                pool,
                moments_n: None,
            };
            finish_image(wg, params, wide, planes, out_n, finish);
        }
    }
}

/// Backward's `dx` by the same route: `dx` is `dout` convolved, with pad
/// 2 − P, by the filters turned by 180° with their two channel axes
/// swapped (see [`crate::kernels::direct_conv::dx_from_wide`]). The images
/// of a chunk come one by one ([`DxRoute::add_image`]); every full group,
/// and the last, is multiplied and written out.
pub(super) struct DxRoute<'a, T> {
    /// `u` of the turned filters: (36, C, FN).
    u: &'a [T],
    tiling: Tiling,
    group: usize,
    plane: usize,
    source: Source,
    image_len: usize,
}

/// Whether backward's `dx` of `n` images through `wg` with `filters` takes
/// this route (its input channels are the layer's filters).
pub(super) fn dx_applies<T: 'static>(wg: &WideGeometry, filters: usize, n: usize) -> bool {
    let g = &wg.g;
    direct_conv::worth_it::<T>(wg)
        && (g.filter_h, g.filter_w) == (3, 3)
        && g.pad <= 2
        && filters >= MIN_CHANNELS
        && n >= 2
}

impl<'a, T: Float> DxRoute<'a, T> {
    /// The tiling of `dx`: FN channels in, C out, H × W.
    pub(super) fn tiling(wg: &WideGeometry, filters: usize) -> Tiling {
        let g = &wg.g;
        Tiling::new(filters, g.channels, g.in_h, g.in_w)
    }

    /// `u` of the turned filters of `weight`, into `u`.
    pub(super) fn transform_weights(
        wg: &WideGeometry,
        weight: &[T],
        filters: usize,
        u: &mut Vec<T>,
    ) {
        let tiling = Self::tiling(wg, filters);
        u.resize(tiling.u_len(), T::zero());
        winograd::transform_filters(weight, WeightLayout::turned(wg.g.channels), &tiling, u);
    }

    /// The route for `wg`, with `u` from [`DxRoute::transform_weights`].
    pub(super) fn new(wg: &WideGeometry, filters: usize, u: &'a [T]) -> Self {
        let g = &wg.g;
        let tiling = Self::tiling(wg, filters);
        let group = GROUP_TILES.div_ceil(tiling.image_tiles());
        let plane = (group - 1) * tiling.image_tiles() + tiling.image_span();
        // dout's planes (FN, OH, OW), padded by 2 − P.
        let source = Source {
            rows: g.out_h,
            cols: g.out_w,
            row: g.out_w,
            plane: g.out_pixels(),
            shift: 2 - g.pad,
        };
        DxRoute {
            u,
            tiling,
            group,
            plane,
            source,
            image_len: g.image_len(),
        }
    }

    /// Image `i` of the chunk (`dout_n`: its `dout`, (FN, OH, OW)); with
    /// the group full or `last`, the group's `dx` into `dx_chunk`.
    pub(super) fn add_image(
        &self,
        buffers: &mut Buffers<T>,
        dout_n: &[T],
        i: usize,
        last: bool,
        dx_chunk: &mut [T],
    ) {
        let Buffers { v, m, phases, .. } = buffers;
        let (tiling, plane) = (&self.tiling, self.plane);
        let image_tiles = tiling.image_tiles();
        v.resize(tiling.v_len(plane), T::zero());
        m.resize(tiling.m_len(plane), T::zero());
        let slot = i % self.group;
        let offset = slot * image_tiles;
        winograd::transform_input(dout_n, self.source, tiling, phases, v, plane, offset, true);
        if slot + 1 < self.group && !last {
            return;
        }
        let count = slot + 1;
        winograd::multiply(self.u, v, tiling, plane, count * image_tiles, m, true);
        let dest = Dest {
            plane: tiling.out_h * tiling.out_w,
            offset: 0,
            row: tiling.out_w,
        };
        for s in 0..count {
            let n = i + s - slot;
            let dx_n = &mut dx_chunk[n * self.image_len..][..self.image_len];
            let offset = s * image_tiles;
            winograd::transform_output(m, tiling, plane, offset, phases, dest, dx_n, true);
        }
    }
}

/// Backward's weight gradient by the same transforms
/// ([`winograd::transform_dout`]): each image of a chunk adds its input's
/// and its `dout`'s transforms ([`DwRoute::add_image`]); the chunk's 36
/// products and the filter transform back then give its `dW`
/// ([`DwRoute::finish`]).
pub(super) struct DwRoute {
    tiling: Tiling,
    /// The kept padded image.
    x_source: Source,
    /// `dout`'s planes (FN, OH, OW).
    dout_source: Source,
}

/// A thread's buffers for [`DwRoute`]: a chunk's transforms and the sums.
#[derive(Default)]
pub(super) struct DwBuffers<T> {
    v: Vec<T>,
    y: Vec<T>,
    sums: Vec<T>,
    phases: Vec<T>,
}

/// Whether backward's weight gradient of `n` images through `wg` takes
/// [`DwRoute`].
pub(super) fn dw_applies<T: 'static>(wg: &WideGeometry, filters: usize, n: usize) -> bool {
    // Only where the tiles cover little more than the output (28×28: 56
    // tile places for 49 tiles' worth; 14×14 and 16×16: 20 for 12¼ and
    // 16), over at least DW_MIN_CHANNELS channels, and where the
    // channels-last route (`weight_grad.rs`) does not apply: with `gemm`
    // it was already faster wherever both could run (fashion-fast's
    // 24-channel 28×28 layer, and 48 channels there; docs/performance.md),
    // and on 24 channels its products now run faster still.
    let tiles = tiling(wg, filters).image_tiles();
    applies::<T>(wg, n)
        && !weight_grad::applies(wg)
        && wg.g.channels >= DW_MIN_CHANNELS
        && 16 * tiles * 20 <= 23 * wg.g.out_pixels()
}

/// Input channels below which the weight gradient keeps `gemm`.
pub const DW_MIN_CHANNELS: usize = 24;

impl DwRoute {
    /// The route for `wg` with `filters`, writing `dW^T`: `(C·FH·FW, FN)`.
    pub(super) fn new(wg: &WideGeometry, filters: usize) -> Self {
        let g = &wg.g;
        DwRoute {
            tiling: tiling(wg, filters),
            x_source: Source {
                rows: wg.padded_h,
                cols: wg.padded_w,
                row: wg.padded_w,
                plane: wg.padded_h * wg.padded_w,
                shift: 0,
            },
            dout_source: Source {
                rows: g.out_h,
                cols: g.out_w,
                row: g.out_w,
                plane: g.out_pixels(),
                shift: 0,
            },
        }
    }

    /// Columns per position and channel for a chunk of `images`.
    fn plane(&self, images: usize) -> usize {
        images.saturating_sub(1) * self.tiling.image_tiles() + self.tiling.image_span()
    }

    /// Image `i` of a chunk of `images`: its padded input `xpad_n` and its
    /// `dout_n` (FN, OH, OW), transformed into the chunk's buffers.
    pub(super) fn add_image<T: Float>(
        &self,
        buffers: &mut DwBuffers<T>,
        xpad_n: &[T],
        dout_n: &[T],
        i: usize,
        images: usize,
    ) {
        let DwBuffers { v, y, phases, .. } = buffers;
        let (tiling, plane) = (&self.tiling, self.plane(images));
        if i == 0 {
            v.resize(tiling.v_len(plane), T::zero());
            y.resize(tiling.m_len(plane), T::zero());
        }
        let offset = i * tiling.image_tiles();
        winograd::transform_input(
            xpad_n,
            self.x_source,
            tiling,
            phases,
            v,
            plane,
            offset,
            true,
        );
        winograd::transform_dout(
            dout_n,
            self.dout_source,
            tiling,
            phases,
            y,
            plane,
            offset,
            true,
        );
    }

    /// The chunk's `dW` (all `images` added) into `dw`, as `dW^T` (the
    /// channels-last layout is never needed: where `weight_grad.rs`
    /// applies, this route does not).
    pub(super) fn finish<T: Float>(&self, buffers: &mut DwBuffers<T>, images: usize, dw: &mut [T]) {
        let DwBuffers { v, y, sums, .. } = buffers;
        let (tiling, plane) = (&self.tiling, self.plane(images));
        sums.resize(tiling.u_len(), T::zero());
        let len = images * tiling.image_tiles();
        winograd::weight_grad_products(y, v, tiling, plane, len, sums, false, true);
        let layout = WeightLayout::grad_transposed(tiling.filters);
        winograd::weight_grad_from_sums(sums, tiling, layout, dw);
    }
}
