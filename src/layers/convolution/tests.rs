//! Tests of the convolution layer: the definition term by term, numerical
//! gradients (plain and with a fused ReLU), inference against training, errors.

use super::*;
use crate::gradient_check::check_layer;
use crate::kernels::im2col_wide::WideGeometry;

#[test]
fn forward_by_hand() {
    // One 3x3 image, one 2x2 filter of ones, bias 0.5: each output is the
    // window sum plus 0.5.
    let w = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0; 4]).unwrap();
    let b = Tensor::from_vec(&[1], vec![0.5]).unwrap();
    let mut conv = Convolution::<f64>::from_params(w, b, 1, 0).unwrap();
    let x = Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(f64::from).collect()).unwrap();
    let y = conv.forward(&x, false).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(y.data(), [12.5, 16.5, 24.5, 28.5]);
}

/// The definition, term by term, for comparison.
fn direct_convolution(x: &Tensor<f64>, conv: &Convolution<f64>) -> Vec<f64> {
    let (n, c, h, w) = x.dims4().unwrap();
    let (f, _, fh, fw) = conv.weight.dims4().unwrap();
    let (s, p) = (conv.stride, conv.pad);
    let (oh, ow) = ((h + 2 * p - fh) / s + 1, (w + 2 * p - fw) / s + 1);
    let at = |t: &[f64], i: usize, j: usize, k: usize, l: usize, d: [usize; 3]| {
        t[((i * d[0] + j) * d[1] + k) * d[2] + l]
    };
    let mut out = Vec::new();
    for ni in 0..n {
        for fi in 0..f {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut v = conv.bias.data()[fi];
                    for ci in 0..c {
                        for ky in 0..fh {
                            for kx in 0..fw {
                                let (iy, ix) = (
                                    (oy * s + ky) as isize - p as isize,
                                    (ox * s + kx) as isize - p as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                v += at(conv.weight.data(), fi, ci, ky, kx, [c, fh, fw])
                                    * at(x.data(), ni, ci, iy as usize, ix as usize, [c, h, w]);
                            }
                        }
                    }
                    out.push(v);
                }
            }
        }
    }
    out
}

/// 3 filters of 3×3 over 2 channels, weights N(0, std²), random biases.
fn small_convolution(stride: usize, pad: usize, std: f64, rng: &mut Rng) -> Convolution<f64> {
    let config = ConvolutionConfig {
        in_channels: 2,
        filters: 3,
        filter_size: 3,
        stride,
        pad,
        init: Init::Std(std),
    };
    let mut conv = Convolution::<f64>::new(&config, rng).unwrap();
    conv.bias
        .data_mut()
        .iter_mut()
        .for_each(|b| *b = rng.normal());
    conv
}

#[test]
fn forward_matches_the_definition() {
    for (stride, pad) in [(1, 0), (2, 1), (1, 2), (3, 0)] {
        let mut rng = Rng::new(8);
        let mut conv = small_convolution(stride, pad, 1.0, &mut rng);
        let x =
            Tensor::from_vec(&[17, 2, 7, 6], (0..17 * 84).map(|_| rng.normal()).collect()).unwrap();
        let want = direct_convolution(&x, &conv);
        let got = conv.forward(&x, false).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.data().iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-12,
                "stride {stride} pad {pad}: {a} vs {b}"
            );
        }
    }
}

/// In f32, stride 1 on the wide grid takes the product straight from the
/// padded image where the CPU has AVX-512 (`kernels/direct_conv.rs`); in
/// training and inference, with two blocks of filters, it gives the
/// definition's values to f32 rounding, and backward's `dx` the f64
/// layer's.
#[test]
fn an_f32_convolution_without_col_matches_the_definition() {
    let mut rng = Rng::new(9);
    let config = ConvolutionConfig {
        in_channels: 5,
        filters: 30,
        filter_size: 3,
        stride: 1,
        pad: 1,
        init: Init::Std(1.0),
    };
    let mut conv = Convolution::<f64>::new(&config, &mut rng).unwrap();
    conv.bias
        .data_mut()
        .iter_mut()
        .for_each(|b| *b = rng.normal());
    let x = Tensor::from_vec(
        &[3, 5, 12, 12],
        (0..3 * 720).map(|_| rng.normal()).collect(),
    )
    .unwrap();
    let want = direct_convolution(&x, &conv);
    let (weight, bias) = (conv.weight.cast::<f32>(), conv.bias.cast::<f32>());
    let mut fast = Convolution::<f32>::from_params(weight, bias, 1, 1).unwrap();
    let g = ConvGeometry::new((5, 12, 12), (3, 3), 1, 1).unwrap();
    let chosen = crate::kernels::direct_conv::worth_it::<f32>(&WideGeometry::new(g));
    assert_eq!(chosen, crate::kernels::direct_conv::cpu_applies::<f32>());
    for train in [true, false] {
        let got = fast.forward(&x.cast::<f32>(), train).unwrap();
        assert_eq!(got.len(), want.len());
        for (&a, &b) in got.data().iter().zip(&want) {
            let tolerance = 1e-5 * (1.0 + b.abs());
            assert!(
                (a as f64 - b).abs() < tolerance,
                "train {train}: {a} vs {b}"
            );
        }
    }
    // Backward's dx by the turned filters (no dcol) against the f64 layer's
    // col2im route: sums of 30·3·3 products of N(0, 1) values. One image:
    // two or more take Winograd's route (the next test).
    let x = Tensor::from_vec(&[1, 5, 12, 12], x.data()[..720].to_vec()).unwrap();
    let dout = (0..4320).map(|_| rng.normal()).collect();
    let dout = Tensor::from_vec(&[1, 30, 12, 12], dout).unwrap();
    conv.forward(&x, true).unwrap();
    let want = conv.backward(&dout).unwrap().clone();
    fast.forward(&x.cast::<f32>(), true).unwrap();
    let got = fast.backward(&dout.cast::<f32>()).unwrap();
    assert_eq!(got.shape(), want.shape());
    for (&a, &b) in got.data().iter().zip(want.data()) {
        assert!((a as f64 - b).abs() < 1e-4, "dx: {a} vs {b}");
    }
}

