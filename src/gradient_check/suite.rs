//! The gradient checks `convnet gradcheck` prints: every layer on its own,
//! and whole networks (SimpleConvNet, lenet5, deep) at small inputs.

use super::{
    check_layer, check_network, check_network_sample, max_relative_error, numerical_gradient,
};
use crate::error::Result;
use crate::init::Init;
use crate::layers::*;
use crate::networks::{build_model, simple_convnet, ModelOptions, SimpleConvNetConfig};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Every layer's and SimpleConvNet's gradient check, as
/// `(component, gradient name, max relative error)` rows; what
/// `convnet gradcheck` prints.
pub fn check_all(seed: u64) -> Result<Vec<(String, String, f64)>> {
    suite(seed, false)
}

/// [`check_all`] with the book's plain Convolution and MaxPooling
/// ([`layers::reference`](crate::layers::reference)) in place of the fast
/// ones, on their own and in the networks (`convnet gradcheck --reference`).
pub fn check_all_reference(seed: u64) -> Result<Vec<(String, String, f64)>> {
    suite(seed, true)
}

/// The checks of [`check_all`], on the reference layers if `reference`.
fn suite(seed: u64, reference: bool) -> Result<Vec<(String, String, f64)>> {
    let mut rng = Rng::new(seed);
    let twin = if reference { " (reference)" } else { "" };
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
        let mut layer: Box<dyn Layer<f64>> = if reference {
            let (weight, bias) = (conv.weight.clone(), conv.bias.clone());
            Box::new(reference::Convolution::from_params(
                weight, bias, stride, pad,
            )?)
        } else {
            Box::new(conv)
        };
        let report = check_layer(&mut *layer, &[3, 2, 7, 6], seed)?;
        add(
            &format!("Convolution{twin} 3@3x3 stride {stride} pad {pad}"),
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
        let mut pool: Box<dyn Layer<f64>> = if reference {
            Box::new(reference::MaxPooling::new(&config))
        } else {
            Box::new(MaxPooling::new(&config))
        };
        let report = check_layer(&mut *pool, &[2, 3, 6, 6], seed)?;
        let name = format!(
            "MaxPooling{twin} {0}x{0} stride {1} pad {2}",
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
    if reference {
        net.use_reference_layers();
    }
    let x = Tensor::from_vec(&[3, 1, 10, 10], (0..300).map(|_| rng.normal()).collect())?;
    add(
        &format!("SimpleConvNet{twin} (1x10x10, 3 filters)"),
        check_network(&mut net, &x, &[0, 3, 1])?,
    );

    // The networks issue's layers.
    add(
        "Tanh",
        check_layer(&mut Tanh::<f64>::new(), &[3, 2, 4, 5], seed)?,
    );
    for config in [
        PoolingConfig::default(),
        PoolingConfig {
            size: 3,
            stride: 2,
            pad: 1,
        },
    ] {
        let mut pool = AvgPooling::<f64>::new(&config);
        let report = check_layer(&mut pool, &[2, 3, 6, 6], seed)?;
        let name = format!(
            "AvgPooling {0}x{0} stride {1} pad {2}",
            config.size, config.stride, config.pad
        );
        add(&name, report);
    }
    add(
        "GlobalAvgPooling",
        check_layer(&mut GlobalAvgPooling::<f64>::new(), &[2, 3, 4, 5], seed)?,
    );
    for size in [2, 5] {
        let config = LrnConfig {
            size,
            alpha: 0.5,
            beta: 0.75,
            k: 2.0,
        };
        let mut lrn = LocalResponseNorm::<f64>::new(&config)?;
        add(
            &format!("LocalResponseNorm size {size}"),
            check_layer(&mut lrn, &[2, 7, 3, 3], seed)?,
        );
    }
    for shape in [&[6, 5][..], &[3, 5, 3, 4][..]] {
        let mut bn = BatchNorm::<f64>::new(&BatchNormConfig {
            features: 5,
            ..Default::default()
        })?;
        bn.weight
            .data_mut()
            .iter_mut()
            .for_each(|g| *g = 1.0 + 0.5 * rng.normal());
        bn.bias
            .data_mut()
            .iter_mut()
            .for_each(|b| *b = rng.normal());
        add(
            &format!("BatchNorm {}-D", shape.len()),
            check_layer(&mut bn, shape, seed)?,
        );
    }
    let mut dropout = Dropout::<f64>::new(&DropoutConfig { ratio: 0.5 }, rng.fork())?;
    dropout.fix_mask(true);
    add(
        "Dropout 0.5 (fixed mask)",
        check_layer(&mut dropout, &[3, 4, 5], seed)?,
    );

    // lenet5 at its own 28×28 input and deep at 12×12, 25 entries per parameter.
    for (model, side) in [("lenet5", 28), ("deep", 12)] {
        let mut net = build_model::<f64>(
            model,
            &ModelOptions::default(),
            [1, side, side],
            10,
            &mut rng,
        )?;
        if reference {
            net.use_reference_layers();
        }
        let pixels = 2 * side * side;
        let x = Tensor::from_vec(
            &[2, 1, side, side],
            (0..pixels).map(|_| rng.uniform()).collect(),
        )?;
        let report = check_network_sample(&mut net, &x, &[3, 7], 25, seed)?;
        add(
            &format!("{model}{twin} 1x{side}x{side} (25 per param)"),
            report,
        );
    }
    Ok(rows)
}
