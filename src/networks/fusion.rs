//! The places where the network runs its layers differently from the
//! book, and the rules for when it does. Every layer keeps the book's
//! interface ([`Layer`]: forward, backward, params; only a batch norm
//! that borrows its input, below, needs that input in backward); what is
//! here is the network's business, decided by looking at which layers it
//! holds.
//!
//! **Fusion.** An activation (ReLU, sigmoid, tanh) straight after a
//! [`Convolution`], and a [`MaxPooling`] after the convolution or its
//! ReLU, are run by the convolution itself; a ReLU straight after a
//! [`BatchNorm`], and a 2×2 max pooling after a batch norm straight after
//! a convolution, by the batch norm:
//!
//! ```text
//! layers:    conv1 → relu1 → pool1 → …          (what the network holds, as in the book)
//! runs:      conv1 (+ relu1, + pool1) → …       relu1 and pool1 are marked fused_into_previous
//! ```
//!
//! The convolution applies the activation and the pooling to each image's
//! output while it is still in the core's cache ([`Convolution::fuse_activation`],
//! [`Convolution::fuse_max_pool`]), and backward takes the pooled `dout`;
//! the fused layers are skipped by [`Network::predict`] and
//! [`Network::gradient`]. The numbers are the same to the bit; what is saved
//! is several passes over the largest tensors of the network. The rules,
//! applied as each layer is pushed (`fuse_at` below):
//!
//! - a `Relu`, `Sigmoid` or `Tanh` fuses into a `Convolution` straight
//!   before it (LeNet-5's sigmoids too);
//! - a `MaxPooling` fuses into a `Convolution` straight before it, or before
//!   the ReLU fused into it (not after a sigmoid or tanh, whose backward
//!   through overlapping windows would differ from the unfused layers' in
//!   rounding);
//! - a `Relu` fuses into a `BatchNorm` straight before it
//!   ([`BatchNorm::fuse_relu`]: `conv → bn → relu`, the usual order, writes
//!   the normalised and rectified output in one pass, and its backward
//!   needs no ReLU pass either);
//! - a `MaxPooling` of the book's 2×2 windows fuses into a `BatchNorm`
//!   straight after a convolution, straight before it or before the ReLU
//!   fused into it ([`BatchNorm::fuse_max_pool`]: `conv → bn → relu →
//!   maxpool` writes only the pooled output, and its backward reads the
//!   pooled `dout`);
//! - nothing else fuses (an `AvgPooling`, an activation after an `Affine`,
//!   a sigmoid or tanh after a batch norm, other windows after a batch
//!   norm, a second pooling, the
//!   [reference layers](crate::layers::reference)).
//!
//! **Folding, at inference.** A [`BatchNorm`] straight after a
//! [`Convolution`] with nothing fused into it is, at inference, a fixed
//! map per channel (`scale · y + shift`, from its running statistics),
//! which the convolution folds into its filters for that forward
//! ([`Convolution::forward_folded`]), with the batch norm's fused ReLU:
//!
//! ```text
//! layers:    conv2 → bn2 (+ relu2) → …
//! inference: conv2 with W' = scale·W, b' = scale·b + shift (+ relu2) → …    bn2 does not run
//! ```
//!
//! A max pooling right after the batch norm (or its ReLU) then runs inside
//! the convolution as well, as a fused one does.
//!
//! This one changes the numbers in the last bits (the products are of the
//! scaled filters), unlike the fusions above; training is unchanged. Like
//! them it goes with [`Network::set_fusion`].
//!
//! [`Network::set_fusion`] turns it off, and the layers run one by one.
//!
//! **A batch norm's input, in training.** A [`BatchNorm`] straight after a
//! [`Convolution`] keeps no x̂ ([`BatchNorm::borrow_input`]): its backward
//! recomputes x̂ from its input, the convolution's output, which stays in
//! the convolution until its next forward and which the network passes
//! (`backward_step` below). A forward writes one tensor instead of two; the
//! numbers are the same to the bit. And the convolution takes each output
//! plane's sums as soon as it has written an image's planes
//! ([`Convolution::take_plane_moments`]), which the network hands to the
//! batch norm (`forward_step`): the batch norm's first pass over its input,
//! the statistics, is done while the image is in the core's cache, by the
//! same function on the same values.
//! This goes with the fusions, as they are pushed and with
//! [`Network::set_fusion`].
//!
//! **The first layer's `dx`.** Backward through the first layer would end
//! with the gradient of the images, which nobody uses. A first
//! `Convolution` or `Affine` skips it (their `backward_params_only`), a
//! third of its backward work; any other layer runs its whole backward.
//!
//! The network holds its layers as `Box<dyn Layer<T>>`; these rules ask
//! for the concrete type (`layer.downcast_mut::<Convolution<T>>()`, see
//! [`Layer`]) and call that layer's own methods.

