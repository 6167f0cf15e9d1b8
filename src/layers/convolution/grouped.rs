//! Inference when each filter covers the whole input: one product for all
//! the images.
//!
//! A filter as large as its unpadded input (LeNet-5's C5: 120 filters of
//! 16×5×5 over a 16×5×5 map) gives a 1×1 output, and its `col` is the image
//! itself. One product per image would be a matrix-vector product reading
//! all the weights for one output pixel each; instead the images are the
//! rows of one product, as in an affine layer, with no unrolling at all:
//!
//! ```text
//! x: (N, C·H·W) as it is       W: (FN, C·H·W)
//! out = x · Wᵀ + b             (N, FN) = (N, FN, 1, 1), then the fused activation
//! ```
//!
//! One image (inference at batch 1) is FN dot products of its C·H·W
//! values with each filter's (`kernels::gemv::dots_into`), four filters
//! sharing each pass over the image; a batch-1 team's two members each
//! take half of the filters.
//!
//! Only inference uses it: training's backward works image by image from
//! the kept padded images, which this route does not make.

use super::forward::ForwardParams;
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::gemv::dots_into;
use crate::kernels::im2col::ConvGeometry;
use crate::kernels::vectorize::map_in_place;
use crate::parallel::team::run_parts_in_team_or_here;
use crate::tensor::Float;

/// Whether inference over `n` images takes this route: each filter covers
/// the whole unpadded input.
pub(super) fn applies(g: &ConvGeometry, n: usize) -> bool {
    n >= 1 && g.pad == 0 && g.filter_h == g.in_h && g.filter_w == g.in_w
}

/// The images of `x_chunk` (consecutive, `g.image_len()` values each)
/// through the layer into `out_chunk` (FN values per image).
pub(super) fn forward_images<T: Float>(
    g: &ConvGeometry,
    params: ForwardParams<'_, T>,
    x_chunk: &[T],
    out_chunk: &mut [T],
) {
    let (k, filters) = (g.image_len(), params.bias.len());
    let n = x_chunk.len() / k;
    if n == 1 {
        let out = &mut out_chunk[..filters];
        let (w, x) = (&params.weight[..filters * k], &x_chunk[..k]);
        // In a batch-1 team, each member takes half of the filters; without
        // one, or when its members are distant (then the image crossing to
        // the helper costs more than half the products), the two halves
        // run here. Each dot product is the same on either.
        let split = filters / 2;
        let (first, second) = out.split_at_mut(split);
        run_parts_in_team_or_here(1, false, [first, second], |part, out| {
            let start = if part == 0 { 0 } else { split * k };
            dots_into(out, &w[start..start + out.len() * k], x);
        });
    } else {
        matmul(
            MatMut::new(&mut out_chunk[..n * filters], n, filters),
            MatRef::new(&x_chunk[..n * k], n, k),
            MatRef::new(&params.weight[..filters * k], filters, k).t(),
            false,
            false,
        );
    }
    let out = &mut out_chunk[..n * filters];
    for row in out.chunks_exact_mut(filters) {
        row.iter_mut().zip(params.bias).for_each(|(o, &b)| *o += b);
    }
    if params.activation.is_some() {
        with_activation!(params.activation, T, |act| map_in_place(out, act));
    }
}
