//! Affine (fully connected) layer (book §5.6, `common/layers.py: Affine`).
//!
//! ```text
//! x: (N, D) — or (N, C, H, W), flattened to D = C·H·W as in §7.5
//! W: (D, M)    b: (M)    out: (N, M)
//!
//! out = x · W + b
//! dx  = dout · W^T   (restored to x's original shape)
//! dW  = x^T · dout
//! db  = Σ_n dout[n]
//! ```
//!
//! `W` is stored `(in, out)` as in the book (PyTorch's `nn.Linear` stores its
//! transpose).
//!
//! ```
//! use convnet::layers::{Affine, Layer};
//! use convnet::Tensor;
//! let w = Tensor::from_vec(&[2, 1], vec![1.0f32, 2.0]).unwrap();
//! let b = Tensor::from_vec(&[1], vec![0.5]).unwrap();
//! let mut fc = Affine::from_params(w, b).unwrap();
//! let x = Tensor::from_vec(&[1, 2], vec![3.0, 4.0]).unwrap();
//! assert_eq!(fc.forward(&x, false).unwrap().data(), [11.5]);
//! ```

use super::elementwise::keep_copy;
use super::{check_dout, weight_and_bias, Layer, Param};
use crate::error::{Error, Result};
use crate::init::Init;
use crate::kernels::gemm::{matmul, matmul_split_k, MatMut, MatRef};
use crate::kernels::gemv::gemv_accumulate;
use crate::networks::spec::LayerSpec;
use crate::parallel::team::run_parts_in_team_or_here;
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};

/// Hyper-parameters of an [`Affine`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct AffineConfig {
    /// D, the size of one flattened input.
    pub inputs: usize,
    /// M, the number of outputs.
    pub outputs: usize,
    /// How W is drawn (book §6.2).
    pub init: Init,
}

impl Default for AffineConfig {
    fn default() -> Self {
        AffineConfig {
            inputs: 100,
            outputs: 10,
            init: Init::default(),
        }
    }
}

/// A fully connected layer.
pub struct Affine<T> {
    /// W: (D, M)
    pub weight: Tensor<T>,
    /// b: (M)
    pub bias: Tensor<T>,
    /// ∂L/∂W: (D, M), filled by `backward`.
    pub grad_weight: Tensor<T>,
    /// ∂L/∂b: (M), filled by `backward`.
    pub grad_bias: Tensor<T>,
    /// The last training input, flattened to (N, D).
    x: Tensor<T>,
    /// The last training input's original shape, restored in `dx`; empty
    /// before a training forward.
    input_shape: Vec<usize>,
    out: Tensor<T>,
    /// Partial products of a forward split along D (see [`k_parts`] and,
    /// for one image, [`forward_one_image`]).
    partial_out: Vec<T>,
    dx: Tensor<T>,
}

/// Into how many slices the forward product `x · W` is cut along D. A long
/// D with a small output (SimpleConvNet's fc1: D = 4,320, 100 × 100 outputs)
/// leaves too little work to split the output between threads, so D is
/// split instead, in a number of parts that depends on the shapes only (not
/// on the thread count), which keeps results reproducible.
///
/// ```text
/// fc1 at batch 100: k_parts(100, 4320, 100) = 8;  at batch 2: 1
/// ```
///
/// (One image never comes here: see [`forward_one_image`].)
fn k_parts(n: usize, d: usize, m: usize) -> usize {
    // Small products (a few images) are not worth a rayon split.
    if d >= 1024 && n * m <= 1 << 16 && n * d * m >= 1 << 22 {
        (d / 512).min(8)
    } else {
        1
    }
}

/// Multiply-adds (D·M) from which one image's product is cut in two
/// halves of D: below it, one pass is faster.
const SPLIT_MIN_PRODUCT: usize = 1 << 16;

/// `out += x · W` for one image, `x: (D)`, `W: (D, M)`: `kernels::gemv`.
///
/// A large product is cut into the two halves of D, which a batch-1 team
/// (`parallel::team`) computes side by side, each member reading half of
/// W: SimpleConvNet's fc1 (1.7 MB) is then two contiguous halves that each
/// fit in one core's L2, where the whole did not. Without a team the same
/// two halves run one after the other, so the sum, and its bits, do not
/// depend on the thread count:
///
/// ```text
/// out = (out + x[..D/2] · W[..D/2]) + x[D/2..] · W[D/2..]
/// ```
fn forward_one_image<T: Float>(out: &mut [T], x: &[T], w: &[T], partial: &mut Vec<T>) {
    let (d, m) = (x.len(), out.len());
    if d * m < SPLIT_MIN_PRODUCT {
        return gemv_accumulate(out, x, w, m);
    }
    let half = d / 2;
    partial.clear();
    partial.resize(m, T::zero());
    // Shared out even when the members are distant: the gain is each half
    // of W staying in one core's cache, which no distance undoes.
    run_parts_in_team_or_here(1, true, [&mut *out, &mut partial[..]], |part, out| {
        let rows = if part == 0 { 0..half } else { half..d };
        gemv_accumulate(out, &x[rows.clone()], &w[rows.start * m..rows.end * m], m);
    });
    out.iter_mut()
        .zip(partial.iter())
        .for_each(|(o, &p)| *o += p);
}

