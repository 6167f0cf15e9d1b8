//! Checking a command's output files before any work starts: each must be
//! writable, and none may be one of the command's inputs (a `--metrics`
//! naming the checkpoint being resumed would truncate it before epoch 1).

use anyhow::Context;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// The folder a file path lies in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Where `path` is, with links resolved: the canonical path of the file,
/// or of its folder joined with its name when the file does not exist yet.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let folder = folder_of(path).canonicalize().ok()?;
    Some(folder.join(path.file_name()?))
}

/// Whether `a` and `b` name the same file: the same resolved path, or (on
/// Unix) the same device and inode, which also catches hard links.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
                return true;
            }
        }
    }
    matches!((resolved(a), resolved(b)), (Some(x), Some(y)) if x == y)
}

/// The input files of `convnet train`, by the option that names them: the
/// checkpoint being resumed, its optimizer files, and the files of a
/// `--data` folder.
pub fn training_inputs(
    resume: Option<&Path>,
    data_folder: Option<&Path>,
) -> Vec<(String, PathBuf)> {
    let mut inputs = Vec::new();
    if let Some(path) = resume {
        inputs.push(("--resume".to_string(), path.to_path_buf()));
        for file in convnet::checkpoint::optimizer_files(path) {
            inputs.push(("--resume's optimizer state".to_string(), file));
        }
    }
    if let Some(folder) = data_folder {
        for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
            if is_data_file(&entry.file_name().to_string_lossy()) {
                inputs.push(("--data".to_string(), entry.path()));
            }
        }
    }
    inputs
}

/// Whether a file in a `--data` folder is one the readers take: MNIST's IDX
/// files (`train-images-idx3-ubyte.gz`, ...) and CIFAR-10's batches. Other
/// files there (a checkpoint saved beside the data) are not inputs.
fn is_data_file(name: &str) -> bool {
    name.contains("-idx")
        || name.starts_with("data_batch")
        || name.starts_with("test_batch")
        || name.starts_with("batches.meta")
}

/// Checks every given output (by its option's name) before the work: its
/// folder exists and takes a new file, it is not a folder, no two outputs
/// are the same file, and no output is one of `inputs` — except `--save`
/// naming the `--resume` checkpoint, which continues it in place.
pub fn check_outputs(
    outputs: &[(&str, Option<&Path>)],
    inputs: &[(String, PathBuf)],
) -> anyhow::Result<()> {
    let outputs: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|(flag, path)| path.map(|p| (*flag, p)))
        .collect();
    for &(flag, path) in &outputs {
        check_writable(flag, path)?;
        for (input_flag, input) in inputs {
            if flag == "--save" && input_flag == "--resume" {
                continue;
            }
            anyhow::ensure!(
                !same_file(path, input),
                "{flag} {} is the {input_flag} file {}: it would be overwritten; choose another name",
                path.display(),
                input.display()
            );
        }
    }
    for (i, &(flag, path)) in outputs.iter().enumerate() {
        for &(other_flag, other) in &outputs[i + 1..] {
            anyhow::ensure!(
                !same_file(path, other),
                "{flag} and {other_flag} name the same file ({}): give each its own",
                path.display()
            );
        }
    }
    Ok(())
}

/// Fails unless `path` can be written: its folder exists and takes a new
/// file (a probe file is created and removed), and `path` is not a folder.
fn check_writable(flag: &str, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !path.is_dir(),
        "{flag} {} is a folder, not a file",
        path.display()
    );
    let folder = folder_of(path);
    anyhow::ensure!(
        folder.is_dir(),
        "cannot write {flag} {}: folder {} does not exist",
        path.display(),
        folder.display()
    );
    let probe = folder.join(format!(".convnet-write-probe-{}", std::process::id()));
    File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "cannot write {flag} {}: folder {} is not writable",
                path.display(),
                folder.display()
            )
        })?;
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {flag} {}", path.display()))?;
    }
    Ok(())
}

/// Opens the `--metrics` file of a run that starts after `start_epoch`
/// epochs: a new file for a new run; for a resumed run, the existing file
/// cut back to its first `start_epoch` epochs (a run killed after writing a
/// line but before saving the checkpoint would otherwise repeat an epoch),
/// to be appended to, so that `convnet plot` shows the whole run.
pub fn open_metrics(path: &Path, start_epoch: usize) -> anyhow::Result<File> {
    let context = || format!("cannot write metrics file {}", path.display());
    if start_epoch == 0 || !path.exists() {
        return File::create(path).with_context(context);
    }
    let kept: Vec<String> = BufReader::new(File::open(path).with_context(context)?)
        .lines()
        .map_while(Result::ok)
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("epoch").and_then(serde_json::Value::as_u64))
                .is_some_and(|epoch| epoch as usize <= start_epoch)
        })
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    convnet::checkpoint::write_atomically(path, text.as_bytes())?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(context)
}
