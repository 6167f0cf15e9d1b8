//! A network's sizes, worked out from its spec before anything is built.
//!
//! [`plan_spec`] walks a parsed [spec](super::spec) over an input shape the
//! way the builder will, with checked arithmetic: each layer's output shape,
//! its parameter count, and the values it keeps per image while training
//! (outputs, caches, the gradient it passes back) or needs once per thread
//! (a convolution's im2col buffer). An impossible geometry — a filter larger
//! than its input, a stride of 0, a layer that needs (C, H, W) input after a
//! flattening one — is an error here, before any weight is allocated.
//!
//! [`ModelPlan::check_memory`] then compares the bytes this needs with a
//! limit (the CLI's `--max-memory`): a layer, or the whole network, that
//! needs more is refused with one line naming the layer and the size.
//! [`build_model_within`](super::build_model_within) and
//! [`build_from_spec`](super::build_from_spec) always plan first.
//!
//! The estimate counts, in the network's float type: parameters, their
//! gradients and the optimizer's state; per image, each layer's output and
//! what it keeps for backward; and the largest im2col buffer once per thread.
//! It is an estimate of the peak, a little above what is allocated.
//!
//! ```
//! use convnet::networks::plan::{plan_spec, Usage};
//! use convnet::networks::parse_spec;
//! let spec = parse_spec("conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)").unwrap();
//! let plan = plan_spec(&spec, [1, 28, 28], 10).unwrap();
//! assert_eq!(plan.param_count(), 433_890);
//! assert_eq!(plan.layers[2].output, [30, 12, 12]);
//! // 1 MiB is too little to train it with batches of 100 ...
//! let e = plan.check_memory(&Usage::training(100, 2), 1 << 20, 4).unwrap_err();
//! assert!(e.to_string().contains("more than the memory limit of 1 MiB"), "{e}");
//! // ... 1 GiB is plenty.
//! plan.check_memory(&Usage::training(100, 2), 1 << 30, 4).unwrap();
//!
//! // A filter larger than its input, found before any weight exists.
//! let spec = parse_spec("conv(100000000,40)-affine(10)").unwrap();
//! let e = plan_spec(&spec, [1, 28, 28], 10).unwrap_err().to_string();
//! assert!(e.starts_with("layer 1 (conv1): "), "{e}");
//! ```

use super::spec::LayerSpec;
use crate::error::{Error, Result};
use crate::kernels::im2col::output_size;
use crate::layers::PoolingConfig;
use crate::limits::format_bytes;
use std::collections::HashMap;

/// One layer's sizes. Shapes are per image (no batch dimension); counts are
/// in values of the network's float type.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// 1-based position in the spec.
    pub position: usize,
    /// The name the builder gives it: `conv1`, `pool2`, `fc1`, ...
    pub name: String,
    /// The layer as a spec writes it, e.g. `conv(30,5,stride=1,pad=0)`.
    pub spec: String,
    /// The input's shape for one image, batch first (N = 1).
    pub input: Vec<usize>,
    /// The output's shape for one image, batch first (N = 1).
    pub output: Vec<usize>,
    /// Trainable values (weights and biases).
    pub params: u128,
    /// Values kept beside them that are not trained (batch norm's running
    /// mean and variance).
    pub buffers: u128,
    /// Values per image while training: the output, what backward needs, and
    /// the gradient passed back.
    pub train_values: u128,
    /// Values per image in inference.
    pub infer_values: u128,
    /// Values needed once per thread whatever the batch (im2col buffers).
    pub workspace: u128,
}

/// Every layer's sizes, for images of `input_shape` and `classes` classes.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelPlan {
    /// One image's shape (C, H, W).
    pub input_shape: [usize; 3],
    /// The number of classes (the last layer's outputs).
    pub classes: usize,
    /// Every layer's sizes, in order.
    pub layers: Vec<LayerPlan>,
}

