//! Dropout (book §6.4.3, `ch06/overfit_dropout.py: Dropout`), in the
//! *inverted* form that PyTorch uses.
//!
//! ```text
//! training:    mask_i = (u_i ≥ ratio),  u_i ~ U[0, 1)
//!              out = x ⊙ mask / (1 − ratio)          dx = dout ⊙ mask / (1 − ratio)
//! evaluation:  out = x                               dx = dout
//! ```
//! Any shape in, the same shape out. The book scales by `1 − ratio` at
//! evaluation time instead; scaling the kept units during training gives the
//! same expected output and leaves evaluation the identity.
//!
//! The layer owns a seeded [`Rng`] (pass `rng.fork()`), so a seed fixes every
//! mask of a run. The mask is cached as one scale factor per element,
//! `0` or `1 / (1 − ratio)`. For gradient checks, [`Dropout::fix_mask`]
//! makes training forwards reuse the last mask.
//!
//! ```
//! use convnet::layers::{Dropout, DropoutConfig, Layer};
//! use convnet::{Rng, Tensor};
//! let mut dropout = Dropout::<f32>::new(&DropoutConfig { ratio: 0.5 }, Rng::new(0).fork()).unwrap();
//! let x = Tensor::from_vec(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
//! // Training: each element is dropped (0) or doubled.
//! let y = dropout.forward(&x, true).unwrap();
//! assert!(y.data().iter().zip(x.data()).all(|(&o, &v)| o == 0.0 || o == 2.0 * v));
//! // Evaluation: the identity.
//! assert_eq!(dropout.forward(&x, false).unwrap().data(), x.data());
//! ```

use super::{check_dout, Layer};
use crate::error::{Error, Result};
use crate::networks::spec::LayerSpec;
use crate::parallel::ELEMENTWISE_CHUNK;
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// Hyper-parameters of a [`Dropout`].
#[derive(Clone, Debug, PartialEq)]
pub struct DropoutConfig {
    /// The probability of dropping a unit, in [0, 1).
    pub ratio: f64,
}

impl Default for DropoutConfig {
    fn default() -> Self {
        DropoutConfig { ratio: 0.5 }
    }
}

/// Inverted dropout.
pub struct Dropout<T> {
    ratio: f64,
    rng: Rng,
    /// Per element: 0 (dropped) or 1 / (1 − ratio) (kept), from the last
    /// training forward.
    mask: Vec<T>,
    /// While true, training forwards reuse `mask` (if it has the input's size).
    fixed: bool,
    /// Whether the last forward was a training one; `None` before any forward.
    last_train: Option<bool>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> Dropout<T> {
    /// A dropout layer drawing its masks from `rng`; an error unless
    /// `0 ≤ ratio < 1`.
    pub fn new(config: &DropoutConfig, rng: Rng) -> Result<Self> {
        let ratio = config.ratio;
        if !(0.0..1.0).contains(&ratio) {
            return Err(Error::Config(format!(
                "Dropout ratio must be in [0, 1), got {ratio}"
            )));
        }
        Ok(Dropout {
            ratio,
            rng,
            mask: Vec::new(),
            fixed: false,
            last_train: None,
            out: Tensor::default(),
            dx: Tensor::default(),
        })
    }

    /// The probability of dropping a unit.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// While `fixed`, training forwards reuse the last mask instead of
    /// drawing a new one (for gradient checks). A forward whose input has a
    /// different number of elements than the last mask still draws one.
    pub fn fix_mask(&mut self, fixed: bool) {
        self.fixed = fixed;
    }

    /// Draws a new mask of `len` elements.
    fn draw_mask(&mut self, len: usize) {
        let scale = T::cast(1.0 / (1.0 - self.ratio));
        self.mask.resize(len, T::zero());
        for m in &mut self.mask {
            *m = if self.rng.uniform() >= self.ratio {
                scale
            } else {
                T::zero()
            };
        }
    }
}

/// `out = a ⊙ b`, element-wise, in parallel.
fn multiply<T: Float>(out: &mut [T], a: &[T], b: &[T]) {
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(a.par_chunks(ELEMENTWISE_CHUNK))
        .zip(b.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((out, a), b)| {
            for ((o, &x), &m) in out.iter_mut().zip(a).zip(b) {
                *o = x * m;
            }
        });
}

impl<T: Float> Layer<T> for Dropout<T> {
    fn fix_randomness(&mut self, fixed: bool) {
        self.fix_mask(fixed);
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    fn kind(&self) -> &'static str {
        "Dropout"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    // flops: the default, one multiply per element.

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        self.out.resize(x.shape());
        if train {
            if !(self.fixed && self.mask.len() == x.len()) {
                self.draw_mask(x.len());
            }
            multiply(self.out.data_mut(), x.data(), &self.mask);
        } else {
            self.out.data_mut().copy_from_slice(x.data());
        }
        self.last_train = Some(train);
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        let out_shape = self.last_train.map(|_| self.out.shape());
        check_dout("Dropout", out_shape, dout)?;
        self.dx.resize(dout.shape());
        if self.last_train == Some(true) {
            multiply(self.dx.data_mut(), dout.data(), &self.mask);
        } else {
            self.dx.data_mut().copy_from_slice(dout.data());
        }
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::Dropout { ratio: self.ratio })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;