/// An f64 layer of `config` with random biases, and its f32 copy, both
/// with a fused ReLU and 2×2 max pooling as asked; `x`: `n` random images
/// of `size`×`size`. Their training and inference forwards agree to 1e-3
/// (sums of a few hundred products of N(0, 1) values, about 15 to 17 in
/// size: the transforms' rounding stays below that, a wrong term is off by
/// about 1). Training's forward runs last, for a backward to follow.
fn f64_and_f32_layers_agree(
    config: &ConvolutionConfig,
    (n, size, relu, pooled): (usize, usize, bool, bool),
    rng: &mut Rng,
) -> (Convolution<f64>, Convolution<f32>, Tensor<f64>) {
    use crate::layers::FusedActivation;
    let mut conv = Convolution::<f64>::new(config, rng).unwrap();
    conv.bias
        .data_mut()
        .iter_mut()
        .for_each(|b| *b = rng.normal());
    let c = config.in_channels;
    let x: Vec<f64> = (0..n * c * size * size).map(|_| rng.normal()).collect();
    let x = Tensor::from_vec(&[n, c, size, size], x).unwrap();
    let (weight, bias) = (conv.weight.cast::<f32>(), conv.bias.cast::<f32>());
    let mut fast = Convolution::<f32>::from_params(weight, bias, 1, config.pad).unwrap();
    if relu {
        conv.fuse_activation(Some(FusedActivation::Relu));
        fast.fuse_activation(Some(FusedActivation::Relu));
    }
    if pooled {
        let pool = PoolingConfig::default();
        conv.fuse_max_pool(Some(&pool));
        fast.fuse_max_pool(Some(&pool));
    }
    for train in [false, true] {
        let want = conv.forward(&x, train).unwrap().clone();
        let got = fast.forward(&x.cast::<f32>(), train).unwrap();
        assert_eq!(got.shape(), want.shape());
        for (&a, &b) in got.data().iter().zip(want.data()) {
            assert!(
                (a as f64 - b).abs() < 1e-3,
                "n {n} train {train}: {a} vs {b}"
            );
        }
    }
    (conv, fast, x)
}

/// After [`f64_and_f32_layers_agree`]'s training forwards: both layers'
/// backward of one random `dout`, `dx` within `dx_tolerance` of the f64
/// layer's and the weight and bias gradients within `grad_tolerance`.
fn f64_and_f32_backwards_agree(
    conv: &mut Convolution<f64>,
    fast: &mut Convolution<f32>,
    (dx_tolerance, grad_tolerance): (f64, f64),
    rng: &mut Rng,
) {
    let dout: Vec<f64> = (0..conv.out.len()).map(|_| rng.normal()).collect();
    let dout = Tensor::from_vec(conv.out.shape(), dout).unwrap();
    let want = conv.backward(&dout).unwrap().clone();
    let got = fast.backward(&dout.cast::<f32>()).unwrap();
    for (&a, &b) in got.data().iter().zip(want.data()) {
        assert!((a as f64 - b).abs() < dx_tolerance, "dx: {a} vs {b}");
    }
    let grads = [
        (&fast.grad_weight, &conv.grad_weight),
        (&fast.grad_bias, &conv.grad_bias),
    ];
    for (got, want) in grads {
        for (&a, &b) in got.data().iter().zip(want.data()) {
            assert!((a as f64 - b).abs() < grad_tolerance, "dW: {a} vs {b}");
        }
    }
}

/// Two images or more, 3×3 filters over 8 channels or more, f32 with
/// AVX-512: Winograd's F(4×4, 3×3) (`winograd.rs`) in forward, with and
/// without a fused ReLU and 2×2 pooling, and in backward's `dx` and `dW`,
/// against the f64 layer. Batches of 1 to 7 images of 26 channels of 28×28
/// (56 tiles each, groups of 2): none, one group, two and a half, three and a
/// half. 26 channels, as FW·C = 78 keeps `dW` off the channels-last route,
/// which 24 would take.
#[test]
fn an_f32_convolution_by_winograd_matches_the_definition() {
    let mut rng = Rng::new(21);
    let config = ConvolutionConfig {
        in_channels: 26,
        filters: 30,
        filter_size: 3,
        stride: 1,
        pad: 1,
        init: Init::Std(1.0),
    };
    // (images, fused ReLU, fused 2×2 max pooling): the ReLU alone goes
    // through `narrow`, with the pooling through the pooled `wide` route.
    let cases = [
        (1, false, false),
        (2, false, false),
        (4, true, false),
        (5, true, true),
        (7, false, false),
        (7, true, true),
    ];
    for (n, relu, pooled) in cases {
        let (mut conv, mut fast, _) =
            f64_and_f32_layers_agree(&config, (n, 28, relu, pooled), &mut rng);
        // dx: sums of 30·9 products, about 16 in size. dW and db: sums of
        // n·784 products of N(0, 1) values (dW's about 70 in size, the
        // transforms' rounding up to a few 1e-4 of that); a wrong or
        // missing term is off by about 1.
        f64_and_f32_backwards_agree(
            &mut conv,
            &mut fast,
            (2e-3, 1e-5 * (n * 784) as f64),
            &mut rng,
        );
        let wg = WideGeometry::new(ConvGeometry::new((26, 28, 28), (3, 3), 1, 1).unwrap());
        let route = n >= 2 && crate::kernels::direct_conv::cpu_applies::<f32>();
        assert_eq!(winograd::applies::<f32>(&wg, n), route);
        assert_eq!(winograd::dw_applies::<f32>(&wg, 30, n), route);
        let channels_last =
            WideGeometry::new(ConvGeometry::new((24, 28, 28), (3, 3), 1, 1).unwrap());
        assert!(!winograd::dw_applies::<f32>(&channels_last, 30, n));
    }
}

