//! The convolution's forward pass (book §7.4.3, `Convolution.forward`), on
//! the wide grid of [`crate::kernels::im2col_wide`], one image at a time:
//!
//! ```text
//! x_n: (C, H, W)  →  xpad_n = pad(x_n)          (C, HP, WP), kept for backward in training
//! col  = im2col_wide(xpad_n)                    (C·FH·FW, OH·OWW)
//! wide = W · col                                (FN, OH·OWW)
//! out_n = act(narrow(wide) + b)                 (FN, OH, OW), the activation if fused
//!       → maxpool(out_n)                        (FN, POH, POW), if a pooling is fused
//! ```
//!
//! A fused pooling over the book's 2×2 windows reads `wide` directly
//! (`FusedPool::forward_from_wide`): the planes `act(narrow(wide) + b)`
//! are pooled as they are computed, never written.
//!
//! The batch runs in parallel chunks of images, each thread in its own
//! buffers ([`Scratch`]); at batch 1 in a team, the rows of one image are
//! shared out instead (`bands.rs`); at inference, filters as large as their
//! input take all the chunk's images in one product (`grouped.rs`).

use super::bands;
use super::fused_pool::{image_out_len, FusedPool};
use super::grouped;
use super::scratch::{resize_scratch, thread_scratch, Scratch};
use super::winograd;
use super::{Convolution, FusedActivation};
use crate::error::Result;
use crate::kernels::bn_sums::block_moments;
use crate::kernels::direct_conv;
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::im2col_wide::{
    im2col_wide, narrow_planes, narrow_planes_then_map, pad_image, WideGeometry,
};
use crate::layers::pooling::values_only;
use crate::parallel::team::run_in_team;
use crate::tensor::{Float, Tensor};
use rayon::iter::Either;
use rayon::prelude::*;

