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
//! out = x · Wᵀ + b             (N, FN) = (N, FN, 1, 1), then the fused ReLU
//! ```
//!
//! Only inference uses it: training's backward works image by image from
//! the kept padded images, which this route does not make.

use super::forward::ForwardParams;
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::im2col::ConvGeometry;
use crate::layers::relu::relu;
use crate::tensor::Float;

/// Whether inference over `n` images takes this route: each filter covers
/// the whole unpadded input, and there are at least two images.
pub(super) fn applies(g: &ConvGeometry, n: usize) -> bool {
    n >= 2 && g.pad == 0 && g.filter_h == g.in_h && g.filter_w == g.in_w
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
    matmul(
        MatMut::new(&mut out_chunk[..n * filters], n, filters),
        MatRef::new(&x_chunk[..n * k], n, k),
        MatRef::new(&params.weight[..filters * k], filters, k).t(),
        false,
        false,
    );
    for row in out_chunk.chunks_exact_mut(filters) {
        for (o, &b) in row.iter_mut().zip(params.bias) {
            *o = if params.fused_relu {
                relu(*o + b)
            } else {
                *o + b
            };
        }
    }
}
