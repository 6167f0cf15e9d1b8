//! Layers (book ch. 5 and 7): each one a struct holding its parameters, their
//! gradients and the caches its backward pass needs, with a hand-written
//! `forward` and `backward`. There is no autograd: backpropagation is the
//! network calling `backward` on its layers in reverse order.
//!
//! Every layer keeps its output and input-gradient buffers between calls, so
//! a training step allocates nothing once the first batch has been seen.
//!
//! ```
//! use convnet::layers::{Layer, Relu};
//! use convnet::Tensor;
//! let mut relu = Relu::<f32>::new();
//! let x = Tensor::from_vec(&[1, 3], vec![-1.0, 0.5, 2.0]).unwrap();
//! assert_eq!(relu.forward(&x, true).unwrap().data(), [0.0, 0.5, 2.0]);
//! let dout = Tensor::from_vec(&[1, 3], vec![1.0, 1.0, 1.0]).unwrap();
//! assert_eq!(relu.backward(&dout).unwrap().data(), [0.0, 1.0, 1.0]);
//! ```

use crate::error::{Error, Result};
use crate::networks::spec::LayerSpec;
use crate::tensor::{Float, Tensor};

pub mod affine;
pub mod avg_pooling;
pub mod batch_norm;
pub mod convolution;
pub mod dropout;
mod elementwise;
pub mod global_avg_pooling;
pub mod lrn;
pub mod pooling;
pub mod reference;
pub mod relu;
pub mod sigmoid;
pub mod softmax_with_loss;
pub mod tanh;

pub use affine::{Affine, AffineConfig};
pub use avg_pooling::AvgPooling;
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use convolution::{Convolution, ConvolutionConfig, FusedActivation};
pub use dropout::{Dropout, DropoutConfig};
pub use global_avg_pooling::GlobalAvgPooling;
pub use lrn::{LocalResponseNorm, LrnConfig};
pub use pooling::{MaxPooling, PoolingConfig};
pub use relu::Relu;
pub use sigmoid::Sigmoid;
pub use softmax_with_loss::SoftmaxWithLoss;
pub use tanh::Tanh;

/// A learnable tensor of a layer together with its gradient.
pub struct Param<'a, T> {
    /// `"weight"` or `"bias"` (the network prefixes the layer's name).
    pub name: &'static str,
    /// The parameter itself, which the optimizer updates.
    pub value: &'a mut Tensor<T>,
    /// Its gradient ∂L/∂(value), filled by the layer's `backward`.
    pub grad: &'a mut Tensor<T>,
}

/// One layer of a network: the book's `forward`, `backward` and parameters.
///
/// A network holds its layers as `Box<dyn Layer<T>>`. Where it needs to
/// know which layer it holds (to fuse a ReLU into a convolution, see
/// [`networks::fusion`](crate::networks::fusion)), it asks with `is`,
/// `downcast_ref` and `downcast_mut` (below); a layer's author writes
/// nothing for that.
pub trait Layer<T: Float>: Send + sealed::AsAny {
    /// The layer's type, as the book names it (`"Convolution"`, `"Relu"`, ...).
    fn kind(&self) -> &'static str;

    /// The shape of the output for an input of shape `input` (batch included),
    /// or an error if the layer cannot take such an input.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// Computes the output for `x`, caching what `backward` needs.
    /// `train` is false for evaluation (it matters to dropout and batch norm).
    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>>;

    /// Given `dout = ∂L/∂out` of the last `forward`, fills the parameter
    /// gradients and returns `dx = ∂L/∂x`. An error if no forward came first
    /// or `dout` has the wrong shape.
    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>>;

