//! Max pooling (book §7.3 and §7.4.4, `common/layers.py: Pooling`).
//!
//! Read `layers/reference/pooling.rs` ([`reference::MaxPooling`](super::reference::MaxPooling))
//! next to the book; this file is the same math made fast. What the fast
//! path adds:
//!
//! - the windows are visited in place, with no `col`, and clipped to the
//!   real pixels instead of padded;
//! - the book's 2×2 windows have a kernel of their own, and in inference
//!   take their maximum without recording `arg_max`;
//! - planes run in parallel, and one image (batch 1) is shared between two
//!   threads;
//! - a convolution can run the pooling itself (`networks/fusion.rs`), with
//!   the kernels below.
//!
//! ```text
//! x:   (N, C, H, W)  →  out: (N, C, OH, OW),   OH = (H + 2P − PH)/S + 1
//! out[n, c, oy, ox] = max over the PH×PW window at (oy·S − P, ox·S − P)
//! backward: dx[arg_max] += dout   (every other input of the window gets 0)
//! ```
//!
//! The book runs pooling through `im2col` (one row per channel window) and
//! takes each row's max. This layer visits the same windows directly instead
//! of materialising `col`: the result is identical (a test checks it against
//! the im2col formulation) with a fraction of the memory traffic. Padding, as
//! in PyTorch, never wins the max: windows only look at real pixels.
//!
//! Only a training forward records `arg_max`, the index of each window's
//! maximum that backward needs; in inference the book's 2×2 windows take
//! their maximum with the same comparisons and no index, which saves
//! writing an index per output.
//!
//! ```
//! use convnet::layers::{Layer, MaxPooling, PoolingConfig};
//! use convnet::Tensor;
//! let mut pool = MaxPooling::<f32>::new(&PoolingConfig { size: 2, stride: 2, pad: 0 });
//! let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 3.0, 2.0, 0.0]).unwrap();
//! assert_eq!(pool.forward(&x, false).unwrap().data(), [3.0]);
//! ```

use super::elementwise::planes_per_task;
use super::{check_dout, Layer};
use crate::error::{Error, Result};
use crate::kernels::im2col::ConvGeometry;
use crate::kernels::pool_2x2::max_pool_2x2_plane;
use crate::networks::spec::LayerSpec;
use crate::parallel::team::run_in_team;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// Window size, stride and padding of a pooling layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolingConfig {
    /// PH = PW.
    pub size: usize,
    /// Stride S (the `maxpool(K)` spec's default is K).
    pub stride: usize,
    /// Padding P on each side.
    pub pad: usize,
}

impl Default for PoolingConfig {
    /// The book's 2×2 pooling with stride 2.
    fn default() -> Self {
        PoolingConfig {
            size: 2,
            stride: 2,
            pad: 0,
        }
    }
}

impl PoolingConfig {
    /// The geometry of one channel plane for an input of shape `(N, C, H, W)`.
    pub(crate) fn geometry(&self, kind: &str, input: &[usize]) -> Result<ConvGeometry> {
        let [_, _, h, w] = input[..] else {
            return Err(Error::Shape(format!(
                "{kind} expects (N, C, H, W) input, got {input:?}"
            )));
        };
        if self.pad >= self.size {
            return Err(Error::Geometry(format!(
                "{kind}: padding {} must be smaller than the window {}",
                self.pad, self.size
            )));
        }
        ConvGeometry::new((1, h, w), (self.size, self.size), self.stride, self.pad).map_err(|e| {
            Error::Geometry(format!(
                "{kind} {0}x{0} stride {1} pad {2} on {h}x{w} input: {3}",
                self.size,
                self.stride,
                self.pad,
                e.detail()
            ))
        })
    }
}

