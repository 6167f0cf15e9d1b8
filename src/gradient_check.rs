//! Gradient checking (book §4.4 numerical differentiation, §5.7 gradient check).
//!
//! The numerical gradient is the central difference
//!
//! ```text
//! ∂f/∂x_i ≈ (f(x + h·e_i) − f(x − h·e_i)) / 2h          h = 1e-4
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
use crate::layers::Layer;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// The step of the central difference. Its truncation error is O(h²) ≈ 1e-8
/// relative; its rounding error about 1e-16·|f|/h.
pub const H: f64 = 1e-4;
/// Elements smaller than this fraction of the tensor's largest gradient are
/// compared in absolute terms (see the module documentation).
pub const RELATIVE_FLOOR: f64 = 1e-3;

/// The numerical gradient of `f` at `values` by central differences.
/// `values` is restored before returning.
pub fn numerical_gradient(values: &mut [f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut grad = vec![0.0; values.len()];
    for i in 0..values.len() {
        let original = values[i];
        values[i] = original + H;
        let plus = f(values);
        values[i] = original - H;
        let minus = f(values);
        values[i] = original;
        grad[i] = (plus - minus) / (2.0 * H);
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
/// Dropout masks are held fixed during the check.
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
            entries.iter().map(|&i| params[index].value.data()[i]).collect()
        };
        let numeric = numerical_gradient(&mut values, |v| {
            let mut params = net.params();
            let data = params[index].value.data_mut();
            for (&i, &value) in entries.iter().zip(v) {
                data[i] = value;
            }
            drop(params);
            net.loss(x, labels, true).expect("same input as above")
        });
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

/// Every layer's and SimpleConvNet's gradient check, as
/// `(component, gradient name, max relative error)` rows; what
/// `convnet gradcheck` prints.
pub fn check_all(seed: u64) -> Result<Vec<(String, String, f64)>> {
    use crate::init::Init;
    use crate::layers::*;
    use crate::networks::{simple_convnet, SimpleConvNetConfig};

    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    let mut add = |component: &str, report: Vec<(String, f64)>| {
        for (name, err) in report {
            rows.push((component.to_string(), name, err));
        }
    };
    for (stride, pad) in [(1, 0), (2, 1)] {
        let config = ConvolutionConfig {
            in_channels: 2,
            filters: 3,
            filter_size: 3,
            stride,
            pad,
            init: Init::Std(0.5),
        };
        let mut conv = Convolution::<f64>::new(&config, &mut rng)?;
        conv.bias
            .data_mut()
            .iter_mut()
            .for_each(|b| *b = rng.normal());
        let report = check_layer(&mut conv, &[3, 2, 7, 6], seed)?;
        add(
            &format!("Convolution 3@3x3 stride {stride} pad {pad}"),
            report,
        );
    }
    for config in [
        PoolingConfig::default(),
        PoolingConfig {
            size: 3,
            stride: 2,
            pad: 1,
        },
    ] {
        let mut pool = MaxPooling::<f64>::new(&config);
        let report = check_layer(&mut pool, &[2, 3, 6, 6], seed)?;
        let name = format!(
            "MaxPooling {0}x{0} stride {1} pad {2}",
            config.size, config.stride, config.pad
        );
        add(&name, report);
    }
    let config = AffineConfig {
        inputs: 24,
        outputs: 5,
        init: Init::Std(0.5),
    };
    let mut affine = Affine::<f64>::new(&config, &mut rng);
    affine
        .bias
        .data_mut()
        .iter_mut()
        .for_each(|b| *b = rng.normal());
    add(
        "Affine 24->5 (4-D input)",
        check_layer(&mut affine, &[3, 2, 3, 4], seed)?,
    );
    add(
        "Relu",
        check_layer(&mut Relu::<f64>::new(), &[3, 2, 4, 5], seed)?,
    );
    add(
        "Sigmoid",
        check_layer(&mut Sigmoid::<f64>::new(), &[3, 2, 4, 5], seed)?,
    );

    // Softmax with loss: the gradient of the mean loss with respect to the scores.
    let labels = [0, 3, 4, 1];
    let mut scores: Vec<f64> = (0..20).map(|_| rng.normal()).collect();
    let mut loss_layer = SoftmaxWithLoss::<f64>::new();
    loss_layer.forward(&Tensor::from_vec(&[4, 5], scores.clone())?, &labels)?;
    let analytic = loss_layer.backward()?.data().to_vec();
    let numeric = numerical_gradient(&mut scores, |s| {
        let t = Tensor::from_vec(&[4, 5], s.to_vec()).expect("4·5 values");
        SoftmaxWithLoss::new()
            .forward(&t, &labels)
            .expect("valid labels")
    });
    add(
        "SoftmaxWithLoss",
        vec![("x".into(), max_relative_error(&analytic, &numeric))],
    );

    // The whole SimpleConvNet, scaled down (1×10×10 input) so the check is quick.
    let config = SimpleConvNetConfig {
        input_shape: [1, 10, 10],
        filters: 3,
        filter_size: 3,
        pad: 1,
        hidden_size: 8,
        output_size: 4,
        init: Init::He,
        ..Default::default()
    };
    let mut net = simple_convnet::<f64>(&config, &mut rng)?;
    let x = Tensor::from_vec(&[3, 1, 10, 10], (0..300).map(|_| rng.normal()).collect())?;
    add(
        "SimpleConvNet (1x10x10, 3 filters)",
        check_network(&mut net, &x, &[0, 3, 1])?,
    );
    Ok(rows)
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

    #[test]
    fn relative_error_catches_a_wrong_gradient() {
        assert!(max_relative_error(&[1.0, 2.0], &[1.0, 2.0]) == 0.0);
        assert!(max_relative_error(&[1.0, 2.0], &[1.0, 1.0]) > 0.4);
        // A gradient that should be zero but is not.
        assert!(max_relative_error(&[0.0], &[1e-3]) > 0.9);
    }
}