/// Multiply-adds (N·D·M) from which backward runs its two products side by
/// side: below it, one thread is faster.
const PARALLEL_MIN_PRODUCT: usize = 1 << 18;

/// dW: (D, M) = x^T · dout and db: (M) = Σ_n dout[n], for x: (N, D).
fn param_grads<T: Float>(
    x: &Tensor<T>,
    dout: &Tensor<T>,
    grad_weight: &mut Tensor<T>,
    grad_bias: &mut Tensor<T>,
    parallel: bool,
) {
    let (n, d) = (x.batch(), x.len() / x.batch().max(1));
    let m = grad_bias.len();
    matmul(
        MatMut::new(grad_weight.data_mut(), d, m),
        MatRef::new(x.data(), n, d).t(),
        MatRef::new(dout.data(), n, m),
        false,
        parallel,
    );
    let db = grad_bias.data_mut();
    db.fill(T::zero());
    for row in dout.data().chunks(m) {
        db.iter_mut().zip(row).for_each(|(b, &g)| *b += g);
    }
}

impl<T: Float> Affine<T> {
    /// Backward needs a training forward and a `dout` of the output's shape.
    fn check_backward(&self, dout: &Tensor<T>) -> Result<()> {
        if self.input_shape.is_empty() {
            return Err(Error::BackwardBeforeForward("Affine"));
        }
        check_dout("Affine", Some(self.out.shape()), dout)
    }

    /// A layer with weights drawn by `config.init` (fan-in D) and zero biases.
    pub fn new(config: &AffineConfig, rng: &mut Rng) -> Self {
        let weight = config.init.tensor(
            &[config.inputs, config.outputs],
            config.inputs,
            config.outputs,
            rng,
        );
        Self::from_params(weight, Tensor::zeros(&[config.outputs])).expect("shapes agree")
    }

    /// A layer with the given `W: (D, M)` and `b: (M)`.
    pub fn from_params(weight: Tensor<T>, bias: Tensor<T>) -> Result<Self> {
        let &[_, outputs] = weight.shape() else {
            return Err(Error::Shape(format!(
                "Affine: weight must be 2-D (in, out), got {:?}",
                weight.shape()
            )));
        };
        if bias.shape() != [outputs] {
            return Err(Error::Shape(format!(
                "Affine: bias shape {:?} does not match {outputs} outputs",
                bias.shape()
            )));
        }
        Ok(Affine {
            grad_weight: Tensor::zeros(weight.shape()),
            grad_bias: Tensor::zeros(bias.shape()),
            weight,
            bias,
            x: Tensor::default(),
            input_shape: Vec::new(),
            out: Tensor::default(),
            partial_out: Vec::new(),
            dx: Tensor::default(),
        })
    }

    /// Like [`backward`](Layer::backward), but only the parameter
    /// gradients: the network calls this on its first layer, whose `dx`
    /// (the gradient of the images) nobody uses.
    pub fn backward_params_only(&mut self, dout: &Tensor<T>) -> Result<()> {
        self.check_backward(dout)?;
        param_grads(
            &self.x,
            dout,
            &mut self.grad_weight,
            &mut self.grad_bias,
            true,
        );
        Ok(())
    }

    fn dims(&self) -> (usize, usize) {
        (self.weight.shape()[0], self.weight.shape()[1])
    }
}

