//! Batch normalization (book §6.3, `common/layers.py: BatchNormalization`).
//!
//! ```text
//! x: (N, D), one feature per column, or (N, C, H, W), one per channel
//! (PyTorch's BatchNorm1d / BatchNorm2d); m = N (or N·H·W) values per feature.
//!
//! training:   μ = Σ x / m      σ² = Σ (x − μ)² / m      (biased)
//!             x̂ = (x − μ) / √(σ² + ε)          out = γ · x̂ + β
//!             running = momentum · running + (1 − momentum) · batch statistic
//! evaluation: μ, σ² are the running mean and variance
//!
//! backward (training):  dβ = Σ dout    dγ = Σ dout · x̂
//!                       dx = γ / (m · √(σ² + ε)) · (m · dout − dβ − x̂ · dγ)
//! backward (evaluation): dx = γ / √(σ²_running + ε) · dout
//! ```
//! γ is the parameter `"weight"` and β `"bias"`, both of shape (features);
//! the running statistics are the buffers `"running_mean"` and
//! `"running_var"`. The statistics and gradient sums are taken per sample and
//! feature in parallel over the samples (each block of pixels in
//! interleaved partial sums, [`crate::kernels::reduce`], both sums of a block
//! in one pass), then added per feature in order of the samples, so results
//! do not depend on the number of threads. The variance comes from each
//! block's own sum of squared deviations and the blocks' means
//! (σ² = Σ_b [Σ (x − x̄_b)² + hw · (x̄_b − μ)²] / m): one pass over x
//! from memory, and no cancellation between large sums.
//!
//! ```
//! use convnet::layers::{BatchNorm, BatchNormConfig, Layer};
//! use convnet::Tensor;
//! let mut bn = BatchNorm::<f64>::new(&BatchNormConfig { features: 1, ..Default::default() }).unwrap();
//! let x = Tensor::from_vec(&[2, 1], vec![1.0, 3.0]).unwrap();
//! let y = bn.forward(&x, true).unwrap(); // μ = 2, σ² = 1
//! assert!((y.data()[0] + 1.0).abs() < 1e-6 && (y.data()[1] - 1.0).abs() < 1e-6);
//! ```

use super::pooling::{pool_plane, unpool_plane, PoolingConfig};
use super::relu::relu;
use super::{check_dout, weight_and_bias, Layer, Param};
use crate::error::{Error, Result};
use crate::kernels::bn_sums::{block_moments, gradient_sums, upstream};
use crate::kernels::vectorize::{map2_into, map_into, widest};
use crate::networks::spec::LayerSpec;
use crate::parallel::ELEMENTWISE_CHUNK;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// Hyper-parameters of a [`BatchNorm`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// D for (N, D) input, C for (N, C, H, W) input; must be set (not 0).
    pub features: usize,
    /// running = momentum · running + (1 − momentum) · batch (the book's 0.9).
    pub momentum: f64,
    /// Added to the variance (the book's `10e-7`).
    pub eps: f64,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            features: 0,
            momentum: 0.9,
            eps: 1e-6,
        }
    }
}

/// An input seen as (N, C, H·W): N samples, C features, `hw` values of each
/// feature per sample (1 for 2-D input, whose rows the layer runs through
/// with the features side by side; a 4-D input's blocks of `hw` values run
/// one at a time, with one feature's constants).
#[derive(Clone, Copy, Debug)]
struct Layout {
    n: usize,
    c: usize,
    hw: usize,
}

impl Layout {
    /// m, the number of values per feature.
    fn count(&self) -> usize {
        self.n * self.hw
    }

    /// Features per rayon task when the blocks' sums are added: about
    /// `ELEMENTWISE_CHUNK` blocks per task, so that small inputs run in one.
    fn features_per_task(&self) -> usize {
        ELEMENTWISE_CHUNK.div_ceil(self.n.max(1))
    }

    /// Samples per rayon task, likewise.
    fn samples_per_task(&self) -> usize {
        ELEMENTWISE_CHUNK.div_ceil((self.c * self.hw).max(1))
    }
}

/// 4-D input: `totals[ch]` = the two sums of `block(ch, a's block, b's
/// block)` over the samples' blocks of channel `ch`, added in order of n (a
/// fixed order, so the totals do not depend on the number of threads). The
/// blocks' sums are taken in parallel over the samples, each thread reading
/// the samples it has (mostly) just written, and kept in `blocks`
/// (`blocks[n·C + ch]`, see [`feature_totals`]); every value comes from
/// memory once however many sums are taken.
fn block_sums<T: Float>(
    a: &[T],
    b: &[T],
    l: Layout,
    blocks: &mut Vec<(T, T)>,
    totals: &mut Vec<(T, T)>,
    block: impl Fn(usize, &[T], &[T]) -> (T, T) + Sync,
) {
    let sample = l.c * l.hw;
    blocks.resize(l.n * l.c, (T::zero(), T::zero()));
    blocks
        .par_chunks_mut(l.c)
        .zip(a.par_chunks(sample).zip(b.par_chunks(sample)))
        .with_min_len(l.samples_per_task())
        .for_each(|(sums, (a, b))| {
            let pairs = a.chunks(l.hw).zip(b.chunks(l.hw));
            for (ch, (sum, (a, b))) in sums.iter_mut().zip(pairs).enumerate() {
                *sum = block(ch, a, b);
            }
        });
    feature_totals(blocks, l, totals, |_, block| block);
}

/// `totals[ch] = Σ term(ch, blocks[n·C + ch])` over n, added in order of
/// n, in parallel over ranges of features, each range a row of blocks at a
/// time.
fn feature_totals<T: Float>(
    blocks: &[(T, T)],
    l: Layout,
    totals: &mut Vec<(T, T)>,
    term: impl Fn(usize, (T, T)) -> (T, T) + Sync,
) {
    row_totals(l, totals, |first, n, totals| {
        let row = &blocks[n * l.c + first..][..totals.len()];
        for (j, (total, &block)) in totals.iter_mut().zip(row).enumerate() {
            let (p, q) = term(first + j, block);
            total.0 += p;
            total.1 += q;
        }
    });
}

/// `add(first, n, totals[first..])` for each sample n in order, in
/// parallel over ranges of features (`first` the range's first), `totals`
/// zeroed first: per-feature sums over the samples in a fixed order.
fn row_totals<T: Float>(
    l: Layout,
    totals: &mut Vec<(T, T)>,
    add: impl Fn(usize, usize, &mut [(T, T)]) + Sync,
) {
    let per_task = l.features_per_task();
    totals.clear();
    totals.resize(l.c, (T::zero(), T::zero()));
    totals
        .par_chunks_mut(per_task)
        .enumerate()
        .for_each(|(task, totals)| {
            for n in 0..l.n {
                add(task * per_task, n, totals);
            }
        });
}

