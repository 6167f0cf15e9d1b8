//! ONNX export and import (feature `onnx`, on with the default `cli`).
//!
//! [`export`] writes a network as a standard ONNX model (opset 13, IR 7):
//!
//! ```text
//! input   "input"   float32 (N, C, H, W), N a dynamic dimension named "N",
//!                   pixels scaled as for convnet (x / 255)
//! output  "logits"  float32 (N, classes): the scores before the softmax;
//!                   softmax(logits) gives convnet's probabilities
//! ```
//!
//! one node per layer (plus a `Flatten` before the first affine layer and
//! after a global average pooling), named after the layer, the parameters as
//! initializers named `layer.weight`, `layer.bias`, ... as in checkpoints, and
//! the layer names and class names in the model's `metadata_props`.
//!
//! [`import`] reads a chain of the same operators back — from convnet or
//! from another exporter such as `torch.onnx.export` (initializers or
//! `Constant` nodes, `Flatten` or a constant `Reshape`, `Gemm` or
//! `MatMul` + `Add`, `Identity`, `ReduceMean` over H and W, PyTorch's LRN
//! taken apart into nine nodes) — into a network described by a
//! [spec](crate::networks::spec), so that [`checkpoint::load`](crate::checkpoint::load)
//! can build it again. Anything else is one error that names the node and
//! its operator. [`import_file`] also reads weights kept in an external
//! data file beside the model (`torch.onnx.export`'s default). The file is
//! validated as it is read: every tensor's
//! declared size is checked (with checked arithmetic) against the data
//! actually present before anything is allocated, and the graph must be one
//! path from its input to its output. The mapping is in `docs/onnx.md`.
//!
//! ```
//! use convnet::networks::{build_model, ModelOptions};
//! use convnet::onnx::{export, import, ExportInfo};
//! use convnet::{Rng, Tensor};
//! let mut net = build_model::<f32>("lenet5", &ModelOptions::default(), [1, 28, 28], 10, &mut Rng::new(1)).unwrap();
//! let bytes = export(&net, &ExportInfo::default()).unwrap();
//! let mut imported = import(&bytes, "lenet5.onnx").unwrap();
//! let x = Tensor::from_vec(&[2, 1, 28, 28], (0..1568).map(|i| (i % 7) as f32 / 7.0).collect()).unwrap();
//! assert_eq!(imported.net.predict(&x, false).unwrap().data(), net.predict(&x, false).unwrap().data());
//! assert!(import(&bytes[..bytes.len() / 2], "cut.onnx").is_err());
//! ```

mod export;
mod import;
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod proto;

pub use export::{export, ExportInfo};
pub use import::{import, import_file, Imported};

/// The operator set written by [`export`].
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
/// The graph's input name.
pub const INPUT_NAME: &str = "input";
/// The graph's output name: the scores before the softmax.
pub const OUTPUT_NAME: &str = "logits";
/// The dynamic batch dimension's name.
pub const BATCH_DIM: &str = "N";

/// `metadata_props` keys written by [`export`] and read by [`import`].
pub mod keys {
    /// A JSON list of `[name, kind]`, one per convnet layer.
    pub const LAYERS: &str = "convnet.layers";
    /// A JSON list of the class names, in output order.
    pub const CLASS_NAMES: &str = "convnet.class_names";
    /// The checkpoint's `model` (`simple`, `lenet5`, a spec, ...).
    pub const MODEL: &str = "convnet.model";
    /// The checkpoint's `model_options`.
    pub const MODEL_OPTIONS: &str = "convnet.model_options";
    /// How pixels are scaled.
    pub const NORMALISATION: &str = "convnet.normalisation";
    /// What the output is.
    pub const OUTPUT: &str = "convnet.output";
}
