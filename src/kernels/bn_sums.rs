//! The sums a 4-D batch normalization takes over each block of its input
//! (book §6.3; one sample's plane of one channel, `H·W` values), forward
//! and backward:
//!
//! ```text
//! forward:   s = Σ x,  m2 = Σ (x − s / len)²                  (block_moments)
//! backward:  dz = dout, or dout where γ·x̂ + β > 0 (fused ReLU)
//!            (Σ dz, Σ dz · x̂)                                  (gradient_sums)
//!            x̂ kept by forward, or x̂ = (x − μ) · s from the input
//! ```
//!
//! Each sum is [`reduce::lane_sum_by`]'s: value `i` goes to partial sum `i
//! % 16`, and the 16 are added in [`reduce::add_lanes`]' fixed tree. In
//! f32 on a CPU with AVX-512 ([`cpu_applies`]) the 16 partial sums are one
//! vector register, and the last, partial step adds only the values there
//! are (a masked add leaves the other sums as they were): the
//! same operations in the same order as the plain loops, so the same bits.
//! The plain loops are the path for f64 and other CPUs, and the reference
//! the tests hold the vector path to. Left to the compiler, the backward's
//! select (the fused ReLU's) became one masked scalar load per value, and
//! the forward's two sums stayed in the baseline's 4-wide vectors.

use super::direct_conv::cpu_applies;
use super::reduce::{self, lane_sum_by, LANES};
use super::vectorize::widest;
use crate::layers::relu::relu_backward;
use crate::tensor::Float;

/// `(Σ x, Σ (x − x̄)²)` over one block, `x̄ = Σ x / len`: the block's sum
/// and its squared deviations about its own mean.
///
/// ```
/// use convnet::kernels::bn_sums::block_moments;
/// assert_eq!(block_moments(&[1.0f32, 2.0, 3.0]), (6.0, 2.0));
/// ```
pub fn block_moments<T: Float>(x: &[T]) -> (T, T) {
    #[cfg(target_arch = "x86_64")]
    if cpu_applies::<T>() {
        // SAFETY: T is f32 (cpu_applies), so the casts are to the same
        // type and the result's back; AVX-512F was detected; the kernel
        // reads `x` only (its masked tail load touches no lane past it).
        unsafe {
            let x = std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len());
            let (sum, m2) = avx512::moments(x);
            return (T::cast(sum as f64), T::cast(m2 as f64));
        }
    }
    widest(
        #[inline(always)]
        || block_moments_plain(x),
    )
}

/// [`block_moments`] by [`reduce`]'s loops: the reference, and the path
/// for f64 and other CPUs.
#[inline(always)]
pub fn block_moments_plain<T: Float>(x: &[T]) -> (T, T) {
    let sum = lane_sum_by(x, x, |v, _| v);
    let mean = sum / T::cast(x.len() as f64);
    let m2 = lane_sum_by(x, x, |v, _| (v - mean) * (v - mean));
    (sum, m2)
}

