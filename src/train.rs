//! Mini-batch training and evaluation (book §4.5, `common/trainer.py`).
//!
//! One epoch visits every training image once, in an order shuffled from the
//! seed and the epoch number (so a run is reproducible, and epoch `e` is the
//! same whether or not training stopped before it):
//!
//! ```text
//! for each mini-batch (x, t) of the shuffled training set:
//!     loss = network.gradient(x, t)      # forward + backward
//!     optimizer.step(network.params())   # p ← p − update(∂L/∂p)
//! test_acc = accuracy of network.predict(test, train = false)
//! ```
//!
//! `train_loss` and `train_acc` are averages over the epoch's mini-batches,
//! measured on the fly (in training mode) rather than by a second pass.

use crate::data::{Dataset, TrainTest};
use crate::error::{Error, Result};
use crate::networks::Network;
use crate::optim::{build, Optimizer, OptimizerKind};
use crate::parallel::{run_fast, ELEMENTWISE_CHUNK};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub mod augment;
pub mod ema;
pub mod recipe;
pub mod schedule;
pub mod weight_decay;
mod weights;
pub use augment::Augment;
pub use ema::Ema;
pub use schedule::Schedule;
pub use weight_decay::WeightDecayMode;
use weights::Weights;

/// A request to stop training early, shared with whoever asks (a Ctrl-C
/// handler): [`train_with_optimizer`] looks at it after every mini-batch
/// and, when it is set, reports [`Progress::Interrupted`] and returns.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Asks training to stop after the current mini-batch.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl PartialEq for StopFlag {
    /// Two flags are equal when they are the same flag.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How far an interrupted epoch got: enough to finish it exactly as an
/// uninterrupted run would (the order of the epoch and the dropout masks of
/// each batch follow from the seed, the epoch and the batch number).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochPosition {
    /// Mini-batches of the epoch already trained on.
    pub batches_done: usize,
    /// The sum of their losses, each times its batch's size.
    pub loss_sum: f64,
    /// Their correctly classified images.
    pub correct: usize,
    /// Seconds spent on them.
    pub seconds: f64,
}

