//! The book's `Convolution` (§7.4.3, `common/layers.py`), written plainly:
//! one im2col, one matrix product, the bias; and backward as three
//! products and a col2im.
//!
//! ```text
//! x: (N, C, H, W)     W: (FN, C, FH, FW), seen as (FN, C·FH·FW)     b: (FN)
//! OH = (H + 2P − FH)/S + 1,  OW likewise
//!
//! forward:   col  = im2col(x)          (N·OH·OW, C·FH·FW)    one row per window
//!            out  = col · Wᵀ + b       (N·OH·OW, FN)         → (N, FN, OH, OW)
//! backward:  dout                      (N, FN, OH, OW)       → (N·OH·OW, FN)
//!            db   = Σ_rows dout        (FN)
//!            dW   = doutᵀ · col        (FN, C·FH·FW)         = (FN, C, FH, FW)
//!            dcol = dout · W           (N·OH·OW, C·FH·FW)
//!            dx   = col2im(dcol)       (N, C, H, W)
//! ```
//!
//! The parameters have the names and shapes of the fast
//! [`layers::Convolution`](crate::layers::Convolution), so a checkpoint
//! loads into either, and the two give the same numbers up to the order of
//! the sums (the tests check it).
//!
//! ```
//! use convnet::layers::{reference, Layer};
//! use convnet::Tensor;
//! // One 2×2 filter of ones and a bias of 0.5 over a 3×3 image.
//! let weight = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0; 4]).unwrap();
//! let bias = Tensor::from_vec(&[1], vec![0.5]).unwrap();
//! let mut conv = reference::Convolution::<f64>::from_params(weight, bias, 1, 0).unwrap();
//! let x = Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(f64::from).collect()).unwrap();
//! assert_eq!(conv.forward(&x, true).unwrap().data(), [12.5, 16.5, 24.5, 28.5]);
//! let dx = conv.backward(&Tensor::from_vec(&[1, 1, 2, 2], vec![1.0; 4]).unwrap()).unwrap();
//! assert_eq!(dx.data(), [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
//! assert_eq!(conv.grad_weight.data(), [12.0, 16.0, 24.0, 28.0]);
//! ```

use crate::error::{Error, Result};
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::im2col::{col2im, im2col, output_size};
use crate::layers::{check_dout, weight_and_bias, Layer, Param};
use crate::tensor::{Float, Tensor};

