//! Networks: a sequential container and the book's models.

pub mod fusion;
pub mod plan;
pub mod profile;
pub mod reference;
pub mod sequential;
pub mod simple_convnet;
pub mod spec;
pub mod summary;

pub use plan::{plan_spec, ModelPlan, Usage};
pub use sequential::{LayerOutput, NamedLayer, Network};
pub use simple_convnet::{simple_convnet, simple_convnet_layers, SimpleConvNetConfig};
pub use spec::{build_from_spec, build_from_spec_within, parse_spec, LayerSpec};

use crate::error::{Error, Result};
use crate::init::Init;
use crate::rng::Rng;
use crate::tensor::Float;
use std::fmt;
use std::str::FromStr;

/// A network of the book or of a paper, written as a [spec](mod@spec).
#[derive(Clone, Copy, Debug)]
pub struct ModelInfo {
    /// The name `--model` and [`build_model`] take.
    pub name: &'static str,
    /// `{act}` stands for the activation (`--activation`), `{classes}` for
    /// the number of classes.
    pub spec: &'static str,
    /// The activation that `{act}` stands for when none is given.
    pub default_activation: &'static str,
    /// How the weights are drawn when [`ModelOptions::init`] is not given.
    pub init: Init,
    /// The input it was designed for: (C, H, W) and classes.
    pub input_shape: [usize; 3],
    /// The number of classes it was designed for.
    pub classes: usize,
    /// Adam's learning rate for this network when none is given.
    pub adam_learning_rate: f64,
    /// Where the network comes from (paper, book section).
    pub source: &'static str,
}

/// The named networks besides `simple` (the book's SimpleConvNet).
pub const MODELS: [ModelInfo; 4] = [
    ModelInfo {
        name: "lenet5",
        spec: "conv(6,5,pad=2)-{act}-avgpool(2)-conv(16,5)-{act}-avgpool(2)-conv(120,5)-{act}-affine(84)-{act}-affine({classes})",
        default_activation: "sigmoid",
        init: Init::Xavier,
        input_shape: [1, 28, 28],
        classes: 10,
        adam_learning_rate: 0.001,
        source: "LeCun et al. 1998 (C1 padded by 2 for 28x28 input); book §7.7.1",
    },
    ModelInfo {
        name: "alexnet",
        spec: "conv(96,11,stride=4)-{act}-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(256,5,pad=2)-{act}-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(384,3,pad=1)-{act}-conv(384,3,pad=1)-{act}-conv(256,3,pad=1)-{act}-maxpool(3,2)-affine(4096)-{act}-dropout(0.5)-affine(4096)-{act}-dropout(0.5)-affine({classes})",
        default_activation: "relu",
        init: Init::He,
        input_shape: [3, 227, 227],
        classes: 1000,
        adam_learning_rate: 0.001,
        source: "Krizhevsky et al. 2012, single tower; LRN with the paper's k=2, n=5, alpha=1e-4, beta=0.75; book §7.7.2",
    },
    ModelInfo {
        name: "alexnet-small",
        spec: "conv(32,3,pad=1)-{act}-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(64,3,pad=1)-{act}-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(96,3,pad=1)-{act}-conv(96,3,pad=1)-{act}-conv(64,3,pad=1)-{act}-maxpool(3,2)-dropout(0.5)-affine(256)-{act}-dropout(0.5)-affine(256)-{act}-affine({classes})",
        default_activation: "relu",
        init: Init::He,
        input_shape: [1, 28, 28],
        classes: 10,
        adam_learning_rate: 0.0005,
        source: "AlexNet's pattern (conv-ReLU-LRN-overlapping max-pool blocks, dropout before the classifier) scaled for 28x28 and 32x32 input",
    },
    ModelInfo {
        name: "deep",
        spec: "conv(16,3,pad=1)-{act}-conv(16,3,pad=1)-{act}-maxpool(2)-conv(32,3,pad=1)-{act}-conv(32,3,pad=2)-{act}-maxpool(2)-conv(64,3,pad=1)-{act}-conv(64,3,pad=1)-{act}-maxpool(2)-affine(50)-{act}-dropout(0.5)-affine({classes})-dropout(0.5)",
        default_activation: "relu",
        init: Init::He,
        input_shape: [1, 28, 28],
        classes: 10,
        adam_learning_rate: 0.001,
        source: "the book's DeepConvNet, ch. 8 deep_convnet.py",
    },
];

/// The names `--model` accepts (besides a spec).
pub const MODEL_NAMES: [&str; 5] = ["simple", "lenet5", "alexnet", "alexnet-small", "deep"];

/// The named model `name`, if there is one.
pub fn model_info(name: &str) -> Option<&'static ModelInfo> {
    MODELS.iter().find(|m| m.name == name)
}

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
    /// How the weights are drawn (book §6.2); every model.
    pub init: Option<Init>,
    /// `simple` only: the number of filters (FN) of its convolution.
    pub filters: Option<usize>,
    /// `simple` only: the filters' size (FH = FW).
    pub filter_size: Option<usize>,
    /// `simple` only: the convolution's stride S.
    pub stride: Option<usize>,
    /// `simple` only: the convolution's padding P.
    pub pad: Option<usize>,
    /// `simple` only: the hidden affine layer's outputs.
    pub hidden_size: Option<usize>,
    /// The activation of `lenet5`, `alexnet`, `alexnet-small` and `deep`:
    /// relu, sigmoid or tanh.
    pub activation: Option<String>,
}