/// What the network will be used for, to size its memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Images per forward pass.
    pub batch: usize,
    /// Whether backward will run (training) or not (inference).
    pub training: bool,
    /// Tensors the optimizer keeps per parameter (0 for SGD, 1 for
    /// momentum, Nesterov, AdaGrad and RMSprop, 2 for Adam).
    pub optimizer_slots: usize,
    /// Threads that each hold their own im2col buffers.
    pub threads: usize,
}

impl Usage {
    /// Building a network and running one image through it.
    pub fn build() -> Self {
        Usage {
            batch: 1,
            training: false,
            optimizer_slots: 0,
            threads: threads(),
        }
    }

    /// Inference on batches of `batch` images.
    pub fn inference(batch: usize) -> Self {
        Usage {
            batch,
            ..Usage::build()
        }
    }

    /// Training on batches of `batch` with an optimizer keeping
    /// `optimizer_slots` tensors per parameter.
    pub fn training(batch: usize, optimizer_slots: usize) -> Self {
        Usage {
            batch,
            training: true,
            optimizer_slots,
            threads: threads(),
        }
    }

    fn describe(&self) -> String {
        let images = if self.batch == 1 {
            "1 image".to_string()
        } else {
            format!("batches of {}", self.batch)
        };
        if self.training {
            format!("to train on {images}")
        } else {
            format!("for {images}")
        }
    }
}