/// The channels-last weight gradient (`weight_grad.rs`) on 24 channels,
/// whose products run by `kernels/row_product.rs` (f32 with AVX-512), and
/// on 32, which keep `gemm`: backward against the f64 layer, on batches of
/// 1 and 3 images of 14×14 (one chunk, several).
#[test]
fn an_f32_channels_last_weight_gradient_matches_the_definition() {
    let mut rng = Rng::new(27);
    for (channels, by_rows) in [(24, true), (32, false)] {
        let config = ConvolutionConfig {
            in_channels: channels,
            filters: 20,
            filter_size: 3,
            stride: 1,
            pad: 1,
            init: Init::Std(1.0),
        };
        let wg = WideGeometry::new(ConvGeometry::new((channels, 14, 14), (3, 3), 1, 1).unwrap());
        assert!(weight_grad::applies(&wg));
        let cpu = crate::kernels::direct_conv::cpu_applies::<f32>();
        assert_eq!(
            crate::kernels::row_product::worth_it::<f32>(channels),
            by_rows && cpu
        );
        for n in [1, 3] {
            assert!(!winograd::dw_applies::<f32>(&wg, 20, n));
            let (mut conv, mut fast, _) =
                f64_and_f32_layers_agree(&config, (n, 14, false, false), &mut rng);
            // dW: sums of n·196 products of N(0, 1) values (about 14·√n in
            // size); a wrong or missing term is off by about 1.
            f64_and_f32_backwards_agree(
                &mut conv,
                &mut fast,
                (2e-3, 1e-5 * (n * 196) as f64),
                &mut rng,
            );
        }
    }
}

/// Inference on 8×8 maps (`deep`'s conv5 and conv6): 16 images or more
/// take Winograd with the images' tiles packed (`forward_chunk_packed`),
/// with and without a fused ReLU and 2×2 pooling; against the f64 layer.
/// Batches of 1 to 40 (groups of 16: none, one, one and a part, and on two
/// threads a part on each); fewer than 16 keep the direct kernel.
/// Training's forward keeps its route and is checked too.
#[test]
fn an_f32_inference_on_8x8_maps_by_packed_winograd_matches_the_definition() {
    let mut rng = Rng::new(23);
    let config = ConvolutionConfig {
        in_channels: 32,
        filters: 24,
        filter_size: 3,
        stride: 1,
        pad: 1,
        init: Init::Std(1.0),
    };
    let cases = [
        (1, false, false),
        (5, true, false),
        (15, false, true),
        (16, true, true),
        (21, false, true),
        (40, true, false),
    ];
    for (n, relu, pooled) in cases {
        f64_and_f32_layers_agree(&config, (n, 8, relu, pooled), &mut rng);
        let wg = WideGeometry::new(ConvGeometry::new((32, 8, 8), (3, 3), 1, 1).unwrap());
        // 4 tiles per image: 16 images make winograd::MIN_TILES.
        let route = n >= 16 && crate::kernels::direct_conv::cpu_applies::<f32>();
        assert_eq!(winograd::packed_applies::<f32>(&wg, n, false), route);
        assert!(!winograd::packed_applies::<f32>(&wg, n, true));
        assert!(!winograd::applies::<f32>(&wg, n));
    }
}

/// Winograd's forward on maps its tiles cover poorly (14×14: 20 tile
/// places for 12¼ tiles' worth) from `POOR_COVER_MIN_CHANNELS` input
/// channels only; on 28×28 and 16×16 outputs from `MIN_CHANNELS`.
#[test]
fn winograd_leaves_poorly_covered_maps_with_few_channels_to_the_direct_kernel() {
    let by_winograd = |channels, side, pad| {
        let g = ConvGeometry::new((channels, side, side), (3, 3), 1, pad).unwrap();
        winograd::applies::<f32>(&WideGeometry::new(g), 8)
    };
    let fast = crate::kernels::direct_conv::cpu_applies::<f32>();
    assert_eq!(by_winograd(winograd::MIN_CHANNELS, 28, 1), fast);
    assert_eq!(by_winograd(16, 14, 2), fast); // a 16×16 output
    assert!(!by_winograd(16, 14, 1));
    assert!(!by_winograd(24, 14, 1));
    assert!(!by_winograd(winograd::POOR_COVER_MIN_CHANNELS - 1, 14, 1));
    assert_eq!(by_winograd(winograd::POOR_COVER_MIN_CHANNELS, 14, 1), fast);
    assert_eq!(by_winograd(48, 14, 1), fast);
}