impl<T: Float> Convolution<T> {
    /// The forward pass (see the module documentation).
    pub(super) fn forward_impl(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        let (g, n) = self.geometry_for(x.shape())?;
        let filters = self.weight.shape()[0];
        // One contiguous share of the batch per thread: forward has no sums
        // across images, so any split gives the same output, and this one
        // hands out fewer tasks than backward's 16 chunks (whose fixed
        // number only keeps backward's sums the same on any machine).
        let chunk = n.div_ceil(rayon::current_num_threads()).max(1);
        // One set of buffers per thread, reused image after image: they stay
        // in the core's cache.
        let wg = WideGeometry::new(g);
        resize_scratch(&mut self.scratch, &wg, filters);
        self.pool = match &self.fused_pool {
            Some(config) => {
                let planes = [n, filters, g.out_h, g.out_w];
                let pool_g = config.geometry("MaxPooling", &planes)?;
                let values_only = values_only(train, &pool_g);
                let pool = FusedPool {
                    g: pool_g,
                    values_only,
                };
                self.out.resize(&[n, filters, pool_g.out_h, pool_g.out_w]);
                self.arg_max.resize(n * pool.out_len(filters), 0);
                Some(pool)
            }
            None => {
                self.out.resize(&[n, filters, g.out_h, g.out_w]);
                None
            }
        };
        // Values of one image's output: pooled, or the full planes.
        let pool = self.pool.as_ref();
        let out_len = image_out_len(pool, filters, g.out_pixels());
        let mut arg_max = pool.map(|_| &mut self.arg_max[..]);

        // Stride 1 on the wide grid, f32 with AVX-512: the product straight
        // from the padded image (`kernels/direct_conv.rs`), in every path of
        // this call (whole images or the team's bands), so that they agree.
        // Two images or more on 3×3 layers: Winograd's F(4×4, 3×3) instead
        // (`winograd.rs`), with no team.
        // Inference on 8×8 maps: the same with the images' tiles packed.
        let by_packed = winograd::packed_applies::<T>(&wg, n, train);
        let by_winograd = by_packed || winograd::applies::<T>(&wg, n);
        let winograd_weights = match by_winograd {
            true => self.winograd_weights.get(&wg, self.weight.data(), filters),
            false => &[],
        };
        let params = ForwardParams {
            weight: self.weight.data(),
            direct: direct_conv::worth_it::<T>(&wg),
            bias: self.bias.data(),
            activation: self.fused_activation,
        };
        let scratch = &self.scratch[..];
        let out = self.out.data_mut();
        // Fewer images than threads (inference at batch 1): each image's
        // output rows are shared out instead, if a team is running.
        let team_planes = &mut self.team_planes;
        let by_team = !by_winograd
            && bands::can_split(&wg)
            && run_in_team(
                n,
                bands::worth_sharing_when_distant(&g, self.weight.len()),
                |team| {
                    let images = out.chunks_mut(out_len).zip(x.data().chunks(g.image_len()));
                    for (i, (out_n, x_n)) in images.enumerate() {
                        let Some(pool) = pool else {
                            bands::forward_image_by_team(team, &wg, params, scratch, x_n, out_n);
                            continue;
                        };
                        if bands::can_pool_by_band(pool) {
                            bands::forward_pooled_image_by_team(
                                team, &wg, params, scratch, x_n, pool, out_n,
                            );
                            continue;
                        }
                        // The planes first, then the pooling on this thread.
                        team_planes.resize(filters * g.out_pixels(), T::zero());
                        bands::forward_image_by_team(team, &wg, params, scratch, x_n, team_planes);
                        let arg_max = arg_max.as_deref_mut().expect("sized with the pool");
                        pool.forward(team_planes, out_n, &mut arg_max[i * out_len..][..out_len]);
                    }
                },
            );
        // The output planes' sums for the batch norm after the layer
        // (nothing fused), taken as each image's planes are written.
        let mut moments = self.plane_moments.take().unwrap_or_default();
        let take_moments = train && self.plane_moments_on && pool.is_none() && !by_team;
        if take_moments {
            moments.resize(n * filters, (T::zero(), T::zero()));
        }
        if !by_team {
            // Training keeps every padded image (for backward); inference
            // pads each image into the thread's own buffer.
            // Filters as large as the input, at inference: one product for
            // the chunk's images.
            let grouped = !train && pool.is_none() && grouped::applies(&g, n);
            let kept = train.then(|| {
                self.xpad.resize(n * wg.padded_len(), T::zero());
                &mut self.xpad[..]
            });
            out.par_chunks_mut(chunk * out_len)
                .zip(x.data().par_chunks(chunk * g.image_len()))
                .zip(optional_chunks(
                    kept,
                    chunk * wg.padded_len(),
                    n.div_ceil(chunk),
                ))
                .zip(optional_chunks(arg_max, chunk * out_len, n.div_ceil(chunk)))
                .zip(optional_chunks(
                    take_moments.then_some(&mut moments[..]),
                    chunk * filters,
                    n.div_ceil(chunk),
                ))
                .for_each(
                    |(
                        (((out_chunk, x_chunk), mut xpad_chunk), mut arg_chunk),
                        mut moments_chunk,
                    )| {
                        if grouped {
                            return grouped::forward_images(&g, params, x_chunk, out_chunk);
                        }
                        let mut scratch = thread_scratch(scratch);
                        if by_packed {
                            return winograd::forward_chunk_packed(
                                &wg,
                                params,
                                winograd_weights,
                                &mut scratch,
                                x_chunk,
                                out_chunk,
                                out_len,
                                pool,
                                arg_chunk,
                            );
                        }
                        if by_winograd {
                            return winograd::forward_chunk(
                                &wg,
                                params,
                                winograd_weights,
                                &mut scratch,
                                x_chunk,
                                xpad_chunk,
                                out_chunk,
                                out_len,
                                pool,
                                arg_chunk,
                                moments_chunk,
                            );
                        }
                        let images = out_chunk
                            .chunks_mut(out_len)
                            .zip(x_chunk.chunks(g.image_len()));
                        for (i, (out_n, x_n)) in images.enumerate() {
                            let xpad_n = xpad_chunk
                                .as_deref_mut()
                                .map(|kept| &mut kept[i * wg.padded_len()..][..wg.padded_len()]);
                            let pool = pool.map(|pool| {
                                let arg_chunk =
                                    arg_chunk.as_deref_mut().expect("sized with the pool");
                                (pool, &mut arg_chunk[i * out_len..][..out_len])
                            });
                            let moments_n = moments_chunk
                                .as_deref_mut()
                                .map(|m| &mut m[i * filters..][..filters]);
                            let finish = Finish { pool, moments_n };
                            forward_image(&wg, params, &mut scratch, x_n, xpad_n, out_n, finish);
                        }
                    },
                );
        } else if train {
            // (A training forward in a team: rare; pad for backward here.)
            self.xpad.resize(n * wg.padded_len(), T::zero());
            let kept = self.xpad.chunks_mut(wg.padded_len());
            for (xpad_n, x_n) in kept.zip(x.data().chunks(g.image_len())) {
                pad_image(x_n, &wg, xpad_n);
            }
        }
        self.plane_moments = take_moments.then_some(moments);
        self.geometry = train.then_some((g, n));
        Ok(&self.out)
    }
}

