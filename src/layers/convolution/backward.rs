//! The convolution's backward pass, one chunk of images per task (book §7.4.3,
//! `Convolution.backward`), on the wide grid of [`crate::kernels::im2col_wide`]:
//!
//! ```text
//! dout_n: (FN, OH·OW)    → wide: (FN, OH·OWW), zeros in the junk columns
//! dW^T  += col · wide^T     (C·FH·FW, FN)
//! db    += row sums of dout_n
//! dcol   = W^T · wide       (C·FH·FW, OH·OWW)  →  dx_n = unpad(col2im(dcol))
//! ```
//!
//! For stride 1 on the wide grid, in f32 on a CPU with AVX-512, `dx_n` is
//! instead the filters turned by 180° run over `wide` by the forward's
//! direct kernel ([`direct_conv::dx_from_wide`]): no `dcol`, no `col2im`.
//! On 3×3 layers of two images or more, Winograd's F(4×4, 3×3) computes
//! `dx` (a few images at a time) and, on 28×28-like maps where
//! `weight_grad.rs` does not apply, `dW` (the chunk's images together):
//! see `winograd.rs`.
//!
//! `col` is the image unrolled again, as in forward, from the padded image
//! that forward kept (the layer keeps `xpad`, not every image's `col`).
//! Where `weight_grad.rs` applies (stride 1 on the wide grid, FW·C a
//! multiple of 8), `dW` is computed from a channels-last copy of the
//! padded image instead, with no `col` at all.
//! Where neither applies but the grid is wide (a first layer, one channel;
//! LeNet-5's C3), in f32 with AVX-512, `dW` is summed in vector lanes
//! straight from the padded image ([`direct_dw`]), again with no `col`.
//! With a fused activation or max pooling, `dout_n` first goes back through them
//! (the pooled `dout` into the full planes, `fused_pool.rs`; for 2×2
//! windows straight onto the wide grid, with no planes).
//!
//! The chunks' partial sums of `dW` and `db` are added in a fixed order, so
//! the gradients do not depend on the number of threads.

use super::chunks::BatchChunks;
use super::fused_pool::{image_out_len, FusedPool};
use super::scratch::{resize_scratch, thread_scratch, Scratch};
use super::winograd::{self, DwRoute, DxRoute};
use super::FusedActivation;
use super::{sum, weight_grad, Convolution};
use crate::error::{Error, Result};
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::im2col_wide::{col2im_wide, im2col_wide, unpad_image, widen, WideGeometry};
use crate::kernels::transpose_into;
use crate::kernels::vectorize::{map2_into, widest};
use crate::kernels::{direct_conv, direct_dw};
use crate::layers::check_dout;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// One chunk's slices of the layer's padded input, `dout`, and, with a
/// fused activation, output (for the activation's backward). With a fused pooling, `dout` and
/// the output are the pooled ones, and `pool` holds the chunk's `arg_max`.
pub(super) struct ChunkData<'a, T> {
    /// Whether `dx` is computed without `dcol` ([`direct_conv::dx_from_wide`]).
    pub dx_direct: bool,
    /// Or by Winograd's F(4×4, 3×3), a few images at a time (`winograd.rs`).
    pub dx_winograd: Option<&'a DxRoute<'a, T>>,
    /// Whether `dW` is computed by Winograd's transforms (`winograd.rs`).
    pub dw_winograd: Option<&'a DwRoute>,
    pub xpad: &'a [T],
    pub dout: &'a [T],
    pub activation_out: Option<(FusedActivation, &'a [T])>,
    pub pool: Option<(&'a FusedPool, &'a [u32])>,
}

