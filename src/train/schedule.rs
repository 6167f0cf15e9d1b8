//! Learning-rate schedules: the rate of every mini-batch as a pure function
//! of where the run is, so that a resumed run (from an epoch's end or from
//! the middle of one) uses exactly the rates of an uninterrupted one.
//!
//! With `s = epoch · batches_per_epoch + batch` the (0-based) step and
//! `S = epochs · batches_per_epoch` the steps of the whole run:
//!
//! | schedule | rate of step `s` |
//! |---|---|
//! | `constant` | `base` |
//! | `step:EVERY:GAMMA` | `base · GAMMA^⌊epoch / EVERY⌋` (per epoch) |
//! | `cosine` | `base · ½(1 + cos(π·s/S))` (per batch, from `base` towards 0) |
//! | `onecycle:W` | `base · (s + 1)/N` for `s < N = max(1, round(W·S))`, then `base · ½(1 + cos(π·(s − N)/(S − N)))` |
//!
//! ```
//! use convnet::train::Schedule;
//! let s: Schedule = "step:5:0.1".parse().unwrap();
//! assert_eq!(s.to_string(), "step:5:0.1");
//! // Epoch 7 (0-based) of 15, batch 3 of 80: one decay so far.
//! assert!((s.lr_at(0.01, 7, 3, 80, 15) - 0.001).abs() < 1e-15);
//! ```

use crate::error::{Error, Result};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// How the learning rate changes over a run (see the [module](self)
/// documentation for the formulas). The default is [`Schedule::Constant`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// The base rate times `gamma` after every `every` epochs.
    Step {
        /// Epochs between two decays (at least 1).
        every: usize,
        /// The factor of each decay (positive).
        gamma: f64,
    },
    /// Cosine annealing from the base rate towards 0 over the run, per batch.
    Cosine,
    /// Linear warm-up over the first `warmup` fraction of the run's batches,
    /// then cosine annealing towards 0, per batch.
    OneCycle {
        /// The fraction of the run spent warming up, in [0, 1).
        warmup: f64,
    },
}

impl Schedule {
    /// The learning rate of mini-batch `batch` (0-based) of epoch `epoch`
    /// (0-based) in a run of `epochs` epochs of `batches_per_epoch` batches,
    /// for the base rate `base`.
    pub fn lr_at(
        &self,
        base: f64,
        epoch: usize,
        batch: usize,
        batches_per_epoch: usize,
        epochs: usize,
    ) -> f64 {
        let total = (epochs * batches_per_epoch).max(1) as f64;
        let step = (epoch * batches_per_epoch + batch) as f64;
        let cosine = |done: f64, over: f64| 0.5 * (1.0 + (PI * (done / over).min(1.0)).cos());
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                let decays = i32::try_from(epoch / every.max(1)).unwrap_or(i32::MAX);
                base * gamma.powi(decays)
            }
            Schedule::Cosine => base * cosine(step, total),
            Schedule::OneCycle { warmup } => {
                let warm = (warmup * total).round().max(1.0);
                if step < warm {
                    base * (step + 1.0) / warm
                } else {
                    base * cosine(step - warm, (total - warm).max(1.0))
                }
            }
        }
    }

    /// An error for a step schedule every 0 epochs or with a factor that is
    /// not positive, or a warm-up fraction outside [0, 1).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Step { every, gamma } if every == 0 || !(gamma.is_finite() && gamma > 0.0) => {
                Err(Error::Config(format!(
                    "step schedule: EVERY must be at least 1 and GAMMA a positive number, got step:{every}:{gamma}"
                )))
            }
            Schedule::OneCycle { warmup } if !(0.0..1.0).contains(&warmup) => Err(Error::Config(
                format!("onecycle schedule: the warm-up fraction must be in [0, 1), got {warmup}"),
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Schedule {
    /// The form [`FromStr`] reads: `constant`, `step:EVERY:GAMMA`, `cosine`,
    /// `onecycle:W`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Schedule::Cosine => f.write_str("cosine"),
            Schedule::OneCycle { warmup } => write!(f, "onecycle:{warmup}"),
        }
    }
}

impl FromStr for Schedule {
    type Err = Error;