/// A 2-D convolution with one bias per filter, as the book writes it.
pub struct Convolution<T> {
    /// W: (FN, C, FH, FW)
    pub weight: Tensor<T>,
    /// b: (FN)
    pub bias: Tensor<T>,
    /// ∂L/∂W: (FN, C, FH, FW), filled by `backward`.
    pub grad_weight: Tensor<T>,
    /// ∂L/∂b: (FN), filled by `backward`.
    pub grad_bias: Tensor<T>,
    /// Stride S.
    pub stride: usize,
    /// Padding P: zeros on each side of the input.
    pub pad: usize,
    /// From the last training forward: the input's shape and its `col`.
    cache: Option<([usize; 4], Tensor<T>)>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> Convolution<T> {
    /// A layer with the given weights `(FN, C, FH, FW)` and biases `(FN)`.
    pub fn from_params(
        weight: Tensor<T>,
        bias: Tensor<T>,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (filters, ..) = weight.dims4()?;
        if filters == 0 || bias.shape() != [filters] || stride == 0 {
            return Err(Error::Config(format!(
                "Convolution needs filters, one bias per filter and a stride of at least 1 (got weight {:?}, bias {:?}, stride {stride})",
                weight.shape(),
                bias.shape()
            )));
        }
        Ok(Convolution {
            grad_weight: Tensor::zeros(weight.shape()),
            grad_bias: Tensor::zeros(bias.shape()),
            weight,
            bias,
            stride,
            pad,
            cache: None,
            out: Tensor::default(),
            dx: Tensor::default(),
        })
    }

    /// `[N, FN, OH, OW]` for an input `(N, C, H, W)`.
    fn out_dims(&self, input: &[usize]) -> Result<[usize; 4]> {
        let (filters, channels, fh, fw) = self.weight.dims4()?;
        match *input {
            [n, c, h, w] if c == channels => {
                let oh = output_size(h, fh, self.stride, self.pad)?;
                let ow = output_size(w, fw, self.stride, self.pad)?;
                Ok([n, filters, oh, ow])
            }
            _ => Err(Error::Shape(format!(
                "Convolution takes (N, {channels}, H, W), got {input:?}"
            ))),
        }
    }
}

/// `c = a · b`, on all threads.
fn product<T: Float>(c: MatMut<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>) {
    matmul(c, a, b, false, true);
}

impl<T: Float> Layer<T> for Convolution<T> {
    fn kind(&self) -> &'static str {
        "Convolution"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(self.out_dims(input)?.to_vec())
    }

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        let [n, filters, oh, ow] = self.out_dims(x.shape())?;
        let (_, c, fh, fw) = self.weight.dims4()?;
        let (rows, k, pixels) = (n * oh * ow, c * fh * fw, oh * ow);
        let col = im2col(x, fh, fw, self.stride, self.pad)?;
        let w = MatRef::new(self.weight.data(), filters, k);
        // out_rows = col · Wᵀ: (N·OH·OW, FN)
        let mut out_rows = vec![T::zero(); rows * filters];
        let out_m = MatMut::new(&mut out_rows, rows, filters);
        product(out_m, MatRef::new(col.data(), rows, k), w.t());
        // + b, and (N, OH·OW, FN) → (N, FN, OH·OW): the book's transpose(0, 3, 1, 2)
        self.out = Tensor::zeros(&[n, filters, oh, ow]);
        let (out, b) = (self.out.data_mut(), self.bias.data());
        for (row, values) in out_rows.chunks(filters).enumerate() {
            let (image, pixel) = (row / pixels, row % pixels);
            for (f, &v) in values.iter().enumerate() {
                out[(image * filters + f) * pixels + pixel] = v + b[f];
            }
        }
        self.cache = train.then_some(([n, c, x.shape()[2], x.shape()[3]], col));
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        let Some((x_shape, col)) = &self.cache else {
            return Err(Error::BackwardBeforeForward("Convolution"));
        };
        check_dout("Convolution", Some(self.out.shape()), dout)?;
        let (n, filters, oh, ow) = dout.dims4()?;
        let (_, c, fh, fw) = self.weight.dims4()?;
        let (rows, k, pixels) = (n * oh * ow, c * fh * fw, oh * ow);
        // (N, FN, OH·OW) → (N·OH·OW, FN): the book's transpose(0, 2, 3, 1)
        let mut dout_rows = vec![T::zero(); rows * filters];
        for (plane, values) in dout.data().chunks(pixels).enumerate() {
            let (image, f) = (plane / filters, plane % filters);
            for (pixel, &v) in values.iter().enumerate() {
                dout_rows[(image * pixels + pixel) * filters + f] = v;
            }
        }
        // db = Σ over the rows of dout
        let db = self.grad_bias.data_mut();
        db.fill(T::zero());
        for row in dout_rows.chunks(filters) {
            db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
        }
        let (dout_m, col_m) = (
            MatRef::new(&dout_rows, rows, filters),
            MatRef::new(col.data(), rows, k),
        );
        let w = MatRef::new(self.weight.data(), filters, k);
        // dW = doutᵀ · col: (FN, C·FH·FW)
        product(
            MatMut::new(self.grad_weight.data_mut(), filters, k),
            dout_m.t(),
            col_m,
        );
        // dcol = dout · W: (N·OH·OW, C·FH·FW), then dx = col2im(dcol)
        let mut dcol = Tensor::zeros(&[rows, k]);
        product(MatMut::new(dcol.data_mut(), rows, k), dout_m, w);
        self.dx = col2im(&dcol, *x_shape, fh, fw, self.stride, self.pad)?;
        Ok(&self.dx)
    }

    fn params(&mut self) -> Vec<Param<'_, T>> {
        let (w, dw) = (&mut self.weight, &mut self.grad_weight);
        weight_and_bias(w, dw, &mut self.bias, &mut self.grad_bias)
    }

    /// As the fast layer counts them: 2·C·FH·FW per output, and 1 for the bias.
    fn flops(&self, input: &[usize]) -> u64 {
        let k = (self.weight.len() / self.bias.len()) as u64; // C·FH·FW
        let outputs = self
            .output_shape(input)
            .map_or(0, |s| s.iter().product::<usize>());
        outputs as u64 * (2 * k + 1)
    }
}