    fn dropout(ratio: f64, seed: u64) -> Dropout<f64> {
        Dropout::new(&DropoutConfig { ratio }, Rng::new(seed)).unwrap()
    }

    fn normal_tensor(shape: &[usize], seed: u64) -> Tensor<f64> {
        let mut rng = Rng::new(seed);
        let data = (0..shape.iter().product()).map(|_| rng.normal()).collect();
        Tensor::from_vec(shape, data).unwrap()
    }

    #[test]
    fn evaluation_is_the_identity() {
        let mut layer = dropout(0.5, 1);
        let x = normal_tensor(&[3, 4, 5], 2);
        // Also after a training forward, and twice in a row: deterministic.
        layer.forward(&x, true).unwrap();
        assert_eq!(layer.forward(&x, false).unwrap(), &x);
        assert_eq!(layer.forward(&x, false).unwrap(), &x);
        let dout = normal_tensor(&[3, 4, 5], 3);
        assert_eq!(layer.backward(&dout).unwrap(), &dout);
    }

    #[test]
    fn training_drops_or_scales_and_backward_uses_the_mask() {
        let ratio = 0.3;
        let mut layer = dropout(ratio, 4);
        let x = normal_tensor(&[8, 50], 5);
        let out = layer.forward(&x, true).unwrap().clone();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        for (&o, &v) in out.data().iter().zip(x.data()) {
            assert!(o == 0.0 || close(o, v / (1.0 - ratio)), "{o} from {v}");
        }
        // dx is dout through the same mask: with dout = x, dx = out.
        let dx = layer.backward(&x).unwrap();
        assert_eq!(dx, &out);
    }

    #[test]
    fn drop_fraction_is_the_ratio() {
        for ratio in [0.1, 0.5, 0.8] {
            let mut layer = Dropout::<f32>::new(&DropoutConfig { ratio }, Rng::new(6)).unwrap();
            let x = Tensor::from_vec(&[100_000], vec![1.0f32; 100_000]).unwrap();
            let out = layer.forward(&x, true).unwrap();
            let zeros = out.data().iter().filter(|&&v| v == 0.0).count();
            let fraction = zeros as f64 / 100_000.0;
            assert!((fraction - ratio).abs() < 0.01, "{ratio}: {fraction}");
        }
    }

    #[test]
    fn same_seed_same_mask_and_masks_change_unless_fixed() {
        let x = normal_tensor(&[10, 20], 7);
        let (mut a, mut b) = (dropout(0.5, 8), dropout(0.5, 8));
        let first = a.forward(&x, true).unwrap().clone();
        assert_eq!(b.forward(&x, true).unwrap(), &first);
        // A second forward draws a new mask...
        assert_ne!(a.forward(&x, true).unwrap(), &first);
        // ...unless the mask is fixed.
        b.fix_mask(true);
        assert_eq!(b.forward(&x, true).unwrap(), &first);
        b.fix_mask(false);
        assert_ne!(b.forward(&x, true).unwrap(), &first);
    }

    #[test]
    fn gradients_match_numerical_with_a_fixed_mask() {
        let mut layer = dropout(0.5, 9);
        layer.fix_mask(true);
        for (name, err) in check_layer(&mut layer, &[3, 4, 5], 10).unwrap() {
            assert!(err <= 1e-6, "{name}: {err}");
        }
    }

    #[test]
    fn ratio_out_of_range_is_an_error() {
        for ratio in [1.0, -0.1, 1.5, f64::NAN] {
            let result = Dropout::<f32>::new(&DropoutConfig { ratio }, Rng::new(0));
            assert!(matches!(result, Err(Error::Config(_))), "{ratio}");
        }
        assert!(Dropout::<f32>::new(&DropoutConfig::default(), Rng::new(0)).is_ok());
        assert!(Dropout::<f32>::new(&DropoutConfig { ratio: 0.0 }, Rng::new(0)).is_ok());
    }

    #[test]
    fn backward_before_forward_and_wrong_shape_are_errors() {
        let mut layer = dropout(0.5, 11);
        assert!(matches!(
            layer.backward(&Tensor::zeros(&[2, 3])),
            Err(Error::BackwardBeforeForward("Dropout"))
        ));
        layer.forward(&Tensor::zeros(&[2, 3]), true).unwrap();
        assert!(matches!(
            layer.backward(&Tensor::zeros(&[3, 2])),
            Err(Error::Shape(_))
        ));
    }
}