/// Backward for one chunk of images: this chunk's `dW^T` (C·FH·FW × FN),
/// or `dW` as `(FN, FH, FW, C)` where [`weight_grad::applies`], then `db`
/// (FN) into `grads`, and `dx` for each image when it is wanted.
pub(super) fn backward_chunk<T: Float>(
    wg: &WideGeometry,
    weight: &[T],
    grads: &mut [T],
    scratch: &mut Scratch<T>,
    chunk: ChunkData<'_, T>,
    mut dx_chunk: Option<&mut [T]>,
) {
    let g = &wg.g;
    let (k, pixels, wide_pixels) = (g.col_width(), g.out_pixels(), wg.wide_pixels());
    let filters = weight.len() / k;
    // Values of one image's dout: pooled, or the full output planes.
    let out_len = image_out_len(chunk.pool.map(|(pool, _)| pool), filters, pixels);
    let channels_last = weight_grad::applies(wg);
    // Winograd's dW writes dW^T, which the channels-last reorder would
    // misread: `winograd::dw_applies` keeps the two apart.
    debug_assert!(!(channels_last && chunk.dw_winograd.is_some()));
    // dW by the direct kernel, for the layers with few channels that the
    // channels-last route does not take.
    let dw_direct = !channels_last && chunk.dw_winograd.is_none() && direct_dw::applies::<T>(wg);
    // The chunk's first image writes dW and db, the others add to them.
    let (dw_t, db) = grads.split_at_mut(filters * k);
    let Scratch {
        xpad,
        col,
        wide,
        dcol,
        planes,
        dout_ext,
        winograd,
        winograd_dw,
        dw_lanes,
    } = scratch;
    if dw_direct {
        dw_lanes.resize(direct_dw::lanes_len(wg, filters), T::zero());
    }
    let images_in_chunk = chunk.dout.len() / out_len;
    let images = chunk
        .xpad
        .chunks(wg.padded_len())
        .zip(chunk.dout.chunks(out_len));
    for (i, (xpad_n, dout_n)) in images.enumerate() {
        let activation_out_n = chunk
            .activation_out
            .map(|(act, out)| (act, &out[i * out_len..][..out_len]));
        let dx_wanted = dx_chunk.is_some();
        // Which forms of dout_n the routes read: the planes, `wide` (FN,
        // OH·OWW) with zeros in the junk columns, or both.
        let wide_wanted = chunk.dw_winograd.is_none() || (dx_wanted && chunk.dx_winograd.is_none());
        let planes_wanted =
            chunk.dw_winograd.is_some() || (dx_wanted && chunk.dx_winograd.is_some());
        // dout_n: (FN, OH, OW), after the fused layers' backward; 2×2
        // windows write `wide` alone when no route reads the planes.
        let dout_n = match (chunk.pool, activation_out_n) {
            (Some((pool, arg_max)), _) if pool.pools_from_wide() && !planes_wanted => {
                let arg_n = &arg_max[i * out_len..][..out_len];
                pool.backward_into_wide(dout_n, activation_out_n, arg_n, wg, wide);
                None
            }
            (Some((pool, arg_max)), _) => {
                let arg_n = &arg_max[i * out_len..][..out_len];
                pool.backward(dout_n, activation_out_n, arg_n, planes);
                Some(&planes[..])
            }
            // The fused activation's backward (for a ReLU: dout_n where
            // out_n > 0, else 0): one vector loop (`map2_into`) per
            // activation, each with its own constant, rather than a match
            // per value in the baseline's SSE.
            (None, Some((act, out_n))) => {
                use FusedActivation::{Relu, Sigmoid, Tanh};
                match act {
                    Relu => map2_into(planes, dout_n, out_n, |g, y| Relu.backward(y, g)),
                    Sigmoid => map2_into(planes, dout_n, out_n, |g, y| Sigmoid.backward(y, g)),
                    Tanh => map2_into(planes, dout_n, out_n, |g, y| Tanh.backward(y, g)),
                }
                Some(&planes[..])
            }
            (None, None) => Some(dout_n),
        };
        if let (Some(dout_n), true) = (dout_n, wide_wanted) {
            widen(dout_n, wg, wide);
        }
        // From here on, dout_n is read as planes only where `wide` is not
        // filled: the Winograd routes took `planes_wanted` above.
        let dout_n = dout_n.unwrap_or(&[]);
        if let Some(route) = chunk.dw_winograd {
            // The image's and dout_n's transforms; the chunk's dW after the loop.
            route.add_image(winograd_dw, xpad_n, dout_n, i, images_in_chunk);
        } else if dw_direct {
            // The image's sums in the lanes; the chunk's dW^T after the loop.
            direct_dw::add_image(xpad_n, wg, wide, filters, dw_lanes, i == 0);
        } else if channels_last {
            // dW (FN, FH, FW, C) += wide · (the channels-last image's views)
            let xhwc = &mut col[..weight_grad::channels_last_len(wg)];
            // The kept image, far out in memory, first comes into this
            // thread's buffer in one sequential copy.
            xpad.copy_from_slice(xpad_n);
            weight_grad::to_channels_last(xpad, wg, xhwc);
            weight_grad::accumulate_dw(wg, xhwc, wide, dw_t, i > 0);
        } else {
            // col: (C·FH·FW, OH·OWW), the same unrolling as in forward
            im2col_wide(xpad_n, wg, col);
            // dW^T += col · dout_n^T        (C·FH·FW, FN)
            // (the transpose of dW = dout_n · col^T: the same sums, in the
            // orientation the `gemm` crate runs best on these shapes)
            matmul(
                MatMut::new(dw_t, k, filters),
                MatRef::new(col, k, wide_pixels),
                MatRef::new(wide, filters, wide_pixels).t(),
                i > 0,
                false,
            );
        }
        // db += row sums of dout_n: of `wide` where it is filled (its
        // zeros add nothing), so that a fused pooling and the layers one
        // after the other sum the same rows in the same order.
        let rows = if wide_wanted {
            wide.chunks(wide_pixels)
        } else {
            dout_n.chunks(pixels)
        };
        widest(
            #[inline(always)]
            || {
                for (d, row) in db.iter_mut().zip(rows) {
                    *d = if i > 0 { *d + sum(row) } else { sum(row) };
                }
            },
        );
        if let Some(dx_chunk) = dx_chunk.as_mut() {
            if let Some(route) = chunk.dx_winograd {
                let last = i + 1 == images_in_chunk;
                route.add_image(winograd, dout_n, i, last, dx_chunk);
                continue;
            }
            if chunk.dx_direct {
                // dxpad = the turned filters over dout_n, with no dcol
                let done = direct_conv::dx_from_wide(wide, wg, weight, filters, dout_ext, xpad);
                assert!(done, "direct_conv::worth_it chose a product it cannot do");
            } else {
                // dcol = W^T · dout_n           (C·FH·FW, OH·OWW)
                matmul(
                    MatMut::new(dcol, k, wide_pixels),
                    MatRef::new(weight, filters, k).t(),
                    MatRef::new(wide, filters, wide_pixels),
                    false,
                    false,
                );
                // dxpad = col2im(dcol)
                col2im_wide(dcol, wg, xpad);
            }
            let dx_n = &mut dx_chunk[i * g.image_len()..(i + 1) * g.image_len()];
            // dx_n: the image's rows and columns of dxpad
            unpad_image(xpad, wg, dx_n);
        }
    }
    if let Some(route) = chunk.dw_winograd {
        if images_in_chunk > 0 {
            route.finish(winograd_dw, images_in_chunk, dw_t);
        }
    }
    if dw_direct && images_in_chunk > 0 {
        direct_dw::finish(dw_lanes, k, filters, dw_t);
    }
}

