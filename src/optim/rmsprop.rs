//! RMSprop (book §6.1.5, `common/optimizer.py` `RMSprop`):
//!
//! ```text
//! h ← decay · h + (1 − decay) · ∂L/∂W ⊙ ∂L/∂W
//! W ← W − lr · ∂L/∂W / (√h + 1e-7)
//! ```
//!
//! AdaGrad with a memory that fades: `h` is an exponential moving average of
//! the squared gradients instead of their sum, so the per-element learning
//! rate `lr / √h` no longer shrinks to zero. The book writes the first line as
//! `h *= decay; h += (1 − decay)·g²`, which this code follows.
//! Defaults: `lr = 0.01`, `decay = 0.99`.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{Optimizer, RmsProp, RmsPropConfig};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[1], vec![1.0f64]).unwrap();
//! let mut dw = Tensor::from_vec(&[1], vec![0.5]).unwrap();
//! let mut opt = RmsProp::new(RmsPropConfig::default());
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // h = 0.01·0.25 = 0.0025, √h = 0.05: W moves by about 0.01·0.5/0.05 = 0.1.
//! assert!((w.data()[0] - 0.9).abs() < 1e-6);
//! ```

use super::state::{ensure_slots, push_slots, read_slots};
use super::{Optimizer, EPSILON};
use crate::error::Result;
use crate::layers::Param;
use crate::tensor::Float;

/// Settings of [`RmsProp`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (book default 0.01).
    pub lr: f64,
    /// How much of the running average `h` survives each step (book default 0.99).
    pub decay: f64,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 0.01,
            decay: 0.99,
        }
    }
}

/// RMSprop: AdaGrad with an exponentially fading sum of squared gradients.
#[derive(Clone, Debug)]
pub struct RmsProp<T> {
    config: RmsPropConfig,
    /// The moving average of squared gradients `h` of each parameter
    /// (empty until the first step).
    h: Vec<Vec<T>>,
}

impl<T: Float> RmsProp<T> {
    /// RMSprop with `config`'s settings; `h` starts at zero on the first step.
    pub fn new(config: RmsPropConfig) -> Self {
        RmsProp {
            config,
            h: Vec::new(),
        }
    }

    /// The hyper-parameters it was made with.
    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }
}

impl<T: Float> Default for RmsProp<T> {
    fn default() -> Self {
        RmsProp::new(RmsPropConfig::default())
    }
}

impl<T: Float> Optimizer<T> for RmsProp<T> {
    fn name(&self) -> &'static str {
        "RMSprop"
    }

    fn step(&mut self, params: &mut [Param<'_, T>]) {
        ensure_slots("RMSprop", &mut self.h, params);
        let lr = T::cast(self.config.lr);
        let decay = T::cast(self.config.decay);
        let one_minus_decay = T::cast(1.0 - self.config.decay);
        let eps = T::cast(EPSILON);
        for (p, h) in params.iter_mut().zip(&mut self.h) {
            let grads = p.grad.data();
            for ((w, h), &g) in p.value.data_mut().iter_mut().zip(h.iter_mut()).zip(grads) {
                *h *= decay;
                *h += one_minus_decay * g * g;
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
        // p = [1, -2], g = [0.5, 0.25], g² = [0.25, 0.0625], lr = 0.01, decay = 0.99, eps = 1e-7.
        let (mut p, mut g) = tiny();
        let mut opt = RmsProp::new(RmsPropConfig::default());
        // step 1: h = 0.99·0 + 0.01·g² = [0.0025, 0.000625], √h = [0.05, 0.025]
        //   0.01·0.5/(0.05 + 1e-7)   = 0.1/(1 + 2e-6) = 0.1·(1 - 2e-6 + 4e-12)    = 0.0999998000004
        //   0.01·0.25/(0.025 + 1e-7) = 0.1/(1 + 4e-6) = 0.1·(1 - 4e-6 + 1.6e-11)  = 0.0999996000016
        //   p = [1 - 0.0999998000004, -2 - 0.0999996000016]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.9000001999996, -2.0999996000016]);
        assert_close(&opt.state()[0].1, &[0.0025, 0.000625]);
        // step 2: h = 0.99·[0.0025, 0.000625] + 0.01·g²
        //           = [0.002475 + 0.0025, 0.00061875 + 0.000625] = [0.004975, 0.00124375]
        //   √h = [0.07053367989832942, 0.03526683994916471] (the second is half the first)
        //   0.005/(0.07053367989832942 + 1e-7)   = 0.005/0.07053377989832942  = 0.07088801999846352
        //   0.0025/(0.03526683994916471 + 1e-7)  = 0.0025/0.03526693994916471 = 0.07088791949637842
        //   p = [0.9000001999996 - 0.07088801999846352, -2.0999996000016 - 0.07088791949637842]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.8291121800011365, -2.1708875194979784]);
        assert_close(&opt.state()[0].1, &[0.004975, 0.00124375]);
    }

    #[test]
    fn state_round_trips() {
        check_round_trip(|| Box::new(RmsProp::new(RmsPropConfig::default())));
    }
}
