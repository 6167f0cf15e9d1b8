//! An averaged model: the exponential moving average (EMA) of the weights
//! over the training steps (Polyak averaging), which often scores better
//! than the last weights, because it averages away the noise of the last
//! mini-batches.
//!
//! ```text
//! after every optimizer step t = 1, 2, …:
//!     d      = min(decay, (1 + t) / (10 + t))      # warm-up: early steps count more
//!     ema    ← d · ema + (1 − d) · w               # every parameter …
//!     ema_bn ← d · ema_bn + (1 − d) · bn           # … and batch norm's running statistics
//! ```
//!
//! The warm-up (as in TensorFlow's `ExponentialMovingAverage` with
//! `num_updates`, and timm's `ModelEma`) keeps the average from holding on
//! to the random initial weights in a short run. The averaged weights live
//! beside the network; [`Ema::with_weights`] swaps them in (no copy) for an
//! evaluation or a save, and back.
//!
//! ```
//! use convnet::networks::{build_model, ModelOptions};
//! use convnet::train::Ema;
//! use convnet::Rng;
//! let mut net = build_model::<f64>("affine(3)", &ModelOptions::default(), [1, 2, 2], 3, &mut Rng::new(1)).unwrap();
//! for p in net.params() { p.value.fill(0.0); }
//! let mut ema = Ema::new(&mut net, 0.99).unwrap();
//! for p in net.params() { p.value.fill(1.0); }
//! ema.update(&mut net).unwrap(); // step 1: d = min(0.99, 2/11)
//! let averaged = ema.with_weights(&mut net, |net| net.params()[0].value.data()[0]).unwrap();
//! assert!((averaged - 9.0 / 11.0).abs() < 1e-12);
//! assert_eq!(net.params()[0].value.data()[0], 1.0); // the network's own weights are back
//! ```

use super::weights::Weights;
use crate::error::{Error, Result};
use crate::networks::Network;
use crate::tensor::Float;

/// The moving average of a network's weights (see the [module](self)
/// documentation).
pub struct Ema<T> {
    decay: f64,
    /// Optimizer steps averaged so far.
    steps: u64,
    average: Weights<T>,
}

impl<T: Float> Ema<T> {
    /// An average that starts at the network's current weights; an error
    /// unless `0 ≤ decay < 1`.
    pub fn new(network: &mut Network<T>, decay: f64) -> Result<Self> {
        Self::resume(network, decay, 0)
    }

    /// An average whose current value is `network`'s weights, after `steps`
    /// updates: for a run resumed with the averaged network loaded into
    /// `network` (the warm-up goes on from `steps`).
    pub fn resume(network: &mut Network<T>, decay: f64, steps: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::Config(format!(
                "the EMA decay must be in [0, 1), got {decay}"
            )));
        }
        Ok(Ema {
            decay,
            steps,
            average: Weights::capture(network),
        })
    }

    /// The decay given to [`new`](Self::new).
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Updates averaged so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Moves the average towards the network's current weights (call it
    /// after every optimizer step). An error if the network's parameters no
    /// longer match the average's.
    pub fn update(&mut self, network: &mut Network<T>) -> Result<()> {
        self.steps += 1;
        let t = self.steps as f64;
        let d = self.decay.min((1.0 + t) / (10.0 + t));
        let (keep, take) = (T::cast(d), T::cast(1.0 - d));
        self.average.blend_towards(network, keep, take)
    }

    /// Runs `work` with the averaged weights in `network`, then puts the
    /// network's own weights back.
    pub fn with_weights<R>(
        &mut self,
        network: &mut Network<T>,
        work: impl FnOnce(&mut Network<T>) -> R,
    ) -> Result<R> {
        self.average.swap_with(network)?;
        let result = work(network);
        self.average.swap_with(network)?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::{build_model, ModelOptions};
    use crate::rng::Rng;

    fn net() -> Network<f64> {
        build_model::<f64>(
            "conv(2,3)-bn-relu-affine(3)",
            &ModelOptions::default(),
            [1, 5, 5],
            3,
            &mut Rng::new(4),
        )
        .unwrap()
    }

    fn values(net: &mut Network<f64>) -> Vec<f64> {
        let mut all: Vec<f64> = net
            .params()
            .iter()
            .flat_map(|p| p.value.data().to_vec())
            .collect();
        for named in net.layers.iter_mut() {
            for (_, buffer) in named.layer.buffers() {
                all.extend_from_slice(buffer.data());
            }
        }
        all
    }

    /// Sets every parameter and buffer value to `v`.
    fn set_all(net: &mut Network<f64>, v: f64) {
        for p in net.params() {
            p.value.fill(v);
        }
        for named in net.layers.iter_mut() {
            for (_, buffer) in named.layer.buffers() {
                buffer.fill(v);
            }
        }
    }

    #[test]
    fn the_average_follows_the_formula_with_its_warm_up() {
        let mut net = net();
        set_all(&mut net, 0.0);
        let mut ema = Ema::new(&mut net, 0.9).unwrap();
        // Steps 1..=4 with the weights at 1, 2, 3, 4; d = min(0.9, (1+t)/(10+t)).
        let mut expected = 0.0;
        for t in 1..=4 {
            set_all(&mut net, t as f64);
            ema.update(&mut net).unwrap();
            let d = 0.9f64.min((1.0 + t as f64) / (10.0 + t as f64));
            expected = d * expected + (1.0 - d) * t as f64;
        }
        let averaged = ema.with_weights(&mut net, values).unwrap();
        assert!(
            averaged.iter().all(|&v| (v - expected).abs() < 1e-12),
            "{expected}"
        );
        // The network's own weights came back.
        assert!(values(&mut net).iter().all(|&v| v == 4.0));
        assert_eq!(ema.steps(), 4);
        // Late in a run the decay itself rules: d = 0.9 from t = 80 on.
        let mut late = Ema::resume(&mut net, 0.9, 1000).unwrap();
        set_all(&mut net, 14.0);
        late.update(&mut net).unwrap();
        let averaged = late.with_weights(&mut net, values).unwrap();
        assert!(averaged
            .iter()
            .all(|&v| (v - (0.9 * 4.0 + 0.1 * 14.0)).abs() < 1e-12));
    }

    #[test]
    fn a_decay_outside_zero_to_one_is_refused() {
        let mut net = net();
        for decay in [1.0, -0.1, f64::NAN, 2.0] {
            assert!(Ema::new(&mut net, decay).is_err(), "{decay}");
        }
    }
}