impl fmt::Display for ModelOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(init) = self.init {
            parts.push(format!("init={init}"));
        }
        if let Some(activation) = &self.activation {
            parts.push(format!("activation={activation}"));
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
                "activation" => options.activation = Some(value.trim().to_string()),
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

/// The layers of a model given by name — `simple`, one of [`MODELS`], or a
/// [spec](mod@spec) — with `options` applied, and the initialisation its
/// weights get. Nothing is built.
///
/// ```
/// use convnet::networks::{resolve_model, ModelOptions, LayerSpec};
/// let options = ModelOptions { hidden_size: Some(50), ..Default::default() };
/// let (layers, _) = resolve_model("simple", &options, 10).unwrap();
/// assert_eq!(layers.len(), 6);
/// assert_eq!(layers[3], LayerSpec::Affine { outputs: 50 });
/// ```
pub fn resolve_model(
    name: &str,
    options: &ModelOptions,
    num_classes: usize,
) -> Result<(Vec<LayerSpec>, Init)> {
    match name {
        "simple" => {
            let d = SimpleConvNetConfig::default();
            let layers = simple_convnet_layers(&SimpleConvNetConfig {
                filters: options.filters.unwrap_or(d.filters),
                filter_size: options.filter_size.unwrap_or(d.filter_size),
                stride: options.stride.unwrap_or(d.stride),
                pad: options.pad.unwrap_or(d.pad),
                hidden_size: options.hidden_size.unwrap_or(d.hidden_size),
                output_size: num_classes,
                ..d.clone()
            });
            Ok((layers, options.init.unwrap_or(d.init)))
        }
        named if model_info(named).is_some() => {
            let info = model_info(named).expect("checked");
            let activation = options
                .activation
                .as_deref()
                .unwrap_or(info.default_activation);
            if !["relu", "sigmoid", "tanh"].contains(&activation) {
                return Err(Error::Config(format!(
                    "unknown activation '{activation}' (expected relu, sigmoid or tanh)"
                )));
            }
            let spec = info
                .spec
                .replace("{act}", activation)
                .replace("{classes}", &num_classes.to_string());
            Ok((parse_spec(&spec)?, options.init.unwrap_or(info.init)))
        }
        spec if spec.contains('(') || spec.contains('-') => {
            Ok((parse_spec(spec)?, options.init.unwrap_or(Init::He)))
        }
        other => Err(Error::Config(format!(
            "unknown model '{other}' (expected one of: {}, or a spec such as conv(30,5)-relu-maxpool(2)-affine(10))",
            MODEL_NAMES.join(", ")
        ))),
    }
}

/// Every layer's sizes for the model `name` (see [`resolve_model`]) on
/// images of `input_shape` and `num_classes` classes, worked out without
/// building it (see [`plan`]).
pub fn plan_model(
    name: &str,
    options: &ModelOptions,
    input_shape: [usize; 3],
    num_classes: usize,
) -> Result<ModelPlan> {
    let (layers, _) = resolve_model(name, options, num_classes)?;
    plan_spec(&layers, input_shape, num_classes)
}

/// Builds a model by name — `simple`, one of [`MODELS`], or a [spec](mod@spec)
/// such as `conv(16,3)-relu-maxpool(2)-affine(10)` — for images of
/// `input_shape` (C, H, W) and `num_classes` classes, with `options`
/// overriding its default sizes, initialisation and activation.
///
/// Its sizes are [planned](plan) first and checked against the default
/// memory limit ([`default_max_memory`](crate::limits::default_max_memory));
/// [`build_model_within`] takes another.
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
    let limit = crate::limits::default_max_memory();
    build_model_within(name, options, input_shape, num_classes, rng, limit)
}

/// [`build_model`], refusing a model that needs more than `max_memory`
/// bytes to build and run one image (see [`ModelPlan::check_memory`])
/// before anything is allocated.
///
/// ```
/// use convnet::networks::{build_model_within, ModelOptions};
/// use convnet::Rng;
/// let options = ModelOptions { hidden_size: Some(10_000_000_000), ..Default::default() };
/// let e = build_model_within::<f32>("simple", &options, [1, 28, 28], 10, &mut Rng::new(0), 1 << 30);
/// let e = e.err().unwrap().to_string();
/// assert!(e.starts_with("layer 4 (fc1, affine(10000000000)): needs "), "{e}");
/// ```
pub fn build_model_within<T: Float>(
    name: &str,
    options: &ModelOptions,
    input_shape: [usize; 3],
    num_classes: usize,
    rng: &mut Rng,
    max_memory: u64,
) -> Result<Network<T>> {
    let (layers, init) = resolve_model(name, options, num_classes)?;
    build_from_spec_within(&layers, input_shape, num_classes, init, rng, max_memory)
}
