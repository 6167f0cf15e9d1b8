//! `convnet train` and `convnet eval`.

use crate::data::DataArgs;
use crate::memory::MemoryArgs;
use anyhow::Context;
use clap::Args;
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::init::Init;
use convnet::networks::{build_model_within, model_info, plan_model, ModelOptions, Usage};
use convnet::optim::OptimizerKind;
use convnet::optim::{build, check_state_fits};
use convnet::train::{
    evaluate, train_with_optimizer, EpochMetrics, Evaluation, Progress, TrainConfig,
};
use convnet::Rng;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct TrainArgs {
    /// The network: simple (the book's SimpleConvNet), lenet5, alexnet,
    /// alexnet-small, deep, or a spec such as
    /// 'conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)'.
    #[arg(long, default_value = "simple")]
    model: String,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value_t = 15)]
    epochs: usize,
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
    #[command(flatten)]
    memory: MemoryArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint written by `convnet train --save`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// Also draw the confusion matrix as a PNG heat-map (640×640 pixels):
    /// class names on the axes, counts in the cells, colour by share of the
    /// true class.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    memory: MemoryArgs,
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

pub fn run_train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    crate::set_threads(args.threads)?;
    crate::on_pool(|| train_on_pool(args))
}

fn train_on_pool(args: TrainArgs) -> anyhow::Result<ExitCode> {
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
    let max_memory = args.memory.limit();
    // The memory training needs: the model, the optimizer's state and a
    // batch's activations (a batch is never larger than the data).
    let training = Usage::training(
        args.batch_size.min(data.train.len().max(1)),
        args.optimizer.state_slots(),
    );
    let f32_bytes = std::mem::size_of::<f32>();
    let (mut net, mut info, optimizer_state) = match &args.resume {
        Some(path) => {
            let (net, info) = checkpoint::load_within(path, max_memory)?;
            plan_model(
                &info.model,
                &info.options,
                info.input_shape,
                info.class_names.len(),
            )?
            .check_memory(&training, max_memory, f32_bytes)?;
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
            anyhow::ensure!(
                info.class_names.len() == classes,
                "the checkpoint's model has {} classes, {} has {classes}",
                info.class_names.len(),
                data.name
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
            // Every size is checked before anything is allocated.
            plan_model(&args.model, &options, input_shape, classes)?
                .check_memory(&training, max_memory, f32_bytes)?;
            let net = build_model_within::<f32>(
                &args.model,
                &options,
                input_shape,
                classes,
                &mut rng,
                max_memory,
            )?;
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
        // A state file from another network, or with impossible values, is
        // an error here rather than a panic in the first step.
        let optim_path =
            checkpoint::optimizer_path(args.resume.as_deref().unwrap_or(Path::new("")));
        let params: Vec<(String, usize)> = net
            .param_names()
            .into_iter()
            .zip(net.params().iter().map(|p| p.value.len()))
            .collect();
        let in_file =
            |e: convnet::Error| anyhow::anyhow!("{}: {}", optim_path.display(), e.detail());
        check_state_fits(state, &params).map_err(in_file)?;
        optimizer.load_state(state).map_err(in_file)?;
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
                }
                Progress::Epoch(m) => {
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
    let max_memory = args.memory.limit();
    let (mut net, info) = checkpoint::load_within(&args.checkpoint, max_memory)?;
    let data = args.data.load()?;
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    plan_model(
        &info.model,
        &info.options,
        info.input_shape,
        info.class_names.len(),
    )?
    .check_memory(
        &Usage::inference(args.batch_size.min(data.test.len().max(1))),
        max_memory,
        std::mem::size_of::<f32>(),
    )?;
    anyhow::ensure!(
        data.test.input_shape() == info.input_shape,
        "the checkpoint's model takes {:?} images, {} has {:?}",
        info.input_shape,
        data.name,
        data.test.input_shape()
    );
    anyhow::ensure!(
        info.class_names.len() == data.class_names.len(),
        "the checkpoint's model has {} classes, {} has {}",
        info.class_names.len(),
        data.name,
        data.class_names.len()
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
