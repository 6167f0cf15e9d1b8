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
//! `"running_var"`. The statistics and gradient sums run in parallel over
//! features, each one summed in a fixed order (each sample's pixels in
//! interleaved partial sums, [`crate::kernels::reduce`], then the samples in
//! order), so results do not depend on the number of threads.
//!
//! ```
//! use convnet::layers::{BatchNorm, BatchNormConfig, Layer};
//! use convnet::Tensor;
//! let mut bn = BatchNorm::<f64>::new(&BatchNormConfig { features: 1, ..Default::default() }).unwrap();
//! let x = Tensor::from_vec(&[2, 1], vec![1.0, 3.0]).unwrap();
//! let y = bn.forward(&x, true).unwrap(); // μ = 2, σ² = 1
//! assert!((y.data()[0] + 1.0).abs() < 1e-6 && (y.data()[1] - 1.0).abs() < 1e-6);
//! ```

use super::elementwise::ELEMENTWISE_CHUNK;
use super::relu::{relu, relu_backward};
use super::{check_dout, weight_and_bias, Layer, Param};
use crate::error::{Error, Result};
use crate::kernels::reduce::lane_sum_by;
use crate::networks::spec::LayerSpec;
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
/// feature per sample (1 for 2-D input).
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

    /// Features per rayon task: about `ELEMENTWISE_CHUNK` values per task,
    /// so that small inputs run in one task.
    fn features_per_task(&self) -> usize {
        ELEMENTWISE_CHUNK.div_ceil(self.count().max(1))
    }

    /// Samples per rayon task, likewise.
    fn samples_per_task(&self) -> usize {
        ELEMENTWISE_CHUNK.div_ceil((self.c * self.hw).max(1))
    }
}

