//! Momentum SGD (book §6.1.4, `common/optimizer.py` `Momentum`):
//!
//! ```text
//! v ← momentum · v − lr · ∂L/∂W
//! W ← W + v
//! ```
//!
//! `v` is a velocity, one per parameter, starting at zero: the parameter
//! rolls downhill like a ball, gathering speed along directions where the
//! gradient keeps its sign. Defaults: `lr = 0.01`, `momentum = 0.9`.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{Momentum, MomentumConfig, Optimizer};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[1], vec![1.0f64]).unwrap();
//! let mut dw = Tensor::from_vec(&[1], vec![0.5]).unwrap();
//! let mut opt = Momentum::new(MomentumConfig::default());
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // v = −0.01·0.5 = −0.005, W = 1 − 0.005
//! assert!((w.data()[0] - 0.995).abs() < 1e-12);
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // v = 0.9·(−0.005) − 0.005 = −0.0095, W = 0.995 − 0.0095
//! assert!((w.data()[0] - 0.9855).abs() < 1e-12);
//! ```

use super::state::{ensure_slots, push_slots, read_slots};
use super::Optimizer;
use crate::error::Result;
use crate::layers::Param;
use crate::tensor::Float;

/// Settings of [`Momentum`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MomentumConfig {
    /// Learning rate (book default 0.01).
    pub lr: f64,
    /// How much of the velocity survives each step (book default 0.9).
    pub momentum: f64,
}

impl Default for MomentumConfig {
    fn default() -> Self {
        MomentumConfig {
            lr: 0.01,
            momentum: 0.9,
        }
    }
}

/// Momentum SGD.
#[derive(Clone, Debug)]
pub struct Momentum<T> {
    config: MomentumConfig,
    /// The velocity `v` of each parameter (empty until the first step).
    v: Vec<Vec<T>>,
}

impl<T: Float> Momentum<T> {
    /// Momentum SGD with `config`'s settings; the velocity `v` starts at zero.
    pub fn new(config: MomentumConfig) -> Self {
        Momentum {
            config,
            v: Vec::new(),
        }
    }

    /// The hyper-parameters it was made with.
    pub fn config(&self) -> &MomentumConfig {
        &self.config
    }
}

impl<T: Float> Default for Momentum<T> {
    fn default() -> Self {
        Momentum::new(MomentumConfig::default())
    }
}

impl<T: Float> Optimizer<T> for Momentum<T> {
    fn name(&self) -> &'static str {
        "Momentum"
    }

    fn step(&mut self, params: &mut [Param<'_, T>]) {
        ensure_slots("Momentum", &mut self.v, params);
        let lr = T::cast(self.config.lr);
        let momentum = T::cast(self.config.momentum);
        for (p, v) in params.iter_mut().zip(&mut self.v) {
            let grads = p.grad.data();
            for ((w, v), &g) in p.value.data_mut().iter_mut().zip(v.iter_mut()).zip(grads) {
                *v = momentum * *v - lr * g;
                *w += *v;
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
        // p = [1, -2], g = [0.5, 0.25], lr = 0.01, momentum = 0.9; lr·g = [0.005, 0.0025].
        let (mut p, mut g) = tiny();
        let mut opt = Momentum::new(MomentumConfig::default());
        // step 1: v = 0.9·0 - lr·g = [-0.005, -0.0025]
        //         p = [1 - 0.005, -2 - 0.0025] = [0.995, -2.0025]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.995, -2.0025]);
        assert_close(&opt.state()[0].1, &[-0.005, -0.0025]);
        // step 2: v = [0.9·(-0.005) - 0.005, 0.9·(-0.0025) - 0.0025] = [-0.0095, -0.00475]
        //         p = [0.995 - 0.0095, -2.0025 - 0.00475] = [0.9855, -2.00725]
        step(&mut opt, &mut p, &mut g);
        assert_close(p.data(), &[0.9855, -2.00725]);
        assert_close(&opt.state()[0].1, &[-0.0095, -0.00475]);
    }

    #[test]
    fn state_round_trips() {
        check_round_trip(|| Box::new(Momentum::new(MomentumConfig::default())));
    }

    #[test]
    fn state_names_follow_parameter_positions() {
        let (mut p, mut g) = tiny();
        let (mut q, mut h) = tiny();
        let mut opt = Momentum::new(MomentumConfig::default());
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
        assert_eq!(names, ["v.0", "v.1"]);
    }

    #[test]
    fn load_state_checks_names() {
        let mut opt = Momentum::<f64>::new(MomentumConfig::default());
        let bad = vec![("h.0".to_string(), vec![0.0, 0.0])];
        assert!(matches!(opt.load_state(&bad), Err(crate::Error::Config(_))));
        let out_of_order = vec![("v.1".to_string(), vec![0.0])];
        assert!(opt.load_state(&out_of_order).is_err());
        assert!(opt.state().is_empty());
    }

    #[test]
    #[should_panic(expected = "must keep their size")]
    fn parameter_that_changes_size_panics() {
        let (mut p, mut g) = tiny();
        let mut opt = Momentum::new(MomentumConfig::default());
        step(&mut opt, &mut p, &mut g);
        let mut p3 = crate::Tensor::from_vec(&[3], vec![0.0; 3]).unwrap();
        let mut g3 = p3.clone();
        step(&mut opt, &mut p3, &mut g3);
    }

    #[test]
    #[should_panic(expected = "same parameter list")]
    fn parameter_list_that_changes_length_panics() {
        let (mut p, mut g) = tiny();
        let mut opt = Momentum::new(MomentumConfig::default());
        step(&mut opt, &mut p, &mut g);
        opt.step(&mut []);
    }
}
