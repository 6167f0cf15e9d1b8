//! Nesterov's accelerated gradient, in the form of the book's
//! `common/optimizer.py` `Nesterov` (mentioned in §6.1; see
//! <http://arxiv.org/abs/1212.0901>):
//!
//! ```text
//! v ← momentum · v − lr · ∂L/∂W
//! W ← W + momentum² · v − (1 + momentum) · lr · ∂L/∂W
//! ```
//!
//! Momentum that "looks ahead": the update is applied as if the velocity had
//! already carried the parameter one step further. The book writes it as
//! four in-place updates, which this code follows line by line:
//! `v *= momentum; v -= lr·g; W += momentum²·v; W -= (1 + momentum)·lr·g`.
//! Defaults: `lr = 0.01`, `momentum = 0.9`.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{Nesterov, NesterovConfig, Optimizer};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[1], vec![1.0f64]).unwrap();
//! let mut dw = Tensor::from_vec(&[1], vec![0.5]).unwrap();
//! let mut opt = Nesterov::new(NesterovConfig::default());
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // v = −0.005; W = 1 + 0.81·(−0.005) − 1.9·0.005 = 0.98645
//! assert!((w.data()[0] - 0.98645).abs() < 1e-12);
//! ```

use super::state::{ensure_slots, push_slots, read_slots};
use super::Optimizer;
use crate::error::Result;
use crate::layers::Param;
use crate::tensor::Float;

/// Settings of [`Nesterov`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NesterovConfig {
    /// Learning rate (book default 0.01).
    pub lr: f64,
    /// How much of the velocity survives each step (book default 0.9).
    pub momentum: f64,
}

impl Default for NesterovConfig {
    fn default() -> Self {
        NesterovConfig {
            lr: 0.01,
            momentum: 0.9,
        }
    }
}

/// Nesterov's accelerated gradient (the book's form).
#[derive(Clone, Debug)]
pub struct Nesterov<T> {
    config: NesterovConfig,
    /// The velocity `v` of each parameter (empty until the first step).
    v: Vec<Vec<T>>,
}

impl<T: Float> Nesterov<T> {
    /// Nesterov's method with `config`'s settings; the velocity `v` starts at zero.
    pub fn new(config: NesterovConfig) -> Self {
        Nesterov {
            config,
            v: Vec::new(),
        }
    }

    /// The hyper-parameters it was made with.
    pub fn config(&self) -> &NesterovConfig {
        &self.config
    }
}

impl<T: Float> Default for Nesterov<T> {
    fn default() -> Self {
        Nesterov::new(NesterovConfig::default())
    }
}

impl<T: Float> Optimizer<T> for Nesterov<T> {
    fn name(&self) -> &'static str {
        "Nesterov"
    }

    fn step(&mut self, params: &mut [Param<'_, T>]) {
        ensure_slots("Nesterov", &mut self.v, params);
        let lr = T::cast(self.config.lr);
        let momentum = T::cast(self.config.momentum);
        let momentum_sq = T::cast(self.config.momentum * self.config.momentum);
        let grad_scale = T::cast((1.0 + self.config.momentum) * self.config.lr);
        for (p, v) in params.iter_mut().zip(&mut self.v) {
            let grads = p.grad.data();
            for ((w, v), &g) in p.value.data_mut().iter_mut().zip(v.iter_mut()).zip(grads) {
                *v *= momentum;
                *v -= lr * g;
                *w += momentum_sq * *v;
                *w -= grad_scale * g;
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
        let mut out = Vec::with_capacity(self.v.len());
        push_slots(&mut out, "v", &self.v);
        out
    }

    fn load_state(&mut self, state: &[(String, Vec<T>)]) -> Result<()> {
        let [v] = read_slots(self.name(), state, ["v"], &[])?;
        self.v = v;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{assert_close, check_round_trip, step, tiny};

    #[test]
    fn first_two_steps_by_hand() {
        // p = [1, -2], g = [0.5, 0.25], lr = 0.01, momentum = 0.9.
        // Constants: momentum² = 0.81, (1 + momentum)·lr·g = 0.019·g = [0.0095, 0.00475].
        let (mut p, mut g) = tiny();
        let mut opt = Nesterov::new(NesterovConfig::default());
        // step 1: v = 0.9·0 - 0.01·g = [-0.005, -0.0025]
        //         p = 1 + 0.81·(-0.005) - 0.0095 = 1 - 0.00405 - 0.0095 = 0.98645
        //         p = -2 + 0.81·(-0.0025) - 0.00475 = -2 - 0.002025 - 0.00475 = -2.006775
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.98645, -2.006775]);
        assert_close(&opt.state()[0].1, &[-0.005, -0.0025]);
        // step 2: v = [0.9·(-0.005) - 0.005, 0.9·(-0.0025) - 0.0025] = [-0.0095, -0.00475]
        //         p = 0.98645 + 0.81·(-0.0095) - 0.0095 = 0.98645 - 0.007695 - 0.0095 = 0.969255
        //         p = -2.006775 + 0.81·(-0.00475) - 0.00475
        //           = -2.006775 - 0.0038475 - 0.00475 = -2.0153725
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.969255, -2.0153725]);
        assert_close(&opt.state()[0].1, &[-0.0095, -0.00475]);
    }

    #[test]
    fn state_round_trips() {
        check_round_trip(|| Box::new(Nesterov::new(NesterovConfig::default())));
    }
}
