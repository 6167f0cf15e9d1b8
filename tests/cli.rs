//! End-to-end tests of the `convnet` command-line tool: error reporting
//! (clap's tips kept on one line), `gradcheck`, a small real training run
//! with `--metrics` and `--save` followed by `eval`, determinism, progress
//! lines without a terminal, a closed output pipe, and the `--help` of every
//! subcommand.
//!
//! Every data set is written here by hand, in the IDX format, into a fresh
//! folder under the system temporary directory that is removed afterwards.

mod common;

use common::{convnet_fails, idx_images, idx_labels, TempDir};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

const SIDE: usize = 28;
const CLASSES: usize = 10;
const N_TRAIN: usize = 500;
const N_TEST: usize = 200;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A linear congruential generator (Knuth's MMIX constants): deterministic
/// noise without any dependency on the crate under test.
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
}

/// The top-left corner of class `k`'s 6x6 square: two rows of five positions.
fn square_corner(class: usize) -> (usize, usize) {
    let row = if class < 5 { 3 } else { 16 };
    let col = 1 + (class % 5) * 5;
    (row, col)
}

/// `count` 28x28 images and their labels (random classes): class `k` is a
/// bright 6x6 square (pixels 190-255) at a class-specific place, shifted by
/// up to one pixel up, down or right, on a noisy dark background (0-60).
/// SimpleConvNet with its defaults learns it to ~100% test accuracy in three
/// epochs of 500 images (measured over seeds 1-10: 100% every time; after one
/// epoch 56-91%).
fn synthetic_split(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Lcg(seed);
    let mut pixels = Vec::with_capacity(count * SIDE * SIDE);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let class = rng.below(CLASSES as u32) as usize;
        let (r0, c0) = square_corner(class);
        let r0 = r0 + rng.below(3) as usize - 1;
        let c0 = c0 + rng.below(3) as usize;
        for r in 0..SIDE {
            for c in 0..SIDE {
                let inside = (r0..r0 + 6).contains(&r) && (c0..c0 + 6).contains(&c);
                let value = if inside {
                    190 + rng.below(66)
                } else {
                    rng.below(61)
                };
                pixels.push(value as u8);
            }
        }
        labels.push(class as u8);
    }
    (pixels, labels)
}

/// Writes the four raw IDX files of a learnable synthetic data set into `dir`.
fn write_dataset(dir: &Path, n_train: usize, n_test: usize) {
    let (train_pixels, train_labels) = synthetic_split(n_train, 0x5EED_0001);
    let (test_pixels, test_labels) = synthetic_split(n_test, 0x5EED_0002);
    let files = [
        (TRAIN_IMAGES, idx_images(n_train, SIDE, SIDE, &train_pixels)),
        (TRAIN_LABELS, idx_labels(&train_labels)),
        (TEST_IMAGES, idx_images(n_test, SIDE, SIDE, &test_pixels)),
        (TEST_LABELS, idx_labels(&test_labels)),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write IDX file");
    }
}

fn convnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(args)
        .output()
        .expect("run the convnet binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "convnet {}\nexit status: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        args.join(" "),
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Runs `args`, requires success and returns stdout.
fn run_ok(args: &[&str]) -> String {
    let out = convnet(args);
    assert!(
        out.status.success(),
        "expected success:\n{}",
        describe(args, &out)
    );
    stdout(&out)
}

/// The JSON objects of a metrics file, one per line.
fn read_metrics(path: &Path) -> Vec<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read metrics file {}: {e}", path.display()));
    text.lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("metrics line {line:?} is not a JSON object: {other:?}"),
        })
        .collect()
}

fn number(map: &serde_json::Map<String, Value>, key: &str) -> f64 {
    map.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("metrics line {map:?} has no number '{key}'"))
}

/// The number in `XX.XX%` after `prefix` on the first line of `text` that
/// starts with `prefix` (after leading spaces).
fn percentage_after(text: &str, prefix: &str) -> String {
    let line = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"));
    let rest = line[prefix.len()..].trim_start();
    let end = rest
        .find('%')
        .unwrap_or_else(|| panic!("no '%' after {prefix:?} in {line:?}"));
    rest[..end].trim().to_string()
}

