//! One image's convolution shared out between the two members of a
//! [`Team`] (inference at batch 1, see [`crate::parallel::team`]): each member computes
//! every filter on one band of output rows.
//!
//! ```text
//! out_n: (FN, OH, OW)       rows 0..⌈OH/2⌉ from member 0, the rest from member 1
//! member p, for its rows:
//!   xpad_p = pad_band(x_n)                (C, rows·S − S + FH, WP)
//!   col_p  = im2col_wide(xpad_p)          (C·FH·FW, rows·OWW)
//!   out_n[:, rows, :] = W · col_p + b     through the fused activation, if any
//! ```
//!
//! A band is a convolution of its own ([`WideGeometry::band`]): the padded
//! rows it reads, with no more padding. Each member pads, unrolls, multiplies
//! and narrows in its own buffers, so its data stays in its own core's
//! cache. Sharing one `col` between the members (each unrolling half the
//! channels, then multiplying half the filters) was slower than one thread:
//! half of `col` then crosses from core to core. Splitting the filters with
//! each member unrolling the whole image costs the unrolling twice.
//!
//! A fused 2×2 max pooling (an inference forward, values only) is pooled
//! by each member from its own band's product, the bands cut at an even
//! row: each member writes its own rows of the pooled output, which the
//! next layer's same member reads again (all but a halo row). Pooling the
//! whole planes on one thread afterwards made every pooled layer's data
//! cross between the cores twice, and left the helper idle meanwhile: on a
//! machine where that crossing is slow, the team then gains nothing.
//!
//! Each output is the same sum, in the same order, as on one thread: it is
//! one dot product over C·FH·FW, whatever the number of pixels in the
//! product; and each pooled value the maximum of the same four values.

use super::forward::{multiply_and_narrow, product, ForwardParams};
use super::fused_pool::FusedPool;
use super::scratch::{thread_scratch, Scratch};
use crate::kernels::im2col::ConvGeometry;
use crate::kernels::im2col_wide::{pad_band, WideGeometry};
use crate::parallel::team::Team;
use crate::tensor::Float;
use std::ops::Range;
use std::sync::Mutex;

/// Multiply-adds of one image's convolution from which it is shared out
/// even when the team's members are [distant](Team::is_distant): below
/// this, the hand-over and the data crossing between the cores cost more
/// than the second core saves. Measured between LeNet-5's C3 (240,000,
/// slower shared) and SimpleConvNet's convolution (432,000, faster
/// shared); docs/performance.md.
const DISTANT_MIN_MULTIPLY_ADDS: usize = 1 << 18;

/// Whether the convolution of one image (`weights` = FN·C·FH·FW values) is
/// worth sharing out when the members are distant.
pub(super) fn worth_sharing_when_distant(g: &ConvGeometry, weights: usize) -> bool {
    weights.saturating_mul(g.out_pixels()) >= DISTANT_MIN_MULTIPLY_ADDS
}

/// Whether a layer's output has enough rows to be cut into two bands.
pub(super) fn can_split(wg: &WideGeometry) -> bool {
    wg.g.out_h >= 2
}

/// `x_n: (C, H, W)` → `out_n: (FN, OH, OW)` on the two members of `team`,
/// each in its own thread's `scratch`.
pub(super) fn forward_image_by_team<T: Float>(
    team: &Team,
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    scratch: &[Mutex<Scratch<T>>],
    x_n: &[T],
    out_n: &mut [T],
) {
    let g = &wg.g;
    let split = g.out_h.div_ceil(2);
    let planes = split_planes(out_n, g.out_pixels(), split * g.out_w);
    let bands = [0..split, split..g.out_h];
    run_bands(
        team,
        wg,
        scratch,
        x_n,
        bands,
        planes,
        |band, xpad, col, wide, planes| {
            multiply_and_narrow(band, params, xpad, col, wide, planes);
        },
    );
}

/// Whether [`forward_pooled_image_by_team`] applies to a fused pooling: an
/// inference forward of 2×2 windows (no `arg_max`), with at least two
/// pooled rows to share out.
pub(super) fn can_pool_by_band(pool: &FusedPool) -> bool {
    pool.values_only && pool.pools_from_wide() && pool.g.out_h >= 2
}

/// `x_n: (C, H, W)` → the pooled `out_n: (FN, POH, POW)` on the two
/// members of `team`: member 0 computes output rows `0..2·⌈POH/2⌉` and
/// pools them into pooled rows `0..⌈POH/2⌉`, member 1 the rest (see the
/// module documentation). Only where [`can_pool_by_band`].
pub(super) fn forward_pooled_image_by_team<T: Float>(
    team: &Team,
    wg: &WideGeometry,
    params: ForwardParams<'_, T>,
    scratch: &[Mutex<Scratch<T>>],
    x_n: &[T],
    pool: &FusedPool,
    out_n: &mut [T],
) {
    let bias = params.bias;
    let pool_g = &pool.g;
    let pooled_split = pool_g.out_h.div_ceil(2);
    // Output rows of the convolution that each member pools: two per pooled
    // row (an odd last row, which no window reads, is not computed).
    let bands = [0..2 * pooled_split, 2 * pooled_split..2 * pool_g.out_h];
    let pooled = split_planes(out_n, pool_g.out_pixels(), pooled_split * pool_g.out_w);
    run_bands(
        team,
        wg,
        scratch,
        x_n,
        bands,
        pooled,
        |band, xpad, col, wide, pooled| {
            // wide: (FN, band pixels) = W · col_p
            product(band, params, xpad, col, wide);
            pool.values_from_wide(wide, band, bias, params.activation, pooled);
        },
    );
}

/// Each member's part of every plane of `out_n`: the first `top_len` of
/// each `plane_len` values for member 0, the rest for member 1. (Two short
/// lists of slices per call: this runs at batch 1 only, never in training.)
fn split_planes<T>(out_n: &mut [T], plane_len: usize, top_len: usize) -> [Vec<&mut [T]>; 2] {
    let planes = out_n.len() / plane_len.max(1);
    let mut parts = [Vec::with_capacity(planes), Vec::with_capacity(planes)];
    for plane in out_n.chunks_exact_mut(plane_len) {
        let (top, bottom) = plane.split_at_mut(top_len);
        parts[0].push(top);
        parts[1].push(bottom);
    }
    parts
}

/// On member p of `team`, for output rows `bands[p]`: pads the band of
/// `x_n` in the member's own `scratch`, then calls
/// `finish(band, xpad, col, wide, parts[p])` to multiply and write its part.
fn run_bands<'a, T: Float>(
    team: &Team,
    wg: &WideGeometry,
    scratch: &[Mutex<Scratch<T>>],
    x_n: &[T],
    bands: [Range<usize>; 2],
    parts: [Vec<&'a mut [T]>; 2],
    finish: impl Fn(&WideGeometry, &[T], &mut [T], &mut [T], Vec<&'a mut [T]>) + Sync,
) {
    team.run_parts(parts, |part, out| {
        let rows = bands[part].clone();
        let band = wg.band(rows.clone());
        let mut scratch = thread_scratch(scratch);
        let Scratch {
            xpad, col, wide, ..
        } = &mut *scratch;
        pad_band(x_n, wg, rows, xpad);
        finish(&band, xpad, col, wide, out);
    });
}
