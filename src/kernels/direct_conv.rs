//! Direct convolution onto the wide grid: `wide = W · col` of
//! [`im2col_wide`](super::im2col_wide) computed straight from the padded
//! image, for stride 1, with no `col` written and no `gemm` packing.
//!
//! ```text
//! xpad: (C, HP, WP)         W: (FN, C, FH, FW)
//! wide[f, oy·OWW + ox] = Σ_c Σ_fy Σ_fx  W[f, c, fy, fx] · xpad[c, oy + fy, ox + fx]
//!                        (c, fy, fx in this order, one fused multiply-add each)
//! ```
//!
//! On the wide grid (OWW = WP) a tap `(fy, fx)` reads every output pixel's
//! input at the same offset `fy·WP + fx` from the pixel, so 16 neighbouring
//! pixels are one vector load whatever rows they lie on. The kernel keeps
//! the sums of one such vector for up to [`MAX_FILTER_BLOCK`] filters in
//! registers and, for every `(c, fy, fx)`, loads the 16 inputs once and
//! multiplies them by each filter's weight, broadcast from W (read in
//! place: the filters' rows of W stay in the core's L1 cache). On runs of
//! 32 pixels or more it takes two such vectors per step for up to 12
//! filters, so that each input load and each broadcast weight (a load
//! too) serves two multiply-adds: the cores run near their peak, as
//! `gemm`'s kernel does, without unrolling the image into `col` first.
//! On the book's grid (OWW = OW) each output row is one such run.
//!
//! Every output value is summed in the same order whatever the grid, the
//! band of rows or the vector lane it falls in, so the layer's batch-1 team
//! (which computes bands of rows) gives the same bits as one thread. Only
//! f32 on a CPU with AVX-512 takes this route ([`conv_wide`] returns
//! `false` otherwise, and the caller unrolls and multiplies);
//! [`conv_wide_plain`] is the same sums in plain Rust, which the tests
//! compare it with.
//!
//! ```
//! use convnet::kernels::direct_conv::conv_wide_plain;
//! use convnet::kernels::im2col::ConvGeometry;
//! use convnet::kernels::im2col_wide::{pad_image, WideGeometry};
//! // One 3×3 image, pad 1, one filter that sums the 3×3 window.
//! let wg = WideGeometry::new(ConvGeometry::new((1, 3, 3), (3, 3), 1, 1).unwrap());
//! let x = [1.0f32; 9];
//! let mut xpad = vec![0.0; wg.padded_len()];
//! pad_image(&x, &wg, &mut xpad);
//! let mut wide = vec![0.0; wg.wide_pixels()];
//! conv_wide_plain(&xpad, &wg, &[1.0f32; 9], 1, &mut wide);
//! // Corners see 4 ones, edges 6, the centre 9 (on the book's grid here:
//! // rows of 3).
//! assert_eq!(&wide[..3], &[4.0, 6.0, 4.0]);
//! assert_eq!(&wide[3..6], &[6.0, 9.0, 6.0]);
//! ```

use super::im2col_wide::WideGeometry;
use crate::tensor::Float;

/// Filters whose sums one pass keeps in registers: 24 of AVX-512's 32, the
/// rest for the inputs and the broadcast weight.
pub const MAX_FILTER_BLOCK: usize = 24;

/// One run of output pixels that read the input planes at one offset:
/// `out[out_start..][..len]` from `input_c[in_start..]` (plus each tap's shift).
#[derive(Clone, Copy, Debug)]
struct Run {
    out_start: usize,
    in_start: usize,
    len: usize,
}

/// What one product reads and writes, in values: `channels` input planes
/// `plane` apart, a `fh × fw` filter whose rows are `row` apart in them;
/// `filters` output planes `out_plane` apart. The weight of input channel
/// `c`, tap `t` (`fy·fw + fx`) and output `f` is `W[w_first + c·w_in +
/// t·w_tap + f·w_out]`: W read in place, for forward and turned for `dx`.
#[derive(Clone, Copy, Debug)]
struct Sweep {
    channels: usize,
    plane: usize,
    row: usize,
    fh: usize,
    fw: usize,
    filters: usize,
    out_plane: usize,
    w_first: usize,
    w_in: isize,
    w_tap: isize,
    w_out: isize,
}