/// The training arguments shared by the end-to-end and determinism tests.
fn train_args<'a>(
    data: &'a str,
    metrics: &'a str,
    epochs: &'a str,
    seed: &'a str,
    threads: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--epochs",
        epochs,
        "--batch-size",
        "50",
        "--seed",
        seed,
        "--threads",
        threads,
        "--metrics",
        metrics,
    ]
}

// ---------------------------------------------------------------------------
// Bad input: one clean error line, never a panic
// ---------------------------------------------------------------------------

#[test]
fn truncated_idx_file_is_a_clean_error() {
    let dir = TempDir::new("truncated");
    write_dataset(dir.path(), 20, 10);
    let path = dir.join(TRAIN_IMAGES);
    let bytes = std::fs::read(&path).unwrap();
    // Keep the header and a bit more than one image.
    std::fs::write(&path, &bytes[..16 + SIDE * SIDE + 100]).unwrap();
    let data = dir.path().to_str().unwrap();
    let line = convnet_fails(&["train", "--data", data, "--epochs", "1"], &[]);
    assert!(
        line.contains(TRAIN_IMAGES),
        "the error should name the file: {line}"
    );
    assert!(
        line.contains("truncated"),
        "the error should say truncated: {line}"
    );

    // A file cut inside its header.
    std::fs::write(&path, &bytes[..10]).unwrap();
    let line = convnet_fails(&["train", "--data", data, "--epochs", "1"], &[]);
    assert!(
        line.contains(TRAIN_IMAGES),
        "the error should name the file: {line}"
    );
}

#[test]
fn wrong_magic_number_is_a_clean_error() {
    let dir = TempDir::new("magic");
    write_dataset(dir.path(), 20, 10);
    let path = dir.join(TRAIN_IMAGES);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4].copy_from_slice(&0x0000_0804u32.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let data = dir.path().to_str().unwrap();
    let line = convnet_fails(&["train", "--data", data, "--epochs", "1"], &[]);
    assert!(
        line.contains(TRAIN_IMAGES),
        "the error should name the file: {line}"
    );
    assert!(
        line.contains("magic"),
        "the error should mention the magic number: {line}"
    );

    // A label file where the images belong.
    std::fs::write(&path, idx_labels(&[1, 2, 3])).unwrap();
    convnet_fails(&["train", "--data", data, "--epochs", "1"], &[]);
}

#[test]
fn missing_data_folder_is_a_clean_error() {
    let dir = TempDir::new("missing");
    let missing = dir.join("no-such-folder");
    let missing = missing.to_str().unwrap();
    let line = convnet_fails(&["train", "--data", missing, "--epochs", "1"], &[]);
    assert!(
        line.contains("no-such-folder"),
        "the error should name the folder: {line}"
    );

    // A folder that exists but lacks the IDX files.
    let line = convnet_fails(
        &[
            "train",
            "--data",
            dir.path().to_str().unwrap(),
            "--epochs",
            "1",
        ],
        &[],
    );
    assert!(
        line.contains(TRAIN_IMAGES),
        "the error should name the missing file: {line}"
    );
}

/// `convnet train --data DATA --epochs 1 FLAG VALUE` must fail cleanly;
/// returns its one error line.
fn one_epoch_fails(data: &str, flag: &str, value: &str) -> String {
    convnet_fails(
        &["train", "--data", data, "--epochs", "1", flag, value],
        &[],
    )
}

#[test]
fn zero_batch_size_is_a_clean_error() {
    let dir = TempDir::new("batch0");
    write_dataset(dir.path(), 20, 10);
    let data = dir.path().to_str().unwrap();
    let line = one_epoch_fails(data, "--batch-size", "0");
    assert!(
        line.contains("batch"),
        "the error should mention the batch size: {line}"
    );
    // Also without --data (the embedded digits).
    convnet_fails(&["train", "--epochs", "1", "--batch-size", "0"], &[]);
}

