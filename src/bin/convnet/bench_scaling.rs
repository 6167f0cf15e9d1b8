//! `convnet bench --scaling`: how much faster a training step runs on all of
//! the pool's threads than on one, measured in one process.
//!
//! Two copies of the network (the same seed, so the same weights) train on
//! the same batch, one in a one-thread pool and one in the main pool, and
//! take turns: each round runs a block of steps (about 0.2 s) on each side,
//! the order swapped every round, so both see the same machine state. Each
//! copy keeps its own buffers (a layer sizes its per-thread buffers to the
//! pool it runs in). Reported, in milliseconds per step: the fastest block
//! on each side, their ratio, and the median of the per-round ratios.
//!
//! On a shared machine, whole epochs timed one after the other move from
//! run to run with the neighbours' load (README, "Threads and batch
//! size"); rounds a fraction of a second apart see the same neighbours.
//! Turns of single steps were tried first: the many-thread side then
//! started every step with its threads asleep and the other copy's data in
//! the caches, and its median step came out far above its fastest.

use convnet::networks::{build_model, ModelOptions};
use convnet::optim::{build, OptimizerKind};
use convnet::{Rng, Tensor};
use std::time::Instant;

/// What [`measure`] found: step times in milliseconds.
pub struct Scaling {
    /// Threads of the main pool (the "many" side).
    pub threads: usize,
    pub rounds: usize,
    pub fastest_one: f64,
    pub fastest_many: f64,
    /// The median over rounds of (one-thread step / many-thread step).
    /// (All times are a block's mean step.)
    pub paired_median: f64,
}

impl Scaling {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "threads": self.threads,
            "rounds": self.rounds,
            "fastest_step_ms_1_thread": self.fastest_one,
            "fastest_step_ms": self.fastest_many,
            "speedup_fastest": self.fastest_one / self.fastest_many,
            "speedup_paired_median": self.paired_median,
        })
    }

    pub fn line(&self, batch: usize) -> String {
        format!(
            "scaling   (batch {batch:>4}): 1 → {} threads, fastest {:.2} → {:.2} ms per step ({:.2}×), median of {} paired rounds {:.2}×",
            self.threads,
            self.fastest_one,
            self.fastest_many,
            self.fastest_one / self.fastest_many,
            self.rounds,
            self.paired_median
        )
    }
}

/// Alternates blocks of training steps (gradient + Adam) of `model` on `x`
/// between a one-thread pool and the current pool for about `seconds` (at
/// least 3 rounds, after two warm-up steps on each side, the second of
/// which sizes the blocks). Call it from the main pool.
pub fn measure(
    model: &str,
    reference: &crate::ReferenceFlag,
    shape: [usize; 3],
    classes: usize,
    (x, labels): (&Tensor<f32>, &[usize]),
    seconds: f64,
) -> anyhow::Result<Scaling> {
    let one_thread = convnet::parallel::denormals::pool_builder_with_flushed_denormals()
        .num_threads(1)
        .build()?;
    let options = ModelOptions::default();
    let build_one = || -> anyhow::Result<_> {
        let mut net = build_model::<f32>(model, &options, shape, classes, &mut Rng::new(0))?;
        reference.apply(&mut net);
        Ok(net)
    };
    // [0]: the one-thread pool's copy, [1]: the main pool's.
    let mut nets = [build_one()?, build_one()?];
    let mut optimizers = [0, 1].map(|_| build::<f32>(OptimizerKind::Adam, None));
    let mut step = |side: usize| -> anyhow::Result<f64> {
        let (net, optimizer) = (&mut nets[side], &mut optimizers[side]);
        let mut run = || -> anyhow::Result<f64> {
            let start = Instant::now();
            net.gradient(x, labels)?;
            optimizer.step(&mut net.params());
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        if side == 0 {
            one_thread.install(run)
        } else {
            run()
        }
    };
    // Warm-up: each copy sizes its buffers once. Then each side runs a
    // block of steps per turn (about 0.2 s), so that what a turn starts
    // with (the other copy's data in the caches, the pool's threads asleep)
    // weighs little.
    step(0)?;
    step(1)?;
    let slower = step(0)?.max(step(1)?);
    let block = ((200.0 / slower) as usize).clamp(1, 50);
    let mut block_mean = |side: usize| -> anyhow::Result<f64> {
        let mut total = 0.0;
        for _ in 0..block {
            total += step(side)?;
        }
        Ok(total / block as f64)
    };
    let (mut ones, mut manys) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while ones.len() < 3 || start.elapsed().as_secs_f64() < seconds {
        let order = if ones.len() % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut times = [0.0; 2];
        for side in order {
            times[side] = block_mean(side)?;
        }
        ones.push(times[0]);
        manys.push(times[1]);
    }
    let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mut ratios: Vec<f64> = ones.iter().zip(&manys).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    Ok(Scaling {
        threads: rayon::current_num_threads(),
        rounds: ratios.len(),
        fastest_one: fastest(&ones),
        fastest_many: fastest(&manys),
        paired_median: ratios[ratios.len() / 2],
    })
}
