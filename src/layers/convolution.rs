//! Convolution layer (book §7.4, `common/layers.py: Convolution`).
//!
//! ```text
//! x:   (N, C, H, W)          W: (FN, C, FH, FW)       b: (FN)
//! out: (N, FN, OH, OW)       OH = (H + 2P − FH)/S + 1, OW likewise
//!
//! out[n, f, oy, ox] = b[f] + Σ_{c, fy, fx} W[f, c, fy, fx] · x_pad[n, c, oy·S + fy, ox·S + fx]
//! ```
//!
//! As in the book, the input is unrolled by [`im2col`](crate::im2col) so
//! that the whole convolution is one matrix product per image. Each image's
//! `col` is kept as the transpose of the book's rows, `(C·FH·FW, OH·OW)`, so
//! that the product is already in NCHW order (the book needs a transpose):
//!
//! ```text
//! col_n: (C·FH·FW, OH·OW)           W viewed as (FN, C·FH·FW)
//! out_n = W · col_n + b             (FN, OH·OW)
//!
//! backward, for dout_n: (FN, OH·OW)
//! dW     = Σ_n dout_n · col_n^T     (FN, C·FH·FW)
//! db     = Σ_n Σ_pixels dout_n      (FN)
//! dcol_n = W^T · dout_n             (C·FH·FW, OH·OW)  →  dx_n = col2im(dcol_n)
//! ```
//!
//! The batch is split into a fixed number of chunks that run in parallel; each
//! chunk sums its own `dW`, `db` and the chunks are added in order, so the
//! result does not depend on the number of threads.
//!
//! Unlike the book, backward does not keep every image's `col` from forward:
//! for a 3×3 filter `col` is 9× the input (45 MB for a batch of 100 in
//! `deep`'s second layer), and writing it out to memory and reading it back
//! cost more than the products themselves. The layer keeps the input `x`
//! instead and unrolls each image again in backward, into one `col` per chunk
//! that stays in the core's cache; `dcol` is reused the same way.
//!
//! ```
//! use convnet::layers::{Convolution, ConvolutionConfig, Layer};
//! use convnet::{Rng, Tensor};
//! let config = ConvolutionConfig { in_channels: 1, filters: 30, filter_size: 5, ..Default::default() };
//! let mut conv = Convolution::<f32>::new(&config, &mut Rng::new(0)).unwrap();
//! let x = Tensor::zeros(&[2, 1, 28, 28]);
//! assert_eq!(conv.forward(&x, true).unwrap().shape(), &[2, 30, 24, 24]);
//! ```

use super::{check_dout, weight_and_bias, Layer, Param};
use crate::error::{Error, Result};
use crate::gemm::{matmul, MatMut, MatRef};
use crate::im2col::{col2im_image, im2col_image, ConvGeometry};
use crate::init::Init;
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// The batch is cut into at most this many chunks for parallel work. Fixed
/// (not the thread count) so that gradient sums are the same on any machine.
const MAX_CHUNKS: usize = 16;

/// Images per parallel chunk for a batch of `n`.
pub(crate) fn chunk_size(n: usize) -> usize {
    n.div_ceil(MAX_CHUNKS).max(1)
}

/// The sum of a slice with eight running sums, which the compiler can keep
/// in one vector register (a single running sum forces one add at a time).
/// The order is fixed, so the result is too.
pub(crate) fn sum<T: Float>(values: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    let rest: T = chunks.remainder().iter().copied().sum();
    lanes.iter().copied().sum::<T>() + rest
}

/// Hyper-parameters of a [`Convolution`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvolutionConfig {
    pub in_channels: usize,
    /// FN, the number of filters (output channels).
    pub filters: usize,
    /// FH = FW.
    pub filter_size: usize,
    pub stride: usize,
    pub pad: usize,
    pub init: Init,
}

impl Default for ConvolutionConfig {
    fn default() -> Self {
        ConvolutionConfig {
            in_channels: 1,
            filters: 30,
            filter_size: 5,
            stride: 1,
            pad: 0,
            init: Init::default(),
        }
    }
}

