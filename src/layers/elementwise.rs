//! The loop shared by element-wise layers (ReLU, sigmoid, tanh): apply a
//! function to every element, in parallel chunks, into a kept buffer.
//!
//! ```text
//! map:  out[i] = f(x[i])                 (forward)
//! map2: dx[i]  = f(y[i], dout[i])        (backward, from the cached y)
//! ```

use crate::kernels::vectorize::{map2_into, map_into};
use crate::parallel::ELEMENTWISE_CHUNK;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// Channel planes of `plane` values each per rayon task, for the layers that
/// work plane by plane (pooling, LRN): at least [`ELEMENTWISE_CHUNK`] values,
/// so that a small input (one image at inference) stays on one thread
/// instead of paying to wake another.
pub(crate) fn planes_per_task(plane: usize) -> usize {
    (ELEMENTWISE_CHUNK / plane.max(1)).max(1)
}

/// `kept = x` (shape and values), copied in parallel: Convolution and
/// Affine keep their training input for backward, and a serial copy of a
/// few megabytes was a tenth of a convolution's forward.
pub(crate) fn keep_copy<T: Float>(x: &Tensor<T>, kept: &mut Tensor<T>) {
    map(x, kept, |v| v);
}

/// `out[i] = f(x[i])`; `out` takes `x`'s shape.
pub(crate) fn map<T: Float>(x: &Tensor<T>, out: &mut Tensor<T>, f: impl Fn(T) -> T + Sync) {
    out.resize(x.shape());
    out.data_mut()
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.data().par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(out, x)| map_into(out, x, &f));
}

/// `dx[i] = f(y[i], dout[i])`; `dx` takes `dout`'s shape (the same as `y`'s).
pub(crate) fn map2<T: Float>(
    y: &Tensor<T>,
    dout: &Tensor<T>,
    dx: &mut Tensor<T>,
    f: impl Fn(T, T) -> T + Sync,
) {
    dx.resize(dout.shape());
    dx.data_mut()
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(y.data().par_chunks(ELEMENTWISE_CHUNK))
        .zip(dout.data().par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((dx, y), dout)| map2_into(dx, y, dout, &f));
}