#[test]
fn impossible_filter_geometry_is_a_clean_error() {
    let dir = TempDir::new("geometry");
    write_dataset(dir.path(), 20, 10);
    let data = dir.path().to_str().unwrap();
    let line = one_epoch_fails(data, "--filter-size", "40");
    assert!(
        line.contains("40"),
        "the error should give the filter size: {line}"
    );
    one_epoch_fails(data, "--filter-size", "0");
    one_epoch_fails(data, "--hidden-size", "0");
}

/// `--stride 0` and `--filters 0` are impossible geometries too: a clean
/// error, not a panic.
#[test]
fn zero_stride_or_filters_is_a_clean_error() {
    let dir = TempDir::new("stride0");
    write_dataset(dir.path(), 20, 10);
    let data = dir.path().to_str().unwrap();
    one_epoch_fails(data, "--stride", "0");
    one_epoch_fails(data, "--filters", "0");
}

#[test]
fn eval_of_a_bad_or_missing_checkpoint_is_a_clean_error() {
    let dir = TempDir::new("badckpt");
    let mut rng = Lcg(42);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next_u32() as u8).collect();
    let bad = dir.join("garbage.safetensors");
    std::fs::write(&bad, garbage).unwrap();
    let line = convnet_fails(&["eval", "--checkpoint", bad.to_str().unwrap()], &[]);
    assert!(
        line.contains("garbage.safetensors"),
        "the error should name the file: {line}"
    );

    // An empty file.
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    convnet_fails(&["eval", "--checkpoint", empty.to_str().unwrap()], &[]);

    let missing = dir.join("missing.safetensors");
    let line = convnet_fails(&["eval", "--checkpoint", missing.to_str().unwrap()], &[]);
    assert!(
        line.contains("missing.safetensors"),
        "the error should name the file: {line}"
    );
}

// ---------------------------------------------------------------------------
// gradcheck
// ---------------------------------------------------------------------------

