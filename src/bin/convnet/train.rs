//! `convnet train` and `convnet eval`.

use crate::data::DataArgs;
use crate::memory::MemoryArgs;
use clap::Args;
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::init::Init;
use convnet::networks::{build_model_within, model_info, plan_model, ModelOptions, Usage};
use convnet::optim::OptimizerKind;
use convnet::optim::{build, check_state_fits};
use convnet::train::{
    evaluate_with, recipe, train_with_optimizer, Augment, Ema, EpochMetrics, EpochPosition,
    Evaluation, Progress, Schedule, StopFlag, TrainConfig, WeightDecayMode,
};
use convnet::Rng;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TrainArgs {
    /// A named recipe: a network and every training option chosen together
    /// (fashion-fast: Fashion-MNIST, see docs/training.md). It is printed
    /// in full at the start; options given beside it override its values.
    #[arg(long)]
    recipe: Option<String>,
    /// The network: simple (the book's SimpleConvNet), lenet5, alexnet,
    /// alexnet-small, deep, or a spec such as
    /// 'conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)'. Default:
    /// simple, or with --resume the checkpoint's network.
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs in all: each one trains on every training image once, in a
    /// new shuffled order, then measures the test set. Default: 15.
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per mini-batch (one gradient step each). Default: 100.
    #[arg(long)]
    batch_size: Option<usize>,
    /// sgd, momentum, nesterov, adagrad, rmsprop or adam. Default: adam.
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Learning rate. Default: the optimizer's default from the book
    /// (0.001 for adam, 0.01 for the others), except adam on alexnet-small: 0.0005.
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule: constant, step:EVERY:GAMMA (the rate times
    /// GAMMA every EVERY epochs), cosine (annealed per batch from --lr
    /// towards 0 over the run) or onecycle:WARMUP_FRACTION (linear warm-up
    /// over that fraction of the run's batches, then cosine). Default:
    /// constant, or with --resume the checkpoint's.
    #[arg(long)]
    schedule: Option<Schedule>,
    /// Weight decay λ (book §6.4.1) on the weights of convolutions and
    /// affine layers (not biases, not batch norm). Default 0: none.
    #[arg(long, value_name = "LAMBDA")]
    weight_decay: Option<f64>,
    /// l2 (the default): the penalty λ/2·‖W‖² added to the loss (and to the
    /// reported training loss), λW to the gradients; decoupled: the weights
    /// shrunk by lr·λ before each step (AdamW's form).
    #[arg(long, value_name = "MODE")]
    weight_decay_mode: Option<WeightDecayMode>,
    /// Label smoothing ε in [0, 1): the training targets become
    /// (1 − ε)·onehot + ε/classes. The reported train loss is the smoothed
    /// one; the test loss is not. Default 0: none.
    #[arg(long, value_name = "EPSILON")]
    label_smoothing: Option<f64>,
    /// Data augmentation of every training batch, seeded: crop:P (random
    /// crop with zero padding P: a move of up to P pixels), translate:P (the
    /// same move, the border filled with edge pixels), flip (left–right,
    /// half the images; not for digits), joined by commas (crop:2,flip), or
    /// none. Default: none.
    #[arg(long, value_name = "ITEMS")]
    augment: Option<Augment>,
    /// Hold out N training images (chosen by the seed) for validation:
    /// never trained on, measured after every epoch. The test set stays a
    /// separate, final measurement. Default 0: none.
    #[arg(long, value_name = "N", default_value_t = 0)]
    validation: usize,
    /// Stop when the validation accuracy has not improved for PATIENCE
    /// epochs and keep the best epoch: --save writes only epochs that
    /// improve it, and training ends with its weights. Needs --validation.
    #[arg(long, value_name = "PATIENCE")]
    early_stop: Option<usize>,
    /// Keep an averaged model, the exponential moving average of the
    /// weights with this decay (e.g. 0.999), measured after every epoch
    /// and saved beside --save as NAME.ema.safetensors (a checkpoint like
    /// any other).
    #[arg(long, value_name = "DECAY")]
    ema: Option<f64>,
    /// Measure the test (and validation) images with test-time
    /// augmentation: each image's class probabilities averaged with its
    /// mirror image's (for clothes and objects, not digits).
    #[arg(long)]
    tta: bool,
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
    /// Write one JSON object per epoch to this file (replacing it; with
    /// --resume, appending to the epochs the checkpoint holds).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Save the weights (safetensors) to this file after every epoch (with
    /// --epochs 0, the initial weights); the optimizer's state goes beside it
    /// (NAME.optim-EPOCH.safetensors). The pair is replaced atomically: a
    /// kill at any moment leaves the last complete epoch.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (and its .optim file) up to
    /// --epochs in all; with the same seed and threads it ends with the same
    /// weights as an uninterrupted run. Saves back to it unless --save says
    /// otherwise. The model options come from the checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    #[command(flatten)]
    reference: crate::ReferenceFlag,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    serve: crate::serve::TrainServeArgs,
    #[command(flatten)]
    distributed: crate::distributed::DistributedArgs,
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
    /// Test-time augmentation: average each image's class probabilities
    /// with those of its left–right mirror image (for clothes and objects,
    /// not digits).
    #[arg(long)]
    tta: bool,
    /// Also draw the confusion matrix as a PNG heat-map (640×640 pixels):
    /// class names on the axes, counts in the cells, colour by share of the
    /// true class.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    reference: crate::ReferenceFlag,
    #[command(flatten)]
    memory: MemoryArgs,
}

impl TrainArgs {
    /// Fills every option not given on the command line from `recipe`, and
    /// names those that were given (they override the recipe's values).
    fn take_recipe(&mut self, recipe: &recipe::Recipe) -> Vec<&'static str> {
        let given = [
            ("--model", self.model.is_some()),
            ("--epochs", self.epochs.is_some()),
            ("--batch-size", self.batch_size.is_some()),
            ("--optimizer", self.optimizer.is_some()),
            ("--lr", self.lr.is_some()),
            ("--schedule", self.schedule.is_some()),
            ("--weight-decay", self.weight_decay.is_some()),
            ("--weight-decay-mode", self.weight_decay_mode.is_some()),
            ("--label-smoothing", self.label_smoothing.is_some()),
            ("--augment", self.augment.is_some()),
            ("--ema", self.ema.is_some()),
        ];
        self.model.get_or_insert_with(|| recipe.model.to_string());
        self.epochs.get_or_insert(recipe.epochs);
        self.batch_size.get_or_insert(recipe.batch_size);
        self.optimizer.get_or_insert(recipe.optimizer);
        self.lr.get_or_insert(recipe.learning_rate);
        self.schedule.get_or_insert(recipe.schedule);
        self.weight_decay.get_or_insert(recipe.weight_decay);
        self.weight_decay_mode
            .get_or_insert(recipe.weight_decay_mode);
        self.label_smoothing.get_or_insert(recipe.label_smoothing);
        self.augment.get_or_insert(recipe.augment);
        if self.ema.is_none() {
            self.ema = recipe.ema;
        }
        self.tta |= recipe.tta;
        given
            .iter()
            .filter(|(_, given)| *given)
            .map(|(flag, _)| *flag)
            .collect()
    }
}

