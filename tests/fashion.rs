//! Fashion-MNIST accuracy: one epoch of the default SimpleConvNet through the
//! CLI must reach at least 82% test accuracy, and a few epochs of the
//! `fashion-fast` recipe's options must beat plain training on a subset.
//!
//! Needs the real data set (the four standard IDX files, raw or .gz), so it
//! is ignored by default:
//!
//! ```text
//! cargo test --release --test fashion -- --ignored
//! ```
//!
//! The folder is `$CONVNET_FASHION_DIR` if set, else the first that exists of
//! `/work/shared/data/fashion-mnist`, `$CARGO_MANIFEST_DIR/../shared/data/fashion-mnist`
//! and `/usr/share/datasets/fashion-mnist`.

use std::path::PathBuf;
use std::process::Command;

const MIN_TEST_ACCURACY: f64 = 0.82;

/// The data folder to use, or a message naming every path tried.
fn fashion_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CONVNET_FASHION_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!(
                "CONVNET_FASHION_DIR={} is not a folder",
                dir.display()
            ))
        };
    }
    let candidates = [
        PathBuf::from("/work/shared/data/fashion-mnist"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-mnist"),
        PathBuf::from("/usr/share/datasets/fashion-mnist"),
    ];
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "no Fashion-MNIST folder found; tried {} (set CONVNET_FASHION_DIR to the folder \
                 holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], \
                 t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz])",
                tried.join(", ")
            )
        })
}

#[test]
#[ignore = "needs the Fashion-MNIST files; run with: cargo test --release --test fashion -- --ignored"]
fn one_epoch_on_fashion_mnist_reaches_82_percent() {
    let dir = fashion_dir().unwrap_or_else(|msg| panic!("{msg}"));
    let metrics = std::env::temp_dir().join(format!(
        "convnet-fashion-test-{}-metrics.jsonl",
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(["train", "--data"])
        .arg(&dir)
        .args(["--epochs", "1", "--metrics"])
        .arg(&metrics)
        .output()
        .expect("run the convnet binary");
    let text = std::fs::read_to_string(&metrics);
    let _ = std::fs::remove_file(&metrics);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "convnet train --data {} --epochs 1 failed ({:?}):\n{stdout}{stderr}",
        dir.display(),
        out.status.code()
    );
    assert!(
        stdout.contains("60000 train / 10000 test"),
        "{} is not the full Fashion-MNIST set:\n{stdout}",
        dir.display()
    );

    let text = text.expect("the metrics file was written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one metrics line for one epoch: {text}");
    let m: serde_json::Value = serde_json::from_str(lines[0]).expect("metrics line is JSON");
    let acc = m["test_acc"]
        .as_f64()
        .unwrap_or_else(|| panic!("no test_acc in {m}"));
    eprintln!("Fashion-MNIST, 1 epoch: {m}");
    assert!(
        acc >= MIN_TEST_ACCURACY,
        "test accuracy after one epoch {acc} < {MIN_TEST_ACCURACY}\n{stdout}"
    );
}

/// The `fashion-fast` recipe (its schedule, decoupled weight decay, label
/// smoothing, augmentation, averaged model and test-time augmentation)
/// must beat the same network trained the plain way (Adam at its constant
/// default rate, nothing else) over the same few epochs of a subset:
/// 10,000 training images, 8 epochs, the first 2,000 test images.
#[test]
#[ignore = "needs the Fashion-MNIST files; run with: cargo test --release --test fashion -- --ignored"]
fn the_fashion_fast_recipe_beats_plain_training_on_a_subset() {
    use convnet::data::{load_dir, TrainTest};
    use convnet::networks::{build_model, ModelOptions};
    use convnet::train::{evaluate_with, recipe, train, Ema, Progress, TrainConfig};

    let dir = fashion_dir().unwrap_or_else(|msg| panic!("{msg}"));
    let full = load_dir(&dir).expect("Fashion-MNIST loads");
    let data = TrainTest {
        train: full.train.subset(10_000),
        test: full.test.subset(2_000),
        ..full
    };
    let fast = recipe::find("fashion-fast").unwrap();
    let epochs = 8;
    let network = || {
        build_model::<f32>(
            fast.model,
            &ModelOptions::default(),
            data.train.input_shape(),
            data.class_names.len(),
            &mut convnet::Rng::new(1),
        )
        .unwrap()
    };
    // The recipe, as `convnet train --recipe fashion-fast` runs it: the
    // averaged model, measured with test-time augmentation.
    let config = TrainConfig {
        epochs,
        ..fast.train_config()
    };
    let mut net = network();
    let mut ema = Ema::new(&mut net, fast.ema.unwrap()).unwrap();
    train(&mut net, &data, &config, |event, net| match event {
        Progress::Batch { .. } => ema.update(net),
        _ => Ok(()),
    })
    .unwrap();
    let with_recipe = ema
        .with_weights(&mut net, |net| {
            evaluate_with(net, &data.test, 500, fast.tta)
        })
        .unwrap()
        .unwrap()
        .accuracy;
    let plain_config = TrainConfig {
        epochs,
        batch_size: fast.batch_size,
        ..TrainConfig::default()
    };
    let mut net = network();
    let history = train(&mut net, &data, &plain_config, |_, _| Ok(())).unwrap();
    let plain = history.last().unwrap().test_acc;
    eprintln!("fashion-fast: {with_recipe}, plain: {plain} (8 epochs of 10,000 images)");
    assert!(
        with_recipe > plain,
        "the recipe ({with_recipe}) must beat plain training ({plain})"
    );
}