#[test]
fn a_filter_as_large_as_the_input_matches_the_definition() {
    // LeNet-5's C5 shape, smaller: 9 filters of 3×5×5 over 3×5×5 images,
    // with each fused activation or none; inference multiplies all the
    // images at once (grouped.rs) or, for one, takes dot products; training
    // goes image by image.
    use crate::layers::FusedActivation;
    let mut rng = Rng::new(12);
    let config = ConvolutionConfig {
        in_channels: 3,
        filters: 9,
        filter_size: 5,
        stride: 1,
        pad: 0,
        init: Init::Std(1.0),
    };
    let activations = [
        None,
        Some(FusedActivation::Relu),
        Some(FusedActivation::Sigmoid),
        Some(FusedActivation::Tanh),
    ];
    for act in activations {
        let mut conv = Convolution::<f64>::new(&config, &mut rng).unwrap();
        conv.bias
            .data_mut()
            .iter_mut()
            .for_each(|b| *b = rng.normal());
        conv.fuse_activation(act);
        // Nine images (one product) and one (dot products).
        for n in [9, 1] {
            let x = Tensor::from_vec(&[n, 3, 5, 5], (0..n * 75).map(|_| rng.normal()).collect())
                .unwrap();
            let g = conv.geometry_for(x.shape()).unwrap().0;
            assert!(grouped::applies(&g, n) && !grouped::applies(&g, 0));
            let mut want = direct_convolution(&x, &conv);
            for v in want.iter_mut() {
                *v = match act {
                    None => *v,
                    Some(FusedActivation::Relu) => v.max(0.0),
                    Some(FusedActivation::Sigmoid) => 1.0 / (1.0 + (-*v).exp()),
                    Some(FusedActivation::Tanh) => v.tanh(),
                };
            }
            let inferred = conv.forward(&x, false).unwrap().clone();
            assert_eq!(inferred.shape(), &[n, 9, 1, 1]);
            // A batch-1 team (two threads) shares the filters out: the same bits.
            let in_team = crate::parallel::team::test_pool(2).install(|| {
                crate::parallel::team::with_team(|| conv.forward(&x, false).unwrap().clone())
            });
            assert_eq!(inferred.data(), in_team.data());
            let trained = conv.forward(&x, true).unwrap();
            for ((a, t), w) in inferred.data().iter().zip(trained.data()).zip(&want) {
                assert!(
                    (a - w).abs() < 1e-12 && (t - w).abs() < 1e-12,
                    "{act:?}: {a} {t} {w}"
                );
            }
        }
    }
}

#[test]
fn gradients_match_numerical() {
    // Several images (more than one chunk), channels, filters, stride and padding.
    for (n, stride, pad) in [(3, 1, 0), (20, 2, 1), (2, 1, 2)] {
        let mut conv = small_convolution(stride, pad, 0.5, &mut Rng::new(1));
        let report = check_layer(&mut conv, &[n, 2, 5, 6], 2).unwrap();
        assert_eq!(report.len(), 3); // x, weight, bias
        for (name, err) in report {
            assert!(err <= 1e-6, "n={n} stride={stride} pad={pad}: {name} {err}");
        }
    }
}

#[test]
fn every_fused_activation_matches_the_layers_and_the_numerical_gradient() {
    use crate::layers::{FusedActivation, MaxPooling, PoolingConfig, Relu, Sigmoid, Tanh};
    let overlapping = PoolingConfig {
        size: 3,
        stride: 2,
        pad: 1,
    };
    for act in [
        FusedActivation::Relu,
        FusedActivation::Sigmoid,
        FusedActivation::Tanh,
    ] {
        for pool in [None, Some(&overlapping)] {
            let mut rng = Rng::new(4);
            let mut conv = small_convolution(1, 1, 0.5, &mut rng);
            let values = (0..64).map(|_| rng.normal()).collect();
            let x = Tensor::from_vec(&[2, 2, 4, 4], values).unwrap();
            let mut layer: Box<dyn Layer<f64>> = match act {
                FusedActivation::Relu => Box::new(Relu::new()),
                FusedActivation::Sigmoid => Box::new(Sigmoid::new()),
                FusedActivation::Tanh => Box::new(Tanh::new()),
            };
            let mut max_pool = pool.map(MaxPooling::new);
            // Layer by layer.
            let mut want = conv.forward(&x, true).unwrap().clone();
            want = layer.forward(&want, true).unwrap().clone();
            if let Some(p) = max_pool.as_mut() {
                want = p.forward(&want, true).unwrap().clone();
            }
            let dout_values = (0..want.len()).map(|_| rng.normal()).collect();
            let dout = Tensor::from_vec(want.shape(), dout_values).unwrap();
            let mut d = dout.clone();
            if let Some(p) = max_pool.as_mut() {
                d = p.backward(&d).unwrap().clone();
            }
            d = layer.backward(&d).unwrap().clone();
            let want_dx = conv.backward(&d).unwrap().clone();
            let want_dw = conv.grad_weight.clone();
            // Fused.
            conv.fuse_activation(Some(act));
            conv.fuse_max_pool(pool);
            assert_eq!(conv.fused_activation(), Some(act));
            assert_eq!(conv.forward(&x, true).unwrap(), &want, "{act:?} {pool:?}");
            assert_eq!(conv.forward(&x, false).unwrap(), &want, "{act:?} {pool:?}");
            conv.forward(&x, true).unwrap();
            let dx = conv.backward(&dout).unwrap().clone();
            let close = |a: &Tensor<f64>, b: &Tensor<f64>| {
                a.data()
                    .iter()
                    .zip(b.data())
                    .all(|(a, b)| (a - b).abs() <= 1e-14)
            };
            assert!(close(&dx, &want_dx), "{act:?} {pool:?}: dx");
            assert!(close(&conv.grad_weight, &want_dw), "{act:?} {pool:?}: dW");
            // (check_layer takes `output_shape`'s dout: the unpooled one.)
            if pool.is_none() {
                let report = check_layer(&mut conv, &[2, 2, 4, 4], 4).unwrap();
                assert_eq!(report.len(), 3);
                for (name, err) in report {
                    assert!(err <= 1e-6, "{act:?}: {name} {err}");
                }
            }
        }
    }
}

