//! Data-parallel training: one mini-batch's gradient computed in *shards*,
//! by one process or by several (MPI ranks, feature `mpi`), with the same
//! numbers to the bit either way.
//!
//! A global mini-batch of `B` images is cut into `S` shards (`S` a power of
//! two, the cut independent of how many processes there are). Each shard's
//! gradient is computed on its own, with its own dropout masks (seeded from
//! the batch's seed and the shard's index), and scaled by `len(shard) / B`,
//! so that the shards add up to the mean gradient of the batch. They add up
//! by a fixed pairwise tree:
//!
//! ```text
//! S = 4:   g = (g₀ + g₁) + (g₂ + g₃)
//! ```
//!
//! With `N` processes (`N` a power of two, at most `S`), process `r` owns
//! the shards `r·S/N ..< (r+1)·S/N`, a whole subtree, and adds them up
//! itself; the top `log₂ N` levels of the tree are added by *recursive
//! doubling*: at step `d = 1, 2, 4, …` process `r` swaps its partial sum
//! with process `r XOR d`, and both add the two (a sum of two floats is
//! the same number in either order, so both sides get the same bits). Every process ends with exactly the tree's sum, whatever `N`; so
//! one process with `S` shards, or 2 or 4 processes, take the same steps.
//! Floating-point addition is not associative, which is why the order is
//! fixed here rather than left to `MPI_Allreduce`.
//!
//! Batch normalisation computes its statistics per shard (as PyTorch's DDP
//! does per process by default, but per shard here, so that they do not
//! depend on `N` either); its running averages follow shard 0 alone: the
//! process that owns it keeps the averages after shard 0's forward pass and
//! the others receive them in the same exchange as the gradient.
//!
//! Evaluation is split by batches over the processes; each batch's loss
//! and the confusion counts travel back, and every process adds the losses
//! in the order of the batches, as [`evaluate`](crate::train::evaluate) does:
//! the test metrics are those of one process.
//!
//! What moves the bytes is a [`Transport`]: [`local::LocalTransport`] (threads
//! of one process, for tests), or `mpi::MpiTransport` (feature `mpi`).

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::networks::Network;
use crate::tensor::{Float, Tensor};
use crate::train::{count_correct, evaluate_batch, Augment, EvalBuffers, Evaluation};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Moves bytes between the processes of a data-parallel run.
pub trait Transport: Send + Sync {
    /// This process's number, `0 ..< size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Sends `send` to process `partner` and receives its message, of the
    /// same length, into `receive` (both at once: the partner does the same).
    fn exchange(&self, partner: usize, send: &[u8], receive: &mut [u8]) -> Result<()>;
}

/// Time and bytes of the sharded steps so far (see [`Sharding::stats`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeStats {
    /// Training steps (mini-batches) taken.
    pub steps: usize,
    /// Bytes this process sent in them (received: as many).
    pub bytes_sent: u64,
    /// Seconds spent computing the shards' gradients (forward and backward)
    /// and adding them up locally.
    pub compute_seconds: f64,
    /// Seconds spent in the exchange between processes (waiting for the
    /// partner included).
    pub exchange_seconds: f64,
}

/// How a mini-batch's gradient is computed: in `shards` shards, over the
/// processes of `transport` (see the [module](self) documentation). Set as
/// [`TrainConfig::sharding`](crate::train::TrainConfig::sharding).
#[derive(Clone)]
pub struct Sharding {
    shards: usize,
    transport: Option<Arc<dyn Transport>>,
    stats: Arc<Mutex<ExchangeStats>>,
}

impl std::fmt::Debug for Sharding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharding")
            .field("shards", &self.shards)
            .field("rank", &self.rank())
            .field("size", &self.size())
            .finish()
    }
}

impl PartialEq for Sharding {
    /// Two shardings are equal when they cut batches alike and share their
    /// transport (or have none).
    fn eq(&self, other: &Self) -> bool {
        let same_transport = match (&self.transport, &other.transport) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.shards == other.shards && same_transport
    }
}

/// A partial sum of the shard tree: the scaled gradients, then the loss
/// summed over the images and the number classified correctly.
struct PartialSum<T> {
    /// Shards in it (a power of two, the subtree's size).
    shards: usize,
    grad: Vec<T>,
    loss_sum: f64,
    correct: f64,
}

impl<T: Float> PartialSum<T> {
    /// `self + later`, `self` holding the lower-numbered shards.
    fn followed_by(mut self, later: PartialSum<T>) -> PartialSum<T> {
        for (a, &b) in self.grad.iter_mut().zip(&later.grad) {
            *a += b;
        }
        self.loss_sum += later.loss_sum;
        self.correct += later.correct;
        self.shards += later.shards;
        self
    }
}