impl Sweep {
    /// The forward product of `wg` into `wide: (FN, wide_pixels)`.
    fn forward(wg: &WideGeometry, filters: usize) -> Self {
        let g = &wg.g;
        Sweep {
            channels: g.channels,
            plane: wg.padded_h * wg.padded_w,
            row: wg.padded_w,
            fh: g.filter_h,
            fw: g.filter_w,
            filters,
            out_plane: wg.wide_pixels(),
            // W: (FN, C, FH, FW) as it is.
            w_first: 0,
            w_in: (g.filter_h * g.filter_w) as isize,
            w_tap: 1,
            w_out: g.col_width() as isize,
        }
    }

    /// Index into W of input channel `c`, tap `t` and output `f`.
    fn weight_index(&self, c: usize, t: usize, f: usize) -> usize {
        let offset = c as isize * self.w_in + t as isize * self.w_tap + f as isize * self.w_out;
        (self.w_first as isize + offset) as usize
    }

    /// Checks the slices against the sweep and its runs; a mismatch is a
    /// bug in the caller.
    fn check(&self, input: &[impl Copy], weight: &[impl Copy], runs: &[Run], out: &[impl Copy]) {
        // The weight index is linear in (c, t, f): its extremes lie at the
        // corners of their ranges.
        let (c_last, t_last, f_last) = (self.channels - 1, self.fh * self.fw - 1, self.filters - 1);
        for c in [0, c_last] {
            for t in [0, t_last] {
                for f in [0, f_last] {
                    let offset =
                        c as isize * self.w_in + t as isize * self.w_tap + f as isize * self.w_out;
                    let index = self.w_first as isize + offset;
                    assert!(
                        index >= 0 && (index as usize) < weight.len(),
                        "direct_conv: weight index"
                    );
                }
            }
        }
        assert!(
            input.len() >= self.channels * self.plane,
            "direct_conv: input"
        );
        assert!(
            out.len() >= self.filters * self.out_plane,
            "direct_conv: output"
        );
        let reach = (self.fh - 1) * self.row + self.fw - 1;
        for run in runs {
            assert!(
                run.in_start + run.len + reach <= self.plane,
                "direct_conv: run past its plane"
            );
            assert!(
                run.out_start + run.len <= self.out_plane,
                "direct_conv: run past its output"
            );
        }
    }
}

/// The runs of `wg`'s forward output, and where its values end (the rest
/// of each `wide` row, up to `wide_pixels`, is zero as in `W · col`).
fn runs(wg: &WideGeometry) -> (Vec<Run>, usize) {
    let g = &wg.g;
    if wg.wide_w == wg.padded_w {
        // One run: pixel p reads xpad_c[p + fy·WP + fx]; the junk columns at
        // the end of each row read the next row's start, within the plane.
        let len = (g.out_h - 1) * wg.wide_w + g.out_w;
        let run = Run {
            out_start: 0,
            in_start: 0,
            len,
        };
        return (vec![run], len);
    }
    let runs = (0..g.out_h)
        .map(|oy| Run {
            out_start: oy * wg.wide_w,
            in_start: oy * wg.padded_w,
            len: g.out_w,
        })
        .collect();
    (runs, g.out_h * wg.wide_w)
}

/// Whether [`conv_wide`] can compute `wg`'s product: stride 1, and the
/// wide grid as wide as either the padded row or the output row.
pub fn geometry_applies(wg: &WideGeometry) -> bool {
    wg.g.stride == 1 && (wg.wide_w == wg.padded_w || wg.wide_w == wg.g.out_w)
}

/// Whether a layer should compute `wg`'s products by [`conv_wide`] and
/// [`dx_from_wide`]: for `T` on this CPU, on the wide grid (OWW = WP). On
/// the book's grid (an 8×8 map) the runs of 8 fill half a vector, and
/// unrolling into `col` for `gemm` is faster (see docs/performance.md).
pub fn worth_it<T: 'static>(wg: &WideGeometry) -> bool {
    cpu_applies::<T>() && geometry_applies(wg) && wg.wide_w == wg.padded_w
}

