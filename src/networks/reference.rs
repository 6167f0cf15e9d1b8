//! A network on the book's plain layers: every [`Convolution`] and
//! [`MaxPooling`] swapped for its twin in [`layers::reference`](crate::layers::reference)
//! (`convnet train --reference`, and `eval`, `bench`, `predict`,
//! `summary`, `gradcheck`). The weights are kept; the results are the same
//! up to the order of the sums, at the reference layers' speed.
//!
//! ```
//! use convnet::networks::{simple_convnet, SimpleConvNetConfig};
//! use convnet::layers::reference;
//! use convnet::{Rng, Tensor};
//! let mut net = simple_convnet::<f32>(&SimpleConvNetConfig::default(), &mut Rng::new(0)).unwrap();
//! let x = Tensor::zeros(&[2, 1, 28, 28]);
//! let fast = net.predict(&x, false).unwrap().clone();
//! net.use_reference_layers();
//! assert!(net.layers[0].layer.is::<reference::Convolution<f32>>());
//! assert!(net.layers[2].layer.is::<reference::MaxPooling<f32>>());
//! let plain = net.predict(&x, false).unwrap();
//! assert!(fast.data().iter().zip(plain.data()).all(|(a, b)| (a - b).abs() < 1e-5));
//! ```

use super::Network;
use crate::layers::{reference, Convolution, Layer, MaxPooling};
use crate::tensor::Float;

impl<T: Float> Network<T> {
    /// Swaps every fast [`Convolution`] and [`MaxPooling`] for the book's
    /// plain one ([`layers::reference`](crate::layers::reference)(crate::layers::reference)), with
    /// the same weights, and turns fusion off (the reference layers run
    /// one by one, as in the book).
    pub fn use_reference_layers(&mut self) {
        self.set_fusion(false);
        for named in &mut self.layers {
            if let Some(twin) = reference_twin(&*named.layer) {
                named.layer = twin;
            }
        }
    }
}

/// The reference layer that computes what `layer` computes, if it has one.
fn reference_twin<T: Float>(layer: &dyn Layer<T>) -> Option<Box<dyn Layer<T>>> {
    if let Some(conv) = layer.downcast_ref::<Convolution<T>>() {
        let (weight, bias) = (conv.weight.clone(), conv.bias.clone());
        let twin = reference::Convolution::from_params(weight, bias, conv.stride, conv.pad)
            .expect("the fast layer's parameters are valid");
        return Some(Box::new(twin));
    }
    let pool = layer.downcast_ref::<MaxPooling<T>>()?;
    Some(Box::new(reference::MaxPooling::new(&pool.config)))
}

#[cfg(test)]
mod tests {
    use crate::layers::reference;
    use crate::networks::{build_model, ModelOptions};
    use crate::rng::Rng;
    use crate::tensor::Tensor;

    /// `simple` and `deep` (dropout included) on small images: the same
    /// loss, scores and gradients on the reference layers as on the fast
    /// ones, up to the order of the sums.
    #[test]
    fn a_network_on_the_reference_layers_gives_the_same_numbers() {
        for (model, side) in [("simple", 12), ("deep", 12)] {
            let build = || {
                let options = ModelOptions::default();
                build_model::<f64>(model, &options, [1, side, side], 10, &mut Rng::new(4)).unwrap()
            };
            let (mut fast, mut plain) = (build(), build());
            plain.use_reference_layers();
            let swapped = plain.layers.iter().filter(|l| {
                l.layer.is::<reference::Convolution<f64>>()
                    || l.layer.is::<reference::MaxPooling<f64>>()
            });
            assert_eq!(
                swapped.count(),
                if model == "simple" { 2 } else { 9 },
                "{model}"
            );
            assert!(plain.layers.iter().all(|l| !l.fused_into_previous));
            let mut rng = Rng::new(5);
            let x = (0..6 * side * side).map(|_| rng.uniform()).collect();
            let x = Tensor::from_vec(&[6, 1, side, side], x).unwrap();
            let labels = [0, 3, 9, 1, 4, 4];
            for step in 0..2 {
                fast.reseed(step);
                plain.reseed(step);
                let (a, b) = (
                    fast.gradient(&x, &labels).unwrap(),
                    plain.gradient(&x, &labels).unwrap(),
                );
                assert!((a - b).abs() <= 1e-12 * a.abs(), "{model}: loss {a} vs {b}");
                let names = fast.param_names();
                for ((p, q), name) in fast.params().iter().zip(plain.params().iter()).zip(names) {
                    let largest = q.grad.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    assert!(largest > 0.0, "{model}: {name}");
                    for (g, h) in p.grad.data().iter().zip(q.grad.data()) {
                        assert!(
                            (g - h).abs() <= 1e-10 * largest,
                            "{model}: {name} {g} vs {h}"
                        );
                    }
                }
                let scores = fast.predict(&x, false).unwrap().clone();
                let plain_scores = plain.predict(&x, false).unwrap();
                for (s, t) in scores.data().iter().zip(plain_scores.data()) {
                    assert!(
                        (s - t).abs() <= 1e-10 * s.abs().max(1.0),
                        "{model}: {s} vs {t}"
                    );
                }
            }
        }
    }
}