/// `(Σ dz, Σ dz · x̂)` over one block, `dz = dout`, or with `relu =
/// Some((γ, β))` the gradient through the ReLU fused after the batch norm:
/// `dout` where `γ · x̂ + β > 0` (as forward computed it), else 0. With
/// `normalize = Some((μ, s))`, `xhat` holds the input x instead, and x̂ =
/// (x − μ) · s is computed on the way, as forward computes it (so the
/// same values as a kept x̂).
///
/// ```
/// use convnet::kernels::bn_sums::gradient_sums;
/// let (dout, xhat) = ([1.0f32, 2.0, 4.0], [-1.0f32, 0.5, 2.0]);
/// assert_eq!(gradient_sums(&dout, &xhat, None, None), (7.0, 8.0));
/// // Through a ReLU at γ = 1, β = 0: the first value did not pass.
/// assert_eq!(gradient_sums(&dout, &xhat, None, Some((1.0, 0.0))), (6.0, 9.0));
/// // x̂ from x = 2·x̂ + 1 (μ = 1, s = 0.5).
/// let x = [-1.0f32, 2.0, 5.0];
/// assert_eq!(gradient_sums(&dout, &x, Some((1.0, 0.5)), None), (7.0, 8.0));
/// ```
pub fn gradient_sums<T: Float>(
    dout: &[T],
    xhat: &[T],
    normalize: Option<(T, T)>,
    relu: Option<(T, T)>,
) -> (T, T) {
    assert_eq!(
        dout.len(),
        xhat.len(),
        "gradient_sums: blocks of different lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if cpu_applies::<T>() {
        // SAFETY: T is f32 (cpu_applies), so the casts are to the same
        // type and the result's back; AVX-512F was detected; the lengths
        // are equal (asserted above), which the kernel's loads rely on.
        unsafe {
            let f32s = |s: &[T]| std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len());
            let (dout, xhat) = (f32s(dout), f32s(xhat));
            let f32_pair = |(a, b): (T, T)| (a.as_f64() as f32, b.as_f64() as f32);
            let (relu, normalize) = (relu.map(f32_pair), normalize.map(f32_pair));
            let (sum, dot) = match (relu, normalize) {
                (Some(relu), Some(norm)) => {
                    avx512::gradient_sums::<true, true>(dout, xhat, relu, norm)
                }
                (Some(relu), None) => {
                    avx512::gradient_sums::<true, false>(dout, xhat, relu, (0.0, 0.0))
                }
                (None, Some(norm)) => {
                    avx512::gradient_sums::<false, true>(dout, xhat, (0.0, 0.0), norm)
                }
                (None, None) => {
                    avx512::gradient_sums::<false, false>(dout, xhat, (0.0, 0.0), (0.0, 0.0))
                }
            };
            return (T::cast(sum as f64), T::cast(dot as f64));
        }
    }
    gradient_sums_plain(dout, xhat, normalize, relu)
}

/// [`gradient_sums`] by [`reduce::lane_sum2_by`]: the reference, and the
/// path for f64 and other CPUs.
pub fn gradient_sums_plain<T: Float>(
    dout: &[T],
    xhat: &[T],
    normalize: Option<(T, T)>,
    relu: Option<(T, T)>,
) -> (T, T) {
    let (gamma, beta) = relu.unwrap_or((T::zero(), T::zero()));
    reduce::lane_sum2_by(dout, xhat, |g, h| {
        let h = match normalize {
            Some((mu, s)) => (h - mu) * s,
            None => h,
        };
        let g = upstream(g, h, gamma, beta, relu.is_some());
        (g, g * h)
    })
}

