//! Local response normalization across channels (book §7.7.2, AlexNet's
//! "LRN"; Krizhevsky, Sutskever and Hinton, "ImageNet Classification with
//! Deep Convolutional Neural Networks", 2012, §3.3).
//!
//! ```text
//! x = a: (N, C, H, W)  →  out = b: (N, C, H, W), at every pixel:
//! s_c = k + α/n · Σ_{c' = c − ⌊n/2⌋ … c + ⌊(n−1)/2⌋} a_{c'}²   (c' outside 0..C counts as 0)
//! b_c = a_c · s_c^(−β)
//! dx_j = dout_j · s_j^(−β) − (2αβ/n) · a_j · Σ_{c: j ∈ window(c)} dout_c · a_c · s_c^(−β−1)
//! ```
//!
//! This is PyTorch's `torch.nn.LocalResponseNorm(size=n, alpha, beta, k)`:
//! α is divided by the window size `n`, and an even `n` takes one more
//! channel below `c` than above. [`LrnConfig::default`] is PyTorch's defaults
//! with `n = 5`.
//!
//! The AlexNet paper writes `b_c = a_c / (k + α Σ a²)^β` over
//! `c − n/2 … c + n/2`, with α *not* divided by `n`; its `k = 2, n = 5,
//! α = 1e-4, β = 0.75` are therefore PyTorch's `LocalResponseNorm(5,
//! alpha=5e-4, beta=0.75, k=2)`, which is [`LrnConfig::alexnet`]. (For odd
//! `n` the two windows agree; for an even one the paper's has `n + 1`
//! channels.)
//!
//! ```
//! use convnet::layers::{Layer, LocalResponseNorm, LrnConfig};
//! use convnet::Tensor;
//! // One channel: s = 1 + 3·1² = 4, b = 1 · 4^(−1/2) = 0.5.
//! let config = LrnConfig { size: 1, alpha: 3.0, beta: 0.5, k: 1.0 };
//! let mut lrn = LocalResponseNorm::<f64>::new(&config).unwrap();
//! let x = Tensor::from_vec(&[1, 1, 1, 1], vec![1.0]).unwrap();
//! assert!((lrn.forward(&x, false).unwrap().data()[0] - 0.5).abs() < 1e-15);
//! // dx = 4^(−1/2) − 2·3·0.5 · 1 · 1 · 4^(−3/2) = 0.5 − 0.375.
//! let dx = lrn.backward(&Tensor::from_vec(&[1, 1, 1, 1], vec![1.0]).unwrap()).unwrap();
//! assert!((dx.data()[0] - 0.125).abs() < 1e-15);
//! ```

use super::elementwise::planes_per_task;
use super::{check_dout, Layer};
use crate::error::{Error, Result};
use crate::networks::spec::LayerSpec;
use crate::parallel::ELEMENTWISE_CHUNK;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// Hyper-parameters of [`LocalResponseNorm`], in PyTorch's convention.
#[derive(Clone, Debug, PartialEq)]
pub struct LrnConfig {
    /// `n`: the number of channels in the window.
    pub size: usize,
    /// α, divided by `n` (PyTorch's convention, not the AlexNet paper's).
    pub alpha: f64,
    /// β, the exponent.
    pub beta: f64,
    /// `k`, the additive constant; must be positive.
    pub k: f64,
}

impl Default for LrnConfig {
    /// PyTorch's defaults (α = 1e-4, β = 0.75, k = 1) with a 5-channel window.
    fn default() -> Self {
        LrnConfig {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 1.0,
        }
    }
}

