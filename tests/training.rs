//! Library-level training tests on the embedded MNIST digits: a short run of
//! `convnet::train::train` learns, and every optimizer lowers the loss of a
//! SimpleConvNet on a fixed batch.

use convnet::data::{load_embedded_mnist10k, TrainTest};
use convnet::networks::{build_model, ModelOptions, Network};
use convnet::optim::{build, OptimizerKind};
use convnet::train::{evaluate, train, Progress, TrainConfig};
use convnet::{Float, Rng, Tensor};

/// ln(10): the loss of a network that guesses uniformly among ten classes.
const CHANCE_LOSS: f64 = std::f64::consts::LN_10;

fn simple_convnet(data: &TrainTest, seed: u64) -> Network<f32> {
    build_model::<f32>(
        "simple",
        &ModelOptions::default(),
        data.train.input_shape(),
        data.class_names.len(),
        &mut Rng::new(seed),
    )
    .expect("SimpleConvNet with its defaults builds for 28x28 digits")
}

/// 1,000 training digits, 2 epochs of batches of 25 with Adam at its default
/// rate. Measured (seeds 1-3): test loss 2.30 -> ~0.6, test accuracy ~0.77.
#[test]
fn short_training_run_lowers_the_loss() {
    let full = load_embedded_mnist10k().expect("embedded digits load");
    let data = TrainTest {
        name: "mnist-10k subset".into(),
        train: full.train.subset(1000),
        test: full.test.subset(500),
        class_names: full.class_names.clone(),
    };
    assert_eq!((data.train.len(), data.test.len()), (1000, 500));
    let mut net = simple_convnet(&data, 1);

    let before = evaluate(&mut net, &data.test, 500).expect("evaluate");
    assert!(
        (before.loss - CHANCE_LOSS).abs() < 0.05,
        "an untrained net (weights N(0, 0.01²)) should be at chance: loss {}",
        before.loss
    );

    let config = TrainConfig {
        epochs: 2,
        batch_size: 25,
        optimizer: OptimizerKind::Adam,
        learning_rate: None,
        seed: 1,
        ..TrainConfig::default()
    };
    let (mut batches, mut epochs_seen) = (0, 0);
    let history = train(&mut net, &data, &config, |event, _| {
        match event {
            Progress::Batch { loss, .. } => {
                assert!(loss.is_finite(), "batch loss {loss}");
                batches += 1;
            }
            Progress::Epoch(_) => epochs_seen += 1,
            Progress::Interrupted { .. } => panic!("nothing asked to stop"),
        }
        Ok(())
    })
    .expect("training runs");

    assert_eq!(history.len(), 2, "one metrics entry per epoch");
    assert_eq!(
        (batches, epochs_seen),
        (80, 2),
        "40 batches of 25 per epoch"
    );
    let (first, second) = (&history[0], &history[1]);
    assert_eq!((first.epoch, second.epoch), (1, 2));
    assert!(
        second.train_loss < first.train_loss,
        "epoch 2's train loss {} is not below epoch 1's {}",
        second.train_loss,
        first.train_loss
    );
    assert!(
        second.test_loss < 0.5 * CHANCE_LOSS,
        "test loss after two epochs {} is not well below ln(10) = {CHANCE_LOSS:.3}",
        second.test_loss
    );
    assert!(
        second.test_acc > 0.65,
        "test accuracy after two epochs {}",
        second.test_acc
    );
    for m in &history {
        assert!((0.0..=1.0).contains(&m.train_acc) && (0.0..=1.0).contains(&m.test_acc));
    }

    // The reported test metrics are those of the trained network.
    let after = evaluate(&mut net, &data.test, 128).expect("evaluate");
    assert_eq!(after.accuracy, second.test_acc);
    assert!(
        (after.loss - second.test_loss).abs() < 1e-4,
        "{} vs {}",
        after.loss,
        second.test_loss
    );
    let confusion_total: usize = after.confusion.iter().flatten().sum();
    assert_eq!(confusion_total, data.test.len());
}

/// The mean loss of `net` on `(x, labels)` in evaluation mode.
fn loss_of<T: Float>(net: &mut Network<T>, x: &Tensor<T>, labels: &[usize]) -> f64 {
    net.loss(x, labels, false).expect("loss").as_f64()
}