/// What each image's forward needs of the layer: its parameters, and
/// the activation fused into it.
#[derive(Clone, Copy)]
pub(super) struct ForwardParams<'a, T> {
    /// W: (FN, C·FH·FW)
    pub weight: &'a [T],
    /// Whether the product is computed straight from the padded image
    /// ([`product`]).
    pub direct: bool,
    /// b: (FN)
    pub bias: &'a [T],
    pub activation: Option<FusedActivation>,
}

/// One image through the layer, `x_n: (C, H, W)` → `out_n: (FN, OH, OW)`,
/// through the fused activation if there is one, and the fused pooling if one is
/// given (with the image's slice of `arg_max`): `out_n: (FN, POH, POW)`.
/// The padded image goes to `kept_xpad` when given (a training forward),
/// else to the thread's own buffer.
fn forward_image<T: Float>(
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    scratch: &mut Scratch<T>,
    x_n: &[T],
    kept_xpad: Option<&mut [T]>,
    out_n: &mut [T],
    finish: Finish<'_, T>,
) {
    let Scratch {
        xpad,
        col,
        wide,
        planes,
        ..
    } = scratch;
    let xpad = kept_xpad.unwrap_or(xpad);
    pad_image(x_n, wg, xpad);
    product(wg, params, xpad, col, wide);
    finish_image(wg, params, wide, planes, out_n, finish);
}

/// What one image's output goes on to, besides its planes: the fused
/// pooling (with the image's slice of `arg_max`), or the planes' sums for
/// a batch norm (the image's `FN` pairs).
pub(super) struct Finish<'a, T> {
    pub pool: Option<(&'a FusedPool, &'a mut [u32])>,
    pub moments_n: Option<&'a mut [(T, T)]>,
}

/// The rest of one image's forward once `wide = W · col` holds its
/// product: `out_n = act(narrow(wide) + b)`, pooled if a pooling is given,
/// each plane's [`block_moments`] taken if asked for.
pub(super) fn finish_image<T: Float>(
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    wide: &[T],
    planes: &mut [T],
    out_n: &mut [T],
    Finish { pool, moments_n }: Finish<'_, T>,
) {
    let ForwardParams {
        bias, activation, ..
    } = params;
    match pool {
        None => {
            let planes = out_n.chunks_exact_mut(wg.g.out_pixels());
            narrow(wg, params, wide, planes);
            // Each plane while it is in the cache: the batch norm's first
            // pass over it, the same function on the same values.
            if let Some(moments_n) = moments_n {
                let planes = out_n.chunks_exact(wg.g.out_pixels());
                for (moments, plane) in moments_n.iter_mut().zip(planes) {
                    *moments = block_moments(plane);
                }
            }
        }
        // 2×2 windows: pooled as the product is read, with no planes.
        Some((pool, arg_n)) if pool.pools_from_wide() => {
            pool.forward_from_wide(wide, wg, bias, activation, out_n, arg_n);
        }
        // Other windows: the planes in this thread's buffer, then pooled.
        Some((pool, arg_n)) => {
            let planes_n = planes.chunks_exact_mut(wg.g.out_pixels());
            narrow(wg, params, wide, planes_n);
            pool.forward(planes, out_n, arg_n);
        }
    }
}

