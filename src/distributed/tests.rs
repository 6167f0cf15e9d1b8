//! Sharded training in one process and over threads acting as processes
//! ([`LocalTransport`]): the same weights to the bit whatever the number of
//! processes.

use super::local::LocalTransport;
use super::*;
use crate::data::{load_embedded_mnist10k, TrainTest};
use crate::networks::{build_model, ModelOptions};
use crate::rng::Rng;
use crate::train::{train, TrainConfig};

fn digits(train: usize, test: usize) -> TrainTest {
    let full = load_embedded_mnist10k().unwrap();
    TrainTest {
        name: "digits".into(),
        train: full.train.subset(train),
        test: full.test.subset(test),
        class_names: full.class_names.clone(),
    }
}

/// Dropout (masks per shard) and batch norm (statistics per shard, running
/// averages from shard 0), with a last batch shorter than the others.
const SPEC: &str = "conv(4,5)-bn-relu-maxpool(2)-affine(16)-relu-dropout(0.3)-affine(10)";

/// `SPEC` for 28×28 digits, with the weights every test starts from.
fn spec_network() -> crate::networks::Network<f32> {
    build_model::<f32>(
        SPEC,
        &ModelOptions::default(),
        [1, 28, 28],
        10,
        &mut Rng::new(7),
    )
    .unwrap()
}

/// The weights and buffers after training `SPEC` for an epoch with
/// `sharding` made for each process by `make` (one network per process).
fn train_with(
    data: &TrainTest,
    processes: usize,
    augment: &str,
    make: impl Fn(usize) -> Option<Sharding>,
) -> Vec<(Vec<Vec<f32>>, Vec<crate::train::EpochMetrics>)> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..processes)
            .map(|rank| {
                let sharding = make(rank);
                scope.spawn(move || {
                    let mut net = spec_network();
                    let config = TrainConfig {
                        epochs: 1,
                        batch_size: 30,
                        threads: Some(1),
                        sharding,
                        augment: augment.parse().unwrap(),
                        ..TrainConfig::default()
                    };
                    // A pool per process: `run_fast` would otherwise queue
                    // every process's job on one shared pool of 1 thread,
                    // where the first waits for the others forever.
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    let history = pool
                        .install(|| train(&mut net, data, &config, |_, _| Ok(())))
                        .unwrap();
                    let mut values: Vec<Vec<f32>> = net
                        .params()
                        .iter()
                        .map(|p| p.value.data().to_vec())
                        .collect();
                    values.push(flat_buffers(&mut net));
                    (values, history)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

#[test]
fn one_two_and_four_processes_train_the_same_weights() {
    let data = digits(130, 50);
    // Augmented: each image moves by its place in the whole batch, whichever
    // process computes its shard.
    let one = train_with(&data, 1, "crop:2,flip", |_| {
        Some(Sharding::in_one_process(4).unwrap())
    });
    let (weights, history) = &one[0];
    assert!(history[0].train_loss.is_finite(), "{history:?}");
    // Training moved the weights (so equal weights below mean something).
    let mut untrained = spec_network();
    assert_ne!(untrained.params()[0].value.data(), weights[0].as_slice());
    for processes in [2, 4] {
        let group = LocalTransport::group(processes);
        let runs = train_with(&data, processes, "crop:2,flip", |rank| {
            Some(Sharding::over(4, group[rank].clone()).unwrap())
        });
        for (rank, (w, h)) in runs.iter().enumerate() {
            assert!(w == weights, "{processes} processes, rank {rank}");
            assert_eq!(h[0].train_loss, history[0].train_loss);
            assert_eq!(h[0].test_loss, history[0].test_loss);
            assert_eq!(h[0].test_acc, history[0].test_acc);
        }
    }
    // Two shards are another sum: the weights differ (the test can fail).
    let two = train_with(&data, 1, "crop:2,flip", |_| {
        Some(Sharding::in_one_process(2).unwrap())
    });
    assert!(two[0].0 != *weights);
    // And the augmentation was applied in shards.
    let plain = train_with(&data, 1, "none", |_| {
        Some(Sharding::in_one_process(4).unwrap())
    });
    assert!(plain[0].0 != *weights);
}

/// The test set shared out over two processes: the same loss (to the bit),
/// accuracy and confusion matrix as one process's `evaluate`.
#[test]
fn evaluation_over_two_processes_equals_one_process() {
    let data = digits(60, 70);
    let mut net = build_model::<f32>(
        "affine(10)",
        &ModelOptions::default(),
        [1, 28, 28],
        10,
        &mut Rng::new(1),
    )
    .unwrap();
    let plain = crate::train::evaluate(&mut net, &data.test, 16).unwrap();
    let group = LocalTransport::group(2);
    let shared: Vec<Evaluation> = std::thread::scope(|scope| {
        let runs: Vec<_> = group
            .iter()
            .map(|t| {
                let sharding = Sharding::over(2, t.clone()).unwrap();
                let mut net = build_model::<f32>(
                    "affine(10)",
                    &ModelOptions::default(),
                    [1, 28, 28],
                    10,
                    &mut Rng::new(1),
                )
                .unwrap();
                let data = &data;
                scope.spawn(move || sharding.evaluate(&mut net, &data.test, 16).unwrap())
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for evaluation in shared {
        assert_eq!(evaluation, plain);
    }
}

#[test]
fn shards_cover_the_batch_in_order() {
    for (len, shards) in [(10, 4), (3, 4), (100, 1), (0, 2), (7, 8)] {
        let ranges: Vec<_> = (0..shards).map(|s| shard_range(s, shards, len)).collect();
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges[shards - 1].end, len);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert!(pair[0].len() >= pair[1].len() && pair[0].len() <= pair[1].len() + 1);
        }
    }
    assert_eq!(shard_range(1, 4, 10), 3..6);
}

#[test]
fn shard_and_process_counts_are_checked() {
    assert!(Sharding::in_one_process(3).is_err());
    assert!(Sharding::in_one_process(0).is_err());
    let group = LocalTransport::group(4);
    assert!(Sharding::over(2, group[0].clone()).is_err());
    assert!(Sharding::over(4, group[0].clone()).is_ok());
    let three = LocalTransport::group(3);
    assert!(Sharding::over(4, three[0].clone()).is_err());
}
