//! Global average pooling (Lin, Chen and Yan, "Network In Network", 2013,
//! §3.2; the head of GoogLeNet and ResNet, which the book shows in §8.2).
//!
//! ```text
//! x: (N, C, H, W)  →  out: (N, C)
//! out[n, c] = (1 / (H·W)) · Σ_{y, x} x[n, c, y, x]
//! dx[n, c, y, x] = dout[n, c] / (H·W)
//! ```
//! Each channel plane collapses to its mean, so a network can go from
//! feature maps to class scores without an affine layer's `C·H·W` weights,
//! and the output no longer depends on the input's spatial size.
//!
//! ```
//! use convnet::layers::{GlobalAvgPooling, Layer};
//! use convnet::Tensor;
//! let mut gap = GlobalAvgPooling::<f64>::new();
//! let x = Tensor::from_vec(&[1, 2, 1, 2], vec![1.0, 3.0, -2.0, 0.0]).unwrap();
//! assert_eq!(gap.forward(&x, false).unwrap().data(), [2.0, -1.0]);
//! let dx = gap.backward(&Tensor::from_vec(&[1, 2], vec![4.0, 1.0]).unwrap()).unwrap();
//! assert_eq!(dx.data(), [2.0, 2.0, 0.5, 0.5]);
//! ```

use super::elementwise::planes_per_task;
use super::{check_dout, Layer};
use crate::error::{Error, Result};
use crate::networks::spec::LayerSpec;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// Mean over each channel plane: (N, C, H, W) → (N, C).
pub struct GlobalAvgPooling<T> {
    /// The last input's shape; empty before the first forward.
    input_shape: Vec<usize>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> GlobalAvgPooling<T> {
    /// A global average pooling layer (it has no parameters).
    pub fn new() -> Self {
        GlobalAvgPooling {
            input_shape: Vec::new(),
            out: Tensor::default(),
            dx: Tensor::default(),
        }
    }
}

impl<T: Float> Default for GlobalAvgPooling<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The plane size `H·W` of an `(N, C, H, W)` shape, or a shape error.
fn plane(input: &[usize]) -> Result<usize> {
    match input {
        [_, _, h, w] if h * w > 0 => Ok(h * w),
        _ => Err(Error::Shape(format!(
            "GlobalAvgPooling expects (N, C, H, W) input with H, W > 0, got {input:?}"
        ))),
    }
}

impl<T: Float> Layer<T> for GlobalAvgPooling<T> {
    fn kind(&self) -> &'static str {
        "GlobalAvgPooling"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        plane(input)?;
        Ok(vec![input[0], input[1]])
    }

    fn forward(&mut self, x: &Tensor<T>, _train: bool) -> Result<&Tensor<T>> {
        let plane = plane(x.shape())?;
        let inv = T::one() / T::cast(plane as f64);
        self.out.resize(&x.shape()[..2]);
        self.out
            .data_mut()
            .par_iter_mut()
            .zip(x.data().par_chunks(plane))
            .with_min_len(planes_per_task(plane))
            .for_each(|(o, x_p)| *o = x_p.iter().copied().sum::<T>() * inv);
        self.input_shape.clear();
        self.input_shape.extend_from_slice(x.shape());
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        check_dout(
            "GlobalAvgPooling",
            (!self.input_shape.is_empty()).then_some(self.out.shape()),
            dout,
        )?;
        let plane = plane(&self.input_shape)?;
        let inv = T::one() / T::cast(plane as f64);
        self.dx.resize(&self.input_shape);
        self.dx
            .data_mut()
            .par_chunks_mut(plane)
            .zip(dout.data().par_iter())
            .with_min_len(planes_per_task(plane))
            .for_each(|(dx_p, &g)| dx_p.fill(g * inv));
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::GlobalAvgPool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;

    #[test]
    fn forward_and_backward_by_hand() {
        // Two images, two channels, 2x3 planes.
        #[rustfmt::skip]
        let x = Tensor::from_vec(&[2, 2, 2, 3], vec![
            1., 2., 3., 4., 5., 6.,       // mean 21/6 = 3.5
            0., 0., 0., 0., 0., 6.,       // mean 1
            -1., -1., -1., -1., -1., -1., // mean −1
            6., 0., 6., 0., 6., 0.,       // mean 3
        ]).unwrap();
        let mut gap = GlobalAvgPooling::<f64>::new();
        assert_eq!(gap.output_shape(&[2, 2, 2, 3]).unwrap(), [2, 2]);
        let out = gap.forward(&x, true).unwrap();
        assert_eq!(out.shape(), [2, 2]);
        assert_eq!(out.data(), [3.5, 1., -1., 3.]);
        let dout = Tensor::from_vec(&[2, 2], vec![6., -12., 3., 0.]).unwrap();
        let dx = gap.backward(&dout).unwrap();
        assert_eq!(dx.shape(), [2, 2, 2, 3]);
        let want: Vec<f64> = [1., -2., 0.5, 0.].iter().flat_map(|&v| [v; 6]).collect();
        assert_eq!(dx.data(), want);
    }

    #[test]
    fn gradients_match_numerical() {
        let mut gap = GlobalAvgPooling::<f64>::new();
        for (name, err) in check_layer(&mut gap, &[3, 4, 5, 3], 2).unwrap() {
            assert!(err <= 1e-6, "{name}: {err}");
        }
    }

    #[test]
    fn errors_instead_of_panics() {
        let mut gap = GlobalAvgPooling::<f32>::new();
        assert!(matches!(
            gap.backward(&Tensor::zeros(&[1, 1])),
            Err(Error::BackwardBeforeForward("GlobalAvgPooling"))
        ));
        assert!(matches!(
            gap.forward(&Tensor::zeros(&[2, 3]), false),
            Err(Error::Shape(_))
        ));
        assert!(gap.forward(&Tensor::zeros(&[1, 2, 0, 3]), false).is_err());
        gap.forward(&Tensor::zeros(&[2, 3, 4, 4]), false).unwrap();
        assert!(matches!(
            gap.backward(&Tensor::zeros(&[3, 2])),
            Err(Error::Shape(_))
        ));
        assert_eq!(gap.kind(), "GlobalAvgPooling");
        assert_eq!(gap.flops(&[2, 3, 4, 4]), 96);
    }
}
