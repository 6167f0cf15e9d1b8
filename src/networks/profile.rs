//! Where a training step, or an inference, spends its time: each layer's
//! forward and backward timed separately (`convnet bench --layers`). The
//! step is the same as [`Network::gradient`], the inference the same as
//! [`Network::predict`] (in a team below one image per thread); only clocks
//! are added between the layers. An activation or max pooling fused into
//! the layer before it (a convolution or a batch norm) shows 0: its time is
//! that layer's.
//!
//! ```
//! use convnet::networks::{simple_convnet, SimpleConvNetConfig};
//! use convnet::{Rng, Tensor};
//! let mut net = simple_convnet::<f32>(&SimpleConvNetConfig::default(), &mut Rng::new(0)).unwrap();
//! let x = Tensor::zeros(&[2, 1, 28, 28]);
//! let times = net.profile(&x, &[3, 5], 2).unwrap();
//! assert_eq!(times.len(), net.layers.len() + 1); // the layers and the loss
//! let times = net.profile_inference(&x, 2).unwrap();
//! assert_eq!(times.len(), net.layers.len()); // the layers, forward only
//! assert!(!times[0].forward.is_zero() && times.iter().all(|t| t.backward.is_zero()));
//! ```

use super::{NamedLayer, Network};
use crate::error::Result;
use crate::parallel::team::with_team_if_small_batch;
use crate::tensor::{Float, Tensor};
use std::time::{Duration, Instant};

/// Time spent in one layer, summed over the profiled steps.
#[derive(Clone, Debug)]
pub struct LayerTime {
    /// The layer's name (`conv1`, `pool1`, ...).
    pub name: String,
    /// The layer's type (`"Convolution"`, `"MaxPooling"`, ...).
    pub kind: &'static str,
    /// Time in `forward`.
    pub forward: Duration,
    /// Time in `backward` (zero when only inference was profiled).
    pub backward: Duration,
}

impl<T: Float> Network<T> {
    /// One zero [`LayerTime`] per layer, in order.
    fn zero_times(&self) -> Vec<LayerTime> {
        self.layers
            .iter()
            .map(|named| LayerTime {
                name: named.name.clone(),
                kind: named.layer.kind(),
                forward: Duration::ZERO,
                backward: Duration::ZERO,
            })
            .collect()
    }

    /// Runs `steps` forward+backward passes on `x` and returns the time of
    /// each layer (in order, the loss last), summed over the steps.
    pub fn profile(
        &mut self,
        x: &Tensor<T>,
        labels: &[usize],
        steps: usize,
    ) -> Result<Vec<LayerTime>> {
        let mut times = self.zero_times();
        times.push(LayerTime {
            name: "loss".into(),
            kind: "SoftmaxWithLoss",
            forward: Duration::ZERO,
            backward: Duration::ZERO,
        });
        let loss_index = self.layers.len();
        for _ in 0..steps {
            self.check_input(x)?;
            let out = timed_forward(&mut self.layers, &mut times, x, true, false)?;
            let start = Instant::now();
            self.loss_layer.forward(out, labels)?;
            times[loss_index].forward += start.elapsed();

            let start = Instant::now();
            let dout = self.loss_layer.backward()?;
            times[loss_index].backward += start.elapsed();
            // As in `gradient`: the first layer computes no dx.
            super::fusion::backward_layers(&mut self.layers, dout, |i, time| {
                times[i].backward += time;
            })?;
        }
        Ok(times)
    }

    /// Runs `passes` inference forwards of `x` (as [`Network::predict`]
    /// with `train` false) and returns each layer's forward time, summed
    /// over the passes; `backward` stays zero.
    pub fn profile_inference(&mut self, x: &Tensor<T>, passes: usize) -> Result<Vec<LayerTime>> {
        self.check_input(x)?;
        let mut times = self.zero_times();
        let (layers, fold) = (&mut self.layers, self.fusion);
        with_team_if_small_batch(x.shape()[0], || -> Result<()> {
            for _ in 0..passes {
                timed_forward(layers, &mut times, x, false, fold)?;
            }
            Ok(())
        })?;
        Ok(times)
    }
}

/// One forward through `layers`, as `Network::predict` runs it (`fold` as
/// there), adding each layer's time to its entry of `times` (a fused or
/// folded layer is skipped: its time is the layer's before it).
fn timed_forward<'a, T: Float>(
    layers: &'a mut [NamedLayer<T>],
    times: &mut [LayerTime],
    x: &'a Tensor<T>,
    train: bool,
    fold: bool,
) -> Result<&'a Tensor<T>> {
    let (mut out, mut moments) = (x, None);
    let mut layers = layers.iter_mut().peekable();
    let mut i = 0;
    while let Some(named) = layers.next() {
        let at = i;
        i += 1;
        if named.fused_into_previous {
            continue;
        }
        let start = Instant::now();
        // Layers folded into this one (a batch norm, its ReLU, a pooling):
        // their time is this one's.
        let step = super::fusion::forward_step(named, &mut layers, out, moments, train, fold)?;
        (out, moments) = (step.out, step.moments);
        times[at].forward += start.elapsed();
        i += step.taken;
    }
    Ok(out)
}
