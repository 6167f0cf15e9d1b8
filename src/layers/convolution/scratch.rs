//! The convolution's per-thread buffers: one set per pool thread, each for
//! one image, reused image after image so that they stay in the core's
//! cache (`deep`'s second layer: `col` is 144 × 848 values, 488 KB in f32).

use crate::kernels::im2col_wide::WideGeometry;
use crate::tensor::Float;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One thread's buffers, each for one image, reused image after image.
#[derive(Default)]
pub(super) struct Scratch<T> {
    /// xpad: (C, HP, WP), the padded image; in backward, then dxpad.
    pub xpad: Vec<T>,
    /// col: (C·FH·FW, OH·OWW); in backward, where `weight_grad.rs`
    /// applies, the channels-last padded image instead (shorter).
    pub col: Vec<T>,
    /// out, or dout in backward, on the wide grid: (FN, OH·OWW)
    pub wide: Vec<T>,
    /// dcol: (C·FH·FW, OH·OWW)
    pub dcol: Vec<T>,
    /// One image's output planes (FN, OH, OW): before the fused pooling in
    /// forward; `dout` after the fused activation's (and pooling's) backward.
    pub planes: Vec<T>,
    /// `wide` behind and before a margin of zeros, for `dx` without
    /// `dcol` (`kernels/direct_conv.rs`); sized by its first use.
    pub dout_ext: Vec<T>,
    /// The Winograd route's buffers (`winograd.rs`); sized by their first use.
    pub winograd: super::winograd::Buffers<T>,
    /// The Winograd weight gradient's buffers; sized by their first use.
    pub winograd_dw: super::winograd::DwBuffers<T>,
    /// The direct weight gradient's partial sums, (FN, C·FH·FW, 16)
    /// (`kernels/direct_dw.rs`); sized by its first use.
    pub dw_lanes: Vec<T>,
}

/// One [`Scratch`] per pool thread, sized for `wg` and `filters`.
pub(super) fn resize_scratch<T: Float>(
    scratch: &mut Vec<Mutex<Scratch<T>>>,
    wg: &WideGeometry,
    filters: usize,
) {
    scratch.resize_with(rayon::current_num_threads(), Default::default);
    for s in scratch {
        let s = s.get_mut().unwrap_or_else(PoisonError::into_inner);
        s.xpad.resize(wg.padded_len(), T::zero());
        s.col.resize(wg.col_len(), T::zero());
        s.wide.resize(filters * wg.wide_pixels(), T::zero());
        s.dcol.resize(wg.col_len(), T::zero());
        s.planes.resize(filters * wg.g.out_pixels(), T::zero());
    }
}

/// The calling thread's buffers. The chunks go to whichever thread is free,
/// but each thread keeps using its own set, which stays in its core's cache
/// (one set per chunk spread 16 sets over both caches, several megabytes).
/// Nothing run under the lock starts parallel work, so a thread never waits
/// for itself; a pool larger than the set count only shares sets.
pub(super) fn thread_scratch<T>(scratch: &[Mutex<Scratch<T>>]) -> MutexGuard<'_, Scratch<T>> {
    let i = rayon::current_thread_index().unwrap_or(0) % scratch.len();
    scratch[i].lock().unwrap_or_else(PoisonError::into_inner)
}
