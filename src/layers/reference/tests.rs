//! Tests of the reference layers: their gradients against numerical ones,
//! and the fast layers against them on random geometries (outputs, `dx`,
//! `dW` and `db`).

use super::{Convolution as Reference, MaxPooling as ReferencePooling};
use crate::error::Error;
use crate::gradient_check::check_layer;
use crate::layers::{Convolution, Layer, MaxPooling, PoolingConfig};
use crate::parallel::team::{test_pool, with_team};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};

/// A tensor of N(0, std²) values.
fn random<T: Float>(shape: &[usize], std: f64, rng: &mut Rng) -> Tensor<T> {
    let len = shape.iter().product();
    let values = (0..len).map(|_| T::cast(std * rng.normal())).collect();
    Tensor::from_vec(shape, values).unwrap()
}

/// The largest difference between `a` and `b`, over the largest `|b|`: a
/// wrong index gives about 1, a different order of the sums the type's
/// rounding.
fn relative_error<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let largest = b
        .data()
        .iter()
        .map(|v| v.as_f64().abs())
        .fold(0.0, f64::max);
    let diffs = a.data().iter().zip(b.data());
    let worst = diffs
        .map(|(x, y)| (x.as_f64() - y.as_f64()).abs())
        .fold(0.0, f64::max);
    worst / largest.max(f64::MIN_POSITIVE)
}

#[test]
fn reference_convolution_gradients_match_numerical() {
    for (n, stride, pad) in [(3, 1, 0), (4, 2, 1), (2, 1, 2), (2, 3, 1)] {
        let mut rng = Rng::new(1);
        let (weight, bias) = (
            random(&[3, 2, 3, 3], 0.5, &mut rng),
            random(&[3], 1.0, &mut rng),
        );
        let mut conv = Reference::<f64>::from_params(weight, bias, stride, pad).unwrap();
        let report = check_layer(&mut conv, &[n, 2, 5, 6], 2).unwrap();
        assert_eq!(report.len(), 3); // x, weight, bias
        for (name, err) in report {
            assert!(err <= 1e-6, "n={n} stride={stride} pad={pad}: {name} {err}");
        }
    }
}

#[test]
fn reference_max_pooling_gradients_match_numerical() {
    for (size, stride, pad) in [(2, 2, 0), (3, 2, 1), (2, 1, 1), (3, 3, 0)] {
        let mut pool = ReferencePooling::<f64>::new(&PoolingConfig { size, stride, pad });
        for (name, err) in check_layer(&mut pool, &[2, 3, 6, 6], 3).unwrap() {
            assert!(
                err <= 1e-6,
                "{size}x{size} stride {stride} pad {pad}: {name} {err}"
            );
        }
    }
}

/// Backward needs a training forward first, and `dout` of the output's shape.
#[test]
fn backward_before_forward_is_an_error() {
    let weight = Tensor::<f32>::zeros(&[2, 1, 3, 3]);
    let mut conv = Reference::from_params(weight, Tensor::zeros(&[2]), 1, 0).unwrap();
    let mut pool = ReferencePooling::<f32>::new(&PoolingConfig::default());
    let x = Tensor::zeros(&[1, 1, 4, 4]);
    for layer in [&mut conv as &mut dyn Layer<f32>, &mut pool] {
        let dout = Tensor::zeros(&layer.output_shape(x.shape()).unwrap());
        assert!(matches!(
            layer.backward(&dout),
            Err(Error::BackwardBeforeForward(_))
        ));
        layer.forward(&x, false).unwrap();
        assert!(matches!(
            layer.backward(&dout),
            Err(Error::BackwardBeforeForward(_))
        ));
        layer.forward(&x, true).unwrap();
        assert!(matches!(
            layer.backward(&Tensor::zeros(&[1, 2])),
            Err(Error::Shape(_))
        ));
        assert!(layer.backward(&dout).is_ok());
    }
    let bad_bias =
        Reference::<f32>::from_params(Tensor::zeros(&[2, 1, 3, 3]), Tensor::zeros(&[3]), 1, 0);
    assert!(bad_bias.is_err());
    assert!(conv.forward(&Tensor::zeros(&[1, 2, 4, 4]), true).is_err()); // 2 channels, not 1
    assert!(conv.forward(&Tensor::zeros(&[1, 1, 2, 2]), true).is_err()); // smaller than the filter
}

/// The batch sizes the fast layers handle differently: 1 (in a team of two
/// threads), fewer images than backward's 16 chunks, and more.
const BATCHES: [usize; 4] = [1, 3, 17, 40];

