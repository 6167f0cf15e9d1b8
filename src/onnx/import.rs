//! ONNX model bytes → a network described by a spec.
//!
//! The graph is walked from its one input along the only node that reads
//! the current tensor, until the graph's output: a chain, as convnet's
//! networks are (with one exception: PyTorch's LRN as `torch.onnx.export`
//! writes it reads its input twice, see `torch_lrn`). Every node maps to a
//! [`LayerSpec`] (or to nothing, for
//! `Flatten`, `Identity`, ...) and the shape is tracked along the way, so
//! that every weight is checked against the layer that will hold it before
//! the network is built.

use super::keys;
use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType,
    tensor_shape_proto::dimension, type_proto, AttributeProto, ModelProto, NodeProto, TensorProto,
};
use crate::checkpoint::CheckpointInfo;
use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::{LrnConfig, PoolingConfig};
use crate::networks::spec::format_spec;
use crate::networks::{
    build_from_spec, model_info, parse_spec, LayerSpec, ModelOptions, Network, SimpleConvNetConfig,
};
use crate::rng::Rng;
use crate::tensor::Tensor;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

mod external;
mod torch_lrn;

/// The largest image an imported network may take: C·H·W values.
const MAX_INPUT_VALUES: usize = 1 << 26;
/// The largest side or channel count of the input.
const MAX_INPUT_DIM: usize = 1 << 16;

/// A network read by [`import`], with the metadata to save it as a checkpoint.
pub struct Imported {
    /// The network, with the file's weights.
    pub net: Network<f32>,
    /// `model` is the spec (or, when the file came from convnet and the
    /// layers are those of a named model, that name); `extra` says where
    /// the network came from.
    pub info: CheckpointInfo,
    /// The spec of the network's layers.
    pub spec: String,
}

/// A value known before the network runs: an initializer or a `Constant`.
enum Constant<'a> {
    Tensor(&'a TensorProto),
    Floats(Vec<usize>, Vec<f32>),
    Ints(Vec<usize>, Vec<i64>),
}

/// The current tensor, as ONNX sees it and as convnet will hold it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// (N, C, H, W) in both.
    Image { c: usize, h: usize, w: usize },
    /// (N, C·H·W) for ONNX after a Flatten; convnet keeps (N, C, H, W)
    /// until its affine layer, which flattens it the same way.
    Flattened { c: usize, h: usize, w: usize },
    /// (N, C, 1, 1) for ONNX after GlobalAveragePool; (N, C) for convnet.
    Pooled { c: usize },
    /// (N, D) in both.
    Flat { d: usize },
}

impl Shape {
    fn flat_len(self) -> usize {
        match self {
            Shape::Image { c, h, w } | Shape::Flattened { c, h, w } => c * h * w,
            Shape::Pooled { c } => c,
            Shape::Flat { d } => d,
        }
    }
}

/// One layer's tensors, in the order the layer lists its parameters then
/// its buffers, with the shapes the layer stores them in.
type LayerTensors = Vec<(Vec<usize>, Vec<f32>)>;

struct Reader<'a> {
    source: &'a str,
    constants: HashMap<&'a str, Constant<'a>>,
    layers: Vec<LayerSpec>,
    tensors: Vec<LayerTensors>,
    /// The index of a layer made from a MatMul whose bias an Add may still set.
    matmul_pending_bias: Option<usize>,
}

fn dims_of(t: &TensorProto) -> std::result::Result<(Vec<usize>, usize), String> {
    let mut count: usize = 1;
    let mut dims = Vec::with_capacity(t.dims.len().min(8));
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| format!("dimensions {:?} overflow", t.dims))?;
        dims.push(d);
    }
    Ok((dims, count))
}

/// Whether the tensor's data is in an external file.
fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty()
}

/// What an external tensor that was not read says.
const EXTERNAL: &str = "its data is in an external file, which only an import from the model's file reads (convnet import, onnx::import_file)";

/// A float tensor's dimensions and values, checked against the data present.
fn read_floats(t: &TensorProto) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    if is_external(t) {
        return Err(EXTERNAL.into());
    }
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let data_type = t.data_type.unwrap_or(0);
    if data_type != DataType::Float as i32 {
        return Err(format!(
            "is of type {}, expected float32",
            DataType::try_from(data_type).map_or("unknown", |d| d.as_str_name())
        ));
    }
    let (dims, count) = dims_of(t)?;
    match &t.raw_data {
        Some(raw) if !raw.is_empty() || t.float_data.is_empty() => {
            let bytes = count.checked_mul(4).ok_or("its size overflows")?;
            if raw.len() != bytes {
                return Err(format!(
                    "dimensions {dims:?} need {bytes} bytes of data, it has {}",
                    raw.len()
                ));
            }
            let values = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok((dims, values))
        }
        _ => {
            if t.float_data.len() != count {
                return Err(format!(
                    "dimensions {dims:?} need {count} values, it has {}",
                    t.float_data.len()
                ));
            }
            Ok((dims, t.float_data.clone()))
        }
    }
}

