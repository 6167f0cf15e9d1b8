//! Between the wide grid of [`im2col_wide`](super) and the output planes:
//! [`narrow`] drops the junk columns of the convolution's product (adding
//! the bias and the fused activation in the same pass), and [`widen`], its
//! adjoint without the bias, puts `dout` back on the wide grid with zeros
//! in the junk columns.
//!
//! ```text
//! wide: (FN, OH·OWW)  --narrow-->  out: (FN, OH, OW)   out[f, oy, ox] = act(wide[f, oy·OWW + ox] + b[f])
//! out:  (FN, OH, OW)  --widen--->  wide: (FN, OH·OWW)  zeros where ox ≥ OW and after the grid
//! ```

use super::runs::write_padded_row;
use super::WideGeometry;
use crate::kernels::vectorize::map_in_place;
use crate::tensor::Float;

/// `wide: (rows, wide_pixels)` → `out: (rows, OH, OW)`, dropping the junk
/// columns and writing `activation(value + bias[row])`: the epilogue of the
/// convolution's product, in one pass (pass `|v| v` for none).
pub fn narrow<T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    bias: &[T],
    out: &mut [T],
    activation: impl Fn(T) -> T,
) {
    narrow_planes(
        wide,
        wg,
        bias,
        out.chunks_exact_mut(wg.g.out_pixels()),
        activation,
    );
}

/// [`narrow`] into one slice per row of `wide` (each `OH·OW` long), wherever
/// they lie: a band of rows writes into every output plane.
pub fn narrow_planes<'a, T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    bias: &[T],
    out: impl IntoIterator<Item = &'a mut [T]>,
    activation: impl Fn(T) -> T,
) {
    narrow_rows(wide, wg, bias, out, activation, |_| {});
}

/// [`narrow_planes`] for a costly activation (a sigmoid, a tanh): the
/// values plus bias first, then the activation over each whole plane while
/// it is in the cache, compiled for the widest vectors the CPU has
/// ([`map_in_place`]) where an output row (OW values) is too short for
/// them. The same values, to the bit.
pub fn narrow_planes_then_map<'a, T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    bias: &[T],
    out: impl IntoIterator<Item = &'a mut [T]>,
    activation: impl Fn(T) -> T,
) {
    narrow_rows(
        wide,
        wg,
        bias,
        out,
        |v| v,
        |plane| map_in_place(plane, &activation),
    );
}

/// Each row of `wide` into its plane as `activation(value + bias)`, then
/// `then` on the plane.
#[inline(always)]
fn narrow_rows<'a, T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    bias: &[T],
    out: impl IntoIterator<Item = &'a mut [T]>,
    activation: impl Fn(T) -> T,
    then: impl Fn(&mut [T]),
) {
    let g = &wg.g;
    let rows = out.into_iter().zip(wide.chunks_exact(wg.wide_pixels()));
    for ((out_r, wide_r), &b) in rows.zip(bias) {
        let plane = &mut out_r[..g.out_pixels()];
        let lines = plane
            .chunks_exact_mut(g.out_w)
            .zip(wide_r.chunks_exact(wg.wide_w));
        for (dst, src) in lines {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = activation(v + b);
            }
        }
        then(plane);
    }
}

/// The adjoint of [`narrow`] without the bias: `out: (rows, OH, OW)` →
/// `wide: (rows, wide_pixels)` with zeros in the junk columns and at the end.
pub fn widen<T: Float>(out: &[T], wg: &WideGeometry, wide: &mut [T]) {
    let g = &wg.g;
    let rows = wide
        .chunks_exact_mut(wg.wide_pixels())
        .zip(out.chunks_exact(g.out_pixels()));
    for (wide_r, out_r) in rows {
        let (grid, tail) = wide_r.split_at_mut(wg.grid_pixels());
        tail.fill(T::zero());
        let lines = grid
            .chunks_exact_mut(wg.wide_w)
            .zip(out_r.chunks_exact(g.out_w));
        for (dst, src) in lines {
            write_padded_row(dst, 0, src);
        }
    }
}