/// 20 steps on the same 100 digits, each optimizer at the book's default
/// learning rate, from the same SimpleConvNet. Measured losses after 20 steps
/// (from 2.3026): SGD 2.3019, Momentum 2.2983, Nesterov 2.2978, AdaGrad 0.21,
/// RMSprop 0.0015, Adam 1.34.
#[test]
fn every_optimizer_lowers_the_loss_on_a_fixed_batch() {
    const STEPS: usize = 20;
    let data = load_embedded_mnist10k().expect("embedded digits load");
    let indices: Vec<usize> = (0..100).collect();
    let (mut x, mut labels) = (Tensor::<f32>::zeros(&[0]), Vec::new());
    data.train.batch_into(&indices, &mut x, &mut labels);
    assert_eq!(x.shape(), &[100, 1, 28, 28]);

    let mut report = Vec::new();
    for kind in OptimizerKind::ALL {
        let mut net = simple_convnet(&data, 3);
        let mut optimizer = build::<f32>(kind, None);
        assert_eq!(optimizer.learning_rate(), kind.default_learning_rate());
        let initial = loss_of(&mut net, &x, &labels);
        let mut losses = Vec::with_capacity(STEPS);
        for _ in 0..STEPS {
            let loss = net.gradient(&x, &labels).expect("gradient").as_f64();
            assert!(loss.is_finite(), "{kind}: loss {loss}");
            losses.push(loss);
            optimizer.step(&mut net.params());
        }
        let last = loss_of(&mut net, &x, &labels);
        report.push(format!("{kind}: {initial:.5} -> {last:.5}"));
        // f32 rounding moves the loss by ~1e-6; the slowest optimizer (SGD at
        // lr 0.01 from the book's N(0, 0.01²) weights) gains ~8e-4.
        assert!(
            initial - last > 1e-4,
            "{kind} (lr {}) did not lower the loss in {STEPS} steps: {initial} -> {last}; \
             training-mode losses {losses:?}",
            kind.default_learning_rate()
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// The metrics of a run without its timings.
fn results(history: &[convnet::train::EpochMetrics]) -> Vec<[f64; 4]> {
    history
        .iter()
        .map(|m| [m.train_loss, m.train_acc, m.test_loss, m.test_acc])
        .collect()
}

/// `threads` runs training on a pool of that many threads: the same seed
/// and thread count give the same run, to the bit, whichever pool it is
/// (the one `train` makes, or a rayon pool of the caller's own), and
/// evaluation afterwards agrees with the last epoch.
#[test]
fn training_on_a_given_number_of_threads_repeats_exactly() {
    let full = load_embedded_mnist10k().expect("embedded digits load");
    let data = TrainTest {
        name: "mnist-10k subset".into(),
        train: full.train.subset(300),
        test: full.test.subset(100),
        class_names: full.class_names.clone(),
    };
    let run = |threads: Option<usize>| {
        let mut net = simple_convnet(&data, 1);
        let config = TrainConfig {
            epochs: 1,
            batch_size: 50,
            threads,
            ..TrainConfig::default()
        };
        let history = train(&mut net, &data, &config, |_, _| Ok(())).expect("training runs");
        let eval = evaluate(&mut net, &data.test, 50).expect("evaluate");
        assert_eq!(eval.accuracy, history[0].test_acc);
        results(&history)
    };
    for threads in [1, 2] {
        let first = run(Some(threads));
        assert_eq!(run(Some(threads)), first, "{threads} threads");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_eq!(
            pool.install(|| run(None)),
            first,
            "{threads} threads, own pool"
        );
    }
    let config = TrainConfig {
        threads: Some(0),
        ..TrainConfig::default()
    };
    let mut net = simple_convnet(&data, 1);
    let err = train(&mut net, &data, &config, |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("threads"), "{err}");
}

/// `TrainConfig::default()` is `convnet train`'s defaults (see tests/cli.rs
/// for the command's side).
#[test]
fn the_default_config_is_the_command_lines() {
    let config = TrainConfig::default();
    assert_eq!(
        (
            config.epochs,
            config.batch_size,
            config.seed,
            config.start_epoch
        ),
        (15, 100, 1, 0)
    );
    assert_eq!(config.optimizer, OptimizerKind::Adam);
    assert_eq!((config.learning_rate, config.threads), (None, None));
}

/// The learning rate of every step of a run of `config` on `data`, as the
/// optimizer holds it after the step, with the epoch metrics' rates.
fn rates_of(data: &TrainTest, config: &TrainConfig) -> (Vec<(usize, usize, f64)>, Vec<f64>) {
    let mut net = simple_convnet(data, 1);
    let mut optimizer = build::<f32>(config.optimizer, config.learning_rate);
    let mut rates = Vec::new();
    let history = convnet::train::train_with_optimizer(
        &mut net,
        optimizer.as_mut(),
        data,
        config,
        |event, _, optimizer| {
            if let Progress::Batch { epoch, done, .. } = event {
                rates.push((epoch, done, optimizer.learning_rate()));
            }
            Ok(())
        },
    )
    .expect("training runs");
    (rates, history.iter().map(|m| m.lr).collect())
}

/// A scheduled run uses each step's rate of `Schedule::lr_at`, and a run
/// resumed after an epoch or in the middle of one uses the same rates as an
/// uninterrupted run.
#[test]
fn schedules_set_each_steps_rate_and_resume_with_the_same_rates() {
    use convnet::train::{EpochPosition, Schedule};
    let full = load_embedded_mnist10k().expect("embedded digits load");
    let data = TrainTest {
        name: "mnist-10k subset".into(),
        train: full.train.subset(40),
        test: full.test.subset(20),
        class_names: full.class_names.clone(),
    };
    // 4 batches per epoch, 3 epochs.
    for schedule in [
        Schedule::Cosine,
        Schedule::OneCycle { warmup: 0.3 },
        Schedule::Step {
            every: 1,
            gamma: 0.5,
        },
    ] {
        let config = TrainConfig {
            epochs: 3,
            batch_size: 10,
            learning_rate: Some(0.002),
            schedule,
            threads: Some(1),
            ..TrainConfig::default()
        };
        let (rates, epoch_rates) = rates_of(&data, &config);
        assert_eq!(rates.len(), 12);
        for &(epoch, done, lr) in &rates {
            let expected = schedule.lr_at(0.002, epoch - 1, done - 1, 4, 3) as f32;
            assert_eq!(lr as f32, expected, "{schedule} epoch {epoch} batch {done}");
        }
        let firsts: Vec<f64> = (0..3).map(|e| schedule.lr_at(0.002, e, 0, 4, 3)).collect();
        assert_eq!(epoch_rates, firsts, "{schedule}");
        // The rates do change.
        assert!(rates.windows(2).any(|w| w[0].2 != w[1].2), "{schedule}");

        let after_epoch = TrainConfig {
            start_epoch: 1,
            ..config.clone()
        };
        assert_eq!(rates_of(&data, &after_epoch).0, rates[4..], "{schedule}");
        let mid_epoch = TrainConfig {
            start_epoch: 1,
            start_position: Some(EpochPosition {
                batches_done: 2,
                ..EpochPosition::default()
            }),
            ..config.clone()
        };
        assert_eq!(rates_of(&data, &mid_epoch).0, rates[6..], "{schedule}");
    }
    // Constant leaves the optimizer's own rate alone.
    let config = TrainConfig {
        epochs: 1,
        batch_size: 10,
        threads: Some(1),
        ..TrainConfig::default()
    };
    let (rates, epoch_rates) = rates_of(&data, &config);
    assert!(rates.iter().all(|r| r.2 == 0.001));
    assert_eq!(epoch_rates, [0.001]);
}

/// One step of SGD on a single batch of the whole (tiny) training set:
/// the weights and biases afterwards, and the reported batch loss.
fn one_sgd_step(data: &TrainTest, config: &TrainConfig) -> (Vec<(String, Vec<f32>)>, f64) {
    let mut net = simple_convnet(data, 2);
    let mut loss = 0.0;
    train(&mut net, data, config, |event, _| {
        if let Progress::Batch { loss: l, .. } = event {
            loss = l;
        }
        Ok(())
    })
    .expect("training runs");
    let names = net.param_names();
    let values: Vec<Vec<f32>> = net
        .params()
        .iter()
        .map(|p| p.value.data().to_vec())
        .collect();
    (names.into_iter().zip(values).collect(), loss)
}

/// Decoupled decay shrinks the weights by lr·λ and leaves the biases
/// exactly as they are without it; L2 decay adds λ/2·‖W‖² to the reported
/// loss.
#[test]
fn weight_decay_shrinks_weights_not_biases_and_l2_adds_to_the_loss() {
    use convnet::train::WeightDecayMode;
    let full = load_embedded_mnist10k().expect("embedded digits load");
    let data = TrainTest {
        name: "mnist-10k subset".into(),
        train: full.train.subset(20),
        test: full.test.subset(10),
        class_names: full.class_names.clone(),
    };
    let (lr, lambda) = (0.1, 0.5);
    let base = TrainConfig {
        epochs: 1,
        batch_size: 20,
        optimizer: OptimizerKind::Sgd,
        learning_rate: Some(lr),
        threads: Some(1),
        ..TrainConfig::default()
    };
    let (plain, plain_loss) = one_sgd_step(&data, &base);
    let (decoupled, decoupled_loss) = one_sgd_step(
        &data,
        &TrainConfig {
            weight_decay: lambda,
            weight_decay_mode: WeightDecayMode::Decoupled,
            ..base.clone()
        },
    );
    assert_eq!(decoupled_loss, plain_loss);
    let initial = {
        let mut net = simple_convnet(&data, 2);
        let values: Vec<Vec<f32>> = net
            .params()
            .iter()
            .map(|p| p.value.data().to_vec())
            .collect();
        values
    };
    let mut squares = 0.0;
    for (((name, p), (_, d)), w0) in plain.iter().zip(&decoupled).zip(&initial) {
        if name.ends_with(".bias") {
            assert_eq!(p, d, "{name}");
        } else {
            // W_decoupled − W_plain = −lr·λ·W₀ (to f32 rounding).
            for ((&a, &b), &w) in p.iter().zip(d).zip(w0) {
                let expected = -(lr * lambda) as f32 * w;
                assert!((b - a - expected).abs() <= 1e-6 + 1e-4 * w.abs(), "{name}");
                squares += f64::from(w) * f64::from(w);
            }
        }
    }
    let (_, l2_loss) = one_sgd_step(
        &data,
        &TrainConfig {
            weight_decay: lambda,
            ..base.clone()
        },
    );
    let penalty = 0.5 * lambda * squares;
    assert!(penalty > 1.0);
    assert!(
        (l2_loss - plain_loss - penalty).abs() < 1e-6 * penalty,
        "{l2_loss} − {plain_loss} vs {penalty}"
    );
}

/// Label smoothing: the reported batch loss is the smoothed loss of the
/// network before the step, the test loss is the plain one (as `evaluate`
/// gives it), the network keeps no smoothing afterwards, and a whole
/// network's gradients with smoothing pass the f64 gradient check.
#[test]
fn label_smoothing_smooths_the_training_loss_only() {
    let full = load_embedded_mnist10k().expect("embedded digits load");
    let data = TrainTest {
        name: "mnist-10k subset".into(),
        train: full.train.subset(20),
        test: full.test.subset(10),
        class_names: full.class_names.clone(),
    };
    let config = TrainConfig {
        epochs: 1,
        batch_size: 20,
        threads: Some(1),
        label_smoothing: 0.1,
        ..TrainConfig::default()
    };
    let mut net = simple_convnet(&data, 2);
    let (mut x, mut labels) = (Tensor::<f32>::zeros(&[0]), Vec::new());
    // The first (only) batch is the epoch's shuffled order of the 20 images.
    let order = convnet::train::epoch_order(20, config.seed, 0);
    data.train.batch_into(&order, &mut x, &mut labels);
    net.loss_layer.set_label_smoothing(0.1).unwrap();
    let smoothed = net.loss(&x, &labels, true).unwrap().as_f64();
    let plain = net.loss(&x, &labels, false).unwrap().as_f64();
    net.loss_layer.set_label_smoothing(0.0).unwrap();
    // Near chance the two are close, but not equal.
    assert_ne!(smoothed, plain);
    let mut batch_loss = 0.0;
    let history = train(&mut net, &data, &config, |event, _| {
        if let Progress::Batch { loss, .. } = event {
            batch_loss = loss;
        }
        Ok(())
    })
    .expect("training runs");
    assert_eq!(batch_loss, smoothed);
    assert_eq!(net.loss_layer.label_smoothing(), 0.0);
    let eval = evaluate(&mut net, &data.test, 20).expect("evaluate");
    assert_eq!(history[0].test_loss, eval.loss);

    let mut rng = Rng::new(7);
    let mut small = build_model::<f64>(
        "conv(3,3)-relu-affine(6)-tanh-affine(4)",
        &ModelOptions::default(),
        [1, 5, 5],
        4,
        &mut rng,
    )
    .unwrap();
    small.loss_layer.set_label_smoothing(0.2).unwrap();
    let x = Tensor::from_vec(&[3, 1, 5, 5], (0..75).map(|_| rng.normal()).collect()).unwrap();
    for (name, err) in convnet::gradient_check::check_network(&mut small, &x, &[0, 3, 1]).unwrap() {
        assert!(err < 1e-6, "{name}: {err}");
    }
}