/// An int64 tensor (a Reshape's shape), checked likewise.
fn read_ints(t: &TensorProto) -> std::result::Result<(Vec<usize>, Vec<i64>), String> {
    if is_external(t) {
        return Err(EXTERNAL.into());
    }
    if t.data_type.unwrap_or(0) != DataType::Int64 as i32 {
        return Err("is not an int64 tensor".into());
    }
    let (dims, count) = dims_of(t)?;
    match &t.raw_data {
        Some(raw) if !raw.is_empty() || t.int64_data.is_empty() => {
            let bytes = count.checked_mul(8).ok_or("its size overflows")?;
            if raw.len() != bytes {
                return Err(format!(
                    "dimensions {dims:?} need {bytes} bytes of data, it has {}",
                    raw.len()
                ));
            }
            let values = raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            Ok((dims, values))
        }
        _ => {
            if t.int64_data.len() != count {
                return Err(format!(
                    "dimensions {dims:?} need {count} values, it has {}",
                    t.int64_data.len()
                ));
            }
            Ok((dims, t.int64_data.clone()))
        }
    }
}

/// A float as the spec writes it: the shortest decimal that gives the same
/// f32, so that a value that came from a spec comes back as it was.
fn spec_float(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

/// The node's attributes by name, each checked to be one of `known`.
struct Attributes<'a> {
    node: String,
    map: HashMap<&'a str, &'a AttributeProto>,
}

impl<'a> Attributes<'a> {
    fn error(&self, what: String) -> String {
        format!("{}: {what}", self.node)
    }

    fn int(&self, name: &str, default: i64) -> std::result::Result<i64, String> {
        match self.map.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == Some(AttributeType::Int as i32) || a.i.is_some() => {
                Ok(a.i.unwrap_or(0))
            }
            Some(_) => Err(self.error(format!("attribute {name} is not an integer"))),
        }
    }

    fn float(&self, name: &str, default: f32) -> std::result::Result<f32, String> {
        match self.map.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == Some(AttributeType::Float as i32) || a.f.is_some() => {
                let f = a.f.unwrap_or(0.0);
                if f.is_finite() {
                    Ok(f)
                } else {
                    Err(self.error(format!("attribute {name} is {f}")))
                }
            }
            Some(_) => Err(self.error(format!("attribute {name} is not a float"))),
        }
    }

    fn ints(&self, name: &str) -> std::result::Result<Option<&'a [i64]>, String> {
        match self.map.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == Some(AttributeType::Ints as i32) || !a.ints.is_empty() => {
                Ok(Some(&a.ints))
            }
            Some(_) => Err(self.error(format!("attribute {name} is not a list of integers"))),
        }
    }

    fn string(&self, name: &str) -> std::result::Result<Option<&'a [u8]>, String> {
        match self.map.get(name) {
            None => Ok(None),
            Some(a) => {
                a.s.as_deref()
                    .map(Some)
                    .ok_or_else(|| self.error(format!("attribute {name} is not a string")))
            }
        }
    }

    /// A square window's side from `kernel_shape` (2 equal values).
    fn square(&self, name: &str, default: Option<i64>) -> std::result::Result<usize, String> {
        let value = match (self.ints(name)?, default) {
            (Some(&[a, b]), _) if a == b => a,
            (Some(v), _) => {
                return Err(self.error(format!(
                    "{name} {v:?} is not supported (convnet needs 2 equal values)"
                )))
            }
            (None, Some(d)) => d,
            (None, None) => return Err(self.error(format!("attribute {name} is missing"))),
        };
        usize::try_from(value)
            .ok()
            .filter(|&v| v >= 1 && v <= u32::MAX as usize)
            .ok_or_else(|| self.error(format!("{name} {value} is out of range")))
    }

    /// Symmetric padding from `pads` (4 equal values), 0 when absent.
    fn pad(&self) -> std::result::Result<usize, String> {
        match self.ints("pads")? {
            None => Ok(0),
            Some(&[a, b, c, d]) if a == b && b == c && c == d => usize::try_from(a)
                .ok()
                .filter(|&v| v <= u32::MAX as usize)
                .ok_or_else(|| self.error(format!("pads {a} is out of range"))),
            Some(v) => Err(self.error(format!(
                "pads {v:?} are not supported (convnet pads all four sides alike)"
            ))),
        }
    }

    fn no_dilation(&self) -> std::result::Result<(), String> {
        match self.ints("dilations")? {
            None => Ok(()),
            Some(v) if v.iter().all(|&d| d == 1) => Ok(()),
            Some(v) => Err(self.error(format!("dilations {v:?} are not supported"))),
        }
    }

    fn no_auto_pad(&self) -> std::result::Result<(), String> {
        match self.string("auto_pad")? {
            None | Some(b"NOTSET") | Some(b"") => Ok(()),
            Some(v) => Err(self.error(format!(
                "auto_pad {} is not supported (give explicit pads)",
                String::from_utf8_lossy(v)
            ))),
        }
    }
}

/// An attribute error as the file's one-line error.
fn lift<T>(source: &str, r: std::result::Result<T, String>) -> Result<T> {
    r.map_err(|e| Error::Data(format!("{source}: {e}")))
}

fn node_label(node: &NodeProto, index: usize) -> String {
    let op = node.op_type();
    match node.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => format!("node '{name}' ({op})"),
        None => format!("node {} ({op})", index + 1),
    }
}