impl<T: Float> Convolution<T> {
    /// The backward pass: parameter gradients, and `dx` only `with_dx`.
    pub(super) fn backward_impl(&mut self, dout: &Tensor<T>, with_dx: bool) -> Result<()> {
        let Some((g, n)) = self.geometry else {
            return Err(Error::BackwardBeforeForward("Convolution"));
        };
        check_dout("Convolution", Some(self.out.shape()), dout)?;
        let filters = self.weight.shape()[0];
        let (k, pixels) = (g.col_width(), g.out_pixels());
        let batch_chunks = BatchChunks::new(n);
        let chunks = batch_chunks.count();
        let grad_len = filters * k + filters;
        self.partial_grads.resize(chunks * grad_len, T::zero());
        let wg = WideGeometry::new(g);
        resize_scratch(&mut self.scratch, &wg, filters);
        let weight = self.weight.data();
        // Stride 1 on the wide grid, f32 with AVX-512: dx without dcol
        // (`kernels/direct_conv.rs`), for every image of the call.
        let dx_direct = with_dx && direct_conv::worth_it::<T>(&wg);
        // 3×3 filters, two images or more: by Winograd's F(4×4, 3×3).
        let by_winograd = with_dx && winograd::dx_applies::<T>(&wg, filters, n);
        if by_winograd {
            DxRoute::transform_weights(&wg, weight, filters, &mut self.winograd_dx_weights);
        }
        let dx_route = by_winograd.then(|| DxRoute::new(&wg, filters, &self.winograd_dx_weights));
        // And dW, on the same layers.
        let dw_route =
            winograd::dw_applies::<T>(&wg, filters, n).then(|| DwRoute::new(&wg, filters));
        let fused_activation = self.fused_activation;
        let scratch = &self.scratch[..];
        // Values of one image's output (and dout): pooled, or the full planes.
        let pool = self.pool.as_ref();
        let out_len = image_out_len(pool, filters, pixels);
        // Each chunk's images of every buffer; none of `arg_max` without a
        // pooling, none of `dx` without `with_dx`.
        let arg_max_len = if pool.is_some() { out_len } else { 0 };
        let dx_len = if with_dx { g.image_len() } else { 0 };
        if with_dx {
            self.dx.resize(&[n, g.channels, g.in_h, g.in_w]);
        }
        // dx: (N, C, H, W)
        let dx_chunks = batch_chunks.split_mut(self.dx.data_mut(), dx_len);
        self.partial_grads
            .par_chunks_mut(grad_len)
            .zip(batch_chunks.split(&self.xpad, wg.padded_len()))
            .zip(batch_chunks.split(dout.data(), out_len))
            .zip(batch_chunks.split(self.out.data(), out_len))
            .zip(batch_chunks.split(&self.arg_max, arg_max_len))
            .zip(dx_chunks)
            .for_each(|(((((grads, xpad), dout), out), arg_max), dx)| {
                let chunk = ChunkData {
                    dx_direct,
                    dx_winograd: dx_route.as_ref(),
                    dw_winograd: dw_route.as_ref(),
                    xpad,
                    dout,
                    activation_out: fused_activation.map(|act| (act, out)),
                    pool: pool.map(|pool| (pool, arg_max)),
                };
                let mut scratch = thread_scratch(scratch);
                let dx = with_dx.then_some(dx);
                backward_chunk(&wg, weight, grads, &mut scratch, chunk, dx);
            });

        // Add the chunks' partial gradients into the first chunk's, in a
        // fixed order (chunk 1, 2, …) for every value, in parallel over the
        // values; then dW into the layer's (FN, C, FH, FW) order.
        if chunks == 0 {
            // An empty batch: zero gradients.
            self.grad_weight.data_mut().fill(T::zero());
            self.grad_bias.data_mut().fill(T::zero());
            return Ok(());
        }
        let (sums, later_chunks) = self.partial_grads.split_at_mut(grad_len);
        add_partial_sums(sums, later_chunks);
        let (dw, db) = sums.split_at(filters * k);
        if weight_grad::applies(&wg) {
            weight_grad::reorder(&wg, dw, self.grad_weight.data_mut());
        } else {
            // dW = (dW^T)^T
            transpose_into(dw, k, filters, self.grad_weight.data_mut());
        }
        self.grad_bias.data_mut().copy_from_slice(db);
        Ok(())
    }
}

/// Values per task when the chunks' partial sums are added.
pub(super) const SUM_TASK_LEN: usize = 1 << 13;

/// `sums[j] += later[c][j]` for the chunks c = 0, 1, … of `later` in that
/// order, whichever thread adds value j: the result does not depend on the
/// number of threads.
fn add_partial_sums<T: Float>(sums: &mut [T], later: &[T]) {
    let len = sums.len();
    sums.par_chunks_mut(SUM_TASK_LEN)
        .enumerate()
        .for_each(|(task, sums)| {
            let start = task * SUM_TASK_LEN;
            for chunk in later.chunks_exact(len) {
                let part = &chunk[start..start + sums.len()];
                sums.iter_mut().zip(part).for_each(|(s, &p)| *s += p);
            }
        });
}
