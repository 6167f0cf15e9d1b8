//! `convnet bench`: training and inference images per second of a network on
//! its own input size (1×28×28 except alexnet's 3×227×227), measured on random
//! images (speed does not depend on the pixels), with the GFLOP/s they
//! amount to. A training step is counted as three forward passes (forward,
//! and the two products of backward), the usual convention.

use crate::summary::default_shape;
use clap::Args;
use convnet::networks::{build_model, summary::summarize, ModelOptions};
use convnet::optim::{build, OptimizerKind};
use convnet::{Rng, Tensor};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// simple, lenet5, alexnet, alexnet-small, deep, or a spec.
    #[arg(long, default_value = "simple")]
    model: String,
    /// Training batch size.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Inference batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    inference_batches: Vec<usize>,
    /// Seconds to measure each figure for (after a warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `step` repeatedly for about `seconds` (at least 3 times after one
/// warm-up call); returns calls per second.
fn rate(seconds: f64, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    step()?;
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 3 || start.elapsed().as_secs_f64() < seconds {
        step()?;
        calls += 1;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

fn random_batch(
    n: usize,
    shape: [usize; 3],
    classes: usize,
    rng: &mut Rng,
) -> anyhow::Result<(Tensor<f32>, Vec<usize>)> {
    let len = n * shape.iter().product::<usize>();
    let x: Vec<f32> = (0..len).map(|_| rng.uniform() as f32).collect();
    let labels = (0..n).map(|_| rng.below(classes)).collect();
    Ok((
        Tensor::from_vec(&[n, shape[0], shape[1], shape[2]], x)?,
        labels,
    ))
}

/// The process's peak resident memory (VmHWM), where the OS reports it.
fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} MB", kib * 1024.0 / 1e6))
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    crate::set_threads(args.threads)?;
    anyhow::ensure!(args.batch_size >= 1, "batch size must be at least 1");
    let mut rng = Rng::new(0);
    let (shape, classes) = default_shape(&args.model);
    let options = ModelOptions::default();
    let mut net = build_model::<f32>(&args.model, &options, shape, classes, &mut rng)?;
    let flops = summarize(&mut net)?.total_flops as f64;
    let mut optimizer = build::<f32>(OptimizerKind::Adam, None);
    println!(
        "{} on {:?}, {} threads, {:.0} s per figure, {:.1} MFLOP per image forward",
        args.model,
        shape,
        rayon::current_num_threads(),
        args.seconds,
        flops / 1e6
    );
    let (x, labels) = random_batch(args.batch_size, shape, classes, &mut rng)?;
    let passes = rate(args.seconds, || {
        net.gradient(&x, &labels)?;
        Ok(())
    })?;
    println!(
        "forward+backward (batch {:>4}): {:>9.1} ms per pass, peak memory so far {}",
        args.batch_size,
        1e3 / passes,
        peak_memory()
    );
    let steps = rate(args.seconds, || {
        net.gradient(&x, &labels)?;
        optimizer.step(&mut net.params());
        Ok(())
    })?;
    let images = steps * args.batch_size as f64;
    println!(
        "training  (batch {:>4}): {:>9.0} images/s  {:>6.1} GFLOP/s",
        args.batch_size,
        images,
        3.0 * flops * images / 1e9
    );
    for &batch in &args.inference_batches {
        anyhow::ensure!(batch >= 1, "inference batch sizes must be at least 1");
        let (x, _) = random_batch(batch, shape, classes, &mut rng)?;
        let calls = rate(args.seconds, || {
            net.predict(&x, false)?;
            Ok(())
        })?;
        let images = calls * batch as f64;
        println!(
            "inference (batch {batch:>4}): {:>9.0} images/s  {:>6.1} GFLOP/s",
            images,
            flops * images / 1e9
        );
    }
    println!("peak memory: {}", peak_memory());
    Ok(ExitCode::SUCCESS)
}