/// Output size of a window of `k` with stride `s` and padding `p` over `n`.
fn window_out(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    let padded = n.checked_add(p.checked_mul(2)?)?;
    if s == 0 || k > padded {
        return None;
    }
    Some((padded - k) / s + 1)
}

impl<'a> Reader<'a> {
    fn error(&self, what: String) -> Error {
        Error::Data(format!("{}: {what}", self.source))
    }

    fn floats(&self, name: &str, node: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.constants.get(name) {
            Some(Constant::Tensor(t)) => {
                read_floats(t).map_err(|e| self.error(format!("{node}: tensor '{name}' {e}")))
            }
            Some(Constant::Floats(dims, values)) => Ok((dims.clone(), values.clone())),
            Some(Constant::Ints(..)) => Err(self.error(format!(
                "{node}: tensor '{name}' is an integer tensor, expected float32"
            ))),
            None => Err(self.error(format!(
                "{node}: input '{name}' is neither an initializer nor a constant"
            ))),
        }
    }

    fn ints(&self, name: &str, node: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        match self.constants.get(name) {
            Some(Constant::Tensor(t)) => {
                read_ints(t).map_err(|e| self.error(format!("{node}: tensor '{name}' {e}")))
            }
            Some(Constant::Ints(dims, values)) => Ok((dims.clone(), values.clone())),
            Some(Constant::Floats(..)) => Err(self.error(format!(
                "{node}: tensor '{name}' is a float tensor, expected int64"
            ))),
            None => Err(self.error(format!(
                "{node}: input '{name}' is neither an initializer nor a constant"
            ))),
        }
    }

    /// A float vector of `len` values (a bias, a BN statistic).
    fn vector(&self, name: &str, node: &str, len: usize, what: &str) -> Result<Vec<f32>> {
        let (dims, values) = self.floats(name, node)?;
        let ok = match dims[..] {
            [n] => n == len,
            [1, n] => n == len,
            _ => false,
        };
        if !ok {
            return Err(self.error(format!(
                "{node}: {what} '{name}' has shape {dims:?}, expected [{len}]"
            )));
        }
        Ok(values)
    }

    fn push(&mut self, layer: LayerSpec, tensors: LayerTensors) {
        self.layers.push(layer);
        self.tensors.push(tensors);
        self.matmul_pending_bias = None;
    }

