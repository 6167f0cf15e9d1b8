//! `convnet train` and `convnet eval`.

use crate::data::DataArgs;
use anyhow::Context;
use clap::Args;
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::init::Init;
use convnet::networks::{build_model, model_info, ModelOptions};
use convnet::optim::build;
use convnet::optim::OptimizerKind;
use convnet::train::{
    evaluate, train_with_optimizer, EpochMetrics, Evaluation, Progress, TrainConfig,
};
use convnet::Rng;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TrainArgs {
    /// The network: simple (the book's SimpleConvNet), lenet5, alexnet,
    /// alexnet-small, deep, or a spec such as
    /// 'conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)'.
    #[arg(long, default_value = "simple")]
    model: String,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs in all: each one trains on every training image once, in a
    /// new shuffled order, then measures the test set.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Images per mini-batch (one gradient step each).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// sgd, momentum, nesterov, adagrad, rmsprop or adam.
    #[arg(long, default_value = "adam")]
    optimizer: OptimizerKind,
    /// Learning rate. Default: the optimizer's default from the book
    /// (0.001 for adam, 0.01 for the others), except adam on alexnet-small: 0.0005.
    #[arg(long)]
    lr: Option<f64>,
    /// Weight initialisation: he (N(0, 2/fan_in)), xavier (N(0, 1/fan_in)),
    /// std (the book's N(0, 0.01²)) or std:SIGMA. Default: he, except xavier
    /// for lenet5.
    #[arg(long)]
    init: Option<Init>,
    /// Activation of lenet5 (default sigmoid), alexnet, alexnet-small and deep
    /// (default relu): relu, sigmoid or tanh.
    #[arg(long)]
    activation: Option<String>,
    /// SimpleConvNet: number of filters of the convolution (default 30).
    #[arg(long)]
    filters: Option<usize>,
    /// SimpleConvNet: filter height and width (default 5).
    #[arg(long)]
    filter_size: Option<usize>,
    /// SimpleConvNet: convolution stride (default 1).
    #[arg(long)]
    stride: Option<usize>,
    /// SimpleConvNet: convolution zero padding (default 0).
    #[arg(long)]
    pad: Option<usize>,
    /// SimpleConvNet: size of the hidden affine layer (default 100).
    #[arg(long)]
    hidden_size: Option<usize>,
    /// Seed for weights and shuffling: the same seed and threads give the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads. Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Write one JSON object per epoch to this file (replacing it).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Save the weights (safetensors) to this file after every epoch,
    /// through a temporary file and a rename; the optimizer's state goes
    /// beside it (NAME.optim.safetensors).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (and its .optim file) up to
    /// --epochs in all; with the same seed and threads it ends with the same
    /// weights as an uninterrupted run. Saves back to it unless --save says
    /// otherwise. The model options come from the checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint written by `convnet train --save`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Images per forward pass: more takes more memory.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Worker threads. Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Also draw the confusion matrix as a PNG heat-map (640×640 pixels):
    /// class names on the axes, counts in the cells, colour by share of the
    /// true class.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn metrics_json(m: &EpochMetrics) -> String {
    serde_json::json!({
        "epoch": m.epoch,
        "train_loss": m.train_loss,
        "train_acc": m.train_acc,
        "test_loss": m.test_loss,
        "test_acc": m.test_acc,
        "seconds": m.seconds,
        "images_per_second": m.images_per_second,
    })
    .to_string()
}

fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    format!(
        "epoch {:>2}/{epochs}  train loss {:.4}  train acc {:6.2}%  test acc {:6.2}%  ({:.2} s, {:.0} img/s)",
        m.epoch,
        m.train_loss,
        100.0 * m.train_acc,
        100.0 * m.test_acc,
        m.seconds,
        m.images_per_second
    )
}