/// The images `shard` of `shards` covers of a batch of `len` (the first
/// `len % shards` shards hold one more than the others).
pub fn shard_range(shard: usize, shards: usize, len: usize) -> Range<usize> {
    let (base, extra) = (len / shards, len % shards);
    let start = base * shard + shard.min(extra);
    start..start + base + usize::from(shard < extra)
}

/// The seed of the dropout masks of shard `shard` of the batch whose seed
/// is `batch_seed`.
pub fn shard_seed(batch_seed: u64, shard: usize) -> u64 {
    batch_seed ^ (shard as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)
}

/// A rank's block `rank·count/size ..< (rank+1)·count/size` of `count` items.
fn block(rank: usize, size: usize, count: usize) -> Range<usize> {
    shard_range(rank, size, count)
}

impl Sharding {
    /// `shards` shards in this process alone.
    pub fn in_one_process(shards: usize) -> Result<Sharding> {
        Sharding::build(shards, None)
    }

    /// `shards` shards shared by the processes of `transport`.
    pub fn over(shards: usize, transport: Arc<dyn Transport>) -> Result<Sharding> {
        Sharding::build(shards, Some(transport))
    }

    fn build(shards: usize, transport: Option<Arc<dyn Transport>>) -> Result<Sharding> {
        if !shards.is_power_of_two() {
            return Err(Error::Config(format!(
                "the number of shards must be a power of two (1, 2, 4, …), got {shards}"
            )));
        }
        if let Some(t) = &transport {
            let size = t.size();
            if !size.is_power_of_two() || size > shards {
                return Err(Error::Config(format!(
                    "{size} processes cannot share {shards} shards: the number of processes must be a power of two, at most the number of shards"
                )));
            }
        }
        Ok(Sharding {
            shards,
            transport,
            stats: Arc::default(),
        })
    }

    /// The number of shards of every mini-batch.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// This process's number (0 without a transport).
    pub fn rank(&self) -> usize {
        self.transport.as_ref().map_or(0, |t| t.rank())
    }

    /// The number of processes (1 without a transport).
    pub fn size(&self) -> usize {
        self.transport.as_ref().map_or(1, |t| t.size())
    }

    /// The time and bytes of the steps so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Forward and backward over this process's shards of the mini-batch
    /// `chunk` (indices into `data`), then the exchange: afterwards every
    /// parameter's gradient is the tree sum of all shards (the batch's mean
    /// gradient) on every process. Returns the batch's mean loss and the
    /// number of its images classified correctly.
    pub fn gradient<T: Float>(
        &self,
        network: &mut Network<T>,
        data: &Dataset,
        chunk: &[usize],
        batch_seed: u64,
        (augment, augment_seed): (&Augment, u64),
    ) -> Result<(f64, usize)> {
        let start = Instant::now();
        let (rank, size) = (self.rank(), self.size());
        let mut x = Tensor::default();
        let mut labels = Vec::new();
        // Partial sums waiting for a partner of the same size: a binary
        // counter, which adds a power-of-two run of shards as a balanced tree.
        let mut pending: Vec<PartialSum<T>> = Vec::new();
        let mut after_shard_0: Option<Vec<T>> = None;
        for shard in block(rank, size, self.shards) {
            let images = &chunk[shard_range(shard, self.shards, chunk.len())];
            let mut leaf = PartialSum {
                shards: 1,
                grad: Vec::new(),
                loss_sum: 0.0,
                correct: 0.0,
            };
            if images.is_empty() {
                // A batch smaller than the shard count: this shard adds 0.
                leaf.grad = vec![T::zero(); network.num_params()];
            } else {
                data.batch_into(images, &mut x, &mut labels);
                // Each image moves as it would in the whole batch: its
                // draws follow from its place in the batch, not the shard.
                let first = shard_range(shard, self.shards, chunk.len()).start;
                augment.apply_at(&mut x, augment_seed, first)?;
                network.reseed(shard_seed(batch_seed, shard));
                let loss = network.gradient(&x, &labels)?.as_f64();
                leaf.loss_sum = loss * images.len() as f64;
                leaf.correct = count_correct(network.loss_layer.probabilities(), &labels) as f64;
                let scale = T::cast(images.len() as f64 / chunk.len() as f64);
                leaf.grad = flat_grads(network, scale);
            }
            if shard == 0 {
                after_shard_0 = Some(flat_buffers(network));
            }
            pending.push(leaf);
            while pending.len() >= 2
                && pending[pending.len() - 1].shards == pending[pending.len() - 2].shards
            {
                let later = pending.pop().expect("two pending");
                let earlier = pending.pop().expect("two pending");
                pending.push(earlier.followed_by(later));
            }
        }
        let mut sum = pending
            .pop()
            .ok_or_else(|| Error::Config("a process with no shard".into()))?;
        // The running averages as they were after shard 0 (this process's,
        // or the lowest process's after the exchange).
        let mut buffers = after_shard_0.unwrap_or_else(|| flat_buffers(network));
        let computed = Instant::now();
        let mut bytes_sent = 0u64;
        if let Some(transport) = self.transport.as_ref().filter(|t| t.size() > 1) {
            bytes_sent = all_reduce_tree(transport.as_ref(), &mut sum, &mut buffers)?;
        }
        let exchanged = Instant::now();
        set_flat_grads(network, &sum.grad);
        set_flat_buffers(network, &buffers);
        if let Ok(mut stats) = self.stats.lock() {
            stats.steps += 1;
            stats.bytes_sent += bytes_sent;
            stats.compute_seconds += (computed - start).as_secs_f64();
            stats.exchange_seconds += (exchanged - computed).as_secs_f64();
        }
        Ok((
            sum.loss_sum / chunk.len().max(1) as f64,
            sum.correct as usize,
        ))
    }