    /// Maps one node, reading `shape` and returning the shape after it.
    fn node(
        &mut self,
        node: &'a NodeProto,
        label: &str,
        current: &str,
        shape: Shape,
        last: bool,
    ) -> Result<Shape> {
        let op = node.op_type();
        let source = self.source;
        let err = |what: String| Error::Data(format!("{source}: {label}: {what}"));
        let attrs = Attributes {
            node: label.to_string(),
            map: node
                .attribute
                .iter()
                .map(|a| (a.name.as_deref().unwrap_or(""), a))
                .collect(),
        };
        let known = |names: &[&str]| -> Result<()> {
            match attrs.map.keys().find(|k| !names.contains(k)) {
                Some(k) => Err(err(format!("attribute '{k}' is not supported"))),
                None => Ok(()),
            }
        };
        let input = |i: usize| {
            node.input
                .get(i)
                .map(String::as_str)
                .filter(|s| !s.is_empty())
        };
        let image = || match shape {
            Shape::Image { c, h, w } => Ok((c, h, w)),
            other => Err(err(format!(
                "needs (N, C, H, W) input, gets {}",
                describe(other)
            ))),
        };
        let only_inputs = |n: usize| -> Result<()> {
            if node.input.iter().skip(n).any(|s| !s.is_empty()) {
                Err(err(format!("takes at most {n} inputs here")))
            } else {
                Ok(())
            }
        };
        match op {
            "Conv" => {
                known(&[
                    "kernel_shape",
                    "strides",
                    "pads",
                    "dilations",
                    "group",
                    "auto_pad",
                ])?;
                only_inputs(3)?;
                let (c, h, w) = image()?;
                lift(source, attrs.no_dilation())?;
                lift(source, attrs.no_auto_pad())?;
                let group = lift(source, attrs.int("group", 1))?;
                if group != 1 {
                    return Err(err(format!("group {group} is not supported")));
                }
                let weight_name = input(1).ok_or_else(|| err("has no weight input".into()))?;
                let (dims, weight) = self.floats(weight_name, label)?;
                let [filters, in_c, kh, kw] = dims[..] else {
                    return Err(err(format!(
                        "weight '{weight_name}' has shape {dims:?}, expected (filters, channels, k, k)"
                    )));
                };
                if in_c != c || kh != kw || filters == 0 {
                    return Err(err(format!(
                        "weight '{weight_name}' has shape {dims:?}, expected ({}, {c}, k, k) with a square k×k window",
                        if filters == 0 { "≥ 1".to_string() } else { filters.to_string() }
                    )));
                }
                let size = lift(source, attrs.square("kernel_shape", Some(kh as i64)))?;
                if size != kh {
                    return Err(err(format!(
                        "kernel_shape {size} does not match the weight's {kh}"
                    )));
                }
                let stride = lift(source, attrs.square("strides", Some(1)))?;
                let pad = lift(source, attrs.pad())?;
                let (Some(oh), Some(ow)) = (
                    window_out(h, size, stride, pad),
                    window_out(w, size, stride, pad),
                ) else {
                    return Err(err(format!(
                        "a {size}×{size} window (pad {pad}) does not fit its {h}×{w} input"
                    )));
                };
                let bias = match input(2) {
                    Some(name) => self.vector(name, label, filters, "bias")?,
                    None => vec![0.0; filters],
                };
                self.push(
                    LayerSpec::Conv {
                        filters,
                        size,
                        stride,
                        pad,
                    },
                    vec![(dims, weight), (vec![filters], bias)],
                );
                Ok(Shape::Image {
                    c: filters,
                    h: oh,
                    w: ow,
                })
            }
            "MaxPool" | "AveragePool" => {
                let max = op == "MaxPool";
                known(&[
                    "kernel_shape",
                    "strides",
                    "pads",
                    "dilations",
                    "ceil_mode",
                    "auto_pad",
                    "storage_order",
                    "count_include_pad",
                ])?;
                only_inputs(1)?;
                let (c, h, w) = image()?;
                lift(source, attrs.no_dilation())?;
                lift(source, attrs.no_auto_pad())?;
                if lift(source, attrs.int("ceil_mode", 0))? != 0 {
                    return Err(err("ceil_mode 1 is not supported".into()));
                }
                if lift(source, attrs.int("storage_order", 0))? != 0 {
                    return Err(err("storage_order 1 is not supported".into()));
                }
                let size = lift(source, attrs.square("kernel_shape", None))?;
                let stride = lift(source, attrs.square("strides", Some(1)))?;
                let pad = lift(source, attrs.pad())?;
                if !max && pad > 0 && lift(source, attrs.int("count_include_pad", 0))? == 0 {
                    return Err(err(
                        "count_include_pad 0 with padding is not supported (convnet's average pooling divides by the whole window, padding included: count_include_pad 1)".into(),
                    ));
                }
                if pad >= size {
                    return Err(err(format!(
                        "padding {pad} must be smaller than the window {size}"
                    )));
                }
                let (Some(oh), Some(ow)) = (
                    window_out(h, size, stride, pad),
                    window_out(w, size, stride, pad),
                ) else {
                    return Err(err(format!(
                        "a {size}×{size} window (pad {pad}) does not fit its {h}×{w} input"
                    )));
                };
                let config = PoolingConfig { size, stride, pad };
                let layer = if max {
                    LayerSpec::MaxPool(config)
                } else {
                    LayerSpec::AvgPool(config)
                };
                self.push(layer, vec![]);
                Ok(Shape::Image { c, h: oh, w: ow })
            }
            "GlobalAveragePool" => {
                known(&[])?;
                only_inputs(1)?;
                let (c, _, _) = image()?;
                self.push(LayerSpec::GlobalAvgPool, vec![]);
                Ok(Shape::Pooled { c })
            }
            "ReduceMean" => {
                // torch.onnx.export's nn.AdaptiveAvgPool2d(1): the mean over
                // H and W, axes as an input (opset 18) or an attribute.
                known(&["axes", "keepdims", "noop_with_empty_axes"])?;
                only_inputs(2)?;
                let (c, _, _) = image()?;
                let axes = match (input(1), lift(source, attrs.ints("axes"))?) {
                    (Some(name), None) => self.ints(name, label)?.1,
                    (None, Some(axes)) => axes.to_vec(),
                    _ => return Err(err("needs its axes as one input or attribute".into())),
                };
                let mut sorted: Vec<i64> =
                    axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
                sorted.sort_unstable();
                if sorted != [2, 3] {
                    return Err(err(format!(
                        "axes {axes:?} are not supported (only the mean over H and W, axes [2, 3], a global average pooling)"
                    )));
                }
                self.push(LayerSpec::GlobalAvgPool, vec![]);
                match lift(source, attrs.int("keepdims", 1))? {
                    1 => Ok(Shape::Pooled { c }),
                    0 => Ok(Shape::Flat { d: c }),
                    k => Err(err(format!("keepdims {k} is not supported"))),
                }
            }
            "Flatten" => {
                known(&["axis"])?;
                only_inputs(1)?;
                let axis = lift(source, attrs.int("axis", 1))?;
                if axis != 1 {
                    return Err(err(format!(
                        "axis {axis} is not supported (convnet flattens from axis 1)"
                    )));
                }
                Ok(flatten(shape))
            }
            "Reshape" => {
                known(&["allowzero"])?;
                only_inputs(2)?;
                let name = input(1).ok_or_else(|| err("has no shape input".into()))?;
                let (_, target) = self.ints(name, label)?;
                let len = shape.flat_len() as i64;
                let allowzero = lift(source, attrs.int("allowzero", 0))?;
                // (N, -1), (N, C·H·W) with N written as -1, 1 (one image) or
                // 0 (copy; with allowzero 1, torch.onnx.export's, a 0 is a
                // dimension of size 0).
                let batch = |n: i64| n == -1 || n == 1 || (n == 0 && allowzero == 0);
                let flat = match target[..] {
                    [n, -1] => n != -1 && batch(n),
                    [n, d] => batch(n) && d == len,
                    _ => false,
                };
                if !flat || !(0..=1).contains(&allowzero) {
                    return Err(err(format!(
                        "shape {target:?} with allowzero {allowzero} is not supported (only flattening to (N, {len}))"
                    )));
                }
                Ok(flatten(shape))
            }
            "Gemm" | "MatMul" => {
                if op == "Gemm" {
                    known(&["alpha", "beta", "transA", "transB"])?;
                    only_inputs(3)?;
                } else {
                    known(&[])?;
                    only_inputs(2)?;
                }
                let inputs = match shape {
                    Shape::Flattened { .. } | Shape::Flat { .. } => shape.flat_len(),
                    other => {
                        return Err(err(format!(
                            "needs (N, features) input, gets {} (add a Flatten before it)",
                            describe(other)
                        )))
                    }
                };
                if node.input.first().map(String::as_str) != Some(current) {
                    return Err(err("the data must be its first input".into()));
                }
                let (alpha, beta) = (lift(source, attrs.float("alpha", 1.0))?, lift(source, attrs.float("beta", 1.0))?);
                let (trans_a, trans_b) = (lift(source, attrs.int("transA", 0))?, lift(source, attrs.int("transB", 0))?);
                if alpha != 1.0 || beta != 1.0 || trans_a != 0 || !(0..=1).contains(&trans_b) {
                    return Err(err(format!(
                        "alpha {alpha}, beta {beta}, transA {trans_a}, transB {trans_b} are not supported (only alpha 1, beta 1, transA 0)"
                    )));
                }
                let weight_name = input(1).ok_or_else(|| err("has no weight input".into()))?;
                let (dims, weight) = self.floats(weight_name, label)?;
                let [rows, cols] = dims[..] else {
                    return Err(err(format!(
                        "weight '{weight_name}' has shape {dims:?}, expected 2 dimensions"
                    )));
                };
                // convnet stores (in, out); transB=1 gives (out, in).
                let (w_in, outputs) = if trans_b == 1 { (cols, rows) } else { (rows, cols) };
                if w_in != inputs || outputs == 0 {
                    return Err(err(format!(
                        "weight '{weight_name}' has shape {dims:?} for {inputs} inputs"
                    )));
                }
                let weight = if trans_b == 1 {
                    let mut t = vec![0.0; weight.len()];
                    crate::kernels::transpose_into(&weight, rows, cols, &mut t);
                    t
                } else {
                    weight
                };
                let bias = match input(2) {
                    Some(name) => self.vector(name, label, outputs, "bias")?,
                    None => vec![0.0; outputs],
                };
                self.push(
                    LayerSpec::Affine { outputs },
                    vec![(vec![inputs, outputs], weight), (vec![outputs], bias)],
                );
                if op == "MatMul" {
                    self.matmul_pending_bias = Some(self.layers.len() - 1);
                }
                Ok(Shape::Flat { d: outputs })
            }
            "Add" => {
                known(&[])?;
                only_inputs(2)?;
                let other = node
                    .input
                    .iter()
                    .find(|i| i.as_str() != current)
                    .ok_or_else(|| err("adds its input to itself".into()))?;
                let (Some(index), Shape::Flat { d }) = (self.matmul_pending_bias, shape) else {
                    return Err(err(
                        "Add is supported only as the bias right after a MatMul".into(),
                    ));
                };
                let bias = self.vector(other, label, d, "bias")?;
                self.tensors[index][1].1 = bias;
                self.matmul_pending_bias = None;
                Ok(shape)
            }
            "Relu" | "Sigmoid" | "Tanh" => {
                known(&[])?;
                only_inputs(1)?;
                let layer = match op {
                    "Relu" => LayerSpec::Relu,
                    "Sigmoid" => LayerSpec::Sigmoid,
                    _ => LayerSpec::Tanh,
                };
                self.push(layer, vec![]);
                Ok(shape)
            }
            "Dropout" => {
                known(&["ratio", "seed", "is_test"])?;
                only_inputs(3)?;
                let mut ratio = lift(source, attrs.float("ratio", 0.5))?;
                if let Some(name) = input(1) {
                    let (_, values) = self.floats(name, label)?;
                    ratio = match values[..] {
                        [r] => r,
                        _ => return Err(err(format!("ratio '{name}' is not one number"))),
                    };
                }
                if let Some(name) = input(2) {
                    let training = match self.constants.get(name) {
                        Some(Constant::Tensor(t)) => {
                            t.data_type == Some(DataType::Bool as i32)
                                && (t.int32_data.iter().any(|&v| v != 0)
                                    || t.raw_data.as_deref().unwrap_or(&[]).iter().any(|&b| b != 0))
                        }
                        _ => true,
                    };
                    if training {
                        return Err(err("training_mode must be a constant false".into()));
                    }
                }
                if !(0.0..1.0).contains(&ratio) {
                    return Err(err(format!("ratio {ratio} is not in [0, 1)")));
                }
                self.push(
                    LayerSpec::Dropout {
                        ratio: spec_float(ratio),
                    },
                    vec![],
                );
                Ok(shape)
            }
            "LRN" => {
                known(&["alpha", "beta", "bias", "size"])?;
                only_inputs(1)?;
                image()?;
                let size = lift(source, attrs.int("size", 0))?;
                if size < 1 || size % 2 == 0 || size > u32::MAX as i64 {
                    return Err(err(format!(
                        "size {size} is not supported (convnet's LRN, PyTorch's convention, agrees with ONNX's for odd sizes only)"
                    )));
                }
                let config = LrnConfig {
                    size: size as usize,
                    alpha: spec_float(lift(source, attrs.float("alpha", 1e-4))?),
                    beta: spec_float(lift(source, attrs.float("beta", 0.75))?),
                    k: spec_float(lift(source, attrs.float("bias", 1.0))?),
                };
                if config.k <= 0.0 {
                    return Err(err(format!("bias {} must be positive", config.k)));
                }
                self.push(LayerSpec::Lrn(config), vec![]);
                Ok(shape)
            }
            "BatchNormalization" => {
                known(&["epsilon", "momentum", "spatial", "training_mode"])?;
                only_inputs(5)?;
                let features = match shape {
                    Shape::Image { c, .. } | Shape::Pooled { c } => c,
                    Shape::Flat { d } => d,
                    Shape::Flattened { .. } => {
                        return Err(err(
                            "batch normalization of a flattened image is not supported".into(),
                        ))
                    }
                };
                if lift(source, attrs.int("spatial", 1))? != 1 || lift(source, attrs.int("training_mode", 0))? != 0 {
                    return Err(err("only inference (spatial 1, training_mode 0) is supported".into()));
                }
                let eps = lift(source, attrs.float("epsilon", 1e-5))?;
                if eps <= 0.0 {
                    return Err(err(format!("epsilon {eps} must be positive")));
                }
                let mut tensors = Vec::new();
                for (i, what) in ["scale", "bias", "mean", "variance"].iter().enumerate() {
                    let name = input(i + 1).ok_or_else(|| err(format!("has no {what} input")))?;
                    let values = self.vector(name, label, features, what)?;
                    tensors.push((vec![features], values));
                }
                self.push(
                    LayerSpec::BatchNorm {
                        momentum: crate::layers::BatchNormConfig::default().momentum,
                        eps: spec_float(eps),
                    },
                    tensors,
                );
                Ok(shape)
            }
            "Identity" => {
                known(&[])?;
                only_inputs(1)?;
                Ok(shape)
            }
            "Softmax" | "LogSoftmax" if last => {
                // convnet's output is the scores; its predict applies the
                // softmax, so a final (log-)softmax is left out.
                known(&["axis"])?;
                only_inputs(1)?;
                let axis = lift(source, attrs.int("axis", -1))?;
                match shape {
                    Shape::Flat { .. } | Shape::Pooled { .. } if axis == 1 || axis == -1 => {
                        Ok(shape)
                    }
                    _ => Err(err(format!("axis {axis} is not the class axis"))),
                }
            }
            other => Err(err(format!(
                "operator {other} is not supported (convnet imports Conv, MaxPool, AveragePool, GlobalAveragePool, ReduceMean over H and W, Gemm, MatMul + Add, Flatten, Reshape, Relu, Sigmoid, Tanh, Dropout, LRN, BatchNormalization, Identity, and a final Softmax)"
            ))),
        }
    }
}

