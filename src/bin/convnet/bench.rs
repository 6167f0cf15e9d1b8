//! `convnet bench`: training and inference images per second of SimpleConvNet
//! on 28×28 input, measured on random images (speed does not depend on the pixels).

use clap::Args;
use convnet::networks::{build_model, ModelOptions};
use convnet::optim::{build, OptimizerKind};
use convnet::{Rng, Tensor};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "simple")]
    model: String,
    /// Training batch size.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Seconds to measure each figure for (after a warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `step` repeatedly for about `seconds`; returns calls per second.
fn rate(seconds: f64, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..3 {
        step()?;
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 5 || start.elapsed().as_secs_f64() < seconds {
        step()?;
        calls += 1;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    crate::set_threads(args.threads)?;
    anyhow::ensure!(args.batch_size >= 1, "batch size must be at least 1");
    let mut rng = Rng::new(0);
    let shape = [1, 28, 28];
    let mut net = build_model::<f32>(&args.model, &ModelOptions::default(), shape, 10, &mut rng)?;
    let mut optimizer = build::<f32>(OptimizerKind::Adam, None);
    let random_batch = |n: usize, rng: &mut Rng| -> anyhow::Result<(Tensor<f32>, Vec<usize>)> {
        let x: Vec<f32> = (0..n * 784).map(|_| rng.uniform() as f32).collect();
        let labels = (0..n).map(|_| rng.below(10)).collect();
        Ok((Tensor::from_vec(&[n, 1, 28, 28], x)?, labels))
    };
    println!(
        "{} on 1x28x28, {} threads, {:.0} s per figure",
        args.model,
        rayon::current_num_threads(),
        args.seconds
    );
    let (x, labels) = random_batch(args.batch_size, &mut rng)?;
    let steps = rate(args.seconds, || {
        net.gradient(&x, &labels)?;
        optimizer.step(&mut net.params());
        Ok(())
    })?;
    println!(
        "training  (batch {:>4}): {:>9.0} images/s",
        args.batch_size,
        steps * args.batch_size as f64
    );
    for batch in [1, 100, 1000] {
        let (x, _) = random_batch(batch, &mut rng)?;
        let calls = rate(args.seconds, || {
            net.predict(&x, false)?;
            Ok(())
        })?;
        println!(
            "inference (batch {batch:>4}): {:>9.0} images/s",
            calls * batch as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}