use super::{NamedLayer, Network};
use crate::error::Result;
use crate::layers::{
    Affine, BatchNorm, Convolution, FusedActivation, Layer, MaxPooling, PoolingConfig, Relu,
    Sigmoid, Tanh,
};
use crate::tensor::{Float, Tensor};
use std::iter::Peekable;
use std::time::{Duration, Instant};

/// A layer that can be fused into the convolution before it.
enum Fusable {
    Activation(FusedActivation),
    MaxPool(PoolingConfig),
}

impl Fusable {
    fn of<T: Float>(layer: &dyn Layer<T>) -> Option<Self> {
        if layer.is::<Relu<T>>() {
            return Some(Fusable::Activation(FusedActivation::Relu));
        }
        if layer.is::<Sigmoid<T>>() {
            return Some(Fusable::Activation(FusedActivation::Sigmoid));
        }
        if layer.is::<Tanh<T>>() {
            return Some(Fusable::Activation(FusedActivation::Tanh));
        }
        let pool = layer.downcast_ref::<MaxPooling<T>>()?;
        Some(Fusable::MaxPool(pool.config.clone()))
    }
}

/// Fuses layer `i` into the convolution or batch norm that runs before it
/// (`on`), or undoes that (`!on`), if the rules of the module
/// documentation allow it; otherwise leaves both alone. A batch norm
/// itself (layer `i`) borrows its input from a convolution straight before
/// it, and that convolution takes its planes' sums.
///
/// A pooling is fused into the layer that its ReLU is fused into, so
/// fusing goes front to back and unfusing back to front
/// ([`Network::set_fusion`]).
pub(super) fn fuse_at<T: Float>(layers: &mut [NamedLayer<T>], i: usize, on: bool) {
    let after_conv = i > 0 && layers[i - 1].layer.is::<Convolution<T>>();
    if let Some(bn) = layers[i].layer.downcast_mut::<BatchNorm<T>>() {
        bn.borrow_input(on && after_conv);
        if let Some(conv) = after_conv
            .then(|| layers[i - 1].layer.downcast_mut::<Convolution<T>>())
            .flatten()
        {
            conv.take_plane_moments(on);
        }
        return;
    }
    let Some(fusable) = Fusable::of(&*layers[i].layer) else {
        return;
    };
    // The nearest layer before `i` that runs.
    let Some(j) = (0..i).rev().find(|&j| !layers[j].fused_into_previous) else {
        return;
    };
    // Only fused ReLUs may lie between, and only before a pooling.
    let between = &layers[j + 1..i];
    let allowed = match fusable {
        Fusable::Activation(_) => between.is_empty(),
        Fusable::MaxPool(_) => between.iter().all(|l| l.layer.is::<Relu<T>>()),
    };
    if !allowed {
        return;
    }
    if let Some(bn) = layers[j].layer.downcast_mut::<BatchNorm<T>>() {
        match &fusable {
            Fusable::Activation(FusedActivation::Relu) => {
                bn.fuse_relu(on);
                layers[i].fused_into_previous = on;
            }
            // The book's 2×2 windows (which need maps of 2×2 or more), after
            // a batch norm that borrows its input; unfused whatever it is.
            Fusable::MaxPool(config) if !on || (bn.input_borrowed() && pools_2x2(config)) => {
                bn.fuse_max_pool(on.then_some(config));
                layers[i].fused_into_previous = on;
            }
            _ => {}
        }
        return;
    }
    let Some(conv) = layers[j].layer.downcast_mut::<Convolution<T>>() else {
        return;
    };
    match &fusable {
        Fusable::Activation(act) => conv.fuse_activation(on.then_some(*act)),
        Fusable::MaxPool(config) => conv.fuse_max_pool(on.then_some(config)),
    }
    layers[i].fused_into_previous = on;
}