fn flatten(shape: Shape) -> Shape {
    match shape {
        Shape::Image { c, h, w } => Shape::Flattened { c, h, w },
        Shape::Pooled { c } => Shape::Flat { d: c },
        other => other,
    }
}

fn describe(shape: Shape) -> String {
    match shape {
        Shape::Image { c, h, w } => format!("(N, {c}, {h}, {w})"),
        Shape::Pooled { c } => format!("(N, {c}, 1, 1)"),
        Shape::Flattened { c, h, w } => format!("(N, {})", c * h * w),
        Shape::Flat { d } => format!("(N, {d})"),
    }
}

/// The spec of a named model, for giving an imported network its name back
/// (`None` for a spec).
fn named_model_spec(model: &str, options: &ModelOptions, classes: usize) -> Option<String> {
    if model == "simple" {
        let d = SimpleConvNetConfig::default();
        return Some(format!(
            "conv({},{},stride={},pad={})-relu-maxpool(2)-affine({})-relu-affine({classes})",
            options.filters.unwrap_or(d.filters),
            options.filter_size.unwrap_or(d.filter_size),
            options.stride.unwrap_or(d.stride),
            options.pad.unwrap_or(d.pad),
            options.hidden_size.unwrap_or(d.hidden_size),
        ));
    }
    let info = model_info(model)?;
    let activation = options
        .activation
        .as_deref()
        .unwrap_or(info.default_activation);
    Some(
        info.spec
            .replace("{act}", activation)
            .replace("{classes}", &classes.to_string()),
    )
}