#[test]
fn gradcheck_passes_for_every_layer() {
    let text = run_ok(&["gradcheck"]);
    // Rows are "component  gradient  error"; the error is the last field.
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("all ") || line.starts_with("max ") || fields.len() < 3 {
            continue;
        }
        let last = *fields.last().unwrap();
        assert_ne!(last, "FAIL", "a gradient check failed: {line}");
        let err: f64 = last
            .parse()
            .unwrap_or_else(|_| panic!("cannot parse the error in row {line:?}"));
        assert!(err.is_finite() && err >= 0.0, "bad error value in {line:?}");
        assert!(err <= 1e-6, "error {err} above 1e-6 in row {line:?}");
        rows.push(line.to_string());
    }
    for component in [
        "Convolution",
        "MaxPooling",
        "Affine",
        "Relu",
        "Sigmoid",
        "SoftmaxWithLoss",
        "SimpleConvNet",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(component)),
            "no {component} row in gradcheck's table:\n{text}"
        );
    }
    // Convolution and Affine check x, weight and bias.
    for param in ["weight", "bias"] {
        for component in ["Convolution", "Affine"] {
            assert!(
                rows.iter()
                    .any(|r| r.starts_with(component) && r.contains(param)),
                "no {component} {param} row:\n{text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A real training run, then eval of its checkpoint
// ---------------------------------------------------------------------------

#[test]
fn train_then_eval_end_to_end() {
    let dir = TempDir::new("e2e");
    let data_dir = dir.join("synthetic");
    std::fs::create_dir(&data_dir).unwrap();
    write_dataset(&data_dir, N_TRAIN, N_TEST);
    let data = data_dir.to_str().unwrap();
    let metrics_path = dir.join("metrics.jsonl");
    let metrics = metrics_path.to_str().unwrap();
    let checkpoint_path = dir.join("model.safetensors");
    let checkpoint = checkpoint_path.to_str().unwrap();

    let mut args = train_args(data, metrics, "3", "1", "2");
    args.extend(["--save", checkpoint]);
    let out = run_ok(&args);

    let lines = read_metrics(&metrics_path);
    assert_eq!(lines.len(), 3, "one metrics line per epoch:\n{out}");
    for (i, m) in lines.iter().enumerate() {
        for key in ["epoch", "train_loss", "train_acc", "test_acc", "seconds"] {
            assert!(m.contains_key(key), "metrics line {m:?} lacks '{key}'");
        }
        assert_eq!(
            number(m, "epoch"),
            (i + 1) as f64,
            "epochs are numbered from 1"
        );
        for key in ["train_acc", "test_acc"] {
            let acc = number(m, key);
            assert!((0.0..=1.0).contains(&acc), "{key} {acc} is not in [0, 1]");
        }
        let loss = number(m, "train_loss");
        assert!(loss.is_finite() && loss >= 0.0, "train_loss {loss}");
        assert!(number(m, "seconds") >= 0.0);
    }
    let final_acc = number(&lines[2], "test_acc");
    assert!(
        final_acc >= 0.9,
        "the synthetic squares should be learnt: final test accuracy {final_acc}\n{out}"
    );
    assert!(
        number(&lines[2], "train_loss") < number(&lines[0], "train_loss"),
        "training should lower the loss: {lines:?}"
    );

    let last = out.lines().last().unwrap_or("");
    assert!(
        last.contains("test accuracy"),
        "last stdout line: {last:?}\n{out}"
    );
    let expected = format!("{:.2}", 100.0 * final_acc);
    assert_eq!(
        percentage_after(last, "test accuracy:"),
        expected,
        "the summary disagrees with the metrics file:\n{out}"
    );
    assert!(checkpoint_path.is_file(), "no checkpoint written:\n{out}");

    assert_eval_agrees(checkpoint, data, &expected);

    // After one epoch the accuracy is well below 100%, so agreement to two
    // decimals is not a coincidence of two perfect scores.
    let one_epoch_metrics = dir.join("one-epoch.jsonl");
    let one_epoch_checkpoint = dir.join("one-epoch.safetensors");
    let mut args = train_args(data, one_epoch_metrics.to_str().unwrap(), "1", "1", "2");
    args.extend(["--save", one_epoch_checkpoint.to_str().unwrap()]);
    run_ok(&args);
    let lines = read_metrics(&one_epoch_metrics);
    assert_eq!(lines.len(), 1);
    let expected = format!("{:.2}", 100.0 * number(&lines[0], "test_acc"));
    assert_eval_agrees(one_epoch_checkpoint.to_str().unwrap(), data, &expected);
}

/// `eval` of `checkpoint` on `data` prints `accuracy: <expected>%` and one
/// per-class line for each of the ten classes.
fn assert_eval_agrees(checkpoint: &str, data: &str, expected: &str) {
    let eval = run_ok(&["eval", "--checkpoint", checkpoint, "--data", data]);
    assert_eq!(
        percentage_after(&eval, "accuracy:"),
        expected,
        "eval of the checkpoint disagrees with training's final test accuracy:\n{eval}"
    );
    let per_class = eval
        .lines()
        .skip_while(|l| !l.starts_with("per class"))
        .skip(1)
        .take(CLASSES)
        .collect::<Vec<_>>();
    assert_eq!(per_class.len(), CLASSES, "per-class lines:\n{eval}");
    for (k, line) in per_class.iter().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields.first(),
            Some(&k.to_string().as_str()),
            "class line {line:?}"
        );
        let pct: f64 = fields
            .get(1)
            .and_then(|f| f.trim_end_matches('%').parse().ok())
            .unwrap_or_else(|| panic!("per-class line {line:?}"));
        assert!((0.0..=100.0).contains(&pct), "per-class line {line:?}");
    }
}

/// `--reference` trains on the book's plain Convolution and Pooling: one
/// epoch ends with nearly the losses and accuracy of the fast layers (the
/// same functions, summed in another order), and its checkpoint evaluates
/// the same on either kind of layer.
#[test]
fn train_and_eval_on_the_reference_layers() {
    let dir = TempDir::new("reference");
    let data_dir = dir.join("synthetic");
    std::fs::create_dir(&data_dir).unwrap();
    write_dataset(&data_dir, N_TRAIN, N_TEST);
    let data = data_dir.to_str().unwrap();
    let run = |name: &str, reference: bool| {
        let metrics = dir.join(&format!("{name}.jsonl"));
        let checkpoint = dir.join(&format!("{name}.safetensors"));
        let mut args = train_args(data, metrics.to_str().unwrap(), "1", "1", "2");
        args.extend(["--save", checkpoint.to_str().unwrap()]);
        if reference {
            args.push("--reference");
        }
        let out = run_ok(&args);
        assert_eq!(
            out.contains("with the reference layers"),
            reference,
            "{out}"
        );
        let lines = read_metrics(&metrics);
        assert_eq!(lines.len(), 1);
        (lines[0].clone(), checkpoint)
    };
    let (fast, _) = run("fast", false);
    let (plain, checkpoint) = run("reference", true);
    let loss = (number(&fast, "train_loss"), number(&plain, "train_loss"));
    assert!(
        (loss.0 - loss.1).abs() <= 1e-3 * loss.0,
        "train loss {loss:?}"
    );
    let acc = (number(&fast, "test_acc"), number(&plain, "test_acc"));
    assert!((acc.0 - acc.1).abs() <= 0.02, "test accuracy {acc:?}");
    let expected = format!("{:.2}", 100.0 * acc.1);
    let checkpoint = checkpoint.to_str().unwrap();
    assert_eval_agrees(checkpoint, data, &expected);
    let eval = &[
        "eval",
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "--reference",
    ];
    assert_eq!(percentage_after(&run_ok(eval), "accuracy:"), expected);
}

// ---------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------

/// The metrics without the timing fields.
fn without_timings(
    lines: Vec<serde_json::Map<String, Value>>,
) -> Vec<serde_json::Map<String, Value>> {
    lines
        .into_iter()
        .map(|mut m| {
            m.remove("seconds");
            m.remove("images_per_second");
            m
        })
        .collect()
}

#[test]
fn training_is_deterministic_across_runs_and_thread_counts() {
    let dir = TempDir::new("determinism");
    let data_dir = dir.join("synthetic");
    std::fs::create_dir(&data_dir).unwrap();
    write_dataset(&data_dir, N_TRAIN, N_TEST);
    let data = data_dir.to_str().unwrap();

    let run = |name: &str, threads: &str| {
        let path = dir.join(name);
        run_ok(&train_args(data, path.to_str().unwrap(), "3", "7", threads));
        let lines = read_metrics(&path);
        assert_eq!(lines.len(), 3, "{name}: one line per epoch");
        without_timings(lines)
    };
    let first = run("first.jsonl", "2");
    let second = run("second.jsonl", "2");
    assert_eq!(
        first, second,
        "the same seed and threads must give the same run"
    );

    let one_thread = run("one-thread.jsonl", "1");
    assert_eq!(
        first, one_thread,
        "--threads 1 and --threads 2 must give the same losses and accuracies"
    );

    // A different seed gives a different run (so the comparison above means something).
    let path = dir.join("other-seed.jsonl");
    run_ok(&train_args(data, path.to_str().unwrap(), "3", "8", "2"));
    let other = without_timings(read_metrics(&path));
    assert_ne!(first, other, "--seed 7 and --seed 8 gave identical runs");
}

// ---------------------------------------------------------------------------
// bench
// ---------------------------------------------------------------------------

/// `bench --layers` prints one table for the training step (forward and
/// backward per layer) and one per inference batch size (forward per image),
/// each listing the network's layers. No time is checked, only the tables.
#[test]
fn bench_layers_prints_a_table_per_figure() {
    let args = [
        "bench",
        "--model",
        "simple",
        "--layers",
        "--batch-size",
        "4",
        "--inference-batches",
        "1,3",
        "--seconds",
        "0.05",
    ];
    let text = run_ok(&args);
    assert_eq!(text.matches("forward ms  backward ms").count(), 1, "{text}");
    assert_eq!(text.matches("µs per image").count(), 2, "{text}");
    // conv1, fc1 and fc2 in all three tables; relu1 and pool1, fused into
    // conv1, only in the training table (with 0).
    for layer in ["conv1 ", "fc1 ", "fc2 "] {
        assert_eq!(text.matches(layer).count(), 3, "{layer}:\n{text}");
    }
    for layer in ["relu1 ", "pool1 "] {
        assert_eq!(text.matches(layer).count(), 1, "{layer}:\n{text}");
    }
}

/// `bench --scaling` times training steps on 1 and on 2 threads, taking
/// turns, and prints (or, with `--json`, reports) both fastest steps and
/// the speed-ups; no time is checked, only that they are there and positive.
#[test]
fn bench_scaling_reports_the_speed_up() {
    let base = [
        "bench",
        "--model",
        "simple",
        "--scaling",
        "--threads",
        "2",
        "--batch-size",
        "4",
        "--inference-batches",
        "1",
        "--seconds",
        "0.05",
    ];
    let text = run_ok(&base);
    let line = text
        .lines()
        .find(|l| l.starts_with("scaling"))
        .unwrap_or_else(|| panic!("no scaling line:\n{text}"));
    assert!(line.contains("1 → 2 threads"), "{line}");
    assert!(line.contains("paired rounds"), "{line}");

    let json = run_ok(&[&base[..], &["--json"]].concat());
    let model: Value = json
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("model").is_some())
        .unwrap_or_else(|| panic!("no model object:\n{json}"));
    let scaling = &model["scaling"];
    assert_eq!(scaling["threads"], 2, "{scaling}");
    assert!(scaling["rounds"].as_u64().unwrap() >= 3, "{scaling}");
    for key in [
        "fastest_step_ms_1_thread",
        "fastest_step_ms",
        "speedup_fastest",
        "speedup_paired_median",
    ] {
        let v = scaling[key].as_f64().unwrap_or(-1.0);
        assert!(v > 0.0 && v.is_finite(), "{key}: {scaling}");
    }
}

