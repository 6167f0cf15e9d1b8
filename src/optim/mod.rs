//! Optimizers (book §6.1, `common/optimizer.py`): the rules that turn a
//! parameter's gradient `g = ∂L/∂W` into an update of the parameter `W`.
//!
//! | optimizer | update | book |
//! |---|---|---|
//! | [`Sgd`] | `W ← W − lr·g` | §6.1.2 |
//! | [`Momentum`] | `v ← momentum·v − lr·g; W ← W + v` | §6.1.4 |
//! | [`Nesterov`] | Nesterov's accelerated gradient, in the book's form | `optimizer.py` |
//! | [`AdaGrad`] | `h ← h + g⊙g; W ← W − lr·g/(√h + 1e-7)` | §6.1.5 |
//! | [`RmsProp`] | `h ← decay·h + (1 − decay)·g⊙g; W ← W − lr·g/(√h + 1e-7)` | §6.1.5, `optimizer.py` |
//! | [`Adam`] | bias-corrected moving averages of `g` and `g⊙g` | §6.1.6 |
//!
//! Each optimizer implements [`Optimizer`]. A network hands it its parameter
//! list ([`Param`]s, always in the same order) after every backward pass;
//! per-parameter state (velocities, squared-gradient sums, moments) is kept
//! by position in that list and created, as zeros, on the first step.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{build, OptimizerKind};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[2], vec![1.0f64, -2.0]).unwrap();
//! let mut dw = Tensor::from_vec(&[2], vec![0.5, 0.25]).unwrap();
//! let kind: OptimizerKind = "sgd".parse().unwrap();
//! let mut opt = build::<f64>(kind, Some(0.1));
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! // W ← W − 0.1·g
//! assert!((w.data()[0] - 0.95).abs() < 1e-12);
//! assert!((w.data()[1] + 2.025).abs() < 1e-12);
//! ```

mod adagrad;
mod adam;
mod momentum;
mod nesterov;
mod rmsprop;
mod sgd;
mod state;

pub use adagrad::{AdaGrad, AdaGradConfig};
pub use adam::{Adam, AdamConfig};
pub use momentum::{Momentum, MomentumConfig};
pub use nesterov::{Nesterov, NesterovConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};
pub use state::check_state_fits;

use crate::error::{Error, Result};
use crate::layers::Param;
use crate::tensor::Float;
use std::fmt;
use std::str::FromStr;

/// The small constant the book adds to `√h` (AdaGrad, RMSprop) and `√v`
/// (Adam) so that the division never divides by zero.
pub const EPSILON: f64 = 1e-7;

/// A rule that updates parameters from their gradients.
pub trait Optimizer<T: Float>: Send {
    /// The optimizer's name as the book spells it (`"SGD"`, `"Adam"`, ...).
    fn name(&self) -> &'static str;