/// How often [`PlainProgress`] writes a line: every
/// `CONVNET_PROGRESS_SECONDS` seconds (a number ≥ 0; 0: after every batch),
/// else every 5 seconds.
fn progress_interval() -> Duration {
    std::env::var("CONVNET_PROGRESS_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

/// Training progress as lines of text on stderr, when it is not a terminal
/// (a log file): `epoch 3/15: 4,000/8,004 images, loss 0.213` (the mean
/// loss of the epoch so far) at most once per `every`, never at the end of
/// an epoch (its own line follows).
struct PlainProgress {
    every: Duration,
    /// When the last line (progress or epoch) was written.
    last: Instant,
    /// Training images per epoch.
    images: usize,
    batch_size: usize,
    epochs: usize,
    /// The epoch's loss so far, summed over its images, and their number.
    loss_sum: f64,
    seen: usize,
}

impl PlainProgress {
    fn batch(&mut self, epoch: usize, done: usize, total: usize, loss: f64) {
        if done == 1 {
            (self.loss_sum, self.seen) = (0.0, 0);
        }
        let seen = (done * self.batch_size).min(self.images);
        self.loss_sum += loss * (seen - self.seen) as f64;
        self.seen = seen;
        if done < total && self.last.elapsed() >= self.every {
            eprintln!(
                "epoch {epoch}/{}: {}/{} images, loss {:.3}",
                self.epochs,
                thousands(seen),
                thousands(self.images),
                self.loss_sum / seen.max(1) as f64
            );
            self.last = Instant::now();
        }
    }
}

/// `n` with a comma between thousands: 8,004.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub fn run_train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    // The library's `train_with_optimizer` runs on this pool, its workers
    // kept awake (`convnet::parallel::run_fast`).
    crate::set_threads(args.threads)?;
    // Without --lr: the model's Adam rate (0.0005 for alexnet-small, which
    // is unstable at 0.001), else the optimizer's book default.
    let learning_rate = args.lr.or_else(|| {
        model_info(&args.model)
            .filter(|_| args.optimizer == OptimizerKind::Adam)
            .map(|m| m.adam_learning_rate)
    });
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: args.optimizer,
        learning_rate,
        seed: args.seed,
        start_epoch: 0,
        threads: args.threads,
    };
    config.validate()?;
    let data = args.data.load()?;
    let input_shape = data.train.input_shape();
    let classes = data.class_names.len();
    let simple_only = [
        ("--filters", args.filters.is_some()),
        ("--filter-size", args.filter_size.is_some()),
        ("--stride", args.stride.is_some()),
        ("--pad", args.pad.is_some()),
        ("--hidden-size", args.hidden_size.is_some()),
    ];
    if let Some((flag, _)) = simple_only.iter().find(|(_, set)| *set) {
        anyhow::ensure!(
            args.model == "simple" && args.resume.is_none(),
            "{flag} applies to --model simple only (a spec states its own sizes; a resumed run keeps its model)"
        );
    }
    anyhow::ensure!(
        args.activation.is_none() || model_info(&args.model).is_some(),
        "--activation applies to lenet5, alexnet, alexnet-small and deep only"
    );
    let mut rng = Rng::new(args.seed);
    let mut config = config;
    let (mut net, mut info, optimizer_state) = match &args.resume {
        Some(path) => {
            let (net, info) = checkpoint::load(path)?;
            let done: usize = info
                .extra
                .get("epoch")
                .and_then(|e| e.parse().ok())
                .with_context(|| format!("{}: no epoch count in its metadata", path.display()))?;
            let optim_path = checkpoint::optimizer_path(path);
            let (optim_epoch, state) = checkpoint::load_optimizer_state(&optim_path)?;
            anyhow::ensure!(
                optim_epoch == done,
                "{} is from epoch {optim_epoch} but {} from epoch {done}",
                optim_path.display(),
                path.display()
            );
            anyhow::ensure!(
                info.input_shape == input_shape,
                "the checkpoint's model takes {:?} images, {} has {:?}",
                info.input_shape,
                data.name,
                input_shape
            );
            config.start_epoch = done;
            (net, info, Some(state))
        }
        None => {
            let options = ModelOptions {
                // The book's SimpleConvNet uses std; He trains it faster (see README).
                init: args.init.or((args.model == "simple").then_some(Init::He)),
                filters: args.filters,
                filter_size: args.filter_size,
                stride: args.stride,
                pad: args.pad,
                hidden_size: args.hidden_size,
                activation: args.activation.clone(),
            };
            let net = build_model::<f32>(&args.model, &options, input_shape, classes, &mut rng)?;
            let info = CheckpointInfo {
                model: args.model.clone(),
                options,
                input_shape,
                class_names: data.class_names.clone(),
                // `visualize filters --compare` rebuilds the untrained
                // network from it.
                extra: BTreeMap::from([("seed".to_string(), args.seed.to_string())]),
            };
            (net, info, None)
        }
    };
    let mut optimizer = build::<f32>(config.optimizer, config.learning_rate);
    if let Some(state) = &optimizer_state {
        optimizer.load_state(state)?;
    }
    let save_path = args.save.clone().or(args.resume.clone());
    if let Some(path) = &save_path {
        // Fail now, not after the first epoch's work.
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        anyhow::ensure!(
            folder.is_dir(),
            "cannot save to {}: folder {} does not exist",
            path.display(),
            folder.display()
        );
    }
    let mut metrics_file = match &args.metrics {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create metrics file {}", path.display()))?,
        ),
        None => None,
    };
    println!(
        "training {} ({} parameters) on {}: {} train / {} test images {:?}, {} epochs, batch {}, {} lr {}, {} threads",
        info.model,
        net.num_params(),
        data.name,
        data.train.len(),
        data.test.len(),
        input_shape,
        args.epochs,
        args.batch_size,
        args.optimizer,
        learning_rate.unwrap_or(args.optimizer.default_learning_rate()),
        rayon::current_num_threads()
    );

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let epochs = args.epochs;
    // Without a terminal for the bar: a line of text now and then, so that
    // a log file shows that a long epoch is under way.
    let mut plain = bar.is_none().then(|| PlainProgress {
        every: progress_interval(),
        last: Instant::now(),
        images: data.train.len(),
        batch_size: args.batch_size,
        epochs,
        loss_sum: 0.0,
        seen: 0,
    });
    let history = train_with_optimizer(
        &mut net,
        optimizer.as_mut(),
        &data,
        &config,
        |event, net, optimizer| {
            match event {
                Progress::Batch {
                    epoch,
                    done,
                    total,
                    loss,
                } => {
                    if let Some(bar) = &bar {
                        if done == 1 {
                            bar.set_length(total as u64);
                            bar.set_position(0);
                            bar.set_prefix(format!("{epoch}/{epochs}"));
                        }
                        bar.set_position(done as u64);
                        bar.set_message(format!("loss {loss:.4}"));
                    }
                    if let Some(plain) = plain.as_mut() {
                        plain.batch(epoch, done, total, loss);
                    }
                }
                Progress::Epoch(m) => {
                    if let Some(plain) = plain.as_mut() {
                        plain.last = Instant::now();
                    }
                    let line = epoch_line(m, epochs);
                    match &bar {
                        Some(bar) => bar.println(line),
                        None => println!("{line}"),
                    }
                    if let Some(file) = metrics_file.as_mut() {
                        writeln!(file, "{}", metrics_json(m)).map_err(|e| {
                            convnet::Error::Data(format!("cannot write metrics: {e}"))
                        })?;
                    }
                    if let Some(path) = &save_path {
                        info.extra.insert("epoch".to_string(), m.epoch.to_string());
                        info.extra.insert("metrics".to_string(), metrics_json(m));
                        let optim_path = checkpoint::optimizer_path(path);
                        checkpoint::save_optimizer_state(&optim_path, m.epoch, &optimizer.state())?;
                        checkpoint::save(net, &info, path)?;
                    }
                }
            }
            Ok(())
        },
    )?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(path) = &save_path {
        println!("saved {}", path.display());
    }
    match history.last() {
        Some(m) => println!(
            "test accuracy: {:.2}% ({} test images, {} epochs, {:.1} s training)",
            100.0 * m.test_acc,
            data.test.len(),
            history.len(),
            history.iter().map(|m| m.seconds).sum::<f64>()
        ),
        None => println!("no epochs run"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_evaluation(eval: &Evaluation, class_names: &[String]) {
    println!("accuracy: {:.2}%", 100.0 * eval.accuracy);
    println!("per class:");
    for (name, acc) in class_names.iter().zip(eval.per_class_accuracy()) {
        match acc {
            Some(a) => println!("  {name:>12}  {:6.2}%", 100.0 * a),
            None => println!("  {name:>12}       -"),
        }
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    for (name, row) in class_names.iter().zip(&eval.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>5}")).collect();
        println!("  {name:>12} {}", cells.join(""));
    }
}

pub fn run_eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.plot {
        crate::drawing::check_png_path(path)?;
    }
    crate::set_threads(args.threads)?;
    let (mut net, info) = checkpoint::load(&args.checkpoint)?;
    let data = args.data.load()?;
    anyhow::ensure!(
        data.test.input_shape() == info.input_shape,
        "the checkpoint's model takes {:?} images, {} has {:?}",
        info.input_shape,
        data.name,
        data.test.input_shape()
    );
    let eval = evaluate(&mut net, &data.test, args.batch_size)?;
    println!(
        "{} on {} ({} test images)",
        info.model,
        data.name,
        data.test.len()
    );
    print_evaluation(&eval, &data.class_names);
    if let Some(path) = &args.plot {
        let title = format!(
            "{} on {}: accuracy {:.2}% of {} images",
            info.model,
            data.name,
            100.0 * eval.accuracy,
            data.test.len()
        );
        crate::confusion_plot::write_confusion_plot(
            &eval.confusion,
            &data.class_names,
            &title,
            path,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_separated_by_commas() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (8004, "8,004"),
            (1234567, "1,234,567"),
        ];
        for (n, text) in cases {
            assert_eq!(thousands(n), text);
        }
    }
}
