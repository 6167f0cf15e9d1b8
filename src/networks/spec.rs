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
//! | `bn(momentum=0.9, eps=1e-6)` (also `batchnorm`) | the running averages' momentum; ε added to the variance | [`BatchNorm`], features inferred |
//!
//! Shapes are inferred from the input: `affine(100)` after a 30×12×12
//! pooling layer gets 4,320 inputs. The last layer must give one score per
//! class. Layers are named by kind and position (`conv1`, `relu1`, `pool1`,
//! `fc1`, ...). An impossible spec — an unknown layer, a bad number, a filter
//! larger than its input — is an error that names the layer.
//!
//! [`Network::to_spec`] writes any network built of these layers (by a spec
//! or by hand) back as a spec, and [`LayerSpec`]'s `Display` writes one layer:
//! a spec parses into the same [`LayerSpec`]s that the network it builds
//! writes back.
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
#[cfg(test)]
use crate::layers::Layer;
use crate::layers::{
    Affine, AffineConfig, AvgPooling, BatchNorm, BatchNormConfig, Convolution, ConvolutionConfig,
    Dropout, DropoutConfig, GlobalAvgPooling, LocalResponseNorm, LrnConfig, MaxPooling,
    PoolingConfig, Relu, Sigmoid, Tanh,
};
use crate::rng::Rng;
use crate::tensor::Float;
use std::collections::HashMap;
use std::fmt;

/// One parsed layer of a spec.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    /// `conv(F, K, stride, pad)`: a [`Convolution`].
    Conv {
        /// Number of filters (FN): the output's channels.
        filters: usize,
        /// Filter size K = FH = FW.
        size: usize,
        /// Stride S.
        stride: usize,
        /// Padding P.
        pad: usize,
    },
    /// `maxpool(K, stride, pad)`: a [`MaxPooling`].
    MaxPool(PoolingConfig),
    /// `avgpool(K, stride, pad)`: an [`AvgPooling`].
    AvgPool(PoolingConfig),
    /// `gap`: a [`GlobalAvgPooling`].
    GlobalAvgPool,
    /// `affine(M)`: an [`Affine`] layer.
    Affine {
        /// M, the number of outputs.
        outputs: usize,
    },
    /// `relu`: a [`Relu`].
    Relu,
    /// `sigmoid`: a [`Sigmoid`].
    Sigmoid,
    /// `tanh`: a [`Tanh`].
    Tanh,
    /// `dropout(ratio)`: a [`Dropout`].
    Dropout {
        /// The probability of dropping a unit.
        ratio: f64,
    },
    /// `lrn(size, alpha, beta, k)`: a [`LocalResponseNorm`].
    Lrn(LrnConfig),
    /// `bn(momentum, eps)`: a [`BatchNorm`] over the features it is given,
    /// with the running averages' momentum and ε added to the variance
    /// (1e-6 by default, the book's; PyTorch's is 1e-5).
    BatchNorm {
        /// The running averages' momentum.
        momentum: f64,
        /// ε, added to the variance.
        eps: f64,
    },
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
        "bn" | "batchnorm" => {
            args.only(&["momentum", "eps"])?;
            let d = BatchNormConfig::default();
            let (momentum, eps) = (
                args.number(0, "momentum", Some(d.momentum))?,
                args.number(1, "eps", Some(d.eps))?,
            );
            if eps <= 0.0 {
                return Err(args.error(format!("eps must be positive, got {eps}")));
            }
            Ok(LayerSpec::BatchNorm { momentum, eps })
        }
        other => Err(Error::Config(format!(
            "layer '{text}': unknown layer '{other}' (expected conv, maxpool, avgpool, gap, affine, relu, sigmoid, tanh, dropout, lrn, bn)"
        ))),
    }
}