/// Σ f(a_i, b_i) over the values of feature `ch`: over n of each sample's
/// block by [`lane_sum_by`] (a fixed order the compiler vectorises), then
/// the blocks in order of n.
fn channel_sum<T: Float>(
    a: &[T],
    b: &[T],
    l: Layout,
    ch: usize,
    f: impl Fn(T, T) -> T + Copy,
) -> T {
    let mut total = T::zero();
    if l.hw == 1 {
        // (N, D) input: one value per sample, which `lane_sum_by` would
        // return as it is (x + 0 = x), so the same sum without its set-up.
        for n in 0..l.n {
            let i = n * l.c + ch;
            total += f(a[i], b[i]);
        }
        return total;
    }
    for n in 0..l.n {
        let start = (n * l.c + ch) * l.hw;
        let block = start..start + l.hw;
        total += lane_sum_by(&a[block.clone()], &b[block], f);
    }
    total
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
    /// Layout of the last forward and whether it was training; `None` before any.
    last: Option<(Layout, bool)>,
    /// Per feature: the μ and 1/√(σ² + ε) the last forward used.
    mean: Vec<T>,
    inv_std: Vec<T>,
    /// x̂, the shape of the input.
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
            last: None,
            mean: vec![T::zero(); features],
            inv_std: vec![T::zero(); features],
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
    /// recomputes `z = γ · x̂ + β` from the kept x̂, the same operations as
    /// forward, so `z > 0` exactly where the ReLU passed its input. The
    /// numbers are the same to the bit as the two layers one after the
    /// other.
    pub fn fuse_relu(&mut self, on: bool) {
        self.relu = on;
        self.last = None;
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
        let l = self.layout(x.shape())?;
        let (shape, x) = (x.shape(), x.data());
        if train {
            if l.count() == 0 {
                return Err(Error::Shape(
                    "BatchNorm: training needs at least one value per feature".into(),
                ));
            }
            let m = T::cast(l.count() as f64);
            // mean ← μ, inv_std ← σ² for now.
            self.mean
                .par_iter_mut()
                .zip(self.inv_std.par_iter_mut())
                .enumerate()
                .with_min_len(l.features_per_task())
                .for_each(|(ch, (mean, var))| {
                    let mu = channel_sum(x, x, l, ch, |v, _| v) / m;
                    *mean = mu;
                    *var = channel_sum(x, x, l, ch, |v, _| (v - mu) * (v - mu)) / m;
                });
            let (keep, new) = (T::cast(self.momentum), T::cast(1.0 - self.momentum));
            let running = self.running_mean.data_mut().iter_mut();
            let running = running.zip(self.running_var.data_mut().iter_mut());
            for ((rm, rv), (&mu, var)) in running.zip(self.mean.iter().zip(&mut self.inv_std)) {
                *rm = keep * *rm + new * mu;
                *rv = keep * *rv + new * *var;
                *var = (*var + T::cast(self.eps)).sqrt().recip();
            }
        } else {
            self.mean.copy_from_slice(self.running_mean.data());
            for (s, &var) in self.inv_std.iter_mut().zip(self.running_var.data()) {
                *s = (var + T::cast(self.eps)).sqrt().recip();
            }
        }

        self.out.resize(shape);
        self.xhat.resize(self.out.shape());
        let sample = (l.c * l.hw).max(1);
        let (gamma, beta) = (self.weight.data(), self.bias.data());
        let (mean, inv_std, fused_relu) = (&self.mean, &self.inv_std, self.relu);
        self.out
            .data_mut()
            .par_chunks_mut(sample)
            .zip(self.xhat.data_mut().par_chunks_mut(sample))
            .zip(x.par_chunks(sample))
            .with_min_len(l.samples_per_task())
            .for_each(|((out, xhat), x)| {
                let blocks = out.chunks_mut(l.hw).zip(xhat.chunks_mut(l.hw));
                for (ch, ((out, xhat), x)) in blocks.zip(x.chunks(l.hw)).enumerate() {
                    let (mu, s, g, b) = (mean[ch], inv_std[ch], gamma[ch], beta[ch]);
                    let values = out.iter_mut().zip(xhat).zip(x);
                    if fused_relu {
                        for ((o, h), &v) in values {
                            *h = (v - mu) * s;
                            *o = relu(g * *h + b);
                        }
                    } else {
                        for ((o, h), &v) in values {
                            *h = (v - mu) * s;
                            *o = g * *h + b;
                        }
                    }
                }
            });
        self.last = Some((l, train));
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        let Some((l, train)) = self.last else {
            return Err(Error::BackwardBeforeForward("BatchNorm"));
        };
        check_dout("BatchNorm", Some(self.out.shape()), dout)?;
        let (dout, xhat) = (dout.data(), self.xhat.data());
        let (gamma, beta, fused_relu) = (self.weight.data(), self.bias.data(), self.relu);
        // The gradient at γ · x̂ + β: dout itself, or through the fused ReLU.
        let upstream = |ch: usize| {
            let (gamma, beta) = (gamma[ch], beta[ch]);
            move |g: T, h: T| {
                if fused_relu {
                    relu_backward(gamma * h + beta, g)
                } else {
                    g
                }
            }
        };
        // dβ = Σ dz, dγ = Σ dz · x̂ per feature.
        self.grad_bias
            .data_mut()
            .par_iter_mut()
            .zip(self.grad_weight.data_mut().par_iter_mut())
            .enumerate()
            .with_min_len(l.features_per_task())
            .for_each(|(ch, (db, dg))| {
                let dz = upstream(ch);
                *db = channel_sum(dout, xhat, l, ch, dz);
                *dg = channel_sum(dout, xhat, l, ch, move |g, h| dz(g, h) * h);
            });

        self.dx.resize(self.out.shape());
        let m = T::cast(l.count() as f64);
        let sample = (l.c * l.hw).max(1);
        let inv_std = &self.inv_std;
        let (dgamma, dbeta) = (self.grad_weight.data(), self.grad_bias.data());
        self.dx
            .data_mut()
            .par_chunks_mut(sample)
            .zip(dout.par_chunks(sample))
            .zip(xhat.par_chunks(sample))
            .with_min_len(l.samples_per_task())
            .for_each(|((dx, dout), xhat)| {
                let blocks = dx.chunks_mut(l.hw).zip(dout.chunks(l.hw));
                for (ch, ((dx, dout), xhat)) in blocks.zip(xhat.chunks(l.hw)).enumerate() {
                    let dz = upstream(ch);
                    let values = dx.iter_mut().zip(dout).zip(xhat);
                    if train {
                        let k = gamma[ch] * inv_std[ch] / m;
                        let (db, dg) = (dbeta[ch], dgamma[ch]);
                        for ((d, &g), &h) in values {
                            *d = k * (m * dz(g, h) - db - h * dg);
                        }
                    } else {
                        let k = gamma[ch] * inv_std[ch];
                        for ((d, &g), &h) in values {
                            *d = k * dz(g, h);
                        }
                    }
                }
            });
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
                let d = out.data();
                let mean = channel_sum(d, d, l, ch, |v, _| v) / m;
                // σ²/(σ² + ε) with σ² ≈ 9.
                let var = channel_sum(d, d, l, ch, |v, _| (v - mean).powi(2)) / m;
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
