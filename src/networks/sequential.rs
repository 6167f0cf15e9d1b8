//! A network as a list of layers run in order, ending in softmax with loss
//! (book §5.7.2 `TwoLayerNet`, §7.5 `SimpleConvNet`).
//!
//! ```text
//! predict:  x → layer_1 → layer_2 → … → layer_L → scores        (N, classes)
//! loss:     scores → SoftmaxWithLoss(labels) → L
//! gradient: dout = ∂L/∂scores, then layer_L.backward … layer_1.backward
//! ```
//!
//! Each layer has a name (`conv1`, `relu1`, `pool1`, `fc1`, …); a parameter
//! is named `layer.weight` or `layer.bias`.
//!
//! A ReLU, sigmoid or tanh pushed straight after a convolution is *fused*
//! into it: the convolution applies the activation to its own output (and
//! its backward to its `dout`), and the activation layer is skipped. A max
//! pooling after the convolution or its ReLU is fused too: the convolution
//! pools each image's output while it is still in the core's cache. A
//! batch norm after a convolution likewise runs its ReLU and a 2×2 max
//! pooling after it, and keeps no x̂. The numbers are the same to the bit;
//! what is saved is several passes over the largest tensors of the
//! network. The rules are in [`fusion`]; [`Network::set_fusion`] turns
//! them off.
//!
//! ```
//! use convnet::layers::{Affine, AffineConfig, Relu};
//! use convnet::networks::Network;
//! use convnet::{Rng, Tensor};
//! let mut rng = Rng::new(0);
//! let mut net = Network::<f32>::new([1, 2, 2]);
//! net.push("fc1", Affine::new(&AffineConfig { inputs: 4, outputs: 3, ..Default::default() }, &mut rng)).unwrap();
//! net.push("relu1", Relu::new()).unwrap();
//! net.push("fc2", Affine::new(&AffineConfig { inputs: 3, outputs: 2, ..Default::default() }, &mut rng)).unwrap();
//! let x = Tensor::zeros(&[5, 1, 2, 2]);
//! assert_eq!(net.predict(&x, false).unwrap().shape(), &[5, 2]);
//! assert_eq!(net.param_names(), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
//! ```

use super::fusion;
use crate::error::{Error, Result};
use crate::layers::{Layer, Param, SoftmaxWithLoss};
use crate::parallel::team::{is_small_batch, with_team, without_team};
use crate::parallel::team_choice::TeamChoice;
use crate::tensor::{Float, Tensor};
use std::time::Instant;

/// A layer with its name in the network.
pub struct NamedLayer<T> {
    /// The layer's name (`conv1`, `relu1`, ...); its parameters are `<name>.weight`
    /// and `<name>.bias`.
    pub name: String,
    /// The layer itself.
    pub layer: Box<dyn Layer<T>>,
    /// A ReLU or max pooling that the convolution before it applies (see
    /// [`fusion`]): forward and backward skip it.
    pub fused_into_previous: bool,
}

/// One layer's output for an input, as [`Network::layer_outputs`] gives it.
#[derive(Clone, Debug)]
pub struct LayerOutput<T> {
    /// The layer's name (`conv1`, `pool1`, ...).
    pub name: String,
    /// The layer's type (`"Convolution"`, `"MaxPooling"`, ...).
    pub kind: &'static str,
    /// What the layer gave for the input.
    pub output: Tensor<T>,
}

/// A sequential classifier.
pub struct Network<T> {
    /// One input image: (C, H, W).
    pub input_shape: [usize; 3],
    /// The layers, in the order forward runs them.
    pub layers: Vec<NamedLayer<T>>,
    /// Softmax-with-Loss (book §5.6.3), which [`loss`](Self::loss) and
    /// [`gradient`](Self::gradient) put after the last layer.
    pub loss_layer: SoftmaxWithLoss<T>,
    /// Whether an activation and a max pooling after a convolution are
    /// fused into it (the default; see [`fusion`]).
    pub(super) fusion: bool,
    /// Whether [`predict`](Self::predict) runs a batch smaller than the
    /// pool in a team, as measured.
    team_choice: TeamChoice,
}

