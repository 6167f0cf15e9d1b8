//! The command-line tool against inputs that used to crash it or run it out
//! of memory: huge sizes (in a spec, on the command line, in a checkpoint's
//! metadata), too many threads, non-finite weights, an optimizer state from
//! another network, image errors on several lines, broken CIFAR-10 folders,
//! pictures too large to draw. Each must end in exactly one error line and a
//! non-zero exit, quickly. `docs/reliability.md` lists them.
//!
//! Every file is made here, in a temporary folder.

mod common;

use common::{convnet_fails, convnet_ok, idx_images, idx_labels, TempDir};
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::networks::{build_model, ModelOptions};
use convnet::Rng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tiny MNIST-format folder: 20 training and 10 test images of 28×28.
fn tiny_dataset(dir: &Path) -> String {
    let image = |n: usize| -> Vec<u8> { (0..n * 784).map(|i| (i * 7 % 251) as u8).collect() };
    let labels = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 10) as u8).collect() };
    for (name, bytes) in [
        (
            "train-images-idx3-ubyte",
            idx_images(20, 28, 28, &image(20)),
        ),
        ("train-labels-idx1-ubyte", idx_labels(&labels(20))),
        ("t10k-images-idx3-ubyte", idx_images(10, 28, 28, &image(10))),
        ("t10k-labels-idx1-ubyte", idx_labels(&labels(10))),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir.to_str().unwrap().to_string()
}

/// Runs `convnet args` expecting one error line, within `seconds`.
fn fails_fast(args: &[&str], seconds: u64) -> String {
    let start = Instant::now();
    let line = convnet_fails(args, &[]);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(seconds),
        "convnet {} took {took:?}: {line}",
        args.join(" ")
    );
    line
}