    /// Updates every parameter from its gradient. `params` is the network's
    /// parameter list, always in the same order; state (velocities, moments)
    /// is kept per position and created (zeros) on the first call.
    ///
    /// # Panics
    /// If `params` is not the list the state was made for (a different
    /// count, or a parameter whose size changed) or a gradient's size differs
    /// from its parameter's: these are programming errors.
    fn step(&mut self, params: &mut [Param<'_, T>]);

    /// The (base) learning rate.
    fn learning_rate(&self) -> f64;

    /// Changes the learning rate (for schedules); the state is kept.
    fn set_learning_rate(&mut self, lr: f64);

    /// The optimizer's state tensors, flattened, in a fixed order (for
    /// checkpoints). Each entry is `(name, data)`, e.g. `("v.0", ..)` for the
    /// velocity of parameter 0. Empty before the first step (and always, for
    /// SGD).
    fn state(&self) -> Vec<(String, Vec<T>)>;

    /// Restores state produced by [`state`](Self::state) of the same kind of
    /// optimizer. An [`Error::Config`] if the entries are not what this
    /// optimizer writes (names, order, matching lengths); nothing changes
    /// then. Sizes against the parameters are checked on the next `step`.
    fn load_state(&mut self, state: &[(String, Vec<T>)]) -> Result<()>;
}

/// The six optimizers, for choosing one by name (e.g. on the command line).
///
/// ```
/// use convnet::optim::OptimizerKind;
/// let kind: OptimizerKind = "adam".parse().unwrap();
/// assert_eq!(kind, OptimizerKind::Adam);
/// assert_eq!(kind.to_string(), "adam");
/// assert_eq!(kind.default_learning_rate(), 0.001);
/// assert!("adamw".parse::<OptimizerKind>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptimizerKind {
    /// [`Sgd`] (book §6.1.2).
    Sgd,
    /// [`Momentum`] (book §6.1.4).
    Momentum,
    /// [`Nesterov`] (book §6.1, `common/optimizer.py`).
    Nesterov,
    /// [`AdaGrad`] (book §6.1.5).
    AdaGrad,
    /// [`RmsProp`] (book §6.1.5).
    RmsProp,
    /// [`Adam`] (book §6.1.6).
    Adam,
}

impl OptimizerKind {
    /// Every kind, in the book's order.
    pub const ALL: [OptimizerKind; 6] = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum,
        OptimizerKind::Nesterov,
        OptimizerKind::AdaGrad,
        OptimizerKind::RmsProp,
        OptimizerKind::Adam,
    ];