/// Reads an ONNX model (`bytes`, from the file `source`) into a network.
///
/// The model must be one chain from a float32 (N, C, H, W) input to a
/// (N, classes) output through the operators listed in `docs/onnx.md`;
/// anything else, and any malformed file, is one [`Error::Data`] line.
/// Weights in an external data file are refused: [`import_file`] reads them.
pub fn import(bytes: &[u8], source: &str) -> Result<Imported> {
    import_with(bytes, source, None)
}

/// Reads the ONNX model in the file `path` into a network, as [`import`],
/// with the weights that are in external data files (`torch.onnx.export`'s
/// default, `model.onnx.data`) read from the model's folder.
pub fn import_file(path: &Path) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let folder = path.parent().unwrap_or(Path::new(""));
    import_with(&bytes, &path.display().to_string(), Some(folder))
}

fn import_with(bytes: &[u8], source: &str, folder: Option<&Path>) -> Result<Imported> {
    let bad = |what: String| Error::Data(format!("{source}: {what}"));
    let mut model =
        ModelProto::decode(bytes).map_err(|e| bad(format!("not an ONNX model (protobuf: {e})")))?;
    if let Some(folder) = folder {
        external::load(&mut model, folder, source)?;
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("not an ONNX model: it has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| bad("it imports no version of the standard ONNX operators".into()))?;
    if !(7..=23).contains(&opset) {
        return Err(bad(format!(
            "opset {opset} is not supported (7 to 23; convnet writes 13)"
        )));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(bad("sparse initializers are not supported".into()));
    }
    let mut reader = Reader {
        source,
        constants: HashMap::new(),
        layers: Vec::new(),
        tensors: Vec::new(),
        matmul_pending_bias: None,
    };
    for t in &graph.initializer {
        reader.constants.insert(t.name(), Constant::Tensor(t));
    }
    // Constant nodes become constants; every other node is a step.
    let mut steps = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        let label = node_label(node, index);
        if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            return Err(bad(format!(
                "{label}: operators of domain '{}' are not supported",
                node.domain()
            )));
        }
        if node.op_type() != "Constant" {
            steps.push(index);
            continue;
        }
        let [output] = &node.output[..] else {
            return Err(bad(format!("{label}: needs one output")));
        };
        let [attr] = &node.attribute[..] else {
            return Err(bad(format!("{label}: needs one value attribute")));
        };
        let value = match attr.name() {
            "value" => Constant::Tensor(
                attr.t
                    .as_ref()
                    .ok_or_else(|| bad(format!("{label}: value holds no tensor")))?,
            ),
            "value_float" => Constant::Floats(vec![], vec![attr.f()]),
            "value_floats" => Constant::Floats(vec![attr.floats.len()], attr.floats.clone()),
            "value_int" => Constant::Ints(vec![], vec![attr.i()]),
            "value_ints" => Constant::Ints(vec![attr.ints.len()], attr.ints.clone()),
            other => return Err(bad(format!("{label}: attribute {other} is not supported"))),
        };
        reader.constants.insert(output.as_str(), value);
    }
    // The data input: the one graph input that is not a constant.
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !reader.constants.contains_key(i.name()))
        .collect();
    let [input] = inputs[..] else {
        return Err(bad(format!(
            "the graph must have one image input, it has {}",
            inputs.len()
        )));
    };
    let input_name = input.name().to_string();
    let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        _ => return Err(bad(format!("input '{input_name}' is not a tensor"))),
    };
    if tensor_type.elem_type != Some(DataType::Float as i32) {
        return Err(bad(format!("input '{input_name}' is not float32")));
    }
    let dims: Vec<Option<i64>> = tensor_type
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [_, Some(c), Some(h), Some(w)] = dims[..] else {
        return Err(bad(format!(
            "input '{input_name}' must be (N, C, H, W) with fixed C, H and W"
        )));
    };
    let dim = |v: i64| {
        usize::try_from(v)
            .ok()
            .filter(|&v| (1..=MAX_INPUT_DIM).contains(&v))
    };
    let (Some(c), Some(h), Some(w)) = (dim(c), dim(h), dim(w)) else {
        return Err(bad(format!(
            "input '{input_name}' has dimensions ({c}, {h}, {w}): each must be 1 to {MAX_INPUT_DIM}"
        )));
    };
    if c * h * w > MAX_INPUT_VALUES {
        return Err(bad(format!(
            "input '{input_name}' has {} values per image, more than {MAX_INPUT_VALUES}",
            c * h * w
        )));
    }
    let [output] = &graph.output[..] else {
        return Err(bad(format!(
            "the graph must have one output, it has {}",
            graph.output.len()
        )));
    };
    let output_name = output.name();
    // Which steps read each tensor.
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for &index in &steps {
        let node = &graph.node[index];
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            if !reader.constants.contains_key(name.as_str()) {
                readers.entry(name.as_str()).or_default().push(index);
            }
        }
    }
    // Walk the chain.
    let mut shape = Shape::Image { c, h, w };
    let mut current = input_name.clone();
    let mut visited = HashSet::new();
    while current != output_name {
        let next = match readers.get(current.as_str()).map(Vec::as_slice) {
            Some(&[one]) => one,
            None | Some(&[]) => {
                return Err(bad(format!(
                    "nothing reads '{current}': the graph does not lead from '{input_name}' to '{output_name}'"
                )))
            }
            Some(many) => {
                // PyTorch's LRN, taken apart by torch.onnx.export, reads
                // its input twice.
                let graph_nodes = &graph.node[..];
                let lrn = torch_lrn::recognise(
                    &reader,
                    graph_nodes,
                    &readers,
                    &current,
                    shape,
                    output_name,
                )?;
                if let Some(lrn) = lrn {
                    for &index in &lrn.nodes {
                        if !visited.insert(index) {
                            let label = node_label(&graph.node[index], index);
                            return Err(bad(format!("{label}: the graph has a cycle")));
                        }
                    }
                    reader.push(LayerSpec::Lrn(lrn.config), vec![]);
                    current = lrn.output.to_string();
                    continue;
                }
                let mut distinct = many.to_vec();
                distinct.sort_unstable();
                distinct.dedup();
                let label = node_label(&graph.node[distinct[0]], distinct[0]);
                return Err(bad(if distinct.len() == 1 {
                    format!("{label}: reads '{current}' more than once")
                } else {
                    format!(
                        "'{current}' is read by {} nodes ({label}): only a chain of layers is supported",
                        distinct.len()
                    )
                }));
            }
        };
        let node = &graph.node[next];
        let label = node_label(node, next);
        if !visited.insert(next) {
            return Err(bad(format!("{label}: the graph has a cycle")));
        }
        // Its other inputs must all be constants.
        let data_inputs = node.input.iter().filter(|i| **i == current).count();
        if let Some(dangling) = node
            .input
            .iter()
            .find(|i| !i.is_empty() && **i != current && !reader.constants.contains_key(i.as_str()))
        {
            return Err(bad(format!(
                "{label}: input '{dangling}' is neither the previous layer's output nor an initializer or constant"
            )));
        }
        if data_inputs != 1 {
            return Err(bad(format!("{label}: reads '{current}' more than once")));
        }
        let out = node
            .output
            .first()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad(format!("{label}: has no output")))?;
        // Other outputs (a pooling's indices, a dropout's mask) must be unused.
        if let Some(extra) = node
            .output
            .iter()
            .skip(1)
            .find(|o| !o.is_empty() && (readers.contains_key(o.as_str()) || *o == output_name))
        {
            return Err(bad(format!(
                "{label}: its output '{extra}' is used; only the first output is supported"
            )));
        }
        let last = out == output_name;
        shape = reader.node(node, &label, &current, shape, last)?;
        current = out.clone();
    }
    if let Some(&unused) = steps.iter().find(|i| !visited.contains(*i)) {
        return Err(bad(format!(
            "{} is not on the path from '{input_name}' to '{output_name}'",
            node_label(&graph.node[unused], unused)
        )));
    }
    let classes = match shape {
        Shape::Flat { d } | Shape::Pooled { c: d } => d,
        other => {
            return Err(bad(format!(
                "the output is {}, not one score per class (N, classes)",
                describe(other)
            )))
        }
    };
    if reader.layers.is_empty() {
        return Err(bad("the graph has no layers".into()));
    }
    let spec = format_spec(&reader.layers);
    let layers = parse_spec(&spec)?;
    let mut net = build_from_spec::<f32>(&layers, [c, h, w], classes, Init::He, &mut Rng::new(0))
        .map_err(|e| bad(e.detail()))?;
    for (named, tensors) in net.layers.iter_mut().zip(&reader.tensors) {
        let name = named.name.clone();
        let mut tensors = tensors.iter();
        let mut fill = |target: &mut Tensor<f32>| -> Result<()> {
            match tensors.next() {
                Some((dims, values)) if target.shape() == &dims[..] => {
                    *target = Tensor::from_vec(dims, values.clone())?;
                    Ok(())
                }
                Some((dims, _)) => Err(bad(format!(
                    "layer {name}: a tensor of shape {dims:?} for a parameter of shape {:?}",
                    target.shape()
                ))),
                None => Err(bad(format!("layer {name}: a parameter has no tensor"))),
            }
        };
        for p in named.layer.params() {
            fill(p.value)?;
        }
        for (_, buffer) in named.layer.buffers() {
            fill(buffer)?;
        }
        if tensors.next().is_some() {
            return Err(bad(format!(
                "layer {}: more tensors than parameters",
                named.name
            )));
        }
    }
    // Metadata written by convnet's export: class names, the model's name.
    let props: BTreeMap<&str, &str> = model
        .metadata_props
        .iter()
        .map(|p| (p.key(), p.value()))
        .collect();
    let class_names = props
        .get(keys::CLASS_NAMES)
        .and_then(|names| serde_json::from_str::<Vec<String>>(names).ok())
        .filter(|names| names.len() == classes)
        .unwrap_or_else(|| (0..classes).map(|i| i.to_string()).collect());
    let named = props.get(keys::MODEL).and_then(|model| {
        let options: ModelOptions = props
            .get(keys::MODEL_OPTIONS)
            .and_then(|o| o.parse().ok())
            .unwrap_or_default();
        // A named model, or the spec the network was built from.
        let text = named_model_spec(model, &options, classes).unwrap_or(model.to_string());
        (parse_spec(&text).ok()? == layers).then(|| (model.to_string(), options))
    });
    let (model_name, options) = named.unwrap_or_else(|| (spec.clone(), ModelOptions::default()));
    let file_name = Path::new(source)
        .file_name()
        .map_or(source.to_string(), |n| n.to_string_lossy().into_owned());
    let mut extra = BTreeMap::from([("imported_from".to_string(), file_name)]);
    if let Some(producer) = model.producer_name.as_deref().filter(|p| !p.is_empty()) {
        extra.insert(
            "imported_producer".to_string(),
            format!("{producer} {}", model.producer_version()),
        );
    }
    Ok(Imported {
        net,
        info: CheckpointInfo {
            model: model_name,
            options,
            input_shape: [c, h, w],
            class_names,
            extra,
        },
        spec,
    })
}
