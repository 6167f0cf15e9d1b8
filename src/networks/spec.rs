//! Any sequential CNN from a one-line spec.
//!
//! ```text
//! spec  := layer ( "-" layer )*
//! layer := name [ "(" arg ( "," arg )* ")" ]
//! arg   := number | key "=" number
//! ```
//!
//! | layer | arguments (defaults) | builds |
//! |---|---|---|
//! | `conv(F, K, stride=1, pad=0)` | F filters of K×K | [`Convolution`] |
//! | `maxpool(K, stride=K, pad=0)` | K×K windows | [`MaxPooling`] |
//! | `avgpool(K, stride=K, pad=0)` | K×K windows | [`AvgPooling`] |
//! | `gap` | | [`GlobalAvgPooling`] |
//! | `affine(M)` (also `fc`, `linear`) | M outputs | [`Affine`] (flattens its input) |
//! | `relu`, `sigmoid`, `tanh` | | activations |
//! | `dropout(ratio=0.5)` | | [`Dropout`] |
//! | `lrn(size=5, alpha=1e-4, beta=0.75, k=1)` | PyTorch's convention | [`LocalResponseNorm`] |
//! | `bn` (also `batchnorm`) | | [`BatchNorm`], features inferred |
//!
//! Shapes are inferred from the input: `affine(100)` after a 30×12×12
//! pooling layer gets 4,320 inputs. The last layer must give one score per
//! class. Layers are named by kind and position (`conv1`, `relu1`, `pool1`,
//! `fc1`, ...). An impossible spec — an unknown layer, a bad number, a filter
//! larger than its input — is an error that names the layer.
//!
//! ```
//! use convnet::networks::spec::{build_from_spec, parse_spec};
//! use convnet::init::Init;
//! use convnet::Rng;
//! let spec = parse_spec("conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)").unwrap();
//! let mut net = build_from_spec::<f32>(&spec, [1, 28, 28], 10, Init::He, &mut Rng::new(0)).unwrap();
//! assert_eq!(net.num_params(), 433_890); // the book's SimpleConvNet
//! assert!(parse_spec("conv(30,5)-softmax").is_err());
//! ```

use super::plan::{name_prefix, plan_spec, Usage};
use super::Network;
use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::{
    Affine, AffineConfig, AvgPooling, BatchNorm, BatchNormConfig, Convolution, ConvolutionConfig,
    Dropout, DropoutConfig, GlobalAvgPooling, LocalResponseNorm, LrnConfig, MaxPooling,
    PoolingConfig, Relu, Sigmoid, Tanh,
};
use crate::rng::Rng;
use crate::tensor::Float;
use std::collections::HashMap;

/// One parsed layer of a spec.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    Conv {
        filters: usize,
        size: usize,
        stride: usize,
        pad: usize,
    },
    MaxPool(PoolingConfig),
    AvgPool(PoolingConfig),
    GlobalAvgPool,
    Affine {
        outputs: usize,
    },
    Relu,
    Sigmoid,
    Tanh,
    Dropout {
        ratio: f64,
    },
    Lrn(LrnConfig),
    BatchNorm,
}

/// The arguments of one layer: positional ones in order, then named ones.
struct Args<'a> {
    layer: &'a str,
    positional: Vec<f64>,
    named: HashMap<String, f64>,
}