/// How to train. The defaults are those of `convnet train` (see each
/// field); the model's own defaults (SimpleConvNet, He initialisation) are
/// [`build_model`](crate::networks::build_model)'s business.
///
/// ```
/// use convnet::train::TrainConfig;
/// let config = TrainConfig { epochs: 2, threads: Some(2), ..TrainConfig::default() };
/// assert_eq!((config.batch_size, config.seed), (100, 1));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs in all (each one visits every training image once). Default 15.
    pub epochs: usize,
    /// Images per mini-batch. Default 100.
    pub batch_size: usize,
    /// Default [`OptimizerKind::Adam`].
    pub optimizer: OptimizerKind,
    /// `None` (the default): the optimizer's default, the book's (0.001 for
    /// Adam, 0.01 for the others).
    pub learning_rate: Option<f64>,
    /// The seed of the shuffling and of dropout's masks (the weights come
    /// from the generator the network was built with). Default 1.
    pub seed: u64,
    /// Epochs already done (when resuming): training runs epochs
    /// `start_epoch + 1 ..= epochs`, exactly as an uninterrupted run would.
    /// Default 0.
    pub start_epoch: usize,
    /// Where epoch `start_epoch + 1` was interrupted (when resuming a run
    /// stopped mid-epoch); `None` starts it from its first batch.
    pub start_position: Option<EpochPosition>,
    /// Set it to stop after the current mini-batch.
    pub stop: StopFlag,
    /// Worker threads. `None` (the default): the rayon pool in use, one
    /// thread per core unless the program says otherwise (see
    /// [`run_fast`]).
    pub threads: Option<usize>,
    /// How the learning rate changes over the run, from the base rate
    /// (`learning_rate`, else the optimizer's). Default
    /// [`Schedule::Constant`], which never touches the optimizer's rate.
    pub schedule: Schedule,
    /// The weight decay λ (≥ 0; default 0, none), applied to the weights
    /// of convolutions and affine layers only (see [`weight_decay`]).
    pub weight_decay: f64,
    /// How weight decay is applied. Default [`WeightDecayMode::L2`] (the
    /// book's penalty, which the reported training loss includes).
    pub weight_decay_mode: WeightDecayMode,
    /// Label smoothing ε in [0, 1) of the training loss (default 0: none;
    /// see [`SoftmaxWithLoss`](crate::layers::SoftmaxWithLoss)). The
    /// reported training loss is the smoothed one, the test loss never is.
    pub label_smoothing: f64,
    /// How each training mini-batch is augmented (default: not at all; see
    /// [`augment`]).
    pub augment: Augment,
    /// Training images held out for validation (default 0): chosen by the
    /// seed, never trained on, and measured after every epoch
    /// ([`EpochMetrics::val_acc`]). They come out of `data.train`; the test
    /// set is untouched.
    pub validation: usize,
    /// Early stopping: stop when the validation accuracy has not improved
    /// for this many epochs, and end with the best epoch's weights
    /// (default `None`: train every epoch). Needs `validation > 0`.
    pub early_stop: Option<usize>,
    /// Measure the test and validation images with test-time augmentation
    /// (each image's probabilities averaged with its mirror image's; see
    /// [`evaluate_with`]). Default `false`.
    pub test_flip_average: bool,
    /// `Some`: every mini-batch's gradient computed in shards, possibly
    /// over several processes (data-parallel training; see
    /// [`distributed`](crate::distributed)). `None` (the default): the
    /// whole batch at once.
    pub sharding: Option<crate::distributed::Sharding>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 15,
            batch_size: 100,
            optimizer: OptimizerKind::Adam,
            learning_rate: None,
            seed: 1,
            start_epoch: 0,
            start_position: None,
            stop: StopFlag::default(),
            threads: None,
            schedule: Schedule::Constant,
            weight_decay: 0.0,
            weight_decay_mode: WeightDecayMode::L2,
            label_smoothing: 0.0,
            augment: Augment::default(),
            validation: 0,
            early_stop: None,
            test_flip_average: false,
            sharding: None,
        }
    }
}

impl TrainConfig {
    /// An error for a batch size or thread count of 0, or a learning rate
    /// that is not a positive number.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        if self.threads == Some(0) {
            return Err(Error::Config(
                "the number of threads must be at least 1".into(),
            ));
        }
        self.schedule.validate()?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::Config(format!(
                "label smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Config(format!(
                "weight decay must be a number ≥ 0, got {}",
                self.weight_decay
            )));
        }
        match self.early_stop {
            Some(0) => {
                return Err(Error::Config(
                    "early stopping needs a patience of at least 1 epoch".into(),
                ))
            }
            Some(_) if self.validation == 0 => {
                return Err(Error::Config(
                    "early stopping needs a validation set (hold out some training images)".into(),
                ))
            }
            _ => {}
        }
        if let Some(lr) = self.learning_rate {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Error::Config(format!(
                    "learning rate must be a positive number, got {lr}"
                )));
            }
        }
        Ok(())
    }
}

/// What one epoch measured. Accuracies are fractions in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Mean cross-entropy loss over the epoch's training images (measured on the fly).
    pub train_loss: f64,
    /// Fraction of the epoch's training images classified correctly (measured on the fly).
    pub train_acc: f64,
    /// Mean cross-entropy loss on the test set after the epoch.
    pub test_loss: f64,
    /// Accuracy on the test set after the epoch.
    pub test_acc: f64,
    /// Wall-clock seconds of the epoch's training (evaluation excluded).
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
    /// The learning rate of the epoch's first mini-batch (see
    /// [`TrainConfig::schedule`]).
    pub lr: f64,
    /// Mean cross-entropy loss on the validation images after the epoch
    /// (`None` without [`TrainConfig::validation`]).
    pub val_loss: Option<f64>,
    /// Accuracy on the validation images after the epoch.
    pub val_acc: Option<f64>,
    /// Whether the validation accuracy is the best of the run so far (an
    /// earlier epoch with the same accuracy stays the best); always `true`
    /// without validation. With [`TrainConfig::early_stop`], the weights of
    /// the last epoch marked best are those training ends with.
    pub is_best: bool,
}