/// `buffer` cut into `chunks` parallel chunks of `len`, each as `Some`; or,
/// without a buffer, `None` for each chunk.
pub(super) fn optional_chunks<T: Send>(
    buffer: Option<&mut [T]>,
    len: usize,
    chunks: usize,
) -> impl IndexedParallelIterator<Item = Option<&mut [T]>> {
    match buffer {
        Some(buffer) => Either::Left(buffer.par_chunks_mut(len).map(Some)),
        None => Either::Right((0..chunks).into_par_iter().map(|_| None)),
    }
}

/// The rest of a forward once the image is padded (the whole image, or a
/// band of its rows: `wg`'s pixels): `wide: (FN, wide_pixels) = W · col`
/// ([`product`]), then each filter's plane of `out_planes` = its row of
/// `wide` without the junk columns + b, through the fused activation if
/// there is one.
pub(super) fn multiply_and_narrow<'a, T: Float>(
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    xpad: &[T],
    col: &mut [T],
    wide: &mut [T],
    out_planes: impl IntoIterator<Item = &'a mut [T]>,
) {
    product(wg, params, xpad, col, wide);
    narrow(wg, params, wide, out_planes);
}

/// Each filter's plane of `out_planes` = its row of `wide` without the
/// junk columns + b, through the fused activation if there is one.
fn narrow<'a, T: Float>(
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    wide: &[T],
    out_planes: impl IntoIterator<Item = &'a mut [T]>,
) {
    let bias = params.bias;
    match params.activation {
        Some(FusedActivation::Sigmoid) => {
            narrow_planes_then_map(wide, wg, bias, out_planes, T::sigmoid)
        }
        Some(FusedActivation::Tanh) => {
            narrow_planes_then_map(wide, wg, bias, out_planes, T::tanh_fast)
        }
        cheap => with_activation!(cheap, T, |act| {
            narrow_planes(wide, wg, bias, out_planes, act)
        }),
    }
}

/// `wide: (FN, wide_pixels) = W · col` of the padded image `xpad`: by
/// [`direct_conv`] from `xpad` itself when the layer chose it, else
/// unrolled into `col` ([`im2col_wide`]) and
/// multiplied ([`multiply`]).
pub(super) fn product<T: Float>(
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    xpad: &[T],
    col: &mut [T],
    wide: &mut [T],
) {
    let filters = params.bias.len();
    if params.direct {
        let weight = &params.weight[..filters * wg.g.col_width()];
        let done = direct_conv::conv_wide(xpad, wg, weight, filters, wide);
        assert!(done, "direct_conv::worth_it chose a product it cannot do");
        return;
    }
    im2col_wide(xpad, wg, col);
    multiply(wg, params.weight, filters, col, wide);
}

/// `wide: (FN, wide_pixels) = W · col` for the first `filters` rows of `W`.
pub(super) fn multiply<T: Float>(
    wg: &WideGeometry,
    weight: &[T],
    filters: usize,
    col: &[T],
    wide: &mut [T],
) {
    let k = wg.g.col_width();
    matmul(
        MatMut::new(wide, filters, wg.wide_pixels()),
        MatRef::new(&weight[..filters * k], filters, k),
        MatRef::new(col, k, wg.wide_pixels()),
        false,
        false,
    );
}
