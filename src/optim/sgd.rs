//! Stochastic gradient descent (book §6.1.2, `common/optimizer.py` `SGD`):
//!
//! ```text
//! W ← W − lr · ∂L/∂W
//! ```
//!
//! The simplest optimizer: step straight down the gradient. It keeps no
//! state. Default: `lr = 0.01`.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{Optimizer, Sgd, SgdConfig};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[2], vec![1.0f64, -2.0]).unwrap();
//! let mut dw = Tensor::from_vec(&[2], vec![0.5, 0.25]).unwrap();
//! let mut sgd = Sgd::new(SgdConfig::default());
//! sgd.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // 1 − 0.01·0.5 = 0.995, −2 − 0.01·0.25 = −2.0025
//! assert!((w.data()[0] - 0.995).abs() < 1e-12);
//! assert!((w.data()[1] + 2.0025).abs() < 1e-12);
//! ```

use super::state::{check_grad, read_slots};
use super::Optimizer;
use crate::error::Result;
use crate::layers::Param;
use crate::tensor::Float;
use std::marker::PhantomData;

/// Settings of [`Sgd`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (book default 0.01).
    pub lr: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 0.01 }
    }
}

/// Plain stochastic gradient descent.
#[derive(Clone, Debug)]
pub struct Sgd<T> {
    config: SgdConfig,
    _element: PhantomData<fn() -> T>,
}

impl<T: Float> Sgd<T> {
    /// SGD with `config`'s learning rate (it keeps no state).
    pub fn new(config: SgdConfig) -> Self {
        Sgd {
            config,
            _element: PhantomData,
        }
    }

    /// The hyper-parameters it was made with.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl<T: Float> Default for Sgd<T> {
    fn default() -> Self {
        Sgd::new(SgdConfig::default())
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn name(&self) -> &'static str {
        "SGD"
    }

    fn step(&mut self, params: &mut [Param<'_, T>]) {
        let lr = T::cast(self.config.lr);
        for (i, p) in params.iter_mut().enumerate() {
            check_grad(self.name(), i, p);
            for (w, &g) in p.value.data_mut().iter_mut().zip(p.grad.data()) {
                *w -= lr * g;
            }
        }
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> Vec<(String, Vec<T>)> {
        Vec::new()
    }

    fn load_state(&mut self, state: &[(String, Vec<T>)]) -> Result<()> {
        read_slots::<T, 0>(self.name(), state, [], &[]).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{assert_close, check_round_trip, step, tiny};

    #[test]
    fn first_two_steps_by_hand() {
        // p = [1, -2], g = [0.5, 0.25], lr = 0.01: each step moves p by
        // -lr·g = [-0.005, -0.0025].
        let (mut p, mut g) = tiny();
        let mut opt = Sgd::new(SgdConfig::default());
        // step 1: [1 - 0.005, -2 - 0.0025]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.995, -2.0025]);
        // step 2: [0.995 - 0.005, -2.0025 - 0.0025]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.99, -2.005]);
    }

    #[test]
    fn learning_rate_is_used() {
        // lr = 0.5: [1 - 0.25, -2 - 0.125]
        let (mut p, mut g) = tiny();
        let mut opt = Sgd::new(SgdConfig { lr: 0.5 });
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.75, -2.125]);
    }

    #[test]
    fn state_round_trips() {
        check_round_trip(|| Box::new(Sgd::new(SgdConfig::default())));
    }

    #[test]
    #[should_panic(expected = "gradient has 3")]
    fn gradient_of_another_size_panics() {
        let (mut p, _) = tiny();
        let mut g = crate::tensor::Tensor::from_vec(&[3], vec![0.0; 3]).unwrap();
        step(&mut Sgd::new(SgdConfig::default()), &mut p, &mut g);
    }
}