#[test]
fn inference_gives_the_training_output_and_keeps_nothing_for_backward() {
    let mut rng = Rng::new(2);
    let mut conv = Convolution::<f64>::new(&ConvolutionConfig::default(), &mut rng).unwrap();
    let x = Tensor::from_vec(
        &[40, 1, 28, 28],
        (0..40 * 784).map(|_| rng.normal()).collect(),
    )
    .unwrap();
    let trained = conv.forward(&x, true).unwrap().clone();
    // One set of buffers per thread.
    assert_eq!(conv.scratch.len(), rayon::current_num_threads());
    assert_eq!(conv.scratch[0].lock().unwrap().col.len(), 25 * 24 * 28);
    assert_eq!(conv.forward(&x, false).unwrap(), &trained);
    assert!(matches!(
        conv.backward(&trained),
        Err(Error::BackwardBeforeForward(_))
    ));
}

#[test]
fn errors_instead_of_panics() {
    let mut conv =
        Convolution::<f32>::new(&ConvolutionConfig::default(), &mut Rng::new(0)).unwrap();
    let zero = ConvolutionConfig {
        filters: 0,
        ..Default::default()
    };
    assert!(Convolution::<f32>::new(&zero, &mut Rng::new(0)).is_err());
    let no_stride = ConvolutionConfig {
        stride: 0,
        ..Default::default()
    };
    assert!(Convolution::<f32>::new(&no_stride, &mut Rng::new(0)).is_err());
    let dout = Tensor::zeros(&[1, 30, 24, 24]);
    assert!(matches!(
        conv.backward(&dout),
        Err(Error::BackwardBeforeForward(_))
    ));
    let small = Tensor::zeros(&[1, 1, 4, 4]);
    assert!(matches!(
        conv.forward(&small, true),
        Err(Error::Geometry(_))
    ));
    let wrong_channels = Tensor::zeros(&[1, 3, 28, 28]);
    assert!(matches!(
        conv.forward(&wrong_channels, true),
        Err(Error::Shape(_))
    ));
    let x = Tensor::zeros(&[1, 1, 28, 28]);
    conv.forward(&x, true).unwrap();
    assert!(matches!(
        conv.backward(&Tensor::zeros(&[1, 30, 24, 23])),
        Err(Error::Shape(_))
    ));
}

/// Inside a team (inference at batch 1), the two threads each compute a
/// band of output rows: the same numbers, to the bit, as one thread, with
/// or without a fused max pooling (2×2 windows are pooled by each thread
/// from its own band, 3×3 ones on one thread afterwards). A training
/// forward there still keeps what backward needs.
#[test]
fn a_team_shares_out_the_rows_with_the_same_result() {
    use crate::layers::PoolingConfig;
    // (C, H, W), filters, filter size, pad, stride
    type Case = ([usize; 3], usize, usize, usize, usize);
    fn check<T: Float>(case: Case, relu: bool, pool: Option<usize>, rng: &mut Rng) {
        let ([c, h, w], filters, filter_size, pad, stride) = case;
        let config = ConvolutionConfig {
            in_channels: c,
            filters,
            filter_size,
            pad,
            stride,
            ..Default::default()
        };
        let mut conv = Convolution::<T>::new(&config, rng).unwrap();
        conv.bias
            .data_mut()
            .iter_mut()
            .for_each(|b| *b = T::from(rng.normal()).unwrap());
        conv.fuse_relu(relu);
        let pool = pool.map(|size| PoolingConfig {
            size,
            ..Default::default()
        });
        conv.fuse_max_pool(pool.as_ref());
        let x: Vec<T> = (0..c * h * w)
            .map(|_| T::from(rng.normal()).unwrap())
            .collect();
        let x = Tensor::from_vec(&[1, c, h, w], x).unwrap();
        let two = crate::parallel::team::test_pool(2);
        let alone = two.install(|| conv.forward(&x, false).unwrap().clone());
        let shared = two.install(|| {
            crate::parallel::team::with_team(|| conv.forward(&x, false).unwrap().clone())
        });
        assert_eq!(alone, shared, "{case:?}, relu {relu}, pool {pool:?}");
        assert!(alone.data().iter().any(|&v| v != T::zero()));
        // A training forward in a team keeps its padded input for backward
        // too: the same gradients.
        let dout: Vec<T> = (0..alone.len())
            .map(|_| T::from(rng.normal()).unwrap())
            .collect();
        let dout = Tensor::from_vec(alone.shape(), dout).unwrap();
        let mut step = |in_team: bool| {
            let mut run = || {
                conv.forward(&x, true).unwrap();
                let dx = conv.backward(&dout).unwrap().clone();
                (dx, conv.grad_weight.clone(), conv.grad_bias.clone())
            };
            two.install(|| {
                if in_team {
                    crate::parallel::team::with_team(run)
                } else {
                    run()
                }
            })
        };
        // (The team first, so that nothing of the other run is left in the layer.)
        let shared = step(true);
        let alone = step(false);
        assert!(alone.1.data().iter().any(|&v| v != T::zero()));
        assert_eq!(
            alone, shared,
            "{case:?}, relu {relu}, pool {pool:?}: gradients"
        );
    }
    let mut rng = Rng::new(6);
    let cases: [Case; 7] = [
        ([16, 28, 28], 16, 3, 1, 1), // deep's conv2: bands of 14 rows of 30
        ([6, 14, 14], 16, 5, 0, 1),  // LeNet-5's C3: 5×5, rows of 14 for 10
        ([32, 8, 8], 64, 3, 1, 1),   // deep's conv5: bands of 40 pixels
        ([1, 28, 28], 16, 3, 1, 1),  // one channel
        ([3, 9, 11], 20, 3, 1, 1),   // an odd number of rows: 5 + 4
        ([2, 13, 13], 5, 5, 0, 2),   // stride 2: the book's grid, OW wide
        ([4, 3, 7], 6, 3, 0, 1),     // one output row: no bands
    ];
    for case in cases {
        for relu in [false, true] {
            check::<f32>(case, relu, None, &mut rng);
            check::<f64>(case, relu, None, &mut rng);
        }
    }
    // Fused poolings: 2×2 on 28, 16, 8 rows (deep's conv2, conv4, conv6),
    // on 9 rows (4 pooled: the last row in no window) and on 4 and 3 rows
    // (2 pooled: one each; 1 pooled: one thread); 3×3 with stride 2.
    let pooled: [(Case, usize); 7] = [
        (([16, 28, 28], 16, 3, 1, 1), 2),
        (([32, 14, 14], 32, 3, 2, 1), 2),
        (([64, 8, 8], 64, 3, 1, 1), 2),
        (([3, 9, 11], 20, 3, 1, 1), 2),
        (([2, 4, 6], 3, 3, 1, 1), 2),
        (([2, 3, 6], 3, 3, 1, 1), 2),
        (([3, 13, 13], 8, 3, 1, 1), 3),
    ];
    for (case, size) in pooled {
        check::<f32>(case, true, Some(size), &mut rng);
        check::<f64>(case, false, Some(size), &mut rng);
    }
}

