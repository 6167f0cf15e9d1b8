//! `convnet bench`: training and inference images per second of a network on
//! its own input size (1×28×28 except alexnet's 3×227×227), measured on random
//! images (speed does not depend on the pixels), with the GFLOP/s they
//! amount to and that figure as a share of this machine's single-precision
//! GEMM throughput, measured in the same run on a large square product.
//!
//! A training step is counted as three forward passes (forward, and the two
//! products of backward), the usual convention. `--json` prints one JSON
//! object per network instead of the table (the PyTorch comparison in
//! `benches/compare/` reads it). `--scaling` adds the training step's
//! speed-up from one thread to all of them (`bench_scaling.rs`).

use crate::summary::default_shape;
use clap::Args;
use convnet::kernels::gemm::{matmul, MatMut, MatRef};
use convnet::networks::{build_model_within, plan_model, summary::summarize, ModelOptions, Usage};
use convnet::optim::{build, OptimizerKind};
use convnet::{Rng, Tensor};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// simple, lenet5, alexnet, alexnet-small, deep, or a spec; repeat the
    /// flag to measure several networks in one run.
    #[arg(long, default_value = "simple")]
    model: Vec<String>,
    /// Training batch size.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Inference batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    inference_batches: Vec<usize>,
    /// Seconds to measure each figure for (after a warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Worker threads. Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object per network (and one for the GEMM) instead of text.
    #[arg(long)]
    json: bool,
    /// Also print the time of each layer's forward and backward in the
    /// training step, and of its forward per image at each inference batch size.
    #[arg(long)]
    layers: bool,
    /// Also measure the training step's speed-up from 1 thread to
    /// `--threads` (default: all cores), the two taking turns of about
    /// 0.2 s in this process.
    #[arg(long)]
    scaling: bool,
    #[command(flatten)]
    reference: crate::ReferenceFlag,
    #[command(flatten)]
    memory: crate::memory::MemoryArgs,
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

/// The process's peak resident memory (VmHWM) in MB, where the OS reports it.
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

fn peak_memory() -> String {
    peak_memory_mb().map_or_else(|| "unknown".into(), |mb| format!("{mb:.0} MB"))
}

