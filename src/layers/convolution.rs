//! Convolution layer (book §7.4, `common/layers.py: Convolution`).
//!
//! Read `layers/reference/convolution.rs` ([`reference::Convolution`](super::reference::Convolution))
//! next to the book; this file is the same math made fast. What the fast
//! path adds:
//!
//! - each image's `col` is the transpose of the book's rows and unrolled on
//!   a *wide* grid over the padded image, so that the product needs no
//!   transpose and each row of `col` is one contiguous copy;
//! - the batch runs image by image on every thread, in buffers that stay
//!   in the core's cache; backward unrolls each image again from the kept
//!   padded input instead of keeping the whole batch's `col`;
//! - backward sums `dW` and `db` in a fixed number of chunks, added in
//!   order, so the gradients do not depend on the number of threads; for
//!   stride 1, `dW` comes from a channels-last copy of the image
//!   (`convolution/weight_grad.rs`);
//! - a ReLU, sigmoid or tanh and a max pooling after the layer can run
//!   inside it (`networks/fusion.rs`, `convolution/fused_pool.rs`);
//! - one image (inference at batch 1) is shared between two threads
//!   (`convolution/bands.rs`);
//! - at inference, a filter as large as its input (LeNet-5's C5, a 1×1
//!   output) multiplies all the images at once, like an affine layer, and
//!   one image by dot products (`convolution/grouped.rs`).
//!
//! The rest of this page explains each of these.
//!
//! ```text
//! x:   (N, C, H, W)          W: (FN, C, FH, FW)       b: (FN)
//! out: (N, FN, OH, OW)       OH = (H + 2P − FH)/S + 1, OW likewise
//!
//! out[n, f, oy, ox] = b[f] + Σ_{c, fy, fx} W[f, c, fy, fx] · x_pad[n, c, oy·S + fy, ox·S + fx]
//! ```
//!
//! As in the book, the input is unrolled by im2col so that the whole
//! convolution is one matrix product per image. Each image's `col` is kept
//! as the transpose of the book's rows, `(C·FH·FW, pixels)`, so that the
//! product is already in NCHW order (the book needs a transpose):
//!
//! ```text
//! col_n: (C·FH·FW, pixels)          W viewed as (FN, C·FH·FW)
//! out_n = W · col_n + b             (FN, pixels)
//!
//! backward, for dout_n: (FN, pixels)
//! dW     = Σ_n dout_n · col_n^T     (FN, C·FH·FW)
//! db     = Σ_n Σ_pixels dout_n      (FN)
//! dcol_n = W^T · dout_n             (C·FH·FW, pixels)  →  dx_n = col2im(dcol_n)
//! ```
//!
//! The unrolling is [`im2col_wide`](crate::kernels::im2col_wide): the image is padded
//! first and, for stride 1, the pixels run over a grid as wide as the padded
//! row (OH × (W + 2P)), so that each row of `col` is one contiguous copy
//! instead of one short copy per output row. The few junk columns this adds
//! are dropped from the output ([`narrow`](crate::kernels::im2col_wide::narrow)) and
//! are zero in `dout` ([`widen`](crate::kernels::im2col_wide::widen)), so they change
//! nothing.
//!
//! Backward splits the batch into a fixed number of chunks of nearly equal
//! size that run in parallel (`convolution/chunks.rs`); each chunk sums its
//! own `dW`, `db` and the chunks are added in order, so the result does not
//! depend on the number of threads.
//!
//! Unlike the book, backward does not keep every image's `col` from forward:
//! for a 3×3 filter `col` is 9× the input (45 MB for a batch of 100 in
//! `deep`'s second layer). The layer keeps the padded input `xpad` instead
//! (forward pads each image straight into it, so keeping the input costs no
//! copy) and unrolls each image again in backward, into one `col` per thread
//! that stays in the core's cache (the other buffers are reused the same
//! way). Unrolling again costs little next to the products, and saves
//! keeping the largest tensors of the network.
//!
//! An activation (ReLU, sigmoid, tanh) and a max pooling after the layer
//! can be fused into it (see [`Convolution::fuse_activation`],
//! [`Convolution::fuse_max_pool`]): it then applies them to each image's
//! output while that is still in the core's cache.
//!
//! Beside this file: `convolution/forward.rs` and `convolution/backward.rs`
//! (the two passes, image by image), `convolution/chunks.rs` (backward's
//! chunks of the batch), `convolution/fused_pool.rs` (the fused
//! max pooling), `convolution/bands.rs` (one image on the two threads of a
//! [`Team`](crate::parallel::team::Team), at batch 1) and `convolution/scratch.rs`
//! (the per-thread buffers).
//!
//! ```
//! use convnet::layers::{Convolution, ConvolutionConfig, Layer};
//! use convnet::{Rng, Tensor};
//! let config = ConvolutionConfig { in_channels: 1, filters: 30, filter_size: 5, ..Default::default() };
//! let mut conv = Convolution::<f32>::new(&config, &mut Rng::new(0)).unwrap();
//! let x = Tensor::zeros(&[2, 1, 28, 28]);
//! assert_eq!(conv.forward(&x, true).unwrap().shape(), &[2, 30, 24, 24]);
//! ```