/// Progress reports during training.
#[derive(Clone, Debug)]
pub enum Progress<'a> {
    /// A mini-batch finished: `done` of `total` batches of epoch `epoch`.
    Batch {
        /// The epoch, 1-based.
        epoch: usize,
        /// Batches of the epoch done, this one included.
        done: usize,
        /// Batches in the epoch.
        total: usize,
        /// The batch's mean cross-entropy loss.
        loss: f64,
    },
    /// An epoch finished and was evaluated.
    Epoch(&'a EpochMetrics),
    /// Training stopped at a [`StopFlag`]'s request after `position`'s
    /// batches of epoch `epoch` (1-based); `epoch − 1` epochs are complete.
    Interrupted {
        /// The epoch that was interrupted, 1-based.
        epoch: usize,
        /// How far the epoch got, enough to resume it exactly.
        position: &'a EpochPosition,
    },
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Fraction of the images classified correctly.
    pub accuracy: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

impl Evaluation {
    /// From the sum of the `images` images' losses and the confusion
    /// counts: the mean loss and the fraction on the diagonal.
    pub(crate) fn from_sums(loss_sum: f64, images: usize, confusion: Vec<Vec<usize>>) -> Self {
        let n = images.max(1) as f64;
        let correct: usize = (0..confusion.len()).map(|c| confusion[c][c]).sum();
        Evaluation {
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            confusion,
        }
    }

    /// Accuracy of each class (`None` for a class with no examples).
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(class, row)| {
                let total: usize = row.iter().sum();
                (total > 0).then(|| row[class] as f64 / total as f64)
            })
            .collect()
    }
}

/// Reusable input and label buffers for mini-batches.
struct Batch<T> {
    x: Tensor<T>,
    labels: Vec<usize>,
}

/// Index of the largest score in each row of `scores: (N, K)`.
pub(crate) fn argmax_rows<T: Float>(scores: &Tensor<T>) -> impl Iterator<Item = usize> + '_ {
    let k = scores.shape()[1];
    scores.data().chunks(k).map(|row| {
        row.iter()
            .enumerate()
            .fold((0, T::neg_infinity()), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0
    })
}

/// How many rows of `scores: (N, K)` have their largest score at the label.
pub(crate) fn count_correct<T: Float>(scores: &Tensor<T>, labels: &[usize]) -> usize {
    argmax_rows(scores)
        .zip(labels)
        .filter(|(predicted, &label)| *predicted == label)
        .count()
}

/// Loss, accuracy and confusion matrix of `network` on `data` (evaluation
/// mode), run by [`run_fast`] on the rayon pool in use.
pub fn evaluate<T: Float>(
    network: &mut Network<T>,
    data: &Dataset,
    batch_size: usize,
) -> Result<Evaluation> {
    evaluate_with(network, data, batch_size, false)
}

/// [`evaluate`], with test-time augmentation when `flip_average` is set:
/// each image's class probabilities are the average of those of the image
/// and of its left–right mirror image (for data sets where a mirrored
/// image is still of its class: clothes, not digits). The loss is then
/// `−log` of the averaged probability of the true class.
pub fn evaluate_with<T: Float>(
    network: &mut Network<T>,
    data: &Dataset,
    batch_size: usize,
    flip_average: bool,
) -> Result<Evaluation> {
    let all: Vec<usize> = (0..data.len()).collect();
    run_fast(None, || {
        evaluate_here(network, data, &all, batch_size, flip_average)
    })?
}

/// [`evaluate_with`] of the images `indices` of `data`, on the calling
/// thread.
fn evaluate_here<T: Float>(
    network: &mut Network<T>,
    data: &Dataset,
    indices: &[usize],
    batch_size: usize,
    flip_average: bool,
) -> Result<Evaluation> {
    if batch_size == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    let classes = network.num_classes()?;
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut buffers = EvalBuffers::default();
    let mut loss_sum = 0.0;
    for chunk in indices.chunks(batch_size) {
        let count = |label: usize, predicted: usize| confusion[label][predicted] += 1;
        evaluate_batch(
            network,
            data,
            chunk,
            flip_average,
            &mut buffers,
            &mut loss_sum,
            count,
        )?;
    }
    Ok(Evaluation::from_sums(loss_sum, indices.len(), confusion))
}