    /// [`evaluate`](crate::train::evaluate) with the batches shared out
    /// over the processes: the same numbers as one process.
    pub fn evaluate<T: Float>(
        &self,
        network: &mut Network<T>,
        data: &Dataset,
        batch_size: usize,
    ) -> Result<Evaluation> {
        if batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        let classes = network.num_classes()?;
        let batches = data.len().div_ceil(batch_size);
        // Each batch's loss sum, then the confusion counts; each process
        // fills in its own batches and the exchange adds the rest (x + 0 = x).
        let mut values = vec![0.0f64; batches + classes * classes];
        let (losses, confusion) = values.split_at_mut(batches);
        let mut buffers = EvalBuffers::default();
        let indices: Vec<usize> = (0..data.len()).collect();
        for b in block(self.rank(), self.size(), batches) {
            let chunk = &indices[b * batch_size..((b + 1) * batch_size).min(data.len())];
            let count =
                |label: usize, predicted: usize| confusion[label * classes + predicted] += 1.0;
            evaluate_batch(
                network,
                data,
                chunk,
                false,
                &mut buffers,
                &mut losses[b],
                count,
            )?;
        }
        if let Some(transport) = self.transport.as_ref().filter(|t| t.size() > 1) {
            all_reduce_sum(transport.as_ref(), &mut values)?;
        }
        let (losses, counts) = values.split_at(batches);
        // In the order of the batches, as one process adds them.
        let mut loss_sum = 0.0;
        for &l in losses {
            loss_sum += l;
        }
        let confusion: Vec<Vec<usize>> = counts
            .chunks(classes)
            .map(|row| row.iter().map(|&c| c as usize).collect())
            .collect();
        Ok(Evaluation::from_sums(loss_sum, data.len(), confusion))
    }
}

/// Every parameter's gradient times `scale`, one after another.
fn flat_grads<T: Float>(network: &mut Network<T>, scale: T) -> Vec<T> {
    let mut flat = Vec::new();
    for p in network.params() {
        flat.extend(p.grad.data().iter().map(|&g| g * scale));
    }
    flat
}

fn set_flat_grads<T: Float>(network: &mut Network<T>, flat: &[T]) {
    let mut rest = flat;
    for p in network.params() {
        let (mine, after) = rest.split_at(p.grad.len());
        p.grad.data_mut().copy_from_slice(mine);
        rest = after;
    }
}

/// Every layer's buffers (batch norm's running averages), one after another.
fn flat_buffers<T: Float>(network: &mut Network<T>) -> Vec<T> {
    let mut flat = Vec::new();
    for named in network.layers.iter_mut() {
        for (_, buffer) in named.layer.buffers() {
            flat.extend_from_slice(buffer.data());
        }
    }
    flat
}

fn set_flat_buffers<T: Float>(network: &mut Network<T>, flat: &[T]) {
    let mut rest = flat;
    for named in network.layers.iter_mut() {
        for (_, buffer) in named.layer.buffers() {
            let (mine, after) = rest.split_at(buffer.len());
            buffer.data_mut().copy_from_slice(mine);
            rest = after;
        }
    }
}

