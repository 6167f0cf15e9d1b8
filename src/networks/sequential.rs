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

use crate::error::{Error, Result};
use crate::layers::{Layer, Param, SoftmaxWithLoss};
use crate::tensor::{Float, Tensor};

/// A layer with its name in the network.
pub struct NamedLayer<T> {
    pub name: String,
    pub layer: Box<dyn Layer<T>>,
}

/// One layer's output for an input, as [`Network::layer_outputs`] gives it.
#[derive(Clone, Debug)]
pub struct LayerOutput<T> {
    /// The layer's name (`conv1`, `pool1`, ...).
    pub name: String,
    /// The layer's type (`"Convolution"`, `"MaxPooling"`, ...).
    pub kind: &'static str,
    pub output: Tensor<T>,
}

/// A sequential classifier.
pub struct Network<T> {
    /// One input image: (C, H, W).
    pub input_shape: [usize; 3],
    pub layers: Vec<NamedLayer<T>>,
    pub loss_layer: SoftmaxWithLoss<T>,
}

/// Runs `x` through `layers` in order; each layer's output feeds the next.
fn forward_layers<'a, T: Float>(
    layers: &'a mut [NamedLayer<T>],
    x: &'a Tensor<T>,
    train: bool,
) -> Result<&'a Tensor<T>> {
    let mut out = x;
    for named in layers.iter_mut() {
        out = named.layer.forward(out, train)?;
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
        });
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

    /// Class scores for `x: (N, C, H, W)`; `train` switches dropout and batch norm.
    pub fn predict<'a>(&'a mut self, x: &'a Tensor<T>, train: bool) -> Result<&'a Tensor<T>> {
        self.check_input(x)?;
        forward_layers(&mut self.layers, x, train)
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

    /// The mean cross-entropy loss of `x` against `labels`.
    pub fn loss(&mut self, x: &Tensor<T>, labels: &[usize], train: bool) -> Result<T> {
        self.check_input(x)?;
        let scores = forward_layers(&mut self.layers, x, train)?;
        self.loss_layer.forward(scores, labels)
    }

    /// Forward and backward in training mode: fills every parameter's
    /// gradient and returns the loss.
    pub fn gradient(&mut self, x: &Tensor<T>, labels: &[usize]) -> Result<T> {
        let loss = self.loss(x, labels, true)?;
        let mut dout = self.loss_layer.backward()?;
        // The first layer's dx would be the gradient of the images: skip it.
        let Some((first, rest)) = self.layers.split_first_mut() else {
            return Ok(loss);
        };
        for named in rest.iter_mut().rev() {
            dout = named.layer.backward(dout)?;
        }
        first.layer.backward_params_only(dout)?;
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
            for named in net.layers.iter_mut().rev() {
                dout = named.layer.backward(dout).unwrap();
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
}