/// Whether `config` is the book's window: 2×2, stride 2, no padding.
fn pools_2x2(config: &PoolingConfig) -> bool {
    (config.size, config.stride, config.pad) == (2, 2, 0)
}

/// Whether an inference forward folds `next` into `layer` (see the module
/// documentation): a batch norm after a convolution with nothing fused.
pub(super) fn folds<T: Float>(layer: &dyn Layer<T>, next: &dyn Layer<T>) -> bool {
    let conv = layer.downcast_ref::<Convolution<T>>();
    conv.is_some_and(|conv| conv.can_fold()) && next.is::<BatchNorm<T>>()
}

/// What one step of a forward gives: the output, the output planes' sums
/// if a convolution took them for the batch norm after it, and how many
/// layers after the step's own it took.
pub(super) struct Step<'a, T> {
    pub out: &'a Tensor<T>,
    pub moments: Option<&'a [(T, T)]>,
    pub taken: usize,
}

/// One step of a forward, from `named`, a layer that runs: its own
/// forward (a batch norm given `moments`, its input's planes' sums, which
/// the convolution before it took); or, at inference with `fold` where
/// [`folds`] says so, the convolution with the batch norm after it folded
/// in, taking from `rest` that batch norm, the ReLU fused into it and a
/// max pooling after them (which then runs inside the convolution too).
pub(super) fn forward_step<'a, 'b, T: Float + 'b>(
    named: &'a mut NamedLayer<T>,
    rest: &mut Peekable<impl Iterator<Item = &'b mut NamedLayer<T>>>,
    x: &Tensor<T>,
    moments: Option<&[(T, T)]>,
    train: bool,
    fold: bool,
) -> Result<Step<'a, T>> {
    let Some(bn) = rest.next_if(|next| fold && !train && folds(&*named.layer, &*next.layer)) else {
        return own_step(named, x, moments, train);
    };
    let relu = rest.next_if(|relu| relu.fused_into_previous && relu.layer.is::<Relu<T>>());
    let pool = rest.next_if(|pool| pool.layer.is::<MaxPooling<T>>());
    let taken = 1 + usize::from(relu.is_some()) + usize::from(pool.is_some());
    let bn = bn.layer.downcast_ref::<BatchNorm<T>>();
    let (Some(conv), Some(bn)) = (named.layer.downcast_mut::<Convolution<T>>(), bn) else {
        unreachable!("`folds` said a convolution and a batch norm");
    };
    let (scale, shift) = bn.inference_scale_shift();
    let pool = pool.and_then(|p| p.layer.downcast_ref::<MaxPooling<T>>());
    let pool = pool.map(|p| &p.config);
    let out = conv.forward_folded(x, &scale, &shift, bn.relu_fused(), pool)?;
    Ok(Step {
        out,
        moments: None,
        taken,
    })
}

