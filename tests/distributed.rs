//! `convnet train` under `mpirun` (feature `mpi`; loopback only): the same
//! checkpoint, byte for byte, from 1, 2 and 4 ranks as from one process with
//! the same shards; a killed rank or a rank with bad input ends the job
//! without hanging, naming the rank.
//!
//! `cargo test --features mpi --test distributed` (needs Open MPI's `mpirun`;
//! `.ci/run` installs it). As root, and with more ranks than cores, mpirun
//! needs `--allow-run-as-root` and `--oversubscribe`, which every run here
//! passes.
#![cfg(feature = "mpi")]

mod common;

use common::{idx_images, idx_labels, TempDir};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Writes `train` + `test` of the embedded MNIST digits into `dir` as the
/// four raw IDX files `--data` reads.
fn write_digits(dir: &Path, train: usize, test: usize) {
    let digits = convnet::data::load_embedded_mnist10k().unwrap();
    let files = |set: &convnet::data::Dataset, count: usize| {
        let set = set.subset(count);
        let pixels: Vec<u8> = set
            .pixels
            .floats(0..set.pixels.len())
            .iter()
            .map(|&v| (v * 255.0).round() as u8)
            .collect();
        (idx_images(count, 28, 28, &pixels), idx_labels(&set.labels))
    };
    let (train_images, train_labels) = files(&digits.train, train);
    let (test_images, test_labels) = files(&digits.test, test);
    for (name, bytes) in [
        ("train-images-idx3-ubyte", train_images),
        ("train-labels-idx1-ubyte", train_labels),
        ("t10k-images-idx3-ubyte", test_images),
        ("t10k-labels-idx1-ubyte", test_labels),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// One job at a time: the tests' jobs would otherwise share the cores.
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `mpirun -n ranks convnet …` on this machine, over loopback.
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args([
            "--mca",
            "btl",
            "self,tcp",
            "--mca",
            "btl_tcp_if_include",
            "lo",
        ])
        .args(["-n", &ranks.to_string(), env!("CARGO_BIN_EXE_convnet")]);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// One epoch of `model`, in one process with 4 shards and under mpirun with
/// 1, 2 and 4 ranks: the four checkpoints are the same bytes.
fn same_checkpoint_from_every_rank_count(model: &str, train: usize) {
    let _job = one_job();
    let dir = TempDir::new("distributed");
    write_digits(dir.path(), train, 100);
    let data = dir.path().to_str().unwrap().to_string();
    let train_args = |save: &Path| -> Vec<String> {
        [
            "train",
            "--model",
            model,
            "--data",
            &data,
            "--epochs",
            "1",
            "--batch-size",
            "40",
            "--threads",
            "1",
            "--seed",
            "3",
            "--save",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([save.to_str().unwrap().to_string()])
        .collect()
    };
    let alone = dir.join("alone.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(train_args(&alone))
        .args(["--shards", "4"])
        .output()
        .unwrap();
    succeeded(out, "one process");
    let expected = std::fs::read(&alone).unwrap();
    // Two shards add in another order: other bytes, so the comparison can fail.
    let two_shards = dir.join("two-shards.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(train_args(&two_shards))
        .args(["--shards", "2"])
        .output()
        .unwrap();
    succeeded(out, "one process, 2 shards");
    assert_ne!(std::fs::read(&two_shards).unwrap(), expected, "{model}");
    for ranks in [1, 2, 4] {
        let save = dir.join(&format!("ranks-{ranks}.safetensors"));
        let out = mpirun(ranks).args(train_args(&save)).output().unwrap();
        let stdout = succeeded(out, &format!("mpirun -n {ranks}"));
        // Rank 0 alone prints: one line per epoch.
        assert_eq!(stdout.matches("epoch  1/1").count(), 1, "{stdout}");
        if ranks > 1 {
            assert!(stdout.contains("bytes sent per step"), "{stdout}");
        }
        assert!(
            std::fs::read(&save).unwrap() == expected,
            "{model}: {ranks} ranks saved other weights than one process"
        );
    }
}

#[test]
fn simple_convnet_trains_the_same_on_1_2_and_4_ranks() {
    same_checkpoint_from_every_rank_count("simple", 400);
}

/// DeepConvNet has dropout: its masks are drawn per shard.
#[test]
fn deep_convnet_with_dropout_trains_the_same_on_1_2_and_4_ranks() {
    same_checkpoint_from_every_rank_count("deep", 160);
}

/// Batch norm's statistics are per shard and its running averages follow
/// shard 0: the tolerance is zero, the same bytes.
#[test]
fn batch_norm_trains_the_same_on_1_2_and_4_ranks() {
    same_checkpoint_from_every_rank_count(
        "conv(8,5)-bn-relu-maxpool(2)-affine(32)-bn-relu-affine(10)",
        400,
    );
}

/// A run resumed under mpirun continues as one process with the same
/// shards: 1 epoch on 2 ranks, then `--resume` to 2 epochs on 2 ranks, ends
/// with the weights of 2 epochs in one process.
#[test]
fn a_run_resumed_under_mpirun_ends_as_one_process() {
    let _job = one_job();
    let dir = TempDir::new("distributed-resume");
    write_digits(dir.path(), 200, 50);
    let data = dir.path().to_str().unwrap();
    let common = [
        "train",
        "--data",
        data,
        "--batch-size",
        "25",
        "--threads",
        "1",
    ];
    let alone = dir.join("alone.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(common)
        .args(["--epochs", "2", "--shards", "4", "--save"])
        .arg(&alone)
        .output()
        .unwrap();
    succeeded(out, "one process, 2 epochs");
    let resumed = dir.join("resumed.safetensors");
    let out = mpirun(2)
        .args(common)
        .args(["--epochs", "1", "--save"])
        .arg(&resumed)
        .output()
        .unwrap();
    succeeded(out, "mpirun -n 2, epoch 1");
    let out = mpirun(2)
        .args(common)
        .args(["--epochs", "2", "--resume"])
        .arg(&resumed)
        .output()
        .unwrap();
    let stdout = succeeded(out, "mpirun -n 2, resumed to epoch 2");
    assert!(stdout.contains("epoch  2/2"), "{stdout}");
    let (expected, got) = (common::weights(&alone), common::weights(&resumed));
    assert!(expected == got, "the resumed run's weights differ");
}

/// The process ids of `mpirun`'s ranks on this machine, by rank (from
/// OMPI_COMM_WORLD_RANK in each child's environment).
fn rank_pids(mpirun: u32) -> Vec<(usize, u32)> {
    let mut ranks = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the name's closing ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent != Some(mpirun) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in environ.split(|&b| b == 0) {
            if let Some(rank) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                if let Ok(rank) = text(rank).parse() {
                    ranks.push((rank, pid));
                }
            }
        }
    }
    ranks
}

/// Waits for `child` to end, at most `limit`; kills it (and fails) if it
/// does not.
fn wait_at_most(child: &mut Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the job still runs {limit:?} after the rank was lost");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    let mut stdout = String::new();
    use std::io::Read;
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// A 2-rank training job of many epochs on `data`, saving to `save`, with
/// its output piped; `timeout` sets CONVNET_MPI_TIMEOUT (ranks started on
/// this machine inherit mpirun's environment).
fn long_job(data: &Path, save: &Path, timeout: Option<&str>) -> Child {
    let mut job = mpirun(2);
    if let Some(seconds) = timeout {
        job.env("CONVNET_MPI_TIMEOUT", seconds);
    }
    job.args(["train", "--data", data.to_str().unwrap()])
        .args(["--epochs", "1000", "--batch-size", "20", "--threads", "1"])
        .arg("--save")
        .arg(save)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (2 minutes at most) for the job's first checkpoint; the job must
/// still be running.
fn wait_for_checkpoint(child: &mut Child, save: &Path) {
    let start = Instant::now();
    while !save.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process id of rank 1 of the job `child` runs.
fn rank_1_pid(child: &Child) -> u32 {
    let ranks = rank_pids(child.id());
    ranks
        .iter()
        .find(|(rank, _)| *rank == 1)
        .unwrap_or_else(|| panic!("rank 1 not found among {ranks:?}"))
        .1
}

#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_stays_good() {
    let _job = one_job();
    let dir = TempDir::new("distributed-kill");
    write_digits(dir.path(), 200, 50);
    let save = dir.join("run.safetensors");
    let mut child = long_job(dir.path(), &save, None);
    // Mid-run: after the first checkpoint, during a later epoch.
    wait_for_checkpoint(&mut child, &save);
    std::thread::sleep(Duration::from_millis(300));
    let victim = rank_1_pid(&child);
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Ended within 10 s, not hung; a failure, naming the rank.
    let out = wait_at_most(&mut child, Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("rank 1"), "{stderr}");
    // The last checkpoint loads and evaluates.
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args([
            "eval",
            "--data",
            dir.path().to_str().unwrap(),
            "--checkpoint",
        ])
        .arg(&save)
        .output()
        .unwrap();
    let report = succeeded(out, "eval of the last checkpoint");
    assert!(report.contains("accuracy"), "{report}");
}

/// A rank that stops answering without dying (SIGSTOP: a hung host): after
/// CONVNET_MPI_TIMEOUT seconds its partner names it and ends the job.
#[test]
fn a_silent_rank_is_named_and_ends_the_job() {
    let _job = one_job();
    let dir = TempDir::new("distributed-silent");
    write_digits(dir.path(), 200, 50);
    let save = dir.join("run.safetensors");
    let mut child = long_job(dir.path(), &save, Some("2"));
    wait_for_checkpoint(&mut child, &save);
    let victim = rank_1_pid(&child);
    let stopped = Command::new("kill")
        .args(["-STOP", &victim.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let out = wait_at_most(&mut child, Duration::from_secs(30));
    // mpirun's clean-up kills the stopped rank too; make sure of it.
    let _ = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("convnet: rank 0: rank 1 did not answer within 2 s"),
        "{stderr}"
    );
}

/// Rank 1's data folder is missing (another host without the data): the job
/// ends with rank 1's message instead of waiting for it.
#[test]
fn bad_input_on_one_rank_ends_the_job_with_its_message() {
    let _job = one_job();
    let dir = TempDir::new("distributed-missing");
    write_digits(dir.path(), 100, 20);
    let missing = dir.join("not-here");
    let train = |data: &Path| -> Vec<String> {
        ["train", "--epochs", "1", "--threads", "1", "--data"]
            .iter()
            .map(|s| s.to_string())
            .chain([data.to_str().unwrap().to_string()])
            .collect()
    };
    // MPMD: rank 0 with the data, rank 1 without.
    let mut child = mpirun(1)
        .args(train(dir.path()))
        .args([":", "-n", "1", env!("CARGO_BIN_EXE_convnet")])
        .args(train(&missing))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_at_most(&mut child, Duration::from_secs(60));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("convnet: rank 1: error:"), "{stderr}");
    assert!(stderr.contains("not-here"), "{stderr}");
}