    /// The lower-case name that [`FromStr`] accepts and [`Display`](fmt::Display) prints.
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Nesterov => "nesterov",
            OptimizerKind::AdaGrad => "adagrad",
            OptimizerKind::RmsProp => "rmsprop",
            OptimizerKind::Adam => "adam",
        }
    }

    /// Tensors the optimizer keeps per parameter: 0 for SGD, 2 for Adam
    /// (`m` and `v`), 1 for the others.
    pub fn state_slots(self) -> usize {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Adam => 2,
            _ => 1,
        }
    }

    /// The book's default learning rate: 0.001 for Adam, 0.01 for the others.
    pub fn default_learning_rate(self) -> f64 {
        match self {
            OptimizerKind::Sgd => SgdConfig::default().lr,
            OptimizerKind::Momentum => MomentumConfig::default().lr,
            OptimizerKind::Nesterov => NesterovConfig::default().lr,
            OptimizerKind::AdaGrad => AdaGradConfig::default().lr,
            OptimizerKind::RmsProp => RmsPropConfig::default().lr,
            OptimizerKind::Adam => AdamConfig::default().lr,
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OptimizerKind {
    type Err = Error;

    /// Parses a name such as `"adam"`; upper case is accepted too (`"Adam"`,
    /// `"SGD"`, as the book writes them).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        OptimizerKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == lower)
            .ok_or_else(|| {
                let valid: Vec<&str> = OptimizerKind::ALL.iter().map(|k| k.as_str()).collect();
                Error::Config(format!(
                    "unknown optimizer '{s}' (expected one of: {})",
                    valid.join(", ")
                ))
            })
    }
}

/// Makes an optimizer of `kind` with the book's defaults, and learning rate
/// `lr` if given.
///
/// ```
/// use convnet::optim::{build, OptimizerKind};
/// let opt = build::<f32>(OptimizerKind::Momentum, None);
/// assert_eq!(opt.name(), "Momentum");
/// assert_eq!(opt.learning_rate(), 0.01);
/// assert_eq!(build::<f32>(OptimizerKind::Adam, Some(0.002)).learning_rate(), 0.002);
/// ```
pub fn build<T: Float>(kind: OptimizerKind, lr: Option<f64>) -> Box<dyn Optimizer<T>> {
    let lr = lr.unwrap_or_else(|| kind.default_learning_rate());
    match kind {
        OptimizerKind::Sgd => Box::new(Sgd::new(SgdConfig { lr })),
        OptimizerKind::Momentum => Box::new(Momentum::new(MomentumConfig {
            lr,
            ..Default::default()
        })),
        OptimizerKind::Nesterov => Box::new(Nesterov::new(NesterovConfig {
            lr,
            ..Default::default()
        })),
        OptimizerKind::AdaGrad => Box::new(AdaGrad::new(AdaGradConfig { lr })),
        OptimizerKind::RmsProp => Box::new(RmsProp::new(RmsPropConfig {
            lr,
            ..Default::default()
        })),
        OptimizerKind::Adam => Box::new(Adam::new(AdamConfig {
            lr,
            ..Default::default()
        })),
    }
}

/// Checks a user-supplied learning rate: it must be finite and positive.
///
/// ```
/// use convnet::optim::check_learning_rate;
/// assert!(check_learning_rate(0.01).is_ok());
/// assert!(check_learning_rate(0.0).is_err());
/// assert!(check_learning_rate(f64::NAN).is_err());
/// ```
pub fn check_learning_rate(lr: f64) -> Result<f64> {
    if lr.is_finite() && lr > 0.0 {
        Ok(lr)
    } else {
        Err(Error::Config(format!(
            "learning rate must be a positive number, got {lr}"
        )))
    }
}

/// Helpers shared by the optimizers' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use super::Optimizer;
    use crate::layers::Param;
    use crate::tensor::Tensor;

    /// The tiny problem every test uses: `p = [1, -2]`, `g = [0.5, 0.25]`.
    pub fn tiny() -> (Tensor<f64>, Tensor<f64>) {
        (
            Tensor::from_vec(&[2], vec![1.0, -2.0]).unwrap(),
            Tensor::from_vec(&[2], vec![0.5, 0.25]).unwrap(),
        )
    }

    /// One step on a single parameter.
    pub fn step(opt: &mut dyn Optimizer<f64>, p: &mut Tensor<f64>, g: &mut Tensor<f64>) {
        opt.step(&mut [Param {
            name: "w",
            value: p,
            grad: g,
        }]);
    }

    pub fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (a - e).abs() < 1e-12,
                "got {actual:?}, expected {expected:?}"
            );
        }
    }

    /// Two parameters (so the state has several entries), two steps on one
    /// optimizer; a fresh optimizer loaded with its state must then take
    /// exactly the same third step.
    pub fn check_round_trip(make: impl Fn() -> Box<dyn Optimizer<f64>>) {
        let mut w = Tensor::from_vec(&[2], vec![1.0, -2.0]).unwrap();
        let mut dw = Tensor::from_vec(&[2], vec![0.5, 0.25]).unwrap();
        let mut b = Tensor::from_vec(&[3], vec![0.1, 0.2, -0.3]).unwrap();
        let mut db = Tensor::from_vec(&[3], vec![-1.0, 2.0, 0.125]).unwrap();
        let mut first = make();
        for _ in 0..2 {
            first.step(&mut [
                Param {
                    name: "w",
                    value: &mut w,
                    grad: &mut dw,
                },
                Param {
                    name: "b",
                    value: &mut b,
                    grad: &mut db,
                },
            ]);
        }
        let saved = first.state();
        let mut second = make();
        second.load_state(&saved).unwrap();
        assert_eq!(second.state(), saved);

        let (mut w2, mut b2) = (w.clone(), b.clone());
        first.step(&mut [
            Param {
                name: "w",
                value: &mut w,
                grad: &mut dw,
            },
            Param {
                name: "b",
                value: &mut b,
                grad: &mut db,
            },
        ]);
        second.step(&mut [
            Param {
                name: "w",
                value: &mut w2,
                grad: &mut dw,
            },
            Param {
                name: "b",
                value: &mut b2,
                grad: &mut db,
            },
        ]);
        assert_eq!(w.data(), w2.data());
        assert_eq!(b.data(), b2.data());
        assert_eq!(first.state(), second.state());
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{step, tiny};
    use super::*;

    #[test]
    fn parses_every_name_and_displays_it_back() {
        for kind in OptimizerKind::ALL {
            assert_eq!(kind.to_string().parse::<OptimizerKind>().unwrap(), kind);
        }
        assert_eq!("sgd".parse::<OptimizerKind>().unwrap(), OptimizerKind::Sgd);
        assert_eq!(
            "momentum".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::Momentum
        );
        assert_eq!(
            "nesterov".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::Nesterov
        );
        assert_eq!(
            "adagrad".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::AdaGrad
        );
        assert_eq!(
            "rmsprop".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::RmsProp
        );
        assert_eq!(
            "adam".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::Adam
        );
        assert_eq!(
            "AdaGrad".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::AdaGrad
        );
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "adamw".parse::<OptimizerKind>().unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        let msg = err.to_string();
        assert!(msg.contains("adamw"), "{msg}");
        for kind in OptimizerKind::ALL {
            assert!(msg.contains(kind.as_str()), "{msg}");
        }
        assert!("".parse::<OptimizerKind>().is_err());
    }

    #[test]
    fn build_uses_the_book_defaults() {
        let expected = [
            (OptimizerKind::Sgd, "SGD", 0.01),
            (OptimizerKind::Momentum, "Momentum", 0.01),
            (OptimizerKind::Nesterov, "Nesterov", 0.01),
            (OptimizerKind::AdaGrad, "AdaGrad", 0.01),
            (OptimizerKind::RmsProp, "RMSprop", 0.01),
            (OptimizerKind::Adam, "Adam", 0.001),
        ];
        for (kind, name, lr) in expected {
            assert_eq!(kind.default_learning_rate(), lr);
            let opt = build::<f64>(kind, None);
            assert_eq!(opt.name(), name);
            assert_eq!(opt.learning_rate(), lr);
            let mut opt = build::<f32>(kind, Some(0.5));
            assert_eq!(opt.learning_rate(), 0.5);
            opt.set_learning_rate(0.25);
            assert_eq!(opt.learning_rate(), 0.25);
        }
    }

    #[test]
    fn every_optimizer_descends_in_f32() {
        // Minimise f(p) = p²/2 (gradient p) from p = 1: every optimizer must
        // get closer to 0.
        for kind in OptimizerKind::ALL {
            let mut opt = build::<f32>(kind, Some(0.1));
            let mut p = crate::tensor::Tensor::from_vec(&[1], vec![1.0f32]).unwrap();
            let mut g = p.clone();
            for _ in 0..20 {
                g.data_mut()[0] = p.data()[0];
                opt.step(&mut [Param {
                    name: "w",
                    value: &mut p,
                    grad: &mut g,
                }]);
            }
            assert!(p.data()[0].abs() < 0.9, "{kind}: p = {}", p.data()[0]);
        }
    }

    #[test]
    fn empty_parameter_list_is_fine() {
        for kind in OptimizerKind::ALL {
            let mut opt = build::<f64>(kind, None);
            opt.step(&mut []);
            opt.step(&mut []);
        }
    }

    #[test]
    fn load_state_rejects_foreign_state() {
        let (mut p, mut g) = tiny();
        let mut momentum = build::<f64>(OptimizerKind::Momentum, None);
        step(momentum.as_mut(), &mut p, &mut g);
        let momentum_state = momentum.state();

        // SGD keeps no state at all.
        let mut sgd = build::<f64>(OptimizerKind::Sgd, None);
        assert!(sgd.load_state(&[]).is_ok());
        assert!(matches!(
            sgd.load_state(&momentum_state),
            Err(Error::Config(_))
        ));

        // Adam wants "iter", then "m.*" and "v.*".
        let mut adam = build::<f64>(OptimizerKind::Adam, None);
        assert!(matches!(
            adam.load_state(&momentum_state),
            Err(Error::Config(_))
        ));

        // AdaGrad wants "h.*", not "v.*"; the failed load leaves it untouched.
        let mut adagrad = build::<f64>(OptimizerKind::AdaGrad, None);
        assert!(matches!(
            adagrad.load_state(&momentum_state),
            Err(Error::Config(_))
        ));
        assert!(adagrad.state().is_empty());
    }

    #[test]
    fn check_learning_rate_rejects_nonsense() {
        assert_eq!(check_learning_rate(0.1).unwrap(), 0.1);
        for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(check_learning_rate(bad), Err(Error::Config(_))));
        }
    }
}