impl<T: Float> Layer<T> for Affine<T> {
    fn kind(&self) -> &'static str {
        "Affine"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (d, m) = self.dims();
        let flat: usize = input.iter().skip(1).product();
        if input.len() < 2 || flat != d {
            return Err(Error::Shape(format!(
                "Affine expects inputs of {d} values (N, {d}), got shape {input:?}"
            )));
        }
        Ok(vec![input[0], m])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let (d, m) = self.dims();
        input.first().map_or(0, |&n| (n * m * (2 * d + 1)) as u64)
    }

    fn forward(&mut self, x: &Tensor<T>, train: bool) -> Result<&Tensor<T>> {
        let out_shape = self.output_shape(x.shape())?;
        let (d, m) = self.dims();
        let n = x.batch();
        // x: (N, D) — in training, keep a copy for dW in backward; an
        // inference forward leaves nothing for backward.
        self.input_shape.clear();
        if train {
            keep_copy(x, &mut self.x);
            self.x.reshape(&[n, d])?;
            self.input_shape.extend_from_slice(x.shape());
        }
        // out: (N, M) = b (broadcast) + x · W
        self.out.resize(&out_shape);
        for row in self.out.data_mut().chunks_mut(m) {
            row.copy_from_slice(self.bias.data());
        }
        if n == 1 {
            let (out, w) = (self.out.data_mut(), self.weight.data());
            forward_one_image(out, x.data(), w, &mut self.partial_out);
            return Ok(&self.out);
        }
        let (out, x, w) = (
            MatMut::new(self.out.data_mut(), n, m),
            MatRef::new(x.data(), n, d),
            MatRef::new(self.weight.data(), d, m),
        );
        match k_parts(n, d, m) {
            1 => matmul(out, x, w, true, true),
            parts => matmul_split_k(out, x, w, true, parts, &mut self.partial_out),
        }
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        self.check_backward(dout)?;
        let (d, m) = self.dims();
        let n = self.x.batch();
        self.dx.resize(&[n, d]);
        // dx and dW do not depend on each other: compute them side by side.
        // Each product may still split further, so that machines with more
        // than two cores use them all. A small layer (fc2, or a batch of
        // one) runs on this thread: waking another costs more than its work.
        let parallel = n * d * m >= PARALLEL_MIN_PRODUCT;
        let (x, weight, dx) = (&self.x, &self.weight, &mut self.dx);
        let (grad_weight, grad_bias) = (&mut self.grad_weight, &mut self.grad_bias);
        let mut dx_product = || {
            // dx: (N, D) = dout · W^T
            matmul(
                MatMut::new(dx.data_mut(), n, d),
                MatRef::new(dout.data(), n, m),
                MatRef::new(weight.data(), d, m).t(),
                false,
                parallel,
            )
        };
        let mut dw_product = || param_grads(x, dout, grad_weight, grad_bias, parallel);
        if parallel {
            rayon::join(dx_product, dw_product);
        } else {
            dx_product();
            dw_product();
        }
        // Back to the input's shape.
        self.dx.reshape(&self.input_shape)?;
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
        Some(LayerSpec::Affine {
            outputs: self.weight.shape()[1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;

    #[test]
    fn gradients_match_numerical_for_2d_and_4d_input() {
        let mut rng = Rng::new(2);
        let config = AffineConfig {
            inputs: 12,
            outputs: 5,
            init: Init::Std(0.5),
        };
        let mut fc = Affine::<f64>::new(&config, &mut rng);
        fc.bias
            .data_mut()
            .iter_mut()
            .for_each(|b| *b = rng.normal());
        for shape in [&[4, 12][..], &[1, 12][..], &[3, 3, 2, 2][..]] {
            let report = check_layer(&mut fc, shape, 9).unwrap();
            assert_eq!(report.len(), 3);
            for (name, err) in report {
                assert!(err <= 1e-6, "{shape:?} {name}: {err}");
            }
        }
    }

    /// One image through a product large enough to be cut in two: the same
    /// bits in a batch-1 team as on one thread, and the definition's value.
    #[test]
    fn one_image_gives_the_same_bits_with_and_without_a_team() {
        let mut rng = Rng::new(3);
        let (d, m) = (611, 110);
        assert!(d * m >= SPLIT_MIN_PRODUCT, "the split must be exercised");
        let mut fc = Affine::<f32>::new(
            &AffineConfig {
                inputs: d,
                outputs: m,
                init: Init::He,
            },
            &mut rng,
        );
        fc.bias
            .data_mut()
            .iter_mut()
            .for_each(|b| *b = rng.normal() as f32);
        let x = Tensor::from_vec(&[1, d], (0..d).map(|_| rng.normal() as f32).collect()).unwrap();
        let alone = fc.forward(&x, false).unwrap().clone();
        // A pool of two threads, so that the team has its helper.
        let in_team = crate::parallel::team::test_pool(2).install(|| {
            crate::parallel::team::with_team(|| fc.forward(&x, false).unwrap().clone())
        });
        assert_eq!(alone.data(), in_team.data());
        let (w, b) = (fc.weight.data(), fc.bias.data());
        for (j, &got) in alone.data().iter().enumerate() {
            let want: f64 = f64::from(b[j])
                + (0..d)
                    .map(|i| f64::from(x.data()[i]) * f64::from(w[i * m + j]))
                    .sum::<f64>();
            assert!(
                (f64::from(got) - want).abs() <= 1e-4,
                "{j}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn dx_has_the_input_shape_and_errors_are_errors() {
        let mut fc = Affine::<f32>::new(
            &AffineConfig {
                inputs: 8,
                outputs: 3,
                init: Init::He,
            },
            &mut Rng::new(0),
        );
        assert!(matches!(
            fc.backward(&Tensor::zeros(&[1, 3])),
            Err(Error::BackwardBeforeForward(_))
        ));
        assert!(fc.forward(&Tensor::zeros(&[2, 7]), true).is_err());
        fc.forward(&Tensor::zeros(&[2, 2, 2, 2]), true).unwrap();
        assert_eq!(
            fc.backward(&Tensor::zeros(&[2, 3])).unwrap().shape(),
            &[2, 2, 2, 2]
        );
        assert!(fc.backward(&Tensor::zeros(&[2, 4])).is_err());
        // An inference forward keeps no input for backward.
        fc.forward(&Tensor::zeros(&[2, 8]), false).unwrap();
        assert!(matches!(
            fc.backward(&Tensor::zeros(&[2, 3])),
            Err(Error::BackwardBeforeForward(_))
        ));
    }
}