/// One row of 2-D input, its features side by side: `x̂ = (x − μ) · s` and
/// `out = γ · x̂ + β` (or its ReLU), the same operations as a 4-D block's.
#[inline(always)]
fn normalize_row<T: Float>(
    out: &mut [T],
    xhat: &mut [T],
    x: &[T],
    (mean, inv_std, gamma, beta): (&[T], &[T], &[T], &[T]),
    fused_relu: bool,
) {
    let constants = mean.iter().zip(inv_std).zip(gamma.iter().zip(beta));
    for (((o, h), &v), ((&mu, &s), (&g, &b))) in out.iter_mut().zip(xhat).zip(x).zip(constants) {
        *h = (v - mu) * s;
        let z = g * *h + b;
        *o = if fused_relu { relu(z) } else { z };
    }
}

/// `totals[j] += (dz, dz · x̂)` for one row of 2-D input, dz = dout (or
/// through the fused ReLU).
#[inline(always)]
fn add_row_gradients<T: Float>(
    totals: &mut [(T, T)],
    dout: &[T],
    xhat: &[T],
    gamma: &[T],
    beta: &[T],
    fused_relu: bool,
) {
    let values = dout.iter().zip(xhat).zip(gamma.iter().zip(beta));
    for (total, ((&g, &h), (&ga, &be))) in totals.iter_mut().zip(values) {
        let g = upstream(g, h, ga, be, fused_relu);
        total.0 += g;
        total.1 += g * h;
    }
}

/// `dx` for one row of 2-D input: with the batch's sums `(dβ, dγ, m)` in
/// training, without them in evaluation; the same operations as a 4-D
/// block's.
#[inline(always)]
fn dx_row<T: Float>(
    dx: &mut [T],
    dout: &[T],
    xhat: &[T],
    (gamma, beta, inv_std): (&[T], &[T], &[T]),
    sums: Option<(&[T], &[T], T)>,
    fused_relu: bool,
) {
    let constants = gamma.iter().zip(beta).zip(inv_std);
    let values = dx.iter_mut().zip(dout).zip(xhat).zip(constants);
    match sums {
        Some((dbeta, dgamma, m)) => {
            for ((((d, &g), &h), ((&ga, &be), &s)), (&db, &dg)) in
                values.zip(dbeta.iter().zip(dgamma))
            {
                let g = upstream(g, h, ga, be, fused_relu);
                let k = ga * s / m;
                *d = k * (m * g - db - h * dg);
            }
        }
        None => {
            for (((d, &g), &h), ((&ga, &be), &s)) in values {
                let g = upstream(g, h, ga, be, fused_relu);
                *d = ga * s * g;
            }
        }
    }
}

/// `1 / √(σ² + ε)`, as every forward computes it (and the inference
/// folding, so that it scales by the same value).
fn inv_std_of<T: Float>(var: T, eps: f64) -> T {
    (var + T::cast(eps)).sqrt().recip()
}

/// `out[ch] = totals[ch].0 / m` for every feature.
fn divide_firsts<T: Float>(out: &mut [T], totals: &[(T, T)], m: T) {
    for (o, total) in out.iter_mut().zip(totals) {
        *o = total.0 / m;
    }
}

/// What a forward leaves for backward besides the per-feature constants.
#[derive(Clone, Copy, Debug)]
struct LastForward {
    layout: Layout,
    train: bool,
    /// Whether x̂ was written to `xhat` (else backward recomputes it from
    /// the input).
    xhat_kept: bool,
    /// Values per pooled plane, with a fused pooling.
    pooled_plane: Option<usize>,
}

/// `dx` for one block of 4-D input (one sample's plane of a channel), the
/// channel's constants: γ, β, s = 1/√(σ² + ε), and in training the
/// batch's sums (dβ, dγ, m).
struct DxBlock<T> {
    gamma: T,
    beta: T,
    inv_std: T,
    sums: Option<(T, T, T)>,
    fused_relu: bool,
}

impl<T: Float> DxBlock<T> {
    /// `dx` from `dout` and `src`, whose values give x̂ by `xhat`: x̂
    /// itself (`|h| h`), or the input with forward's `(x − μ) · s`, so the
    /// same values to the bit.
    #[inline(always)]
    fn run(&self, dx: &mut [T], dout: &[T], src: &[T], xhat: impl Fn(T) -> T) {
        let DxBlock {
            gamma,
            beta,
            inv_std,
            sums,
            fused_relu,
        } = *self;
        let dz = |g: T, h: T| upstream(g, h, gamma, beta, fused_relu);
        match sums {
            Some((db, dg, m)) => {
                let k = gamma * inv_std / m;
                map2_into(dx, dout, src, |g, v| {
                    let h = xhat(v);
                    k * (m * dz(g, h) - db - h * dg)
                });
            }
            None => {
                let k = gamma * inv_std;
                map2_into(dx, dout, src, |g, v| k * dz(g, xhat(v)));
            }
        }
    }
}

/// One sample's planes of dz with a fused pooling: for each channel `ch`,
/// its pooled `dout` (`out_plane` values a channel, with `arg_max`'s
/// indices) spread over the windows' maxima into `dz`, as the pooling's
/// backward does (`unpool_plane`), then `each(ch, dz)`.
fn unpooled_planes<T: Float>(
    dout: &[T],
    arg_max: &[u32],
    out_plane: usize,
    dz: &mut [T],
    mut each: impl FnMut(usize, &[T]),
) {
    let pooled = dout.chunks(out_plane).zip(arg_max.chunks(out_plane));
    for (ch, (dout_p, arg_p)) in pooled.enumerate() {
        unpool_plane(dz, arg_p, dout_p.iter().copied());
        each(ch, dz);
    }
}

