//! Adam (book §6.1.6, `common/optimizer.py` `Adam`; Kingma & Ba,
//! <http://arxiv.org/abs/1412.6980v8>), in the book's form:
//!
//! ```text
//! t    ← t + 1
//! lr_t ← lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)
//! m    ← m + (1 − β₁) · (∂L/∂W − m)
//! v    ← v + (1 − β₂) · (∂L/∂W ⊙ ∂L/∂W − v)
//! W    ← W − lr_t · m / (√v + 1e-7)
//! ```
//!
//! Momentum (`m`, a moving average of the gradients) combined with RMSprop
//! (`v`, a moving average of their squares). Both start at zero, which biases
//! them towards zero early on; `lr_t` corrects for that bias. Note
//! `m + (1 − β₁)(g − m)` is the same as `β₁·m + (1 − β₁)·g`.
//! Defaults: `lr = 0.001`, `β₁ = 0.9`, `β₂ = 0.999`.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{Adam, AdamConfig, Optimizer};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[1], vec![1.0f64]).unwrap();
//! let mut dw = Tensor::from_vec(&[1], vec![0.5]).unwrap();
//! let mut opt = Adam::new(AdamConfig { lr: 0.002, ..Default::default() });
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // With the bias correction the first step moves W by about lr.
//! assert!((w.data()[0] - 0.998).abs() < 1e-6);
//! assert_eq!(opt.iterations(), 1);
//! ```

use super::state::{ensure_slots, push_slots, read_slots};
use super::{Optimizer, EPSILON};
use crate::error::{Error, Result};
use crate::kernels::vectorize::widest;
use crate::layers::Param;
use crate::parallel::ELEMENTWISE_CHUNK;
use crate::tensor::Float;
use rayon::prelude::*;

/// Settings of [`Adam`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (book default 0.001).
    pub lr: f64,
    /// Decay of the gradient average `m` (book default 0.9).
    pub beta1: f64,
    /// Decay of the squared-gradient average `v` (book default 0.999).
    pub beta2: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 0.001,
            beta1: 0.9,
            beta2: 0.999,
        }
    }
}

/// Adam: bias-corrected moving averages of the gradient and its square.
#[derive(Clone, Debug)]
pub struct Adam<T> {
    config: AdamConfig,
    /// Steps taken so far (the book's `self.iter`).
    iter: u64,
    /// The gradient average `m` of each parameter (empty until the first step).
    m: Vec<Vec<T>>,
    /// The squared-gradient average `v` of each parameter (empty until the first step).
    v: Vec<Vec<T>>,
}

impl<T: Float> Adam<T> {
    /// Adam with `config`'s settings; `m` and `v` start at zero on the first step.
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            iter: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// The hyper-parameters it was made with.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// The number of steps taken (`t` in the formula).
    pub fn iterations(&self) -> u64 {
        self.iter
    }
}

impl<T: Float> Default for Adam<T> {
    fn default() -> Self {
        Adam::new(AdamConfig::default())
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn name(&self) -> &'static str {
        "Adam"
    }

