//! The book's `Pooling` (§7.4.4, `common/layers.py`), written plainly: the
//! windows unrolled by im2col, the maximum of each; backward hands each
//! `dout` back to the maximum it came from.
//!
//! ```text
//! x: (N, C, H, W)  →  out: (N, C, OH, OW),   OH = (H + 2P − PH)/S + 1,  OW likewise
//!
//! forward:   col  = im2col(x padded with −∞)    (N·OH·OW, C·PH·PW)
//!                 = one row per channel window  (N·OH·OW·C, PH·PW)
//!            out  = max of each row,  arg_max = where it is      → (N, C, OH, OW)
//! backward:  dmax = 0, except dmax[row, arg_max[row]] = dout     (N·OH·OW·C, PH·PW)
//!            dx   = col2im(dmax seen as (N·OH·OW, C·PH·PW))       (N, C, H, W)
//! ```
//!
//! The book pads with zeros, so that a window of negative values in the
//! padding would give 0. Here the padding is −∞, which never wins: a window
//! takes the maximum of its real pixels only, as PyTorch does and as the
//! fast [`layers::MaxPooling`](crate::layers::MaxPooling) does. Where a
//! window holds its maximum twice, the first one (in the window's row order)
//! wins, as NumPy's `argmax` and the fast layer choose.
//!
//! ```
//! use convnet::layers::{reference, Layer, PoolingConfig};
//! use convnet::Tensor;
//! let mut pool = reference::MaxPooling::<f32>::new(&PoolingConfig { size: 2, stride: 2, pad: 0 });
//! let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 3.0, 2.0, 0.0]).unwrap();
//! assert_eq!(pool.forward(&x, true).unwrap().data(), [3.0]);
//! let dx = pool.backward(&Tensor::from_vec(&[1, 1, 1, 1], vec![5.0]).unwrap()).unwrap();
//! assert_eq!(dx.data(), [0.0, 5.0, 0.0, 0.0]);
//! ```

use crate::error::{Error, Result};
use crate::kernels::im2col::{col2im, im2col};
use crate::layers::{check_dout, Layer, PoolingConfig};
use crate::tensor::{Float, Tensor};

/// Max pooling over each channel separately, as the book writes it.
pub struct MaxPooling<T> {
    /// Window size, stride and padding.
    pub config: PoolingConfig,
    /// From the last training forward: the input's shape, and for every
    /// window (row of `col`) the index of its maximum within the row.
    cache: Option<([usize; 4], Vec<usize>)>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> MaxPooling<T> {
    /// A max pooling layer with `config`'s window, stride and padding.
    pub fn new(config: &PoolingConfig) -> Self {
        MaxPooling {
            config: config.clone(),
            cache: None,
            out: Tensor::default(),
            dx: Tensor::default(),
        }
    }
}

/// `x` with a border of `pad` cells of `value` around every plane.
fn pad_planes<T: Float>(x: &Tensor<T>, pad: usize, value: T) -> Result<Tensor<T>> {
    let (n, c, h, w) = x.dims4()?;
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let mut xpad = Tensor::zeros(&[n, c, hp, wp]);
    xpad.fill(value);
    for (plane, padded) in x
        .data()
        .chunks(h * w)
        .zip(xpad.data_mut().chunks_mut(hp * wp))
    {
        for (row, padded_row) in plane.chunks(w).zip(padded.chunks_mut(wp).skip(pad)) {
            padded_row[pad..pad + w].copy_from_slice(row);
        }
    }
    Ok(xpad)
}

impl<T: Float> Layer<T> for MaxPooling<T> {
    fn kind(&self) -> &'static str {
        "MaxPooling"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.config.geometry("MaxPooling", input)?;
        Ok(vec![input[0], input[1], g.out_h, g.out_w])
    }

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        let g = self.config.geometry("MaxPooling", x.shape())?;
        let (n, c, h, w) = x.dims4()?;
        let PoolingConfig { size, stride, pad } = self.config;
        let pixels = g.out_h * g.out_w;
        // The padded cells are −∞, so no window needs padding of its own.
        let xpad = pad_planes(x, pad, T::neg_infinity())?;
        let col = im2col(&xpad, size, size, stride, 0)?;
        self.out = Tensor::zeros(&[n, c, g.out_h, g.out_w]);
        let mut arg_max = Vec::with_capacity(n * c * pixels);
        // Row r of the windows is channel r % C of output pixel r / C,
        // which is pixel (r / C) % (OH·OW) of image (r / C) / (OH·OW).
        for (r, window) in col.data().chunks(size * size).enumerate() {
            let (mut best, mut best_index) = (window[0], 0);
            for (i, &v) in window.iter().enumerate() {
                if v > best {
                    (best, best_index) = (v, i);
                }
            }
            let (pixel, channel) = (r / c, r % c);
            let (image, pixel) = (pixel / pixels, pixel % pixels);
            self.out.data_mut()[(image * c + channel) * pixels + pixel] = best;
            arg_max.push(best_index);
        }
        self.cache = train.then_some(([n, c, h, w], arg_max));
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        let Some((x_shape, arg_max)) = &self.cache else {
            return Err(Error::BackwardBeforeForward("MaxPooling"));
        };
        check_dout("MaxPooling", Some(self.out.shape()), dout)?;
        let (n, c, oh, ow) = dout.dims4()?;
        let PoolingConfig { size, stride, pad } = self.config;
        let pixels = oh * ow;
        let mut dmax = Tensor::zeros(&[n * pixels, c * size * size]);
        for (r, window) in dmax.data_mut().chunks_mut(size * size).enumerate() {
            let (pixel, channel) = (r / c, r % c);
            let (image, pixel) = (pixel / pixels, pixel % pixels);
            window[arg_max[r]] = dout.data()[(image * c + channel) * pixels + pixel];
        }
        // The windows of the unpadded input with padding P are those of the
        // padded input without: col2im drops what falls on the padding.
        self.dx = col2im(&dmax, *x_shape, size, size, stride, pad)?;
        Ok(&self.dx)
    }

    /// As the fast layer counts them: one comparison per window element.
    fn flops(&self, input: &[usize]) -> u64 {
        let outputs = self
            .output_shape(input)
            .map_or(0, |s| s.iter().product::<usize>());
        (outputs * self.config.size * self.config.size) as u64
    }
}
