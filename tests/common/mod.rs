//! Helpers shared by the integration tests.
// Each test crate uses only some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder under the system temporary directory, removed (with
/// everything in it) when dropped, also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "convnet-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the `convnet` binary with `args` followed by `files`, asserts that
/// it succeeds, and returns its standard output.
pub fn convnet_ok(args: &[&str], files: &[&Path]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_convnet"));
    command.args(args);
    for f in files {
        command.arg(f);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the `convnet` binary with `args` followed by `files`, asserts that
/// it fails cleanly — a non-zero exit code (not a signal) and exactly one
/// line on stderr, `convnet: error: ...`, no panic and no backtrace — and
/// returns that line.
pub fn convnet_fails(args: &[&str], files: &[&Path]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_convnet"));
    // No progress lines, however slow the machine: stderr is the error alone.
    command.env("CONVNET_PROGRESS_SECONDS", "100000");
    command.args(args);
    for f in files {
        command.arg(f);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let context = format!(
        "convnet {} {files:?}\nexit status: {:?}\n--- stdout ---\n{}--- stderr ---\n{stderr}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "expected a non-zero exit code (not a signal):\n{context}"
    );
    let lower = stderr.to_lowercase();
    assert!(!lower.contains("panicked"), "panic on stderr:\n{context}");
    assert!(
        !lower.contains("backtrace"),
        "backtrace on stderr:\n{context}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr:\n{context}");
    assert!(
        lines[0].starts_with("convnet: error: "),
        "stderr does not start with 'convnet: error: ':\n{context}"
    );
    lines[0].to_string()
}

/// A raw IDX image file (magic 0x0803): `count` images of `rows × cols`
/// bytes, `pixels` image after image.
pub fn idx_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + pixels.len());
    for word in [0x0000_0803u32, count as u32, rows as u32, cols as u32] {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

/// A raw IDX label file (magic 0x0801).
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + labels.len());
    for word in [0x0000_0801u32, labels.len() as u32] {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    bytes.extend_from_slice(labels);
    bytes
}

/// Every parameter of the checkpoint at `path`, by name, flattened, in order.
pub fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let (mut net, _) = convnet::checkpoint::load(path).unwrap();
    let names = net.param_names();
    names
        .into_iter()
        .zip(net.params())
        .map(|(n, p)| (n, p.value.data().to_vec()))
        .collect()
}
