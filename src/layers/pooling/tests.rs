//! Tests of max pooling ([`MaxPooling`](super::MaxPooling)): by hand, against the
//! book's im2col formulation, numerical gradients, inference without `arg_max`,
//! in a team, and bad input.

use super::*;
use crate::gradient_check::check_layer;
use crate::kernels::im2col::im2col;
use crate::rng::Rng;

/// The book's 2×2 windows, and overlapping, padded 3×3 ones.
fn book_and_overlapping() -> [PoolingConfig; 2] {
    let overlapping = PoolingConfig {
        size: 3,
        stride: 2,
        pad: 1,
    };
    [PoolingConfig::default(), overlapping]
}

/// Inside a team (inference at batch 1) each thread pools half the
/// planes: the same outputs and, for backward, the same `arg_max`.
#[test]
fn a_team_pools_the_same() {
    let mut rng = Rng::new(3);
    let x = (0..5 * 9 * 8).map(|_| rng.normal()).collect();
    let x = Tensor::from_vec(&[1, 5, 9, 8], x).unwrap();
    let two = crate::parallel::team::test_pool(2);
    for config in book_and_overlapping() {
        let mut pool = MaxPooling::<f64>::new(&config);
        let alone = two.install(|| pool.forward(&x, true).unwrap().clone());
        let arg_alone = pool.arg_max.clone();
        let shared = two.install(|| {
            crate::parallel::team::with_team(|| pool.forward(&x, true).unwrap().clone())
        });
        assert_eq!(alone, shared, "{config:?}");
        assert_eq!(arg_alone, pool.arg_max, "{config:?}");
    }
}

/// An inference forward gives the training forward's output (the 2×2
/// windows by a kernel without indices; ties, −0 and +0 included) and
/// leaves nothing for backward.
#[test]
fn inference_gives_the_training_output_and_keeps_nothing_for_backward() {
    let mut rng = Rng::new(8);
    // Values rounded to one step of 0.5: many ties, and some −0.0.
    let x = (0..2 * 3 * 8 * 6)
        .map(|_| (2.0 * rng.normal()).round() / 2.0 * if rng.uniform() < 0.5 { 1.0 } else { -1.0 })
        .collect();
    let x = Tensor::from_vec(&[2, 3, 8, 6], x).unwrap();
    assert!(x
        .data()
        .iter()
        .any(|v: &f64| *v == 0.0 && v.is_sign_negative()));
    for config in book_and_overlapping() {
        let mut pool = MaxPooling::<f64>::new(&config);
        let trained = pool.forward(&x, true).unwrap().clone();
        let inferred = pool.forward(&x, false).unwrap();
        let bits = |t: &Tensor<f64>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&trained), bits(inferred), "{config:?}");
        let dout = Tensor::zeros(trained.shape());
        assert!(matches!(
            pool.backward(&dout),
            Err(Error::BackwardBeforeForward(_))
        ));
    }
}

#[test]
fn forward_and_backward_by_hand() {
    #[rustfmt::skip]
    let x = Tensor::from_vec(&[1, 1, 4, 4], vec![
        1., 2., 0., 1.,
        0., 3., 4., 2.,
        5., 0., 1., 1.,
        2., 1., 0., 6.,
    ]).unwrap();
    let mut pool = MaxPooling::<f64>::new(&PoolingConfig::default());
    assert_eq!(pool.forward(&x, true).unwrap().data(), [3., 4., 5., 6.]);
    let dout = Tensor::from_vec(&[1, 1, 2, 2], vec![10., 20., 30., 40.]).unwrap();
    #[rustfmt::skip]
    let want = [
        0., 0., 0., 0.,
        0., 10., 20., 0.,
        30., 0., 0., 0.,
        0., 0., 0., 40.,
    ];
    assert_eq!(pool.backward(&dout).unwrap().data(), want);
}

#[test]
fn overlapping_windows_add_gradients() {
    // 3x3 windows with stride 1 on 3x4: the 9 is the max of both windows.
    let x = Tensor::from_vec(
        &[1, 1, 3, 4],
        vec![0., 0., 0., 0., 0., 9., 0., 0., 0., 0., 0., 0.],
    )
    .unwrap();
    let mut pool = MaxPooling::<f64>::new(&PoolingConfig {
        size: 3,
        stride: 1,
        pad: 0,
    });
    assert_eq!(pool.forward(&x, true).unwrap().data(), [9., 9.]);
    let dx = pool
        .backward(&Tensor::from_vec(&[1, 1, 1, 2], vec![1., 2.]).unwrap())
        .unwrap();
    assert_eq!(dx.data()[5], 3.);
    assert_eq!(dx.data().iter().sum::<f64>(), 3.);
}

#[test]
fn matches_the_books_im2col_formulation() {
    // Book: col = im2col(x, PH, PW, S, P).reshape(-1, PH*PW); out = max(col, axis=1).
    let mut rng = Rng::new(4);
    let x = Tensor::from_vec(&[2, 3, 7, 7], (0..294).map(|_| rng.normal()).collect()).unwrap();
    let mut pool = MaxPooling::<f64>::new(&PoolingConfig {
        size: 3,
        stride: 2,
        pad: 0,
    });
    let out = pool.forward(&x, false).unwrap();
    let col = im2col(&x, 3, 3, 2, 0).unwrap(); // (N·OH·OW, C·9)
    let (oh, ow) = (3, 3);
    for n in 0..2 {
        for c in 0..3 {
            for p in 0..oh * ow {
                let row = &col.data()[((n * oh * ow) + p) * 27 + c * 9..][..9];
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                assert_eq!(out.data()[(n * 3 + c) * 9 + p], max);
            }
        }
    }
}

#[test]
fn gradients_match_numerical() {
    for config in book_and_overlapping() {
        let mut pool = MaxPooling::<f64>::new(&config);
        for (name, err) in check_layer(&mut pool, &[2, 3, 6, 6], 3).unwrap() {
            assert!(err <= 1e-6, "{config:?} {name}: {err}");
        }
    }
}

#[test]
fn errors_instead_of_panics() {
    let mut pool = MaxPooling::<f32>::new(&PoolingConfig::default());
    assert!(matches!(
        pool.backward(&Tensor::zeros(&[1, 1, 1, 1])),
        Err(Error::BackwardBeforeForward(_))
    ));
    assert!(pool.forward(&Tensor::zeros(&[1, 1, 1, 1]), false).is_err());
    assert!(pool.forward(&Tensor::zeros(&[1, 4]), false).is_err());
    let mut bad = MaxPooling::<f32>::new(&PoolingConfig {
        size: 2,
        stride: 0,
        pad: 0,
    });
    assert!(matches!(
        bad.forward(&Tensor::zeros(&[1, 1, 4, 4]), false),
        Err(Error::Geometry(_))
    ));
}