/// With a ReLU and a max pooling fused in, or the pooling alone, the layer
/// gives what the convolution, the ReLU and the pooling layer give one
/// after the other, to the bit: the output in training and in inference,
/// dx and the gradients (the network's test does the same on small
/// planes); changing the fusion leaves nothing for backward. 6×6 runs on
/// the book's grid, 13×13 and 20×20 on the wide grid (13×13: rows of 15,
/// pooled to 6×6, the last row and column of the planes in no window;
/// 20×20: a 400-value plane, enough maxima for `db`'s order to show).
#[test]
fn a_fused_max_pooling_pools_the_output() {
    use crate::kernels::im2col_wide::WideGeometry;
    use crate::layers::{MaxPooling, PoolingConfig, Relu};
    let mut rng = Rng::new(9);
    for ((side, wide_w), with_relu) in [(6, 6), (13, 15), (20, 22)]
        .into_iter()
        .flat_map(|case| [(case, false), (case, true)])
    {
        let mut conv = small_convolution(1, 1, 1.0, &mut rng);
        let g = conv.geometry_for(&[2, 2, side, side]).unwrap().0;
        assert_eq!(WideGeometry::new(g).wide_w, wide_w);
        let values = (0..2 * 2 * side * side).map(|_| rng.normal()).collect();
        let x = Tensor::from_vec(&[2, 2, side, side], values).unwrap();
        let pool_config = PoolingConfig::default();
        let (mut relu, mut pool) = (Relu::new(), MaxPooling::new(&pool_config));
        // Layer by layer.
        let mut planes = conv.forward(&x, true).unwrap().clone();
        if with_relu {
            planes = relu.forward(&planes, true).unwrap().clone();
        }
        let pooled = pool.forward(&planes, true).unwrap().clone();
        let values = (0..pooled.len()).map(|_| rng.normal()).collect();
        let dout = Tensor::from_vec(pooled.shape(), values).unwrap();
        let mut dplanes = pool.backward(&dout).unwrap().clone();
        if with_relu {
            dplanes = relu.backward(&dplanes).unwrap().clone();
        }
        let dx = conv.backward(&dplanes).unwrap().clone();
        let grads = [conv.grad_weight.clone(), conv.grad_bias.clone()];
        // Fused.
        conv.fuse_relu(with_relu);
        conv.fuse_max_pool(Some(&pool_config));
        let fused = conv.forward(&x, true).unwrap().clone();
        assert_eq!(fused.shape(), [2, 3, side / 2, side / 2]);
        assert_eq!(fused, pooled);
        assert_eq!(conv.backward(&dout).unwrap(), &dx);
        assert_eq!([conv.grad_weight.clone(), conv.grad_bias.clone()], grads);
        assert_eq!(conv.forward(&x, false).unwrap(), &pooled);
        assert_eq!(conv.output_shape(x.shape()).unwrap(), [2, 3, side, side]);
        conv.fuse_max_pool(None);
        assert!(matches!(
            conv.backward(&fused),
            Err(Error::BackwardBeforeForward(_))
        ));
        assert_eq!(conv.forward(&x, false).unwrap(), &planes);
    }
}

/// An empty batch gives an empty output, fused pooling or not.
#[test]
fn an_empty_batch_is_an_empty_output() {
    use crate::layers::PoolingConfig;
    let mut conv =
        Convolution::<f32>::new(&ConvolutionConfig::default(), &mut Rng::new(0)).unwrap();
    let x = Tensor::zeros(&[0, 1, 28, 28]);
    assert_eq!(conv.forward(&x, true).unwrap().shape(), [0, 30, 24, 24]);
    conv.fuse_max_pool(Some(&PoolingConfig::default()));
    assert_eq!(conv.forward(&x, true).unwrap().shape(), [0, 30, 12, 12]);
    assert_eq!(conv.forward(&x, false).unwrap().shape(), [0, 30, 12, 12]);
    // Backward of an empty batch: no dx, zero gradients.
    conv.forward(&x, true).unwrap();
    conv.grad_weight.data_mut().fill(1.0);
    let dx = conv.backward(&Tensor::zeros(&[0, 30, 12, 12])).unwrap();
    assert_eq!(dx.shape(), [0, 1, 28, 28]);
    assert!(conv.grad_weight.data().iter().all(|&v| v == 0.0));
}

