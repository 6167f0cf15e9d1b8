//! The inner loops of [`im2col_wide`](super::im2col_wide) and
//! [`col2im_wide`](super::col2im_wide) that copy or add runs of values.
//!
//! Stride 1 on the book's grid: run `oy` of a `col` row (`out_w` values) is
//! the `out_w` values at `oy · line_step` of the padded plane, from the
//! filter tap on. Runs of 8 or 16 (an 8×8 or 16×16 map) go through
//! fixed-size arrays, which the compiler turns into a few vector moves with
//! no loop (`deep`'s conv5 and conv6 work on 8×8 maps). Other widths are a
//! plain loop per run (memcpy's call costs more than such short copies).
//!
//! Rows of an image (28 values, say) are copied by [`copy_short`] and
//! padded by [`write_padded_row`] in fixed-size chunks rather than through
//! `memcpy` and `memset`, whose calls cost more than such short copies.
//!
//! On the wide grid each `col` row is one run through the plane, and a
//! 3×3 filter's three rows of one filter row fy are the same run shifted
//! by one value each: [`add_filter_row_3`] adds the three in one pass.

use crate::tensor::Float;

/// `grid` ← the runs of `plane` (see above).
#[inline(always)]
pub(super) fn copy_runs<T: Float>(grid: &mut [T], plane: &[T], out_w: usize, line_step: usize) {
    #[inline(always)]
    fn fixed<T: Float, const W: usize>(grid: &mut [T], plane: &[T], line_step: usize) {
        for (oy, dst) in grid.chunks_exact_mut(W).enumerate() {
            let src: &[T; W] = plane[oy * line_step..][..W].try_into().expect("W values");
            *<&mut [T; W]>::try_from(dst).expect("W values") = *src;
        }
    }
    match out_w {
        8 => fixed::<T, 8>(grid, plane, line_step),
        16 => fixed::<T, 16>(grid, plane, line_step),
        _ => {
            for (oy, dst) in grid.chunks_exact_mut(out_w).enumerate() {
                let src = &plane[oy * line_step..][..out_w];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// The runs of `plane` += `grid` (see above).
#[inline(always)]
pub(super) fn add_runs<T: Float>(grid: &[T], plane: &mut [T], out_w: usize, line_step: usize) {
    #[inline(always)]
    fn fixed<T: Float, const W: usize>(grid: &[T], plane: &mut [T], line_step: usize) {
        for (oy, src) in grid.chunks_exact(W).enumerate() {
            let src: &[T; W] = src.try_into().expect("W values");
            let start = oy * line_step;
            let dst: &mut [T; W] = (&mut plane[start..start + W]).try_into().expect("W values");
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
        }
    }
    match out_w {
        8 => fixed::<T, 8>(grid, plane, line_step),
        16 => fixed::<T, 16>(grid, plane, line_step),
        _ => {
            for (oy, src) in grid.chunks_exact(out_w).enumerate() {
                let dst = &mut plane[oy * line_step..][..out_w];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
            }
        }
    }
}

/// One filter row `fy` of a 3×3 filter added back on the wide grid:
/// `dst[q] += r0[q] + r1[q − 1] + r2[q − 2]`, each term only where its
/// index falls in `0..run`, where `r0, r1, r2` are the `col` rows of taps
/// (fy, 0), (fy, 1), (fy, 2), `run` values each, and `dst` is the
/// `run + 2` plane values from `fy · WP` on. With `FIRST`, `dst` starts
/// from zero instead of its contents.
///
/// The terms are added to each value in the order of adding whole rows
/// one after the other (tap (fy, 0), then (fy, 1), then (fy, 2)), so the
/// sums are the same to the bit; but the plane is read and written once
/// per filter row instead of once per tap, a third of the memory traffic
/// for `deep`'s 3×3 filters.
pub(super) fn add_filter_row_3<T: Float, const FIRST: bool>(
    dst: &mut [T],
    [r0, r1, r2]: [&[T]; 3],
) {
    let run = r0.len();
    assert!(run >= 2 && r1.len() == run && r2.len() == run && dst.len() == run + 2);
    let start = |d: T| if FIRST { T::zero() } else { d };
    // The two values at each end see only some of the taps.
    dst[0] = start(dst[0]) + r0[0];
    dst[1] = (start(dst[1]) + r0[1]) + r1[0];
    dst[run] = (start(dst[run]) + r1[run - 1]) + r2[run - 2];
    dst[run + 1] = start(dst[run + 1]) + r2[run - 1];
    // Between them, all three: (r0[q], r1[q − 1], r2[q − 2]) for q in 2..run.
    let taps = r0[2..].iter().zip(&r1[1..run - 1]).zip(&r2[..run - 2]);
    for (d, ((&a, &b), &c)) in dst[2..run].iter_mut().zip(taps) {
        *d = ((start(*d) + a) + b) + c;
    }
}

/// Values per chunk of [`copy_short`] and [`write_padded_row`].
const CHUNK: usize = 8;

/// `dst` ← `src` (as long): chunks of 8 values, the last one overlapping
/// the one before when the length is not a multiple of 8. Each chunk is a
/// fixed-size array, one or two vector moves, with no call into `memcpy`.
#[inline(always)]
pub(super) fn copy_short<T: Float>(dst: &mut [T], src: &[T]) {
    let n = src.len();
    if n < CHUNK {
        dst.copy_from_slice(src);
        return;
    }
    assert_eq!(dst.len(), n, "copy_short: lengths differ");
    let copy_chunk = |dst: &mut [T], start: usize| {
        let chunk: &[T; CHUNK] = src[start..start + CHUNK].try_into().expect("8 values");
        *<&mut [T; CHUNK]>::try_from(&mut dst[start..start + CHUNK]).expect("8 values") = *chunk;
    };
    let mut start = 0;
    while start + CHUNK < n {
        copy_chunk(dst, start);
        start += CHUNK;
    }
    copy_chunk(dst, n - CHUNK);
}

/// One row of a padded plane: `row` ← `pad` zeros, `src`, then zeros to
/// its end. Where both borders are at most 8 values (and the row at least
/// 8), 8 zeros are stored over each end first and `src` copied over them.
#[inline(always)]
pub(super) fn write_padded_row<T: Float>(row: &mut [T], pad: usize, src: &[T]) {
    let (wp, w) = (row.len(), src.len());
    let right = wp - pad - w;
    if pad <= CHUNK && right <= CHUNK && wp >= CHUNK {
        let zeros = [T::zero(); CHUNK];
        *<&mut [T; CHUNK]>::try_from(&mut row[..CHUNK]).expect("8 values") = zeros;
        *<&mut [T; CHUNK]>::try_from(&mut row[wp - CHUNK..]).expect("8 values") = zeros;
    } else {
        row[..pad].fill(T::zero());
        row[pad + w..].fill(T::zero());
    }
    copy_short(&mut row[pad..pad + w], src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_copies_and_padded_rows_of_every_length() {
        for w in 0..20 {
            let src: Vec<f32> = (1..=w).map(|v| v as f32).collect();
            let mut dst = vec![-1.0; w];
            copy_short(&mut dst, &src);
            assert_eq!(dst, src, "copy of {w}");
            for (pad, right) in [(0, 0), (0, 2), (1, 1), (2, 2), (8, 8), (9, 0), (0, 9)] {
                let mut row = vec![-1.0; pad + w + right];
                write_padded_row(&mut row, pad, &src);
                let mut want = vec![0.0; pad];
                want.extend(&src);
                want.resize(pad + w + right, 0.0);
                assert_eq!(row, want, "{pad} + {w} + {right}");
            }
        }
    }
}