/// Runs `work` in a pool of two threads, and in a team when `batch` is 1.
fn on_two_threads<R: Send>(batch: usize, work: impl FnOnce() -> R + Send) -> R {
    test_pool(2).install(|| if batch == 1 { with_team(work) } else { work() })
}

/// Forward (inference and training) and backward of `layer`: the outputs,
/// `dx`, and every parameter's gradient.
fn run<T: Float>(layer: &mut dyn Layer<T>, x: &Tensor<T>, dout: &Tensor<T>) -> Vec<Tensor<T>> {
    let inferred = layer.forward(x, false).unwrap().clone();
    let trained = layer.forward(x, true).unwrap().clone();
    let dx = layer.backward(dout).unwrap().clone();
    let grads = layer.params().into_iter().map(|p| p.grad.clone());
    [inferred, trained, dx].into_iter().chain(grads).collect()
}

/// One random convolution, fast and reference, on a random batch.
fn compare_convolutions<T: Float>(batch: usize, rng: &mut Rng, tolerance: f64) -> bool {
    let (channels, filters) = (1 + rng.below(5), 1 + rng.below(8));
    let (size, stride, pad) = (1 + rng.below(5), 1 + rng.below(3), rng.below(3));
    let (h, w) = (1 + rng.below(12), 1 + rng.below(12));
    if size > h + 2 * pad || size > w + 2 * pad {
        return false;
    }
    let case =
        format!("{batch}x{channels}x{h}x{w}, {filters}@{size}x{size} stride {stride} pad {pad}");
    let weight = random::<T>(&[filters, channels, size, size], 0.5, rng);
    let bias = random::<T>(&[filters], 1.0, rng);
    let mut fast = Convolution::from_params(weight.clone(), bias.clone(), stride, pad).unwrap();
    let mut reference = Reference::from_params(weight, bias, stride, pad).unwrap();
    let x = random(&[batch, channels, h, w], 1.0, rng);
    let dout = random(&reference.output_shape(x.shape()).unwrap(), 1.0, rng);
    let want = run(&mut reference, &x, &dout);
    let got = on_two_threads(batch, || run(&mut fast, &x, &dout));
    let names = ["inference output", "training output", "dx", "dW", "db"];
    for ((name, got), want) in names.iter().zip(&got).zip(&want) {
        let err = relative_error(got, want);
        assert!(err <= tolerance, "{case}: {name} off by {err:e}");
    }
    true
}

#[test]
fn the_fast_convolution_agrees_with_the_reference() {
    let mut rng = Rng::new(21);
    for batch in BATCHES {
        let mut cases = 0;
        while cases < 12 {
            if compare_convolutions::<f64>(batch, &mut rng, 1e-10) {
                cases += 1;
            }
        }
        while cases < 18 {
            if compare_convolutions::<f32>(batch, &mut rng, 1e-4) {
                cases += 1;
            }
        }
    }
}

/// One random max pooling, fast and reference, on a random batch: half the
/// time of values with many ties and windows whose every value is
/// negative, so that the first maximum and a padded cell would show.
fn compare_poolings(batch: usize, rng: &mut Rng) -> bool {
    let (channels, h, w) = (1 + rng.below(5), 1 + rng.below(12), 1 + rng.below(12));
    let size = 1 + rng.below(4);
    let config = PoolingConfig {
        size,
        stride: 1 + rng.below(3),
        pad: rng.below(size),
    };
    if size > h + 2 * config.pad || size > w + 2 * config.pad {
        return false;
    }
    let mut x = random::<f64>(&[batch, channels, h, w], 1.0, rng);
    let ties = rng.below(2) == 0;
    if ties {
        x.data_mut()
            .iter_mut()
            .for_each(|v| *v = -(rng.below(3) as f64));
    }
    let case = format!("{:?} {config:?}, ties {ties}", x.shape());
    let mut reference = ReferencePooling::new(&config);
    let dout = random(&reference.output_shape(x.shape()).unwrap(), 1.0, rng);
    let want = run(&mut reference, &x, &dout);
    let got = on_two_threads(batch, || run(&mut MaxPooling::new(&config), &x, &dout));
    assert_eq!(got[..2], want[..2], "{case}: outputs");
    // dx: the same values, added up in another order where windows overlap.
    let err = relative_error(&got[2], &want[2]);
    assert!(err <= 1e-12, "{case}: dx off by {err:e}");
    true
}

#[test]
fn the_fast_max_pooling_agrees_with_the_reference() {
    let mut rng = Rng::new(22);
    for batch in BATCHES {
        let mut cases = 0;
        while cases < 24 {
            if compare_poolings(batch, &mut rng) {
                cases += 1;
            }
        }
    }
}