/// The buffers an evaluation reuses from batch to batch.
pub(crate) struct EvalBuffers<T> {
    batch: Batch<T>,
    /// With test-time augmentation: the averaged probabilities.
    averaged: Tensor<T>,
}

impl<T: Float> Default for EvalBuffers<T> {
    fn default() -> Self {
        EvalBuffers {
            batch: Batch {
                x: Tensor::default(),
                labels: Vec::new(),
            },
            averaged: Tensor::default(),
        }
    }
}

/// One batch of an evaluation, the images `chunk` of `data`: adds the
/// batch's loss (each image's) to `loss_sum` and calls `count(label,
/// predicted)` for each image. With `flip_average`, the probabilities are
/// the average of the image's and its mirror image's (see
/// [`evaluate_with`]).
pub(crate) fn evaluate_batch<T: Float>(
    network: &mut Network<T>,
    data: &Dataset,
    chunk: &[usize],
    flip_average: bool,
    buffers: &mut EvalBuffers<T>,
    loss_sum: &mut f64,
    mut count: impl FnMut(usize, usize),
) -> Result<()> {
    let EvalBuffers { batch, averaged } = buffers;
    let [channels, height, width] = data.input_shape();
    data.batch_into(chunk, &mut batch.x, &mut batch.labels);
    let loss = network.loss(&batch.x, &batch.labels, false)?;
    let probabilities = if flip_average {
        averaged.copy_from(network.loss_layer.probabilities());
        augment::flip_horizontally(batch.x.data_mut(), chunk.len() * channels, height, width);
        network.loss(&batch.x, &batch.labels, false)?;
        let half = T::cast(0.5);
        for (a, &b) in averaged
            .data_mut()
            .iter_mut()
            .zip(network.loss_layer.probabilities().data())
        {
            *a = half * (*a + b);
        }
        let classes = averaged.len() / chunk.len().max(1);
        for (row, &label) in averaged.data().chunks(classes).zip(&batch.labels) {
            // Floored, so that a probability rounded to 0 costs a large
            // but finite loss.
            *loss_sum -= row[label].as_f64().max(f64::MIN_POSITIVE).ln();
        }
        &*averaged
    } else {
        *loss_sum += loss.as_f64() * chunk.len() as f64;
        network.loss_layer.probabilities()
    };
    for (predicted, &label) in argmax_rows(probabilities).zip(&batch.labels) {
        count(label, predicted);
    }
    Ok(())
}

/// The training images that [`TrainConfig::validation`] holds out, and
/// those left to train on (both in increasing order): `count` images of
/// `len` chosen by the seed. An error unless some images are left.
pub fn validation_split(len: usize, count: usize, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if count >= len {
        return Err(Error::Config(format!(
            "cannot hold out {count} of {len} training images for validation: none would be left to train on"
        )));
    }
    let mut all: Vec<usize> = (0..len).collect();
    if count > 0 {
        Rng::new(seed ^ 0x5EED_0F7A_11DA_7E00).shuffle(&mut all);
    }
    let mut held_out = all[..count].to_vec();
    let mut train = all[count..].to_vec();
    held_out.sort_unstable();
    train.sort_unstable();
    Ok((held_out, train))
}

/// The seed of everything random in epoch `epoch` (0-based) of a run.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// What is not finite after a mini-batch's backward pass — its loss, or the
/// first gradient with a NaN or an infinity — as words for the error.
fn not_finite<T: Float>(network: &mut Network<T>, loss: f64) -> Option<String> {
    if !loss.is_finite() {
        return Some(format!("the loss became {loss}"));
    }
    network.layers.iter_mut().find_map(|named| {
        let param = named
            .layer
            .params()
            .iter()
            .find(|p| !p.grad.data().par_chunks(ELEMENTWISE_CHUNK).all(all_finite))
            .map(|p| p.name)?;
        Some(format!(
            "the gradient of {}.{param} is not finite",
            named.name
        ))
    })
}