/// `bench --reference` measures the network on the reference layers.
#[test]
fn bench_runs_on_the_reference_layers() {
    let args = [
        "bench",
        "--model",
        "simple",
        "--reference",
        "--batch-size",
        "4",
        "--inference-batches",
        "1",
        "--seconds",
        "0.05",
    ];
    let text = run_ok(&args);
    assert!(
        text.contains("simple with the reference layers on"),
        "{text}"
    );
    assert!(text.contains("training  (batch    4)"), "{text}");
    let json = run_ok(&[&args[..], &["--json"]].concat());
    assert!(json.contains("\"reference_layers\":true"), "{json}");
}

/// `gradcheck --reference` checks the reference layers, alone and in the
/// networks.
#[test]
fn gradcheck_checks_the_reference_layers() {
    let text = run_ok(&["gradcheck", "--reference"]);
    for component in [
        "Convolution (reference)",
        "MaxPooling (reference)",
        "SimpleConvNet (reference)",
    ] {
        assert!(text.contains(component), "no {component} row:\n{text}");
    }
    assert!(text.contains("gradients agree"), "{text}");
}

// ---------------------------------------------------------------------------
// --help
// ---------------------------------------------------------------------------

#[test]
fn train_help_lists_the_main_options() {
    let text = run_ok(&["train", "--help"]);
    for option in [
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--seed",
        "--threads",
        "--metrics",
    ] {
        assert!(
            text.contains(option),
            "train --help does not mention {option}:\n{text}"
        );
    }
}