    /// The learnable parameters with their gradients (none by default).
    fn params(&mut self) -> Vec<Param<'_, T>> {
        Vec::new()
    }

    /// Holds the layer's random choices (dropout's mask) fixed across
    /// training forwards while `fixed`, so that a gradient check sees one
    /// function. Layers without randomness ignore it.
    fn fix_randomness(&mut self, _fixed: bool) {}

    /// Restarts the layer's random generator from `seed` (dropout); the
    /// trainer does so every epoch, so that a resumed run draws the same
    /// masks as an uninterrupted one. Layers without randomness ignore it.
    fn reseed(&mut self, _seed: u64) {}

    /// State that is not learned by gradients but belongs in a checkpoint
    /// (batch norm's running mean and variance), by name. None by default.
    fn buffers(&mut self) -> Vec<(&'static str, &mut Tensor<T>)> {
        Vec::new()
    }

    /// Floating-point operations of one forward pass on an input of shape
    /// `input` (batch included), for `convnet summary`. A multiply-add
    /// counts as 2; an element-wise operation as 1 per element.
    fn flops(&self, input: &[usize]) -> u64 {
        input.iter().product::<usize>() as u64
    }

    /// How a [spec](crate::networks::spec) writes this layer, for
    /// [`Network::to_spec`](crate::networks::Network::to_spec): every layer
    /// of this module has one. `None` (the default) for a layer the spec
    /// grammar has no word for, such as one of your own.
    fn spec(&self) -> Option<LayerSpec> {
        None
    }
}

impl<T: Float> dyn Layer<T> {
    /// Whether this layer is an `L`.
    ///
    /// ```
    /// use convnet::layers::{Layer, Relu, Sigmoid};
    /// let layer: Box<dyn Layer<f32>> = Box::new(Relu::new());
    /// assert!(layer.is::<Relu<f32>>() && !layer.is::<Sigmoid<f32>>());
    /// ```
    pub fn is<L: Layer<T>>(&self) -> bool {
        self.as_any().is::<L>()
    }

    /// This layer as an `L`, if it is one.
    pub fn downcast_ref<L: Layer<T>>(&self) -> Option<&L> {
        self.as_any().downcast_ref()
    }

    /// This layer as an `L`, if it is one.
    pub fn downcast_mut<L: Layer<T>>(&mut self) -> Option<&mut L> {
        self.as_any_mut().downcast_mut()
    }
}

mod sealed {
    use std::any::Any;

    /// A layer seen as [`Any`], so that `dyn Layer` can be asked for its
    /// concrete type. Implemented for every type (below), so no layer
    /// implements it itself; private, so that the calls go through
    /// `downcast_ref`, never through `as_any` on a `Box` (which would
    /// give the box itself as the `Any`).
    pub trait AsAny: Any {
        fn as_any(&self) -> &dyn Any;
        fn as_any_mut(&mut self) -> &mut dyn Any;
    }

    impl<A: Any> AsAny for A {
        fn as_any(&self) -> &dyn Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }
}

/// The `[weight, bias]` parameter list of a layer that has exactly those two
/// (convolution, affine, batch norm).
pub(crate) fn weight_and_bias<'a, T>(
    weight: &'a mut Tensor<T>,
    grad_weight: &'a mut Tensor<T>,
    bias: &'a mut Tensor<T>,
    grad_bias: &'a mut Tensor<T>,
) -> Vec<Param<'a, T>> {
    vec![
        Param {
            name: "weight",
            value: weight,
            grad: grad_weight,
        },
        Param {
            name: "bias",
            value: bias,
            grad: grad_bias,
        },
    ]
}

/// Checks that `dout` has the shape of the cached output; used by every
/// layer's `backward`.
pub(crate) fn check_dout<T: Float>(
    kind: &'static str,
    out_shape: Option<&[usize]>,
    dout: &Tensor<T>,
) -> Result<()> {
    match out_shape {
        None => Err(Error::BackwardBeforeForward(kind)),
        Some(shape) if shape != dout.shape() => Err(Error::Shape(format!(
            "{kind}: dout has shape {:?}, the forward output had {shape:?}",
            dout.shape()
        ))),
        Some(_) => Ok(()),
    }
}
