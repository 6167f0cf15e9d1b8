//! Network → ONNX model bytes.

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use super::{keys, BATCH_DIM, INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME};
use crate::checkpoint::{CheckpointInfo, NORMALISATION};
use crate::error::{Error, Result};
use crate::kernels::transpose_into;
use crate::layers::{
    Affine, AvgPooling, BatchNorm, Convolution, Dropout, LocalResponseNorm, MaxPooling,
    PoolingConfig,
};
use crate::networks::Network;
use crate::tensor::Tensor;
use prost::Message;

/// What [`export`] writes into the model's metadata besides the layers.
#[derive(Clone, Debug, Default)]
pub struct ExportInfo {
    /// One name per output; empty: no `convnet.class_names` entry.
    pub class_names: Vec<String>,
    /// The checkpoint's model, so that [`import`](super::import) can give
    /// the network its name back.
    pub model: Option<String>,
    /// The checkpoint's model options (`filters=16,...`), with the model.
    pub model_options: Option<String>,
}

impl From<&CheckpointInfo> for ExportInfo {
    fn from(info: &CheckpointInfo) -> Self {
        ExportInfo {
            class_names: info.class_names.clone(),
            model: Some(info.model.clone()),
            model_options: Some(info.options.to_string()),
        }
    }
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn attr_float(name: &str, value: f64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value as f32),
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v as i64),
                None => dimension::Value::DimParam(BATCH_DIM.into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The graph being written: nodes, initializers and the current tensor.
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    current: String,
    /// The rank of the current tensor (4 for images, 2 after flattening).
    rank: usize,
}

impl Builder {
    /// Appends a node reading the current tensor (then `extra` inputs) and
    /// makes its output current.
    fn node(&mut self, name: &str, op: &str, extra: &[String], attributes: Vec<AttributeProto>) {
        let output = format!("{name}.out");
        let mut input = vec![self.current.clone()];
        input.extend(extra.iter().cloned());
        self.nodes.push(NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input,
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        self.current = output;
    }

    fn initializer(&mut self, name: String, tensor: &Tensor<f32>) -> String {
        self.initializers
            .push(float_tensor(&name, tensor.shape(), tensor.data()));
        name
    }

    fn flatten(&mut self, layer: &str) {
        if self.rank != 2 {
            self.node(
                &format!("{layer}.flatten"),
                "Flatten",
                &[],
                vec![attr_int("axis", 1)],
            );
            self.rank = 2;
        }
    }

    fn pooling(&mut self, name: &str, op: &str, c: &PoolingConfig, extra: Vec<AttributeProto>) {
        let (k, s, p) = (c.size as i64, c.stride as i64, c.pad as i64);
        let mut attributes = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
        ];
        attributes.extend(extra);
        self.node(name, op, &[], attributes);
    }
}