impl Args<'_> {
    fn error(&self, what: String) -> Error {
        Error::Config(format!("layer '{}': {what}", self.layer))
    }

    /// Argument `index` (or `key=`), or `default` when absent.
    fn number(&self, index: usize, key: &str, default: Option<f64>) -> Result<f64> {
        if let Some(&v) = self.named.get(key) {
            return Ok(v);
        }
        match (self.positional.get(index), default) {
            (Some(&v), _) => Ok(v),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(format!("missing argument {key}"))),
        }
    }

    fn count(&self, index: usize, key: &str, default: Option<usize>) -> Result<usize> {
        let v = self.number(index, key, default.map(|d| d as f64))?;
        if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
            return Err(self.error(format!("{key} must be a whole number, got {v}")));
        }
        Ok(v as usize)
    }

    /// Rejects extra positional arguments and unknown keys.
    fn only(&self, keys: &[&str]) -> Result<()> {
        if self.positional.len() > keys.len() {
            return Err(self.error(format!(
                "takes at most {} arguments ({})",
                keys.len(),
                keys.join(", ")
            )));
        }
        match self.named.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(self.error(format!(
                "unknown argument '{k}' (expected {})",
                keys.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// Splits `s` at top-level `-` (not inside parentheses, so `5e-4` survives).
fn split_layers(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            '-' if depth == 0 => {
                // A '-' right after an exponent's 'e' inside a bare number never
                // occurs at depth 0: numbers only appear inside parentheses.
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_layer(text: &str) -> Result<LayerSpec> {
    let text = text.trim();
    let (name, inside) = match text.find('(') {
        Some(open) => {
            let inside = text[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| Error::Config(format!("layer '{text}': missing ')'")))?;
            (text[..open].trim(), inside)
        }
        None => (text, ""),
    };
    let mut args = Args {
        layer: text,
        positional: Vec::new(),
        named: HashMap::new(),
    };
    for arg in inside.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (Some(k.trim()), v.trim()),
            None => (None, arg),
        };
        let v: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| args.error(format!("'{value}' is not a number")))?;
        match key {
            Some(k) => {
                args.named.insert(k.to_string(), v);
            }
            None if args.named.is_empty() => args.positional.push(v),
            None => return Err(args.error("positional argument after a named one".into())),
        }
    }
    let pooling = |args: &Args| -> Result<PoolingConfig> {
        args.only(&["size", "stride", "pad"])?;
        let size = args.count(0, "size", None)?;
        Ok(PoolingConfig {
            size,
            stride: args.count(1, "stride", Some(size))?,
            pad: args.count(2, "pad", Some(0))?,
        })
    };
    let no_args = |args: &Args, spec: LayerSpec| -> Result<LayerSpec> {
        args.only(&[])?;
        Ok(spec)
    };
    match name.to_ascii_lowercase().as_str() {
        "conv" => {
            args.only(&["filters", "size", "stride", "pad"])?;
            Ok(LayerSpec::Conv {
                filters: args.count(0, "filters", None)?,
                size: args.count(1, "size", None)?,
                stride: args.count(2, "stride", Some(1))?,
                pad: args.count(3, "pad", Some(0))?,
            })
        }
        "maxpool" => Ok(LayerSpec::MaxPool(pooling(&args)?)),
        "avgpool" => Ok(LayerSpec::AvgPool(pooling(&args)?)),
        "gap" | "globalavgpool" => no_args(&args, LayerSpec::GlobalAvgPool),
        "affine" | "fc" | "linear" => {
            args.only(&["outputs"])?;
            Ok(LayerSpec::Affine { outputs: args.count(0, "outputs", None)? })
        }
        "relu" => no_args(&args, LayerSpec::Relu),
        "sigmoid" => no_args(&args, LayerSpec::Sigmoid),
        "tanh" => no_args(&args, LayerSpec::Tanh),
        "dropout" => {
            args.only(&["ratio"])?;
            Ok(LayerSpec::Dropout { ratio: args.number(0, "ratio", Some(0.5))? })
        }
        "lrn" => {
            args.only(&["size", "alpha", "beta", "k"])?;
            let d = LrnConfig::default();
            Ok(LayerSpec::Lrn(LrnConfig {
                size: args.count(0, "size", Some(d.size))?,
                alpha: args.number(1, "alpha", Some(d.alpha))?,
                beta: args.number(2, "beta", Some(d.beta))?,
                k: args.number(3, "k", Some(d.k))?,
            }))
        }
        "bn" | "batchnorm" => no_args(&args, LayerSpec::BatchNorm),
        other => Err(Error::Config(format!(
            "layer '{text}': unknown layer '{other}' (expected conv, maxpool, avgpool, gap, affine, relu, sigmoid, tanh, dropout, lrn, bn)"
        ))),
    }
}

/// Parses a spec such as `conv(30,5)-relu-maxpool(2)-affine(10)`.
pub fn parse_spec(spec: &str) -> Result<Vec<LayerSpec>> {
    if spec.trim().is_empty() {
        return Err(Error::Config("the model spec is empty".into()));
    }
    split_layers(spec).into_iter().map(parse_layer).collect()
}

/// Builds the network a parsed spec describes, for images of `input_shape`
/// and `num_classes` classes; convolutions and affine layers draw their
/// weights with `init`, dropout layers get generators forked from `rng`.
///
/// The sizes are [planned](super::plan) first: an impossible geometry, or a
/// network that needs more memory than the default limit
/// ([`default_max_memory`](crate::limits::default_max_memory)), is an error
/// before any weight is allocated. [`build_from_spec_within`] takes another limit.
pub fn build_from_spec<T: Float>(
    layers: &[LayerSpec],
    input_shape: [usize; 3],
    num_classes: usize,
    init: Init,
    rng: &mut Rng,
) -> Result<Network<T>> {
    let limit = crate::limits::default_max_memory();
    build_from_spec_within(layers, input_shape, num_classes, init, rng, limit)
}

/// [`build_from_spec`] with a memory limit of `max_memory` bytes for
/// building the network and running one image through it.
pub fn build_from_spec_within<T: Float>(
    layers: &[LayerSpec],
    input_shape: [usize; 3],
    num_classes: usize,
    init: Init,
    rng: &mut Rng,
    max_memory: u64,
) -> Result<Network<T>> {
    let plan = plan_spec(layers, input_shape, num_classes)?;
    plan.check_memory(&Usage::build(), max_memory, std::mem::size_of::<T>())?;
    let mut net = Network::new(input_shape);
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for (position, layer) in layers.iter().enumerate() {
        let shape = net.output_shape_for(1)?;
        let prefix = name_prefix(layer);
        let count = counts.entry(prefix).or_insert(0);
        *count += 1;
        let name = format!("{prefix}{count}");
        let context =
            |e: Error| Error::Config(format!("layer {} ({name}): {}", position + 1, e.detail()));
        let channels = || -> Result<usize> {
            match shape[..] {
                [_, c, _, _] => Ok(c),
                _ => Err(Error::Shape(format!(
                    "needs (N, C, H, W) input, gets {shape:?}"
                ))),
            }
        };
        let result = match layer {
            &LayerSpec::Conv {
                filters,
                size,
                stride,
                pad,
            } => {
                let config = ConvolutionConfig {
                    in_channels: channels().map_err(context)?,
                    filters,
                    filter_size: size,
                    stride,
                    pad,
                    init,
                };
                net.push(&name, Convolution::new(&config, rng).map_err(context)?)
            }
            LayerSpec::MaxPool(config) => net.push(&name, MaxPooling::new(config)),
            LayerSpec::AvgPool(config) => net.push(&name, AvgPooling::new(config)),
            LayerSpec::GlobalAvgPool => net.push(&name, GlobalAvgPooling::new()),
            &LayerSpec::Affine { outputs } => {
                if outputs == 0 {
                    return Err(context(Error::Config("needs at least 1 output".into())));
                }
                let inputs = shape.iter().skip(1).product();
                let config = AffineConfig {
                    inputs,
                    outputs,
                    init,
                };
                net.push(&name, Affine::new(&config, rng))
            }
            LayerSpec::Relu => net.push(&name, Relu::new()),
            LayerSpec::Sigmoid => net.push(&name, Sigmoid::new()),
            LayerSpec::Tanh => net.push(&name, Tanh::new()),
            &LayerSpec::Dropout { ratio } => {
                let dropout =
                    Dropout::new(&DropoutConfig { ratio }, rng.fork()).map_err(context)?;
                net.push(&name, dropout)
            }
            LayerSpec::Lrn(config) => {
                net.push(&name, LocalResponseNorm::new(config).map_err(context)?)
            }
            LayerSpec::BatchNorm => {
                let features = shape.get(1).copied().unwrap_or(0);
                let config = BatchNormConfig {
                    features,
                    ..Default::default()
                };
                net.push(&name, BatchNorm::new(&config).map_err(context)?)
            }
        };
        // `push` names the layer and says why its input does not fit.
        result.map_err(|e| Error::Config(format!("layer {}: {}", position + 1, e.detail())))?;
    }
    let out = net.output_shape_for(1)?;
    if out != [1, num_classes] {
        return Err(Error::Config(format!(
            "the network ends with shape {:?} per image; it must end with one score per class ({num_classes}), e.g. affine({num_classes})",
            &out[1..]
        )));
    }
    Ok(net)
}
