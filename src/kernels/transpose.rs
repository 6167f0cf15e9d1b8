//! The transpose of a row-major matrix into another buffer: the layout
//! changes of the convolution (its padded image turned channels-last for
//! `dW`, `dW^T` back to `dW`) and of checkpoints.
//!
//! ```text
//! src: (rows, cols)  →  dst: (cols, rows)      dst[c·rows + r] = src[r·cols + c]
//! ```
//!
//! For any type it goes by tiles of 16 columns: each row's 16 values are
//! read as one run, and the tile's writes land in 16 rows of `dst` that stay
//! in the L1 cache; where 16 rows are left, a tile's 16 × 16 block is first
//! read into a local array, and each of its columns written out as one run
//! of 16. The compiler moves those values one at a time. For `f32` on
//! x86-64, blocks of 4 × 4 go through four SSE registers instead (four
//! loads, eight shuffles, four stores; SSE is part of every x86-64 CPU),
//! which moves four values per instruction instead of one (`deep`'s
//! channels-last images, 16 × 900 to 64 × 100, are all `f32`).

/// Writes the transpose of the row-major `rows × cols` matrix `src` into
/// `dst` (which becomes `cols × rows`).
///
/// ```
/// let mut t = [0; 6];
/// convnet::kernels::transpose_into(&[1, 2, 3, 4, 5, 6], 2, 3, &mut t);
/// assert_eq!(t, [1, 4, 2, 5, 3, 6]);
/// ```
pub fn transpose_into<T: Copy + 'static>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "a {rows} × {cols} matrix"
    );
    #[cfg(target_arch = "x86_64")]
    if let (Some(src), Some(dst)) = (as_f32(src), as_f32_mut(dst)) {
        return sse::transpose_f32(src, rows, cols, dst);
    }
    transpose_by_tiles(src, rows, cols, dst);
}

/// [`transpose_into`] for any type, by tiles of 16 columns.
fn transpose_by_tiles<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const TILE: usize = 16;
    if rows == 0 || cols == 0 {
        return;
    }
    let full = cols / TILE * TILE;
    let tiles = dst[..full * rows].chunks_exact_mut(TILE * rows);
    for (t, tile) in tiles.enumerate() {
        let mut src_rows = src.chunks_exact(cols).take(rows).enumerate();
        // Blocks of 16 rows: 16 runs in, 16 runs out.
        for r0 in (0..rows / TILE * TILE).step_by(TILE) {
            let block: [[T; TILE]; TILE] = std::array::from_fn(|_| {
                let (_, src_row) = src_rows.next().expect("16 rows left");
                src_row[t * TILE..][..TILE].try_into().expect("a tile")
            });
            for (j, dst_run) in tile.chunks_exact_mut(rows).enumerate() {
                let run: &mut [T; TILE] = (&mut dst_run[r0..r0 + TILE]).try_into().expect("16");
                *run = std::array::from_fn(|i| block[i][j]);
            }
        }
        // The rows left, one by one.
        for (r, src_row) in src_rows {
            let run: &[T; TILE] = src_row[t * TILE..][..TILE].try_into().expect("a tile");
            for (j, &v) in run.iter().enumerate() {
                tile[j * rows + r] = v;
            }
        }
    }
    for c in full..cols {
        for r in 0..rows {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// `src` as `&[f32]` when `T` is `f32`.
#[cfg(target_arch = "x86_64")]
fn as_f32<T: 'static>(src: &[T]) -> Option<&[f32]> {
    use std::any::TypeId;
    // SAFETY: T is f32, so the slice is one of f32.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(src.as_ptr().cast(), src.len()) })
}

/// `dst` as `&mut [f32]` when `T` is `f32`.
#[cfg(target_arch = "x86_64")]
fn as_f32_mut<T: 'static>(dst: &mut [T]) -> Option<&mut [f32]> {
    use std::any::TypeId;
    // SAFETY: T is f32, so the slice is one of f32.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), dst.len()) })
}

#[cfg(target_arch = "x86_64")]
mod sse {
    use std::arch::x86_64::{
        _mm_loadu_ps, _mm_movehl_ps, _mm_movelh_ps, _mm_storeu_ps, _mm_unpackhi_ps, _mm_unpacklo_ps,
    };

    /// The transpose by blocks of 4 × 4; the rows and columns left over
    /// (fewer than 4) one value at a time.
    pub(super) fn transpose_f32(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        let (full_rows, full_cols) = (rows / 4 * 4, cols / 4 * 4);
        for c0 in (0..full_cols).step_by(4) {
            for r0 in (0..full_rows).step_by(4) {
                // SAFETY: rows r0..r0+4 < rows and columns c0..c0+4 < cols,
                // so the four loads read inside src (rows · cols values,
                // checked by the caller) and the four stores, rows c0..c0+4
                // and columns r0..r0+4 of dst, write inside dst.
                unsafe {
                    let from = src.as_ptr().add(r0 * cols + c0);
                    // a, b, c, d: rows r0 to r0+3, columns c0 to c0+3
                    let a = _mm_loadu_ps(from);
                    let b = _mm_loadu_ps(from.add(cols));
                    let c = _mm_loadu_ps(from.add(2 * cols));
                    let d = _mm_loadu_ps(from.add(3 * cols));
                    let ab_low = _mm_unpacklo_ps(a, b); // a0 b0 a1 b1
                    let cd_low = _mm_unpacklo_ps(c, d); // c0 d0 c1 d1
                    let ab_high = _mm_unpackhi_ps(a, b); // a2 b2 a3 b3
                    let cd_high = _mm_unpackhi_ps(c, d); // c2 d2 c3 d3
                    let to = dst.as_mut_ptr().add(c0 * rows + r0);
                    _mm_storeu_ps(to, _mm_movelh_ps(ab_low, cd_low)); // a0 b0 c0 d0
                    _mm_storeu_ps(to.add(rows), _mm_movehl_ps(cd_low, ab_low)); // a1 b1 c1 d1
                    _mm_storeu_ps(to.add(2 * rows), _mm_movelh_ps(ab_high, cd_high));
                    _mm_storeu_ps(to.add(3 * rows), _mm_movehl_ps(cd_high, ab_high));
                }
            }
            for r in full_rows..rows {
                for j in c0..c0 + 4 {
                    dst[j * rows + r] = src[r * cols + j];
                }
            }
        }
        for c in full_cols..cols {
            for r in 0..rows {
                dst[c * rows + r] = src[r * cols + c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_by_blocks_and_the_columns_left() {
        let shapes = [
            (3, 37),
            (16, 32),
            (1, 5),
            (5, 1),
            (0, 20),
            (20, 0),
            (35, 40),
            (32, 900),
            (7, 6),
            (4, 4),
            (13, 902),
        ];
        for (rows, cols) in shapes {
            // usize: by tiles; f32: by SSE blocks on x86-64.
            let src: Vec<usize> = (0..rows * cols).collect();
            let mut dst = vec![usize::MAX; rows * cols];
            transpose_into(&src, rows, cols, &mut dst);
            let src_f32: Vec<f32> = src.iter().map(|&v| v as f32).collect();
            let mut dst_f32 = vec![f32::NAN; rows * cols];
            transpose_into(&src_f32, rows, cols, &mut dst_f32);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}×{cols}");
                    assert_eq!(
                        dst_f32[c * rows + r],
                        src_f32[r * cols + c],
                        "f32 {rows}×{cols}"
                    );
                }
            }
        }
    }
}