/// The subcommands listed under `Commands:` in a help text (not `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The options under `Options:` in a help text that have no description of
/// their own (nothing but `[default: ...]` or `[possible values: ...]`).
fn options_without_description(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut missing = Vec::new();
    let start = lines.iter().position(|l| l.trim() == "Options:");
    for (i, line) in lines
        .iter()
        .enumerate()
        .skip(start.map_or(lines.len(), |p| p + 1))
    {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('-') {
            continue;
        }
        // `  -h, --help     Print help`: the option, two spaces, its help.
        let (option, rest) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
        let mut text = rest.trim().to_string();
        // clap puts a long help on the lines below the option, further in.
        let indent = line.len() - trimmed.len();
        for next in &lines[i + 1..] {
            let next_indent = next.len() - next.trim_start().len();
            if next.trim().is_empty() || next_indent <= indent {
                break;
            }
            text.push(' ');
            text.push_str(next.trim());
        }
        let mut description = text.clone();
        for tag in ["[default: ", "[possible values: ", "[aliases: "] {
            while let Some(at) = description.find(tag) {
                let end = description[at..]
                    .find(']')
                    .map_or(description.len(), |e| at + e + 1);
                description.replace_range(at..end, "");
            }
        }
        if description.trim().is_empty() {
            missing.push(option.trim().to_string());
        }
    }
    missing
}

