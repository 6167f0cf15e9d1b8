//! A copy of a network's state — every parameter and every buffer (batch
//! norm's running statistics) — kept beside it: the best epoch's weights
//! for early stopping, and the averaged weights of an [`Ema`](super::Ema).

use crate::error::{Error, Result};
use crate::kernels::vectorize::widest;
use crate::networks::Network;
use crate::parallel::ELEMENTWISE_CHUNK;
use crate::tensor::Float;
use rayon::prelude::*;

/// The values of a network's parameters and buffers, in the network's
/// order (layer by layer, parameters then buffers).
pub(crate) struct Weights<T> {
    values: Vec<Vec<T>>,
}

/// Calls `visit` on the values of every parameter and buffer of `network`,
/// in order, with its position in that order.
fn for_each_tensor<T: Float>(network: &mut Network<T>, mut visit: impl FnMut(usize, &mut [T])) {
    let mut at = 0;
    for named in network.layers.iter_mut() {
        for p in named.layer.params() {
            visit(at, p.value.data_mut());
            at += 1;
        }
        for (_, buffer) in named.layer.buffers() {
            visit(at, buffer.data_mut());
            at += 1;
        }
    }
}

impl<T: Float> Weights<T> {
    /// A copy of `network`'s current state.
    pub(crate) fn capture(network: &mut Network<T>) -> Self {
        let mut values = Vec::new();
        for_each_tensor(network, |_, t| values.push(t.to_vec()));
        Weights { values }
    }

    /// Calls `work` with each kept tensor and the network's tensor at the
    /// same place, after checking that the network has the sizes captured.
    fn zip_with(
        &mut self,
        network: &mut Network<T>,
        mut work: impl FnMut(&mut [T], &mut [T]),
    ) -> Result<()> {
        let mut sizes = Vec::with_capacity(self.values.len());
        for_each_tensor(network, |_, t| sizes.push(t.len()));
        let fits = sizes.len() == self.values.len()
            && sizes.iter().zip(&self.values).all(|(&n, v)| n == v.len());
        if !fits {
            return Err(Error::Shape(
                "the network's parameters no longer match the weights kept beside it".into(),
            ));
        }
        for_each_tensor(network, |at, t| work(&mut self.values[at], t));
        Ok(())
    }

    /// Copies the kept state into `network`.
    pub(crate) fn restore(&mut self, network: &mut Network<T>) -> Result<()> {
        self.zip_with(network, |kept, net| net.copy_from_slice(kept))
    }

    /// Exchanges the kept state with `network`'s.
    pub(crate) fn swap_with(&mut self, network: &mut Network<T>) -> Result<()> {
        self.zip_with(network, |kept, net| kept.swap_with_slice(net))
    }

    /// `kept ← keep · kept + take · network`, value by value.
    pub(crate) fn blend_towards(
        &mut self,
        network: &mut Network<T>,
        keep: T,
        take: T,
    ) -> Result<()> {
        self.zip_with(network, |kept, net| {
            kept.par_chunks_mut(ELEMENTWISE_CHUNK)
                .zip(net.par_chunks(ELEMENTWISE_CHUNK))
                .for_each(|(kept, net)| {
                    widest(
                        #[inline(always)]
                        || {
                            for (k, &now) in kept.iter_mut().zip(net.iter()) {
                                *k = keep * *k + take * now;
                            }
                        },
                    )
                })
        })
    }
}
