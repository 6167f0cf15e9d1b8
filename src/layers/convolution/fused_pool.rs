//! A max pooling fused into the convolution before it (book §7.4.4): the
//! network's `conv → relu → pool` run as one layer, image by image (the
//! ReLU's place may be empty, or, through `Convolution::fuse_activation`,
//! a sigmoid or tanh: see the end of this page).
//!
//! ```text
//! forward, per image:   planes = relu(W · col + b)      (FN, OH, OW), in the thread's cache
//!                       out_n  = maxpool(planes)        (FN, POH, POW), arg_max_n
//! backward, per image:  dplanes = 0; dplanes[arg_max] += relu'(out_n) · dout_n
//!                       then the convolution's backward from dplanes
//! ```
//!
//! The numbers are those of the three layers run one after the other, to
//! the bit: the same pooling kernels ([`pool_plane`], [`unpool_plane`]) on
//! the same values. The ReLU's backward needs only the pooled output: the
//! maximum of a window *is* the ReLU's output at `arg_max`, and every other
//! position of `dplanes` is 0 either way.
//!
//! What fusing saves is memory traffic: the convolution's full-size output
//! (four times the pooled one) is neither written out, read back by the
//! pooling, nor met again in backward as the pooling's `dx` and the ReLU's
//! mask; it stays in one image's buffer in the core's cache. The book's
//! 2×2 windows go further ([`FusedPool::forward_from_wide`]): they read
//! the product on the wide grid directly, adding the bias and applying the
//! ReLU to each value as it is read, so the full-size planes are never
//! written at all.
//!
//! The activation fused before the pooling may also be a sigmoid or a tanh
//! (`Convolution::fuse_activation`): the forward is then the same to the
//! bit, and so is backward unless the windows overlap (see there). The
//! network fuses a pooling only after a ReLU or no activation
//! (`networks/fusion.rs`).

use super::FusedActivation;
use crate::kernels::im2col::ConvGeometry;
use crate::kernels::im2col_wide::WideGeometry;
use crate::kernels::pool_2x2::{max_pool_2x2_plane, unpool_2x2_plane, unpool_2x2_plane_by};
use crate::layers::pooling::{is_2x2, max_pool_2x2, max_pool_2x2_values, pool_plane, unpool_plane};
use crate::tensor::Float;

/// The fused pooling's window over one output plane of the convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FusedPool {
    /// The window: one channel, the convolution's output plane (OH, OW)
    /// in, (POH, POW) out.
    pub g: ConvGeometry,
    /// An inference forward of 2×2 windows: the maxima without `arg_max`.
    pub values_only: bool,
}

/// Values of one image's output: pooled (`FN · POH · POW`) with a fused
/// pooling, else the full planes (`FN · OH · OW`, `pixels` = OH · OW).
pub(super) fn image_out_len(pool: Option<&FusedPool>, filters: usize, pixels: usize) -> usize {
    pool.map_or(filters * pixels, |pool| pool.out_len(filters))
}

impl FusedPool {
    /// Values per pooled image: `FN · POH · POW`.
    pub fn out_len(&self, filters: usize) -> usize {
        filters * self.g.out_pixels()
    }

    /// `planes: (FN, OH, OW)` → `out_n: (FN, POH, POW)`, with each
    /// maximum's index within its plane in `arg_n` (unless `values_only`).
    pub fn forward<T: Float>(&self, planes: &[T], out_n: &mut [T], arg_n: &mut [u32]) {
        let (g, out_plane) = (&self.g, self.g.out_pixels());
        let planes = planes.chunks_exact(g.in_h * g.in_w);
        let outs = out_n
            .chunks_exact_mut(out_plane)
            .zip(arg_n.chunks_exact_mut(out_plane));
        for (x_p, (out_p, arg_p)) in planes.zip(outs) {
            pool_plane(x_p, g.in_w, g, self.values_only, out_p, arg_p);
        }
    }

    /// Whether [`forward_from_wide`](Self::forward_from_wide) applies: 2×2
    /// windows with stride 2.
    pub fn pools_from_wide(&self) -> bool {
        is_2x2(&self.g)
    }

    /// [`forward`](Self::forward) straight from the convolution's product
    /// on the wide grid, `wide: (FN, wide_pixels)`, each value read as
    /// `activation(value + bias[f])`: the planes `narrow` would write,
    /// pooled with the same comparisons, so the same `out_n` and `arg_n`.
    pub fn forward_from_wide<T: Float>(
        &self,
        wide: &[T],
        wg: &WideGeometry,
        bias: &[T],
        activation: Option<FusedActivation>,
        out_n: &mut [T],
        arg_n: &mut [u32],
    ) {
        assert_eq!(arg_n.len(), out_n.len(), "one arg_max per pooled value");
        let outs = out_n.chunks_exact_mut(self.g.out_pixels());
        if self.values_only {
            self.values_from_wide(wide, wg, bias, activation, outs);
            return;
        }
        let filters = wide.chunks_exact(wg.wide_pixels()).zip(bias);
        let args = arg_n.chunks_exact_mut(self.g.out_pixels());
        for ((wide_f, &b), (out_p, arg_p)) in filters.zip(outs.zip(args)) {
            self.pool_plane_from_wide(wide_f, wg, b, activation, out_p, Some(arg_p));
        }
    }