/// Writes `layers` back as a spec that [`parse_spec`] reads to the same
/// layers (each layer as [`LayerSpec`]'s `Display` writes it).
///
/// ```
/// use convnet::networks::spec::{format_spec, parse_spec};
/// let text = "conv(8,3,stride=2,pad=1)-relu-maxpool(3,stride=2,pad=1)-bn(eps=0.00001)-gap-affine(10)";
/// let layers = parse_spec(text).unwrap();
/// assert_eq!(parse_spec(&format_spec(&layers)).unwrap(), layers);
/// ```
pub fn format_spec(layers: &[LayerSpec]) -> String {
    layers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("-")
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
            &LayerSpec::BatchNorm { momentum, eps } => {
                let features = shape.get(1).copied().unwrap_or(0);
                let config = BatchNormConfig {
                    features,
                    momentum,
                    eps,
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

/// The layer as a spec writes it, in its shortest form (arguments at their
/// default left out): `conv(30,5)`, `maxpool(3,stride=2)`, `dropout(0.5)`.
impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pooling = |f: &mut fmt::Formatter<'_>, name: &str, c: &PoolingConfig| {
            write!(f, "{name}({}", c.size)?;
            if c.stride != c.size {
                write!(f, ",stride={}", c.stride)?;
            }
            if c.pad != 0 {
                write!(f, ",pad={}", c.pad)?;
            }
            write!(f, ")")
        };
        match self {
            LayerSpec::Conv {
                filters,
                size,
                stride,
                pad,
            } => {
                write!(f, "conv({filters},{size}")?;
                if *stride != 1 {
                    write!(f, ",stride={stride}")?;
                }
                if *pad != 0 {
                    write!(f, ",pad={pad}")?;
                }
                write!(f, ")")
            }
            LayerSpec::MaxPool(c) => pooling(f, "maxpool", c),
            LayerSpec::AvgPool(c) => pooling(f, "avgpool", c),
            LayerSpec::GlobalAvgPool => write!(f, "gap"),
            LayerSpec::Affine { outputs } => write!(f, "affine({outputs})"),
            LayerSpec::Relu => write!(f, "relu"),
            LayerSpec::Sigmoid => write!(f, "sigmoid"),
            LayerSpec::Tanh => write!(f, "tanh"),
            // f64's Display is the shortest text that parses back to the same number.
            LayerSpec::Dropout { ratio } => write!(f, "dropout({ratio})"),
            LayerSpec::Lrn(c) => write!(f, "lrn({},{},{},{})", c.size, c.alpha, c.beta, c.k),
            LayerSpec::BatchNorm { momentum, eps } => {
                let d = BatchNormConfig::default();
                if (*momentum, *eps) == (d.momentum, d.eps) {
                    write!(f, "bn")
                } else {
                    write!(f, "bn(momentum={momentum},eps={eps})")
                }
            }
        }
    }
}

impl<T: Float> Network<T> {
    /// The network as a spec: a string that [`parse_spec`] and
    /// [`build_from_spec`] (or [`build_model`](super::build_model)) build
    /// back into the same layers with the same shapes, for this network's
    /// input shape and number of classes. Layer names and weights are not
    /// part of it ([`checkpoint::save`](crate::checkpoint::save) keeps both).
    /// An error, naming the layer, for a layer the spec grammar cannot
    /// express, such as one of your own.
    ///
    /// ```
    /// use convnet::layers::{Affine, AffineConfig, Convolution, ConvolutionConfig, Relu};
    /// use convnet::networks::{build_model, ModelOptions, Network};
    /// use convnet::Rng;
    /// let mut rng = Rng::new(0);
    /// let mut net = Network::<f32>::new([1, 8, 8]);
    /// let conv = ConvolutionConfig { in_channels: 1, filters: 4, filter_size: 3, pad: 1, ..Default::default() };
    /// net.push("c1", Convolution::new(&conv, &mut rng).unwrap()).unwrap();
    /// net.push("r1", Relu::new()).unwrap();
    /// net.push("out", Affine::new(&AffineConfig { inputs: 256, outputs: 3, ..Default::default() }, &mut rng)).unwrap();
    /// let spec = net.to_spec().unwrap();
    /// assert_eq!(spec, "conv(4,3,pad=1)-relu-affine(3)");
    /// let rebuilt = build_model::<f32>(&spec, &ModelOptions::default(), [1, 8, 8], 3, &mut rng).unwrap();
    /// assert_eq!(rebuilt.to_spec().unwrap(), spec);
    /// ```
    pub fn to_spec(&self) -> Result<String> {
        Ok(format_spec(&self.layer_specs()?))
    }