    /// Parses `constant`, `step:EVERY:GAMMA`, `cosine` or `onecycle:W`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "unknown schedule '{s}' (expected constant, step:EVERY:GAMMA, cosine or onecycle:WARMUP_FRACTION)"
            ))
        };
        let parts: Vec<&str> = s.trim().split(':').collect();
        let schedule = match parts[..] {
            ["constant"] => Schedule::Constant,
            ["cosine"] => Schedule::Cosine,
            ["step", every, gamma] => Schedule::Step {
                every: every.parse().map_err(|_| bad())?,
                gamma: gamma.parse().map_err(|_| bad())?,
            },
            ["onecycle", warmup] => Schedule::OneCycle {
                warmup: warmup.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        schedule.validate()?;
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-15 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn constant_is_the_base_rate() {
        for (e, b) in [(0, 0), (3, 7), (9, 99)] {
            assert_eq!(Schedule::Constant.lr_at(0.001, e, b, 100, 10), 0.001);
        }
    }

    #[test]
    fn step_decays_every_few_epochs() {
        let s = Schedule::Step {
            every: 2,
            gamma: 0.5,
        };
        close(s.lr_at(0.1, 0, 0, 10, 6), 0.1);
        close(s.lr_at(0.1, 1, 9, 10, 6), 0.1);
        close(s.lr_at(0.1, 2, 0, 10, 6), 0.05);
        close(s.lr_at(0.1, 5, 3, 10, 6), 0.025);
        close(s.lr_at(0.1, 4, 0, 10, 6), 0.025);
        close(s.lr_at(0.1, 3, 9, 10, 6), 0.05);
    }

    #[test]
    fn cosine_anneals_per_batch() {
        // 4 epochs of 10 batches: S = 40.
        let s = Schedule::Cosine;
        close(s.lr_at(1.0, 0, 0, 10, 4), 1.0);
        // Step 20 of 40: cos(π/2) = 0 → ½.
        close(s.lr_at(1.0, 2, 0, 10, 4), 0.5);
        // Step 10: ½(1 + cos(π/4)) = ½ + √2/4.
        close(s.lr_at(1.0, 1, 0, 10, 4), 0.5 + 2f64.sqrt() / 4.0);
        // Step 30: ½(1 + cos(3π/4)) = ½ − √2/4; mid-epoch batches differ.
        close(s.lr_at(2.0, 3, 0, 10, 4), 1.0 - 2f64.sqrt() / 2.0);
        assert!(s.lr_at(1.0, 3, 9, 10, 4) < s.lr_at(1.0, 3, 8, 10, 4));
        assert!(s.lr_at(1.0, 3, 9, 10, 4) > 0.0);
    }

    #[test]
    fn onecycle_warms_up_then_anneals() {
        // S = 40 steps, warm-up N = 0.25·40 = 10 steps.
        let s = Schedule::OneCycle { warmup: 0.25 };
        close(s.lr_at(1.0, 0, 0, 10, 4), 0.1);
        close(s.lr_at(1.0, 0, 4, 10, 4), 0.5);
        close(s.lr_at(1.0, 0, 9, 10, 4), 1.0);
        // Then cosine over the remaining 30 steps: step 10 is the peak,
        // step 25 halfway (½), step 20 a third of the way (½(1 + cos(π/3)) = ¾).
        close(s.lr_at(1.0, 1, 0, 10, 4), 1.0);
        close(s.lr_at(1.0, 2, 5, 10, 4), 0.5);
        close(s.lr_at(1.0, 2, 0, 10, 4), 0.75);
        // No warm-up fraction: one step of warm-up at the full rate.
        let none = Schedule::OneCycle { warmup: 0.0 };
        close(none.lr_at(1.0, 0, 0, 10, 4), 1.0);
    }

    #[test]
    fn parses_and_displays_back() {
        for text in ["constant", "cosine", "step:5:0.1", "onecycle:0.3"] {
            let s: Schedule = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(
            "step:3:0.5".parse::<Schedule>().unwrap(),
            Schedule::Step {
                every: 3,
                gamma: 0.5
            }
        );
        for bad in [
            "",
            "linear",
            "step",
            "step:0:0.1",
            "step:2:-1",
            "step:2",
            "onecycle",
            "onecycle:1",
            "onecycle:-0.1",
            "cosine:1",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }
}