/// GFLOP/s of one large square f32 product on the whole thread pool: the
/// yardstick the networks' figures are compared with.
fn gemm_gflops(seconds: f64) -> anyhow::Result<f64> {
    const SIZE: usize = 1024;
    let a = vec![1.0f32; SIZE * SIZE];
    let b = vec![0.5f32; SIZE * SIZE];
    let mut c = vec![0.0f32; SIZE * SIZE];
    let calls = rate(seconds, || {
        matmul(
            MatMut::new(&mut c, SIZE, SIZE),
            MatRef::new(&a, SIZE, SIZE),
            MatRef::new(&b, SIZE, SIZE),
            false,
            true,
        );
        Ok(())
    })?;
    Ok(calls * 2.0 * (SIZE * SIZE * SIZE) as f64 / 1e9)
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    crate::set_threads(args.threads)?;
    anyhow::ensure!(args.batch_size >= 1, "batch size must be at least 1");
    anyhow::ensure!(
        args.inference_batches.iter().all(|&b| b >= 1),
        "inference batch sizes must be at least 1"
    );
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 0.0,
        "--seconds must be a number of seconds, got {}",
        args.seconds
    );
    // Every model's sizes, for the training batch and the largest inference
    // batch, before any time is spent measuring.
    for model in &args.model {
        let (shape, classes) = default_shape(model);
        let plan = plan_model(model, &ModelOptions::default(), shape, classes)?;
        let largest = args.inference_batches.iter().copied().max().unwrap_or(1);
        let f32_bytes = std::mem::size_of::<f32>();
        let limit = args.memory.limit();
        plan.check_memory(&Usage::training(args.batch_size, 2), limit, f32_bytes)?;
        plan.check_memory(&Usage::inference(largest), limit, f32_bytes)?;
    }
    let threads = rayon::current_num_threads();
    let peak = gemm_gflops(args.seconds.min(2.0))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"gemm": {"size": 1024, "threads": threads, "gflops": peak}})
        );
    } else {
        println!("{threads} threads; f32 GEMM 1024×1024×1024: {peak:.1} GFLOP/s (the yardstick)");
    }
    convnet::parallel::run_fast(args.threads, || -> anyhow::Result<()> {
        for model in &args.model {
            bench_model(model, &args, peak)?;
        }
        Ok(())
    })??;
    if !args.json {
        println!("peak memory: {}", peak_memory());
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_model(model: &str, args: &BenchArgs, gemm_peak: f64) -> anyhow::Result<()> {
    let mut rng = Rng::new(0);
    let (shape, classes) = default_shape(model);
    let options = ModelOptions::default();
    let mut net = build_model_within::<f32>(
        model,
        &options,
        shape,
        classes,
        &mut rng,
        args.memory.limit(),
    )?;
    args.reference.apply(&mut net);
    let flops = summarize(&mut net)?.total_flops as f64;
    let mut optimizer = build::<f32>(OptimizerKind::Adam, None);
    let text = !args.json;
    if text {
        println!(
            "\n{model}{} on {shape:?}, {:.1} MFLOP per image forward, {:.0} s per figure",
            args.reference.note(),
            flops / 1e6,
            args.seconds,
        );
    }
    let (x, labels) = random_batch(args.batch_size, shape, classes, &mut rng)?;
    let passes = rate(args.seconds, || {
        net.gradient(&x, &labels)?;
        Ok(())
    })?;
    if text {
        println!(
            "forward+backward (batch {:>4}): {:>9.1} ms per pass, peak memory so far {}",
            args.batch_size,
            1e3 / passes,
            peak_memory()
        );
    }
    if args.layers && text {
        print_layer_times(&mut net, &x, &labels, passes, args.seconds)?;
    }
    let steps = rate(args.seconds, || {
        net.gradient(&x, &labels)?;
        optimizer.step(&mut net.params());
        Ok(())
    })?;
    let train_images = steps * args.batch_size as f64;
    let train_gflops = 3.0 * flops * train_images / 1e9;
    if text {
        println!(
            "training  (batch {:>4}): {:>9.0} images/s  {:>6.1} GFLOP/s  {:>4.0} % of GEMM",
            args.batch_size,
            train_images,
            train_gflops,
            100.0 * train_gflops / gemm_peak
        );
    }
    let scaling = if args.scaling {
        let batch = (&x, &labels[..]);
        let scaling = crate::bench_scaling::measure(
            model,
            &args.reference,
            shape,
            classes,
            batch,
            args.seconds,
        )?;
        if text {
            println!("{}", scaling.line(args.batch_size));
        }
        Some(scaling.json())
    } else {
        None
    };
    let mut inference = Vec::new();
    for &batch in &args.inference_batches {
        let (x, _) = random_batch(batch, shape, classes, &mut rng)?;
        // Below one image per thread, `predict` shares each image out within
        // a team (convnet::parallel::team); one team for the whole measurement keeps
        // its helper spinning between calls, as OpenMP's threads do.
        // How far apart the cores are decides what sharing one image is
        // worth (convnet::parallel::team), and a virtual machine's host may
        // move them: the figure goes beside the batch-1 result.
        let round_trip = convnet::parallel::team::is_small_batch(batch)
            .then(convnet::parallel::team::measure_round_trip)
            .flatten();
        let calls = convnet::parallel::team::with_team_if_small_batch(batch, || {
            rate(args.seconds, || {
                net.predict(&x, false)?;
                Ok(())
            })
        })?;
        let images = calls * batch as f64;
        let gflops = flops * images / 1e9;
        if text {
            let cores = round_trip.map_or(String::new(), |t| {
                let distance = if t > convnet::parallel::team::DISTANT_ROUND_TRIP {
                    "distant"
                } else {
                    "near"
                };
                format!("  (cores {distance}: {} ns round trip)", t.as_nanos())
            });
            println!(
                "inference (batch {batch:>4}): {images:>9.0} images/s  {gflops:>6.1} GFLOP/s  {:>4.0} % of GEMM{cores}",
                100.0 * gflops / gemm_peak
            );
        }
        if args.layers && text {
            print_inference_layer_times(&mut net, &x, calls, args.seconds)?;
        }
        inference.push(serde_json::json!({
            "batch": batch, "images_per_s": images, "gflops": gflops,
            "cross_core_round_trip_ns": round_trip.map(|t| t.as_nanos() as u64),
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": model,
                "reference_layers": args.reference.on,
                "input_shape": shape,
                "threads": rayon::current_num_threads(),
                "forward_mflop_per_image": flops / 1e6,
                "forward_backward_ms": 1e3 / passes,
                "train": {
                    "batch": args.batch_size,
                    "images_per_s": train_images,
                    "gflops": train_gflops,
                    "share_of_gemm": train_gflops / gemm_peak,
                },
                "inference": inference,
                "scaling": scaling,
                "peak_rss_mb": peak_memory_mb(),
            })
        );
    }
    Ok(())
}

/// A table of each layer's share of a forward+backward pass.
fn print_layer_times(
    net: &mut convnet::networks::Network<f32>,
    x: &Tensor<f32>,
    labels: &[usize],
    passes_per_second: f64,
    seconds: f64,
) -> anyhow::Result<()> {
    let steps = ((passes_per_second * seconds) as usize).max(3);
    let times = net.profile(x, labels, steps)?;
    let total: f64 = times
        .iter()
        .map(|t| (t.forward + t.backward).as_secs_f64())
        .sum();
    println!("  layer              kind                forward ms  backward ms  share");
    for t in &times {
        let (forward, backward) = (t.forward.as_secs_f64(), t.backward.as_secs_f64());
        println!(
            "  {:<18} {:<18} {:>10.3} {:>12.3} {:>5.1} %",
            t.name,
            t.kind,
            1e3 * forward / steps as f64,
            1e3 * backward / steps as f64,
            100.0 * (forward + backward) / total
        );
    }
    Ok(())
}

/// A table of each layer's share of an inference forward, per image.
fn print_inference_layer_times(
    net: &mut convnet::networks::Network<f32>,
    x: &Tensor<f32>,
    calls_per_second: f64,
    seconds: f64,
) -> anyhow::Result<()> {
    let passes = ((calls_per_second * seconds) as usize).max(3);
    let images = (passes * x.shape()[0]) as f64;
    let times = net.profile_inference(x, passes)?;
    let total: f64 = times.iter().map(|t| t.forward.as_secs_f64()).sum();
    println!("  layer              kind               µs per image  share");
    for t in times.iter().filter(|t| !t.forward.is_zero()) {
        let forward = t.forward.as_secs_f64();
        println!(
            "  {:<18} {:<18} {:>12.1} {:>5.1} %",
            t.name,
            t.kind,
            1e6 * forward / images,
            100.0 * forward / total
        );
    }
    Ok(())
}