use super::pooling::PoolingConfig;
use super::{weight_and_bias, Layer, Param};
use crate::error::{Error, Result};
use crate::init::Init;
use crate::kernels::im2col::ConvGeometry;
use crate::networks::spec::LayerSpec;
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};
use fused_pool::FusedPool;
use scratch::Scratch;
use std::sync::Mutex;

/// An activation layer that a [`Convolution`] can apply to its own output
/// ([`Convolution::fuse_activation`]), with the same formulas, forward and
/// backward, as the layer it replaces ([`Relu`](super::Relu),
/// [`Sigmoid`](super::Sigmoid), [`Tanh`](super::Tanh)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedActivation {
    /// max(0, z), as [`Relu`](super::Relu).
    Relu,
    /// 1 / (1 + e^−z), as [`Sigmoid`](super::Sigmoid).
    Sigmoid,
    /// tanh z, as [`Tanh`](super::Tanh).
    Tanh,
}

impl FusedActivation {
    /// ∂L/∂z from the output `y` = act(z) and `g` = ∂L/∂y, as the layer's
    /// backward computes it.
    #[inline(always)]
    pub fn backward<T: Float>(self, y: T, g: T) -> T {
        match self {
            FusedActivation::Relu => super::relu::relu_backward(y, g),
            FusedActivation::Sigmoid => g * y * (T::one() - y),
            FusedActivation::Tanh => g * (T::one() - y * y),
        }
    }
}

/// Evaluates `$body` with `$act` bound to the fused activation's function
/// (the identity for none), so that each activation gets its own
/// compiled loop rather than a branch per value.
macro_rules! with_activation {
    ($fused:expr, $t:ty, |$act:ident| $body:expr) => {
        match $fused {
            None => {
                let $act = |v: $t| v;
                $body
            }
            Some($crate::layers::convolution::FusedActivation::Relu) => {
                let $act = $crate::layers::relu::relu::<$t>;
                $body
            }
            Some($crate::layers::convolution::FusedActivation::Sigmoid) => {
                let $act = <$t as $crate::tensor::Float>::sigmoid;
                $body
            }
            Some($crate::layers::convolution::FusedActivation::Tanh) => {
                let $act = <$t as $crate::tensor::Float>::tanh_fast;
                $body
            }
        }
    };
}

/// The sum of a slice with eight running sums, which the compiler can keep
/// in one vector register (a single running sum forces one add at a time).
/// The order is fixed, so the result is too, whatever vectors run it.
#[inline(always)]
pub(crate) fn sum<T: Float>(values: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    let rest: T = chunks.remainder().iter().copied().sum();
    lanes.iter().copied().sum::<T>() + rest
}