/// Whether every value is finite, in one pass that vectorises (it runs on
/// every gradient of every step): `x − x` is 0 for a finite `x` and NaN for
/// NaN and ±∞, so the sum is 0 exactly when all are finite. Sixteen running
/// sums let the compiler use SIMD lanes (an AVX-512 register of f32,
/// through `vectorize::widest`), where a short-circuiting `all` would test
/// one value at a time.
#[allow(clippy::eq_op)] // `x - x` is the point: NaN exactly for NaN and ±∞
fn all_finite<T: Float>(values: &[T]) -> bool {
    const LANES: usize = 16;
    crate::kernels::vectorize::widest(
        #[inline(always)]
        || {
            let mut sums = [T::zero(); LANES];
            let chunks = values.chunks_exact(LANES);
            let rest = chunks.remainder();
            for chunk in chunks {
                for (sum, &x) in sums.iter_mut().zip(chunk) {
                    *sum += x - x;
                }
            }
            let total = rest
                .iter()
                .fold(sums.iter().fold(T::zero(), |a, &b| a + b), |a, &x| {
                    a + (x - x)
                });
            total == T::zero()
        },
    )
}

/// The seed of the dropout masks of mini-batch `batch` of epoch `epoch`
/// (both 0-based): each batch's masks depend on nothing else, so that a run
/// stopped after any batch continues exactly.
fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    epoch_seed(seed, epoch) ^ (batch as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// The seed of the augmentation of mini-batch `batch` of epoch `epoch`: a
/// stream apart from the dropout masks'.
fn augment_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    batch_seed(seed, epoch, batch) ^ 0x6A09_E667_F3BC_C909
}

/// The shuffled order of the training set in epoch `epoch` (0-based).
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    shuffled((0..len).collect(), seed, epoch)
}

/// `images` in the shuffled order of epoch `epoch`.
fn shuffled(mut images: Vec<usize>, seed: u64, epoch: usize) -> Vec<usize> {
    Rng::new(epoch_seed(seed, epoch)).shuffle(&mut images);
    images
}