/// Writes `net` as an ONNX model (opset 13): the input `input` (N, C, H, W)
/// with a dynamic batch dimension `N`, the output `logits` (N, classes),
/// the scores before the softmax. A layer that ONNX cannot express exactly
/// (an LRN window of even size) is an error naming it.
pub fn export(net: &Network<f32>, info: &ExportInfo) -> Result<Vec<u8>> {
    let [c, h, w] = net.input_shape;
    let classes = net.num_classes()?;
    let mut b = Builder {
        nodes: Vec::new(),
        initializers: Vec::new(),
        current: INPUT_NAME.into(),
        rank: 4,
    };
    let mut layer_list = Vec::new();
    for named in &net.layers {
        let (name, layer) = (named.name.as_str(), &named.layer);
        let kind = layer.kind();
        layer_list.push(serde_json::json!([name, kind]));
        let unsupported = || {
            Error::Config(format!(
                "layer {name} ({kind}) has no ONNX equivalent in convnet's export"
            ))
        };
        match kind {
            "Convolution" => {
                let conv = layer
                    .downcast_ref::<Convolution<f32>>()
                    .ok_or_else(unsupported)?;
                let shape = conv.weight.shape();
                let (kh, kw) = (shape[2] as i64, shape[3] as i64);
                let (s, p) = (conv.stride as i64, conv.pad as i64);
                let weight = b.initializer(format!("{name}.weight"), &conv.weight);
                let bias = b.initializer(format!("{name}.bias"), &conv.bias);
                let attributes = vec![
                    attr_ints("kernel_shape", &[kh, kw]),
                    attr_ints("strides", &[s, s]),
                    attr_ints("pads", &[p, p, p, p]),
                    attr_ints("dilations", &[1, 1]),
                    attr_int("group", 1),
                ];
                b.node(name, "Conv", &[weight, bias], attributes);
            }
            "MaxPooling" => {
                let pool = layer
                    .downcast_ref::<MaxPooling<f32>>()
                    .ok_or_else(unsupported)?;
                b.pooling(name, "MaxPool", &pool.config, vec![]);
            }
            "AvgPooling" => {
                let pool = layer
                    .downcast_ref::<AvgPooling<f32>>()
                    .ok_or_else(unsupported)?;
                // convnet divides by the whole window, padding included.
                let extra = vec![attr_int("count_include_pad", 1)];
                b.pooling(name, "AveragePool", &pool.config, extra);
            }
            "GlobalAvgPooling" => {
                // ONNX keeps (N, C, 1, 1); convnet's layer gives (N, C).
                b.node(name, "GlobalAveragePool", &[], vec![]);
                b.rank = 4;
                b.flatten(name);
            }
            "Affine" => {
                let affine = layer
                    .downcast_ref::<Affine<f32>>()
                    .ok_or_else(unsupported)?;
                b.flatten(name);
                // convnet keeps (in, out); Gemm with transB=1 takes (out, in).
                let (inputs, outputs) = (affine.weight.shape()[0], affine.weight.shape()[1]);
                let mut transposed = vec![0.0; inputs * outputs];
                transpose_into(affine.weight.data(), inputs, outputs, &mut transposed);
                let weight = format!("{name}.weight");
                b.initializers
                    .push(float_tensor(&weight, &[outputs, inputs], &transposed));
                let bias = b.initializer(format!("{name}.bias"), &affine.bias);
                let attributes = vec![
                    attr_float("alpha", 1.0),
                    attr_float("beta", 1.0),
                    attr_int("transB", 1),
                ];
                b.node(name, "Gemm", &[weight, bias], attributes);
            }
            "Relu" | "Sigmoid" | "Tanh" => b.node(name, kind, &[], vec![]),
            "Dropout" => {
                let dropout = layer
                    .downcast_ref::<Dropout<f32>>()
                    .ok_or_else(unsupported)?;
                // Opset 13: the ratio is an input; without training_mode the
                // node is the identity, as convnet's dropout in evaluation.
                let ratio_name = format!("{name}.ratio");
                b.initializers
                    .push(float_tensor(&ratio_name, &[], &[dropout.ratio() as f32]));
                b.node(name, "Dropout", &[ratio_name], vec![]);
            }
            "LocalResponseNorm" => {
                let lrn = layer
                    .downcast_ref::<LocalResponseNorm<f32>>()
                    .ok_or_else(unsupported)?;
                let c = &lrn.config;
                if c.size % 2 == 0 {
                    return Err(Error::Config(format!(
                        "layer {name} (LocalResponseNorm): ONNX's LRN centres a window of even size {} one channel higher than convnet (and PyTorch) do; only odd sizes export exactly",
                        c.size
                    )));
                }
                // Both divide alpha by the window size.
                let attributes = vec![
                    attr_float("alpha", c.alpha),
                    attr_float("beta", c.beta),
                    attr_float("bias", c.k),
                    attr_int("size", c.size as i64),
                ];
                b.node(name, "LRN", &[], attributes);
            }
            "BatchNorm" => {
                let bn = layer
                    .downcast_ref::<BatchNorm<f32>>()
                    .ok_or_else(unsupported)?;
                let inputs = [
                    b.initializer(format!("{name}.weight"), &bn.weight),
                    b.initializer(format!("{name}.bias"), &bn.bias),
                    b.initializer(format!("{name}.running_mean"), &bn.running_mean),
                    b.initializer(format!("{name}.running_var"), &bn.running_var),
                ];
                let attributes = vec![
                    attr_float("epsilon", bn.eps),
                    attr_float("momentum", bn.momentum),
                ];
                b.node(name, "BatchNormalization", &inputs, attributes);
            }
            _ => return Err(unsupported()),
        }
        if let "GlobalAvgPooling" | "Affine" = kind {
            b.rank = 2;
        }
    }
    if b.rank != 2 {
        return Err(Error::Config(
            "the network does not end with one score per class".into(),
        ));
    }
    // The last node's output is the graph's output.
    match b.nodes.last_mut() {
        Some(last) => last.output[0] = OUTPUT_NAME.into(),
        None => return Err(Error::Config("the network has no layers".into())),
    }
    let mut metadata = vec![
        (
            keys::LAYERS,
            serde_json::Value::Array(layer_list).to_string(),
        ),
        (keys::NORMALISATION, NORMALISATION.to_string()),
        (
            keys::OUTPUT,
            "logits: scores before the softmax, one per class".to_string(),
        ),
    ];
    if !info.class_names.is_empty() {
        metadata.push((
            keys::CLASS_NAMES,
            serde_json::to_string(&info.class_names).expect("strings serialise"),
        ));
    }
    if let Some(model) = &info.model {
        metadata.push((keys::MODEL, model.clone()));
    }
    if let Some(options) = &info.model_options {
        metadata.push((keys::MODEL_OPTIONS, options.clone()));
    }
    let graph = GraphProto {
        name: Some("convnet".into()),
        node: b.nodes,
        initializer: b.initializers,
        input: vec![value_info(INPUT_NAME, &[None, Some(c), Some(h), Some(w)])],
        output: vec![value_info(OUTPUT_NAME, &[None, Some(classes)])],
        doc_string: Some(format!(
            "convnet network: input (N, {c}, {h}, {w}) pixels / 255, output logits (N, {classes})"
        )),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("convnet".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key.into()),
                value: Some(value),
            })
            .collect(),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
