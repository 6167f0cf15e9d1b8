//! Sigmoid (book §5.5.2, `common/layers.py: Sigmoid`).
//!
//! ```text
//! out = 1 / (1 + exp(−x))          dx = dout · out · (1 − out)
//! ```
//! Any shape in, the same shape out; the cache is `out` itself.
//!
//! ```
//! use convnet::layers::{Layer, Sigmoid};
//! use convnet::Tensor;
//! let mut sigmoid = Sigmoid::<f64>::new();
//! let x = Tensor::from_vec(&[1], vec![0.0]).unwrap();
//! assert_eq!(sigmoid.forward(&x, true).unwrap().data(), [0.5]);
//! let dx = sigmoid.backward(&Tensor::from_vec(&[1], vec![1.0]).unwrap()).unwrap();
//! assert_eq!(dx.data(), [0.25]);
//! ```

use super::elementwise::{map, map2};
use super::{check_dout, Layer};
use crate::error::Result;
use crate::networks::spec::LayerSpec;
use crate::tensor::{Float, Tensor};

/// The logistic function.
pub struct Sigmoid<T> {
    out: Tensor<T>,
    dx: Tensor<T>,
    has_forward: bool,
}

impl<T: Float> Sigmoid<T> {
    /// A sigmoid layer (it has no parameters).
    pub fn new() -> Self {
        Sigmoid {
            out: Tensor::default(),
            dx: Tensor::default(),
            has_forward: false,
        }
    }
}

impl<T: Float> Default for Sigmoid<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Layer<T> for Sigmoid<T> {
    fn kind(&self) -> &'static str {
        "Sigmoid"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // exp, add, divide, negate.
        4 * input.iter().product::<usize>() as u64
    }

    fn forward(&mut self, x: &Tensor<T>, _train: bool) -> Result<&Tensor<T>> {
        map(x, &mut self.out, T::sigmoid);
        self.has_forward = true;
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        check_dout(
            "Sigmoid",
            self.has_forward.then_some(self.out.shape()),
            dout,
        )?;
        map2(&self.out, dout, &mut self.dx, |y, g| g * y * (T::one() - y));
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::Sigmoid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;

    #[test]
    fn gradients_match_numerical() {
        for (name, err) in check_layer(&mut Sigmoid::<f64>::new(), &[3, 7], 8).unwrap() {
            assert!(err <= 1e-6, "{name}: {err}");
        }
    }
}