/// Trains `network` on `data.train`, evaluating on `data.test` after every
/// epoch. `on_progress` sees every batch and epoch together with the network
/// (for progress bars, metrics files and checkpoints); returning an error
/// from it stops training.
///
/// The work runs through [`run_fast`]: on `config.threads` threads of a
/// rayon pool whose workers flush subnormal floats to zero and stay awake
/// between the layers' parallel loops, as `convnet train` does. So
/// `on_progress` runs on one of the pool's threads, and must be `Send`.
pub fn train<T: Float>(
    network: &mut Network<T>,
    data: &TrainTest,
    config: &TrainConfig,
    mut on_progress: impl FnMut(Progress<'_>, &mut Network<T>) -> Result<()> + Send,
) -> Result<Vec<EpochMetrics>> {
    let mut optimizer = build::<T>(config.optimizer, config.learning_rate);
    train_with_optimizer(
        network,
        optimizer.as_mut(),
        data,
        config,
        |event, net, _| on_progress(event, net),
    )
}

/// [`train`] with a given optimizer (whose state may come from a
/// checkpoint); `on_progress` also sees the optimizer, to save its state.
pub fn train_with_optimizer<T: Float>(
    network: &mut Network<T>,
    optimizer: &mut dyn Optimizer<T>,
    data: &TrainTest,
    config: &TrainConfig,
    on_progress: impl FnMut(Progress<'_>, &mut Network<T>, &dyn Optimizer<T>) -> Result<()> + Send,
) -> Result<Vec<EpochMetrics>> {
    config.validate()?;
    // The network keeps its own smoothing once training is over.
    let smoothing = network.loss_layer.label_smoothing();
    network
        .loss_layer
        .set_label_smoothing(config.label_smoothing)?;
    let result = run_fast(config.threads, || {
        train_here(network, optimizer, data, config, on_progress)
    });
    network.loss_layer.set_label_smoothing(smoothing)?;
    result?
}

/// [`train_with_optimizer`] on the calling thread.
fn train_here<T: Float>(
    network: &mut Network<T>,
    optimizer: &mut dyn Optimizer<T>,
    data: &TrainTest,
    config: &TrainConfig,
    mut on_progress: impl FnMut(Progress<'_>, &mut Network<T>, &dyn Optimizer<T>) -> Result<()>,
) -> Result<Vec<EpochMetrics>> {
    if data.train.is_empty() {
        return Err(Error::Data("the training set is empty".into()));
    }
    let mut batch = Batch {
        x: Tensor::default(),
        labels: Vec::new(),
    };
    let (held_out, trained_on) =
        validation_split(data.train.len(), config.validation, config.seed)?;
    let total = trained_on.len().div_ceil(config.batch_size);
    let validate = |network: &mut Network<T>| -> Result<Option<Evaluation>> {
        (!held_out.is_empty())
            .then(|| {
                evaluate_here(
                    network,
                    &data.train,
                    &held_out,
                    config.batch_size,
                    config.test_flip_average,
                )
            })
            .transpose()
    };
    // Early stopping keeps the best epoch's weights; a resumed run starts
    // from its checkpoint's, measured again.
    let mut best: Option<(f64, Option<Weights<T>>)> = None;
    let mut epochs_since_best = 0;
    if config.early_stop.is_some() && config.start_epoch > 0 {
        if let Some(val) = validate(network)? {
            best = Some((val.accuracy, Some(Weights::capture(network))));
        }
    }
    let base_lr = config
        .learning_rate
        .unwrap_or_else(|| optimizer.learning_rate());
    let lr_at = |epoch, batch| {
        config
            .schedule
            .lr_at(base_lr, epoch, batch, total, config.epochs)
    };
    let all_test: Vec<usize> = (0..data.test.len()).collect();
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in config.start_epoch..config.epochs {
        let start = Instant::now();
        let order = shuffled(trained_on.clone(), config.seed, epoch);
        let resumed = config
            .start_position
            .clone()
            .filter(|_| epoch == config.start_epoch)
            .unwrap_or_default();
        let mut position = resumed.clone();
        for (done, chunk) in order
            .chunks(config.batch_size)
            .enumerate()
            .skip(resumed.batches_done)
        {
            // Dropout masks and augmentation depend only on the seed, the
            // epoch and the batch.
            let seed = batch_seed(config.seed, epoch, done);
            let augmenting = (&config.augment, augment_seed(config.seed, epoch, done));
            let (mut loss, correct) = match &config.sharding {
                Some(sharding) => {
                    sharding.gradient(network, &data.train, chunk, seed, augmenting)?
                }
                None => {
                    data.train
                        .batch_into(chunk, &mut batch.x, &mut batch.labels);
                    config.augment.apply(&mut batch.x, augmenting.1)?;
                    network.reseed(seed);
                    let loss = network.gradient(&batch.x, &batch.labels)?.as_f64();
                    let correct = count_correct(network.loss_layer.probabilities(), &batch.labels);
                    (loss, correct)
                }
            };
            if config.weight_decay > 0.0 && config.weight_decay_mode == WeightDecayMode::L2 {
                loss += weight_decay::add_l2_penalty(network, config.weight_decay);
            }
            // Stop before the step, so that the weights (and the last saved
            // checkpoint) stay the last good ones.
            if let Some(what) = not_finite(network, loss) {
                return Err(Error::Config(format!(
                    "{what} in epoch {}, batch {}: training diverged (the learning rate is probably too high)",
                    epoch + 1,
                    done + 1
                )));
            }
            position.correct += correct;
            position.loss_sum += loss * chunk.len() as f64;
            position.batches_done = done + 1;
            if config.schedule != Schedule::Constant {
                optimizer.set_learning_rate(lr_at(epoch, done));
            }
            if config.weight_decay > 0.0 && config.weight_decay_mode == WeightDecayMode::Decoupled {
                let shrink = optimizer.learning_rate() * config.weight_decay;
                weight_decay::shrink_weights(network, shrink);
            }
            optimizer.step(&mut network.params());
            let batch_done = Progress::Batch {
                epoch: epoch + 1,
                done: done + 1,
                total,
                loss,
            };
            on_progress(batch_done, network, optimizer)?;
            if config.stop.is_requested() && done + 1 < total {
                position.seconds = resumed.seconds + start.elapsed().as_secs_f64();
                let event = Progress::Interrupted {
                    epoch: epoch + 1,
                    position: &position,
                };
                on_progress(event, network, optimizer)?;
                return Ok(history);
            }
        }
        let seconds = resumed.seconds + start.elapsed().as_secs_f64();
        // Evaluate with the training batch size: a larger batch would only grow
        // every layer's kept buffers (and the peak memory) for no speed gain.
        // Split over the processes when training is; test-time augmentation
        // and validation run whole on each (the same numbers everywhere).
        let test = match &config.sharding {
            Some(sharding) if !config.test_flip_average => {
                sharding.evaluate(network, &data.test, config.batch_size)?
            }
            _ => evaluate_here(
                network,
                &data.test,
                &all_test,
                config.batch_size,
                config.test_flip_average,
            )?,
        };
        let val = validate(network)?;
        let is_best = match (&val, &best) {
            (None, _) | (Some(_), None) => true,
            (Some(val), Some((best_acc, _))) => val.accuracy > *best_acc,
        };
        if let Some(val) = val.as_ref().filter(|_| is_best) {
            let kept = config.early_stop.map(|_| Weights::capture(network));
            best = Some((val.accuracy, kept));
            epochs_since_best = 0;
        } else {
            epochs_since_best += 1;
        }
        let n = trained_on.len() as f64;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: position.loss_sum / n,
            train_acc: position.correct as f64 / n,
            test_loss: test.loss,
            test_acc: test.accuracy,
            seconds,
            images_per_second: n / seconds.max(1e-9),
            lr: lr_at(epoch, 0),
            val_loss: val.as_ref().map(|v| v.loss),
            val_acc: val.as_ref().map(|v| v.accuracy),
            is_best,
        };
        on_progress(Progress::Epoch(&metrics), network, optimizer)?;
        history.push(metrics);
        if config.stop.is_requested() {
            break;
        }
        if config
            .early_stop
            .is_some_and(|patience| epochs_since_best >= patience)
        {
            break;
        }
    }
    // Early stopping ends with the best epoch's weights.
    if let Some((_, Some(weights))) = best.as_mut() {
        if epochs_since_best > 0 && !config.stop.is_requested() {
            weights.restore(network)?;
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::{all_finite, not_finite};
    use crate::networks::{build_model, ModelOptions};
    use crate::parallel::ELEMENTWISE_CHUNK;
    use crate::rng::Rng;

    #[test]
    fn not_finite_names_the_gradient_past_the_first_chunk() {
        // fc1's weights span several of the parallel check's chunks.
        let mut net = build_model::<f32>(
            "affine(64)-relu-affine(3)",
            &ModelOptions::default(),
            [1, 64, 64],
            3,
            &mut Rng::new(1),
        )
        .unwrap();
        assert!(net.layers[0].layer.params()[0].grad.len() > 3 * ELEMENTWISE_CHUNK);
        assert_eq!(not_finite(&mut net, 0.5), None);
        assert!(not_finite(&mut net, f64::NAN).unwrap().contains("loss"));
        let at = 2 * ELEMENTWISE_CHUNK + 5;
        net.layers[0].layer.params()[0].grad.data_mut()[at] = f32::INFINITY;
        let what = not_finite(&mut net, 0.5).unwrap();
        assert!(what.contains(&net.layers[0].name), "{what}");
    }

    #[test]
    fn all_finite_finds_any_nan_or_infinity() {
        let mut values = vec![1.0f32; 37];
        assert!(all_finite(&values));
        assert!(all_finite::<f32>(&[]));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 7, 8, 31, 36] {
                values[at] = bad;
                assert!(!all_finite(&values), "{bad} at {at}");
                values[at] = f32::MAX;
                assert!(all_finite(&values), "f32::MAX at {at}");
            }
        }
    }
}