    fn step(&mut self, params: &mut [Param<'_, T>]) {
        ensure_slots("Adam", &mut self.m, params);
        ensure_slots("Adam", &mut self.v, params);
        // A step count loaded from a file may be at the end of the range.
        self.iter = self.iter.saturating_add(1);
        let AdamConfig { lr, beta1, beta2 } = self.config;
        // β^t in f64; the exponent saturates harmlessly (β^t is 0 long before).
        let t = i32::try_from(self.iter).unwrap_or(i32::MAX);
        let lr_t = T::cast(lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t)));
        let one_minus_beta1 = T::cast(1.0 - beta1);
        let one_minus_beta2 = T::cast(1.0 - beta2);
        let eps = T::cast(EPSILON);
        for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            // Each entry is updated on its own, so the work is split between
            // threads (fc1 alone has 432,000 weights) without changing results.
            p.value
                .data_mut()
                .par_chunks_mut(ELEMENTWISE_CHUNK)
                .zip(m.par_chunks_mut(ELEMENTWISE_CHUNK))
                .zip(v.par_chunks_mut(ELEMENTWISE_CHUNK))
                .zip(p.grad.data().par_chunks(ELEMENTWISE_CHUNK))
                .for_each(|(((values, m), v), grads)| {
                    // In the CPU's widest vectors (square root and division
                    // included): the same operations, so the same bits.
                    widest(
                        #[inline(always)]
                        || {
                            for (((w, m), v), &g) in values.iter_mut().zip(m).zip(v).zip(grads) {
                                *m += one_minus_beta1 * (g - *m);
                                *v += one_minus_beta2 * (g * g - *v);
                                *w -= lr_t * *m / (v.sqrt() + eps);
                            }
                        },
                    )
                });
        }
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// `("iter", [t])`, then `m.0`, `m.1`, ..., then `v.0`, `v.1`, ....
    ///
    /// In `f32`, `t` is exact up to 2²⁴ ≈ 16.7 million steps; beyond that
    /// the bias correction it feeds is 1 to machine precision anyway.
    fn state(&self) -> Vec<(String, Vec<T>)> {
        let mut out = Vec::with_capacity(1 + 2 * self.m.len());
        out.push(("iter".to_string(), vec![T::cast(self.iter as f64)]));
        push_slots(&mut out, "m", &self.m);
        push_slots(&mut out, "v", &self.v);
        out
    }

    fn load_state(&mut self, state: &[(String, Vec<T>)]) -> Result<()> {
        let (iter, rest) = match state.split_first() {
            Some(((name, data), rest)) if name == "iter" && data.len() == 1 => {
                (data[0].as_f64(), rest)
            }
            _ => {
                return Err(Error::Config(
                    "Adam state must start with an 'iter' entry holding one number".into(),
                ))
            }
        };
        if !(iter.is_finite() && iter >= 0.0 && iter.fract() == 0.0) {
            return Err(Error::Config(format!(
                "Adam state: 'iter' must be a whole number of steps, got {iter}"
            )));
        }
        let [m, v] = read_slots(self.name(), rest, ["m", "v"], &["v"])?;
        self.iter = iter as u64;
        self.m = m;
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
        // p = [1, -2], g = [0.5, 0.25], lr = 0.001, β₁ = 0.9, β₂ = 0.999, eps = 1e-7.
        //
        // With a constant g, m and v after t steps are m = (1 - β₁ᵗ)·g and
        // v = (1 - β₂ᵗ)·g², so lr_t·m/√v = lr exactly and the update is
        //   lr_t·m/(√v + eps) = lr / (1 + eps/√v),  √v = |g|·√(1 - β₂ᵗ),
        // with 1/(1 + x) = 1 - x + x² for the tiny x.
        let (mut p, mut g) = tiny();
        let mut opt = Adam::new(AdamConfig::default());
        // step 1: m = 0.1·g = [0.05, 0.025], v = 0.001·g² = [0.00025, 0.0000625]
        //   √(1 - 0.999) = √0.001 = 0.0316227766016838
        //   √v = [0.0158113883008419, 0.0079056941504209]
        //   x = 1e-7/√v = [6.32455532033676e-6, 1.26491106406735e-5]
        //   update = 0.001·(1 - x + x²) = [0.00099999367548468, 0.00099998735104936]
        //   p = [1 - 0.00099999367548468, -2 - 0.00099998735104936]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.9990000063245153, -2.0009999873510494]);
        let state = opt.state();
        assert_eq!(state[0], ("iter".to_string(), vec![1.0]));
        assert_close(&state[1].1, &[0.05, 0.025]);
        assert_close(&state[2].1, &[0.00025, 0.0000625]);
        // step 2: m = 0.05 + 0.1·(0.5 - 0.05) = 0.095, 0.025 + 0.1·(0.25 - 0.025) = 0.0475
        //         v = 0.00025 + 0.001·(0.25 - 0.00025) = 0.00049975,
        //             0.0000625 + 0.001·(0.0625 - 0.0000625) = 0.0001249375
        //   √(1 - 0.999²) = √0.001999 = 0.0447101778122163
        //   √v = [0.0223550889061082, 0.0111775444530541]
        //   x = 1e-7/√v = [4.47325440842584e-6, 8.94650881685169e-6]
        //   update = 0.001·(1 - x + x²) = [0.00099999552676560, 0.00099999105357122]
        //   p = [0.99900000632451532 - 0.00099999552676560, -2.00099998735104936 - 0.00099999105357122]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.9980000107977497, -2.0019999784046206]);
        let state = opt.state();
        assert_eq!(state[0], ("iter".to_string(), vec![2.0]));
        assert_close(&state[1].1, &[0.095, 0.0475]);
        assert_close(&state[2].1, &[0.00049975, 0.0001249375]);
    }

    #[test]
    fn state_round_trips() {
        check_round_trip(|| Box::new(Adam::new(AdamConfig::default())));
    }

    #[test]
    fn state_order_is_iter_then_m_then_v() {
        let (mut p, mut g) = tiny();
        let (mut q, mut h) = tiny();
        let mut opt = Adam::new(AdamConfig::default());
        opt.step(&mut [
            Param {
                name: "w",
                value: &mut p,
                grad: &mut g,
            },
            Param {
                name: "b",
                value: &mut q,
                grad: &mut h,
            },
        ]);
        let names: Vec<String> = opt.state().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["iter", "m.0", "m.1", "v.0", "v.1"]);
        // Before any step: only the step count.
        assert_eq!(
            Adam::<f64>::default().state(),
            [("iter".to_string(), vec![0.0])]
        );
    }

    #[test]
    fn a_loaded_step_count_at_the_end_of_the_range_saturates() {
        // 1e30 steps (a file's f32) used to overflow `iter += 1` (a panic
        // with overflow checks on).
        let (mut p, mut g) = tiny();
        let mut opt = Adam::<f64>::default();
        opt.load_state(&[("iter".to_string(), vec![1e30])]).unwrap();
        step(&mut opt, &mut p, &mut g);
        assert_eq!(opt.iterations(), u64::MAX);
        assert!(p.data().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn load_state_rejects_bad_entries() {
        let mut opt = Adam::<f64>::default();
        assert!(opt.load_state(&[]).is_err());
        let bad_iter = [("iter".to_string(), vec![1.5])];
        assert!(matches!(opt.load_state(&bad_iter), Err(Error::Config(_))));
        let negative = [("iter".to_string(), vec![-1.0])];
        assert!(opt.load_state(&negative).is_err());
        // m and v of one parameter must have the same length.
        let mismatched = [
            ("iter".to_string(), vec![3.0]),
            ("m.0".to_string(), vec![0.0, 0.0]),
            ("v.0".to_string(), vec![0.0]),
        ];
        assert!(opt.load_state(&mismatched).is_err());
        assert_eq!(opt.iterations(), 0);
    }
}