#[test]
fn every_option_of_every_subcommand_has_a_description() {
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = 0;
    let mut missing = Vec::new();
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = run_ok(&args);
        seen += 1;
        for option in options_without_description(&help) {
            missing.push(format!("convnet {} {option}", path.join(" ")));
        }
        for sub in subcommands(&help) {
            let mut deeper = path.clone();
            deeper.push(sub);
            pending.push(deeper);
        }
    }
    assert!(seen >= 10, "only {seen} help texts walked");
    assert!(
        missing.is_empty(),
        "options without a help line:\n{}",
        missing.join("\n")
    );
    // The checker itself finds an option without one.
    let bare = "Options:\n      --threads <THREADS>        \n      --epochs <EPOCHS>  [default: 15]\n  -h, --help  Print help\n";
    assert_eq!(
        options_without_description(bare),
        ["--threads <THREADS>", "--epochs <EPOCHS>"]
    );
}

/// `convnet train`'s defaults are the library's `TrainConfig::default()`
/// (checked on the library's side in tests/training.rs).
#[test]
fn train_defaults_are_the_librarys() {
    let text = run_ok(&["train", "--help"]);
    let default_of = |option: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(option))
            .unwrap_or_else(|| panic!("no {option} in:\n{text}"));
        // clap's "[default: X]", or "Default: X." for the options that a
        // --recipe may set.
        let (at, tag, end) = match line.find("[default: ") {
            Some(at) => (at, "[default: ", ']'),
            None => (
                line.find("Default: ")
                    .unwrap_or_else(|| panic!("no default: {line}")),
                "Default: ",
                '.',
            ),
        };
        let rest = &line[at + tag.len()..];
        rest[..rest.find(end).unwrap_or(rest.len())].to_string()
    };
    let config = convnet::train::TrainConfig::default();
    assert_eq!(default_of("--epochs"), config.epochs.to_string());
    assert_eq!(default_of("--batch-size"), config.batch_size.to_string());
    assert_eq!(default_of("--seed"), config.seed.to_string());
    assert_eq!(default_of("--optimizer"), config.optimizer.to_string());
}

#[test]
fn no_arguments_print_the_help_with_the_commands() {
    let out = convnet(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&[], &out));
    let help = stderr(&out);
    assert!(help.contains("Usage: convnet <COMMAND>"), "{help}");
    let commands = subcommands(&help);
    for command in ["train", "eval", "gradcheck", "predict", "summary"] {
        assert!(
            commands.iter().any(|c| c == command),
            "no {command} in:\n{help}"
        );
    }
}

#[test]
fn mistyped_commands_and_options_keep_clap_tips_on_one_line() {
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["trian"],
            "tip: a similar subcommand exists: 'train'",
            "see convnet --help",
        ),
        (
            &["train", "--epoch", "3"],
            "tip: a similar argument exists: '--epochs'",
            "see convnet train --help",
        ),
        (
            &["train", "--epochs", "many"],
            "'--epochs <EPOCHS>'",
            "see convnet train --help",
        ),
        (
            &["visualize", "filters", "--bogus"],
            "unexpected argument '--bogus'",
            "see convnet visualize filters --help",
        ),
    ];
    for (args, tip, see) in cases {
        let out = convnet(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}", describe(args, &out));
        assert_eq!(err.lines().count(), 1, "{}", describe(args, &out));
        assert!(err.starts_with("convnet: error: "), "{err}");
        assert!(err.contains(tip), "{err}");
        assert!(err.trim_end().ends_with(see), "{err}");
    }
}