/// Hyper-parameters of a [`Convolution`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvolutionConfig {
    /// C, the input's channels (each filter's depth).
    pub in_channels: usize,
    /// FN, the number of filters (output channels).
    pub filters: usize,
    /// FH = FW.
    pub filter_size: usize,
    /// Stride S.
    pub stride: usize,
    /// Padding P: zeros on each side of the input.
    pub pad: usize,
    /// How the filters are drawn (book §6.2).
    pub init: Init,
}

impl Default for ConvolutionConfig {
    fn default() -> Self {
        ConvolutionConfig {
            in_channels: 1,
            filters: 30,
            filter_size: 5,
            stride: 1,
            pad: 0,
            init: Init::default(),
        }
    }
}

/// A forward's output, and its planes' sums if the forward took them
/// ([`Convolution::forward_plane_moments`]).
pub type OutputAndMoments<'a, T> = (&'a Tensor<T>, Option<&'a [(T, T)]>);

/// A 2-D convolution with one bias per filter.
pub struct Convolution<T> {
    /// W: (FN, C, FH, FW)
    pub weight: Tensor<T>,
    /// b: (FN)
    pub bias: Tensor<T>,
    /// ∂L/∂W: (FN, C, FH, FW), filled by `backward`.
    pub grad_weight: Tensor<T>,
    /// ∂L/∂b: (FN), filled by `backward`.
    pub grad_bias: Tensor<T>,
    /// Stride S.
    pub stride: usize,
    /// Padding P: zeros on each side of the input.
    pub pad: usize,
    /// The activation after it that the layer applies (see
    /// [`Convolution::fuse_activation`]): then `out` is `act(conv(x))`, and
    /// backward first passes `dout` through the activation's backward.
    fused_activation: Option<FusedActivation>,
    /// The max pooling after it that the layer applies (see
    /// [`Convolution::fuse_max_pool`] and `convolution/fused_pool.rs`): then `out`
    /// is the pooled output, and backward takes its `dout`.
    fused_pool: Option<PoolingConfig>,
    /// The fused pooling's window over the last forward's output planes.
    pool: Option<FusedPool>,
    /// Whether a training forward with nothing fused also takes each output
    /// plane's sums for the batch norm after it (see
    /// [`take_plane_moments`](Self::take_plane_moments)).
    plane_moments_on: bool,
    /// The last forward's plane sums, (N, FN), if it took them.
    plane_moments: Option<Vec<(T, T)>>,
    // Caches from forward for backward.
    /// Geometry and batch size of the last training forward; `None` before
    /// one (an inference forward keeps nothing for backward).
    geometry: Option<(ConvGeometry, usize)>,
    /// xpad: (N, C, HP, WP), the input of the last training forward, padded:
    /// forward pads each image here and unrolls it from here, so keeping
    /// the input costs no copy of its own, and backward unrolls it again
    /// without padding it again.
    xpad: Vec<T>,
    // Buffers kept across iterations.
    /// One set of one-image buffers per pool thread (see [`scratch::thread_scratch`]).
    scratch: Vec<Mutex<Scratch<T>>>,
    out: Tensor<T>,
    dx: Tensor<T>,
    /// Per-chunk partial sums of dW^T and db: (chunks, C·FH·FW·FN + FN).
    partial_grads: Vec<T>,
    /// With a fused pooling: for every pooled output, the index within its
    /// plane of the window's maximum, (N, FN, POH, POW).
    arg_max: Vec<u32>,
    /// With a fused pooling at batch 1 in a team: one image's output planes
    /// before pooling, (FN, OH, OW).
    team_planes: Vec<T>,
    /// The weights transformed for the Winograd route (`winograd.rs`),
    /// (36, FN, C), remade by a forward that takes it when the weights
    /// have changed.
    winograd_weights: winograd::TransformedWeights<T>,
    /// The turned filters transformed for backward's `dx` by the same
    /// route, (36, C, FN).
    winograd_dx_weights: Vec<T>,
}