/// The gradient at `z = γ · x̂ + β` from `g`, the output's: `g` itself, or
/// through the fused ReLU (`z` recomputed from x̂ as forward computed it).
#[inline(always)]
pub fn upstream<T: Float>(g: T, h: T, gamma: T, beta: T, fused_relu: bool) -> T {
    if fused_relu {
        relu_backward(gamma * h + beta, g)
    } else {
        g
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::LANES;
    use crate::kernels::reduce::add_lanes;
    use std::arch::x86_64::*;

    /// The partial sums in one register, added in the fixed tree.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn total(lanes: __m512) -> f32 {
        let mut values = [0.0f32; LANES];
        _mm512_storeu_ps(values.as_mut_ptr(), lanes);
        add_lanes(values)
    }

    /// The last `len % 16` values of a block: their mask.
    #[inline(always)]
    fn tail_mask(len: usize) -> __mmask16 {
        ((1u32 << (len % LANES)) - 1) as __mmask16
    }

    /// `Σ f(x)` over `x`, [`LANES`] values a step, the last step masked
    /// (its load reads only the lanes in `x`: masked-off lanes never fault).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn lane_sum(x: &[f32], f: impl Fn(__m512) -> __m512) -> f32 {
        let body = x.len() - x.len() % LANES;
        let mut lanes = _mm512_setzero_ps();
        for chunk in x[..body].chunks_exact(LANES) {
            lanes = _mm512_add_ps(lanes, f(_mm512_loadu_ps(chunk.as_ptr())));
        }
        let mask = tail_mask(x.len());
        if mask != 0 {
            let v = _mm512_maskz_loadu_ps(mask, x[body..].as_ptr());
            lanes = _mm512_mask_add_ps(lanes, mask, lanes, f(v));
        }
        total(lanes)
    }

    /// [`super::block_moments`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn moments(x: &[f32]) -> (f32, f32) {
        let sum = lane_sum(x, |v| v);
        let mean = _mm512_set1_ps(sum / x.len() as f32);
        let m2 = lane_sum(x, |v| {
            let d = _mm512_sub_ps(v, mean);
            _mm512_mul_ps(d, d)
        });
        (sum, m2)
    }

    /// `dout`, or with `RELU` `dout` where `γ · x̂ + β > 0` (NaN gives 0,
    /// as `relu_backward`), else 0.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn upstream<const RELU: bool>(
        g: __m512,
        h: __m512,
        gamma: __m512,
        beta: __m512,
    ) -> __m512 {
        if RELU {
            let z = _mm512_add_ps(_mm512_mul_ps(gamma, h), beta);
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(z, _mm512_setzero_ps()), g)
        } else {
            g
        }
    }

    /// x̂ from a loaded vector: the vector itself, or with `NORMALIZE`
    /// `(v − μ) · s`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn normalized<const NORMALIZE: bool>(v: __m512, mu: __m512, s: __m512) -> __m512 {
        if NORMALIZE {
            _mm512_mul_ps(_mm512_sub_ps(v, mu), s)
        } else {
            v
        }
    }

    /// [`super::gradient_sums`], two sets of partial sums side by side;
    /// `relu` = (γ, β) with `RELU`, `normalize` = (μ, s) with `NORMALIZE`.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available, and `xhat` as long as `dout` (the tail's
    /// masked loads read `xhat` where they read `dout`; masked-off lanes
    /// are not read, so they never fault).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gradient_sums<const RELU: bool, const NORMALIZE: bool>(
        dout: &[f32],
        xhat: &[f32],
        (gamma, beta): (f32, f32),
        (mu, s): (f32, f32),
    ) -> (f32, f32) {
        debug_assert_eq!(dout.len(), xhat.len());
        let (gamma, beta) = (_mm512_set1_ps(gamma), _mm512_set1_ps(beta));
        let (mu, s) = (_mm512_set1_ps(mu), _mm512_set1_ps(s));
        let body = dout.len() - dout.len() % LANES;
        let (mut sums, mut dots) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let chunks = dout[..body]
            .chunks_exact(LANES)
            .zip(xhat[..body].chunks_exact(LANES));
        for (g, h) in chunks {
            let h = normalized::<NORMALIZE>(_mm512_loadu_ps(h.as_ptr()), mu, s);
            let g = upstream::<RELU>(_mm512_loadu_ps(g.as_ptr()), h, gamma, beta);
            sums = _mm512_add_ps(sums, g);
            dots = _mm512_add_ps(dots, _mm512_mul_ps(g, h));
        }
        let mask = tail_mask(dout.len());
        if mask != 0 {
            let h =
                normalized::<NORMALIZE>(_mm512_maskz_loadu_ps(mask, xhat[body..].as_ptr()), mu, s);
            let g = _mm512_maskz_loadu_ps(mask, dout[body..].as_ptr());
            let g = upstream::<RELU>(g, h, gamma, beta);
            sums = _mm512_mask_add_ps(sums, mask, sums, g);
            dots = _mm512_mask_add_ps(dots, mask, dots, _mm512_mul_ps(g, h));
        }
        (total(sums), total(dots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with the cases that tell sums apart: ±0, values that cancel,
    /// a wide range of magnitudes.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| match (i * 7 + seed) % 11 {
                0 => 0.0,
                1 => -0.0,
                k => {
                    (i.wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 * 0.013 - 6.5
                        + k as f32 * 1e-3
                }
            })
            .collect()
    }

    /// The vector path gives the plain loops' bits on every length from 0
    /// (1 for the moments) to past four steps, both sums, with and without
    /// the ReLU (γ of either sign), and on blocks of 28×28, 14×14 and 7×7
    /// planes. On a CPU without AVX-512 both sides are the plain loops.
    #[test]
    fn same_bits_as_the_plain_loops() {
        for len in (0..70).chain([784, 196, 49]) {
            let (x, h) = (values(len, 3), values(len, 5));
            let bits = |(a, b): (f32, f32)| (a.to_bits(), b.to_bits());
            if len > 0 {
                assert_eq!(
                    bits(block_moments(&x)),
                    bits(block_moments_plain(&x)),
                    "len {len}"
                );
            }
            for relu in [None, Some((0.7f32, -0.1f32)), Some((-1.3, 0.4))] {
                for normalize in [None, Some((0.3f32, 1.7f32))] {
                    assert_eq!(
                        bits(gradient_sums(&x, &h, normalize, relu)),
                        bits(gradient_sums_plain(&x, &h, normalize, relu)),
                        "len {len}, relu {relu:?}, normalize {normalize:?}"
                    );
                }
            }
        }
    }

    /// A block of −0 sums to +0, as the plain partial sums (which start at
    /// +0) do, and NaN passes the ReLU as 0.
    #[test]
    fn signed_zeros_and_nan() {
        for len in [1, 5, 16, 17, 40] {
            let zeros = vec![-0.0f32; len];
            assert_eq!(
                gradient_sums(&zeros, &zeros, None, None).0.to_bits(),
                0.0f32.to_bits()
            );
            let nan = vec![f32::NAN; len];
            let ones = vec![1.0f32; len];
            // γ · NaN + β is NaN, not > 0: nothing passes.
            assert_eq!(gradient_sums(&ones, &nan, None, Some((1.0, 0.0))).0, 0.0);
        }
    }

    /// With `normalize`, the sums of the x̂ that forward's operations
    /// make of the input, to the bit: what a batch norm that keeps no x̂
    /// relies on.
    #[test]
    fn normalizing_on_the_way_gives_the_kept_xhats_sums() {
        let (mu, s) = (0.37f32, 1.9f32);
        for len in [1, 16, 17, 49, 196, 784] {
            let (dout, x) = (values(len, 4), values(len, 6));
            let xhat: Vec<f32> = x.iter().map(|&v| (v - mu) * s).collect();
            for relu in [None, Some((0.7f32, -0.1f32))] {
                let kept = gradient_sums(&dout, &xhat, None, relu);
                let made = gradient_sums(&dout, &x, Some((mu, s)), relu);
                assert_eq!(
                    (kept.0.to_bits(), kept.1.to_bits()),
                    (made.0.to_bits(), made.1.to_bits()),
                    "len {len}, relu {relu:?}"
                );
            }
        }
    }

    /// Against the definitions in f64.
    #[test]
    fn match_the_definitions() {
        for len in [1, 15, 16, 33, 784] {
            let (x, h) = (values(len, 1), values(len, 2));
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let sum: f64 = x64.iter().sum();
            let mean = sum / len as f64;
            let m2: f64 = x64.iter().map(|v| (v - mean) * (v - mean)).sum();
            let (got_sum, got_m2) = block_moments(&x);
            let scale: f64 = x64.iter().map(|v| v.abs()).sum::<f64>() + 1.0;
            assert!((got_sum as f64 - sum).abs() <= 1e-5 * scale, "len {len}");
            assert!((got_m2 as f64 - m2).abs() <= 1e-5 * (m2 + 1.0), "len {len}");
            let (gamma, beta) = (0.8f32, 0.2f32);
            let dz: Vec<f64> = x
                .iter()
                .zip(&h)
                .map(|(&g, &h)| {
                    if gamma * h + beta > 0.0 {
                        g as f64
                    } else {
                        0.0
                    }
                })
                .collect();
            let want = (
                dz.iter().sum::<f64>(),
                dz.iter().zip(&h).map(|(g, &h)| g * h as f64).sum::<f64>(),
            );
            let got = gradient_sums(&x, &h, None, Some((gamma, beta)));
            assert!((got.0 as f64 - want.0).abs() <= 1e-5 * scale, "len {len}");
            assert!((got.1 as f64 - want.1).abs() <= 1e-4 * scale, "len {len}");
        }
    }
}