/// A 2-D convolution with one bias per filter.
pub struct Convolution<T> {
    /// W: (FN, C, FH, FW)
    pub weight: Tensor<T>,
    /// b: (FN)
    pub bias: Tensor<T>,
    pub grad_weight: Tensor<T>,
    pub grad_bias: Tensor<T>,
    pub stride: usize,
    pub pad: usize,
    // Caches from forward for backward.
    /// Geometry and batch size of the last training forward; `None` before
    /// one (an inference forward keeps nothing for backward).
    geometry: Option<(ConvGeometry, usize)>,
    /// x: (N, C, H, W), the input of the last training forward.
    x: Tensor<T>,
    // Buffers kept across iterations.
    /// col: (chunks, C·FH·FW, OH·OW), one unrolled image per chunk.
    col: Vec<T>,
    out: Tensor<T>,
    dx: Tensor<T>,
    /// dcol: (chunks, C·FH·FW, OH·OW), one image's col gradient per chunk.
    dcol: Vec<T>,
    /// Per-chunk partial sums of dW and db: (chunks, FN·C·FH·FW + FN).
    partial_grads: Vec<T>,
}

impl<T: Float> Convolution<T> {
    /// A layer with weights drawn by `config.init` (fan-in C·FH·FW) and zero
    /// biases; an error if a size is 0.
    pub fn new(config: &ConvolutionConfig, rng: &mut Rng) -> Result<Self> {
        let (c, f, k) = (config.in_channels, config.filters, config.filter_size);
        if c == 0 || f == 0 || k == 0 {
            return Err(Error::Config(format!(
                "Convolution needs at least 1 input channel, filter and filter size (got {c}, {f}, {k})"
            )));
        }
        let weight = config.init.tensor(&[f, c, k, k], c * k * k, f * k * k, rng);
        Self::from_params(weight, Tensor::zeros(&[f]), config.stride, config.pad)
    }

    /// A layer with the given weights `(FN, C, FH, FW)` and biases `(FN)`.
    pub fn from_params(
        weight: Tensor<T>,
        bias: Tensor<T>,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (filters, ..) = weight.dims4()?;
        if bias.shape() != [filters] {
            return Err(Error::Shape(format!(
                "Convolution: bias shape {:?} does not match {filters} filters",
                bias.shape()
            )));
        }
        if stride == 0 {
            return Err(Error::Geometry(
                "Convolution: stride must be at least 1".into(),
            ));
        }
        Ok(Convolution {
            grad_weight: Tensor::zeros(weight.shape()),
            grad_bias: Tensor::zeros(bias.shape()),
            weight,
            bias,
            stride,
            pad,
            geometry: None,
            x: Tensor::default(),
            col: Vec::new(),
            out: Tensor::default(),
            dx: Tensor::default(),
            dcol: Vec::new(),
            partial_grads: Vec::new(),
        })
    }

    /// The backward pass: parameter gradients, and `dx` only `with_dx`.
    fn backward_impl(&mut self, dout: &Tensor<T>, with_dx: bool) -> Result<()> {
        let Some((g, n)) = self.geometry else {
            return Err(Error::BackwardBeforeForward("Convolution"));
        };
        check_dout("Convolution", Some(self.out.shape()), dout)?;
        let filters = self.weight.shape()[0];
        let (k, pixels) = (g.col_width(), g.out_pixels());
        let chunk = chunk_size(n);
        let chunks = n.div_ceil(chunk);
        let grad_len = filters * k + filters;
        self.partial_grads.resize(chunks * grad_len, T::zero());

        self.col.resize(chunks * pixels * k, T::zero());
        let weight = self.weight.data();
        let shared = self
            .partial_grads
            .par_chunks_mut(grad_len)
            .zip(self.col.par_chunks_mut(pixels * k))
            .zip(self.x.data().par_chunks(chunk * g.image_len()))
            .zip(dout.data().par_chunks(chunk * filters * pixels));
        if with_dx {
            self.dcol.resize(chunks * pixels * k, T::zero());
            self.dx.resize(&[n, g.channels, g.in_h, g.in_w]);
            shared
                .zip(self.dx.data_mut().par_chunks_mut(chunk * g.image_len()))
                .zip(self.dcol.par_chunks_mut(pixels * k))
                .for_each(|(((((grads, col), x), dout), dx), dcol)| {
                    let scratch = ChunkScratch { col, dcol };
                    backward_chunk(&g, weight, grads, x, dout, scratch, Some(dx));
                });
        } else {
            shared.for_each(|(((grads, col), x), dout)| {
                let scratch = ChunkScratch { col, dcol: &mut [] };
                backward_chunk(&g, weight, grads, x, dout, scratch, None);
            });
        }

        // Add the chunks' partial gradients in a fixed order.
        let (gw, gb) = (self.grad_weight.data_mut(), self.grad_bias.data_mut());
        gw.fill(T::zero());
        gb.fill(T::zero());
        for grads in self.partial_grads.chunks(grad_len) {
            let (dw, db) = grads.split_at(filters * k);
            gw.iter_mut().zip(dw).for_each(|(a, &b)| *a += b);
            gb.iter_mut().zip(db).for_each(|(a, &b)| *a += b);
        }
        Ok(())
    }