impl LrnConfig {
    /// The AlexNet paper's `k = 2, n = 5, α = 1e-4, β = 0.75`, with α
    /// multiplied by `n` for this layer's α/n convention.
    pub const fn alexnet() -> Self {
        LrnConfig {
            size: 5,
            alpha: 5e-4,
            beta: 0.75,
            k: 2.0,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.size == 0 {
            return Err(Error::Config(
                "LocalResponseNorm: size must be at least 1".into(),
            ));
        }
        let finite = self.k.is_finite() && self.alpha.is_finite() && self.beta.is_finite();
        if !(finite && self.k > 0.0 && self.alpha >= 0.0) {
            return Err(Error::Config(format!(
                "LocalResponseNorm: needs finite k > 0, alpha >= 0 and beta, got {self:?}"
            )));
        }
        Ok(())
    }

    /// The channels whose squares enter channel `c`'s sum.
    fn window(&self, c: usize, channels: usize) -> Range<usize> {
        c.saturating_sub(self.size / 2)..(c + (self.size - 1) / 2 + 1).min(channels)
    }

    /// The channels whose window contains channel `j` (the transpose of `window`).
    fn users(&self, j: usize, channels: usize) -> Range<usize> {
        j.saturating_sub((self.size - 1) / 2)..(j + self.size / 2 + 1).min(channels)
    }
}

/// Local response normalization across channels.
pub struct LocalResponseNorm<T> {
    /// Window size n, α, β and k.
    pub config: LrnConfig,
    /// The last input `a`.
    x: Tensor<T>,
    /// `s` of every element of the last input.
    scale: Tensor<T>,
    /// Backward's `dout_c · a_c · s_c^(−β−1)`.
    work: Tensor<T>,
    out: Tensor<T>,
    dx: Tensor<T>,
    has_forward: bool,
}

impl<T: Float> LocalResponseNorm<T> {
    /// An error ([`Error::Config`]) for a window of 0 channels, `k ≤ 0`,
    /// `α < 0` or a non-finite value.
    pub fn new(config: &LrnConfig) -> Result<Self> {
        config.validate()?;
        Ok(LocalResponseNorm {
            config: config.clone(),
            x: Tensor::default(),
            scale: Tensor::default(),
            work: Tensor::default(),
            out: Tensor::default(),
            dx: Tensor::default(),
            has_forward: false,
        })
    }
}

impl<T: Float> Layer<T> for LocalResponseNorm<T> {
    fn kind(&self) -> &'static str {
        "LocalResponseNorm"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.config.validate()?;
        match input {
            [_, _, _, _] => Ok(input.to_vec()),
            _ => Err(Error::Shape(format!(
                "LocalResponseNorm expects (N, C, H, W) input, got {input:?}"
            ))),
        }
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // Per element: n multiply-adds for the sum, 2 for s, the power and b.
        (2 * self.config.size as u64 + 4) * input.iter().product::<usize>() as u64
    }