/// Batch normalization over features (2-D input) or channels (4-D input).
pub struct BatchNorm<T> {
    /// γ: (features)
    pub weight: Tensor<T>,
    /// β: (features)
    pub bias: Tensor<T>,
    /// ∂L/∂γ: (features), filled by `backward`.
    pub grad_weight: Tensor<T>,
    /// ∂L/∂β: (features), filled by `backward`.
    pub grad_bias: Tensor<T>,
    /// (features), used by evaluation forwards.
    pub running_mean: Tensor<T>,
    /// (features), used by evaluation forwards.
    pub running_var: Tensor<T>,
    /// running = momentum · running + (1 − momentum) · batch statistic.
    pub momentum: f64,
    /// ε, added to the variance before its square root.
    pub eps: f64,
    /// Whether a ReLU straight after this layer runs inside it (see
    /// [`fuse_relu`](Self::fuse_relu)).
    relu: bool,
    /// Whether a 4-D forward keeps no x̂, its backward taking the input
    /// instead (see [`borrow_input`](Self::borrow_input)).
    borrows_input: bool,
    /// A max pooling after the layer (and its ReLU) that it runs itself
    /// (see [`fuse_max_pool`](Self::fuse_max_pool)).
    pool: Option<PoolingConfig>,
    /// With a fused pooling: for every pooled output, the index within its
    /// plane of the window's maximum, (N, C, POH, POW).
    arg_max: Vec<u32>,
    /// The shape of the last forward's input.
    in_shape: Vec<usize>,
    /// What the last forward did; `None` before any.
    last: Option<LastForward>,
    /// Per feature: the μ and 1/√(σ² + ε) the last forward used.
    mean: Vec<T>,
    inv_std: Vec<T>,
    /// Per sample and feature, (N, C): two sums over its values (see
    /// [`block_sums`]).
    blocks: Vec<(T, T)>,
    /// Per feature: the blocks' sums added (see [`feature_totals`]).
    totals: Vec<(T, T)>,
    /// x̂, the shape of the input; empty when the input is borrowed
    /// ([`borrow_input`](Self::borrow_input)).
    xhat: Tensor<T>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> BatchNorm<T> {
    /// γ = 1, β = 0, running mean 0 and variance 1; an error if `features`
    /// is 0, `momentum` outside [0, 1] or `eps` not positive.
    pub fn new(config: &BatchNormConfig) -> Result<Self> {
        let (features, momentum, eps) = (config.features, config.momentum, config.eps);
        if features == 0 {
            return Err(Error::Config("BatchNorm needs at least 1 feature".into()));
        }
        if !(0.0..=1.0).contains(&momentum) || eps.is_nan() || eps <= 0.0 {
            return Err(Error::Config(format!(
                "BatchNorm needs momentum in [0, 1] and eps > 0 (got {momentum}, {eps})"
            )));
        }
        let ones = Tensor::from_vec(&[features], vec![T::one(); features])?;
        Ok(BatchNorm {
            weight: ones.clone(),
            bias: Tensor::zeros(&[features]),
            grad_weight: Tensor::zeros(&[features]),
            grad_bias: Tensor::zeros(&[features]),
            running_mean: Tensor::zeros(&[features]),
            running_var: ones,
            momentum,
            eps,
            relu: false,
            borrows_input: false,
            pool: None,
            arg_max: Vec::new(),
            in_shape: Vec::new(),
            last: None,
            mean: vec![T::zero(); features],
            inv_std: vec![T::zero(); features],
            blocks: Vec::new(),
            totals: Vec::new(),
            xhat: Tensor::default(),
            out: Tensor::default(),
            dx: Tensor::default(),
        })
    }

    /// The number of features (D or C).
    pub fn features(&self) -> usize {
        self.weight.len()
    }

    /// Applies a ReLU to this layer's output (`on`), or stops doing so. The
    /// network does this for a `Relu` straight after a batch norm
    /// (`networks/fusion.rs`), so that the output is written once and the
    /// ReLU's two passes over it disappear. Backward needs no mask: it
    /// recomputes `z = γ · x̂ + β` from x̂ (kept, or made again from the
    /// input), the same operations as
    /// forward, so `z > 0` exactly where the ReLU passed its input. The
    /// numbers are the same to the bit as the two layers one after the
    /// other.
    pub fn fuse_relu(&mut self, on: bool) {
        self.relu = on;
        self.last = None;
    }

    /// Whether a ReLU runs inside this layer ([`fuse_relu`](Self::fuse_relu)).
    pub fn relu_fused(&self) -> bool {
        self.relu
    }

    /// Makes a 4-D forward keep no x̂ (`on`): its backward recomputes x̂
    /// from the layer's input, which the caller keeps unchanged and passes
    /// to [`backward_with_input`](Self::backward_with_input); the plain
    /// [`backward`](Layer::backward) is then an error. The network does
    /// this for a batch norm straight after a convolution
    /// (`networks/fusion.rs`), whose output, this layer's input, stays in
    /// the convolution until its next forward: a forward then writes one
    /// tensor instead of two. The numbers are the same to the bit. A
    /// forward of that convolution in between (an inference one included)
    /// would change the input: the network runs each backward straight
    /// after its forward. 2-D input, and 4-D input of one pixel per plane,
    /// keep x̂ either way.
    pub fn borrow_input(&mut self, on: bool) {
        self.borrows_input = on;
        self.last = None;
    }

    /// Whether a 4-D forward keeps no x̂ ([`borrow_input`](Self::borrow_input)).
    pub fn input_borrowed(&self) -> bool {
        self.borrows_input
    }

    /// With `Some(config)`, the layer runs the max pooling that follows it
    /// (or follows its fused ReLU) itself, plane by plane while each plane
    /// is in the core's cache: its output is the pooled one, and backward
    /// takes the pooled `dout`, spreading it over the windows' maxima as
    /// the pooling's backward does. The same kernels on the same values,
    /// so the same numbers to the bit as the layers one after the other.
    /// Only with the input borrowed ([`borrow_input`](Self::borrow_input))
    /// and on 4-D input of more than one pixel per plane (else forward is
    /// an error); the network fuses the book's 2×2 windows after a batch
    /// norm that follows a convolution (`networks/fusion.rs`). `None` turns
    /// it off.
    pub fn fuse_max_pool(&mut self, config: Option<&PoolingConfig>) {
        self.pool = config.cloned();
        self.last = None;
    }

    /// Whether a max pooling runs inside this layer
    /// ([`fuse_max_pool`](Self::fuse_max_pool)).
    pub fn max_pool_fused(&self) -> bool {
        self.pool.is_some()
    }

    /// Backward after a forward that kept no x̂: `x` must be the input of
    /// that forward, unchanged. After a forward that kept x̂, `x` is not
    /// read and this is [`backward`](Layer::backward).
    pub fn backward_with_input(&mut self, x: &Tensor<T>, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        self.backward_from(dout, Some(x))
    }

    /// The map an inference forward applies to each feature, before its
    /// fused ReLU, as `y = scale · x + shift`: `scale = γ / √(σ²_run + ε)`,
    /// `shift = β − μ_run · scale`. What a layer before it folds into its
    /// own weights at inference (`networks/fusion.rs`).
    pub fn inference_scale_shift(&self) -> (Vec<T>, Vec<T>) {
        let stats = self.running_mean.data().iter().zip(self.running_var.data());
        let params = self.weight.data().iter().zip(self.bias.data());
        stats
            .zip(params)
            .map(|((&mu, &var), (&gamma, &beta))| {
                let scale = gamma * inv_std_of(var, self.eps);
                (scale, beta - mu * scale)
            })
            .unzip()
    }

    fn layout(&self, shape: &[usize]) -> Result<Layout> {
        let (n, c, hw) = match *shape {
            [n, d] => (n, d, 1),
            [n, c, h, w] => (n, c, h * w),
            _ => {
                return Err(Error::Shape(format!(
                    "BatchNorm expects (N, D) or (N, C, H, W) input, got {shape:?}"
                )))
            }
        };
        if c != self.features() {
            return Err(Error::Shape(format!(
                "BatchNorm has {} features, input has {c} (shape {shape:?})",
                self.features()
            )));
        }
        Ok(Layout { n, c, hw })
    }
}

impl<T: Float> BatchNorm<T> {
    /// A forward, given (for 4-D input in training) each block's
    /// [`block_moments`] already taken, by the convolution before it as it
    /// wrote them ([`Convolution::take_plane_moments`]): the pass over x
    /// they would need is skipped. `(N, C)` pairs, sample by sample (any
    /// other number is an error); 2-D input, and 4-D input of one pixel
    /// per plane, do not use them.
    ///
    /// [`Convolution::take_plane_moments`]: super::Convolution::take_plane_moments
    pub fn forward_with_block_moments(
        &mut self,
        x: &Tensor<T>,
        train: bool,
        block_moments: &[(T, T)],
    ) -> Result<&Tensor<T>> {
        self.forward_from(x, train, Some(block_moments))
    }