/// Bytes of one value of `T` on the wire (4 for f32, 8 for f64).
fn wire_size<T: Float>() -> Result<usize> {
    match std::mem::size_of::<T>() {
        size @ (4 | 8) => Ok(size),
        size => Err(Error::Config(format!(
            "cannot exchange values of {size} bytes (f32 and f64 only)"
        ))),
    }
}

/// Appends `values` to `out` as little-endian bytes of `T`'s width.
fn put<T: Float>(values: &[T], out: &mut Vec<u8>) {
    let size = std::mem::size_of::<T>();
    let start = out.len();
    out.resize(start + std::mem::size_of_val(values), 0);
    let bytes = out[start..].chunks_exact_mut(size);
    if size == 4 {
        // Exact: T is f32 here.
        for (b, &v) in bytes.zip(values) {
            b.copy_from_slice(&(v.as_f64() as f32).to_le_bytes());
        }
    } else {
        for (b, &v) in bytes.zip(values) {
            b.copy_from_slice(&v.as_f64().to_le_bytes());
        }
    }
}

/// Reads `values` back from [`put`]'s bytes.
fn get<T: Float>(bytes: &[u8], values: &mut [T]) {
    if std::mem::size_of::<T>() == 4 {
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = T::cast(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64);
        }
    } else {
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(8)) {
            *v = T::cast(f64::from_le_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ]));
        }
    }
}

/// The top of the shard tree by recursive doubling: afterwards `sum` holds
/// the sum over all processes, added in the tree's order, and `buffers`
/// process 0's. Returns the bytes this process sent.
fn all_reduce_tree<T: Float>(
    transport: &dyn Transport,
    sum: &mut PartialSum<T>,
    buffers: &mut [T],
) -> Result<u64> {
    let value = wire_size::<T>()?;
    let (rank, size) = (transport.rank(), transport.size());
    let (grads, kept) = (sum.grad.len(), buffers.len());
    let len = (grads + kept)
        .checked_mul(value)
        .and_then(|n| n.checked_add(16))
        .ok_or_else(|| Error::Config("the gradient is too large to exchange".into()))?;
    let mut send = Vec::with_capacity(len);
    let mut receive = vec![0u8; len];
    let mut theirs = vec![T::zero(); grads + kept];
    let mut bytes_sent = 0u64;
    let mut distance = 1;
    while distance < size {
        let partner = rank ^ distance;
        send.clear();
        put(&sum.grad, &mut send);
        put(buffers, &mut send);
        send.extend_from_slice(&sum.loss_sum.to_le_bytes());
        send.extend_from_slice(&sum.correct.to_le_bytes());
        transport.exchange(partner, &send, &mut receive)?;
        bytes_sent += len as u64;
        let (values, scalars) = receive.split_at(len - 16);
        get(values, &mut theirs);
        let their_loss = f64::from_le_bytes(scalars[..8].try_into().expect("8 bytes"));
        let their_correct = f64::from_le_bytes(scalars[8..].try_into().expect("8 bytes"));
        let (their_grad, their_buffers) = theirs.split_at(grads);
        // Both partners add the same two numbers, and IEEE 754 addition of
        // two numbers is commutative: the same bits on both sides. The order
        // only matters from three terms on, and the tree fixes that.
        for (mine, &their) in sum.grad.iter_mut().zip(their_grad) {
            *mine += their;
        }
        sum.loss_sum += their_loss;
        sum.correct += their_correct;
        if rank > partner {
            // The lower process's running averages, which come from process 0.
            buffers.copy_from_slice(their_buffers);
        }
        sum.shards *= 2;
        distance *= 2;
    }
    Ok(bytes_sent)
}

/// Adds `values` over all processes, by recursive doubling.
fn all_reduce_sum(transport: &dyn Transport, values: &mut [f64]) -> Result<u64> {
    let (rank, size) = (transport.rank(), transport.size());
    let mut send = Vec::with_capacity(values.len() * 8);
    let mut receive = vec![0u8; values.len() * 8];
    let mut bytes_sent = 0u64;
    let mut distance = 1;
    while distance < size {
        let partner = rank ^ distance;
        send.clear();
        put(values, &mut send);
        transport.exchange(partner, &send, &mut receive)?;
        bytes_sent += send.len() as u64;
        for (v, b) in values.iter_mut().zip(receive.chunks_exact(8)) {
            let theirs = f64::from_le_bytes(b.try_into().expect("8 bytes"));
            // Commutative, as in `all_reduce_tree`: the same bits on both sides.
            *v += theirs;
        }
        distance *= 2;
    }
    Ok(bytes_sent)
}

#[cfg(test)]
mod tests;
