//! The product behind the channels-last weight gradient
//! (`layers/convolution/weight_grad.rs`): `out (+)= wide · X`, where the
//! rows of `X` are runs of one buffer at a fixed stride, overlapping (each
//! filter row's view of a channels-last image), read where they lie.
//!
//! ```text
//! out[f, j] (+)= Σ_p wide[f, p] · x[p · x_row + j]     f < FN, j < len, p < pixels
//! ```
//!
//! In AVX-512 registers, f32: a tile of up to 6 filters × 4 vectors of 16
//! columns sums over every pixel in turn (one broadcast per filter and one
//! load per vector each step) and is written once at the end. `gemm` packs
//! both operands on every call, and each call here is one image's product
//! (a few hundred pixels), so the packing weighed on it; this kernel packs
//! nothing.
//!
//! Each value is summed pixel by pixel with fused multiply-adds, so the
//! bits differ from `gemm`'s blocked sums in the last places; the tests
//! hold both to the exact sum.

use super::direct_conv::cpu_applies;
use crate::tensor::Float;

/// The sizes of one product: `wide: (filters, pixels)` contiguous, `X`'s
/// row `p` at `p · x_row` (`len` values), `out`'s row `f` at `f · out_row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowProduct {
    /// FN: rows of `wide` and of `out`.
    pub filters: usize,
    /// The sum's length: columns of `wide`, rows of `X`.
    pub pixels: usize,
    /// Columns of `X` and of `out`.
    pub len: usize,
    /// Step between `X`'s rows (may be less than `len`: they overlap).
    pub x_row: usize,
    /// Step between `out`'s rows (at least `len`).
    pub out_row: usize,
}

impl RowProduct {
    /// Panics unless the slices hold every value the product reads and
    /// writes (the kernel's unchecked loads rely on it).
    fn check<T>(&self, wide: &[T], x: &[T], out: &[T]) {
        let last_row = |rows: usize, step: usize| (rows - 1) * step + self.len;
        assert!(self.out_row >= self.len, "row_product: out rows overlap");
        if self.filters == 0 || self.len == 0 {
            return;
        }
        assert!(
            wide.len() >= self.filters * self.pixels,
            "row_product: wide too short"
        );
        assert!(
            out.len() >= last_row(self.filters, self.out_row),
            "row_product: out too short"
        );
        if self.pixels > 0 {
            assert!(
                x.len() >= last_row(self.pixels, self.x_row),
                "row_product: x too short"
            );
        }
    }
}

/// Whether [`product`] runs for `T` on this CPU (f32 with AVX-512).
pub fn applies<T: 'static>() -> bool {
    cpu_applies::<T>()
}

/// Whether [`product`] is worth calling instead of `gemm` for a layer
/// over `channels` input channels (X's rows `channels` apart): where
/// [`applies`] and the channels are not a multiple of 16. On 24 channels
/// it was clearly faster than `gemm`; on the multiples of 16 measured it
/// was not (docs/performance.md, *Figures behind the source comments*),
/// so those keep `gemm` and their bits. Other counts (8, 40, 56, …) were
/// not measured; they follow 24.
pub fn worth_it<T: 'static>(channels: usize) -> bool {
    applies::<T>() && !channels.is_multiple_of(16)
}

