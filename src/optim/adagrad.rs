//! AdaGrad (book §6.1.5, `common/optimizer.py` `AdaGrad`):
//!
//! ```text
//! h ← h + ∂L/∂W ⊙ ∂L/∂W
//! W ← W − lr · ∂L/∂W / (√h + 1e-7)
//! ```
//!
//! Each element gets its own learning rate, `lr / √h`, which shrinks as the
//! squared gradients add up in `h`: parameters that have moved a lot slow
//! down. The `1e-7` keeps the division finite while `h` is still zero.
//! Default: `lr = 0.01`.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{AdaGrad, AdaGradConfig, Optimizer};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[1], vec![1.0f64]).unwrap();
//! let mut dw = Tensor::from_vec(&[1], vec![0.5]).unwrap();
//! let mut opt = AdaGrad::new(AdaGradConfig::default());
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // h = 0.25, √h = 0.5: the first step moves W by about lr = 0.01.
//! assert!((w.data()[0] - 0.99).abs() < 1e-8);
//! ```

use super::state::{ensure_slots, push_slots, read_slots};
use super::{Optimizer, EPSILON};
use crate::error::Result;
use crate::layers::Param;
use crate::tensor::Float;

/// Settings of [`AdaGrad`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaGradConfig {
    /// Learning rate (book default 0.01).
    pub lr: f64,
}

impl Default for AdaGradConfig {
    fn default() -> Self {
        AdaGradConfig { lr: 0.01 }
    }
}

/// AdaGrad: per-element learning rates that decay with the gradients seen.
#[derive(Clone, Debug)]
pub struct AdaGrad<T> {
    config: AdaGradConfig,
    /// The sum of squared gradients `h` of each parameter (empty until the first step).
    h: Vec<Vec<T>>,
}

impl<T: Float> AdaGrad<T> {
    /// AdaGrad with `config`'s learning rate; `h` starts at zero on the first step.
    pub fn new(config: AdaGradConfig) -> Self {
        AdaGrad {
            config,
            h: Vec::new(),
        }
    }

    /// The hyper-parameters it was made with.
    pub fn config(&self) -> &AdaGradConfig {
        &self.config
    }
}

impl<T: Float> Default for AdaGrad<T> {
    fn default() -> Self {
        AdaGrad::new(AdaGradConfig::default())
    }
}

impl<T: Float> Optimizer<T> for AdaGrad<T> {
    fn name(&self) -> &'static str {
        "AdaGrad"
    }

    fn step(&mut self, params: &mut [Param<'_, T>]) {
        ensure_slots("AdaGrad", &mut self.h, params);
        let lr = T::cast(self.config.lr);
        let eps = T::cast(EPSILON);
        for (p, h) in params.iter_mut().zip(&mut self.h) {
            let grads = p.grad.data();
            for ((w, h), &g) in p.value.data_mut().iter_mut().zip(h.iter_mut()).zip(grads) {
                *h += g * g;
                *w -= lr * g / (h.sqrt() + eps);
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
        let mut out = Vec::with_capacity(self.h.len());
        push_slots(&mut out, "h", &self.h);
        out
    }

    fn load_state(&mut self, state: &[(String, Vec<T>)]) -> Result<()> {
        let [h] = read_slots(self.name(), state, ["h"], &["h"])?;
        self.h = h;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{assert_close, check_round_trip, step, tiny};

    #[test]
    fn first_two_steps_by_hand() {
        // p = [1, -2], g = [0.5, 0.25], lr = 0.01, eps = 1e-7.
        // Below, 1/(1 + x) ≈ 1 - x + x² for the tiny x = eps/√h.
        let (mut p, mut g) = tiny();
        let mut opt = AdaGrad::new(AdaGradConfig::default());
        // step 1: h = g² = [0.25, 0.0625], √h = [0.5, 0.25]
        //   0.01·0.5/(0.5 + 1e-7)   = 0.01/(1 + 2e-7) = 0.01·(1 - 2e-7 + 4e-14)
        //                           = 0.0099999980000004
        //   0.01·0.25/(0.25 + 1e-7) = 0.01/(1 + 4e-7) = 0.0099999960000016
        //   p = [1 - 0.0099999980000004, -2 - 0.0099999960000016]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.9900000019999996, -2.0099999960000016]);
        assert_close(&opt.state()[0].1, &[0.25, 0.0625]);
        // step 2: h = 2·g² = [0.5, 0.125], √h = [√2/2, √2/4] = [0.7071067811865476, 0.3535533905932738]
        //   0.01·0.5/(√2/2 + 1e-7)  = 0.01·(√2/2)/(1 + 1e-7·√2)
        //                           = 0.007071067811865476·(1 - 1.4142135623731e-7 + 2e-14)
        //                           = 0.007071066811865617
        //   0.01·0.25/(√2/4 + 1e-7) = 0.007071067811865476·(1 - 2.8284271247462e-7 + 8e-14)
        //                           = 0.007071065811866041
        //   p = [0.9900000019999996 - 0.007071066811865617, -2.0099999960000016 - 0.007071065811866041]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.982928935188134, -2.0170710618118676]);
        assert_close(&opt.state()[0].1, &[0.5, 0.125]);
    }

    #[test]
    fn state_round_trips() {
        check_round_trip(|| Box::new(AdaGrad::new(AdaGradConfig::default())));
    }
}
