//! Networks: a sequential container and the book's models.

pub mod sequential;
pub mod simple_convnet;

pub use sequential::{NamedLayer, Network};
pub use simple_convnet::{simple_convnet, SimpleConvNetConfig};

use crate::error::{Error, Result};
use crate::init::Init;
use crate::rng::Rng;
use crate::tensor::Float;
use std::fmt;
use std::str::FromStr;

/// The names `--model` accepts.
pub const MODEL_NAMES: [&str; 1] = ["simple"];

/// Overrides of a model's default sizes (`None`: the model's own default).
/// Written in checkpoints as `key=value` pairs, e.g. `filters=16,filter_size=3`.
///
/// ```
/// use convnet::networks::ModelOptions;
/// let options: ModelOptions = "filters=16,init=he".parse().unwrap();
/// assert_eq!(options.filters, Some(16));
/// assert_eq!(options.to_string().parse::<ModelOptions>().unwrap(), options);
/// assert!("filters=many".parse::<ModelOptions>().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelOptions {
    pub init: Option<Init>,
    pub filters: Option<usize>,
    pub filter_size: Option<usize>,
    pub stride: Option<usize>,
    pub pad: Option<usize>,
    pub hidden_size: Option<usize>,
}

impl fmt::Display for ModelOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(init) = self.init {
            parts.push(format!("init={init}"));
        }
        let sizes = [
            ("filters", self.filters),
            ("filter_size", self.filter_size),
            ("stride", self.stride),
            ("pad", self.pad),
            ("hidden_size", self.hidden_size),
        ];
        for (key, value) in sizes {
            if let Some(v) = value {
                parts.push(format!("{key}={v}"));
            }
        }
        write!(f, "{}", parts.join(","))
    }
}

impl FromStr for ModelOptions {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut options = ModelOptions::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("model option '{part}' is not key=value")))?;
            let number = || {
                value.trim().parse::<usize>().map_err(|_| {
                    Error::Config(format!(
                        "model option {key}: '{value}' is not a whole number"
                    ))
                })
            };
            match key.trim() {
                "init" => options.init = Some(value.parse()?),
                "filters" => options.filters = Some(number()?),
                "filter_size" => options.filter_size = Some(number()?),
                "stride" => options.stride = Some(number()?),
                "pad" => options.pad = Some(number()?),
                "hidden_size" => options.hidden_size = Some(number()?),
                other => return Err(Error::Config(format!("unknown model option '{other}'"))),
            }
        }
        Ok(options)
    }
}

/// Builds a model by name for images of `input_shape` (C, H, W) and
/// `num_classes` classes, with `options` overriding its default sizes.
///
/// ```
/// use convnet::networks::{build_model, ModelOptions};
/// use convnet::Rng;
/// let options = ModelOptions::default();
/// let net = build_model::<f32>("simple", &options, [1, 28, 28], 10, &mut Rng::new(0)).unwrap();
/// assert_eq!(net.layers.len(), 6);
/// assert!(build_model::<f32>("resnet", &options, [1, 28, 28], 10, &mut Rng::new(0)).is_err());
/// ```
pub fn build_model<T: Float>(
    name: &str,
    options: &ModelOptions,
    input_shape: [usize; 3],
    num_classes: usize,
    rng: &mut Rng,
) -> Result<Network<T>> {
    match name {
        "simple" => {
            let d = SimpleConvNetConfig::default();
            simple_convnet(
                &SimpleConvNetConfig {
                    input_shape,
                    filters: options.filters.unwrap_or(d.filters),
                    filter_size: options.filter_size.unwrap_or(d.filter_size),
                    pad: options.pad.unwrap_or(d.pad),
                    stride: options.stride.unwrap_or(d.stride),
                    hidden_size: options.hidden_size.unwrap_or(d.hidden_size),
                    output_size: num_classes,
                    init: options.init.unwrap_or(d.init),
                },
                rng,
            )
        }
        other => Err(Error::Config(format!(
            "unknown model '{other}' (expected one of: {})",
            MODEL_NAMES.join(", ")
        ))),
    }
}
