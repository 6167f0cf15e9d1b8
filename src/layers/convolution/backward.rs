//! The convolution's backward pass for one chunk of images (book §7.4.3,
//! `Convolution.backward`), on the wide grid of [`crate::im2col_wide`]:
//!
//! ```text
//! dout_n: (FN, OH·OW)    → wide: (FN, OH·OWW), zeros in the junk columns
//! dW^T  += col · wide^T     (C·FH·FW, FN)
//! db    += row sums of dout_n
//! dcol   = W^T · wide       (C·FH·FW, OH·OWW)  →  dx_n = unpad(col2im(dcol))
//! ```
//!
//! `col` is the image unrolled again, as in forward, from the padded image
//! that forward kept (the layer keeps `xpad`, not every image's `col`).

use super::fused_pool::FusedPool;
use super::scratch::Scratch;
use super::sum;
use crate::gemm::{matmul, MatMut, MatRef};
use crate::im2col_wide::{col2im_wide, im2col_wide, unpad_image, widen, WideGeometry};
use crate::layers::relu::relu_backward;
use crate::tensor::Float;

/// One chunk's slices of the layer's padded input, `dout`, and, with a
/// fused ReLU, output (to mask `dout` by). With a fused pooling, `dout` and
/// the output are the pooled ones, and `pool` holds the chunk's `arg_max`.
pub(super) struct ChunkData<'a, T> {
    pub xpad: &'a [T],
    pub dout: &'a [T],
    pub relu_out: Option<&'a [T]>,
    pub pool: Option<(&'a FusedPool, &'a [u32])>,
}

/// Backward for one chunk of images: this chunk's `dW^T` and `db` into
/// `grads` (C·FH·FW·FN values, then FN), and `dx` for each image when it is
/// wanted.
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
    let out_len = chunk
        .pool
        .map_or(filters * pixels, |(pool, _)| pool.out_len(filters));
    let (dw_t, db) = grads.split_at_mut(filters * k);
    dw_t.fill(T::zero());
    db.fill(T::zero());
    let Scratch {
        xpad,
        col,
        wide,
        dcol,
        planes,
    } = scratch;
    let images = chunk
        .xpad
        .chunks(wg.padded_len())
        .zip(chunk.dout.chunks(out_len));
    for (i, (xpad_n, dout_n)) in images.enumerate() {
        let relu_out_n = chunk.relu_out.map(|out| &out[i * out_len..][..out_len]);
        // dout_n: (FN, OH, OW), after the fused layers' backward.
        let dout_n = match (chunk.pool, relu_out_n) {
            (Some((pool, arg_max)), _) => {
                let arg_n = &arg_max[i * out_len..][..out_len];
                pool.backward(dout_n, relu_out_n, arg_n, planes);
                &planes[..]
            }
            // The fused ReLU's backward: dout_n where out_n > 0, else 0.
            (None, Some(out_n)) => {
                let masked_dout = planes.iter_mut().zip(dout_n).zip(out_n);
                masked_dout.for_each(|((m, &g), &y)| *m = relu_backward(y, g));
                &planes[..]
            }
            (None, None) => dout_n,
        };
        // col: (C·FH·FW, OH·OWW), the same unrolling as in forward
        im2col_wide(xpad_n, wg, col);
        // wide: (FN, OH·OWW), dout_n with zeros in the junk columns
        widen(dout_n, wg, wide);
        // dW^T += col · dout_n^T        (C·FH·FW, FN)
        // (the transpose of dW = dout_n · col^T: the same sums, and the
        // `gemm` crate runs this orientation 10–50 % faster on these shapes)
        matmul(
            MatMut::new(dw_t, k, filters),
            MatRef::new(col, k, wide_pixels),
            MatRef::new(wide, filters, wide_pixels).t(),
            true,
            false,
        );
        // db += row sums of dout_n
        for (d, row) in db.iter_mut().zip(dout_n.chunks(pixels)) {
            *d += sum(row);
        }
        if let Some(dx_chunk) = dx_chunk.as_mut() {
            // dcol = W^T · dout_n           (C·FH·FW, OH·OWW)
            matmul(
                MatMut::new(dcol, k, wide_pixels),
                MatRef::new(weight, filters, k).t(),
                MatRef::new(wide, filters, wide_pixels),
                false,
                false,
            );
            // dx_n = col2im(dcol), through the padded plane
            col2im_wide(dcol, wg, xpad);
            let dx_n = &mut dx_chunk[i * g.image_len()..(i + 1) * g.image_len()];
            unpad_image(xpad, wg, dx_n);
        }
    }
}
