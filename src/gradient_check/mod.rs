//! Gradient checking (book §4.4 numerical differentiation, §5.7 gradient check).
//!
//! The numerical gradient is the book's central difference (§4.4)
//!
//! ```text
//! ∂f/∂x_i ≈ (f(x + h·e_i) − f(x − h·e_i)) / 2h          h = 1e-4, then 2.5e-5
//! ```
//!
//! ReLU and max pooling have kinks: a step that carries some unit across one
//! makes the difference wrong (with thousands of units, h = 1e-4 does so for
//! a few entries). So every entry is differenced twice, with h and h/4; a
//! kink shows as a disagreement between the two, and then the step shrinks
//! until two steps agree (see [`numerical_gradient`]). For networks without
//! kinks (no ReLU, no max pooling: LeNet-5 with sigmoids) a wider step is
//! safe, and [`numerical_gradient_smooth`] uses the fourth-order difference
//! with h = 1e-3, which has a tenth of the rounding noise — it matters for
//! the small gradients of sigmoid networks:
//!
//! ```text
//! ∂f/∂x_i ≈ (8·(f(x + h·e_i) − f(x − h·e_i)) − (f(x + 2h·e_i) − f(x − 2h·e_i))) / 12h
//! ```
//!
//! computed in `f64`, and compared with backpropagation element by element:
//!
//! ```text
//! rel_i = |a_i − n_i| / max(|a_i|, |n_i|, floor)
//! floor = 1e-3 · max_j |n_j|   (and at least 1e-12)
//! ```
//!
//! The floor only matters for elements that are (nearly) zero compared with
//! the rest of the tensor, where a relative error means nothing: the central
//! difference itself carries rounding noise of about `1e-16·|f| / h`. For
//! those elements the check becomes an absolute one, still a thousand times
//! tighter than the tensor's largest gradient times the tolerance. A correct
//! layer gives errors around 1e-8 or less; a wrong one gives errors near 1.
//!
//! To check a layer on its own, [`check_layer`] makes a scalar of its output,
//! `L = Σ out ⊙ r` with a fixed random `r`, so that `dout = r`.
//!
//! ```
//! use convnet::gradient_check::check_layer;
//! use convnet::layers::Sigmoid;
//! let report = check_layer(&mut Sigmoid::<f64>::new(), &[2, 3], 0).unwrap();
//! assert!(report.iter().all(|(_, err)| *err < 1e-6));
//! ```

use crate::error::Result;

mod suite;
use crate::layers::Layer;
use crate::rng::Rng;
use crate::tensor::Tensor;
pub use suite::{check_all, check_all_reference};

/// The first step of the central difference; its truncation error is
/// O(h²) ≈ 1e-8 relative, its rounding error about 1e-16·|f|/h.
pub const H: f64 = 1e-4;
/// The smallest step [`numerical_gradient`] shrinks to near a kink.
pub const H_MIN: f64 = 1e-7;
/// The step of [`numerical_gradient_smooth`]: truncation O(h⁴) ≈ 1e-12.
pub const H_SMOOTH: f64 = 1e-3;
/// Elements smaller than this fraction of the tensor's largest gradient are
/// compared in absolute terms (see the module documentation).
pub const RELATIVE_FLOOR: f64 = 1e-3;

