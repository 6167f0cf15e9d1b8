//! Weight decay (book §6.4.1), in two forms:
//!
//! ```text
//! l2         L ← L + λ/2 · Σ ‖W‖²,   ∂L/∂W ← ∂L/∂W + λ·W        (the book's penalty)
//! decoupled  W ← W − lr·λ·W, before the optimizer's step          (AdamW, Loshchilov & Hutter)
//! ```
//!
//! Only the weights of convolutions and affine layers decay: biases and
//! batch normalisation's scale and shift do not (see [`decays`]), as is
//! usual (a decayed batch-norm scale only fights the next layer's weights).
//!
//! ```
//! use convnet::train::WeightDecayMode;
//! let mode: WeightDecayMode = "decoupled".parse().unwrap();
//! assert_eq!(mode.to_string(), "decoupled");
//! assert_eq!(WeightDecayMode::default(), WeightDecayMode::L2);
//! ```

use crate::error::{Error, Result};
use crate::kernels::vectorize::map_in_place;
use crate::networks::Network;
use crate::parallel::ELEMENTWISE_CHUNK;
use crate::tensor::Float;
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// How weight decay is applied (see the [module](self) documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightDecayMode {
    /// The L2 penalty `λ/2·‖W‖²` added to the loss, `λW` to the gradients.
    #[default]
    L2,
    /// The weights shrunk by `lr·λ` before each step, apart from the
    /// gradient (AdamW's form).
    Decoupled,
}

impl fmt::Display for WeightDecayMode {
    /// `l2` or `decoupled`, as [`FromStr`] reads them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightDecayMode::L2 => "l2",
            WeightDecayMode::Decoupled => "decoupled",
        })
    }
}

impl FromStr for WeightDecayMode {
    type Err = Error;

    /// Parses `l2` or `decoupled`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "l2" => Ok(WeightDecayMode::L2),
            "decoupled" => Ok(WeightDecayMode::Decoupled),
            _ => Err(Error::Config(format!(
                "unknown weight decay mode '{s}' (expected l2 or decoupled)"
            ))),
        }
    }
}

/// Whether parameter `param` of a layer of kind `layer_kind` decays: the
/// `weight` of every layer but batch normalisation (whose `weight` is its
/// scale γ); never a `bias`.
///
/// ```
/// use convnet::train::weight_decay::decays;
/// assert!(decays("Convolution", "weight") && decays("Affine", "weight"));
/// assert!(!decays("Affine", "bias") && !decays("BatchNorm", "weight"));
/// ```
pub fn decays(layer_kind: &str, param: &str) -> bool {
    param == "weight" && layer_kind != "BatchNorm"
}

/// Adds `λ·W` to the gradient of every decaying weight of `network` and
/// returns the penalty `λ/2 · Σ ‖W‖²` (summed in `f64`, in the parameters'
/// fixed order), to be added to the loss.
pub fn add_l2_penalty<T: Float>(network: &mut Network<T>, lambda: f64) -> f64 {
    let lambda_t = T::cast(lambda);
    let mut squares = 0.0;
    for named in network.layers.iter_mut() {
        let kind = named.layer.kind();
        for p in named.layer.params() {
            if !decays(kind, p.name) {
                continue;
            }
            for (g, &w) in p.grad.data_mut().iter_mut().zip(p.value.data()) {
                squares += w.as_f64() * w.as_f64();
                *g += lambda_t * w;
            }
        }
    }
    0.5 * lambda * squares
}