    /// Every layer as a [`LayerSpec`], in order (what [`to_spec`](Self::to_spec)
    /// writes, before it is written): an error for an empty network or for a
    /// layer the grammar cannot name.
    pub fn layer_specs(&self) -> Result<Vec<LayerSpec>> {
        if self.layers.is_empty() {
            return Err(Error::Config("a network with no layers has no spec".into()));
        }
        self.layers
            .iter()
            .map(|named| {
                named.layer.spec().ok_or_else(|| {
                    Error::Config(format!(
                        "layer {} ({}) has no spec form: a spec can only name the library's own layers",
                        named.name,
                        named.layer.kind()
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::{build_model, ModelOptions, MODELS};

    /// Every layer kind, every argument away from its default.
    const SPECS: [&str; 4] = [
        "conv(6,3,stride=2,pad=1)-bn(momentum=0.8,eps=0.001)-tanh-maxpool(3,stride=2,pad=1)-lrn(3,0.0005,0.75,2)-avgpool(2,stride=1)-dropout(0.25)-affine(7)-sigmoid-affine(5)",
        "conv(8,3)-relu-gap-affine(5)",
        "affine(6)-bn-relu-dropout(0.5)-fc(5)",
        "conv(4,1)-batchnorm-relu-conv(5,3,pad=1)-gap",
    ];

    #[test]
    fn a_network_writes_back_the_spec_it_was_built_from() {
        let mut specs: Vec<(String, [usize; 3])> =
            SPECS.iter().map(|s| (s.to_string(), [2, 12, 12])).collect();
        // AlexNet's layer kinds are alexnet-small's; its 227×227 weights are slow to draw.
        for m in MODELS.iter().filter(|m| m.name != "alexnet") {
            let spec = m.spec.replace("{act}", "relu").replace("{classes}", "5");
            specs.push((spec, m.input_shape));
        }
        for (spec, shape) in &specs {
            let shape = *shape;
            let options = ModelOptions::default();
            let net = build_model::<f32>(spec, &options, shape, 5, &mut Rng::new(1))
                .unwrap_or_else(|e| panic!("{spec}: {e}"));
            let written = net.to_spec().unwrap();
            assert_eq!(
                parse_spec(&written).unwrap(),
                parse_spec(spec).unwrap(),
                "{spec} -> {written}"
            );
            let again = build_model::<f32>(&written, &options, shape, 5, &mut Rng::new(1)).unwrap();
            assert_eq!(again.to_spec().unwrap(), written);
            assert_eq!(again.shapes(3).unwrap(), net.shapes(3).unwrap(), "{spec}");
        }
        let simple = build_model::<f32>(
            "simple",
            &ModelOptions::default(),
            [1, 28, 28],
            10,
            &mut Rng::new(0),
        )
        .unwrap();
        assert_eq!(
            simple.to_spec().unwrap(),
            "conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)"
        );
    }

    #[test]
    fn batch_norm_arguments_parse_and_build() {
        assert_eq!(
            parse_spec("bn").unwrap(),
            [LayerSpec::BatchNorm {
                momentum: 0.9,
                eps: 1e-6
            }]
        );
        assert_eq!(
            parse_spec("bn(0.5,eps=0.01)").unwrap(),
            [LayerSpec::BatchNorm {
                momentum: 0.5,
                eps: 0.01
            }]
        );
        assert!(parse_spec("bn(rate=0.5)").is_err());
        let layers = parse_spec("affine(4)-bn(momentum=2)-affine(3)").unwrap();
        let err = build_from_spec::<f32>(&layers, [1, 2, 2], 3, Init::He, &mut Rng::new(0))
            .err()
            .unwrap();
        assert!(err.to_string().contains("bn1"), "{err}");
    }

    #[test]
    fn a_layer_without_a_spec_form_is_an_error_naming_it() {
        struct Custom;
        impl Layer<f32> for Custom {
            fn kind(&self) -> &'static str {
                "Custom"
            }
            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
                Ok(input.to_vec())
            }
            fn forward(&mut self, _: &crate::Tensor<f32>, _: bool) -> Result<&crate::Tensor<f32>> {
                unimplemented!()
            }
            fn backward(&mut self, _: &crate::Tensor<f32>) -> Result<&crate::Tensor<f32>> {
                unimplemented!()
            }
        }
        let mut net = Network::<f32>::new([1, 2, 2]);
        net.push(
            "fc1",
            Affine::new(
                &AffineConfig {
                    inputs: 4,
                    outputs: 3,
                    ..Default::default()
                },
                &mut Rng::new(0),
            ),
        )
        .unwrap();
        net.push("mine", Custom).unwrap();
        let err = net.to_spec().unwrap_err().to_string();
        assert!(err.contains("mine (Custom)"), "{err}");
        assert!(Network::<f32>::new([1, 2, 2]).to_spec().is_err());
    }
}