/// The numerical gradient of `f` at `values` by central differences.
/// `values` is restored before returning.
///
/// ReLU and max pooling have kinks; when one lies within the step, the
/// difference jumps. So each entry is also computed with a quarter of the
/// step: where the two agree (as they do, to O(h²) plus rounding noise, for
/// a function that is smooth around `x`) the finer one is kept, otherwise
/// the step keeps shrinking, down to [`H_MIN`].
pub fn numerical_gradient(values: &mut [f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let scale = f(values).abs().max(1.0);
    let mut grad = vec![0.0; values.len()];
    for i in 0..values.len() {
        let original = values[i];
        let mut central = |h: f64, values: &mut [f64]| {
            values[i] = original + h;
            let plus = f(values);
            values[i] = original - h;
            let minus = f(values);
            (plus - minus) / (2.0 * h)
        };
        let mut h = H;
        let mut d = central(h, values);
        while h > H_MIN {
            let finer = central(h / 4.0, values);
            // Rounding noise of the finer difference, with a wide margin.
            let noise = 1e-14 * scale / (h / 4.0);
            let agree = (finer - d).abs() <= 1e-7 * finer.abs().max(d.abs()) + noise;
            d = finer;
            h /= 4.0;
            if agree {
                break;
            }
        }
        values[i] = original;
        grad[i] = d;
    }
    grad
}

/// The numerical gradient of a function without kinks, by the fourth-order
/// central difference with step [`H_SMOOTH`]. `values` is restored.
pub fn numerical_gradient_smooth(values: &mut [f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut grad = vec![0.0; values.len()];
    for i in 0..values.len() {
        let original = values[i];
        let mut at = |offset: f64, values: &mut [f64]| {
            values[i] = original + offset;
            f(values)
        };
        let near = at(H_SMOOTH, values) - at(-H_SMOOTH, values);
        let far = at(2.0 * H_SMOOTH, values) - at(-2.0 * H_SMOOTH, values);
        values[i] = original;
        grad[i] = (8.0 * near - far) / (12.0 * H_SMOOTH);
    }
    grad
}

/// The largest element-wise relative error between two gradients.
pub fn max_relative_error(analytic: &[f64], numeric: &[f64]) -> f64 {
    assert_eq!(
        analytic.len(),
        numeric.len(),
        "gradients of different sizes"
    );
    let largest = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = (RELATIVE_FLOOR * largest).max(1e-12);
    analytic
        .iter()
        .zip(numeric)
        .map(|(&a, &n)| (a - n).abs() / a.abs().max(n.abs()).max(floor))
        .fold(0.0, f64::max)
}

fn random_tensor(shape: &[usize], rng: &mut Rng) -> Tensor<f64> {
    let mut t = Tensor::zeros(shape);
    t.data_mut().iter_mut().for_each(|v| *v = rng.normal());
    t
}

fn weighted_sum(out: &Tensor<f64>, r: &Tensor<f64>) -> f64 {
    out.data().iter().zip(r.data()).map(|(a, b)| a * b).sum()
}

/// Checks a layer's backward against the numerical gradient, for an input of
/// `input_shape` drawn from N(0, 1) with `seed`. Returns the max relative
/// error for the input (`"x"`) and for each parameter, by name.
pub fn check_layer(
    layer: &mut dyn Layer<f64>,
    input_shape: &[usize],
    seed: u64,
) -> Result<Vec<(String, f64)>> {
    let mut rng = Rng::new(seed);
    let mut x = random_tensor(input_shape, &mut rng);
    let out_shape = layer.output_shape(input_shape)?;
    let r = random_tensor(&out_shape, &mut rng);

    // Backpropagation: dout = ∂L/∂out = r.
    layer.forward(&x, true)?;
    let dx = layer.backward(&r)?.data().to_vec();
    let param_grads: Vec<(&'static str, Vec<f64>)> = layer
        .params()
        .iter()
        .map(|p| (p.name, p.grad.data().to_vec()))
        .collect();

    let mut report = Vec::new();
    let mut x_values = x.data().to_vec();
    let numeric = numerical_gradient(&mut x_values, |values| {
        x.data_mut().copy_from_slice(values);
        weighted_sum(layer.forward(&x, true).expect("same shape as above"), &r)
    });
    // The closure left x at its last perturbed value: restore it.
    x.data_mut().copy_from_slice(&x_values);
    report.push(("x".to_string(), max_relative_error(&dx, &numeric)));

    for (index, (name, analytic)) in param_grads.iter().enumerate() {
        let mut values = layer.params()[index].value.data().to_vec();
        let numeric = numerical_gradient(&mut values, |v| {
            layer.params()[index].value.data_mut().copy_from_slice(v);
            weighted_sum(layer.forward(&x, true).expect("same shape as above"), &r)
        });
        layer.params()[index]
            .value
            .data_mut()
            .copy_from_slice(&values);
        report.push((name.to_string(), max_relative_error(analytic, &numeric)));
    }
    Ok(report)
}

/// Checks every parameter gradient of a whole network (loss = mean
/// cross-entropy of `x` against `labels`) against the numerical gradient.
/// Returns the max relative error per parameter, by name.
pub fn check_network(
    net: &mut crate::networks::Network<f64>,
    x: &Tensor<f64>,
    labels: &[usize],
) -> Result<Vec<(String, f64)>> {
    check_network_sample(net, x, labels, usize::MAX, 0)
}

/// Like [`check_network`], but for big networks: compares at most
/// `per_param` entries of each parameter, chosen at random with `seed`.
/// Dropout masks are held fixed during the check. A network without kinks
/// (no `Relu`, no `MaxPooling`) is differentiated with
/// [`numerical_gradient_smooth`].
pub fn check_network_sample(
    net: &mut crate::networks::Network<f64>,
    x: &Tensor<f64>,
    labels: &[usize],
    per_param: usize,
    seed: u64,
) -> Result<Vec<(String, f64)>> {
    net.fix_randomness(true);
    net.gradient(x, labels)?;
    let names = net.param_names();
    let analytic: Vec<Vec<f64>> = net
        .params()
        .iter()
        .map(|p| p.grad.data().to_vec())
        .collect();
    let smooth = net
        .layers
        .iter()
        .all(|named| !matches!(named.layer.kind(), "Relu" | "MaxPooling"));
    let mut rng = Rng::new(seed);
    let mut report = Vec::new();
    for (index, name) in names.into_iter().enumerate() {
        let len = analytic[index].len();
        let mut entries: Vec<usize> = (0..len).collect();
        if per_param < len {
            rng.shuffle(&mut entries);
            entries.truncate(per_param);
        }
        let mut values: Vec<f64> = {
            let params = net.params();
            entries
                .iter()
                .map(|&i| params[index].value.data()[i])
                .collect()
        };
        let loss_at = |v: &[f64]| {
            let mut params = net.params();
            let data = params[index].value.data_mut();
            for (&i, &value) in entries.iter().zip(v) {
                data[i] = value;
            }
            drop(params);
            net.loss(x, labels, true).expect("same input as above")
        };
        let numeric = if smooth {
            numerical_gradient_smooth(&mut values, loss_at)
        } else {
            numerical_gradient(&mut values, loss_at)
        };
        {
            let mut params = net.params();
            let data = params[index].value.data_mut();
            for (&i, &value) in entries.iter().zip(&values) {
                data[i] = value;
            }
        }
        let chosen: Vec<f64> = entries.iter().map(|&i| analytic[index][i]).collect();
        report.push((name, max_relative_error(&chosen, &numeric)));
    }
    net.fix_randomness(false);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerical_gradient_of_a_square() {
        let mut x = vec![3.0, -1.0];
        let g = numerical_gradient(&mut x, |v| v[0] * v[0] + 2.0 * v[1]);
        assert!((g[0] - 6.0).abs() < 1e-8 && (g[1] - 2.0).abs() < 1e-8);
        assert_eq!(x, [3.0, -1.0]);
    }

    /// An identity layer whose backward is 10 % too large: the check must see it.
    struct WrongIdentity {
        out: Tensor<f64>,
        dx: Tensor<f64>,
    }

    impl Layer<f64> for WrongIdentity {
        fn kind(&self) -> &'static str {
            "WrongIdentity"
        }
        fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
            Ok(input.to_vec())
        }
        fn forward(&mut self, x: &Tensor<f64>, _train: bool) -> Result<&Tensor<f64>> {
            self.out.copy_from(x);
            Ok(&self.out)
        }
        fn backward(&mut self, dout: &Tensor<f64>) -> Result<&Tensor<f64>> {
            self.dx.copy_from(dout);
            self.dx.data_mut().iter_mut().for_each(|v| *v *= 1.1);
            Ok(&self.dx)
        }
    }

    #[test]
    fn check_layer_catches_a_wrong_backward() {
        let mut layer = WrongIdentity {
            out: Tensor::default(),
            dx: Tensor::default(),
        };
        let report = check_layer(&mut layer, &[2, 3], 0).unwrap();
        assert!((report[0].1 - 0.1 / 1.1).abs() < 1e-6, "{report:?}");
    }

    #[test]
    fn a_kink_inside_the_step_does_not_spoil_the_difference() {
        // |x| at x = 3e-5: the first step (1e-4) straddles the kink at 0.
        let mut x = vec![3e-5];
        let g = numerical_gradient(&mut x, |v| v[0].abs());
        assert!((g[0] - 1.0).abs() < 1e-9, "{}", g[0]);
    }

    #[test]
    fn smooth_difference_of_a_cubic_is_exact() {
        // The fourth-order difference is exact for polynomials up to degree 4.
        let mut x = vec![2.0];
        let g = numerical_gradient_smooth(&mut x, |v| v[0].powi(3) - v[0]);
        assert!((g[0] - 11.0).abs() < 1e-9, "{}", g[0]);
    }

    #[test]
    fn relative_error_catches_a_wrong_gradient() {
        assert!(max_relative_error(&[1.0, 2.0], &[1.0, 2.0]) == 0.0);
        assert!(max_relative_error(&[1.0, 2.0], &[1.0, 1.0]) > 0.4);
        // A gradient that should be zero but is not.
        assert!(max_relative_error(&[0.0], &[1e-3]) > 0.9);
    }
}