    /// The geometry for an input of shape `(N, C, H, W)`.
    fn geometry_for(&self, input: &[usize]) -> Result<(ConvGeometry, usize)> {
        let (filters, channels, filter_h, filter_w) = self.weight.dims4()?;
        let [n, c, h, w] = input[..] else {
            return Err(Error::Shape(format!(
                "Convolution expects (N, C, H, W) input, got {input:?}"
            )));
        };
        if c != channels {
            return Err(Error::Shape(format!(
                "Convolution has {channels} input channels, input has {c} (shape {input:?})"
            )));
        }
        let g = ConvGeometry::new((c, h, w), (filter_h, filter_w), self.stride, self.pad)
            .map_err(|e| {
                Error::Geometry(format!(
                    "Convolution {filters}@{filter_h}x{filter_w} stride {} pad {} on {h}x{w} input: {}",
                    self.stride,
                    self.pad,
                    e.detail()
                ))
            })?;
        Ok((g, n))
    }
}

impl<T: Float> Layer<T> for Convolution<T> {
    fn kind(&self) -> &'static str {
        "Convolution"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (g, n) = self.geometry_for(input)?;
        Ok(vec![n, self.weight.shape()[0], g.out_h, g.out_w])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // 2·K per output for the products, 1 for the bias.
        match self.geometry_for(input) {
            Ok((g, n)) => {
                let outputs = (n * self.weight.shape()[0] * g.out_pixels()) as u64;
                outputs * (2 * g.col_width() as u64 + 1)
            }
            Err(_) => 0,
        }
    }

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        let (g, n) = self.geometry_for(x.shape())?;
        let filters = self.weight.shape()[0];
        let (k, pixels) = (g.col_width(), g.out_pixels());
        let chunk = chunk_size(n);
        let chunks = n.div_ceil(chunk);
        // One col per chunk, reused image after image: it stays in cache.
        self.col.resize(chunks * pixels * k, T::zero());
        self.out.resize(&[n, filters, g.out_h, g.out_w]);

        let (weight, bias) = (self.weight.data(), self.bias.data());
        self.out
            .data_mut()
            .par_chunks_mut(chunk * filters * pixels)
            .zip(self.col.par_chunks_mut(pixels * k))
            .zip(x.data().par_chunks(chunk * g.image_len()))
            .for_each(|((out_chunk, col), x_chunk)| {
                let images = out_chunk
                    .chunks_mut(filters * pixels)
                    .zip(x_chunk.chunks(g.image_len()));
                for (out_n, x_n) in images {
                    // col: (C·FH·FW, OH·OW)
                    im2col_image(x_n, &g, col);
                    // out_n: (FN, OH·OW) = b (broadcast) + W · col
                    for (row, &b) in out_n.chunks_mut(pixels).zip(bias) {
                        row.fill(b);
                    }
                    matmul(
                        MatMut::new(out_n, filters, pixels),
                        MatRef::new(weight, filters, k),
                        MatRef::new(col, k, pixels),
                        true,
                        false,
                    );
                }
            });
        // Backward unrolls the input of a training forward again.
        if train {
            self.x.resize(x.shape());
            self.x.data_mut().copy_from_slice(x.data());
        }
        self.geometry = train.then_some((g, n));
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        self.backward_impl(dout, true)?;
        Ok(&self.dx)
    }

    fn backward_params_only(&mut self, dout: &Tensor<T>) -> Result<()> {
        self.backward_impl(dout, false)
    }

    fn params(&mut self) -> Vec<Param<'_, T>> {
        weight_and_bias(
            &mut self.weight,
            &mut self.grad_weight,
            &mut self.bias,
            &mut self.grad_bias,
        )
    }
}