/// Max pooling over each channel separately.
pub struct MaxPooling<T> {
    /// Window size, stride and padding.
    pub config: PoolingConfig,
    /// For every output element, the index within its input plane (iy·W + ix)
    /// of the window's maximum.
    arg_max: Vec<u32>,
    input_shape: Vec<usize>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> MaxPooling<T> {
    /// A max pooling layer with `config`'s window, stride and padding.
    pub fn new(config: &PoolingConfig) -> Self {
        MaxPooling {
            config: config.clone(),
            arg_max: Vec::new(),
            input_shape: Vec::new(),
            out: Tensor::default(),
            dx: Tensor::default(),
        }
    }
}

/// The clipped window `[start, end)` along one axis for output index `o`.
#[inline]
pub(crate) fn window(o: usize, g: &ConvGeometry, size: usize, len: usize) -> (usize, usize) {
    let start = (o * g.stride) as isize - g.pad as isize;
    let end = (start + size as isize).min(len as isize) as usize;
    (start.max(0) as usize, end)
}

/// Max pooling of one plane `x_p: (H, W)` into `out_p: (OH, OW)`, with the
/// index of each maximum in `arg_p`.
fn max_pool_plane<T: Float>(
    x_p: &[T],
    w: usize,
    g: &ConvGeometry,
    out_p: &mut [T],
    arg_p: &mut [u32],
) {
    let h = x_p.len() / w;
    if is_2x2(g) {
        // By the vector kernel where it applies, else the plain loop.
        let fast = max_pool_2x2_plane(x_p, w, w, None, false, out_p, g.out_w, Some(&mut *arg_p));
        if !fast {
            max_pool_2x2(x_p, w, w, g, |v| v, out_p, arg_p);
        }
        return;
    }
    for oy in 0..g.out_h {
        let (y0, y1) = window(oy, g, g.filter_h, h);
        for ox in 0..g.out_w {
            let (x0, x1) = window(ox, g, g.filter_w, w);
            let mut best = y0 * w + x0;
            let mut best_value = x_p[best];
            for iy in y0..y1 {
                let row = &x_p[iy * w..][..w];
                for (ix, &v) in row.iter().enumerate().take(x1).skip(x0) {
                    // `>` keeps the first maximum, like NumPy's argmax.
                    // Written as selects, not a branch: on real
                    // data the comparison is a coin toss, and a
                    // mispredicted branch costs more than the work.
                    let better = v > best_value;
                    best_value = if better { v } else { best_value };
                    best = if better { iy * w + ix } else { best };
                }
            }
            out_p[oy * g.out_w + ox] = best_value;
            arg_p[oy * g.out_w + ox] = best as u32;
        }
    }
}

/// The common 2×2, stride-2, unpadded case with no window clipping: the same
/// result as the general loop, with fixed offsets the compiler can unroll.
/// The input rows lie `stride` values apart in `x_p` (the plane's width `w`,
/// or a longer row: the fused pooling reads the convolution's wide product,
/// where `value` adds the bias and applies the ReLU), and `arg_p` holds
/// indices in a plane `w` wide.
#[inline(always)]
pub(crate) fn max_pool_2x2<T: Float>(
    x_p: &[T],
    stride: usize,
    w: usize,
    g: &ConvGeometry,
    value: impl Fn(T) -> T + Copy,
    out_p: &mut [T],
    arg_p: &mut [u32],
) {
    let rows = out_p
        .chunks_exact_mut(g.out_w)
        .zip(arg_p.chunks_exact_mut(g.out_w));
    for (oy, (out_row, arg_row)) in rows.enumerate() {
        let (row0, row1) = (&x_p[2 * oy * stride..], &x_p[(2 * oy + 1) * stride..]);
        max_pool_2x2_row([row0, row1], value, 2 * oy * w, w, out_row, arg_row);
    }
}

/// One row of 2×2 windows: the windows over input rows `rows[0]` and
/// `rows[1]` (at least `2 · out_row.len()` values each, each value seen
/// through `value`) → their maxima in `out_row`; their indices in the input
/// plane in `arg_row`, the plane being `w` wide and `rows[0]` starting at
/// its index `top`.
#[inline(always)]
fn max_pool_2x2_row<T: Float>(
    rows: [&[T]; 2],
    value: impl Fn(T) -> T,
    top: usize,
    w: usize,
    out_row: &mut [T],
    arg_row: &mut [u32],
) {
    let [row0, row1] = rows.map(|row| &row[..2 * out_row.len()]);
    let windows = row0.chunks_exact(2).zip(row1.chunks_exact(2));
    let outs = out_row.iter_mut().zip(arg_row.iter_mut());
    for (ox, ((out, arg), (pair0, pair1))) in outs.zip(windows).enumerate() {
        // Candidates in NumPy's argmax order: the first maximum wins.
        let candidates = [
            (value(pair0[0]), 0),
            (value(pair0[1]), 1),
            (value(pair1[0]), w),
            (value(pair1[1]), w + 1),
        ];
        let (mut best_value, mut best) = candidates[0];
        for &(v, offset) in &candidates[1..] {
            let better = v > best_value;
            best_value = if better { v } else { best_value };
            best = if better { offset } else { best };
        }
        *out = best_value;
        *arg = (top + 2 * ox + best) as u32;
    }
}

/// [`max_pool_2x2`] without the indices, for inference: each window's
/// four values in the same order with the same comparisons, so the same
/// maximum, but nothing for backward to write or read.
#[inline(always)]
pub(crate) fn max_pool_2x2_values<T: Float>(
    x_p: &[T],
    stride: usize,
    g: &ConvGeometry,
    value: impl Fn(T) -> T + Copy,
    out_p: &mut [T],
) {
    for (oy, out_row) in out_p.chunks_exact_mut(g.out_w).enumerate() {
        let rows = [&x_p[2 * oy * stride..], &x_p[(2 * oy + 1) * stride..]];
        max_pool_2x2_values_row(rows, value, out_row);
    }
}

/// [`max_pool_2x2_row`] without the indices.
#[inline(always)]
fn max_pool_2x2_values_row<T: Float>(rows: [&[T]; 2], value: impl Fn(T) -> T, out_row: &mut [T]) {
    let [row0, row1] = rows.map(|row| &row[..2 * out_row.len()]);
    let windows = row0.chunks_exact(2).zip(row1.chunks_exact(2));
    for (out, (pair0, pair1)) in out_row.iter_mut().zip(windows) {
        let mut best = value(pair0[0]);
        for v in [pair0[1], pair1[0], pair1[1]] {
            let v = value(v);
            best = if v > best { v } else { best };
        }
        *out = best;
    }
}

/// One plane's forward, as [`MaxPooling`] runs it: `x_p: (H, W)` →
/// `out_p: (OH, OW)`, with each maximum's index in `arg_p` unless
/// `values_only` (an inference forward of 2×2 windows, see
/// [`values_only`]). A convolution with a fused pooling runs it too.
pub(crate) fn pool_plane<T: Float>(
    x_p: &[T],
    w: usize,
    g: &ConvGeometry,
    values_only: bool,
    out_p: &mut [T],
    arg_p: &mut [u32],
) {
    if values_only {
        if !max_pool_2x2_plane(x_p, w, w, None, false, out_p, g.out_w, None) {
            max_pool_2x2_values(x_p, w, g, |v| v, out_p);
        }
    } else {
        max_pool_plane(x_p, w, g, out_p, arg_p);
    }
}

/// Whether a forward can skip `arg_max`: in inference nothing will
/// backpropagate, and the 2×2 windows have a kernel without the indices.
pub(crate) fn values_only(train: bool, g: &ConvGeometry) -> bool {
    !train && is_2x2(g)
}

/// One plane's backward: `dx_p` is zero except at each window's maximum,
/// which gets that window's `dout` value (`dout_p`, in `arg_p`'s order).
pub(crate) fn unpool_plane<T: Float>(
    dx_p: &mut [T],
    arg_p: &[u32],
    dout_p: impl Iterator<Item = T>,
) {
    dx_p.fill(T::zero());
    // Overlapping windows may share a maximum: add, don't assign.
    for (&arg, d) in arg_p.iter().zip(dout_p) {
        dx_p[arg as usize] += d;
    }
}

/// Whether `g` is the book's 2×2, stride-2 window with no padding and no
/// clipping, which [`max_pool_2x2`] handles.
pub(crate) fn is_2x2(g: &ConvGeometry) -> bool {
    g.filter_h == 2 && g.filter_w == 2 && g.stride == 2 && g.pad == 0
}

impl<T: Float> Layer<T> for MaxPooling<T> {
    fn kind(&self) -> &'static str {
        "MaxPooling"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.config.geometry("MaxPooling", input)?;
        Ok(vec![input[0], input[1], g.out_h, g.out_w])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // One comparison per window element.
        let window = (self.config.size * self.config.size) as u64;
        self.output_shape(input)
            .map_or(0, |out| out.iter().product::<usize>() as u64 * window)
    }

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        let g = self.config.geometry("MaxPooling", x.shape())?;
        let (n, c, h, w) = x.dims4()?;
        let out_plane = g.out_pixels();
        self.out.resize(&[n, c, g.out_h, g.out_w]);
        self.arg_max.resize(n * c * out_plane, 0);
        let planes = n * c;
        // In inference the 2×2 windows need no arg_max: nothing will
        // backpropagate through this forward.
        let values_only = values_only(train, &g);
        let pool_plane = |x_p: &[T], out_p: &mut [T], arg_p: &mut [u32]| {
            pool_plane(x_p, w, &g, values_only, out_p, arg_p)
        };
        // Fewer images than threads (inference at batch 1): half the planes
        // to each member of the team, if one is running and its members are
        // not distant (then, handing the planes over costs more).
        let by_team = planes >= 2
            && run_in_team(n, false, |team| {
                let half = planes / 2;
                let outs = self.out.data_mut().split_at_mut(half * out_plane);
                let args = self.arg_max.split_at_mut(half * out_plane);
                let xs = x.data().split_at(half * h * w);
                let parts = [(outs.0, args.0, xs.0), (outs.1, args.1, xs.1)];
                team.run_parts(parts, |_, (out, arg_max, x)| {
                    let planes = out
                        .chunks_mut(out_plane)
                        .zip(arg_max.chunks_mut(out_plane))
                        .zip(x.chunks(h * w));
                    for ((out_p, arg_p), x_p) in planes {
                        pool_plane(x_p, out_p, arg_p);
                    }
                });
            });
        if !by_team {
            // One rayon task per (image, channel) plane.
            self.out
                .data_mut()
                .par_chunks_mut(out_plane)
                .zip(self.arg_max.par_chunks_mut(out_plane))
                .zip(x.data().par_chunks(h * w))
                .with_min_len(planes_per_task(h * w))
                .for_each(|((out_p, arg_p), x_p)| pool_plane(x_p, out_p, arg_p));
        }
        self.input_shape.clear();
        if train {
            self.input_shape.extend_from_slice(x.shape());
        }
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        if self.input_shape.is_empty() {
            return Err(Error::BackwardBeforeForward("MaxPooling"));
        }
        check_dout("MaxPooling", Some(self.out.shape()), dout)?;
        let plane = self.input_shape[2] * self.input_shape[3];
        let out_plane = self.out.shape()[2] * self.out.shape()[3];
        self.dx.resize(&self.input_shape);
        self.dx
            .data_mut()
            .par_chunks_mut(plane)
            .zip(self.arg_max.par_chunks(out_plane))
            .zip(dout.data().par_chunks(out_plane))
            .with_min_len(planes_per_task(plane))
            .for_each(|((dx_p, arg_p), dout_p)| unpool_plane(dx_p, arg_p, dout_p.iter().copied()));
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::MaxPool(self.config.clone()))
    }
}

#[cfg(test)]
mod tests;