#[test]
fn gradients_do_not_depend_on_the_number_of_threads() {
    // 64 filters over 32 channels: more dW values than one task adds up
    // (SUM_TASK_LEN), and 40 images: several chunks of partial sums.
    let config = ConvolutionConfig {
        in_channels: 32,
        filters: 64,
        filter_size: 3,
        pad: 1,
        ..Default::default()
    };
    let conv = gradients_on_1_2_and_3_threads(&config, [40, 32, 6, 6]);
    assert!(conv.grad_weight.len() > backward::SUM_TASK_LEN);
    // 24 channels: dW's products by `kernels/row_product.rs` where it
    // applies.
    let config = ConvolutionConfig {
        in_channels: 24,
        filters: 20,
        filter_size: 3,
        pad: 1,
        ..Default::default()
    };
    gradients_on_1_2_and_3_threads(&config, [40, 24, 6, 6]);
    // The book's first layer (one channel, 5×5), whose dW the direct
    // kernel sums in lanes (`kernels/direct_dw.rs`) where it applies.
    gradients_on_1_2_and_3_threads(&ConvolutionConfig::default(), [40, 1, 28, 28]);
}

/// The layer's gradients for random `x` and `dout` of `shape`'s batch on
/// a pool of 1 thread, then the same to the bit on 2 and 3; the layer.
fn gradients_on_1_2_and_3_threads(
    config: &ConvolutionConfig,
    shape: [usize; 4],
) -> Convolution<f32> {
    let mut rng = Rng::new(12);
    let mut conv = Convolution::<f32>::new(config, &mut rng).unwrap();
    let x: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.normal() as f32)
        .collect();
    let x = Tensor::from_vec(&shape, x).unwrap();
    let out_shape = conv.output_shape(&shape).unwrap();
    let dout: Vec<f32> = (0..out_shape.iter().product())
        .map(|_| rng.normal() as f32)
        .collect();
    let dout = Tensor::from_vec(&out_shape, dout).unwrap();
    let mut gradients = |threads| {
        crate::parallel::team::test_pool(threads).install(|| {
            conv.forward(&x, true).unwrap();
            conv.backward(&dout).unwrap();
        });
        (conv.grad_weight.clone(), conv.grad_bias.clone())
    };
    let one = gradients(1);
    assert!(one.0.data().iter().all(|v| v.is_finite() && *v != 0.0));
    for threads in [2, 3] {
        assert!(gradients(threads) == one, "{threads} threads");
    }
    conv
}

/// Folding a per-filter map into the layer leaves its own parameters as
/// they were, and is refused with a pooling fused or the wrong number of
/// values.
#[test]
fn folding_leaves_the_parameters_and_refuses_what_does_not_commute() {
    let mut rng = Rng::new(31);
    let config = ConvolutionConfig {
        in_channels: 2,
        filters: 3,
        filter_size: 3,
        stride: 1,
        pad: 1,
        init: Init::Std(1.0),
    };
    let mut conv = Convolution::<f64>::new(&config, &mut rng).unwrap();
    let (weight, bias) = (conv.weight.clone(), conv.bias.clone());
    let x = Tensor::from_vec(&[2, 2, 4, 4], (0..64).map(|_| rng.normal()).collect()).unwrap();
    let (scale, shift) = ([0.5, -2.0, 1.5], [0.1, 0.2, -0.3]);
    let folded = conv
        .forward_folded(&x, &scale, &shift, false, None)
        .unwrap()
        .clone();
    let plain = conv.forward(&x, false).unwrap().clone();
    for (i, (&a, &b)) in folded.data().iter().zip(plain.data()).enumerate() {
        let f = i / 16 % 3;
        assert!((a - (scale[f] * b + shift[f])).abs() < 1e-12, "[{i}]");
    }
    assert_eq!((&conv.weight, &conv.bias), (&weight, &bias));
    assert!(conv.fused_activation().is_none());
    // With a ReLU and a 2×2 pooling: the maxima of the rectified values.
    let pool = PoolingConfig::default();
    let pooled = conv
        .forward_folded(&x, &scale, &shift, true, Some(&pool))
        .unwrap()
        .clone();
    assert_eq!(pooled.shape(), [2, 3, 2, 2]);
    for (i, &p) in pooled.data().iter().enumerate() {
        let (plane, py, px) = (i / 4, i % 4 / 2, i % 2);
        let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .map(|(dy, dx)| folded.data()[plane * 16 + (2 * py + dy) * 4 + 2 * px + dx].max(0.0));
        assert_eq!(p, window.into_iter().fold(f64::MIN, f64::max), "[{i}]");
    }
    assert!(conv.can_fold());
    assert!(conv
        .forward_folded(&x, &scale[..2], &shift[..2], false, None)
        .is_err());
    conv.fuse_max_pool(Some(&pool));
    assert!(!conv.can_fold());
    assert!(conv
        .forward_folded(&x, &scale, &shift, false, None)
        .is_err());
    assert_eq!((&conv.weight, &conv.bias), (&weight, &bias));
}