impl<T: Float> Convolution<T> {
    /// A layer with weights drawn by `config.init` (fan-in C·FH·FW) and zero
    /// biases; an error if a size is 0.
    pub fn new(config: &ConvolutionConfig, rng: &mut Rng) -> Result<Self> {
        let (c, f, k) = (config.in_channels, config.filters, config.filter_size);
        if c == 0 || f == 0 || k == 0 {
            return Err(Error::Config(format!(
                "Convolution needs at least 1 input channel, filter and filter size (got {c}, {f}, {k})"
            )));
        }
        let weight = config.init.tensor(&[f, c, k, k], c * k * k, f * k * k, rng);
        Self::from_params(weight, Tensor::zeros(&[f]), config.stride, config.pad)
    }

    /// A layer with the given weights `(FN, C, FH, FW)` and biases `(FN)`.
    pub fn from_params(
        weight: Tensor<T>,
        bias: Tensor<T>,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (filters, ..) = weight.dims4()?;
        if bias.shape() != [filters] {
            return Err(Error::Shape(format!(
                "Convolution: bias shape {:?} does not match {filters} filters",
                bias.shape()
            )));
        }
        if stride == 0 {
            return Err(Error::Geometry(
                "Convolution: stride must be at least 1".into(),
            ));
        }
        Ok(Convolution {
            grad_weight: Tensor::zeros(weight.shape()),
            grad_bias: Tensor::zeros(bias.shape()),
            weight,
            bias,
            stride,
            pad,
            fused_activation: None,
            fused_pool: None,
            pool: None,
            plane_moments_on: false,
            plane_moments: None,
            geometry: None,
            xpad: Vec::new(),
            scratch: Vec::new(),
            out: Tensor::default(),
            dx: Tensor::default(),
            partial_grads: Vec::new(),
            arg_max: Vec::new(),
            team_planes: Vec::new(),
            winograd_weights: Default::default(),
            winograd_dx_weights: Vec::new(),
        })
    }

    /// Like [`backward`](Layer::backward), but only the parameter
    /// gradients: the network calls this on its first layer, whose `dx`
    /// (the gradient of the images) nobody uses, and saves a third of the
    /// backward work.
    pub fn backward_params_only(&mut self, dout: &Tensor<T>) -> Result<()> {
        self.backward_impl(dout, false)
    }

    /// With `fuse` true, the layer applies the ReLU that follows it to its
    /// own output, and passes its `dout` through that ReLU's backward
    /// first, so that the network can skip the ReLU layer (which would
    /// otherwise read and write the whole output twice for one comparison
    /// per value). `false` turns it off again. The network decides when
    /// (`networks/fusion.rs`).
    ///
    /// `fuse_relu(false)` turns off whatever activation is fused, a sigmoid
    /// or tanh too.
    pub fn fuse_relu(&mut self, fuse: bool) {
        self.fuse_activation(fuse.then_some(FusedActivation::Relu));
    }

    /// [`fuse_relu`](Self::fuse_relu) for any [`FusedActivation`]: the
    /// layer applies it to its own output and passes `dout` through its
    /// backward first (`None` turns it off). A fused max pooling then pools
    /// the activated output; its backward is the unfused layers' to the bit
    /// for a ReLU, and to rounding for the others where pooling windows
    /// overlap (an input under two windows gets `act'·g₁ + act'·g₂` rather
    /// than `act'·(g₁ + g₂)`).
    pub fn fuse_activation(&mut self, activation: Option<FusedActivation>) {
        self.fused_activation = activation;
        // A forward made before the change would be backpropagated wrongly.
        self.geometry = None;
    }

    /// The activation fused into the layer, if any.
    pub fn fused_activation(&self) -> Option<FusedActivation> {
        self.fused_activation
    }

    /// With `pool` given, the layer applies that max pooling to its own
    /// output (after its fused ReLU, if any) and takes the pooled output's
    /// `dout` in backward, so that the network can skip the pooling layer:
    /// the full-size output then never leaves the core's cache
    /// (`convolution/fused_pool.rs`). `None` turns it off again.
    pub fn fuse_max_pool(&mut self, pool: Option<&PoolingConfig>) {
        self.fused_pool = pool.cloned();
        self.geometry = None;
    }