/// Runs `x` through `layers` in order; each layer's output feeds the next.
/// With `fold`, an inference forward folds each batch norm it can into the
/// convolution before it ([`fusion`]).
fn forward_layers<'a, T: Float>(
    layers: &'a mut [NamedLayer<T>],
    x: &'a Tensor<T>,
    train: bool,
    fold: bool,
) -> Result<&'a Tensor<T>> {
    let (mut out, mut moments) = (x, None);
    let mut layers = layers.iter_mut().peekable();
    while let Some(named) = layers.next() {
        // A fused layer already ran inside the layer before it.
        if named.fused_into_previous {
            continue;
        }
        let step = fusion::forward_step(named, &mut layers, out, moments, train, fold)?;
        (out, moments) = (step.out, step.moments);
    }
    Ok(out)
}

impl<T: Float> Network<T> {
    /// An empty network for images of shape (C, H, W).
    pub fn new(input_shape: [usize; 3]) -> Self {
        Network {
            input_shape,
            layers: Vec::new(),
            loss_layer: SoftmaxWithLoss::new(),
            fusion: true,
            team_choice: TeamChoice::default(),
        }
    }

    /// Appends a layer, checking that it accepts the previous layer's output.
    pub fn push(&mut self, name: &str, layer: impl Layer<T> + 'static) -> Result<()> {
        let input = self.output_shape_for(1)?;
        layer
            .output_shape(&input)
            .map_err(|e| Error::Config(format!("layer {name} ({}): {e}", layer.kind())))?;
        self.layers.push(NamedLayer {
            name: name.to_string(),
            layer: Box::new(layer),
            fused_into_previous: false,
        });
        let last = self.layers.len() - 1;
        fusion::fuse_at(&mut self.layers, last, self.fusion);
        Ok(())
    }

    /// The shape after every layer for a batch of `batch` images, input first.
    pub fn shapes(&self, batch: usize) -> Result<Vec<Vec<usize>>> {
        let [c, h, w] = self.input_shape;
        let mut shapes = vec![vec![batch, c, h, w]];
        for named in &self.layers {
            let next = named
                .layer
                .output_shape(shapes.last().expect("not empty"))?;
            shapes.push(next);
        }
        Ok(shapes)
    }

    /// The output shape of the whole network for a batch of `batch`.
    pub fn output_shape_for(&self, batch: usize) -> Result<Vec<usize>> {
        Ok(self.shapes(batch)?.pop().expect("not empty"))
    }

    /// The number of classes (the size of the last layer's output).
    pub fn num_classes(&self) -> Result<usize> {
        let out = self.output_shape_for(1)?;
        match out[..] {
            [1, classes] => Ok(classes),
            _ => Err(Error::Shape(format!(
                "the network's output {out:?} is not (N, classes)"
            ))),
        }
    }

    /// The batch norms an inference forward folds into the convolution
    /// before it (see [`fusion`]), as (convolution, batch norm) names; none
    /// with fusion off.
    pub fn inference_folds(&self) -> Vec<(&str, &str)> {
        if !self.fusion {
            return Vec::new();
        }
        self.layers
            .windows(2)
            .filter(|pair| {
                !pair[0].fused_into_previous && fusion::folds(&*pair[0].layer, &*pair[1].layer)
            })
            .map(|pair| (pair[0].name.as_str(), pair[1].name.as_str()))
            .collect()
    }

    /// Class scores for `x: (N, C, H, W)`; `train` switches dropout and batch norm.
    ///
    /// With fewer images than threads (one image to classify), the layers
    /// share each image's work out within a [`team`](crate::parallel::team)
    /// instead, where that is faster on this machine for this network
    /// ([`team_choice`](crate::parallel::team_choice): measured as the calls run; the scores are the
    /// same to the bit either way).
    pub fn predict<'a>(&'a mut self, x: &'a Tensor<T>, train: bool) -> Result<&'a Tensor<T>> {
        self.check_input(x)?;
        let (layers, fold, choice) = (&mut self.layers, self.fusion, &mut self.team_choice);
        if !is_small_batch(x.shape()[0]) {
            return forward_layers(layers, x, train, fold);
        }
        let in_team = choice.in_team();
        let start = choice.measuring().then(Instant::now);
        let scores = match in_team {
            true => with_team(|| forward_layers(layers, x, train, fold)),
            false => without_team(|| forward_layers(layers, x, train, fold)),
        };
        match start {
            Some(start) => choice.record(in_team, start.elapsed()),
            None => choice.skip(),
        }
        scores
    }