/// One chunk's scratch buffers for backward, each one image long:
/// `col` and `dcol`: (C·FH·FW, OH·OW).
struct ChunkScratch<'a, T> {
    col: &'a mut [T],
    dcol: &'a mut [T],
}

/// Backward for one chunk of images: this chunk's `dW` and `db` into
/// `grads` (FN·C·FH·FW values, then FN), and `dx` for each image when it is
/// wanted.
fn backward_chunk<T: Float>(
    g: &ConvGeometry,
    weight: &[T],
    grads: &mut [T],
    x_chunk: &[T],
    dout_chunk: &[T],
    scratch: ChunkScratch<'_, T>,
    mut dx_chunk: Option<&mut [T]>,
) {
    let (k, pixels) = (g.col_width(), g.out_pixels());
    let filters = weight.len() / k;
    let (dw, db) = grads.split_at_mut(filters * k);
    dw.fill(T::zero());
    db.fill(T::zero());
    let ChunkScratch { col, dcol } = scratch;
    let images = x_chunk
        .chunks(g.image_len())
        .zip(dout_chunk.chunks(filters * pixels));
    for (i, (x_n, dout_n)) in images.enumerate() {
        // col: (C·FH·FW, OH·OW), the same unrolling as in forward
        im2col_image(x_n, g, col);
        // dW += dout_n · col^T          (FN, C·FH·FW)
        matmul(
            MatMut::new(dw, filters, k),
            MatRef::new(dout_n, filters, pixels),
            MatRef::new(col, k, pixels).t(),
            true,
            false,
        );
        // db += row sums of dout_n
        for (d, row) in db.iter_mut().zip(dout_n.chunks(pixels)) {
            *d += sum(row);
        }
        if let Some(dx_chunk) = dx_chunk.as_mut() {
            // dcol = W^T · dout_n           (C·FH·FW, OH·OW)
            matmul(
                MatMut::new(dcol, k, pixels),
                MatRef::new(weight, filters, k).t(),
                MatRef::new(dout_n, filters, pixels),
                false,
                false,
            );
            let dx_n = &mut dx_chunk[i * g.image_len()..(i + 1) * g.image_len()];
            col2im_image(dcol, g, dx_n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;

    #[test]
    fn forward_by_hand() {
        // One 3x3 image, one 2x2 filter of ones, bias 0.5: each output is the
        // window sum plus 0.5.
        let w = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0; 4]).unwrap();
        let b = Tensor::from_vec(&[1], vec![0.5]).unwrap();
        let mut conv = Convolution::<f64>::from_params(w, b, 1, 0).unwrap();
        let x = Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(f64::from).collect()).unwrap();
        let y = conv.forward(&x, false).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.data(), [12.5, 16.5, 24.5, 28.5]);
    }

    /// The definition, term by term, for comparison.
    fn direct_convolution(x: &Tensor<f64>, conv: &Convolution<f64>) -> Vec<f64> {
        let (n, c, h, w) = x.dims4().unwrap();
        let (f, _, fh, fw) = conv.weight.dims4().unwrap();
        let (s, p) = (conv.stride, conv.pad);
        let (oh, ow) = ((h + 2 * p - fh) / s + 1, (w + 2 * p - fw) / s + 1);
        let at = |t: &[f64], i: usize, j: usize, k: usize, l: usize, d: [usize; 3]| {
            t[((i * d[0] + j) * d[1] + k) * d[2] + l]
        };
        let mut out = Vec::new();
        for ni in 0..n {
            for fi in 0..f {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut v = conv.bias.data()[fi];
                        for ci in 0..c {
                            for ky in 0..fh {
                                for kx in 0..fw {
                                    let (iy, ix) = (
                                        (oy * s + ky) as isize - p as isize,
                                        (ox * s + kx) as isize - p as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    v += at(conv.weight.data(), fi, ci, ky, kx, [c, fh, fw])
                                        * at(x.data(), ni, ci, iy as usize, ix as usize, [c, h, w]);
                                }
                            }
                        }
                        out.push(v);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn forward_matches_the_definition() {
        for (stride, pad) in [(1, 0), (2, 1), (1, 2), (3, 0)] {
            let config = ConvolutionConfig {
                in_channels: 2,
                filters: 3,
                filter_size: 3,
                stride,
                pad,
                init: Init::Std(1.0),
            };
            let mut rng = Rng::new(8);
            let mut conv = Convolution::<f64>::new(&config, &mut rng).unwrap();
            conv.bias
                .data_mut()
                .iter_mut()
                .for_each(|b| *b = rng.normal());
            let x = Tensor::from_vec(&[17, 2, 7, 6], (0..17 * 84).map(|_| rng.normal()).collect())
                .unwrap();
            let want = direct_convolution(&x, &conv);
            let got = conv.forward(&x, false).unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.data().iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-12,
                    "stride {stride} pad {pad}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn gradients_match_numerical() {
        // Several images (more than one chunk), channels, filters, stride and padding.
        for (n, stride, pad) in [(3, 1, 0), (20, 2, 1), (2, 1, 2)] {
            let config = ConvolutionConfig {
                in_channels: 2,
                filters: 3,
                filter_size: 3,
                stride,
                pad,
                init: Init::Std(0.5),
            };
            let mut rng = Rng::new(1);
            let mut conv = Convolution::<f64>::new(&config, &mut rng).unwrap();
            conv.bias
                .data_mut()
                .iter_mut()
                .for_each(|b| *b = rng.normal());
            let report = check_layer(&mut conv, &[n, 2, 5, 6], 2).unwrap();
            assert_eq!(report.len(), 3); // x, weight, bias
            for (name, err) in report {
                assert!(err <= 1e-6, "n={n} stride={stride} pad={pad}: {name} {err}");
            }
        }
    }

    #[test]
    fn inference_gives_the_training_output_and_keeps_nothing_for_backward() {
        let mut rng = Rng::new(2);
        let mut conv = Convolution::<f64>::new(&ConvolutionConfig::default(), &mut rng).unwrap();
        let x = Tensor::from_vec(
            &[40, 1, 28, 28],
            (0..40 * 784).map(|_| rng.normal()).collect(),
        )
        .unwrap();
        let trained = conv.forward(&x, true).unwrap().clone();
        // 40 images in 14 chunks of (up to) 3: one col per chunk.
        assert_eq!(conv.col.len(), 14 * 25 * 24 * 24);
        assert_eq!(conv.forward(&x, false).unwrap(), &trained);
        assert!(matches!(
            conv.backward(&trained),
            Err(Error::BackwardBeforeForward(_))
        ));
    }

    #[test]
    fn errors_instead_of_panics() {
        let mut conv =
            Convolution::<f32>::new(&ConvolutionConfig::default(), &mut Rng::new(0)).unwrap();
        let zero = ConvolutionConfig {
            filters: 0,
            ..Default::default()
        };
        assert!(Convolution::<f32>::new(&zero, &mut Rng::new(0)).is_err());
        let no_stride = ConvolutionConfig {
            stride: 0,
            ..Default::default()
        };
        assert!(Convolution::<f32>::new(&no_stride, &mut Rng::new(0)).is_err());
        let dout = Tensor::zeros(&[1, 30, 24, 24]);
        assert!(matches!(
            conv.backward(&dout),
            Err(Error::BackwardBeforeForward(_))
        ));
        let small = Tensor::zeros(&[1, 1, 4, 4]);
        assert!(matches!(
            conv.forward(&small, true),
            Err(Error::Geometry(_))
        ));
        let wrong_channels = Tensor::zeros(&[1, 3, 28, 28]);
        assert!(matches!(
            conv.forward(&wrong_channels, true),
            Err(Error::Shape(_))
        ));
        let x = Tensor::zeros(&[1, 1, 28, 28]);
        conv.forward(&x, true).unwrap();
        assert!(matches!(
            conv.backward(&Tensor::zeros(&[1, 30, 24, 23])),
            Err(Error::Shape(_))
        ));
    }
}