/// Whether the vector kernel runs for `T` on this CPU (f32 with AVX-512).
pub fn cpu_applies<T: 'static>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::any::TypeId;
        TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `wide: (FN, wide_pixels) = W · col` computed from `xpad` (see the module
/// documentation), `W: (FN, C, FH, FW)` as `weight`. Returns `false`, and
/// writes nothing, unless [`cpu_applies`] and [`geometry_applies`].
pub fn conv_wide<T: Float>(
    xpad: &[T],
    wg: &WideGeometry,
    weight: &[T],
    filters: usize,
    wide: &mut [T],
) -> bool {
    if !cpu_applies::<T>() || !geometry_applies(wg) {
        return false;
    }
    let (sweep, runs) = forward_sweep(xpad, wg, weight, filters, wide);
    run_vector(xpad, sweep, weight, &runs, wide)
}

/// The sweep and runs of `wg`'s forward, checked against the slices, with
/// each `wide` row's values past the grid zeroed (as `W · col` has them).
fn forward_sweep<T: Float>(
    xpad: &[T],
    wg: &WideGeometry,
    weight: &[T],
    filters: usize,
    wide: &mut [T],
) -> (Sweep, Vec<Run>) {
    let sweep = Sweep::forward(wg, filters);
    let (runs, end) = runs(wg);
    sweep.check(xpad, weight, &runs, wide);
    for row in wide.chunks_exact_mut(sweep.out_plane).take(filters) {
        row[end..].fill(T::zero());
    }
    (sweep, runs)
}

/// [`conv_wide`]'s sums in plain Rust, one output value at a time in the
/// same order (`mul_add`, the fused multiply-add the vector kernel does):
/// the same bits, for any `T`.
pub fn conv_wide_plain<T: Float>(
    xpad: &[T],
    wg: &WideGeometry,
    weight: &[T],
    filters: usize,
    wide: &mut [T],
) {
    assert!(
        geometry_applies(wg),
        "conv_wide: stride 1 on a wide or book grid only"
    );
    let (sweep, runs) = forward_sweep(xpad, wg, weight, filters, wide);
    sweep_plain(xpad, sweep, weight, &runs, wide);
}

/// Backward to the input by the same kernel. `col2im(W^T · wide)` adds
/// `W[f, c, fy, fx] · wide_f[p]` into `dxpad_c[p + fy·WP + fx]`; read the
/// other way round, `dxpad_c[q] = Σ W[f, c, fy, fx] · wide_f[q − fy·WP − fx]`,
/// a convolution of `wide` with the filters turned by 180° and their two
/// channel axes swapped. With `wide` copied into `ext`, each filter's
/// plane behind M = (FH − 1)·WP + FW − 1 zeros and followed by M more,
///
/// ```text
/// dxpad_c[q] = Σ_f Σ_fy' Σ_fx'  W[f, c, FH−1−fy', FW−1−fx'] · ext_f[q + fy'·WP + fx']
///              (f, fy', fx' in this order; W as the layer holds it, `weight`)
/// ```
///
/// `wide: (FN, wide_pixels)` is `dout` on the wide grid, zeros in its junk
/// columns (`widen`). Only the rows of `dxpad: (C, HP, WP)` that hold the
/// image, P to P + H − 1, are written (their padding columns with values
/// nobody reads); `unpad_image` then takes `dx`. Returns `false`, and
/// writes nothing, unless [`cpu_applies`] and the grid is wide (OWW = WP).
pub fn dx_from_wide<T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    weight: &[T],
    filters: usize,
    ext: &mut Vec<T>,
    dxpad: &mut [T],
) -> bool {
    if !worth_it::<T>(wg) {
        return false;
    }
    let (sweep, run) = dx_sweep(wg, filters, wide, ext);
    sweep.check(ext, weight, &[run], dxpad);
    run_vector(ext, sweep, weight, &[run], dxpad)
}

