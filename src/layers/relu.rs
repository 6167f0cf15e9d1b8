//! ReLU (book §5.5.1, `common/layers.py: Relu`).
//!
//! ```text
//! out = max(0, x)          dx = dout where x > 0, else 0
//! ```
//! Any shape in, the same shape out. The book caches `mask = (x <= 0)`; here
//! the cached output plays that part (`out > 0` exactly where `x > 0`), which
//! saves writing a separate mask on every forward.
//!
//! A ReLU straight after a convolution costs two passes over a large tensor
//! for almost no arithmetic, so [`Network`](crate::networks::Network) lets
//! the convolution apply it to its own output instead (see
//! [`Convolution::fuse_relu`](crate::layers::Convolution::fuse_relu) and
//! `networks/fusion.rs`); the results are the same to the bit.
//!
//! ```
//! use convnet::layers::{Layer, Relu};
//! use convnet::Tensor;
//! let mut relu = Relu::<f64>::new();
//! let x = Tensor::from_vec(&[4], vec![-2.0, -0.0, 0.5, 3.0]).unwrap();
//! assert_eq!(relu.forward(&x, true).unwrap().data(), [0.0, 0.0, 0.5, 3.0]);
//! ```

use super::elementwise::{map, map2};
use super::{check_dout, Layer};
use crate::error::Result;
use crate::networks::spec::LayerSpec;
use crate::tensor::{Float, Tensor};

/// `max(0, v)`; NaN gives 0.
#[inline(always)]
pub(crate) fn relu<T: Float>(v: T) -> T {
    if v > T::zero() {
        v
    } else {
        T::zero()
    }
}

/// `dx` for one element from the ReLU's output `y` and `dout` `g`.
#[inline(always)]
pub(crate) fn relu_backward<T: Float>(y: T, g: T) -> T {
    if y > T::zero() {
        g
    } else {
        T::zero()
    }
}

/// Rectified linear unit.
pub struct Relu<T> {
    /// The last output; `out[i] > 0` is the book's `!mask[i]`.
    out: Tensor<T>,
    dx: Tensor<T>,
    has_forward: bool,
}

impl<T: Float> Relu<T> {
    /// A ReLU layer (it has no parameters).
    pub fn new() -> Self {
        Relu {
            out: Tensor::default(),
            dx: Tensor::default(),
            has_forward: false,
        }
    }
}

impl<T: Float> Default for Relu<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Layer<T> for Relu<T> {
    fn kind(&self) -> &'static str {
        "Relu"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&mut self, x: &Tensor<T>, _train: bool) -> Result<&Tensor<T>> {
        map(x, &mut self.out, relu);
        self.has_forward = true;
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        check_dout("Relu", self.has_forward.then_some(self.out.shape()), dout)?;
        map2(&self.out, dout, &mut self.dx, relu_backward);
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::Relu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::gradient_check::check_layer;

    #[test]
    fn gradients_match_numerical() {
        for (name, err) in check_layer(&mut Relu::<f64>::new(), &[3, 2, 4, 5], 6).unwrap() {
            assert!(err <= 1e-6, "{name}: {err}");
        }
    }

    #[test]
    fn backward_before_forward_is_an_error() {
        let mut relu = Relu::<f32>::new();
        assert!(matches!(
            relu.backward(&Tensor::zeros(&[2])),
            Err(Error::BackwardBeforeForward(_))
        ));
    }
}