/// The Winograd route keeps its transformed weights from one call to the
/// next: a change to the weights (here through the public field, as a
/// user may make one) must reach the next forward, which then gives what
/// a new layer with those weights gives, to the bit.
#[test]
fn winograd_weights_follow_every_change_of_the_weights() {
    let mut rng = Rng::new(31);
    let config = ConvolutionConfig {
        in_channels: 16,
        filters: 8,
        filter_size: 3,
        stride: 1,
        pad: 1,
        init: Init::Std(1.0),
    };
    let mut conv = Convolution::<f32>::new(&config, &mut rng).unwrap();
    let x: Vec<f32> = (0..2 * 16 * 28 * 28).map(|_| rng.normal() as f32).collect();
    let x = Tensor::from_vec(&[2, 16, 28, 28], x).unwrap();
    let wg = WideGeometry::new(ConvGeometry::new((16, 28, 28), (3, 3), 1, 1).unwrap());
    let route = crate::kernels::direct_conv::cpu_applies::<f32>();
    assert_eq!(winograd::applies::<f32>(&wg, 2), route);
    let before = conv.forward(&x, false).unwrap().clone();
    for step in 0..3 {
        match step {
            0 => {} // unchanged: the kept transform
            1 => conv.weight.data_mut()[5] += 0.5,
            _ => conv.weight.data_mut()[16 * 9 * 7] = -1.0,
        }
        let got = conv.forward(&x, false).unwrap().clone();
        let mut fresh =
            Convolution::from_params(conv.weight.clone(), conv.bias.clone(), 1, 1).unwrap();
        let want = fresh.forward(&x, false).unwrap();
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(want), "step {step}");
        assert_eq!(step == 0, bits(&got) == bits(&before), "step {step}");
    }
}

/// A 5×5 filter on a 14×14 map (LeNet-5's C3) takes the wide grid, 14
/// columns for 10, and with it the direct kernel: forward in training and
/// inference, backward's `dx` and the gradients agree with the f64 layer
/// (sums of 6·25 or 16·25 products of N(0, 1) values, about 12 to 20 in
/// size; dW's of n·100, about 17).
#[test]
fn a_5x5_filter_on_the_wide_grid_matches_the_definition() {
    let mut rng = Rng::new(41);
    let config = ConvolutionConfig {
        in_channels: 6,
        filters: 16,
        filter_size: 5,
        stride: 1,
        pad: 0,
        init: Init::Std(1.0),
    };
    let wg = WideGeometry::new(ConvGeometry::new((6, 14, 14), (5, 5), 1, 0).unwrap());
    assert_eq!(wg.wide_w, 14);
    let chosen = crate::kernels::direct_conv::worth_it::<f32>(&wg);
    assert_eq!(chosen, crate::kernels::direct_conv::cpu_applies::<f32>());
    for n in [1, 3] {
        let (mut conv, mut fast, _) =
            f64_and_f32_layers_agree(&config, (n, 14, true, false), &mut rng);
        f64_and_f32_backwards_agree(
            &mut conv,
            &mut fast,
            (1e-3, 1e-5 * (n * 100) as f64),
            &mut rng,
        );
    }
}

/// A training forward that takes its planes' sums gives each plane's
/// `block_moments` to the bit, by every route (Winograd, the direct kernel,
/// `gemm` on the book's grid, f64); not at inference, not when off, not
/// with a pooling fused; the output is the same as without.
#[test]
fn plane_moments_are_each_planes_block_moments() {
    fn run<T: Float>(channels: usize, side: usize, n: usize) {
        let mut rng = Rng::new(9);
        let config = ConvolutionConfig {
            in_channels: channels,
            filters: 5,
            filter_size: 3,
            stride: 1,
            pad: 1,
            init: Init::Std(1.0),
        };
        let mut conv = Convolution::<T>::new(&config, &mut rng).unwrap();
        let len = n * channels * side * side;
        let values = (0..len).map(|_| T::cast(rng.normal())).collect();
        let x = Tensor::from_vec(&[n, channels, side, side], values).unwrap();
        let plain = conv.forward(&x, true).unwrap().clone();
        assert!(conv.forward_plane_moments(&x, true).unwrap().1.is_none());
        conv.take_plane_moments(true);
        assert!(conv.forward_plane_moments(&x, false).unwrap().1.is_none());
        let (out, moments) = conv.forward_plane_moments(&x, true).unwrap();
        assert_eq!(out, &plain);
        let moments = moments.expect("a training forward takes them");
        let planes = out.data().chunks_exact(side * side);
        assert_eq!(moments.len(), n * 5);
        for (i, (&got, plane)) in moments.iter().zip(planes).enumerate() {
            let want = crate::kernels::bn_sums::block_moments(plane);
            let bits = |(a, b): (T, T)| (a.as_f64().to_bits(), b.as_f64().to_bits());
            assert_eq!(bits(got), bits(want), "{channels} channels, plane {i}");
        }
        conv.fuse_max_pool(Some(&crate::layers::PoolingConfig::default()));
        assert!(conv.forward_plane_moments(&x, true).unwrap().1.is_none());
    }
    let by_winograd = |channels, side| {
        let g = ConvGeometry::new((channels, side, side), (3, 3), 1, 1).unwrap();
        winograd::applies::<f32>(&WideGeometry::new(g), 3)
    };
    assert_eq!(
        by_winograd(9, 28),
        crate::kernels::direct_conv::cpu_applies::<f32>()
    );
    assert!(!by_winograd(2, 28));
    run::<f32>(9, 28, 3); // Winograd
    run::<f32>(2, 28, 3); // the direct kernel
    run::<f32>(3, 8, 3); // the book's grid: `gemm`
    run::<f64>(2, 12, 2);
}