/// Multiplies every decaying weight of `network` by `1 − shrink` (decoupled
/// decay: `shrink = lr·λ`).
pub fn shrink_weights<T: Float>(network: &mut Network<T>, shrink: f64) {
    let keep = T::cast(1.0 - shrink);
    for named in network.layers.iter_mut() {
        let kind = named.layer.kind();
        for p in named.layer.params() {
            if decays(kind, p.name) {
                p.value
                    .data_mut()
                    .par_chunks_mut(ELEMENTWISE_CHUNK)
                    .for_each(|chunk| map_in_place(chunk, |w| w * keep));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::{max_relative_error, numerical_gradient};
    use crate::networks::{build_model, ModelOptions};
    use crate::rng::Rng;
    use crate::tensor::Tensor;

    // Batch norm after the ReLU, so that the convolution's bias matters.
    const SPEC: &str = "conv(3,3)-relu-bn-affine(6)-tanh-affine(4)";

    fn network() -> Network<f64> {
        build_model::<f64>(
            SPEC,
            &ModelOptions::default(),
            [1, 5, 5],
            4,
            &mut Rng::new(4),
        )
        .unwrap()
    }

    /// The penalty by hand: λ/2 of the squares of the conv and affine
    /// weights, none of the biases or of batch norm's.
    fn penalty_by_hand(net: &mut Network<f64>, lambda: f64) -> f64 {
        let mut sum = 0.0;
        for named in net.layers.iter_mut() {
            let kind = named.layer.kind();
            for p in named.layer.params() {
                if p.name == "weight" && matches!(kind, "Convolution" | "Affine") {
                    sum += p.value.data().iter().map(|w| w * w).sum::<f64>();
                }
            }
        }
        0.5 * lambda * sum
    }

    /// The L2 term's gradient, checked against the numerical gradient of
    /// loss + penalty for every parameter, in f64.
    #[test]
    fn l2_penalty_gradient_matches_numerical() {
        let lambda = 0.3;
        let mut net = network();
        net.fix_randomness(true);
        let mut rng = Rng::new(9);
        let x = Tensor::from_vec(&[3, 1, 5, 5], (0..75).map(|_| rng.normal()).collect()).unwrap();
        let labels = [0, 3, 1];
        let loss = net.gradient(&x, &labels).unwrap();
        let penalty = add_l2_penalty(&mut net, lambda);
        assert!((penalty - penalty_by_hand(&mut net, lambda)).abs() < 1e-12);
        assert!(penalty > 0.01 * loss, "the penalty {penalty} must matter");
        let analytic: Vec<Vec<f64>> = net
            .params()
            .iter()
            .map(|p| p.grad.data().to_vec())
            .collect();
        let names = net.param_names();
        for (index, name) in names.iter().enumerate() {
            let mut values = net.params()[index].value.data().to_vec();
            let numeric = numerical_gradient(&mut values, |v| {
                net.params()[index].value.data_mut().copy_from_slice(v);
                net.loss(&x, &labels, true).unwrap() + penalty_by_hand(&mut net, lambda)
            });
            net.params()[index]
                .value
                .data_mut()
                .copy_from_slice(&values);
            let err = max_relative_error(&analytic[index], &numeric);
            assert!(err < 1e-6, "{name}: {err}");
        }
    }

    #[test]
    fn shrinking_touches_only_conv_and_affine_weights() {
        let mut net = network();
        let snapshot = |net: &mut Network<f64>| {
            let mut all = Vec::new();
            for named in net.layers.iter_mut() {
                let kind = named.layer.kind();
                for p in named.layer.params() {
                    all.push((kind, p.name, p.value.data().to_vec()));
                }
            }
            all
        };
        let before = snapshot(&mut net);
        shrink_weights(&mut net, 0.25);
        let after = snapshot(&mut net);
        let mut shrunk = 0;
        for ((kind, name, old), (_, _, new)) in before.iter().zip(&after) {
            let decayed = *name == "weight" && matches!(*kind, "Convolution" | "Affine");
            shrunk += usize::from(decayed);
            let expected: Vec<f64> = old
                .iter()
                .map(|&w| if decayed { 0.75 * w } else { w })
                .collect();
            assert_eq!(new, &expected, "{kind}.{name}");
        }
        assert_eq!(shrunk, 3);
        assert!(before
            .iter()
            .any(|(kind, name, _)| *kind == "BatchNorm" && *name == "weight"));
    }

    #[test]
    fn modes_parse_and_display_back() {
        for mode in [WeightDecayMode::L2, WeightDecayMode::Decoupled] {
            assert_eq!(mode.to_string().parse::<WeightDecayMode>().unwrap(), mode);
        }
        assert!("adamw".parse::<WeightDecayMode>().is_err());
    }
}
