//! The training options beyond the book's loop, on the embedded digits:
//! augmentation (reproducible on any number of threads), the validation
//! split and early stopping (which ends with the best epoch's weights), the
//! averaged model, and test-time augmentation.

use convnet::data::{load_embedded_mnist10k, Dataset, TrainTest};
use convnet::networks::{build_model, ModelOptions, Network};
use convnet::train::augment::flip_horizontally;
use convnet::train::{
    evaluate, evaluate_with, train, validation_split, Ema, Progress, TrainConfig,
};
use convnet::{Rng, Tensor};

fn digits(train: usize, test: usize) -> TrainTest {
    let full = load_embedded_mnist10k().expect("embedded digits load");
    TrainTest {
        name: "mnist-10k subset".into(),
        train: full.train.subset(train),
        test: full.test.subset(test),
        class_names: full.class_names.clone(),
    }
}

fn network(spec: &str, data: &TrainTest, seed: u64) -> Network<f32> {
    build_model::<f32>(
        spec,
        &ModelOptions::default(),
        data.train.input_shape(),
        data.class_names.len(),
        &mut Rng::new(seed),
    )
    .expect("the spec builds")
}

fn weights(net: &mut Network<f32>) -> Vec<Vec<f32>> {
    net.params()
        .iter()
        .map(|p| p.value.data().to_vec())
        .collect()
}

const SMALL: &str = "conv(6,3,pad=1)-bn-relu-maxpool(2)-affine(32)-relu-dropout(0.2)-affine(10)";

#[test]
fn augmented_training_repeats_exactly_on_any_number_of_threads() {
    let data = digits(600, 200);
    let run = |augment: &str, threads: usize, seed: u64| {
        let mut net = network(SMALL, &data, 3);
        let config = TrainConfig {
            epochs: 2,
            batch_size: 50,
            seed,
            threads: Some(threads),
            augment: augment.parse().unwrap(),
            ..TrainConfig::default()
        };
        let history = train(&mut net, &data, &config, |_, _| Ok(())).unwrap();
        (weights(&mut net), history.last().unwrap().test_acc)
    };
    let (one, acc_one) = run("crop:2,flip", 1, 7);
    let (two, acc_two) = run("crop:2,flip", 2, 7);
    assert_eq!(one, two, "augmentation must not depend on the thread count");
    assert_eq!(acc_one, acc_two);
    let (other_seed, _) = run("crop:2,flip", 2, 8);
    let (plain, _) = run("none", 2, 7);
    assert_ne!(one, other_seed, "another seed draws other moves");
    assert_ne!(one, plain, "the augmentation changed the images trained on");
}

#[test]
fn augmentation_moves_the_batch_the_trainer_sees_and_not_the_data_set() {
    let data = digits(50, 10);
    let before = data.train.pixels.clone();
    let mut net = network(SMALL, &data, 1);
    let config = TrainConfig {
        epochs: 1,
        batch_size: 25,
        augment: "translate:3".parse().unwrap(),
        ..TrainConfig::default()
    };
    train(&mut net, &data, &config, |_, _| Ok(())).unwrap();
    assert_eq!(data.train.pixels, before);
}

#[test]
fn the_validation_split_is_seeded_disjoint_and_complete() {
    let (held_out, train_on) = validation_split(100, 30, 5).unwrap();
    assert_eq!((held_out.len(), train_on.len()), (30, 70));
    let mut all: Vec<usize> = held_out.iter().chain(&train_on).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert_eq!(validation_split(100, 30, 5).unwrap().0, held_out);
    assert_ne!(validation_split(100, 30, 6).unwrap().0, held_out);
    // Held-out images are spread over the set, not its first 30.
    assert!(held_out.iter().any(|&i| i >= 30));
    assert!(validation_split(100, 100, 5).is_err());
    assert_eq!(
        validation_split(100, 0, 5).unwrap().1,
        (0..100).collect::<Vec<_>>()
    );
}

#[test]
fn validation_images_are_measured_and_never_trained_on() {
    let data = digits(400, 100);
    // Every training image is labelled 3 except the held-out ones, labelled
    // 5: a network trained only on label 3 gets every validation image
    // wrong, unless one was trained on.
    let count = data.train.len();
    let (held_out, _) = validation_split(count, 40, 1).unwrap();
    let mut labels = vec![3u8; count];
    for &i in &held_out {
        labels[i] = 5;
    }
    let train_set = Dataset {
        labels,
        ..data.train.clone()
    };
    let rigged = TrainTest {
        train: train_set,
        ..data.clone()
    };
    let mut net = network(SMALL, &rigged, 2);
    let config = TrainConfig {
        epochs: 2,
        batch_size: 40,
        validation: 40,
        ..TrainConfig::default()
    };
    let history = train(&mut net, &rigged, &config, |_, _| Ok(())).unwrap();
    for m in &history {
        assert_eq!(
            m.val_acc,
            Some(0.0),
            "epoch {}: a validation image was trained on",
            m.epoch
        );
        assert!(m.val_loss.unwrap() > 1.0);
    }
    assert!(history[1].train_acc > 0.9, "the training images are all 3s");
    // Without validation nothing is measured, and every epoch is the best.
    let history = train(
        &mut net,
        &data,
        &TrainConfig {
            epochs: 1,
            ..TrainConfig::default()
        },
        |_, _| Ok(()),
    )
    .unwrap();
    assert_eq!((history[0].val_acc, history[0].is_best), (None, true));
}