    /// Runs `x` through the network in evaluation mode and returns a copy of
    /// every layer's output, in order (the feature maps of `convnet
    /// visualize activations`).
    ///
    /// ```
    /// use convnet::networks::{simple_convnet, SimpleConvNetConfig};
    /// use convnet::{Rng, Tensor};
    /// let mut net = simple_convnet::<f32>(&SimpleConvNetConfig::default(), &mut Rng::new(0)).unwrap();
    /// let outputs = net.layer_outputs(&Tensor::zeros(&[1, 1, 28, 28])).unwrap();
    /// let names: Vec<_> = outputs.iter().map(|o| (o.name.as_str(), o.kind)).collect();
    /// assert_eq!(names[..3], [("conv1", "Convolution"), ("relu1", "Relu"), ("pool1", "MaxPooling")]);
    /// assert_eq!(outputs[2].output.shape(), [1, 30, 12, 12]);
    /// assert_eq!(outputs.last().unwrap().output.shape(), [1, 10]);
    /// ```
    pub fn layer_outputs(&mut self, x: &Tensor<T>) -> Result<Vec<LayerOutput<T>>> {
        self.check_input(x)?;
        // Every layer's own output, as in the book: unfused for this call.
        let fusion = self.fusion;
        self.set_fusion(false);
        let outputs = self.unfused_layer_outputs(x);
        self.set_fusion(fusion);
        outputs
    }

    fn unfused_layer_outputs(&mut self, x: &Tensor<T>) -> Result<Vec<LayerOutput<T>>> {
        let mut outputs: Vec<LayerOutput<T>> = Vec::with_capacity(self.layers.len());
        for named in self.layers.iter_mut() {
            let input = outputs.last().map_or(x, |o| &o.output);
            let output = named.layer.forward(input, false)?.clone();
            outputs.push(LayerOutput {
                name: named.name.clone(),
                kind: named.layer.kind(),
                output,
            });
        }
        Ok(outputs)
    }

    /// The mean cross-entropy loss of `x` against `labels`: in training
    /// mode with the loss layer's label smoothing, in evaluation mode
    /// against the plain one-hot labels.
    pub fn loss(&mut self, x: &Tensor<T>, labels: &[usize], train: bool) -> Result<T> {
        self.check_input(x)?;
        let scores = forward_layers(&mut self.layers, x, train, self.fusion)?;
        if train {
            self.loss_layer.forward(scores, labels)
        } else {
            self.loss_layer.forward_plain(scores, labels)
        }
    }

    /// Forward and backward in training mode: fills every parameter's
    /// gradient and returns the loss.
    pub fn gradient(&mut self, x: &Tensor<T>, labels: &[usize]) -> Result<T> {
        let loss = self.loss(x, labels, true)?;
        let dout = self.loss_layer.backward()?;
        fusion::backward_layers(&mut self.layers, dout, |_, _| {})?;
        Ok(loss)
    }

