//! Where a training step spends its time: each layer's forward and backward
//! timed separately (`convnet bench --layers`). The step is the same as
//! [`Network::gradient`]; only clocks are added between the layers. A ReLU
//! fused into the convolution before it shows 0: its time is the
//! convolution's.
//!
//! ```
//! use convnet::networks::{simple_convnet, SimpleConvNetConfig};
//! use convnet::{Rng, Tensor};
//! let mut net = simple_convnet::<f32>(&SimpleConvNetConfig::default(), &mut Rng::new(0)).unwrap();
//! let x = Tensor::zeros(&[2, 1, 28, 28]);
//! let times = net.profile(&x, &[3, 5], 2).unwrap();
//! assert_eq!(times.len(), net.layers.len() + 1); // the layers and the loss
//! ```

use super::Network;
use crate::error::Result;
use crate::tensor::{Float, Tensor};
use std::time::{Duration, Instant};

/// Time spent in one layer, summed over the profiled steps.
#[derive(Clone, Debug)]
pub struct LayerTime {
    pub name: String,
    pub kind: &'static str,
    pub forward: Duration,
    pub backward: Duration,
}

impl<T: Float> Network<T> {
    /// Runs `steps` forward+backward passes on `x` and returns the time of
    /// each layer (in order, the loss last), summed over the steps.
    pub fn profile(
        &mut self,
        x: &Tensor<T>,
        labels: &[usize],
        steps: usize,
    ) -> Result<Vec<LayerTime>> {
        let mut times: Vec<LayerTime> = self
            .layers
            .iter()
            .map(|named| LayerTime {
                name: named.name.clone(),
                kind: named.layer.kind(),
                forward: Duration::ZERO,
                backward: Duration::ZERO,
            })
            .collect();
        times.push(LayerTime {
            name: "loss".into(),
            kind: "SoftmaxWithLoss",
            forward: Duration::ZERO,
            backward: Duration::ZERO,
        });
        let loss_index = self.layers.len();
        for _ in 0..steps {
            self.check_input(x)?;
            let mut out = x;
            for (named, time) in self.layers.iter_mut().zip(&mut times) {
                if named.fused_into_previous {
                    continue;
                }
                let start = Instant::now();
                out = named.layer.forward(out, true)?;
                time.forward += start.elapsed();
            }
            let start = Instant::now();
            self.loss_layer.forward(out, labels)?;
            times[loss_index].forward += start.elapsed();

            let start = Instant::now();
            let mut dout = self.loss_layer.backward()?;
            times[loss_index].backward += start.elapsed();
            // As in `gradient`: the first layer computes no dx.
            for (i, (named, time)) in self.layers.iter_mut().zip(&mut times).enumerate().rev() {
                if named.fused_into_previous {
                    continue;
                }
                let start = Instant::now();
                if i == 0 {
                    named.layer.backward_params_only(dout)?;
                } else {
                    dout = named.layer.backward(dout)?;
                }
                time.backward += start.elapsed();
            }
        }
        Ok(times)
    }
}
