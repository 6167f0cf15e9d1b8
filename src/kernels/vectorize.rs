//! Element-wise loops compiled for the widest vectors the CPU has.
//!
//! The crate is built for the baseline x86-64 (SSE2: 4 floats per
//! instruction) so that one binary runs on any x86-64 machine. These loops
//! are compiled three times — for AVX-512 (16 floats), AVX2 (8) and the
//! baseline — and the widest one the CPU supports is chosen when called
//! (`is_x86_feature_detected!` reads a cached flag). The three do the same
//! IEEE operations in the same order (Rust never fuses a multiply and an
//! add on its own), so they give the same bits: a seed reproduces a run on
//! any machine.
//!
//! ```
//! use convnet::kernels::vectorize::{map_into, map2_into};
//! let x = [1.0f32, -2.0, 3.0];
//! let mut out = [0.0f32; 3];
//! map_into(&mut out, &x, |v| v * 2.0);
//! assert_eq!(out, [2.0, -4.0, 6.0]);
//! map2_into(&mut out, &x, &x, |a, b| a * b);
//! assert_eq!(out, [1.0, 4.0, 9.0]);
//! ```

#[inline(always)]
fn map_plain<T: Copy>(out: &mut [T], x: &[T], f: &impl Fn(T) -> T) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

#[inline(always)]
fn map_in_place_plain<T: Copy>(data: &mut [T], f: &impl Fn(T) -> T) {
    for v in data.iter_mut() {
        *v = f(*v);
    }
}

#[inline(always)]
fn map2_plain<T: Copy>(out: &mut [T], a: &[T], b: &[T], f: &impl Fn(T, T) -> T) {
    for ((o, &u), &v) in out.iter_mut().zip(a).zip(b) {
        *o = f(u, v);
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f")]
    pub(super) fn call_avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn call_avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn map_avx512<T: Copy>(out: &mut [T], x: &[T], f: &impl Fn(T) -> T) {
        super::map_plain(out, x, f)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn map_avx2<T: Copy>(out: &mut [T], x: &[T], f: &impl Fn(T) -> T) {
        super::map_plain(out, x, f)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn map_in_place_avx512<T: Copy>(data: &mut [T], f: &impl Fn(T) -> T) {
        super::map_in_place_plain(data, f)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn map_in_place_avx2<T: Copy>(data: &mut [T], f: &impl Fn(T) -> T) {
        super::map_in_place_plain(data, f)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn map2_avx512<T: Copy>(out: &mut [T], a: &[T], b: &[T], f: &impl Fn(T, T) -> T) {
        super::map2_plain(out, a, b, f)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn map2_avx2<T: Copy>(out: &mut [T], a: &[T], b: &[T], f: &impl Fn(T, T) -> T) {
        super::map2_plain(out, a, b, f)
    }
}

/// `out[i] = f(x[i])` over the shorter of the two slices.
#[inline]
pub fn map_into<T: Copy>(out: &mut [T], x: &[T], f: impl Fn(T) -> T) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::map_avx512(out, x, &f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { wide::map_avx2(out, x, &f) };
        }
    }
    map_plain(out, x, &f)
}

/// `data[i] = f(data[i])`: [`map_into`] where the output is the input.
#[inline]
pub fn map_in_place<T: Copy>(data: &mut [T], f: impl Fn(T) -> T) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::map_in_place_avx512(data, &f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { wide::map_in_place_avx2(data, &f) };
        }
    }
    map_in_place_plain(data, &f)
}

/// `out[i] = f(a[i], b[i])` over the shortest of the three slices.
#[inline]
pub fn map2_into<T: Copy>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::map2_avx512(out, a, b, &f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { wide::map2_avx2(out, a, b, &f) };
        }
    }
    map2_plain(out, a, b, &f)
}

/// `f()`, compiled for the widest vectors the CPU has: `f` and whatever it
/// inlines (closures, `#[inline(always)]` functions) are compiled inside
/// each of the three variants. For loops whose bodies read several slices,
/// which the one- and two-input maps above do not cover.
///
/// Mark the closure `#[inline(always)]` (`widest(#[inline(always)] || …)`)
/// and keep its loops in `#[inline(always)]` functions: a closure is a
/// function of its own, and a large one left out of line is compiled once,
/// for the baseline, and merely called from the wide variants (the
/// batch norm's sums then ran one value at a time).
#[inline]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { wide::call_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { wide::call_avx2(f) };
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::math::{sigmoid_f32, tanh_f32};

    /// Every path the CPU offers gives the plain loop's bits.
    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let mut plain = vec![0.0f32; x.len()];
        let mut fast = vec![0.0f32; x.len()];
        for f in [sigmoid_f32 as fn(f32) -> f32, tanh_f32, |v: f32| v.max(0.0)] {
            map_plain(&mut plain, &x, &f);
            map_into(&mut fast, &x, f);
            assert_eq!(plain, fast);
            fast.copy_from_slice(&x);
            map_in_place(&mut fast, f);
            assert_eq!(plain, fast);
            #[cfg(target_arch = "x86_64")]
            for (has, wide_map) in [
                (
                    std::arch::is_x86_feature_detected!("avx512f"),
                    wide::map_in_place_avx512::<f32> as unsafe fn(&mut [f32], &_),
                ),
                (
                    std::arch::is_x86_feature_detected!("avx2"),
                    wide::map_in_place_avx2,
                ),
            ] {
                if has {
                    fast.copy_from_slice(&x);
                    // SAFETY: the feature was detected.
                    unsafe { wide_map(&mut fast, &f) };
                    assert_eq!(plain, fast);
                }
            }
            #[cfg(target_arch = "x86_64")]
            for (has, wide_map) in [
                (
                    std::arch::is_x86_feature_detected!("avx512f"),
                    wide::map_avx512::<f32> as unsafe fn(&mut [f32], &[f32], &_),
                ),
                (std::arch::is_x86_feature_detected!("avx2"), wide::map_avx2),
            ] {
                if has {
                    fast.fill(0.0);
                    // SAFETY: the feature was detected.
                    unsafe { wide_map(&mut fast, &x, &f) };
                    assert_eq!(plain, fast);
                }
            }
        }
        let g: Vec<f32> = x.iter().map(|v| v.sin()).collect();
        let backward = |y: f32, d: f32| d * y * (1.0 - y);
        map2_plain(&mut plain, &x, &g, &backward);
        map2_into(&mut fast, &x, &g, backward);
        assert_eq!(plain, fast);
    }

    /// `widest` runs its closure, compiled for each width, with the plain
    /// loop's bits: a loop over three slices and a select.
    #[test]
    fn widest_gives_the_plain_bits() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let scale: Vec<f32> = (0..1003).map(|i| 1.0 + i as f32 * 1e-3).collect();
        let body = |out: &mut [f32]| {
            for ((o, &v), &s) in out.iter_mut().zip(&x).zip(&scale) {
                let z = v * s - 0.25;
                *o = if z > 0.0 { z / s } else { 0.0 };
            }
        };
        let mut plain = vec![0.0f32; x.len()];
        body(&mut plain);
        let mut fast = vec![1.0f32; x.len()];
        widest(|| body(&mut fast));
        assert_eq!(plain, fast);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                fast.fill(1.0);
                // SAFETY: the feature was detected.
                unsafe { wide::call_avx512(|| body(&mut fast)) };
                assert_eq!(plain, fast);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                fast.fill(1.0);
                // SAFETY: the feature was detected.
                unsafe { wide::call_avx2(|| body(&mut fast)) };
                assert_eq!(plain, fast);
            }
        }
    }
}