    /// Every parameter with its gradient, in a fixed order (layer by layer).
    pub fn params(&mut self) -> Vec<Param<'_, T>> {
        self.layers
            .iter_mut()
            .flat_map(|named| named.layer.params())
            .collect()
    }

    /// The names of [`params`](Self::params), as `layer.weight` / `layer.bias`.
    pub fn param_names(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        for named in self.layers.iter_mut() {
            for p in named.layer.params() {
                names.push(format!("{}.{}", named.name, p.name));
            }
        }
        names
    }

    /// Holds dropout masks fixed (`true`) or lets them be drawn anew on every
    /// training forward (`false`, the default); for gradient checks.
    pub fn fix_randomness(&mut self, fixed: bool) {
        for named in self.layers.iter_mut() {
            named.layer.fix_randomness(fixed);
        }
    }

    /// Reseeds every layer's random generator from `seed` (each layer gets
    /// its own stream).
    pub fn reseed(&mut self, seed: u64) {
        let mut rng = crate::rng::Rng::new(seed);
        for named in self.layers.iter_mut() {
            named.layer.reseed(rng.next_u64());
        }
    }

    /// The total number of learnable values.
    pub fn num_params(&mut self) -> usize {
        self.params().iter().map(|p| p.value.len()).sum()
    }

    pub(crate) fn check_input(&self, x: &Tensor<T>) -> Result<()> {
        let (_, c, h, w) = x.dims4()?;
        if [c, h, w] != self.input_shape {
            return Err(Error::Shape(format!(
                "the network takes images of shape {:?} (C, H, W), got {:?}",
                self.input_shape,
                [c, h, w]
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Network;
    use crate::layers::{BatchNorm, Convolution};
    use crate::networks::{build_model, ModelOptions};
    use crate::rng::Rng;
    use crate::tensor::Tensor;

    /// `gradient` skips the first layer's dx; the parameter gradients must
    /// be exactly those of a full backward through every layer.
    #[test]
    fn skipping_the_first_dx_keeps_the_gradients() {
        for spec in [
            "conv(4,3,pad=1)-relu-maxpool(2)-affine(5)",
            "affine(6)-relu-affine(5)",
        ] {
            let mut rng = Rng::new(3);
            let options = ModelOptions::default();
            let mut net = build_model::<f64>(spec, &options, [1, 6, 6], 5, &mut rng).unwrap();
            let x =
                Tensor::from_vec(&[3, 1, 6, 6], (0..108).map(|_| rng.normal()).collect()).unwrap();
            let labels = [0, 4, 2];
            net.gradient(&x, &labels).unwrap();
            let fast: Vec<Vec<f64>> = net
                .params()
                .iter()
                .map(|p| p.grad.data().to_vec())
                .collect();

            net.loss(&x, &labels, true).unwrap();
            let mut dout = net.loss_layer.backward().unwrap();
            let mut layers = &mut net.layers[..];
            while let Some((named, before)) = std::mem::take(&mut layers).split_last_mut() {
                if !named.fused_into_previous {
                    dout = super::fusion::backward_step(named, before, dout).unwrap();
                }
                layers = before;
            }
            let full: Vec<Vec<f64>> = net
                .params()
                .iter()
                .map(|p| p.grad.data().to_vec())
                .collect();
            assert_eq!(fast, full, "{spec}");
            assert!(full.iter().flatten().any(|&g| g != 0.0));
        }
    }

    /// Below one image per thread, `predict` runs in a team (each
    /// convolution's output rows shared between two threads): the same
    /// scores, to the bit, as on one thread.
    #[test]
    fn predicting_one_image_in_a_team_changes_no_number() {
        let spec = "conv(16,3,pad=1)-relu-maxpool(2)-conv(24,3,pad=1)-relu-affine(5)";
        let mut rng = Rng::new(5);
        let mut net =
            build_model::<f32>(spec, &ModelOptions::default(), [2, 8, 8], 5, &mut rng).unwrap();
        let x = (0..128).map(|_| rng.normal() as f32).collect();
        let x = Tensor::from_vec(&[1, 2, 8, 8], x).unwrap();
        let pool = crate::parallel::team::test_pool;
        let one = pool(1).install(|| net.predict(&x, false).unwrap().clone());
        let two = pool(2).install(|| net.predict(&x, false).unwrap().clone());
        assert_eq!(one, two);
        // The trials of `team_choice` run in a team and alone by turns,
        // inside an enclosing team too (as `convnet bench` runs them):
        // every call the same scores.
        pool(2).install(|| {
            let mut sides = std::collections::HashSet::new();
            for _ in 0..2 * crate::parallel::team_choice::TRIALS {
                sides.insert(net.team_choice.in_team());
                let scores =
                    crate::parallel::team::with_team(|| net.predict(&x, false).unwrap().clone());
                assert_eq!(scores, one);
            }
            assert_eq!(sides.len(), 2, "both sides ran");
        });
    }

    /// At inference a batch norm straight after a convolution with nothing
    /// fused into it is folded into that convolution's filters: the scores
    /// of the layers one by one to rounding, at batch 1 (a team) and 5,
    /// with running statistics, γ and β away from their first values.
    /// Training's forward does not fold: the same loss to the bit.
    #[test]
    fn a_batch_norm_folds_into_the_convolution_at_inference() {
        fn run<T: crate::tensor::Float>(tolerance: f64) {
            // bn1 (with its ReLU and the pooling after it) and bn2 (with
            // the pooling after it) fold; bn3 (after a ReLU fused into
            // conv3) and bn4 (after an affine) do not. Every bias, mean, variance, γ and β drawn at random.
            let spec = "conv(6,3,pad=1)-bn-relu-maxpool(2,stride=1)-conv(5,3,pad=1)-bn-maxpool(2)-conv(4,3)-relu-bn-affine(8)-bn-relu-affine(4)";
            let build = || {
                let options = ModelOptions::default();
                let mut net =
                    build_model::<T>(spec, &options, [2, 7, 7], 4, &mut Rng::new(5)).unwrap();
                let mut rng = Rng::new(8);
                for named in &mut net.layers {
                    if let Some(conv) = named.layer.downcast_mut::<Convolution<T>>() {
                        let bias = conv.bias.data_mut().iter_mut();
                        bias.for_each(|v| *v = T::cast(rng.normal()));
                    }
                    if let Some(bn) = named.layer.downcast_mut::<BatchNorm<T>>() {
                        let tensors = [&mut bn.running_mean, &mut bn.weight, &mut bn.bias];
                        for t in tensors {
                            t.data_mut()
                                .iter_mut()
                                .for_each(|v| *v = T::cast(rng.normal()));
                        }
                        let var = bn.running_var.data_mut().iter_mut();
                        var.for_each(|v| *v = T::cast(0.1 + rng.normal().abs()));
                    }
                }
                net
            };
            let (mut folded, mut plain) = (build(), build());
            plain.set_fusion(false);
            let folds: Vec<_> = folded
                .inference_folds()
                .iter()
                .map(|&(c, b)| (c.to_string(), b.to_string()))
                .collect();
            let kinds = |net: &Network<T>, name: &str| {
                let named = net.layers.iter().find(|l| l.name == name).unwrap();
                named.layer.kind()
            };
            assert_eq!(folds.len(), 2, "{folds:?}");
            for (conv, bn) in &folds {
                assert_eq!(
                    (kinds(&folded, conv), kinds(&folded, bn)),
                    ("Convolution", "BatchNorm")
                );
            }
            assert!(plain.inference_folds().is_empty());
            let mut rng = Rng::new(6);
            for n in [1, 5] {
                let values = (0..n * 98).map(|_| T::cast(rng.normal())).collect();
                let x = Tensor::from_vec(&[n, 2, 7, 7], values).unwrap();
                let pool = crate::parallel::team::test_pool;
                let got = pool(2).install(|| folded.predict(&x, false).unwrap().clone());
                let want = plain.predict(&x, false).unwrap();
                assert_eq!(got.shape(), want.shape());
                for (&a, &b) in got.data().iter().zip(want.data()) {
                    let (a, b) = (a.as_f64(), b.as_f64());
                    assert!(
                        (a - b).abs() <= tolerance * (1.0 + b.abs()),
                        "n {n}: {a} vs {b}"
                    );
                }
                let labels: Vec<usize> = (0..n).map(|i| i % 4).collect();
                let folded_loss = folded.loss(&x, &labels, true).unwrap();
                assert_eq!(folded_loss, plain.loss(&x, &labels, true).unwrap());
            }
        }
        run::<f64>(1e-12);
        run::<f32>(1e-5);
    }

    /// A batch norm straight after a convolution borrows its input (keeps
    /// no x̂), first layer included; the gradients are those of the layers
    /// on their own, to the bit, step after step.
    #[test]
    fn batch_norms_after_convolutions_borrow_their_input() {
        fn run<T: crate::tensor::Float>() {
            let spec =
                "conv(4,3,pad=1)-bn-relu-conv(3,3,pad=1)-bn-maxpool(2)-affine(6)-bn-affine(4)";
            let build = || {
                let options = ModelOptions::default();
                build_model::<T>(spec, &options, [2, 7, 7], 4, &mut Rng::new(5)).unwrap()
            };
            let (mut fast, mut plain) = (build(), build());
            plain.set_fusion(false);
            let borrowing = |net: &Network<T>| -> Vec<bool> {
                let bns = net.layers.iter();
                let bns = bns.filter_map(|l| l.layer.downcast_ref::<BatchNorm<T>>());
                bns.map(|bn| bn.input_borrowed()).collect()
            };
            assert_eq!(borrowing(&fast), [true, true, false]);
            assert_eq!(borrowing(&plain), [false, false, false]);
            // The convolutions before them take their planes' sums.
            let mut rng = Rng::new(6);
            let values = (0..5 * 98).map(|_| T::cast(rng.normal())).collect();
            let x = Tensor::from_vec(&[5, 2, 7, 7], values).unwrap();
            for (net, takes) in [(&mut fast, true), (&mut plain, false)] {
                let conv = net.layers[0]
                    .layer
                    .downcast_mut::<Convolution<T>>()
                    .unwrap();
                let (_, moments) = conv.forward_plane_moments(&x, true).unwrap();
                assert_eq!(moments.is_some(), takes);
            }
            let labels = [0, 3, 1, 2, 3];
            for _ in 0..3 {
                let loss = fast.gradient(&x, &labels).unwrap();
                assert_eq!(loss, plain.gradient(&x, &labels).unwrap());
                for (a, b) in fast.params().iter().zip(plain.params().iter()) {
                    assert_eq!(a.grad.data(), b.grad.data(), "{}", a.name);
                    assert!(a.grad.data().iter().any(|&g| g != T::zero()), "{}", a.name);
                }
                let step = |net: &mut Network<T>| {
                    for p in net.params() {
                        let grads = p.grad.data().to_vec();
                        let values = p.value.data_mut().iter_mut().zip(grads);
                        values.for_each(|(v, g)| *v -= T::cast(0.1) * g);
                    }
                };
                step(&mut fast);
                step(&mut plain);
            }
            // The profile's backward takes the same path.
            assert!(fast.profile(&x, &labels, 1).is_ok());
            fast.set_fusion(false);
            assert_eq!(borrowing(&fast), [false, false, false]);
            let conv = fast.layers[0]
                .layer
                .downcast_mut::<Convolution<T>>()
                .unwrap();
            assert!(conv.forward_plane_moments(&x, true).unwrap().1.is_none());
        }
        run::<f32>();
        run::<f64>();
    }

    /// An activation and a max pooling fused into the convolution before
    /// them change no number: the same scores, loss and gradients, to the bit, as
    /// every layer on its own.
    #[test]
    fn fused_layers_give_the_same_numbers() {
        fn run<T: crate::tensor::Float>(spec: &str, fused_pools: &[usize]) {
            let build = || {
                let options = ModelOptions::default();
                build_model::<T>(spec, &options, [2, 7, 7], 4, &mut Rng::new(5)).unwrap()
            };
            let (mut fused, mut plain) = (build(), build());
            plain.set_fusion(false);
            assert!(fused.layers[1].fused_into_previous, "{spec}");
            assert!(!plain.layers[1].fused_into_previous, "{spec}");
            for &i in fused_pools {
                assert_eq!(fused.layers[i].layer.kind(), "MaxPooling");
                assert!(fused.layers[i].fused_into_previous, "{spec}: layer {i}");
                assert!(!plain.layers[i].fused_into_previous, "{spec}: layer {i}");
            }
            let mut rng = Rng::new(6);
            let values = (0..5 * 98).map(|_| T::cast(rng.normal())).collect();
            let x = Tensor::from_vec(&[5, 2, 7, 7], values).unwrap();
            let labels = [0, 3, 1, 2, 3];
            for _ in 0..2 {
                // Twice: the kept buffers must be right the second time too.
                assert_eq!(
                    fused.gradient(&x, &labels).unwrap(),
                    plain.gradient(&x, &labels).unwrap()
                );
                for (a, b) in fused.params().iter().zip(plain.params().iter()) {
                    assert_eq!(a.grad.data(), b.grad.data(), "{spec}: {}", a.name);
                }
                assert!(fused.params().iter().any(|p| p
                    .grad
                    .data()
                    .iter()
                    .any(|&g| g != T::zero())));
                let scores = fused.predict(&x, false).unwrap().clone();
                let plain_scores = plain.predict(&x, false).unwrap();
                if fused.inference_folds().is_empty() {
                    assert_eq!(&scores, plain_scores, "{spec}");
                } else {
                    // A folded batch norm changes the last bits (the next test).
                    let close = |(a, b): (&T, &T)| (*a - *b).abs() <= T::cast(1e-5);
                    assert!(scores.data().iter().zip(plain_scores.data()).all(close));
                }
            }
            // Feature maps are every layer's own output, fused or not.
            let maps = fused.layer_outputs(&x).unwrap();
            let plain_maps = plain.layer_outputs(&x).unwrap();
            for (a, b) in maps.iter().zip(&plain_maps) {
                assert_eq!(a.output, b.output, "{spec}: {}", a.name);
            }
            assert!(maps[0].output.data().iter().any(|&v| v < T::zero()));
            assert!(fused.layers[1].fused_into_previous);
        }
        let specs: [(&str, &[usize]); 7] = [
            (
                "conv(6,3,pad=1)-relu-conv(5,3,stride=2)-relu-maxpool(2)-affine(8)-relu-affine(4)",
                &[4],
            ),
            ("conv(3,2)-relu-avgpool(2)-affine(4)", &[]),
            // Overlapping, padded windows; a pooling straight after a
            // convolution (no ReLU); a second pooling, not fused.
            (
                "conv(6,3,pad=1)-relu-maxpool(3,stride=2,pad=1)-conv(4,2)-maxpool(2,stride=1)-maxpool(2,stride=1)-affine(4)",
                &[2, 4],
            ),
            // The book's 2×2 windows on an even plane, 6×6 → 3×3.
            ("conv(5,2)-relu-maxpool(2)-affine(4)", &[2]),
            // A sigmoid and a tanh fuse; a pooling after them does not.
            ("conv(4,3,pad=1)-sigmoid-avgpool(2)-conv(5,2)-tanh-maxpool(2)-affine(4)", &[]),
            // A ReLU after a batch norm (4-D and 2-D) fuses into it, and
            // so does the 2×2 pooling after it; a 3×3 one does not.
            (
                "conv(6,3,pad=1)-relu-conv(4,3,pad=1)-bn-relu-maxpool(2)-affine(8)-bn-relu-affine(4)",
                &[5],
            ),
            (
                "conv(6,3,pad=1)-relu-conv(4,3,pad=1)-bn-maxpool(2)-conv(3,3,pad=1)-bn-relu-maxpool(3,stride=2)-affine(4)",
                &[4],
            ),
        ];
        for (spec, fused_pools) in specs {
            run::<f64>(spec, fused_pools);
            run::<f32>(spec, fused_pools);
        }
        let lenet_like = build_model::<f32>(
            specs[4].0,
            &ModelOptions::default(),
            [2, 7, 7],
            4,
            &mut Rng::new(5),
        )
        .unwrap();
        let fused: Vec<bool> = lenet_like
            .layers
            .iter()
            .map(|l| l.fused_into_previous)
            .collect();
        assert_eq!(fused, [false, true, false, false, true, false, false]);
        let with_bn = build_model::<f32>(
            specs[5].0,
            &ModelOptions::default(),
            [2, 7, 7],
            4,
            &mut Rng::new(5),
        )
        .unwrap();
        let fused: Vec<bool> = with_bn
            .layers
            .iter()
            .map(|l| l.fused_into_previous)
            .collect();
        // The 2×2 pooling after the batch norm's ReLU is fused too.
        let expected = [
            false, true, false, false, true, true, false, false, true, false,
        ];
        assert_eq!(fused, expected);
    }
}