    fn forward_from(
        &mut self,
        x: &Tensor<T>,
        train: bool,
        block_moments_given: Option<&[(T, T)]>,
    ) -> Result<&Tensor<T>> {
        // A forward that fails leaves nothing for backward.
        self.last = None;
        let l = self.layout(x.shape())?;
        if let Some(given) = block_moments_given {
            if given.len() != l.n * l.c {
                return Err(Error::Shape(format!(
                    "BatchNorm: {} blocks' sums given for {} blocks",
                    given.len(),
                    l.n * l.c
                )));
            }
        }
        let xhat_kept = !self.borrows_input || l.hw == 1;
        let pool = match &self.pool {
            Some(_) if xhat_kept => {
                return Err(Error::Config(
                    "BatchNorm: a fused max pooling needs the input borrowed, on planes of more than one pixel"
                        .into(),
                ))
            }
            Some(config) => Some(config.geometry("MaxPooling", x.shape())?),
            None => None,
        };
        self.in_shape.clear();
        self.in_shape.extend_from_slice(x.shape());
        let (shape, x) = (x.shape(), x.data());
        if train {
            if l.count() == 0 {
                return Err(Error::Shape(
                    "BatchNorm: training needs at least one value per feature".into(),
                ));
            }
            let (m, hw) = (T::cast(l.count() as f64), T::cast(l.hw as f64));
            let (blocks, totals) = (&mut self.blocks, &mut self.totals);
            // mean ← μ, inv_std ← σ² for now.
            if l.hw == 1 {
                // (N, D): μ = Σ x / m, then σ² = Σ (x − μ)² / m.
                row_totals(l, totals, |first, n, totals| {
                    let row = &x[n * l.c + first..][..totals.len()];
                    for (total, &v) in totals.iter_mut().zip(row) {
                        total.0 += v;
                    }
                });
                divide_firsts(&mut self.mean, totals, m);
                let mean = &self.mean;
                row_totals(l, totals, |first, n, totals| {
                    let row = &x[n * l.c + first..][..totals.len()];
                    for ((total, &v), &mu) in totals.iter_mut().zip(row).zip(&mean[first..]) {
                        total.0 += (v - mu) * (v - mu);
                    }
                });
            } else {
                // Per block (sample n, channel ch) of hw values: its sum s_b
                // and Σ (x − s_b/hw)², two passes over a block that stays in
                // the cache. Then per channel μ = Σ s_b / m and, with the
                // blocks' means, σ² = Σ [Σ (x − s_b/hw)² + hw · (s_b/hw − μ)²] / m.
                match block_moments_given {
                    Some(given) => {
                        blocks.clear();
                        blocks.extend_from_slice(given);
                        feature_totals(blocks, l, totals, |_, block| block);
                    }
                    None => {
                        block_sums(x, x, l, blocks, totals, |_, block, _| block_moments(block));
                    }
                }
                divide_firsts(&mut self.mean, totals, m);
                let mean = &self.mean;
                feature_totals(blocks, l, totals, |ch, (sum, m2)| {
                    let d = sum / hw - mean[ch];
                    (m2 + hw * d * d, T::zero())
                });
            }
            divide_firsts(&mut self.inv_std, totals, m);
            let (keep, new) = (T::cast(self.momentum), T::cast(1.0 - self.momentum));
            let running = self.running_mean.data_mut().iter_mut();
            let running = running.zip(self.running_var.data_mut().iter_mut());
            for ((rm, rv), (&mu, var)) in running.zip(self.mean.iter().zip(&mut self.inv_std)) {
                *rm = keep * *rm + new * mu;
                *rv = keep * *rv + new * *var;
                *var = inv_std_of(*var, self.eps);
            }
        } else {
            self.mean.copy_from_slice(self.running_mean.data());
            for (s, &var) in self.inv_std.iter_mut().zip(self.running_var.data()) {
                *s = inv_std_of(var, self.eps);
            }
        }

        match &pool {
            Some(g) => self.out.resize(&[l.n, l.c, g.out_h, g.out_w]),
            None => self.out.resize(shape),
        }
        self.last = Some(LastForward {
            layout: l,
            train,
            xhat_kept,
            pooled_plane: pool.as_ref().map(|g| g.out_pixels()),
        });
        let sample = l.c * l.hw;
        let (gamma, beta) = (self.weight.data(), self.bias.data());
        let (mean, inv_std, fused_relu) = (&self.mean, &self.inv_std, self.relu);
        let act = |z: T| if fused_relu { relu(z) } else { z };
        // Without x̂ (it stays in a register; backward recomputes it from
        // x): block `ch` of the output, the operations of x̂'s and the
        // output's below.
        let normalize = |ch: usize, out: &mut [T], x: &[T]| {
            let (mu, s, g, b) = (mean[ch], inv_std[ch], gamma[ch], beta[ch]);
            map_into(out, x, |v| act(g * ((v - mu) * s) + b));
        };
        if !xhat_kept {
            self.xhat = Tensor::default();
        }
        if let Some(pool_g) = pool {
            // Each plane's output in the thread's buffer, then pooled.
            let (width, out_plane) = (shape[3], pool_g.out_pixels());
            self.arg_max.resize(l.n * l.c * out_plane, 0);
            self.out
                .data_mut()
                .par_chunks_mut(l.c * out_plane)
                .zip(self.arg_max.par_chunks_mut(l.c * out_plane))
                .zip(x.par_chunks(sample))
                .with_min_len(l.samples_per_task())
                .for_each_init(
                    || vec![T::zero(); l.hw],
                    |plane, ((out, arg), x)| {
                        let pooled = out.chunks_mut(out_plane).zip(arg.chunks_mut(out_plane));
                        for (ch, ((out_p, arg_p), x)) in pooled.zip(x.chunks(l.hw)).enumerate() {
                            normalize(ch, plane, x);
                            pool_plane(plane, width, &pool_g, false, out_p, arg_p);
                        }
                    },
                );
            return Ok(&self.out);
        }
        if !xhat_kept {
            self.out
                .data_mut()
                .par_chunks_mut(sample)
                .zip(x.par_chunks(sample))
                .with_min_len(l.samples_per_task())
                .for_each(|(out, x)| {
                    let blocks = out.chunks_mut(l.hw).zip(x.chunks(l.hw));
                    for (ch, (out, x)) in blocks.enumerate() {
                        normalize(ch, out, x);
                    }
                });
            return Ok(&self.out);
        }
        self.xhat.resize(shape);
        self.out
            .data_mut()
            .par_chunks_mut(sample)
            .zip(self.xhat.data_mut().par_chunks_mut(sample))
            .zip(x.par_chunks(sample))
            .with_min_len(l.samples_per_task())
            .for_each(|((out, xhat), x)| {
                if l.hw == 1 {
                    let constants = (&mean[..], &inv_std[..], gamma, beta);
                    widest(
                        #[inline(always)]
                        || normalize_row(out, xhat, x, constants, fused_relu),
                    );
                    return;
                }
                let blocks = out.chunks_mut(l.hw).zip(xhat.chunks_mut(l.hw));
                for (ch, ((out, xhat), x)) in blocks.zip(x.chunks(l.hw)).enumerate() {
                    let (mu, s, g, b) = (mean[ch], inv_std[ch], gamma[ch], beta[ch]);
                    // x̂, then from x̂ (still in the cache) the output.
                    map_into(xhat, x, |v| (v - mu) * s);
                    map_into(out, xhat, |h| act(g * h + b));
                }
            });
        Ok(&self.out)
    }