fn metrics_json(m: &EpochMetrics, ema_acc: Option<f64>) -> String {
    metrics_value(m, ema_acc).to_string()
}

/// One epoch's metrics as a JSON object: `--metrics`' line. The
/// validation and averaged-model fields appear only when they are measured.
fn metrics_value(m: &EpochMetrics, ema_acc: Option<f64>) -> serde_json::Value {
    let mut value = serde_json::json!({
        "epoch": m.epoch,
        "train_loss": m.train_loss,
        "train_acc": m.train_acc,
        "test_loss": m.test_loss,
        "test_acc": m.test_acc,
        "seconds": m.seconds,
        "images_per_second": m.images_per_second,
        "lr": m.lr,
    });
    let optional = [
        ("val_loss", m.val_loss),
        ("val_acc", m.val_acc),
        ("ema_test_acc", ema_acc),
    ];
    if let Some(fields) = value.as_object_mut() {
        for (key, v) in optional {
            if let Some(v) = v {
                fields.insert(key.to_string(), serde_json::json!(v));
            }
        }
    }
    value
}

/// The metrics stored in a checkpoint: those of [`metrics_json`] without the
/// timings, so that two identical runs write identical checkpoints.
fn checkpoint_metrics_json(m: &EpochMetrics, ema_acc: Option<f64>) -> String {
    let mut value = metrics_value(m, ema_acc);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("seconds");
        fields.remove("images_per_second");
    }
    value.to_string()
}