/// [`dx_from_wide`]'s sums in plain Rust, the same bits, for any `T`.
pub fn dx_from_wide_plain<T: Float>(
    wide: &[T],
    wg: &WideGeometry,
    weight: &[T],
    filters: usize,
    ext: &mut Vec<T>,
    dxpad: &mut [T],
) {
    assert!(
        wg.g.stride == 1 && wg.wide_w == wg.padded_w,
        "dx_from_wide: stride 1 on the wide grid only"
    );
    let (sweep, run) = dx_sweep(wg, filters, wide, ext);
    sweep.check(ext, weight, &[run], dxpad);
    sweep_plain(ext, sweep, weight, &[run], dxpad);
}

/// The sweep and the run of [`dx_from_wide`], with `wide` copied into
/// `ext` (see there).
fn dx_sweep<T: Float>(
    wg: &WideGeometry,
    filters: usize,
    wide: &[T],
    ext: &mut Vec<T>,
) -> (Sweep, Run) {
    let g = &wg.g;
    let (wp, plane) = (wg.padded_w, wg.padded_h * wg.padded_w);
    let margin = (g.filter_h - 1) * wp + g.filter_w - 1;
    // The wide grid's values that col2im would add back: its first `run`.
    let run_len = (g.out_h - 1) * wp + g.out_w;
    debug_assert_eq!(margin + run_len, plane);
    let ext_plane = plane + margin;
    assert!(
        wide.len() >= filters * wg.wide_pixels(),
        "dx_from_wide: wide too short"
    );
    // Each value written once: the margins zeroed, the middle copied (the
    // buffer is the thread's, reused image after image).
    ext.resize(filters * ext_plane, T::zero());
    let rows = wide.chunks_exact(wg.wide_pixels());
    for (ext_f, wide_f) in ext.chunks_exact_mut(ext_plane).zip(rows) {
        let (front, rest) = ext_f.split_at_mut(margin);
        let (middle, back) = rest.split_at_mut(run_len);
        front.fill(T::zero());
        middle.copy_from_slice(&wide_f[..run_len]);
        back.fill(T::zero());
    }
    let sweep = Sweep {
        channels: filters,
        plane: ext_plane,
        row: wp,
        fh: g.filter_h,
        fw: g.filter_w,
        filters: g.channels,
        out_plane: plane,
        // Input channel f, tap t', output c: W[f, c, taps − 1 − t'].
        w_first: g.filter_h * g.filter_w - 1,
        w_in: g.col_width() as isize,
        w_tap: -1,
        w_out: (g.filter_h * g.filter_w) as isize,
    };
    // The rows of the padded plane that hold the image.
    let start = g.pad * wp;
    let run = Run {
        out_start: start,
        in_start: start,
        len: g.in_h * wp,
    };
    (sweep, run)
}

/// What [`pointwise`] multiplies: `channels` input planes `plane` apart,
/// `filters` rows of weights `weight_row` apart, `filters` output planes
/// `out_plane` apart, `len` values of each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pointwise {
    pub channels: usize,
    pub plane: usize,
    pub filters: usize,
    pub weight_row: usize,
    pub out_plane: usize,
    pub len: usize,
}

/// `out[f·out_plane + p] = Σ_c weight[f·weight_row + c] · input[c·plane + p]`
/// for `p < len`: a 1×1 convolution by the same kernel, the products of
/// [`winograd`](super::winograd). `vector` chooses the AVX-512 kernel
/// (when [`cpu_applies`]) or the plain sums; both give the same bits.
pub(crate) fn pointwise<T: Float>(
    input: &[T],
    weight: &[T],
    shape: Pointwise,
    out: &mut [T],
    vector: bool,
) {
    let sweep = Sweep {
        channels: shape.channels,
        plane: shape.plane,
        row: 0,
        fh: 1,
        fw: 1,
        filters: shape.filters,
        out_plane: shape.out_plane,
        w_first: 0,
        w_in: 1,
        w_tap: 0,
        w_out: shape.weight_row as isize,
    };
    let run = Run {
        out_start: 0,
        in_start: 0,
        len: shape.len,
    };
    sweep.check(input, weight, &[run], out);
    if !(vector && run_vector(input, sweep, weight, &[run], out)) {
        sweep_plain(input, sweep, weight, &[run], out);
    }
}