    /// Backward from `dout`, with x̂ kept by forward or recomputed from
    /// `input` (see [`borrow_input`](Self::borrow_input)).
    fn backward_from(&mut self, dout: &Tensor<T>, input: Option<&Tensor<T>>) -> Result<&Tensor<T>> {
        let Some(LastForward {
            layout: l,
            train,
            xhat_kept,
            pooled_plane,
        }) = self.last
        else {
            return Err(Error::BackwardBeforeForward("BatchNorm"));
        };
        check_dout("BatchNorm", Some(self.out.shape()), dout)?;
        // `xhat` holds x̂, or the input to recompute it from.
        let (input, xhat) = match input {
            _ if xhat_kept => (None, self.xhat.data()),
            Some(x) if x.shape() == self.in_shape => (Some(x), x.data()),
            Some(x) => {
                return Err(Error::Shape(format!(
                    "BatchNorm: backward's input has shape {:?}, forward's had {:?}",
                    x.shape(),
                    self.in_shape
                )))
            }
            None => return Err(Error::Config(
                "BatchNorm: the last forward kept no x̂ (borrow_input); backward needs its input"
                    .into(),
            )),
        };
        let dout = dout.data();

        let (gamma, beta, fused_relu) = (self.weight.data(), self.bias.data(), self.relu);
        // dβ = Σ dz, dγ = Σ dz · x̂ per feature, both sums in one pass.
        let (mean, inv_std) = (&self.mean, &self.inv_std);
        // x̂'s block `ch`, kept or recomputed from the input's.
        let recompute = |ch: usize| input.is_some().then(|| (mean[ch], inv_std[ch]));
        let (blocks, totals) = (&mut self.blocks, &mut self.totals);
        // With a fused pooling, each block of dz is the pooled dout spread
        // over the windows' maxima, in the thread's buffer (`unpool_plane`).
        let pooled = pooled_plane.map(|out_plane| (out_plane, l.c * out_plane, &self.arg_max[..]));
        if let Some((out_plane, per_sample, arg_max)) = pooled {
            blocks.resize(l.n * l.c, (T::zero(), T::zero()));
            blocks
                .par_chunks_mut(l.c)
                .zip(
                    dout.par_chunks(per_sample)
                        .zip(arg_max.par_chunks(per_sample)),
                )
                .zip(xhat.par_chunks(l.c * l.hw))
                .with_min_len(l.samples_per_task())
                .for_each_init(
                    || vec![T::zero(); l.hw],
                    |dz, ((sums, (dout, arg)), x)| {
                        unpooled_planes(dout, arg, out_plane, dz, |ch, dz| {
                            let x = &x[ch * l.hw..][..l.hw];
                            let relu = fused_relu.then_some((gamma[ch], beta[ch]));
                            sums[ch] = gradient_sums(dz, x, recompute(ch), relu);
                        });
                    },
                );
            feature_totals(blocks, l, totals, |_, block| block);
        } else if l.hw == 1 {
            row_totals(l, totals, |first, n, totals| {
                let at = n * l.c + first;
                let (gamma, beta) = (&gamma[first..], &beta[first..]);
                let (dout, xhat) = (&dout[at..], &xhat[at..]);
                widest(
                    #[inline(always)]
                    || add_row_gradients(totals, dout, xhat, gamma, beta, fused_relu),
                );
            });
        } else {
            block_sums(dout, xhat, l, blocks, totals, |ch, dout, xhat| {
                let relu = fused_relu.then_some((gamma[ch], beta[ch]));
                gradient_sums(dout, xhat, recompute(ch), relu)
            });
        }
        let gradients = self.grad_bias.data_mut().iter_mut();
        let gradients = gradients.zip(self.grad_weight.data_mut());
        for ((db, dg), total) in gradients.zip(totals.iter()) {
            (*db, *dg) = *total;
        }

        self.dx.resize(&self.in_shape);
        let m = T::cast(l.count() as f64);
        let sample = l.c * l.hw;
        let (dgamma, dbeta) = (self.grad_weight.data(), self.grad_bias.data());
        let dx_block = |ch: usize| DxBlock {
            gamma: gamma[ch],
            beta: beta[ch],
            inv_std: inv_std[ch],
            sums: train.then_some((dbeta[ch], dgamma[ch], m)),
            fused_relu,
        };
        if let Some((out_plane, per_sample, arg_max)) = pooled {
            self.dx
                .data_mut()
                .par_chunks_mut(sample)
                .zip(
                    dout.par_chunks(per_sample)
                        .zip(arg_max.par_chunks(per_sample)),
                )
                .zip(xhat.par_chunks(sample))
                .with_min_len(l.samples_per_task())
                .for_each_init(
                    || vec![T::zero(); l.hw],
                    |dz, ((dx, (dout, arg)), x)| {
                        unpooled_planes(dout, arg, out_plane, dz, |ch, dz| {
                            let (dx, x) = (&mut dx[ch * l.hw..][..l.hw], &x[ch * l.hw..][..l.hw]);
                            // (A pooling is fused only where x̂ is made from x.)
                            let (mu, s) = (mean[ch], inv_std[ch]);
                            dx_block(ch).run(dx, dz, x, |v| (v - mu) * s);
                        });
                    },
                );
            return Ok(&self.dx);
        }
        self.dx
            .data_mut()
            .par_chunks_mut(sample)
            .zip(dout.par_chunks(sample))
            .zip(xhat.par_chunks(sample))
            .with_min_len(l.samples_per_task())
            .for_each(|((dx, dout), xhat)| {
                if l.hw == 1 {
                    let constants = (gamma, beta, &inv_std[..]);
                    let sums = train.then_some((dbeta, dgamma, m));
                    widest(
                        #[inline(always)]
                        || dx_row(dx, dout, xhat, constants, sums, fused_relu),
                    );
                    return;
                }
                let blocks = dx.chunks_mut(l.hw).zip(dout.chunks(l.hw));
                for (ch, ((dx, dout), xhat)) in blocks.zip(xhat.chunks(l.hw)).enumerate() {
                    let block = dx_block(ch);
                    // x̂ kept, or made from x on the way.
                    match recompute(ch) {
                        None => block.run(dx, dout, xhat, |h| h),
                        Some((mu, s)) => block.run(dx, dout, xhat, |v| (v - mu) * s),
                    }
                }
            });
        Ok(&self.dx)
    }
}

impl<T: Float> Layer<T> for BatchNorm<T> {
    fn kind(&self) -> &'static str {
        "BatchNorm"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.layout(input)?;
        Ok(input.to_vec())
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // Subtract, two multiplies and an add per element.
        4 * input.iter().product::<usize>() as u64
    }

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        self.forward_from(x, train, None)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        self.backward_from(dout, None)
    }

    fn params(&mut self) -> Vec<Param<'_, T>> {
        weight_and_bias(
            &mut self.weight,
            &mut self.grad_weight,
            &mut self.bias,
            &mut self.grad_bias,
        )
    }

    fn buffers(&mut self) -> Vec<(&'static str, &mut Tensor<T>)> {
        vec![
            ("running_mean", &mut self.running_mean),
            ("running_var", &mut self.running_var),
        ]
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::BatchNorm {
            momentum: self.momentum,
            eps: self.eps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;
    use crate::rng::Rng;

    fn batch_norm(features: usize) -> BatchNorm<f64> {
        BatchNorm::new(&BatchNormConfig {
            features,
            ..Default::default()
        })
        .unwrap()
    }

    /// Values `scale · N(0, 1) + shift`.
    fn random(shape: &[usize], scale: f64, shift: f64, rng: &mut Rng) -> Tensor<f64> {
        let data = (0..shape.iter().product()).map(|_| scale * rng.normal() + shift);
        Tensor::from_vec(shape, data.collect()).unwrap()
    }

    fn assert_close(a: &[f64], b: &[f64], tolerance: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tolerance, "{a:?} vs {b:?}");
        }
    }

    /// The m values of feature `ch`.
    fn channel_values<T: Float>(d: &[T], l: Layout, ch: usize) -> Vec<T> {
        let blocks = d.chunks(l.hw).skip(ch).step_by(l.c);
        blocks.flat_map(|block| block.iter().copied()).collect()
    }

    #[test]
    fn f32_statistics_keep_their_precision_far_from_zero() {
        // Values 1000 + N(0, 1): Σx² / m − μ² would lose every digit of σ²
        // in f32 (μ² ≈ 1e6, its rounding ≈ 0.06); the blocks' deviations
        // keep σ² to about 1e-6 relative, as the running variance shows
        // (momentum 0: the batch's own).
        let mut rng = Rng::new(3);
        let (n, c, h) = (8, 2, 12);
        let x: Vec<f32> = (0..n * c * h * h)
            .map(|_| 1000.0 + rng.normal() as f32)
            .collect();
        let l = Layout { n, c, hw: h * h };
        let config = BatchNormConfig {
            features: c,
            momentum: 0.0,
            ..Default::default()
        };
        let mut bn = BatchNorm::<f32>::new(&config).unwrap();
        let x = Tensor::from_vec(&[n, c, h, h], x).unwrap();
        bn.forward(&x, true).unwrap();
        for ch in 0..c {
            let values: Vec<f64> = channel_values(x.data(), l, ch)
                .iter()
                .map(|&v| v as f64)
                .collect();
            let m = values.len() as f64;
            let mean = values.iter().sum::<f64>() / m;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
            let (got_mean, got_var) = (
                bn.running_mean.data()[ch] as f64,
                bn.running_var.data()[ch] as f64,
            );
            assert!(
                (got_mean - mean).abs() < 1e-6 * mean,
                "{got_mean} against {mean}"
            );
            assert!(
                (got_var - var).abs() < 1e-4 * var,
                "{got_var} against {var}"
            );
        }
    }

    #[test]
    fn training_output_is_normalised() {
        let mut rng = Rng::new(1);
        for (shape, hw) in [(vec![16, 5], 1), (vec![4, 3, 5, 6], 30)] {
            let x = random(&shape, 3.0, 2.0, &mut rng);
            let out = batch_norm(shape[1]).forward(&x, true).unwrap().clone();
            let l = Layout {
                n: shape[0],
                c: shape[1],
                hw,
            };
            let m = l.count() as f64;
            for ch in 0..l.c {
                let values = channel_values(out.data(), l, ch);
                let mean = values.iter().sum::<f64>() / m;
                // σ²/(σ² + ε) with σ² ≈ 9.
                let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
                assert!(
                    mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-6,
                    "{mean} {var}"
                );
            }
        }
    }

    #[test]
    fn by_hand_running_stats_and_evaluation() {
        let mut bn = batch_norm(2);
        bn.weight.data_mut().copy_from_slice(&[2.0, 0.5]);
        bn.bias.data_mut().copy_from_slice(&[1.0, -1.0]);
        // Feature 0: 1, 3 → μ = 2, σ² = 1.   Feature 1: 2, 6 → μ = 4, σ² = 4.
        // x̂ = ∓1/√(1 + 1e-6) = ∓0.99999950000037, ∓2/√(4 + 1e-6) = ∓0.99999987500002;
        // out = 2·x̂ + 1 and 0.5·x̂ − 1.
        let x = Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 6.0]).unwrap();
        let out = bn.forward(&x, true).unwrap().data().to_vec();
        let expected = [
            -0.99999900000075,
            -1.49999993750001,
            2.99999900000075,
            -0.50000006249999,
        ];
        assert_close(&out, &expected, 1e-12);
        // Running: mean 0.9·0 + 0.1·[2, 4] = [0.2, 0.4]; var 0.9·1 + 0.1·[1, 4] = [1.0, 1.3].
        assert_close(bn.running_mean.data(), &[0.2, 0.4], 1e-15);
        assert_close(bn.running_var.data(), &[1.0, 1.3], 1e-15);
        let names: Vec<_> = bn.buffers().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["running_mean", "running_var"]);

        // Evaluation: out = γ(x − 0.2)/√(1 + ε) + β for feature 0, with 0.4 and 1.3 for feature 1,
        // per sample whatever the batch, leaving the running stats alone.
        let (s0, s1) = (2.0 / (1.0 + 1e-6f64).sqrt(), 0.5 / (1.3 + 1e-6f64).sqrt());
        let expected = [
            s0 * 0.8 + 1.0,
            s1 * 1.6 - 1.0,
            s0 * 2.8 + 1.0,
            s1 * 5.6 - 1.0,
        ];
        assert_close(bn.forward(&x, false).unwrap().data(), &expected, 1e-12);
        let one = Tensor::from_vec(&[1, 2], vec![3.0, 6.0]).unwrap();
        assert_close(
            bn.forward(&one, false).unwrap().data(),
            &expected[2..],
            1e-12,
        );
        assert_close(bn.running_var.data(), &[1.0, 1.3], 1e-15);
        // Backward after evaluation: dx = γ/√(σ²_running + ε) · dout.
        let dout = Tensor::from_vec(&[1, 2], vec![1.0, -2.0]).unwrap();
        assert_close(bn.backward(&dout).unwrap().data(), &[s0, -2.0 * s1], 1e-15);
    }

    #[test]
    fn gradients_match_numerical() {
        let mut rng = Rng::new(2);
        let shapes = [vec![6, 5], vec![3, 4, 3, 5]];
        for (shape, fused_relu) in shapes.iter().flat_map(|s| [(s, false), (s, true)]) {
            let mut bn = batch_norm(shape[1]);
            bn.fuse_relu(fused_relu);
            for p in bn.params() {
                p.value
                    .data_mut()
                    .iter_mut()
                    .for_each(|v| *v = rng.normal());
            }
            let report = check_layer(&mut bn, shape, 3).unwrap();
            assert_eq!(report.len(), 3);
            for (name, err) in report {
                assert!(err <= 1e-6, "{shape:?} relu {fused_relu} {name}: {err}");
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let mut rng = Rng::new(5);
        let x: Tensor<f32> = random(&[32, 8, 16, 16], 2.0, 1.0, &mut rng).cast();
        let dout: Tensor<f32> = random(&[32, 8, 16, 16], 1.0, 0.0, &mut rng).cast();
        let run = || {
            let config = BatchNormConfig {
                features: 8,
                ..Default::default()
            };
            let mut bn = BatchNorm::<f32>::new(&config).unwrap();
            let out = bn.forward(&x, true).unwrap().clone();
            let dx = bn.backward(&dout).unwrap().clone();
            (out, dx, bn.grad_weight.clone(), bn.running_var.clone())
        };
        let one_thread = crate::parallel::team::test_pool(1);
        assert!(one_thread.install(run) == run());
    }

    #[test]
    fn bad_configs_and_shapes_are_errors() {
        for (features, momentum, eps) in [(0, 0.9, 1e-6), (2, 1.5, 1e-6), (2, 0.9, 0.0)] {
            let config = BatchNormConfig {
                features,
                momentum,
                eps,
            };
            assert!(matches!(
                BatchNorm::<f32>::new(&config),
                Err(Error::Config(_))
            ));
        }
        let mut bn = batch_norm(3);
        for shape in [&[4, 2][..], &[4, 2, 5, 5], &[3], &[4, 3, 5], &[0, 3]] {
            let result = bn.forward(&Tensor::zeros(shape), true);
            assert!(matches!(result, Err(Error::Shape(_))), "{shape:?}");
        }
        assert!(bn.output_shape(&[4, 3, 5, 5]).is_ok());
        assert!(matches!(bn.output_shape(&[4, 2]), Err(Error::Shape(_))));
    }

    /// Two equal batch norms, one feature per value of `gamma`, β = `beta`
    /// for each, with the ReLU fused or not.
    fn twin_batch_norms<T: Float>(
        gamma: &[T],
        beta: f64,
        relu: bool,
    ) -> (BatchNorm<T>, BatchNorm<T>) {
        let config = BatchNormConfig {
            features: gamma.len(),
            ..Default::default()
        };
        let twin = || {
            let mut bn = BatchNorm::<T>::new(&config).unwrap();
            bn.fuse_relu(relu);
            bn.weight.data_mut().copy_from_slice(gamma);
            bn.bias.data_mut().fill(T::cast(beta));
            bn
        };
        (twin(), twin())
    }

    /// A batch norm that borrows its input keeps no x̂ and gives the same
    /// output, dx and parameter gradients, to the bit, as one that keeps
    /// x̂: in training and evaluation, with and without the fused ReLU, in
    /// f32 (the vector kernels) and f64; without its input, or with one of
    /// another shape, backward is an error.
    #[test]
    fn borrowing_the_input_gives_the_same_numbers() {
        fn run<T: Float>() {
            let mut rng = Rng::new(8);
            let x: Tensor<T> = random(&[6, 3, 5, 7], 2.0, 0.5, &mut rng).cast();
            let dout: Tensor<T> = random(&[6, 3, 5, 7], 1.0, 0.0, &mut rng).cast();
            for (relu, train) in [(false, true), (true, true), (true, false), (false, false)] {
                let gamma: Vec<T> = (0..3).map(|_| T::cast(0.5 + rng.normal().abs())).collect();
                let (mut kept, mut borrowing) = twin_batch_norms(&gamma, 0.3, relu);
                borrowing.borrow_input(true);
                assert!(borrowing.input_borrowed() && !kept.input_borrowed());
                let want = kept.forward(&x, train).unwrap().clone();
                assert_eq!(borrowing.forward(&x, train).unwrap(), &want);
                assert!(borrowing.xhat.is_empty() && !kept.xhat.is_empty());
                assert!(matches!(borrowing.backward(&dout), Err(Error::Config(_))));
                let wrong = Tensor::zeros(&[6, 3, 7, 5]);
                let result = borrowing.backward_with_input(&wrong, &dout);
                assert!(matches!(result, Err(Error::Shape(_))));
                let want_dx = kept.backward(&dout).unwrap().clone();
                let dx = borrowing.backward_with_input(&x, &dout).unwrap();
                assert_eq!(dx, &want_dx, "relu {relu}, train {train}");
                assert!(dx.data().iter().any(|&v| v != T::zero()));
                assert_eq!(borrowing.grad_weight, kept.grad_weight);
                assert_eq!(borrowing.grad_bias, kept.grad_bias);
            }
            // 2-D input keeps x̂ either way.
            let mut bn = BatchNorm::<T>::new(&BatchNormConfig {
                features: 4,
                ..Default::default()
            })
            .unwrap();
            bn.borrow_input(true);
            let x2: Tensor<T> = random(&[5, 4], 1.0, 0.0, &mut rng).cast();
            bn.forward(&x2, true).unwrap();
            assert!(bn.backward(&x2).is_ok());
        }
        run::<f32>();
        run::<f64>();
    }

    /// A fused 2×2 max pooling gives the numbers of the batch norm and a
    /// `MaxPooling` one after the other, to the bit: the pooled output,
    /// dx from the pooled dout, the parameter gradients; in training and
    /// evaluation, with and without the ReLU, f32 and f64. Without the
    /// input borrowed it is an error.
    #[test]
    fn a_fused_max_pooling_gives_the_layers_numbers() {
        use crate::layers::MaxPooling;
        fn run<T: Float>() {
            let mut rng = Rng::new(12);
            // 7×6 planes: the last row is in no window.
            let x: Tensor<T> = random(&[5, 3, 7, 6], 2.0, 0.5, &mut rng).cast();
            let dout: Tensor<T> = random(&[5, 3, 3, 3], 1.0, 0.0, &mut rng).cast();
            let config = PoolingConfig {
                size: 2,
                stride: 2,
                pad: 0,
            };
            for (relu, train) in [(true, true), (false, true), (true, false), (false, false)] {
                let gamma: Vec<T> = (0..3).map(|_| T::cast(rng.normal())).collect();
                let (mut plain, mut fused) = twin_batch_norms(&gamma, 0.2, relu);
                fused.fuse_max_pool(Some(&config));
                assert!(matches!(fused.forward(&x, train), Err(Error::Config(_))));
                fused.borrow_input(true);
                let mut pool = MaxPooling::<T>::new(&config);
                let y = plain.forward(&x, train).unwrap().clone();
                let want = pool.forward(&y, true).unwrap().clone();
                assert_eq!(fused.forward(&x, train).unwrap(), &want, "relu {relu}");
                let dy = pool.backward(&dout).unwrap().clone();
                let want_dx = plain.backward(&dy).unwrap().clone();
                let dx = fused.backward_with_input(&x, &dout).unwrap();
                assert_eq!(dx, &want_dx, "relu {relu}, train {train}");
                assert!(dx.data().iter().any(|&v| v != T::zero()));
                assert_eq!(fused.grad_weight, plain.grad_weight);
                assert_eq!(fused.grad_bias, plain.grad_bias);
                // dout of the unpooled shape is refused.
                assert!(matches!(
                    fused.backward_with_input(&x, &dy),
                    Err(Error::Shape(_))
                ));
            }
        }
        run::<f32>();
        run::<f64>();
    }

    /// Blocks' sums given to forward are what it uses: the layer's own give
    /// its own output to the bit, changed ones another output, a wrong
    /// number of them an error.
    #[test]
    fn given_block_sums_are_used() {
        let mut rng = Rng::new(13);
        let x: Tensor<f32> = random(&[4, 3, 5, 5], 1.0, 0.5, &mut rng).cast();
        let config = BatchNormConfig {
            features: 3,
            ..Default::default()
        };
        let mut bn = BatchNorm::<f32>::new(&config).unwrap();
        let want = bn.forward(&x, true).unwrap().clone();
        let own: Vec<(f32, f32)> = x.data().chunks(25).map(block_moments).collect();
        let got = bn.forward_with_block_moments(&x, true, &own).unwrap();
        assert_eq!(got, &want);
        let mut changed = own.clone();
        changed[5].0 += 1.0;
        let got = bn.forward_with_block_moments(&x, true, &changed).unwrap();
        assert_ne!(got, &want);
        let result = bn.forward_with_block_moments(&x, true, &own[1..]);
        assert!(matches!(result, Err(Error::Shape(_))));
        // A failed forward leaves nothing for backward.
        assert!(matches!(
            bn.backward(&want),
            Err(Error::BackwardBeforeForward(_))
        ));
    }

    #[test]
    fn backward_before_forward_and_wrong_dout_are_errors() {
        let mut bn = batch_norm(3);
        let result = bn.backward(&Tensor::zeros(&[2, 3]));
        assert!(matches!(
            result,
            Err(Error::BackwardBeforeForward("BatchNorm"))
        ));
        bn.forward(&Tensor::zeros(&[2, 3]), true).unwrap();
        assert!(matches!(
            bn.backward(&Tensor::zeros(&[3, 2])),
            Err(Error::Shape(_))
        ));
    }
}