/// Runs `args` with stdout into a pipe, reads one line and closes the
/// pipe: the program must end without a panic or an internal error, by
/// SIGPIPE or an exit, not by another signal.
#[cfg(unix)]
fn ends_quietly_on_a_closed_pipe(args: &[&str]) {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start convnet");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "convnet {}: no output", args.join(" "));
    // Reader dropped: the pipe is closed.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let context = format!("convnet {}: {status:?}, stderr:\n{err}", args.join(" "));
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{context}"
    );
    const SIGPIPE: i32 = 13;
    assert!(status.signal().is_none_or(|s| s == SIGPIPE), "{context}");
}

#[cfg(unix)]
#[test]
fn writing_into_a_closed_pipe_ends_quietly() {
    ends_quietly_on_a_closed_pipe(&["gradcheck"]);
    ends_quietly_on_a_closed_pipe(&["summary"]);
    ends_quietly_on_a_closed_pipe(&["--help"]);
}

#[test]
fn without_a_terminal_training_writes_progress_lines() {
    let dir = TempDir::new("progress");
    let data_dir = dir.join("synthetic");
    std::fs::create_dir(&data_dir).unwrap();
    write_dataset(&data_dir, N_TRAIN, N_TEST);
    let args = [
        "train",
        "--data",
        data_dir.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--threads",
        "1",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(args)
        .env("CONVNET_PROGRESS_SECONDS", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&args, &out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    // After every batch but the last of the epoch (its own line follows).
    assert_eq!(lines.len(), 9, "{err}");
    assert!(
        lines[0].starts_with("epoch 1/1: 50/500 images, loss "),
        "{err}"
    );
    assert!(
        lines[8].starts_with("epoch 1/1: 450/500 images, loss "),
        "{err}"
    );
    for line in lines {
        let loss: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{line}");
    }
    // Nothing in the results changes: the epoch's line is on stdout as before.
    assert!(
        stdout(&out).contains("epoch  1/1  train loss"),
        "{}",
        stdout(&out)
    );
}

/// The OS error of a missing file appears once in the message.
#[test]
fn missing_checkpoint_error_states_the_cause_once() {
    let dir = TempDir::new("missing-once");
    let missing = dir.join("missing.safetensors");
    let line = convnet_fails(&["eval", "--checkpoint", missing.to_str().unwrap()], &[]);
    let os_message = line.rsplit(": ").next().unwrap_or_default().to_string();
    assert_eq!(
        line.matches(&os_message).count(),
        1,
        "the cause {os_message:?} is repeated: {line}"
    );
}

#[test]
fn save_into_a_missing_folder_fails_before_training() {
    let dir = TempDir::new("savefolder");
    let target = dir.join("no-such-folder").join("m.safetensors");
    let line = convnet_fails(
        &["train", "--epochs", "1", "--save", target.to_str().unwrap()],
        &[],
    );
    assert!(line.contains("does not exist"), "{line}");
    assert!(!dir.join("no-such-folder").exists());
}

/// `--schedule step:1:0.5` halves the rate every epoch, and the metrics
/// file holds each epoch's rate; without `--schedule` the rate is constant;
/// a malformed schedule is refused.
#[test]
fn schedule_sets_each_epochs_learning_rate_in_the_metrics() {
    let dir = TempDir::new("schedule");
    write_dataset(dir.path(), 100, 20);
    let data = dir.path().to_str().unwrap();
    let rates = |name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let mut args = train_args(data, path.to_str().unwrap(), "3", "1", "1");
        args.extend_from_slice(extra);
        run_ok(&args);
        read_metrics(&path)
            .iter()
            .map(|m| number(m, "lr"))
            .collect::<Vec<f64>>()
    };
    assert_eq!(rates("constant.jsonl", &[]), [0.001, 0.001, 0.001]);
    assert_eq!(
        rates("step.jsonl", &["--schedule", "step:1:0.5", "--lr", "0.002"]),
        [0.002, 0.001, 0.0005]
    );
    for bad in ["linear", "step:0:0.5", "onecycle:1.5"] {
        let out = convnet(&["train", "--data", data, "--schedule", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr(&out).contains("schedule"), "{}", stderr(&out));
    }
}