    /// Whether an inference forward may fold a per-filter map that follows
    /// the layer into its weights ([`forward_folded`](Self::forward_folded)):
    /// only with nothing fused into it, since an activation or a pooling
    /// between the two would not commute with the map.
    pub fn can_fold(&self) -> bool {
        self.fused_activation.is_none() && self.fused_pool.is_none()
    }

    /// The output of the last forward (empty before any): what a batch
    /// norm after this layer borrows as its input (`networks/fusion.rs`).
    pub fn output(&self) -> &Tensor<T> {
        &self.out
    }

    /// With `on`, a training forward with no pooling fused into the layer
    /// (and not shared by a team, at batch 1) also takes each output
    /// plane's [`block_moments`] (its sum and squared deviations) as soon
    /// as it has written an image's planes, while they are in the core's
    /// cache: the first pass of the batch norm after it, which then need
    /// not read the output again
    /// ([`forward_plane_moments`](Self::forward_plane_moments)). The network
    /// turns it on for a convolution with a batch norm straight after it
    /// (`networks/fusion.rs`).
    ///
    /// [`block_moments`]: crate::kernels::bn_sums::block_moments
    pub fn take_plane_moments(&mut self, on: bool) {
        self.plane_moments_on = on;
        self.plane_moments = None;
    }

