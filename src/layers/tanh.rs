//! Hyperbolic tangent (book §6.2.2 uses it to show Xavier initialization
//! with an activation symmetric about the origin; the layer mirrors §5.5.2's
//! Sigmoid, since `tanh(x) = 2·sigmoid(2x) − 1`).
//!
//! ```text
//! out = tanh(x) = (eˣ − e⁻ˣ) / (eˣ + e⁻ˣ)          dx = dout · (1 − out²)
//! ```
//! Any shape in, the same shape out; the cache is `out` itself. It is the
//! activation of LeCun et al.'s LeNet-5 (1998), which squashes to (−1, 1)
//! and, unlike the sigmoid, is zero-centred.
//!
//! ```
//! use convnet::layers::{Layer, Tanh};
//! use convnet::Tensor;
//! let mut tanh = Tanh::<f64>::new();
//! let x = Tensor::from_vec(&[2], vec![0.0, 1.0]).unwrap();
//! let out = tanh.forward(&x, true).unwrap();
//! assert_eq!(out.data()[0], 0.0);
//! assert!((out.data()[1] - 0.761_594_155_955_764_9).abs() < 1e-15);
//! let dx = tanh.backward(&Tensor::from_vec(&[2], vec![1.0, 1.0]).unwrap()).unwrap();
//! assert_eq!(dx.data()[0], 1.0);
//! ```

use super::elementwise::{map, map2};
use super::{check_dout, Layer};
use crate::error::Result;
use crate::networks::spec::LayerSpec;
use crate::tensor::{Float, Tensor};

/// The hyperbolic tangent activation.
pub struct Tanh<T> {
    out: Tensor<T>,
    dx: Tensor<T>,
    has_forward: bool,
}

impl<T: Float> Tanh<T> {
    /// A tanh layer (it has no parameters).
    pub fn new() -> Self {
        Tanh {
            out: Tensor::default(),
            dx: Tensor::default(),
            has_forward: false,
        }
    }
}

impl<T: Float> Default for Tanh<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Layer<T> for Tanh<T> {
    fn kind(&self) -> &'static str {
        "Tanh"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // Two exps, a subtraction, an addition and a division, counted as 4
        // like the sigmoid's.
        4 * input.iter().product::<usize>() as u64
    }

    fn forward(&mut self, x: &Tensor<T>, _train: bool) -> Result<&Tensor<T>> {
        map(x, &mut self.out, T::tanh_fast);
        self.has_forward = true;
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        check_dout("Tanh", self.has_forward.then_some(self.out.shape()), dout)?;
        map2(&self.out, dout, &mut self.dx, |y, g| g * (T::one() - y * y));
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::Tanh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::gradient_check::check_layer;

    #[test]
    fn forward_and_backward_by_hand() {
        // tanh(±2) = ±(e⁴ − 1)/(e⁴ + 1); its derivative 1 − tanh² = 4e⁴/(e⁴ + 1)².
        let e4 = 4f64.exp();
        let t2 = (e4 - 1.0) / (e4 + 1.0);
        let d2 = 4.0 * e4 / ((e4 + 1.0) * (e4 + 1.0));
        let mut tanh = Tanh::<f64>::new();
        let x = Tensor::from_vec(&[1, 3], vec![-2.0, 0.0, 2.0]).unwrap();
        let out = tanh.forward(&x, true).unwrap().data().to_vec();
        for (o, want) in out.iter().zip([-t2, 0.0, t2]) {
            assert!((o - want).abs() < 1e-15, "{o} vs {want}");
        }
        let dout = Tensor::from_vec(&[1, 3], vec![1.0, 3.0, -2.0]).unwrap();
        let dx = tanh.backward(&dout).unwrap().data().to_vec();
        for (d, want) in dx.iter().zip([d2, 3.0, -2.0 * d2]) {
            assert!((d - want).abs() < 1e-14, "{d} vs {want}");
        }
    }

    #[test]
    fn gradients_match_numerical() {
        for (name, err) in check_layer(&mut Tanh::<f64>::new(), &[3, 2, 4, 5], 9).unwrap() {
            assert!(err <= 1e-6, "{name}: {err}");
        }
    }

    #[test]
    fn errors_instead_of_panics() {
        let mut tanh = Tanh::<f32>::new();
        assert!(matches!(
            tanh.backward(&Tensor::zeros(&[2])),
            Err(Error::BackwardBeforeForward("Tanh"))
        ));
        tanh.forward(&Tensor::zeros(&[2, 3]), true).unwrap();
        assert!(matches!(
            tanh.backward(&Tensor::zeros(&[3, 2])),
            Err(Error::Shape(_))
        ));
        assert_eq!(tanh.kind(), "Tanh");
        assert_eq!(tanh.flops(&[2, 3]), 24);
    }
}
