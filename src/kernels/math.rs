//! `exp` and `tanh` for f32 that the compiler can vectorise.
//!
//! The standard library's `f32::exp` and `f32::tanh` call the C library one
//! value at a time, and in LeNet-5 those calls took more time than its
//! convolutions. These are the classic Cephes single-precision routines
//! (`expf`, `tanhf`) written without branches or calls: a range reduction
//! and a polynomial, with the special cases chosen by selects. Inside their
//! range they are within 2 units in the last place of the exact value (the
//! tests check it against f64 on a dense grid).
//!
//! ```text
//! exp(x) = 2ⁿ · exp(r),  n = round(x / ln 2),  r = x − n·ln 2 ∈ [−ln2/2, ln2/2]
//! exp(r) ≈ 1 + r + r²·P(r)            (P of degree 5, Cephes expf)
//! tanh(x) = x + x³·Q(x²)              for |x| < 0.625 (Q of degree 4, Cephes tanhf)
//!         = sign(x) · (1 − 2 / (exp(2|x|) + 1))   otherwise
//! ```
//!
//! ```
//! use convnet::kernels::math::{exp_f32, tanh_f32};
//! assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= f32::EPSILON * 3.0);
//! assert_eq!(tanh_f32(0.0), 0.0);
//! assert_eq!(exp_f32(-200.0), 0.0);
//! assert!(exp_f32(f32::NAN).is_nan());
//! ```

/// Above this, `exp_f32` is +∞ (its n would pass 127; the exact exp is
/// finite up to 88.72, which the shortcut gives up).
pub const EXP_MAX: f32 = 88.376_26;
/// Below this, `exp_f32` is 0 (the exact exp is below f32's smallest
/// normal number, 1.18e-38).
pub const EXP_MIN: f32 = -87.336_55;

/// 1.5 · 2²³: adding it rounds a float of magnitude below 2²² to an integer
/// and leaves that integer in the low bits of the sum.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// eˣ for f32, vectorisable; +∞ above [`EXP_MAX`], 0 below [`EXP_MIN`], NaN
/// for NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // `clamp` keeps NaN, which therefore flows through to y.
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let shifted = xc * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    // r = x − n·ln 2, with ln 2 split in two (Cephes C1 + C2) so that n·C1 is exact.
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // 2ⁿ: n + 127 in the exponent bits; n is in the low bits of `shifted`.
    let n_int = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits()) as i32;
    let pow2 = f32::from_bits(((n_int + 127) as u32) << 23);
    let value = y * pow2;
    if x > EXP_MAX {
        f32::INFINITY
    } else if x < EXP_MIN {
        0.0
    } else {
        value
    }
}

/// tanh x for f32, vectorisable; NaN for NaN.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328e-1)
            * z
            * x
            + x;
    let large = 1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0);
    let large = if x < 0.0 { -large } else { large };
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// 1 / (1 + e⁻ˣ) for f32, vectorisable.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The distance in units in the last place between `got` and the exact
    /// value rounded to f32.
    fn ulps(got: f32, exact: f64) -> u32 {
        let want = exact as f32;
        let key = |v: f32| {
            let b = v.to_bits() as i32;
            if b < 0 {
                i32::MIN - b
            } else {
                b
            }
        };
        (key(got) as i64 - key(want) as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulps_on_a_dense_grid() {
        let mut worst = 0;
        let mut x = EXP_MIN;
        while x < EXP_MAX {
            let e = ulps(exp_f32(x), (x as f64).exp());
            assert!(e <= 2, "exp({x}): {e} ulps");
            worst = worst.max(e);
            x += 0.0007;
        }
        assert!(worst >= 1, "the grid must reach rounding differences");
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(EXP_MAX + 1.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(EXP_MIN - 1.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(EXP_MAX).is_finite());
        assert!(exp_f32(EXP_MIN) > 0.0);
    }

    #[test]
    fn tanh_is_within_two_ulps_and_odd() {
        let mut x = -12.0f32;
        while x < 12.0 {
            let e = ulps(tanh_f32(x), (x as f64).tanh());
            assert!(e <= 2, "tanh({x}): {e} ulps");
            assert_eq!(tanh_f32(-x), -tanh_f32(x));
            x += 0.0003;
        }
        assert_eq!(tanh_f32(50.0), 1.0);
        assert_eq!(tanh_f32(-50.0), -1.0);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(1e-30), 1e-30);
    }

    proptest! {
        #[test]
        fn sigmoid_matches_f64(x in -85.0f32..100.0) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid_f32(x) as f64;
            prop_assert!((got - exact).abs() <= 2.5 * f32::EPSILON as f64 * exact.max(1e-30), "{x}: {got} {exact}");
        }
    }
}