    /// A forward, and the sums of each output plane if it took them (see
    /// [`take_plane_moments`](Self::take_plane_moments)): `(N, FN)` pairs,
    /// image by image, `None` if this forward did not take them.
    pub fn forward_plane_moments(
        &mut self,
        x: &Tensor<T>,
        train: bool,
    ) -> Result<OutputAndMoments<'_, T>> {
        self.forward_impl(x, train)?;
        Ok((&self.out, self.plane_moments.as_deref()))
    }

    /// An inference forward of `x` followed by `y ← scale[f] · y + shift[f]`
    /// for each filter `f`, then a ReLU when `relu` and the max pooling
    /// `pool` when given, as one convolution with scaled filters (the ReLU
    /// and the pooling fused as [`fuse_activation`](Self::fuse_activation)
    /// and [`fuse_max_pool`](Self::fuse_max_pool) fuse them):
    ///
    /// ```text
    /// W'[f] = scale[f] · W[f]        b'[f] = scale[f] · b[f] + shift[f]
    /// out   = relu(W' ⋆ x + b')      the same as relu(scale · (W ⋆ x + b) + shift) to rounding
    /// ```
    ///
    /// A batch norm after the layer is such a map at inference
    /// ([`BatchNorm::inference_scale_shift`](crate::layers::BatchNorm::inference_scale_shift)):
    /// the network folds it in and skips its pass over the output
    /// (`networks/fusion.rs`). The layer's own weights are left as they
    /// were. An error unless [`can_fold`](Self::can_fold) and there is one
    /// `scale` and `shift` per filter.
    ///
    /// ```
    /// use convnet::layers::Convolution;
    /// use convnet::Tensor;
    /// let w = Tensor::from_vec(&[1, 1, 1, 1], vec![2.0]).unwrap();
    /// let mut conv = Convolution::<f64>::from_params(w, Tensor::from_vec(&[1], vec![1.0]).unwrap(), 1, 0).unwrap();
    /// let x = Tensor::from_vec(&[1, 1, 1, 2], vec![1.0, -3.0]).unwrap();
    /// // 2x + 1 → 3, −5; then · 0.5 − 1 → 0.5, −3.5; then the ReLU.
    /// let out = conv.forward_folded(&x, &[0.5], &[-1.0], true, None).unwrap();
    /// assert_eq!(out.data(), [0.5, 0.0]);
    /// ```
    pub fn forward_folded(
        &mut self,
        x: &Tensor<T>,
        scale: &[T],
        shift: &[T],
        relu: bool,
        pool: Option<&PoolingConfig>,
    ) -> Result<&Tensor<T>> {
        let filters = self.bias.len();
        if !self.can_fold() || scale.len() != filters || shift.len() != filters {
            return Err(Error::Config(format!(
                "Convolution: cannot fold a map of {} values into {filters} filters with {} fused",
                scale.len(),
                if self.can_fold() {
                    "nothing"
                } else {
                    "a layer"
                },
            )));
        }
        let per_filter = self.weight.len() / filters;
        let mut weight = self.weight.clone();
        let filter_weights = weight.data_mut().chunks_exact_mut(per_filter);
        for (w_f, &s) in filter_weights.zip(scale) {
            w_f.iter_mut().for_each(|w| *w *= s);
        }
        let mut bias = self.bias.clone();
        let biases = bias.data_mut().iter_mut().zip(scale.iter().zip(shift));
        biases.for_each(|(b, (&s, &t))| *b = s * *b + t);
        // The folded parameters stand in for the layer's own during this
        // one forward; the error path restores them too.
        std::mem::swap(&mut self.weight, &mut weight);
        std::mem::swap(&mut self.bias, &mut bias);
        self.fused_activation = relu.then_some(FusedActivation::Relu);
        self.fused_pool = pool.cloned();
        let done = self.forward(x, false).map(|_| ());
        std::mem::swap(&mut self.weight, &mut weight);
        std::mem::swap(&mut self.bias, &mut bias);
        self.fused_activation = None;
        self.fused_pool = None;
        self.pool = None;
        done?;
        Ok(&self.out)
    }

    /// The geometry for an input of shape `(N, C, H, W)`.
    fn geometry_for(&self, input: &[usize]) -> Result<(ConvGeometry, usize)> {
        let (filters, channels, filter_h, filter_w) = self.weight.dims4()?;
        let [n, c, h, w] = input[..] else {
            return Err(Error::Shape(format!(
                "Convolution expects (N, C, H, W) input, got {input:?}"
            )));
        };
        if c != channels {
            return Err(Error::Shape(format!(
                "Convolution has {channels} input channels, input has {c} (shape {input:?})"
            )));
        }
        let g = ConvGeometry::new((c, h, w), (filter_h, filter_w), self.stride, self.pad)
            .map_err(|e| {
                Error::Geometry(format!(
                    "Convolution {filters}@{filter_h}x{filter_w} stride {} pad {} on {h}x{w} input: {}",
                    self.stride,
                    self.pad,
                    e.detail()
                ))
            })?;
        Ok((g, n))
    }
}

impl<T: Float> Layer<T> for Convolution<T> {
    fn kind(&self) -> &'static str {
        "Convolution"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (g, n) = self.geometry_for(input)?;
        Ok(vec![n, self.weight.shape()[0], g.out_h, g.out_w])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // 2·K per output for the products, 1 for the bias.
        match self.geometry_for(input) {
            Ok((g, n)) => {
                let outputs = (n * self.weight.shape()[0] * g.out_pixels()) as u64;
                outputs * (2 * g.col_width() as u64 + 1)
            }
            Err(_) => 0,
        }
    }

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        self.forward_impl(x, train)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        self.backward_impl(dout, true)?;
        Ok(&self.dx)
    }

    fn params(&mut self) -> Vec<Param<'_, T>> {
        weight_and_bias(
            &mut self.weight,
            &mut self.grad_weight,
            &mut self.bias,
            &mut self.grad_bias,
        )
    }

    fn spec(&self) -> Option<LayerSpec> {
        // A spec's filters are square.
        match *self.weight.shape() {
            [filters, _, size, width] if size == width => Some(LayerSpec::Conv {
                filters,
                size,
                stride: self.stride,
                pad: self.pad,
            }),
            _ => None,
        }
    }
}

mod backward;
mod bands;
mod chunks;
mod forward;
mod fused_pool;
mod grouped;
mod scratch;
#[cfg(test)]
mod tests;
mod weight_grad;
mod winograd;
