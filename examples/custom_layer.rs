//! A layer of your own: PReLU (a leaky ReLU whose slope is learned, He et
//! al. 2015), written against the `Layer` trait, put into a network between
//! the library's layers, and checked against the numerical gradient in f64
//! as `convnet gradcheck` checks the library's layers. Exits with 1 if a
//! gradient is off.
//!
//! ```text
//! cargo run --release --example custom_layer
//! ```
//!
//! A network with such a layer has no spec (`Network::to_spec` says which
//! layer), so `checkpoint::load` cannot rebuild it: build it in code and
//! load its weights with `checkpoint::load_into`.

use convnet::gradient_check::{check_layer, check_network};
use convnet::layers::{
    Affine, AffineConfig, Convolution, ConvolutionConfig, Layer, MaxPooling, Param, PoolingConfig,
};
use convnet::networks::Network;
use convnet::{Error, Float, Rng, Tensor};
use std::process::ExitCode;

/// y = x for x > 0, a·x otherwise, with one learned slope a for the layer.
struct PRelu<T> {
    /// a: (1)
    slope: Tensor<T>,
    grad_slope: Tensor<T>,
    /// The last input, for backward.
    x: Tensor<T>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> PRelu<T> {
    fn new(slope: f64) -> Self {
        PRelu {
            slope: Tensor::from_vec(&[1], vec![T::cast(slope)]).expect("one value"),
            grad_slope: Tensor::zeros(&[1]),
            x: Tensor::default(),
            out: Tensor::default(),
            dx: Tensor::default(),
        }
    }
}

impl<T: Float> Layer<T> for PRelu<T> {
    fn kind(&self) -> &'static str {
        "PRelu"
    }

    fn output_shape(&self, input: &[usize]) -> convnet::Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&mut self, x: &Tensor<T>, _train: bool) -> convnet::Result<&Tensor<T>> {
        let a = self.slope.data()[0];
        let y = x
            .data()
            .iter()
            .map(|&v| if v > T::zero() { v } else { a * v });
        self.out = Tensor::from_vec(x.shape(), y.collect())?;
        self.x = x.clone();
        Ok(&self.out)
    }

    /// ∂L/∂x = dout where x > 0, a·dout elsewhere; ∂L/∂a = Σ dout·x where x ≤ 0.
    fn backward(&mut self, dout: &Tensor<T>) -> convnet::Result<&Tensor<T>> {
        if dout.shape() != self.x.shape() {
            return Err(Error::Shape(format!(
                "PRelu: dout has shape {:?}, the input had {:?}",
                dout.shape(),
                self.x.shape()
            )));
        }
        let a = self.slope.data()[0];
        let mut da = T::zero();
        let mut dx = Vec::with_capacity(dout.len());
        for (&x, &g) in self.x.data().iter().zip(dout.data()) {
            if x > T::zero() {
                dx.push(g);
            } else {
                da += g * x;
                dx.push(a * g);
            }
        }
        self.grad_slope.data_mut()[0] = da;
        self.dx = Tensor::from_vec(dout.shape(), dx)?;
        Ok(&self.dx)
    }

    fn params(&mut self) -> Vec<Param<'_, T>> {
        vec![Param {
            name: "slope",
            value: &mut self.slope,
            grad: &mut self.grad_slope,
        }]
    }
}

fn main() -> convnet::Result<ExitCode> {
    const TOLERANCE: f64 = 1e-6;
    // The layer on its own: L = Σ out ⊙ r for a fixed random r.
    let mut report: Vec<(String, f64)> =
        check_layer(&mut PRelu::<f64>::new(0.25), &[2, 3, 4, 4], 1)?
            .into_iter()
            .map(|(name, error)| (format!("PRelu {name}"), error))
            .collect();

    // In a network: convolution → PReLU → max pooling → affine, with the
    // cross-entropy loss, every parameter against its numerical gradient.
    let mut rng = Rng::new(2);
    let mut net = Network::<f64>::new([1, 8, 8]);
    let conv = ConvolutionConfig {
        in_channels: 1,
        filters: 3,
        filter_size: 3,
        pad: 1,
        ..Default::default()
    };
    net.push("conv1", Convolution::new(&conv, &mut rng)?)?;
    net.push("prelu1", PRelu::new(0.25))?;
    net.push(
        "pool1",
        MaxPooling::new(&PoolingConfig {
            size: 2,
            stride: 2,
            pad: 0,
        }),
    )?;
    net.push(
        "fc1",
        Affine::new(
            &AffineConfig {
                inputs: 3 * 4 * 4,
                outputs: 4,
                ..Default::default()
            },
            &mut rng,
        ),
    )?;
    let x = Tensor::from_vec(&[4, 1, 8, 8], (0..256).map(|_| rng.normal()).collect())?;
    report.extend(check_network(&mut net, &x, &[0, 1, 2, 3])?);

    println!("{:<16} {:>14}", "gradient", "max rel error");
    let mut failed = false;
    for (name, error) in &report {
        let verdict = if *error <= TOLERANCE { "" } else { "  FAIL" };
        failed |= *error > TOLERANCE;
        println!("{name:<16} {error:>14.2e}{verdict}");
    }
    println!(
        "{} (tolerance {TOLERANCE:e})",
        if failed {
            "FAILED"
        } else {
            "all gradients agree"
        }
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