fn epoch_line(m: &EpochMetrics, epochs: usize, ema_acc: Option<f64>) -> String {
    let val = m.val_acc.map_or(String::new(), |acc| {
        format!(
            "  val acc {:6.2}%{}",
            100.0 * acc,
            if m.is_best { "*" } else { " " }
        )
    });
    let ema = ema_acc.map_or(String::new(), |acc| {
        format!("  ema acc {:6.2}%", 100.0 * acc)
    });
    format!(
        "epoch {:>2}/{epochs}  train loss {:.4}  train acc {:6.2}%{val}  test acc {:6.2}%{ema}  ({:.2} s, {:.0} img/s)",
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
    convnet::networks::summary::with_commas(n as u64)
}

pub fn run_train(mut args: TrainArgs) -> anyhow::Result<ExitCode> {
    // The library's `train_with_optimizer` runs on this pool, its workers
    // kept awake (`convnet::parallel::run_fast`).
    crate::set_threads(args.threads)?;
    let recipe = args.recipe.as_deref().map(recipe::find).transpose()?;
    if let Some(recipe) = recipe {
        let overridden = args.take_recipe(recipe);
        println!("recipe {}: {}", recipe.name, recipe.about);
        println!("  the same as: {}", recipe.command_line());
        if !overridden.is_empty() {
            println!(
                "  overridden on the command line: {}",
                overridden.join(", ")
            );
        }
    }
    // The library's defaults, which the help states.
    let defaults = TrainConfig::default();
    let epochs = args.epochs.unwrap_or(defaults.epochs);
    let batch_size = args.batch_size.unwrap_or(defaults.batch_size);
    let optimizer_kind = args.optimizer.unwrap_or(defaults.optimizer);
    // In an MPI job, rank 0 alone writes (crate::distributed).
    let leader = crate::distributed::is_leader();
    let save_path = args.save.clone().or(args.resume.clone()).filter(|_| leader);
    let ema_path = save_path.as_deref().map(checkpoint::averaged_path);
    // Every output is checked before any work: a mistake shows at once, and
    // an output can never overwrite an input.
    crate::outputs::check_outputs(
        &[
            ("--save", save_path.as_deref()),
            ("--metrics", args.metrics.as_deref()),
            (
                "the averaged model (--ema)",
                ema_path.as_deref().filter(|_| args.ema.is_some()),
            ),
        ],
        &crate::outputs::training_inputs(args.resume.as_deref(), args.data.folder()),
    )?;
    let max_memory = args.memory.limit();
    // A resumed run's network, metadata and optimizer state; its model name
    // sets the default learning rate.
    let resumed = args
        .resume
        .as_deref()
        .map(|path| checkpoint::load_training_state(path, max_memory).map(|state| (path, state)))
        .transpose()?;
    let model = match &resumed {
        Some((path, state)) => {
            anyhow::ensure!(
                args.model.as_ref().is_none_or(|m| *m == state.info.model),
                "{} holds a {} network, not --model {}: leave out --model to continue it",
                path.display(),
                state.info.model,
                args.model.as_deref().unwrap_or_default()
            );
            state.info.model.clone()
        }
        None => args.model.clone().unwrap_or_else(|| "simple".to_string()),
    };
    // Without --lr: the model's Adam rate (0.0005 for alexnet-small, which
    // is unstable at 0.001), else the optimizer's book default.
    let learning_rate = args.lr.or_else(|| {
        model_info(&model)
            .filter(|_| optimizer_kind == OptimizerKind::Adam)
            .map(|m| m.adam_learning_rate)
    });
    let mut config = TrainConfig {
        epochs,
        batch_size,
        optimizer: optimizer_kind,
        learning_rate,
        seed: args.seed,
        start_epoch: 0,
        start_position: None,
        stop: StopFlag::default(),
        threads: args.threads,
        schedule: args.schedule.unwrap_or(defaults.schedule),
        weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
        weight_decay_mode: args.weight_decay_mode.unwrap_or(defaults.weight_decay_mode),
        label_smoothing: args.label_smoothing.unwrap_or(defaults.label_smoothing),
        augment: args.augment.unwrap_or(defaults.augment),
        validation: args.validation,
        early_stop: args.early_stop,
        test_flip_average: args.tta,
        sharding: crate::distributed::sharding(&args.distributed)?,
    };
    config.validate()?;
    let simple_only = [
        ("--filters", args.filters.is_some()),
        ("--filter-size", args.filter_size.is_some()),
        ("--stride", args.stride.is_some()),
        ("--pad", args.pad.is_some()),
        ("--hidden-size", args.hidden_size.is_some()),
    ];
    if let Some((flag, _)) = simple_only.iter().find(|(_, set)| *set) {
        anyhow::ensure!(
            model == "simple" && resumed.is_none(),
            "{flag} applies to --model simple only (a spec states its own sizes; a resumed run keeps its model)"
        );
    }
    anyhow::ensure!(
        args.activation.is_none() || (model_info(&model).is_some() && resumed.is_none()),
        "--activation applies to lenet5, alexnet, alexnet-small and deep only (a resumed run keeps its model)"
    );
    if let Some((path, state)) = &resumed {
        if state.epoch >= epochs {
            println!(
                "{} already holds {} epochs (--epochs {}): nothing to do",
                path.display(),
                state.epoch,
                epochs
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let data = args.data.load_or(recipe.map(|r| r.dataset))?;
    let input_shape = data.train.input_shape();
    let classes = data.class_names.len();
    let fingerprint = data.fingerprint();
    let mut rng = Rng::new(args.seed);
    // The memory training needs: the model, the optimizer's state and a
    // batch's activations (a batch is never larger than the data).
    let training = Usage::training(
        batch_size.min(data.train.len().max(1)),
        optimizer_kind.state_slots(),
    );
    let f32_bytes = std::mem::size_of::<f32>();
    let (mut net, mut info, optimizer_state) = match resumed {
        Some((path, state)) => {
            if let Some(theirs) = state.info.extra.get("dataset_fingerprint") {
                let their_name = state.info.extra.get("dataset").map_or("?", String::as_str);
                anyhow::ensure!(
                    *theirs == fingerprint,
                    "{} was trained on {their_name}, not on {}: give the same --data or --dataset to continue it",
                    path.display(),
                    data.name
                );
            }
            anyhow::ensure!(
                state.info.input_shape == input_shape,
                "the checkpoint's model takes {:?} images, {} has {:?}",
                state.info.input_shape,
                data.name,
                input_shape
            );
            anyhow::ensure!(
                state.info.class_names.len() == classes,
                "the checkpoint's model has {} classes, {} has {classes}",
                state.info.class_names.len(),
                data.name
            );
            plan_loaded(&state.net, &state.info)?.check_memory(&training, max_memory, f32_bytes)?;
            config.start_epoch = state.epoch;
            if args.schedule.is_none() {
                if let Some(text) = state.info.extra.get("schedule") {
                    config.schedule = text.parse()?;
                }
            }
            if state.batches_done > 0 {
                config.start_position = Some(epoch_position(&state.info, state.batches_done)?);
            }
            (state.net, state.info, Some((path, state.optimizer_state)))
        }
        None => {
            let options = ModelOptions {
                // The book's SimpleConvNet uses std; He trains it faster (see docs/models.md).
                init: args.init.or((model == "simple").then_some(Init::He)),
                filters: args.filters,
                filter_size: args.filter_size,
                stride: args.stride,
                pad: args.pad,
                hidden_size: args.hidden_size,
                activation: args.activation.clone(),
            };
            // Every size is checked before anything is allocated.
            plan_model(&model, &options, input_shape, classes)?
                .check_memory(&training, max_memory, f32_bytes)?;
            let net = build_model_within::<f32>(
                &model,
                &options,
                input_shape,
                classes,
                &mut rng,
                max_memory,
            )?;
            let info = CheckpointInfo {
                model: model.clone(),
                options,
                input_shape,
                class_names: data.class_names.clone(),
                // `visualize filters --compare` rebuilds the untrained
                // network from the seed; --resume checks the data set.
                extra: BTreeMap::from([
                    ("seed".to_string(), args.seed.to_string()),
                    ("dataset".to_string(), data.name.clone()),
                    ("dataset_fingerprint".to_string(), fingerprint.clone()),
                ]),
            };
            (net, info, None)
        }
    };
    args.reference.apply(&mut net);
    // A resumed run keeps the schedule unless told otherwise (a constant
    // rate, the default, is not written).
    match config.schedule {
        Schedule::Constant => info.extra.remove("schedule"),
        schedule => info
            .extra
            .insert("schedule".to_string(), schedule.to_string()),
    };
    let mut ema = averaged_model(
        &args,
        &mut net,
        &mut info,
        optimizer_state.as_ref().map(|(p, _)| *p),
        max_memory,
    )?;
    let mut optimizer = build::<f32>(config.optimizer, config.learning_rate);
    // An empty state (a checkpoint from `convnet import`) starts the
    // optimizer afresh.
    if let Some((resume, state)) = optimizer_state.as_ref().filter(|(_, s)| !s.is_empty()) {
        // A state file from another network, or with impossible values, is
        // an error here rather than a panic in the first step.
        let params: Vec<(String, usize)> = net
            .param_names()
            .into_iter()
            .zip(net.params().iter().map(|p| p.value.len()))
            .collect();
        let in_file = |e: convnet::Error| {
            anyhow::anyhow!("{}'s optimizer state: {}", resume.display(), e.detail())
        };
        check_state_fits(state, &params).map_err(in_file)?;
        optimizer.load_state(state).map_err(in_file)?;
    }
    let mut metrics_file = match args.metrics.as_ref().filter(|_| leader) {
        Some(path) => Some(crate::outputs::open_metrics(path, config.start_epoch)?),
        None => None,
    };
    if let (Some(path), 0) = (&save_path, config.epochs) {
        checkpoint::save_training_state(&mut net, &info, &optimizer.state(), 0, 0, path)?;
        println!("saved {} (the initial weights: --epochs 0)", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut live = crate::serve::TrainLive::start(&args.serve, &mut net, &info, &data, &config)?;
    println!(
        "training {}{} ({} parameters) on {}: {} train / {} test images {:?}, {} epochs, batch {}, {} lr {}{}, {} threads",
        info.model,
        args.reference.note(),
        net.num_params(),
        data.name,
        data.train.len(),
        data.test.len(),
        input_shape,
        epochs,
        batch_size,
        optimizer_kind,
        learning_rate.unwrap_or(optimizer_kind.default_learning_rate()),
        match config.schedule {
            Schedule::Constant => String::new(),
            schedule => format!(" ({schedule})"),
        },
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
    let mut divergence = DivergenceWatch::default();
    if !crate::distributed::in_job() {
        stop_on_ctrl_c(&config.stop, live.as_ref().and_then(|l| l.ctrl_c()));
    }
    // Without a terminal for the bar: a line of text now and then, so that
    // a log file shows that a long epoch is under way.
    let mut plain = (bar.is_none() && leader).then(|| PlainProgress {
        every: progress_interval(),
        last: Instant::now(),
        images: data.train.len(),
        batch_size,
        epochs,
        loss_sum: 0.0,
        seen: 0,
    });
    let mut ema_accuracies: Vec<Option<f64>> = Vec::new();
    let history = train_with_optimizer(
        &mut net,
        optimizer.as_mut(),
        &data,
        &config,
        |event, net, optimizer| {
            if let Some(live) = live.as_mut() {
                live.progress(&event, net);
            }
            match event {
                Progress::Batch {
                    epoch,
                    done,
                    total,
                    loss,
                } => {
                    if let Some(warning) = divergence.check(epoch, done, loss) {
                        match &bar {
                            Some(bar) => bar.println(&warning),
                            None => eprintln!("{warning}"),
                        }
                    }
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
                    if let Some(ema) = ema.as_mut() {
                        ema.update(net)?;
                    }
                }
                Progress::Epoch(m) => {
                    if let Some(plain) = plain.as_mut() {
                        plain.last = Instant::now();
                    }
                    let ema_acc = match ema.as_mut() {
                        Some(ema) => Some(
                            ema.with_weights(net, |net| {
                                evaluate_with(net, &data.test, batch_size, args.tta)
                            })??
                            .accuracy,
                        ),
                        None => None,
                    };
                    ema_accuracies.push(ema_acc);
                    let line = epoch_line(m, epochs, ema_acc);
                    match &bar {
                        Some(bar) => bar.println(line),
                        None => println!("{line}"),
                    }
                    // With early stopping the checkpoint keeps the best epoch.
                    let keep = config.early_stop.is_none() || m.is_best;
                    if let (Some(path), true) = (&save_path, keep) {
                        info.extra
                            .insert("metrics".to_string(), checkpoint_metrics_json(m, ema_acc));
                        info.extra.remove("epoch_position");
                        if let (Some(ema), Some(ema_path)) = (ema.as_mut(), &ema_path) {
                            save_averaged(ema, net, &mut info, ema_path)?;
                        }
                        checkpoint::save_training_state(
                            net,
                            &info,
                            &optimizer.state(),
                            m.epoch,
                            0,
                            path,
                        )?;
                    }
                    // After the save: the metrics file never holds an epoch
                    // that the checkpoint lacks (a resume cuts it back to the
                    // checkpoint's epochs anyway).
                    if let Some(file) = metrics_file.as_mut() {
                        writeln!(file, "{}", metrics_json(m, ema_acc)).map_err(|e| {
                            convnet::Error::Data(format!("cannot write metrics: {e}"))
                        })?;
                    }
                }
                Progress::Interrupted { epoch, position } => {
                    let done = format!(
                        "interrupted in epoch {epoch} after {} of {} batches",
                        position.batches_done,
                        (data.train.len() - config.validation).div_ceil(batch_size)
                    );
                    let line = match &save_path {
                        // The checkpoint holds the best epoch: keep it.
                        Some(path) if config.early_stop.is_some() => format!(
                            "{done}: {} keeps the best epoch so far (continue with --resume {})",
                            path.display(),
                            path.display()
                        ),
                        Some(path) => {
                            info.extra.insert(
                                "epoch_position".to_string(),
                                epoch_position_json(position),
                            );
                            if let (Some(ema), Some(ema_path)) = (ema.as_mut(), &ema_path) {
                                save_averaged(ema, net, &mut info, ema_path)?;
                            }
                            checkpoint::save_training_state(
                                net,
                                &info,
                                &optimizer.state(),
                                epoch - 1,
                                position.batches_done,
                                path,
                            )?;
                            format!(
                                "{done}: saved {} (continue with --resume {})",
                                path.display(),
                                path.display()
                            )
                        }
                        None => format!("{done}: nothing saved (no --save)"),
                    };
                    match &bar {
                        Some(bar) => bar.println(line),
                        None => println!("{line}"),
                    }
                }
            }
            Ok(())
        },
    );
    if let Some(live) = live.as_mut() {
        live.finish(&mut net, &history, config.stop.is_requested());
    }
    let history = history?;
    if config.stop.is_requested() {
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        if let (Some(path), Some(m)) = (&save_path, history.last()) {
            println!(
                "interrupted after epoch {}: saved {}",
                m.epoch,
                path.display()
            );
        }
        return Ok(ExitCode::from(130));
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(path) = &save_path {
        println!("saved {}", path.display());
    }
    crate::distributed::report(config.sharding.as_ref());
    if let (Some(path), Some(_)) = (&ema_path, &ema) {
        println!("saved {} (the averaged model)", path.display());
    }
    // With early stopping the network is the best epoch's, else the last's.
    let kept = match config.early_stop {
        Some(patience) => {
            let best = history.iter().rposition(|m| m.is_best);
            if history.len() < epochs - config.start_epoch {
                println!(
                    "stopped early after epoch {}: no better validation accuracy for {patience} epoch{}",
                    history.last().map_or(config.start_epoch, |m| m.epoch),
                    if patience == 1 { "" } else { "s" }
                );
            }
            best
        }
        None => history.len().checked_sub(1),
    };
    match kept.map(|i| (&history[i], ema_accuracies[i])) {
        Some((m, ema_acc)) => {
            println!(
                "test accuracy: {:.2}% (epoch {}; {} test images, {} epochs, {:.1} s training)",
                100.0 * m.test_acc,
                m.epoch,
                data.test.len(),
                history.len(),
                history.iter().map(|m| m.seconds).sum::<f64>()
            );
            if let Some(acc) = ema_acc {
                println!(
                    "averaged model's test accuracy: {:.2}% (epoch {})",
                    100.0 * acc,
                    m.epoch
                );
            }
        }
        None => println!("no epochs run"),
    }
    if let Some(live) = live {
        live.serve_until_stopped();
    }
    Ok(ExitCode::SUCCESS)
}

/// The averaged model of `--ema DECAY` (or of the resumed run, which keeps
/// its decay): a resumed run continues the average saved beside its
/// checkpoint; a new one starts from the network's weights. Records the
/// decay in `info`, so that `--resume` goes on with it.
fn averaged_model(
    args: &TrainArgs,
    net: &mut convnet::networks::Network<f32>,
    info: &mut CheckpointInfo,
    resumed_from: Option<&std::path::Path>,
    max_memory: u64,
) -> anyhow::Result<Option<Ema<f32>>> {
    let kept_decay = info
        .extra
        .get("ema_decay")
        .and_then(|d| d.parse::<f64>().ok());
    let Some(decay) = args.ema.or(kept_decay) else {
        return Ok(None);
    };
    info.extra
        .insert("ema_decay".to_string(), decay.to_string());
    let (Some(resume), Some(_)) = (resumed_from, kept_decay) else {
        return Ok(Some(Ema::new(net, decay)?));
    };
    let file = checkpoint::averaged_path(resume);
    let (mut averaged, averaged_info) =
        checkpoint::load_within(&file, max_memory).map_err(|e| {
            anyhow::anyhow!(
                "{} keeps an averaged model, but it cannot be read: {e}",
                resume.display()
            )
        })?;
    let steps = |i: &CheckpointInfo| i.extra.get("ema_steps").and_then(|s| s.parse::<u64>().ok());
    anyhow::ensure!(
        steps(&averaged_info).is_some() && steps(&averaged_info) == steps(info),
        "{} is not the averaged model of {} (another run, or another epoch): move it away to start a new average",
        file.display(),
        resume.display()
    );
    let mut ema = Ema::resume(&mut averaged, decay, steps(info).unwrap_or(0))?;
    // An error here, rather than at the first step, if the averaged
    // network does not fit the one being trained.
    ema.with_weights(net, |_| ())?;
    Ok(Some(ema))
}

/// Saves the averaged model to `path` (before the checkpoint, which records
/// how many steps it has averaged, so that a resume can tell they match).
fn save_averaged(
    ema: &mut Ema<f32>,
    net: &mut convnet::networks::Network<f32>,
    info: &mut CheckpointInfo,
    path: &std::path::Path,
) -> convnet::Result<()> {
    info.extra
        .insert("ema_steps".to_string(), ema.steps().to_string());
    let mut averaged_info = info.clone();
    averaged_info.extra.remove("epoch_position");
    ema.with_weights(net, |net| checkpoint::save(net, &averaged_info, path))?
}

/// The sizes of a network loaded from a checkpoint: planned from the network
/// itself (its layers as specs), else from the checkpoint's model name and
/// options.
fn plan_loaded(
    net: &convnet::networks::Network<f32>,
    info: &CheckpointInfo,
) -> anyhow::Result<convnet::networks::ModelPlan> {
    let classes = info.class_names.len();
    Ok(match net.layer_specs() {
        Ok(layers) => convnet::networks::plan_spec(&layers, info.input_shape, classes)?,
        Err(_) => plan_model(&info.model, &info.options, info.input_shape, classes)?,
    })
}

/// Makes Ctrl-C ask training to stop after the current mini-batch (and save,
/// with --save); a second Ctrl-C ends the program at once. With --serve,
/// once training is over, Ctrl-C stops the server.
fn stop_on_ctrl_c(stop: &StopFlag, serving: Option<crate::serve::ServeCtrlC>) {
    let stop = stop.clone();
    let installed = ctrlc::set_handler(move || {
        if serving.as_ref().is_some_and(|s| s.stop_if_over()) {
            return;
        }
        if stop.is_requested() {
            std::process::exit(130);
        }
        stop.request();
        eprintln!("interrupt: stopping after this batch (Ctrl-C again to quit now)");
    });
    // Without a handler (one already set), Ctrl-C keeps its default effect.
    drop(installed);
}

/// The position of an interrupted epoch, as the checkpoint stores it
/// (serde_json writes an f64 so that it reads back to the same bits).
fn epoch_position_json(position: &EpochPosition) -> String {
    serde_json::json!({
        "batches_done": position.batches_done,
        "loss_sum": position.loss_sum,
        "correct": position.correct,
        "seconds": position.seconds,
    })
    .to_string()
}

/// Reads back [`epoch_position_json`] from a checkpoint stopped after
/// `batches_done` mini-batches of an epoch.
fn epoch_position(info: &CheckpointInfo, batches_done: usize) -> anyhow::Result<EpochPosition> {
    let value: serde_json::Value = info
        .extra
        .get("epoch_position")
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("the checkpoint stopped mid-epoch but has no valid epoch_position")
        })?;
    let field = |key: &str| value.get(key).and_then(serde_json::Value::as_f64);
    let (Some(loss_sum), Some(correct), Some(seconds)) = (
        field("loss_sum"),
        value.get("correct").and_then(serde_json::Value::as_u64),
        field("seconds"),
    ) else {
        anyhow::bail!("the checkpoint's epoch_position lacks loss_sum, correct or seconds");
    };
    Ok(EpochPosition {
        batches_done,
        loss_sum,
        correct: correct as usize,
        seconds,
    })
}

/// Watches the training loss for an explosion: a loss far above the run's
/// first one means the learning rate is too high, even while it is still
/// finite (a non-finite loss stops training in the library).
#[derive(Default)]
struct DivergenceWatch {
    first_loss: Option<f64>,
    warned: bool,
}

impl DivergenceWatch {
    /// How many times the first batch's loss counts as an explosion.
    const FACTOR: f64 = 10.0;

    /// A one-line warning the first time `loss` has exploded.
    fn check(&mut self, epoch: usize, batch: usize, loss: f64) -> Option<String> {
        let first = *self.first_loss.get_or_insert(loss);
        if self.warned || loss <= Self::FACTOR * first.max(0.1) {
            return None;
        }
        self.warned = true;
        Some(format!(
            "warning: the loss rose from {first:.4} to {loss:.4e} (epoch {epoch}, batch {batch}): training is diverging; try a lower --lr"
        ))
    }
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
    args.reference.apply(&mut net);
    let data = args.data.load()?;
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    plan_loaded(&net, &info)?.check_memory(
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
    if data.class_names != info.class_names {
        eprintln!(
            "warning: {} has the classes {:?}, the checkpoint was trained on {:?}: the accuracy compares labels of different meanings",
            data.name, data.class_names, info.class_names
        );
    }
    let eval = evaluate_with(&mut net, &data.test, args.batch_size, args.tta)?;
    println!(
        "{}{} on {} ({} test images{})",
        info.model,
        args.reference.note(),
        data.name,
        data.test.len(),
        if args.tta {
            ", each averaged with its mirror image"
        } else {
            ""
        }
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