/// The products of `sweep` over `runs`, one output value at a time.
fn sweep_plain<T: Float>(input: &[T], sweep: Sweep, weight: &[T], runs: &[Run], out: &mut [T]) {
    for (f, out_f) in out
        .chunks_exact_mut(sweep.out_plane)
        .take(sweep.filters)
        .enumerate()
    {
        for run in runs {
            for p in 0..run.len {
                let mut sum = T::zero();
                for c in 0..sweep.channels {
                    for fy in 0..sweep.fh {
                        for fx in 0..sweep.fw {
                            let x = input[c * sweep.plane + run.in_start + p + fy * sweep.row + fx];
                            sum = weight[sweep.weight_index(c, fy * sweep.fw + fx, f)]
                                .mul_add(x, sum);
                        }
                    }
                }
                out_f[run.out_start + p] = sum;
            }
        }
    }
}

/// The products of `sweep` over `runs` by the AVX-512 kernel; `false` if
/// `T` or the CPU is not its. The caller has checked the lengths.
fn run_vector<T: Float>(
    input: &[T],
    sweep: Sweep,
    weight: &[T],
    runs: &[Run],
    out: &mut [T],
) -> bool {
    if !cpu_applies::<T>() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: T is f32 (cpu_applies), so the casts are to the same type.
        let cast =
            |s: &[T]| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) };
        let out =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), out.len()) };
        // SAFETY: AVX-512F was detected; the caller checked every run
        // against the slices (`Sweep::check`).
        unsafe { avx512::sweep(cast(input), sweep, cast(weight), runs, out) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (input, sweep, weight, runs, out);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Run, Sweep, MAX_FILTER_BLOCK};
    use std::arch::x86_64::*;

    /// See [`super::run_vector`]: blocks of filters as even as possible,
    /// none over [`MAX_FILTER_BLOCK`], each over every run.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sweep(
        input: &[f32],
        sweep: Sweep,
        weight: &[f32],
        runs: &[Run],
        out: &mut [f32],
    ) {
        // Long runs take two vectors per step with half the filters.
        let pairs = runs.iter().all(|run| run.len >= 2 * 16);
        let max_block = if pairs {
            MAX_FILTER_BLOCK / 2
        } else {
            MAX_FILTER_BLOCK
        };
        let blocks = sweep.filters.div_ceil(max_block);
        let mut first = 0;
        for b in 0..blocks {
            let size = (sweep.filters - first) / (blocks - b);
            let block = Block {
                input: input.as_ptr(),
                sweep,
                weight: weight
                    .as_ptr()
                    .offset(sweep.w_first as isize + first as isize * sweep.w_out),
                out: out.as_mut_ptr().add(first * sweep.out_plane),
            };
            for &run in runs {
                if pairs {
                    pair_dispatch(&block, size, run);
                } else {
                    block_dispatch(&block, size, run);
                }
            }
            first += size;
        }
    }

    /// One block of filters: pointers to its first weight and output plane.
    struct Block {
        input: *const f32,
        sweep: Sweep,
        weight: *const f32,
        out: *mut f32,
    }

    /// Calls [`block_run`] with the block's size as a constant.
    #[target_feature(enable = "avx512f")]
    unsafe fn block_dispatch(block: &Block, size: usize, run: Run) {
        macro_rules! sizes {
            ($($n:literal)*) => {
                match size {
                    $($n => block_run::<$n>(block, run),)*
                    _ => unreachable!("filter blocks hold 1 to {MAX_FILTER_BLOCK}"),
                }
            };
        }
        sizes!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24);
    }

    /// Calls [`pair_run`] with the block's size as a constant.
    #[target_feature(enable = "avx512f")]
    unsafe fn pair_dispatch(block: &Block, size: usize, run: Run) {
        macro_rules! sizes {
            ($($n:literal)*) => {
                match size {
                    $($n => pair_run::<$n>(block, run),)*
                    _ => unreachable!("filter blocks of pairs hold 1 to {}", MAX_FILTER_BLOCK / 2),
                }
            };
        }
        sizes!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// [`block_run`] two vectors (32 pixels) at a time, then the rest by
    /// it: each input load and each broadcast weight now serves two
    /// multiply-adds, where one vector per step needed as many loads as
    /// multiply-adds (one per broadcast weight). Every sum is taken in
    /// the same order, so the same bits.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pair_run<const FB: usize>(block: &Block, run: Run) {
        let s = &block.sweep;
        let mut p = 0;
        while p + 32 <= run.len {
            let mut sums = [[_mm512_setzero_ps(); 2]; FB];
            for c in 0..s.channels {
                let base = block.input.add(c * s.plane + run.in_start + p);
                let mut w = block.weight.offset(c as isize * s.w_in);
                for fy in 0..s.fh {
                    for fx in 0..s.fw {
                        let at = base.add(fy * s.row + fx);
                        let (x0, x1) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                        for (f, sum) in sums.iter_mut().enumerate() {
                            let weight = _mm512_set1_ps(*w.offset(f as isize * s.w_out));
                            sum[0] = _mm512_fmadd_ps(weight, x0, sum[0]);
                            sum[1] = _mm512_fmadd_ps(weight, x1, sum[1]);
                        }
                        w = w.offset(s.w_tap);
                    }
                }
            }
            for (f, sum) in sums.iter().enumerate() {
                let out = block.out.add(f * s.out_plane + run.out_start + p);
                _mm512_storeu_ps(out, sum[0]);
                _mm512_storeu_ps(out.add(16), sum[1]);
            }
            p += 32;
        }
        if p < run.len {
            let rest = Run {
                out_start: run.out_start + p,
                in_start: run.in_start + p,
                len: run.len - p,
            };
            block_run::<FB>(block, rest);
        }
    }

    /// The `FB` filters of `block` over one run, 16 pixels at a time (the
    /// last vector masked).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block_run<const FB: usize>(block: &Block, run: Run) {
        let mut p = 0;
        while p + 16 <= run.len {
            block_vector::<FB, false>(block, &run, p, !0);
            p += 16;
        }
        if p < run.len {
            block_vector::<FB, true>(block, &run, p, (1u16 << (run.len - p)) - 1);
        }
    }

    /// One vector of 16 pixels of [`block_run`] from `p`: the lanes of
    /// `mask` only if `MASKED` (a masked load takes an arithmetic port as
    /// well on the CPUs measured, which the FMAs need, so whole vectors
    /// load without one).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block_vector<const FB: usize, const MASKED: bool>(
        block: &Block,
        run: &Run,
        p: usize,
        mask: __mmask16,
    ) {
        let s = &block.sweep;
        let mut sums = [_mm512_setzero_ps(); FB];
        for c in 0..s.channels {
            let base = block.input.add(c * s.plane + run.in_start + p);
            let mut w = block.weight.offset(c as isize * s.w_in);
            for fy in 0..s.fh {
                for fx in 0..s.fw {
                    let at = base.add(fy * s.row + fx);
                    let x = if MASKED {
                        _mm512_maskz_loadu_ps(mask, at)
                    } else {
                        _mm512_loadu_ps(at)
                    };
                    for (f, sum) in sums.iter_mut().enumerate() {
                        let weight = *w.offset(f as isize * s.w_out);
                        *sum = _mm512_fmadd_ps(_mm512_set1_ps(weight), x, *sum);
                    }
                    w = w.offset(s.w_tap);
                }
            }
        }
        for (f, sum) in sums.iter().enumerate() {
            let out = block.out.add(f * s.out_plane + run.out_start + p);
            if MASKED {
                _mm512_mask_storeu_ps(out, mask, *sum);
            } else {
                _mm512_storeu_ps(out, *sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{matmul, MatMut, MatRef};
    use crate::kernels::im2col::ConvGeometry;
    use crate::kernels::im2col_wide::{col2im_wide, im2col_wide, pad_image, unpad_image, widen};
    use crate::rng::Rng;

    fn random(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    /// Geometries of every kind the layer meets: wide and book grids, rows
    /// rounded up to 16, filter counts that fill blocks unevenly.
    fn cases() -> Vec<(WideGeometry, usize)> {
        let shapes = [
            ((3, 7, 7), (3, 3), 1, 5),     // wide grid 9, 7 rows
            ((16, 28, 28), (3, 3), 1, 16), // deep's conv2
            ((24, 14, 14), (3, 3), 1, 48), // two blocks of 24
            ((5, 8, 8), (3, 3), 1, 64),    // book grid (8 of 10), three blocks
            ((2, 9, 11), (5, 3), 2, 25),   // a 5×3 filter, pad 2
            ((4, 6, 6), (2, 2), 0, 3),     // no padding
            ((1, 28, 28), (5, 5), 0, 30),  // SimpleConvNet's conv1 (book grid)
        ];
        shapes
            .into_iter()
            .map(|(input, filter, pad, filters)| {
                let g = ConvGeometry::new(input, filter, 1, pad).unwrap();
                (WideGeometry::new(g), filters)
            })
            .collect()
    }

    /// A random image of `wg`, padded, and random weights for `filters`.
    fn padded_image_and_weights(
        wg: &WideGeometry,
        filters: usize,
        rng: &mut Rng,
    ) -> (Vec<f32>, Vec<f32>) {
        let g = &wg.g;
        let x = random(g.channels * g.in_h * g.in_w, rng);
        let weight = random(filters * g.col_width(), rng);
        let mut xpad = vec![0.0; wg.padded_len()];
        pad_image(&x, wg, &mut xpad);
        (xpad, weight)
    }

    #[test]
    fn geometries_cover_both_grids() {
        let cases = cases();
        assert!(cases.iter().any(|(wg, _)| wg.wide_w == wg.padded_w));
        assert!(cases
            .iter()
            .any(|(wg, _)| wg.wide_w == wg.g.out_w && wg.padded_w != wg.g.out_w));
        assert!(cases.iter().all(|(wg, _)| geometry_applies(wg)));
        let stride_2 = ConvGeometry::new((1, 8, 8), (3, 3), 2, 1).unwrap();
        assert!(!geometry_applies(&WideGeometry::new(stride_2)));
    }

    /// The plain sums are `W · col` of the unrolled image, to rounding.
    #[test]
    fn plain_sums_are_the_product_with_col() {
        let mut rng = Rng::new(3);
        for (wg, filters) in cases() {
            let g = &wg.g;
            let (xpad, weight) = padded_image_and_weights(&wg, filters, &mut rng);
            let mut col = vec![0.0; wg.col_len()];
            im2col_wide(&xpad, &wg, &mut col);
            let mut want = vec![0.0; filters * wg.wide_pixels()];
            matmul(
                MatMut::new(&mut want, filters, wg.wide_pixels()),
                MatRef::new(&weight, filters, g.col_width()),
                MatRef::new(&col, g.col_width(), wg.wide_pixels()),
                false,
                false,
            );
            let mut got = vec![f32::NAN; want.len()];
            conv_wide_plain(&xpad, &wg, &weight, filters, &mut got);
            // Every value, the junk columns and the zeros past the grid too.
            for (i, (&got, &want)) in got.iter().zip(&want).enumerate() {
                let tolerance = 1e-5 * (1.0 + want.abs());
                assert!(
                    (got - want).abs() <= tolerance,
                    "{wg:?} [{i}]: {got} vs {want}"
                );
            }
        }
    }

    /// The vector kernel gives the plain sums' bits, every value of `wide`
    /// (junk columns included), and overwrites whatever `wide` held.
    #[test]
    fn vector_kernel_gives_the_plain_bits() {
        if !cpu_applies::<f32>() {
            return;
        }
        let mut rng = Rng::new(4);
        for (wg, filters) in cases() {
            let (xpad, weight) = padded_image_and_weights(&wg, filters, &mut rng);
            let mut plain = vec![0.0; filters * wg.wide_pixels()];
            conv_wide_plain(&xpad, &wg, &weight, filters, &mut plain);
            let mut fast = vec![f32::NAN; plain.len()];
            assert!(conv_wide(&xpad, &wg, &weight, filters, &mut fast));
            let same = plain
                .iter()
                .zip(&fast)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{wg:?} {filters}");
        }
        // f64 is not this kernel's: the caller unrolls instead.
        let (wg, filters) = cases()[0];
        let xpad = vec![0.0f64; wg.padded_len()];
        let weight = vec![0.0f64; wg.g.col_width() * filters];
        let mut wide = vec![0.0f64; filters * wg.wide_pixels()];
        assert!(!conv_wide(&xpad, &wg, &weight, filters, &mut wide));
    }

    /// `dx` by the turned filters is `unpad(col2im(W^T · wide))`, to
    /// rounding, and the vector kernel gives the plain sums' bits.
    #[test]
    fn dx_is_col2im_of_the_transposed_product() {
        let mut rng = Rng::new(5);
        let wide_grid = cases()
            .into_iter()
            .filter(|(wg, _)| wg.wide_w == wg.padded_w);
        let mut tested = 0;
        // One buffer for every case, as a thread reuses it image after
        // image and layer after layer: what an earlier case left must not
        // leak into the margins.
        let mut ext = vec![f32::NAN; 1 << 16];
        for (wg, filters) in wide_grid {
            let g = &wg.g;
            let k = g.col_width();
            let weight = random(filters * k, &mut rng);
            let dout = random(filters * g.out_pixels(), &mut rng);
            let mut wide = vec![f32::NAN; filters * wg.wide_pixels()];
            widen(&dout, &wg, &mut wide);
            // The route it replaces: dcol = W^T · wide, then col2im.
            let mut dcol = vec![0.0; wg.col_len()];
            matmul(
                MatMut::new(&mut dcol, k, wg.wide_pixels()),
                MatRef::new(&weight, filters, k).t(),
                MatRef::new(&wide, filters, wg.wide_pixels()),
                false,
                false,
            );
            let mut dxpad = vec![0.0; wg.padded_len()];
            col2im_wide(&dcol, &wg, &mut dxpad);
            let mut want = vec![0.0; g.channels * g.in_h * g.in_w];
            unpad_image(&dxpad, &wg, &mut want);

            let mut plain_pad = vec![f32::NAN; wg.padded_len()];
            dx_from_wide_plain(&wide, &wg, &weight, filters, &mut ext, &mut plain_pad);
            let mut got = vec![0.0; want.len()];
            unpad_image(&plain_pad, &wg, &mut got);
            // Sums of up to FN·FH·FW products of N(0, 1) values, in
            // another order: f32 rounding grows with the number of terms
            // (a wrong or missing term would be off by about 1).
            let tolerance = 4e-7 * (filters * g.filter_h * g.filter_w) as f32;
            for (i, (&got, &want)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() <= tolerance,
                    "{wg:?} [{i}]: {got} vs {want}"
                );
            }
            if cpu_applies::<f32>() {
                let mut fast_pad = vec![f32::NAN; wg.padded_len()];
                assert!(dx_from_wide(
                    &wide,
                    &wg,
                    &weight,
                    filters,
                    &mut ext,
                    &mut fast_pad
                ));
                // The rows that hold the image, every column.
                let rows = g.pad * wg.padded_w..(g.pad + g.in_h) * wg.padded_w;
                for (fast, plain) in fast_pad
                    .chunks_exact(wg.padded_h * wg.padded_w)
                    .zip(plain_pad.chunks_exact(wg.padded_h * wg.padded_w))
                {
                    let (fast, plain) = (&fast[rows.clone()], &plain[rows.clone()]);
                    assert!(fast
                        .iter()
                        .zip(plain)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            }
            tested += 1;
        }
        assert!(tested >= 3);
    }
}
