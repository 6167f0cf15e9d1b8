//! Named training recipes: a network and every training option chosen
//! together for a strong result on one data set, so that
//! `convnet train --recipe NAME` reproduces it and prints it in full, as
//! the command line a user can copy and change.
//!
//! ```
//! use convnet::train::recipe;
//! let fast = recipe::find("fashion-fast").unwrap();
//! assert_eq!(fast.dataset, "fashion-mnist");
//! assert!(fast.command_line().starts_with("convnet train --dataset fashion-mnist --model 'conv("));
//! assert!(recipe::find("nonsense").is_err());
//! ```

use super::augment::{Augment, Fill, Shift};
use super::{Schedule, TrainConfig, WeightDecayMode};
use crate::error::{Error, Result};
use crate::optim::OptimizerKind;

/// A network and how to train it (see the [module](self) documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// What `--recipe` calls it.
    pub name: &'static str,
    /// One line on what it is for and what it reaches.
    pub about: &'static str,
    /// The `--dataset` it is made for.
    pub dataset: &'static str,
    /// The network, as a spec (nothing hidden).
    pub model: &'static str,
    /// Epochs in all.
    pub epochs: usize,
    /// Images per mini-batch.
    pub batch_size: usize,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// The base (peak) learning rate.
    pub learning_rate: f64,
    /// How the rate changes over the run.
    pub schedule: Schedule,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// How weight decay is applied.
    pub weight_decay_mode: WeightDecayMode,
    /// Label smoothing ε.
    pub label_smoothing: f64,
    /// The augmentation of the training images.
    pub augment: Augment,
    /// The decay of the averaged model ([`Ema`](super::Ema)), if one is kept.
    pub ema: Option<f64>,
    /// Whether the test images are measured with test-time augmentation.
    pub tta: bool,
}

/// Every recipe, by name.
pub const RECIPES: &[Recipe] = &[Recipe {
    name: "fashion-fast",
    about: "Fashion-MNIST: a VGG-style network with batch norm, one-cycle Adam (decoupled weight decay), \
            label smoothing, random crops and flips, an averaged model and test-time augmentation",
    dataset: "fashion-mnist",
    model: "conv(24,3,pad=1)-bn-relu-conv(24,3,pad=1)-bn-relu-maxpool(2)\
            -conv(48,3,pad=1)-bn-relu-conv(48,3,pad=1)-bn-relu-maxpool(2)\
            -affine(256)-bn-relu-dropout(0.3)-affine(10)",
    epochs: 14,
    batch_size: 128,
    optimizer: OptimizerKind::Adam,
    learning_rate: 0.003,
    schedule: Schedule::OneCycle { warmup: 0.15 },
    weight_decay: 0.05,
    weight_decay_mode: WeightDecayMode::Decoupled,
    label_smoothing: 0.1,
    augment: Augment {
        shift: Some(Shift {
            max_shift: 2,
            fill: Fill::Zero,
        }),
        flip: true,
    },
    ema: Some(0.999),
    tta: true,
}];

/// The recipe called `name`, or an error that lists them all.
pub fn find(name: &str) -> Result<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name).ok_or_else(|| {
        let names: Vec<&str> = RECIPES.iter().map(|r| r.name).collect();
        Error::Config(format!(
            "unknown recipe '{name}' (known: {})",
            names.join(", ")
        ))
    })
}

impl Recipe {
    /// The recipe as a [`TrainConfig`] (the other fields at their defaults).
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            learning_rate: Some(self.learning_rate),
            schedule: self.schedule,
            weight_decay: self.weight_decay,
            weight_decay_mode: self.weight_decay_mode,
            label_smoothing: self.label_smoothing,
            augment: self.augment,
            test_flip_average: self.tta,
            ..TrainConfig::default()
        }
    }

    /// The `convnet train` command line that runs this recipe without
    /// `--recipe`.
    pub fn command_line(&self) -> String {
        let mut line = format!(
            "convnet train --dataset {} --model '{}' --epochs {} --batch-size {} --optimizer {} --lr {} \
             --schedule {} --weight-decay {} --weight-decay-mode {} --label-smoothing {} --augment {}",
            self.dataset,
            self.model,
            self.epochs,
            self.batch_size,
            self.optimizer,
            self.learning_rate,
            self.schedule,
            self.weight_decay,
            self.weight_decay_mode,
            self.label_smoothing,
            self.augment,
        );
        if let Some(decay) = self.ema {
            line.push_str(&format!(" --ema {decay}"));
        }
        if self.tta {
            line.push_str(" --tta");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::spec::parse_spec;

    #[test]
    fn every_recipe_is_valid_and_its_command_line_reads_back() {
        for recipe in RECIPES {
            recipe.train_config().validate().unwrap();
            parse_spec(recipe.model).unwrap();
            let line = recipe.command_line();
            // Each value appears as the CLI would parse it back.
            for part in [
                format!("--schedule {}", recipe.schedule),
                format!("--augment {}", recipe.augment),
                format!("--weight-decay-mode {}", recipe.weight_decay_mode),
            ] {
                assert!(line.contains(&part), "{line} lacks {part}");
            }
            let schedule: Schedule = recipe.schedule.to_string().parse().unwrap();
            assert_eq!(schedule, recipe.schedule);
            let augment: Augment = recipe.augment.to_string().parse().unwrap();
            assert_eq!(augment, recipe.augment);
        }
    }
}
