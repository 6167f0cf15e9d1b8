//! No lost work: a kill at any instant of a save leaves a checkpoint that
//! `--resume` continues exactly; an output never overwrites an input; output
//! mistakes show before any training; resuming checks it is given the same
//! network and data; two identical runs write identical checkpoints.

mod common;

use common::{convnet_fails, convnet_ok, idx_images, idx_labels, weights, TempDir};
use convnet::checkpoint;
use std::path::Path;
use std::process::Command;

/// A small network with dropout (whose masks must be reproduced too).
const MODEL: &str = "conv(4,3)-relu-maxpool(2)-dropout(0.3)-affine(10)";

fn train_args(epochs: &str) -> Vec<&str> {
    vec![
        "train",
        "--model",
        MODEL,
        "--seed",
        "3",
        "--threads",
        "2",
        "--epochs",
        epochs,
    ]
}

#[test]
fn a_kill_at_any_point_of_a_save_leaves_a_checkpoint_that_resumes_exactly() {
    let dir = TempDir::new("kill-save");
    let whole = dir.join("whole.safetensors");
    convnet_ok(&[&train_args("3")[..], &["--save"]].concat(), &[&whole]);
    let expected = weights(&whole);
    // Each epoch's save passes these points in order: the optimizer state's
    // temporary file, its rename, the weights' temporary file, their rename
    // (then the old optimizer file is removed). Kill at each of them in
    // epoch 2 (the first temporary-file points are epoch 1's).
    let points = [
        "after-temporary-file:3",
        "after-optimizer-state:2",
        "after-temporary-file:4",
        "after-weights:2",
    ];
    for point in points {
        let path = dir.join(&format!("killed-{}.safetensors", point.replace(':', "-")));
        let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
            .args(train_args("3"))
            .arg("--save")
            .arg(&path)
            .env("CONVNET_TEST_ABORT_AT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the run was not killed");
        assert!(path.exists(), "{point}: no checkpoint left");
        let resumed = convnet_ok(&[&train_args("3")[..], &["--resume"]].concat(), &[&path]);
        assert!(resumed.contains("epoch  3/3"), "{point}: {resumed}");
        let got = weights(&path);
        for ((name, want), (_, have)) in expected.iter().zip(&got) {
            assert_eq!(
                want, have,
                "{point}: {name} differs from the uninterrupted run"
            );
        }
        // Only the last epoch's optimizer file is left beside it.
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let optim_files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{stem}.optim")))
            .collect();
        assert_eq!(
            optim_files,
            [format!("{stem}.optim-3.safetensors")],
            "{point}"
        );
    }
}

#[test]
fn an_output_that_is_an_input_is_refused_before_any_work() {
    let dir = TempDir::new("same-file");
    let ckpt = dir.join("run.safetensors");
    convnet_ok(&[&train_args("1")[..], &["--save"]].concat(), &[&ckpt]);
    let before = std::fs::read(&ckpt).unwrap();
    // --metrics naming the checkpoint being resumed (also through a link).
    let err = convnet_fails(
        &[
            &train_args("2")[..],
            &["--resume", ckpt.to_str().unwrap(), "--metrics"],
        ]
        .concat(),
        &[&ckpt],
    );
    assert!(
        err.contains("--metrics") && err.contains("--resume"),
        "{err}"
    );
    #[cfg(unix)]
    {
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink(&ckpt, &link).unwrap();
        let err = convnet_fails(
            &[
                &train_args("2")[..],
                &["--resume", ckpt.to_str().unwrap(), "--metrics"],
            ]
            .concat(),
            &[&link],
        );
        assert!(err.contains("--metrics"), "{err}");
    }
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the checkpoint was touched"
    );
    // --save and --metrics the same file.
    let same = dir.join("same");
    let err = convnet_fails(
        &[
            &train_args("1")[..],
            &["--save", same.to_str().unwrap(), "--metrics"],
        ]
        .concat(),
        &[&same],
    );
    assert!(err.contains("same file"), "{err}");
    // An output inside the --data folder naming one of its files.
    let data = dir.join("data");
    write_idx_folder(&data, &[1, 2, 3, 4]);
    let images = data.join("train-images-idx3-ubyte");
    let err = convnet_fails(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--metrics",
        ],
        &[&images],
    );
    assert!(err.contains("--data"), "{err}");
    assert!(std::fs::metadata(&images).unwrap().len() > 16);
}