    fn forward(&mut self, x: &Tensor<T>, _train: bool) -> Result<&Tensor<T>> {
        self.output_shape(x.shape())?;
        let (_, c, h, w) = x.dims4()?;
        let plane = h * w;
        self.x.copy_from(x);
        self.scale.resize(x.shape());
        self.out.resize(x.shape());
        self.has_forward = true;
        if x.is_empty() {
            return Ok(&self.out);
        }
        let cfg = &self.config;
        let k = T::cast(cfg.k);
        let alpha_n = T::cast(cfg.alpha / cfg.size as f64);
        let neg_beta = T::cast(-cfg.beta);
        let x = x.data();
        // One task per run of (image, channel) planes.
        self.scale
            .data_mut()
            .par_chunks_mut(plane)
            .zip(self.out.data_mut().par_chunks_mut(plane))
            .enumerate()
            .with_min_len(planes_per_task(plane))
            .for_each(|(i, (s_p, out_p))| {
                let (n, ch) = (i / c, i % c);
                let image = &x[n * c * plane..][..c * plane];
                s_p.fill(T::zero());
                for src in cfg.window(ch, c) {
                    for (s, &v) in s_p.iter_mut().zip(&image[src * plane..][..plane]) {
                        *s += v * v;
                    }
                }
                let x_p = &image[ch * plane..][..plane];
                for ((s, o), &v) in s_p.iter_mut().zip(out_p.iter_mut()).zip(x_p) {
                    *s = k + alpha_n * *s;
                    *o = v * s.powf(neg_beta);
                }
            });
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        let shape = self.has_forward.then_some(self.out.shape());
        check_dout("LocalResponseNorm", shape, dout)?;
        self.config.validate()?;
        let (_, c, h, w) = self.x.dims4()?;
        let plane = h * w;
        self.work.resize(dout.shape());
        self.dx.resize(dout.shape());
        if dout.is_empty() {
            return Ok(&self.dx);
        }
        // t_c = dout_c · a_c · s_c^(−β−1) = dout_c · b_c / s_c.
        self.work
            .data_mut()
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(dout.data().par_chunks(ELEMENTWISE_CHUNK))
            .zip(self.out.data().par_chunks(ELEMENTWISE_CHUNK))
            .zip(self.scale.data().par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(((t, g), b), s)| {
                for (((t, &g), &b), &s) in t.iter_mut().zip(g).zip(b).zip(s) {
                    *t = g * b / s;
                }
            });
        let cfg = &self.config;
        let coef = T::cast(2.0 * cfg.alpha * cfg.beta / cfg.size as f64);
        let neg_beta = T::cast(-cfg.beta);
        let (t, g, a, s) = (
            self.work.data(),
            dout.data(),
            self.x.data(),
            self.scale.data(),
        );
        self.dx
            .data_mut()
            .par_chunks_mut(plane)
            .enumerate()
            .with_min_len(planes_per_task(plane))
            .for_each(|(i, dx_p)| {
                let (n, j) = (i / c, i % c);
                let t_image = &t[n * c * plane..][..c * plane];
                dx_p.fill(T::zero());
                for user in cfg.users(j, c) {
                    for (d, &tv) in dx_p.iter_mut().zip(&t_image[user * plane..][..plane]) {
                        *d += tv;
                    }
                }
                let at = i * plane..(i + 1) * plane;
                let rows = g[at.clone()].iter().zip(&a[at.clone()]).zip(&s[at]);
                for (d, ((&g, &a), &s)) in dx_p.iter_mut().zip(rows) {
                    *d = g * s.powf(neg_beta) - coef * a * *d;
                }
            });
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::Lrn(self.config.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;

    fn config(size: usize, alpha: f64, beta: f64, k: f64) -> LrnConfig {
        LrnConfig {
            size,
            alpha,
            beta,
            k,
        }
    }

    fn close(got: &[f64], want: &[f64], tol: f64) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn worked_example_size_2() {
        // One pixel, channels a = [1, 2, 3]; n = 2, α = 0.1, β = 1, k = 1.
        // Windows c−1..c: s0 = 1 + 0.05·1 = 1.05, s1 = 1 + 0.05·(1+4) = 1.25,
        // s2 = 1 + 0.05·(4+9) = 1.65; b = [1/1.05, 2/1.25, 3/1.65].
        let mut lrn = LocalResponseNorm::<f64>::new(&config(2, 0.1, 1.0, 1.0)).unwrap();
        let x = Tensor::from_vec(&[1, 3, 1, 1], vec![1., 2., 3.]).unwrap();
        let out = lrn.forward(&x, true).unwrap().data().to_vec();
        let want = [0.952_380_952_380_952_4, 1.6, 1.818_181_818_181_818_2];
        close(&out, &want, 1e-15);
        close(lrn.scale.data(), &[1.05, 1.25, 1.65], 1e-15);
        // dout = [1, −2, 0.5]; 2αβ/n = 0.1; t_c = dout_c·a_c/s_c² =
        // [1/1.1025, −4/1.5625, 1.5/2.7225]; channel j is in the windows of
        // c = j and j + 1, so
        // dx0 = 1/1.05 − 0.1·1·(t0 + t1), dx1 = −2/1.25 − 0.1·2·(t1 + t2),
        // dx2 = 0.5/1.65 − 0.1·3·t2.
        let dout = Tensor::from_vec(&[1, 3, 1, 1], vec![1., -2., 0.5]).unwrap();
        let dx = lrn.backward(&dout).unwrap().data().to_vec();
        let want = [
            1.117_678_004_535_147,
            -1.198_192_837_465_565,
            0.137_741_046_831_956,
        ];
        close(&dx, &want, 1e-14);
    }

    #[test]
    fn worked_example_size_3() {
        // a = [1, 2, 3]; n = 3 (window c−1..c+1), α = 0.3, β = 0.75, k = 2.
        // s = 2 + 0.1·[1+4, 1+4+9, 4+9] = [2.5, 3.4, 3.3];
        // b = [1·2.5^−0.75, 2·3.4^−0.75, 3·3.3^−0.75].
        let mut lrn = LocalResponseNorm::<f64>::new(&config(3, 0.3, 0.75, 2.0)).unwrap();
        let x = Tensor::from_vec(&[1, 3, 1, 1], vec![1., 2., 3.]).unwrap();
        let out = lrn.forward(&x, true).unwrap().data().to_vec();
        let want = [
            0.502_973_371_873_174,
            0.798_768_275_715_908,
            1.225_281_284_102_679,
        ];
        close(&out, &want, 1e-14);
        close(lrn.scale.data(), &[2.5, 3.4, 3.3], 1e-15);
        let report = check_layer(&mut lrn, &[1, 3, 1, 1], 1).unwrap();
        assert!(report[0].1 <= 1e-6, "{report:?}");
    }

    #[test]
    fn gradients_match_numerical() {
        for size in [1, 2, 3, 5] {
            let mut lrn = LocalResponseNorm::<f64>::new(&config(size, 0.5, 0.75, 1.0)).unwrap();
            for (name, err) in check_layer(&mut lrn, &[2, 7, 3, 3], 11).unwrap() {
                assert!(err <= 1e-6, "size {size} {name}: {err}");
            }
        }
    }

    #[test]
    fn configs() {
        assert_eq!(LrnConfig::default(), config(5, 1e-4, 0.75, 1.0));
        let a = LrnConfig::alexnet();
        assert_eq!(a, config(5, 5e-4, 0.75, 2.0));
        // The paper's α·Σ equals this layer's α/n·Σ.
        assert!((a.alpha / a.size as f64 - 1e-4).abs() < 1e-18);
        assert_eq!(a.window(0, 7), 0..3);
        assert_eq!(a.window(6, 7), 4..7);
        assert_eq!(config(4, 1.0, 1.0, 1.0).window(3, 7), 1..5);
        assert_eq!(config(4, 1.0, 1.0, 1.0).users(3, 7), 2..6);
    }

    #[test]
    fn errors_instead_of_panics() {
        for bad in [config(0, 1e-4, 0.75, 1.0), config(5, 1e-4, 0.75, 0.0)] {
            let lrn = LocalResponseNorm::<f32>::new(&bad);
            assert!(matches!(lrn, Err(Error::Config(_))));
        }
        let mut lrn = LocalResponseNorm::<f32>::new(&LrnConfig::default()).unwrap();
        assert!(matches!(
            lrn.backward(&Tensor::zeros(&[1, 2, 2, 2])),
            Err(Error::BackwardBeforeForward("LocalResponseNorm"))
        ));
        let flat = lrn.forward(&Tensor::zeros(&[2, 3]), true);
        assert!(matches!(flat, Err(Error::Shape(_))));
        lrn.forward(&Tensor::zeros(&[1, 2, 2, 2]), true).unwrap();
        let dx = lrn.backward(&Tensor::zeros(&[1, 2, 2, 1]));
        assert!(matches!(dx, Err(Error::Shape(_))));
        lrn.config.size = 0;
        let out = lrn.forward(&Tensor::zeros(&[1, 2, 2, 2]), true);
        assert!(matches!(out, Err(Error::Config(_))));
        assert_eq!(lrn.kind(), "LocalResponseNorm");
    }
}