/// Trains `args` for one epoch on `data` and saves to `dir/name`.
fn train_and_save(data: &str, dir: &TempDir, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec![
        "train",
        "--data",
        data,
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--threads",
        "1",
        "--save",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    convnet_ok(&args, &[]);
    path
}

// ---------------------------------------------------------------------------
// A safetensors file's header, rewritten
// ---------------------------------------------------------------------------

/// The JSON header and the data of a safetensors file.
fn split(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    (header, bytes[8 + len..].to_vec())
}

fn join(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// Sets metadata `key` of the safetensors file at `path` to `value`.
fn set_metadata(path: &Path, key: &str, value: &str) {
    let (mut header, data) = split(&std::fs::read(path).unwrap());
    header["__metadata__"][key] = value.into();
    std::fs::write(path, join(&header, &data)).unwrap();
}

/// Overwrites value `index` of tensor `name` in the safetensors file at `path`.
fn set_value(path: &Path, name: &str, index: usize, value: f32) {
    let (header, mut data) = split(&std::fs::read(path).unwrap());
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 4 * index;
    data[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, join(&header, &data)).unwrap();
}

// ---------------------------------------------------------------------------
// Sizes checked before anything is allocated
// ---------------------------------------------------------------------------

/// `conv(100000000,3)` asked for 3.6 GB of weights and 270 GB of
/// activations: the process was killed, or ran a minute first.
#[test]
fn a_huge_layer_in_a_spec_is_one_error_line_at_once() {
    let dir = TempDir::new("huge-spec");
    let data = tiny_dataset(dir.path());
    let line = fails_fast(
        &[
            "train",
            "--data",
            &data,
            "--model",
            "conv(100000000,3)-affine(10)",
        ],
        10,
    );
    assert!(
        line.contains("layer 1 (conv1, conv(100000000,3,stride=1,pad=0)): needs ")
            && line.contains("more than the memory limit of"),
        "{line}"
    );
    // A filter too large for its input is found before its weights exist.
    let line = fails_fast(
        &[
            "train",
            "--data",
            &data,
            "--model",
            "conv(100000000,40)-affine(10)",
        ],
        10,
    );
    assert!(
        line.contains("layer 1 (conv1)") && line.contains("filter of size 40 is larger"),
        "{line}"
    );
    // Sizes whose product overflows.
    let line = fails_fast(
        &[
            "summary",
            "--model",
            "affine(4294967295)-affine(4294967295)-affine(10)",
        ],
        10,
    );
    assert!(line.contains("layer 1 (fc1, affine(4294967295))"), "{line}");
}

/// `--hidden-size 10000000000` aborted with `memory allocation of
/// 172800000000000 bytes failed`.
#[test]
fn huge_sizes_on_the_command_line_are_refused() {
    let dir = TempDir::new("huge-cli");
    let data = tiny_dataset(dir.path());
    let line = fails_fast(
        &["train", "--data", &data, "--hidden-size", "10000000000"],
        10,
    );
    assert!(
        line.contains("layer 4 (fc1, affine(10000000000))"),
        "{line}"
    );
    let line = fails_fast(&["train", "--data", &data, "--filters", "100000000000"], 10);
    assert!(
        line.contains("layer 1 (conv1, conv(100000000000,"),
        "{line}"
    );
    let line = fails_fast(&["summary", "--classes", "100000000000"], 10);
    assert!(
        line.contains("layer 6 (fc2, affine(100000000000))"),
        "{line}"
    );
    // A batch too large for memory is refused before the first epoch.
    let line = fails_fast(
        &[
            "train",
            "--data",
            &data,
            "--batch-size",
            "100000000000",
            "--max-memory",
            "1M",
        ],
        10,
    );
    assert!(
        line.contains("more than the memory limit of 1 MiB"),
        "{line}"
    );
}

#[test]
fn max_memory_is_a_documented_limit() {
    let dir = TempDir::new("max-memory");
    let data = tiny_dataset(dir.path());
    let line = fails_fast(&["train", "--data", &data, "--max-memory", "1M"], 10);
    assert!(
        line.contains("layer 1 (conv1, ") && line.contains("(--max-memory)"),
        "{line}"
    );
    let line = fails_fast(&["summary", "--max-memory", "lots"], 10);
    assert!(line.contains("'lots' is not a memory size"), "{line}");
    let out = convnet_ok(&["summary", "--max-memory", "64M"], &[]);
    assert!(out.contains("conv1"), "{out}");
    let help = convnet_ok(&["train", "--help"], &[]);
    assert!(help.contains("--max-memory <SIZE>"), "{help}");
}

/// `--threads 100000000` tried to start a hundred million threads.
#[test]
fn threads_far_above_the_cores_are_refused_at_once() {
    for command in [&["train"][..], &["bench", "--seconds", "0"]] {
        let args = [command, &["--threads", "100000000"]].concat();
        let line = fails_fast(&args, 5);
        assert!(
            line.contains("--threads 100000000 is more than this machine's limit"),
            "{line}"
        );
    }
}

/// `bench --seconds inf` measured forever.
#[test]
fn bench_refuses_endless_measurements() {
    let line = fails_fast(&["bench", "--seconds", "inf"], 5);
    assert!(
        line.contains("--seconds must be a number of seconds"),
        "{line}"
    );
}

/// A checkpoint whose metadata declares huge sizes is refused before its
/// model is built (it aborted: `memory allocation of N bytes failed`).
#[test]
fn a_checkpoint_declaring_huge_sizes_is_refused() {
    let dir = TempDir::new("huge-checkpoint");
    let data = tiny_dataset(dir.path());
    let model = train_and_save(&data, &dir, "m.safetensors", &["--hidden-size", "8"]);
    let model_arg = model.to_str().unwrap();
    let image = dir.join("digit.png");
    image::GrayImage::new(28, 28).save(&image).unwrap();
    // Checkpoints rebuild their network from the spec they record.
    for (key, value, expected) in [
        (
            "spec",
            "conv(30,5)-relu-maxpool(2)-affine(1000000000)-relu-affine(10)",
            "layer 4 (fc1, affine(1000000000))",
        ),
        (
            "spec",
            "conv(1000000000,5)-relu-maxpool(2)-affine(10)",
            "layer 1 (conv1, conv(1000000000,",
        ),
        ("input_shape", "1,100000000,100000000", "layer 1 (conv1, "),
        (
            "input_shape",
            "18446744073709551615,18446744073709551615,2",
            "too large to count",
        ),
    ] {
        let copy = dir.join("huge.safetensors");
        std::fs::copy(&model, &copy).unwrap();
        set_metadata(&copy, key, value);
        let copy = copy.to_str().unwrap();
        for args in [
            &["eval", "--checkpoint", copy, "--data", &data][..],
            &["predict", "--checkpoint", copy, image.to_str().unwrap()],
            &["visualize", "filters", "--checkpoint", copy],
        ] {
            let line = fails_fast(args, 10);
            assert!(
                line.contains("huge.safetensors: ") && line.contains(expected),
                "{key}={value}: {line}"
            );
        }
    }
    // The original still works.
    convnet_ok(&["eval", "--checkpoint", model_arg, "--data", &data], &[]);
}

/// `visualize filters` on 20,000 filters would draw a picture of 442×84,046
/// pixels: refused before the canvas is allocated.
#[test]
fn visualize_bounds_its_picture() {
    let dir = TempDir::new("huge-canvas");
    let model = "conv(20000,1)-gap-affine(10)";
    let options = ModelOptions::default();
    let mut net = build_model::<f32>(model, &options, [1, 8, 8], 10, &mut Rng::new(0)).unwrap();
    let info = CheckpointInfo {
        model: model.into(),
        options,
        input_shape: [1, 8, 8],
        class_names: (0..10).map(|c| c.to_string()).collect(),
        extra: Default::default(),
    };
    let path = dir.join("wide.safetensors");
    checkpoint::save(&mut net, &info, &path).unwrap();
    let output = dir.join("filters.png");
    let line = fails_fast(
        &[
            "visualize",
            "filters",
            "--checkpoint",
            path.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        30,
    );
    assert!(line.contains("the picture would be 442×"), "{line}");
    assert!(!output.exists());
}

// ---------------------------------------------------------------------------
// Files validated on load
// ---------------------------------------------------------------------------

/// NaN and infinite weights were accepted by eval and predict.
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = TempDir::new("nan-weights");
    let data = tiny_dataset(dir.path());
    let model = train_and_save(&data, &dir, "m.safetensors", &["--hidden-size", "8"]);
    let image = dir.join("digit.png");
    image::GrayImage::new(28, 28).save(&image).unwrap();
    for (tensor, index, value) in [
        ("conv1.weight", 3, f32::NAN),
        ("fc2.bias", 9, f32::INFINITY),
        ("fc1.weight", 0, f32::NEG_INFINITY),
    ] {
        let copy = dir.join("bad.safetensors");
        std::fs::copy(&model, &copy).unwrap();
        set_value(&copy, tensor, index, value);
        let copy = copy.to_str().unwrap();
        for args in [
            &["eval", "--checkpoint", copy, "--data", &data][..],
            &["predict", "--checkpoint", copy, image.to_str().unwrap()],
        ] {
            let line = convnet_fails(args, &[]);
            assert!(
                line.contains(&format!("tensor {tensor} holds a non-finite value")),
                "{line}"
            );
        }
    }
}

/// A negative running variance gave NaN outputs; it is refused too.
#[test]
fn a_negative_running_variance_is_refused() {
    let dir = TempDir::new("negative-variance");
    let data = tiny_dataset(dir.path());
    let model = train_and_save(
        &data,
        &dir,
        "bn.safetensors",
        &["--model", "conv(2,3)-bn-relu-affine(10)"],
    );
    set_value(&model, "bn1.running_var", 1, -0.5);
    let line = convnet_fails(
        &[
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--data",
            &data,
        ],
        &[],
    );
    assert!(
        line.contains("tensor bn1.running_var holds a negative variance (-0.5) at index 1"),
        "{line}"
    );
}

/// An optimizer state from another network made `train --resume` panic:
/// `assertion left == right failed`.
#[test]
fn an_optimizer_state_from_another_network_is_refused() {
    let dir = TempDir::new("foreign-state");
    let data = tiny_dataset(dir.path());
    let a = train_and_save(&data, &dir, "a.safetensors", &["--hidden-size", "8"]);
    let b = train_and_save(&data, &dir, "b.safetensors", &["--hidden-size", "9"]);
    std::fs::copy(
        checkpoint::optimizer_path(&b, 1),
        checkpoint::optimizer_path(&a, 1),
    )
    .unwrap();
    let line = convnet_fails(
        &[
            "train",
            "--data",
            &data,
            "--epochs",
            "2",
            "--threads",
            "1",
            "--resume",
            a.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        line.contains("a.safetensors's optimizer state: optimizer state entry 'm.2' has 38880 values but parameter 2 (fc1.weight) has 34560 (the state is from another network)"),
        "{line}"
    );
}

/// Invalid optimizer state — a negative Adam second moment, NaN — is
/// refused naming the tensor.
#[test]
fn invalid_optimizer_state_is_refused_naming_the_tensor() {
    let dir = TempDir::new("bad-state");
    let data = tiny_dataset(dir.path());
    let model = train_and_save(&data, &dir, "m.safetensors", &["--hidden-size", "8"]);
    let optim = checkpoint::optimizer_path(&model, 1);
    let saved = std::fs::read(&optim).unwrap();
    for (tensor, value, expected) in [
        (
            "v.1",
            -1.0,
            "Adam state: 'v.1' holds a negative value (-1) at index 2",
        ),
        (
            "m.0",
            f32::NAN,
            "tensor m.0 holds a non-finite value (NaN) at index 2",
        ),
    ] {
        std::fs::write(&optim, &saved).unwrap();
        set_value(&optim, tensor, 2, value);
        let line = convnet_fails(
            &[
                "train",
                "--data",
                &data,
                "--epochs",
                "2",
                "--resume",
                model.to_str().unwrap(),
            ],
            &[],
        );
        assert!(line.contains("optim") && line.contains(expected), "{line}");
    }
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// A truncated JPEG's error spanned three lines.
#[test]
fn image_errors_are_one_line() {
    let dir = TempDir::new("image-lines");
    let data = tiny_dataset(dir.path());
    let model = train_and_save(&data, &dir, "m.safetensors", &["--hidden-size", "8"]);
    let jpeg = dir.join("cut.jpg");
    image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 16) as u8, 99])
    })
    .save(&jpeg)
    .unwrap();
    let bytes = std::fs::read(&jpeg).unwrap();
    std::fs::write(&jpeg, &bytes[..bytes.len() / 2]).unwrap();
    // convnet_fails checks that stderr is exactly one line.
    let line = convnet_fails(
        &[
            "predict",
            "--checkpoint",
            model.to_str().unwrap(),
            jpeg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        line.contains("cannot read image") && line.contains("cut.jpg"),
        "{line}"
    );
}