    /// The maxima of [`forward_from_wide`](Self::forward_from_wide) without
    /// `arg_max`, into one slice per row of `wide` wherever they lie: the
    /// whole pooled planes, or a band's rows of every plane (the batch-1
    /// team, `bands.rs`, where `wide` is the band's product).
    pub fn values_from_wide<'a, T: Float>(
        &self,
        wide: &[T],
        wg: &WideGeometry,
        bias: &[T],
        activation: Option<FusedActivation>,
        out_planes: impl IntoIterator<Item = &'a mut [T]>,
    ) {
        let filters = wide.chunks_exact(wg.wide_pixels()).zip(bias);
        for ((wide_f, &b), out_p) in filters.zip(out_planes) {
            self.pool_plane_from_wide(wide_f, wg, b, activation, out_p, None);
        }
    }

    /// One plane of [`forward_from_wide`](Self::forward_from_wide): by the
    /// vector kernel ([`max_pool_2x2_plane`]) for no activation or a ReLU
    /// where it applies, else value by value.
    fn pool_plane_from_wide<T: Float>(
        &self,
        wide_f: &[T],
        wg: &WideGeometry,
        b: T,
        activation: Option<FusedActivation>,
        out_p: &mut [T],
        mut arg_p: Option<&mut [u32]>,
    ) {
        let (g, wide_w, plane_w) = (&self.g, wg.wide_w, self.g.in_w);
        let relu = match activation {
            None => Some(false),
            Some(FusedActivation::Relu) => Some(true),
            Some(_) => None,
        };
        if let Some(relu) = relu {
            let args = arg_p.as_deref_mut();
            if max_pool_2x2_plane(wide_f, wide_w, plane_w, Some(b), relu, out_p, g.out_w, args) {
                return;
            }
        }
        with_activation!(activation, T, |act| {
            let value = move |v: T| act(v + b);
            match arg_p {
                Some(arg_p) => max_pool_2x2(wide_f, wide_w, plane_w, g, value, out_p, arg_p),
                None => max_pool_2x2_values(wide_f, wide_w, g, value, out_p),
            }
        });
    }

    /// [`backward`](Self::backward) for 2×2 windows
    /// ([`pools_from_wide`](Self::pools_from_wide)), written straight onto
    /// the wide grid, `wide: (FN, wide_pixels)`, as
    /// [`widen`](crate::kernels::im2col_wide::widen) would write the planes
    /// `backward` gives: the same values, each written once
    /// ([`unpool_2x2_plane`]), with no planes to clear, scatter into and copy.
    pub fn backward_into_wide<T: Float>(
        &self,
        dout_n: &[T],
        activation_out_n: Option<(FusedActivation, &[T])>,
        arg_n: &[u32],
        wg: &WideGeometry,
        wide: &mut [T],
    ) {
        debug_assert!(self.pools_from_wide());
        let (g, wide_w) = (&self.g, wg.wide_w);
        let (plane_w, pooled_w, pooled_len) = (g.in_w, g.out_w, g.out_pixels());
        let planes = wide.chunks_exact_mut(wg.wide_pixels());
        let pooled = dout_n
            .chunks_exact(pooled_len)
            .zip(arg_n.chunks_exact(pooled_len));
        for (p, (wide_f, (dout_p, arg_p))) in planes.zip(pooled).enumerate() {
            let out_p =
                activation_out_n.map(|(act, out)| (act, &out[p * pooled_len..][..pooled_len]));
            let (windows, rest) = wide_f.split_at_mut(2 * g.out_h * wide_w);
            match out_p {
                // Rows of windows in vector registers, each row written whole.
                None => unpool_2x2_plane(dout_p, None, arg_p, plane_w, pooled_w, windows, wide_w),
                Some((FusedActivation::Relu, out)) => {
                    unpool_2x2_plane(dout_p, Some(out), arg_p, plane_w, pooled_w, windows, wide_w)
                }
                // Value by value with the activation's own backward.
                Some((act, out)) => unpool_2x2_plane_by(
                    dout_p,
                    out,
                    arg_p,
                    plane_w,
                    pooled_w,
                    windows,
                    wide_w,
                    |y, g| act.backward(y, g),
                ),
            }
            // The plane's odd row, and the zeros past the grid.
            rest.fill(T::zero());
        }
    }

    /// `dout_n: (FN, POH, POW)` → `dplanes: (FN, OH, OW)`, the pooling's
    /// backward, then the fused activation's when it is given with its
    /// pooled output.
    pub fn backward<T: Float>(
        &self,
        dout_n: &[T],
        activation_out_n: Option<(FusedActivation, &[T])>,
        arg_n: &[u32],
        dplanes: &mut [T],
    ) {
        let out_plane = self.g.out_pixels();
        let planes = dplanes.chunks_exact_mut(self.g.in_h * self.g.in_w);
        let pooled = arg_n
            .chunks_exact(out_plane)
            .zip(dout_n.chunks_exact(out_plane));
        for (p, (dx_p, (arg_p, dout_p))) in planes.zip(pooled).enumerate() {
            match activation_out_n {
                Some((act, out)) => {
                    let out_p = &out[p * out_plane..][..out_plane];
                    let dz = dout_p.iter().zip(out_p).map(|(&g, &y)| act.backward(y, g));
                    unpool_plane(dx_p, arg_p, dz);
                }
                None => unpool_plane(dx_p, arg_p, dout_p.iter().copied()),
            }
        }
    }
}
