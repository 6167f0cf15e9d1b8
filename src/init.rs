//! Weight initialisation (book §6.2).
//!
//! Weights are drawn from N(0, σ²) with
//!
//! ```text
//! Std(s):  σ = s                  (the book's `weight_init_std`, default 0.01)
//! Xavier:  σ = sqrt(1 / fan_in)   (Glorot & Bengio 2010, as the book simplifies it; for sigmoid/tanh)
//! He:      σ = sqrt(2 / fan_in)   (He et al. 2015; for ReLU)
//! ```
//!
//! where `fan_in` is the number of inputs of one neuron: `C·FH·FW` for a
//! convolution, the input size for an affine layer. Biases start at zero.
//!
//! ```
//! use convnet::init::Init;
//! use convnet::Rng;
//! let w = Init::He.tensor::<f32>(&[100, 50], 50, 100, &mut Rng::new(0));
//! assert_eq!(w.shape(), &[100, 50]);
//! assert_eq!("xavier".parse::<Init>().unwrap(), Init::Xavier);
//! assert_eq!("std:0.1".parse::<Init>().unwrap(), Init::Std(0.1));
//! ```

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};
use std::fmt;
use std::str::FromStr;

/// How to draw initial weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, s²) with a fixed standard deviation s.
    Std(f64),
    /// N(0, 1/fan_in).
    Xavier,
    /// N(0, 2/fan_in).
    He,
}

impl Default for Init {
    /// The book's default for SimpleConvNet: `weight_init_std = 0.01`.
    fn default() -> Self {
        Init::Std(0.01)
    }
}

impl Init {
    /// The standard deviation for a layer with `fan_in` inputs per neuron.
    pub fn std_dev(&self, fan_in: usize) -> f64 {
        match *self {
            Init::Std(s) => s,
            Init::Xavier => (1.0 / fan_in.max(1) as f64).sqrt(),
            Init::He => (2.0 / fan_in.max(1) as f64).sqrt(),
        }
    }

    /// A tensor of `shape` drawn from N(0, σ²). `fan_out` is accepted for
    /// symmetry with other schemes and is not used by these three.
    pub fn tensor<T: Float>(
        &self,
        shape: &[usize],
        fan_in: usize,
        _fan_out: usize,
        rng: &mut Rng,
    ) -> Tensor<T> {
        let std = self.std_dev(fan_in);
        let mut t = Tensor::zeros(shape);
        t.data_mut()
            .iter_mut()
            .for_each(|v| *v = T::cast(std * rng.normal()));
        t
    }
}

impl FromStr for Init {
    type Err = Error;
    /// `std` (0.01), `std:S`, `xavier` or `he`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "unknown weight init '{s}': expected std, std:SIGMA, xavier or he"
            ))
        };
        match s.to_ascii_lowercase().as_str() {
            "std" => Ok(Init::default()),
            "xavier" => Ok(Init::Xavier),
            "he" => Ok(Init::He),
            other => {
                let sigma = other.strip_prefix("std:").ok_or_else(bad)?;
                match sigma.parse::<f64>() {
                    Ok(v) if v.is_finite() && v > 0.0 => Ok(Init::Std(v)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Std(s) => write!(f, "std:{s}"),
            Init::Xavier => write!(f, "xavier"),
            Init::He => write!(f, "he"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_devs_follow_the_formulas() {
        assert_eq!(Init::Std(0.01).std_dev(25), 0.01);
        assert!((Init::Xavier.std_dev(25) - 0.2).abs() < 1e-12);
        assert!((Init::He.std_dev(50) - 0.2).abs() < 1e-12);
        let w = Init::He.tensor::<f64>(&[200, 50], 50, 200, &mut Rng::new(5));
        let var = w.data().iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        assert!((var.sqrt() - 0.2).abs() < 0.01, "sample std {}", var.sqrt());
    }

    #[test]
    fn parse_rejects_nonsense() {
        assert!("gaussian".parse::<Init>().is_err());
        assert!("std:-1".parse::<Init>().is_err());
        assert!("std:abc".parse::<Init>().is_err());
        assert_eq!(
            Init::Std(0.01).to_string().parse::<Init>().unwrap(),
            Init::Std(0.01)
        );
    }
}