#[test]
fn early_stopping_ends_with_the_best_epochs_weights() {
    let data = digits(1000, 200);
    let mut net = network("simple", &data, 1);
    let config = TrainConfig {
        epochs: 6,
        batch_size: 50,
        validation: 200,
        early_stop: Some(2),
        ..TrainConfig::default()
    };
    // The validation curve rises, then falls: after epoch 2 the weights are
    // scrambled, so epochs 3 and 4 cannot reach epoch 2's accuracy.
    let mut at_epoch_2 = None;
    let history = train(&mut net, &data, &config, |event, net| {
        if let Progress::Epoch(m) = event {
            if m.epoch == 2 {
                at_epoch_2 = Some(weights(net));
                let mut rng = Rng::new(99);
                for p in net.params() {
                    for v in p.value.data_mut() {
                        *v = (rng.normal() * 0.5) as f32;
                    }
                }
            }
        }
        Ok(())
    })
    .unwrap();
    let val: Vec<f64> = history.iter().map(|m| m.val_acc.unwrap()).collect();
    assert!(val[1] > val[0], "the curve must rise first: {val:?}");
    assert_eq!(
        history.len(),
        4,
        "two epochs without a better one, then stop: {val:?}"
    );
    assert!(val[2] < val[1] && val[3] < val[1], "{val:?}");
    let best: Vec<bool> = history.iter().map(|m| m.is_best).collect();
    assert_eq!(best, [true, true, false, false]);
    assert_eq!(
        Some(weights(&mut net)),
        at_epoch_2,
        "training must end with epoch 2's weights"
    );
    // And the network is epoch 2's in its accuracy too.
    let test = evaluate(&mut net, &data.test, 100).unwrap();
    assert_eq!(test.accuracy, history[1].test_acc);
}

#[test]
fn early_stopping_needs_validation_and_patience() {
    for (validation, early_stop) in [(0, Some(2)), (10, Some(0))] {
        let config = TrainConfig {
            validation,
            early_stop,
            ..TrainConfig::default()
        };
        assert!(config.validate().is_err(), "{validation} {early_stop:?}");
    }
}

#[test]
fn the_averaged_model_is_the_moving_average_of_the_steps_weights() {
    let data = digits(200, 50);
    let mut net = network(SMALL, &data, 4);
    let decay = 0.5;
    let mut ema = Ema::new(&mut net, decay).unwrap();
    let mut expected = weights(&mut net);
    let config = TrainConfig {
        epochs: 1,
        batch_size: 50,
        ..TrainConfig::default()
    };
    train(&mut net, &data, &config, |event, net| {
        if let Progress::Batch { .. } = event {
            ema.update(net)?;
            let t = ema.steps() as f64;
            let d = decay.min((1.0 + t) / (10.0 + t)) as f32;
            for (e, now) in expected.iter_mut().zip(weights(net)) {
                for (e, now) in e.iter_mut().zip(now) {
                    *e = d * *e + (1.0 - d) * now;
                }
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(ema.steps(), 4);
    let averaged = ema.with_weights(&mut net, weights).unwrap();
    assert_eq!(averaged, expected);
    assert_ne!(averaged, weights(&mut net));
}

#[test]
fn test_time_augmentation_averages_the_image_and_its_mirror() {
    let data = digits(100, 30);
    let mut net = network(SMALL, &data, 5);
    train(
        &mut net,
        &data,
        &TrainConfig {
            epochs: 1,
            batch_size: 20,
            ..TrainConfig::default()
        },
        |_, _| Ok(()),
    )
    .unwrap();
    let plain = evaluate(&mut net, &data.test, 7).unwrap();
    let tta = evaluate_with(&mut net, &data.test, 7, true).unwrap();
    assert_eq!(
        evaluate_with(&mut net, &data.test, 7, false).unwrap(),
        plain
    );
    // By hand: the probabilities of each image and of its mirror, averaged.
    let (mut x, mut labels) = (Tensor::<f32>::zeros(&[0]), Vec::new());
    let all: Vec<usize> = (0..data.test.len()).collect();
    data.test.batch_into(&all, &mut x, &mut labels);
    net.loss(&x, &labels, false).unwrap();
    let p = net.loss_layer.probabilities().data().to_vec();
    flip_horizontally(x.data_mut(), all.len(), 28, 28);
    net.loss(&x, &labels, false).unwrap();
    let q = net.loss_layer.probabilities().data().to_vec();
    let (mut correct, mut loss) = (0, 0.0);
    for (k, &t) in labels.iter().enumerate() {
        let avg: Vec<f32> = (0..10)
            .map(|c| 0.5 * (p[k * 10 + c] + q[k * 10 + c]))
            .collect();
        let best = (0..10).fold(0, |b, c| if avg[c] > avg[b] { c } else { b });
        correct += usize::from(best == t);
        loss -= f64::from(avg[t]).ln();
    }
    assert_eq!(tta.accuracy, correct as f64 / labels.len() as f64);
    assert!(
        (tta.loss - loss / labels.len() as f64).abs() < 1e-5,
        "{} {}",
        tta.loss,
        loss
    );
    assert_ne!(tta.loss, plain.loss);
}