fn cifar_record(label: u8) -> Vec<u8> {
    let mut record = vec![label];
    record.extend((0..3072).map(|i| (i % 256) as u8));
    record
}

#[test]
fn cifar_errors_name_the_file_and_the_record() {
    let dir = TempDir::new("cifar-cli");
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for name in names {
        let records: Vec<u8> = (0..3).flat_map(|k| cifar_record(k as u8)).collect();
        std::fs::write(dir.join(name), records).unwrap();
    }
    let data = dir.path().to_str().unwrap();
    // Record 2 of the third file has label 11.
    let mut bad: Vec<u8> = (0..2).flat_map(|k| cifar_record(k as u8)).collect();
    bad.extend(cifar_record(11));
    std::fs::write(dir.join(names[2]), bad).unwrap();
    let line = convnet_fails(&["train", "--data", data, "--epochs", "1"], &[]);
    assert!(
        line.contains("data_batch_3.bin: record 2 has label 11, CIFAR-10 labels are 0-9"),
        "{line}"
    );
    // A missing first batch: a CIFAR-10 message, not an IDX one.
    std::fs::remove_file(dir.join(names[0])).unwrap();
    let line = convnet_fails(&["train", "--data", data, "--epochs", "1"], &[]);
    assert!(
        line.contains("data_batch_1.bin is missing: a CIFAR-10 folder holds")
            && !line.contains("IDX"),
        "{line}"
    );
}

/// A metrics file with extreme values is drawn, not a panic in plotters.
#[test]
fn plot_draws_extreme_metrics() {
    let dir = TempDir::new("plot-extreme");
    let metrics = dir.join("m.jsonl");
    std::fs::write(
        &metrics,
        "{\"epoch\":0,\"train_loss\":1e308,\"train_acc\":-1e300,\"test_loss\":-1e308,\"test_acc\":5e300}\n\
         {\"epoch\":4294967295,\"train_loss\":1.7e308,\"train_acc\":0.5,\"test_loss\":0.1,\"test_acc\":1e-300}\n",
    )
    .unwrap();
    let output = dir.join("m.png");
    convnet_ok(
        &[
            "plot",
            metrics.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.exists());
}
