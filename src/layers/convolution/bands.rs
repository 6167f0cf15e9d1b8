//! One image's convolution shared out between the two members of a
//! [`Team`] (inference at batch 1, see [`crate::team`]): each member computes
//! every filter on one band of output rows.
//!
//! ```text
//! out_n: (FN, OH, OW)       rows 0..⌈OH/2⌉ from member 0, the rest from member 1
//! member p, for its rows:
//!   xpad_p = pad_band(x_n)                (C, rows·S − S + FH, WP)
//!   col_p  = im2col_wide(xpad_p)          (C·FH·FW, rows·OWW)
//!   out_n[:, rows, :] = W · col_p + b     through the fused ReLU, if any
//! ```
//!
//! A band is a convolution of its own ([`WideGeometry::band`]): the padded
//! rows it reads, with no more padding. Each member pads, unrolls, multiplies
//! and narrows in its own buffers, so its data stays in its own core's
//! cache. Sharing one `col` between the members (each unrolling half the
//! channels, then multiplying half the filters) was slower than one thread:
//! half of `col` then crosses from core to core (`deep`'s second layer 56 →
//! 84 µs). Splitting the filters with each member unrolling the whole image
//! costs the unrolling twice (62 → 56 µs on that layer).
//!
//! Each output is the same sum, in the same order, as on one thread: it is
//! one dot product over C·FH·FW, whatever the number of pixels in the product.

use super::forward::multiply_and_narrow;
use super::scratch::{thread_scratch, Scratch};
use crate::im2col_wide::{im2col_wide, pad_band, WideGeometry};
use crate::team::Team;
use crate::tensor::Float;
use std::sync::Mutex;

/// Whether a layer's output has enough rows to be cut into two bands.
pub(super) fn can_split(wg: &WideGeometry) -> bool {
    wg.g.out_h >= 2
}

/// `x_n: (C, H, W)` → `out_n: (FN, OH, OW)` on the two members of `team`,
/// each in its own thread's `scratch`.
pub(super) fn forward_image_by_team<T: Float>(
    team: &Team,
    wg: &WideGeometry,
    (params, fused_relu): ((&[T], &[T]), bool),
    scratch: &[Mutex<Scratch<T>>],
    x_n: &[T],
    out_n: &mut [T],
) {
    let g = &wg.g;
    let filters = params.1.len();
    let split = g.out_h.div_ceil(2);
    let bands = [0..split, split..g.out_h];
    // Each member's rows of every output plane. (Two short lists of slices
    // per call: this runs at batch 1 only, never in training.)
    let mut planes = [Vec::with_capacity(filters), Vec::with_capacity(filters)];
    for plane in out_n.chunks_exact_mut(g.out_pixels()) {
        let (top, bottom) = plane.split_at_mut(split * g.out_w);
        planes[0].push(top);
        planes[1].push(bottom);
    }
    team.run_parts(planes, |part, planes| {
        let rows = bands[part].clone();
        let band = wg.band(rows.clone());
        let mut scratch = thread_scratch(scratch);
        let Scratch {
            xpad, col, wide, ..
        } = &mut *scratch;
        // col: (C·FH·FW, band pixels)
        pad_band(x_n, wg, rows, xpad);
        im2col_wide(xpad, &band, col);
        multiply_and_narrow(&band, params, fused_relu, col, wide, planes);
    });
}