#[test]
fn output_mistakes_show_before_training() {
    let dir = TempDir::new("outputs");
    for (flag, path) in [
        ("--save", dir.path().to_path_buf()),
        ("--save", dir.join("missing/run.safetensors")),
        ("--metrics", dir.path().to_path_buf()),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
            .args(train_args("1"))
            .arg(flag)
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {}", path.display());
        assert!(
            !stdout.contains("epoch"),
            "trained before failing: {stdout}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // No orphan optimizer file was left anywhere.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary_file() {
    let dir = TempDir::new("full-disk");
    let ckpt = dir.join("run.safetensors");
    convnet_ok(&[&train_args("1")[..], &["--save"]].concat(), &[&ckpt]);
    let before = std::fs::read(&ckpt).unwrap();
    // A file-size limit below the checkpoint's size makes its write fail
    // partway, as a full disk would (SIGXFSZ ignored, so write returns EFBIG).
    let limit_kib = (before.len() / 1024 / 2).max(1);
    let script = format!("trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\"");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_convnet"))
        .args(train_args("2"))
        .arg("--resume")
        .arg(&ckpt)
        // No progress lines on a slow machine: stderr is the error alone.
        .env("CONVNET_PROGRESS_SECONDS", "100000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the checkpoint changed"
    );
    let tmp: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    // The previous checkpoint still resumes.
    let out = convnet_ok(&[&train_args("2")[..], &["--resume"]].concat(), &[&ckpt]);
    assert!(out.contains("epoch  2/2"), "{out}");
}

#[test]
fn epochs_0_saves_the_initial_weights_and_a_finished_run_is_left_alone() {
    let dir = TempDir::new("epochs-0");
    let ckpt = dir.join("init.safetensors");
    let out = convnet_ok(&[&train_args("0")[..], &["--save"]].concat(), &[&ckpt]);
    assert!(out.contains("saved"), "{out}");
    assert!(ckpt.exists());
    convnet_ok(&["eval", "--checkpoint"], &[&ckpt]);
    // It resumes into the same run as a fresh start.
    let fresh = dir.join("fresh.safetensors");
    convnet_ok(&[&train_args("1")[..], &["--save"]].concat(), &[&fresh]);
    convnet_ok(&[&train_args("1")[..], &["--resume"]].concat(), &[&ckpt]);
    assert_eq!(weights(&ckpt), weights(&fresh));
    // Nothing left to do: said, and the checkpoint is not rewritten.
    let before = std::fs::read(&ckpt).unwrap();
    let out = convnet_ok(&[&train_args("1")[..], &["--resume"]].concat(), &[&ckpt]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), before);
}

#[test]
fn resume_refuses_another_network_or_another_data_set() {
    let dir = TempDir::new("resume-mismatch");
    let ckpt = dir.join("run.safetensors");
    convnet_ok(&[&train_args("1")[..], &["--save"]].concat(), &[&ckpt]);
    let err = convnet_fails(
        &["train", "--model", "deep", "--epochs", "2", "--resume"],
        &[&ckpt],
    );
    assert!(err.contains(MODEL) && err.contains("deep"), "{err}");
    // Another data set of the same image shape.
    let data = dir.join("other");
    write_idx_folder(&data, &[3, 1, 4, 1, 5, 9, 2, 6]);
    let err = convnet_fails(
        &[
            "train",
            "--epochs",
            "2",
            "--data",
            data.to_str().unwrap(),
            "--resume",
        ],
        &[&ckpt],
    );
    assert!(err.contains("mnist-10k") && err.contains("other"), "{err}");
}

#[test]
fn resume_appends_to_the_metrics_file() {
    let dir = TempDir::new("metrics-append");
    let (ckpt, metrics) = (dir.join("run.safetensors"), dir.join("run.jsonl"));
    let with = |epochs| {
        [
            &train_args(epochs)[..],
            &["--metrics", metrics.to_str().unwrap(), "--save"],
        ]
        .concat()
    };
    convnet_ok(&with("1"), &[&ckpt]);
    // A line of an epoch the checkpoint does not hold (a kill after the
    // line was written) is dropped, not repeated.
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"epoch\":2,\"train_loss\":9}\n");
    std::fs::write(&metrics, text).unwrap();
    convnet_ok(
        &[
            &train_args("3")[..],
            &["--metrics", metrics.to_str().unwrap(), "--resume"],
        ]
        .concat(),
        &[&ckpt],
    );
    let epochs: Vec<u64> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3]);
}

#[test]
fn two_identical_runs_write_identical_checkpoints() {
    let dir = TempDir::new("identical");
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    convnet_ok(&[&train_args("2")[..], &["--save"]].concat(), &[&a]);
    convnet_ok(&[&train_args("2")[..], &["--save"]].concat(), &[&b]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(
        std::fs::read(checkpoint::optimizer_path(&a, 2)).unwrap(),
        std::fs::read(checkpoint::optimizer_path(&b, 2)).unwrap()
    );
}

#[test]
fn divergence_is_reported() {
    // A learning rate far too high: the run stops with the epoch and batch
    // (a non-finite loss or gradient) or warns that the loss exploded.
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args([
            "train",
            "--model",
            MODEL,
            "--epochs",
            "1",
            "--optimizer",
            "sgd",
            "--lr",
            "1e4",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("diverg"), "{stderr}");
    if !out.status.success() {
        assert!(stderr.contains("batch"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// A tiny MNIST-format folder: 28×28 images with the given labels, for
/// both parts.
fn write_idx_folder(folder: &Path, labels: &[u8]) {
    std::fs::create_dir_all(folder).unwrap();
    let pixels: Vec<u8> = (0..labels.len() * 784)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    for part in ["train", "t10k"] {
        std::fs::write(
            folder.join(format!("{part}-images-idx3-ubyte")),
            idx_images(labels.len(), 28, 28, &pixels),
        )
        .unwrap();
        std::fs::write(
            folder.join(format!("{part}-labels-idx1-ubyte")),
            idx_labels(labels),
        )
        .unwrap();
    }
}

#[test]
fn ctrl_c_saves_mid_epoch_and_resume_continues_exactly() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("ctrl-c");
    let (whole, parts) = (dir.join("whole.safetensors"), dir.join("parts.safetensors"));
    convnet_ok(&[&train_args("5")[..], &["--save"]].concat(), &[&whole]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(train_args("5"))
        .arg("--save")
        .arg(&parts)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("epoch  1/5") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("interrupted") && rest.contains("saved"),
        "{rest}"
    );
    let resumed = convnet_ok(&[&train_args("5")[..], &["--resume"]].concat(), &[&parts]);
    assert!(resumed.contains("epoch  5/5"), "{resumed}");
    for ((name, want), (_, have)) in weights(&whole).iter().zip(&weights(&parts)) {
        assert_eq!(want, have, "{name} differs from the uninterrupted run");
    }
}