/// `out = wide · X`, or `out += wide · X` with `accumulate` (see the module
/// documentation). Returns `false`, and writes nothing, unless
/// [`applies`]; callers choose it by [`worth_it`].
///
/// # Panics
/// If a slice is shorter than `shape` says.
pub fn product<T: Float>(
    shape: &RowProduct,
    wide: &[T],
    x: &[T],
    out: &mut [T],
    accumulate: bool,
) -> bool {
    shape.check(wide, x, out);
    if !applies::<T>() {
        return false;
    }
    if shape.filters == 0 || shape.len == 0 {
        return true;
    }
    if shape.pixels == 0 {
        // An empty sum: `out = 0`, or `out` as it was.
        if !accumulate {
            for row in out.chunks_mut(shape.out_row).take(shape.filters) {
                row[..shape.len].fill(T::zero());
            }
        }
        return true;
    }
    debug_assert_eq!(std::any::TypeId::of::<T>(), std::any::TypeId::of::<f32>());
    // SAFETY: T is f32 (`applies`), so the casts are to the same type;
    // AVX-512F was detected; no size is 0 (above), and `check` bounds every
    // index the kernel forms; its loads and stores touch no lane past
    // `len` (a tile's last vector is loaded whole only when it is whole,
    // else with its mask).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx512::product(
            shape,
            wide.as_ptr().cast::<f32>(),
            x.as_ptr().cast::<f32>(),
            out.as_mut_ptr().cast::<f32>(),
            accumulate,
        );
    }
    true
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::RowProduct;
    use std::arch::x86_64::*;

    /// Rows of a tile: 6 × 4 accumulators, 4 loaded vectors and a
    /// broadcast fill 29 of the 32 registers.
    const TILE_ROWS: usize = 6;
    /// Vectors of 16 columns in a tile, at most.
    const TILE_VECTORS: usize = 4;
    /// Pixels summed by every tile before the next span: the span's rows
    /// of `X` stay in L1 while each group of filters reads them.
    const PIXEL_SPAN: usize = 128;

    /// The whole product, tile by tile. The columns' vectors are shared
    /// out evenly between the fewest blocks of at most 4 (72 columns, 5
    /// vectors: 3 + 2), so that no block is left with a lone vector.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(
        s: &RowProduct,
        wide: *const f32,
        x: *const f32,
        out: *mut f32,
        accumulate: bool,
    ) {
        let vectors = s.len.div_ceil(16);
        let blocks = vectors.div_ceil(TILE_VECTORS);
        // Blocks `block < extra` take one vector more than `base`.
        let (base, extra) = (vectors / blocks, vectors % blocks);
        let mut p0 = 0;
        while p0 < s.pixels {
            let pixels = (s.pixels - p0).min(PIXEL_SPAN);
            let span = RowProduct { pixels, ..*s };
            let (wide, x) = (wide.add(p0), x.add(p0 * s.x_row));
            let accumulate = accumulate || p0 > 0;
            tiles(
                &span,
                s.pixels,
                wide,
                x,
                out,
                accumulate,
                (base, extra, blocks),
            );
            p0 += pixels;
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tiles(
        s: &RowProduct,
        wide_row: usize,
        wide: *const f32,
        x: *const f32,
        out: *mut f32,
        accumulate: bool,
        (base, extra, blocks): (usize, usize, usize),
    ) {
        let mut f0 = 0;
        while f0 < s.filters {
            let rows = (s.filters - f0).min(TILE_ROWS);
            let mut v0 = 0;
            for block in 0..blocks {
                let count = base + usize::from(block < extra);
                let cols = (s.len - 16 * v0).min(16 * count);
                let last = (1u32 << (cols - 16 * (count - 1))) - 1;
                let tile = Tile {
                    wide: wide.add(f0 * wide_row),
                    wide_row,
                    x: x.add(16 * v0),
                    out: out.add(f0 * s.out_row + 16 * v0),
                    last: last as __mmask16,
                };
                match rows {
                    1 => tile_rows::<1>(s, &tile, count, accumulate),
                    2 => tile_rows::<2>(s, &tile, count, accumulate),
                    3 => tile_rows::<3>(s, &tile, count, accumulate),
                    4 => tile_rows::<4>(s, &tile, count, accumulate),
                    5 => tile_rows::<5>(s, &tile, count, accumulate),
                    _ => tile_rows::<6>(s, &tile, count, accumulate),
                }
                v0 += count;
            }
            f0 += rows;
        }
    }

    /// Where one tile starts in each operand, and the mask of its last
    /// vector's columns.
    struct Tile {
        wide: *const f32,
        wide_row: usize,
        x: *const f32,
        out: *mut f32,
        last: __mmask16,
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_rows<const R: usize>(s: &RowProduct, t: &Tile, vectors: usize, acc: bool) {
        match vectors {
            1 => tile::<R, 1>(s, t, acc),
            2 => tile::<R, 2>(s, t, acc),
            3 => tile::<R, 3>(s, t, acc),
            _ => tile::<R, 4>(s, t, acc),
        }
    }

    /// One tile of `R` rows × `V` vectors: its sums over every pixel held
    /// in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(s: &RowProduct, t: &Tile, accumulate: bool) {
        let mask = |v: usize| if v + 1 == V { t.last } else { 0xFFFF };
        let mut sums = [[_mm512_setzero_ps(); V]; R];
        if accumulate {
            for (r, row) in sums.iter_mut().enumerate() {
                for (v, sum) in row.iter_mut().enumerate() {
                    *sum = _mm512_maskz_loadu_ps(mask(v), t.out.add(r * s.out_row + 16 * v));
                }
            }
        }
        // A masked load takes an arithmetic port as well on the CPUs
        // measured, which the FMAs need: only a last vector that is not
        // whole loads with its mask.
        if t.last == 0xFFFF {
            sum_pixels::<R, V, false>(s, t, &mut sums);
        } else {
            sum_pixels::<R, V, true>(s, t, &mut sums);
        }
        for (r, row) in sums.iter().enumerate() {
            for (v, &sum) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(t.out.add(r * s.out_row + 16 * v), mask(v), sum);
            }
        }
    }

    /// `sums[r][v] += Σ_p wide[r, p] · x[p, vector v]` over the span's
    /// pixels; the last vector loaded with `t.last` if `MASKED`.
    #[inline(always)]
    unsafe fn sum_pixels<const R: usize, const V: usize, const MASKED: bool>(
        s: &RowProduct,
        t: &Tile,
        sums: &mut [[__m512; V]; R],
    ) {
        for p in 0..s.pixels {
            let xp = t.x.add(p * s.x_row);
            let mut xs = [_mm512_setzero_ps(); V];
            for (v, xv) in xs.iter_mut().enumerate() {
                *xv = if MASKED && v + 1 == V {
                    _mm512_maskz_loadu_ps(t.last, xp.add(16 * v))
                } else {
                    _mm512_loadu_ps(xp.add(16 * v))
                };
            }
            for (r, row) in sums.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*t.wide.add(r * t.wide_row + p));
                for (sum, &xv) in row.iter_mut().zip(&xs) {
                    *sum = _mm512_fmadd_ps(w, xv, *sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The product in f64, summed plainly: the exact sum to f32's eye.
    fn product_f64(s: &RowProduct, wide: &[f32], x: &[f32], out: &[f32], acc: bool) -> Vec<f64> {
        let mut want: Vec<f64> = out.iter().map(|&v| f64::from(v)).collect();
        for f in 0..s.filters {
            for j in 0..s.len {
                let mut sum = if acc { want[f * s.out_row + j] } else { 0.0 };
                for p in 0..s.pixels {
                    sum += f64::from(wide[f * s.pixels + p]) * f64::from(x[p * s.x_row + j]);
                }
                want[f * s.out_row + j] = sum;
            }
        }
        want
    }

    fn values(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
    }

    #[test]
    fn product_is_the_sum_over_pixels_in_every_tile_shape() {
        if !applies::<f32>() {
            assert!(!product::<f32>(
                &RowProduct {
                    filters: 1,
                    pixels: 1,
                    len: 1,
                    x_row: 1,
                    out_row: 1
                },
                &[1.0],
                &[1.0],
                &mut [0.0],
                false
            ));
            return;
        }
        let mut rng = Rng::new(7);
        // Every tile height (1 to 6, and 7 to 10 as a full tile and a
        // rest), lengths from one column to 12 vectors (masked tails, 1 to
        // 3 blocks), rows of `X` overlapping (x_row < len) or apart, one
        // span of pixels or three (300), `out`'s rows padded.
        for filters in [1, 2, 3, 4, 5, 6, 9, 10, 24] {
            for len in [1usize, 8, 16, 17, 48, 72, 80, 144, 192] {
                for (x_row, pixels) in [(len.div_ceil(3), 37), (len + 5, 5), (24, 1), (9, 300)] {
                    let s = RowProduct {
                        filters,
                        pixels,
                        len,
                        x_row,
                        out_row: len + 3,
                    };
                    let wide = values(filters * pixels, &mut rng);
                    let x = values((pixels - 1) * x_row + len, &mut rng);
                    let start = values((filters - 1) * s.out_row + len, &mut rng);
                    for accumulate in [false, true] {
                        let mut out = start.clone();
                        assert!(product(&s, &wide, &x, &mut out, accumulate));
                        let want = product_f64(&s, &wide, &x, &start, accumulate);
                        for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
                            let (f, j) = (i / s.out_row, i % s.out_row);
                            if j >= len {
                                // The padding between rows is left alone.
                                assert_eq!(got, start[i], "{s:?}: padding at {i}");
                                continue;
                            }
                            // Each term is below 1: the sum's rounding is
                            // a few ulps of `pixels`.
                            let tolerance = 4e-7 * (pixels + 1) as f64;
                            assert!(
                                (f64::from(got) - want).abs() <= tolerance,
                                "{s:?} accumulate {accumulate}: ({f}, {j}) {got} against {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_sizes_write_what_an_empty_sum_gives() {
        if !applies::<f32>() {
            return;
        }
        let s = RowProduct {
            filters: 2,
            pixels: 0,
            len: 3,
            x_row: 3,
            out_row: 4,
        };
        let mut out = [5.0f32; 7];
        assert!(product(&s, &[], &[], &mut out, true));
        assert_eq!(out, [5.0; 7]);
        assert!(product(&s, &[], &[], &mut out, false));
        assert_eq!(out, [0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0]);
        // No filters or no columns: nothing to write, whatever the pixels.
        for s in [RowProduct { filters: 0, ..s }, RowProduct { len: 0, ..s }] {
            let s = RowProduct { pixels: 9, ..s };
            let mut out = [5.0f32; 7];
            assert!(product(&s, &[1.0; 18], &[1.0; 30], &mut out, false));
            assert_eq!(out, [5.0; 7]);
        }
    }

    #[test]
    #[should_panic(expected = "x too short")]
    fn a_short_input_is_refused() {
        let s = RowProduct {
            filters: 2,
            pixels: 3,
            len: 4,
            x_row: 2,
            out_row: 4,
        };
        product::<f32>(&s, &[0.0; 6], &[0.0; 7], &mut [0.0; 8], false);
    }
}