/// The threads that will each hold buffers: the current pool's inside one,
/// else the cores (asking rayon outside a pool would start its global pool,
/// and a later `build_global` would fail).
fn threads() -> usize {
    match rayon::current_thread_index() {
        Some(_) => rayon::current_num_threads(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn overflow(what: &str) -> Error {
    Error::Config(format!("{what} is too large to count (overflow)"))
}

fn mul(values: &[u128]) -> Option<u128> {
    values.iter().try_fold(1u128, |acc, &v| acc.checked_mul(v))
}

fn product(shape: &[usize]) -> Option<u128> {
    shape
        .iter()
        .try_fold(1u128, |acc, &v| acc.checked_mul(v as u128))
}

fn sum(values: &[u128]) -> Option<u128> {
    values.iter().try_fold(0u128, |acc, &v| acc.checked_add(v))
}

impl LayerPlan {
    /// Bytes this layer needs for `usage`, with `element_bytes` per value;
    /// `None` if that does not fit in a `u128`.
    fn bytes(&self, usage: &Usage, element_bytes: usize) -> Option<(u128, u128)> {
        let copies = if usage.training {
            2 + usage.optimizer_slots as u128
        } else {
            2 // the gradients exist from the start
        };
        let weights = sum(&[mul(&[self.params, copies])?, self.buffers])?;
        let per_image = if usage.training {
            self.train_values
        } else {
            self.infer_values
        };
        let values = sum(&[
            mul(&[per_image, usage.batch as u128])?,
            mul(&[self.workspace, usage.threads.max(1) as u128])?,
        ])?;
        let e = element_bytes as u128;
        Some((mul(&[weights, e])?, mul(&[values, e])?))
    }
}

impl ModelPlan {
    /// Trainable values of the whole network.
    pub fn param_count(&self) -> u128 {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Bytes the network needs for `usage`: everything the layers need,
    /// the input batch and the loss layer's. `None` on overflow.
    pub fn bytes(&self, usage: &Usage, element_bytes: usize) -> Option<u128> {
        let mut total = self.input_bytes(usage, element_bytes)?;
        for layer in &self.layers {
            let (weights, values) = layer.bytes(usage, element_bytes)?;
            total = sum(&[total, weights, values])?;
        }
        Some(total)
    }

    /// The input batch and the softmax-with-loss layer's values.
    fn input_bytes(&self, usage: &Usage, element_bytes: usize) -> Option<u128> {
        let per_image = sum(&[product(&self.input_shape)?, 2 * self.classes as u128])?;
        mul(&[per_image, usage.batch as u128, element_bytes as u128])
    }

    /// Refuses a network that needs more than `limit` bytes for `usage`
    /// (values of `element_bytes` bytes each): the error names the first
    /// layer that alone needs more, or else the total and the largest layer.
    pub fn check_memory(&self, usage: &Usage, limit: u64, element_bytes: usize) -> Result<()> {
        let limit_text = format!(
            "more than the memory limit of {} (--max-memory)",
            format_bytes(limit.into())
        );
        let mut largest: Option<(&LayerPlan, u128)> = None;
        for layer in &self.layers {
            let too_large = || {
                Error::Config(format!(
                    "layer {} ({}, {}): needs more than {} {}, {limit_text}",
                    layer.position,
                    layer.name,
                    layer.spec,
                    format_bytes(u128::MAX),
                    usage.describe()
                ))
            };
            let (weights, values) = layer.bytes(usage, element_bytes).ok_or_else(too_large)?;
            let both = weights.checked_add(values).ok_or_else(too_large)?;
            if both > limit as u128 {
                let what = if values == 0 {
                    format!("{} of weights", format_bytes(weights))
                } else {
                    format!(
                        "{} of weights and {} of activations {}",
                        format_bytes(weights),
                        format_bytes(values),
                        usage.describe()
                    )
                };
                return Err(Error::Config(format!(
                    "layer {} ({}, {}): needs {what}, {limit_text}",
                    layer.position, layer.name, layer.spec
                )));
            }
            if largest.is_none_or(|(_, b)| both > b) {
                largest = Some((layer, both));
            }
        }
        let total = self.bytes(usage, element_bytes);
        if total.is_none_or(|t| t > limit as u128) {
            let total = total.map_or_else(
                || format!("more than {}", format_bytes(u128::MAX)),
                format_bytes,
            );
            let largest = largest
                .map(|(l, b)| {
                    format!(
                        " (the largest layer: {} ({}, {}) with {})",
                        l.position,
                        l.name,
                        l.spec,
                        format_bytes(b)
                    )
                })
                .unwrap_or_default();
            let hint = if usage.batch > 1 {
                "; use smaller batches"
            } else {
                ""
            };
            return Err(Error::Config(format!(
                "the network needs {total} {}{largest}, {limit_text}{hint}",
                usage.describe()
            )));
        }
        Ok(())
    }
}

/// The spec text of one layer, for messages.
fn spec_text(layer: &LayerSpec) -> String {
    match layer {
        LayerSpec::Conv {
            filters,
            size,
            stride,
            pad,
        } => format!("conv({filters},{size},stride={stride},pad={pad})"),
        LayerSpec::MaxPool(p) => format!("maxpool({},stride={},pad={})", p.size, p.stride, p.pad),
        LayerSpec::AvgPool(p) => format!("avgpool({},stride={},pad={})", p.size, p.stride, p.pad),
        LayerSpec::GlobalAvgPool => "gap".into(),
        LayerSpec::Affine { outputs } => format!("affine({outputs})"),
        LayerSpec::Relu => "relu".into(),
        LayerSpec::Sigmoid => "sigmoid".into(),
        LayerSpec::Tanh => "tanh".into(),
        LayerSpec::Dropout { ratio } => format!("dropout({ratio})"),
        LayerSpec::Lrn(c) => format!("lrn({},{},{},{})", c.size, c.alpha, c.beta, c.k),
        LayerSpec::BatchNorm { .. } => "bn".into(),
    }
}

/// The name prefix the builder uses for a layer (`conv`, `pool`, `fc`, ...).
pub(crate) fn name_prefix(layer: &LayerSpec) -> &'static str {
    match layer {
        LayerSpec::Conv { .. } => "conv",
        LayerSpec::MaxPool(_) | LayerSpec::AvgPool(_) | LayerSpec::GlobalAvgPool => "pool",
        LayerSpec::Affine { .. } => "fc",
        LayerSpec::Relu => "relu",
        LayerSpec::Sigmoid => "sigmoid",
        LayerSpec::Tanh => "tanh",
        LayerSpec::Dropout { .. } => "dropout",
        LayerSpec::Lrn(_) => "lrn",
        LayerSpec::BatchNorm { .. } => "bn",
    }
}

/// `[C, H, W]` of a per-image shape, or the error a layer that needs one gives.
fn chw(kind: &str, shape: &[usize]) -> Result<[usize; 3]> {
    match shape {
        &[c, h, w] => Ok([c, h, w]),
        _ => Err(Error::Shape(format!(
            "{kind} needs (N, C, H, W) input, gets (N, {})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn pooling(kind: &str, config: &PoolingConfig, shape: &[usize]) -> Result<(Vec<usize>, usize)> {
    let [c, h, w] = chw(kind, shape)?;
    if config.pad >= config.size {
        return Err(Error::Geometry(format!(
            "{kind}: padding {} must be smaller than the window {}",
            config.pad, config.size
        )));
    }
    let side = |input| {
        output_size(input, config.size, config.stride, config.pad).map_err(|e| {
            Error::Geometry(format!(
                "{kind} {0}x{0} stride {1} pad {2} on {h}x{w} input: {3}",
                config.size,
                config.stride,
                config.pad,
                e.detail()
            ))
        })
    };
    let (oh, ow) = (side(h)?, side(w)?);
    Ok((vec![c, oh, ow], c))
}

/// One layer's plan, from its spec and input shape.
fn plan_layer(layer: &LayerSpec, input: &[usize]) -> Result<LayerPlan> {
    let n_in = product(input).ok_or_else(|| overflow("the input"))?;
    let same = |factor: u128| -> Result<(Vec<usize>, u128, u128)> {
        let v = n_in
            .checked_mul(factor)
            .ok_or_else(|| overflow("the layer"))?;
        Ok((input.to_vec(), v, n_in))
    };
    let mut plan = LayerPlan {
        position: 0,
        name: String::new(),
        spec: spec_text(layer),
        input: input.to_vec(),
        output: Vec::new(),
        params: 0,
        buffers: 0,
        train_values: 0,
        infer_values: 0,
        workspace: 0,
    };
    let too_large = || overflow("the layer");
    let (output, train, infer) = match layer {
        &LayerSpec::Conv {
            filters,
            size,
            stride,
            pad,
        } => {
            let [c, h, w] = chw("Convolution", input)?;
            if c == 0 || filters == 0 || size == 0 {
                return Err(Error::Config(format!(
                    "Convolution needs at least 1 input channel, filter and filter size (got {c}, {filters}, {size})"
                )));
            }
            let side = |input| {
                output_size(input, size, stride, pad).map_err(|e| {
                    Error::Geometry(format!(
                        "Convolution {filters}@{size}x{size} stride {stride} pad {pad} on {h}x{w} input: {}",
                        e.detail()
                    ))
                })
            };
            let (oh, ow) = (side(h)?, side(w)?);
            let (c, f, k) = (c as u128, filters as u128, size as u128);
            let (h, w, p) = (h as u128, w as u128, pad as u128);
            let (oh128, ow128) = (oh as u128, ow as u128);
            plan.params =
                sum(&[mul(&[f, c, k, k]).ok_or_else(too_large)?, f]).ok_or_else(too_large)?;
            let padded = mul(&[c, h + 2 * p, w + 2 * p]).ok_or_else(too_large)?;
            let out = mul(&[f, oh128, ow128]).ok_or_else(too_large)?;
            // im2col over the padded width (stride 1 runs over it).
            plan.workspace = mul(&[c, k, k, oh128, ow128.max(w + 2 * p)]).ok_or_else(too_large)?;
            let train = sum(&[padded, out, n_in]).ok_or_else(too_large)?;
            let infer = sum(&[padded, out]).ok_or_else(too_large)?;
            (vec![filters, oh, ow], train, infer)
        }
        LayerSpec::MaxPool(config) => {
            let (output, _) = pooling("MaxPooling", config, input)?;
            let out = product(&output).ok_or_else(too_large)?;
            // out, arg_max and the input's gradient.
            (output, 2 * out + n_in, out)
        }
        LayerSpec::AvgPool(config) => {
            let (output, _) = pooling("AvgPooling", config, input)?;
            let out = product(&output).ok_or_else(too_large)?;
            (output, out + n_in, out)
        }
        LayerSpec::GlobalAvgPool => {
            let [c, h, w] = chw("GlobalAvgPooling", input)?;
            if h == 0 || w == 0 {
                return Err(Error::Shape(format!(
                    "GlobalAvgPooling needs H, W > 0, gets {h}x{w}"
                )));
            }
            (vec![c], c as u128 + n_in, c as u128)
        }
        &LayerSpec::Affine { outputs } => {
            if outputs == 0 {
                return Err(Error::Config("needs at least 1 output".into()));
            }
            let m = outputs as u128;
            plan.params =
                sum(&[mul(&[n_in, m]).ok_or_else(too_large)?, m]).ok_or_else(too_large)?;
            // A copy of the input for dW, the output, the input's gradient.
            let train = sum(&[n_in, n_in, m]).ok_or_else(too_large)?;
            (vec![outputs], train, m)
        }
        LayerSpec::Relu | LayerSpec::Sigmoid | LayerSpec::Tanh => same(2)?,
        LayerSpec::Dropout { .. } => same(3)?,
        LayerSpec::Lrn(_) => {
            chw("LocalResponseNorm", input)?;
            same(4)?
        }
        LayerSpec::BatchNorm { .. } => {
            let features = match *input {
                [d] => d,
                [c, _, _] => c,
                _ => {
                    return Err(Error::Shape(format!(
                        "BatchNorm expects (N, D) or (N, C, H, W) input, gets {} dimensions",
                        input.len() + 1
                    )))
                }
            };
            plan.params = 2 * features as u128;
            plan.buffers = 2 * features as u128;
            same(4)?
        }
    };
    plan.output = output;
    plan.train_values = train;
    plan.infer_values = infer;
    Ok(plan)
}

/// Works out every layer's sizes for images of `input_shape` (C, H, W) and
/// `num_classes` classes, naming layers as [`build_from_spec`](super::build_from_spec)
/// does. An impossible geometry or size is an error naming the layer; the
/// network must end with one score per class.
pub fn plan_spec(
    layers: &[LayerSpec],
    input_shape: [usize; 3],
    num_classes: usize,
) -> Result<ModelPlan> {
    if input_shape.contains(&0) {
        let [c, h, w] = input_shape;
        return Err(Error::Config(format!(
            "input shape {c}x{h}x{w}: every dimension must be at least 1"
        )));
    }
    if product(&input_shape).is_none_or(|n| n > usize::MAX as u128) {
        return Err(overflow("the input shape"));
    }
    if num_classes == 0 {
        return Err(Error::Config("the data has no classes".into()));
    }
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let mut shape = input_shape.to_vec();
    let mut plans = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let prefix = name_prefix(layer);
        let count = counts.entry(prefix).or_insert(0);
        *count += 1;
        let name = format!("{prefix}{count}");
        let mut plan = plan_layer(layer, &shape)
            .map_err(|e| Error::Config(format!("layer {} ({name}): {}", index + 1, e.detail())))?;
        plan.position = index + 1;
        plan.name = name;
        shape.clone_from(&plan.output);
        plans.push(plan);
    }
    if shape != [num_classes] {
        let shown: Vec<String> = shape.iter().map(usize::to_string).collect();
        return Err(Error::Config(format!(
            "the network ends with shape [{}] per image; it must end with one score per class ({num_classes}), e.g. affine({num_classes})",
            shown.join(", ")
        )));
    }
    Ok(ModelPlan {
        input_shape,
        classes: num_classes,
        layers: plans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::parse_spec;

    fn plan(spec: &str, input: [usize; 3], classes: usize) -> Result<ModelPlan> {
        plan_spec(&parse_spec(spec)?, input, classes)
    }

    #[test]
    fn shapes_and_params_match_the_built_network() {
        let spec = "conv(6,5,pad=2)-sigmoid-avgpool(2)-conv(16,5)-bn-relu-maxpool(3,2,1)-lrn-dropout-gap-affine(10)";
        let p = plan(spec, [1, 28, 28], 10).unwrap();
        let shapes: Vec<Vec<usize>> = p.layers.iter().map(|l| l.output.clone()).collect();
        let mut net = crate::networks::build_from_spec::<f32>(
            &parse_spec(spec).unwrap(),
            [1, 28, 28],
            10,
            crate::init::Init::He,
            &mut crate::Rng::new(0),
        )
        .unwrap();
        let built = net.shapes(1).unwrap();
        for (mine, theirs) in shapes.iter().zip(&built[1..]) {
            assert_eq!(mine[..], theirs[1..]);
        }
        assert_eq!(p.param_count(), net.num_params() as u128);
        let names: Vec<&str> = p.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1", "sigmoid1", "pool1", "conv2", "bn1", "relu1", "pool2", "lrn1", "dropout1",
                "pool3", "fc1"
            ]
        );
    }

    #[test]
    fn huge_layers_are_refused_with_their_name_and_size() {
        let p = plan("conv(100000000,3)-affine(10)", [1, 28, 28], 10).unwrap();
        let e = p
            .check_memory(&Usage::build(), 1 << 30, 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "layer 1 (conv1, conv(100000000,3,stride=1,pad=0)): needs 7.5 GiB of weights"
            ),
            "{e}"
        );
        assert!(e.contains("more than the memory limit of 1 GiB"), "{e}");
        // Sizes beyond u128 are an error too, not an overflow.
        let e = plan(
            "affine(4294967295)-affine(4294967295)-affine(4294967295)-affine(10)",
            [4294967295, 4294967295, 4294967295],
            10,
        );
        let e = match e {
            Err(e) => e.to_string(),
            Ok(p) => p
                .check_memory(&Usage::build(), u64::MAX, 4)
                .unwrap_err()
                .to_string(),
        };
        assert!(e.contains("too large") || e.contains("more than"), "{e}");
    }

    #[test]
    fn the_total_is_checked_for_the_batch() {
        let p = plan("conv(32,3,pad=1)-relu-affine(10)", [3, 64, 64], 10).unwrap();
        p.check_memory(&Usage::training(1, 2), 64 << 20, 4).unwrap();
        let e = p
            .check_memory(&Usage::training(10_000, 2), 1 << 30, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("to train on batches of 10000"), "{e}");
    }

    #[test]
    fn impossible_geometries_name_the_layer() {
        for (spec, want) in [
            (
                "conv(8,40)-affine(10)",
                "layer 1 (conv1): Convolution 8@40x40",
            ),
            ("conv(8,3,stride=0)-affine(10)", "stride must be at least 1"),
            (
                "affine(20)-conv(8,3)-affine(10)",
                "layer 2 (conv1): Convolution needs (N, C, H, W) input",
            ),
            ("maxpool(2,pad=2)-affine(10)", "padding 2 must be smaller"),
            ("affine(0)", "needs at least 1 output"),
            ("relu", "it must end with one score per class (10)"),
        ] {
            let e = plan(spec, [1, 28, 28], 10).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
        // A huge padding plans (8 outputs of 8589934616²) but cannot be built.
        let p = plan("conv(8,3,pad=4294967295)-affine(10)", [1, 28, 28], 10).unwrap();
        let e = p
            .check_memory(&Usage::build(), u64::MAX, 4)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("layer 1 (conv1, "), "{e}");
        assert!(plan("affine(10)", [0, 28, 28], 10).is_err());
        assert!(plan("affine(10)", [usize::MAX, usize::MAX, 2], 10).is_err());
    }
}