/// A layer's own forward within the network: a convolution's with its
/// planes' sums ([`Convolution::take_plane_moments`]), a batch norm's with
/// them when given, any other layer's plain.
fn own_step<'a, T: Float>(
    named: &'a mut NamedLayer<T>,
    x: &Tensor<T>,
    moments: Option<&[(T, T)]>,
    train: bool,
) -> Result<Step<'a, T>> {
    let step = |out, moments| Step {
        out,
        moments,
        taken: 0,
    };
    // (The type is asked first, then the layer borrowed for the result:
    // a borrow returned from inside `if let` would outlive the branch.)
    if named.layer.is::<Convolution<T>>() {
        let conv = named.layer.downcast_mut::<Convolution<T>>();
        let (out, moments) = conv.expect("checked").forward_plane_moments(x, train)?;
        return Ok(step(out, moments));
    }
    if let (true, Some(moments)) = (named.layer.is::<BatchNorm<T>>(), moments) {
        let bn = named.layer.downcast_mut::<BatchNorm<T>>().expect("checked");
        return Ok(step(
            bn.forward_with_block_moments(x, train, moments)?,
            None,
        ));
    }
    Ok(step(named.layer.forward(x, train)?, None))
}

/// The backward of `named`, a layer that runs and not the first, with
/// `before` the layers before it: its own, or for a batch norm that
/// borrows its input, with the input from the convolution before it.
pub(super) fn backward_step<'a, T: Float>(
    named: &'a mut NamedLayer<T>,
    before: &[NamedLayer<T>],
    dout: &Tensor<T>,
) -> Result<&'a Tensor<T>> {
    let borrows = named
        .layer
        .downcast_ref::<BatchNorm<T>>()
        .is_some_and(|bn| bn.input_borrowed());
    let conv = before
        .last()
        .and_then(|p| p.layer.downcast_ref::<Convolution<T>>());
    match (borrows, conv) {
        (true, Some(conv)) => {
            let bn = named.layer.downcast_mut::<BatchNorm<T>>();
            bn.expect("checked above")
                .backward_with_input(conv.output(), dout)
        }
        _ => named.layer.backward(dout),
    }
}

/// Backward through `layers` from the loss's `dout`, last layer first:
/// each layer that runs by [`backward_step`], the first by
/// [`backward_params_only`]; `done(i, time)` after layer `i`'s, with the
/// time it took.
pub(super) fn backward_layers<'a, T: Float>(
    mut layers: &'a mut [NamedLayer<T>],
    mut dout: &'a Tensor<T>,
    mut done: impl FnMut(usize, Duration),
) -> Result<()> {
    // Each step splits off the last layer, so that it can be run while the
    // layers before it are read (a borrowing batch norm's input).
    while let Some((named, before)) = std::mem::take(&mut layers).split_last_mut() {
        // A fused layer's backward runs inside the layer before it.
        if !named.fused_into_previous {
            let start = Instant::now();
            if before.is_empty() {
                // The first layer's dx would be the gradient of the
                // images: skip it.
                backward_params_only(&mut *named.layer, dout)?;
            } else {
                dout = backward_step(named, before, dout)?;
            }
            done(before.len(), start.elapsed());
        }
        layers = before;
    }
    Ok(())
}

/// The first layer's backward: the parameter gradients, and no `dx` where
/// the layer can skip it (see the module documentation).
pub(super) fn backward_params_only<T: Float>(
    layer: &mut dyn Layer<T>,
    dout: &Tensor<T>,
) -> Result<()> {
    if let Some(conv) = layer.downcast_mut::<Convolution<T>>() {
        return conv.backward_params_only(dout);
    }
    if let Some(affine) = layer.downcast_mut::<Affine<T>>() {
        return affine.backward_params_only(dout);
    }
    layer.backward(dout).map(|_| ())
}

impl<T: Float> Network<T> {
    /// Turns the fusions on or off (they are on for a new network): each
    /// activation and max pooling into the convolution or batch norm
    /// before it, a batch norm's borrowed input and the sums its
    /// convolution takes for it (see [`fusion`](self)). Off, every layer
    /// runs on its own, as in the book; the results are the same either
    /// way (see [`fusion`](self)).
    pub fn set_fusion(&mut self, on: bool) {
        self.fusion = on;
        if on {
            (0..self.layers.len()).for_each(|i| fuse_at(&mut self.layers, i, true));
        } else {
            (0..self.layers.len())
                .rev()
                .for_each(|i| fuse_at(&mut self.layers, i, false));
        }
    }
}
