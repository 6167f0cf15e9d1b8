//! Saving and loading trained networks in the safetensors format.
//!
//! A checkpoint holds every parameter as an f32 little-endian tensor named
//! `layer.weight` / `layer.bias`, in PyTorch's layout so that
//! `model.load_state_dict(safetensors.torch.load_file(path))` works on the
//! equivalent PyTorch model:
//!
//! ```text
//! convolution weight  (out, in, kh, kw)   — as stored by the layer
//! affine weight       (out, in)           — the transpose of the book's (in, out)
//! biases              (out)
//! batch norm          weight, bias, running_mean, running_var  (features)
//! ```
//!
//! and string metadata: `model` (the `--model` name), `model_options`, `input_shape`
//! (`C,H,W`), `class_names` (a JSON list), `normalisation`, plus whatever
//! the caller adds (epoch, metrics). Files are written to a temporary file
//! beside the target and renamed over it, so an interrupted save never
//! destroys the previous checkpoint.

use crate::error::{Error, Result};
use crate::kernels::transpose_into;
use crate::networks::{build_model_within, ModelOptions, Network};
use crate::rng::Rng;
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The metadata stored beside the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    pub model: String,
    /// The sizes the model was built with (`filters=16,...`).
    pub options: ModelOptions,
    pub input_shape: [usize; 3],
    pub class_names: Vec<String>,
    /// Any other metadata (epoch, metrics, ...).
    pub extra: BTreeMap<String, String>,
}

/// How pixels are scaled before they enter the network.
pub const NORMALISATION: &str = "x / 255 (pixels in [0, 1])";

/// True for the weights stored transposed relative to PyTorch.
fn is_affine_weight(kind: &str, param: &str) -> bool {
    kind == "Affine" && param == "weight"
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    transpose_into(data, rows, cols, &mut out);
    out
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Saves `net`'s parameters and `info` to `path` (atomically).
pub fn save(net: &mut Network<f32>, info: &CheckpointInfo, path: &Path) -> Result<()> {
    write_atomically(path, &to_bytes(net, info)?)
}

/// The bytes of the checkpoint [`save`] writes.
pub fn to_bytes(net: &mut Network<f32>, info: &CheckpointInfo) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for named in net.layers.iter_mut() {
        let kind = named.layer.kind();
        for p in named.layer.params() {
            let shape = p.value.shape().to_vec();
            let (shape, values) = if is_affine_weight(kind, p.name) {
                let (rows, cols) = (shape[0], shape[1]);
                (vec![cols, rows], transpose(p.value.data(), rows, cols))
            } else {
                (shape, p.value.data().to_vec())
            };
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((format!("{}.{}", named.name, p.name), shape, bytes));
        }
        for (name, buffer) in named.layer.buffers() {
            let bytes = buffer.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((
                format!("{}.{name}", named.name),
                buffer.shape().to_vec(),
                bytes,
            ));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Data(format!("cannot encode checkpoint: {e}")))?;
    let mut metadata: HashMap<String, String> = info.extra.clone().into_iter().collect();
    metadata.insert("format".into(), "convnet".into());
    metadata.insert("model".into(), info.model.clone());
    metadata.insert("model_options".into(), info.options.to_string());
    let [c, h, w] = info.input_shape;
    metadata.insert("input_shape".into(), format!("{c},{h},{w}"));
    metadata.insert(
        "class_names".into(),
        serde_json::to_string(&info.class_names).expect("strings serialise"),
    );
    metadata.insert("normalisation".into(), NORMALISATION.into());
    safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
        .map_err(|e| Error::Data(format!("cannot encode checkpoint: {e}")))
}

/// Reads only the metadata of a checkpoint.
pub fn read_info(bytes: &[u8], source: &str) -> Result<CheckpointInfo> {
    let bad = |what: String| Error::Data(format!("{source}: not a convnet checkpoint: {what}"));
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let map = meta.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        map.get(key)
            .cloned()
            .ok_or_else(|| bad(format!("no '{key}' in its metadata")))
    };
    let model = get("model")?;
    if model.len() > 4096 {
        return Err(bad(format!(
            "its model is {} bytes long; a name or spec is at most 4096",
            model.len()
        )));
    }
    let options: ModelOptions = map
        .get("model_options")
        .map(|o| o.parse())
        .transpose()
        .map_err(|e| bad(format!("model_options: {e}")))?
        .unwrap_or_default();
    let dims: Vec<usize> = get("input_shape")?
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(format!("input_shape: {e}")))?;
    let input_shape: [usize; 3] = dims
        .try_into()
        .map_err(|_| bad("input_shape must be C,H,W".into()))?;
    let class_names: Vec<String> =
        serde_json::from_str(&get("class_names")?).map_err(|e| bad(format!("class_names: {e}")))?;
    let reserved = [
        "format",
        "model",
        "input_shape",
        "class_names",
        "normalisation",
    ];
    let extra = map
        .into_iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .collect();
    Ok(CheckpointInfo {
        model,
        options,
        input_shape,
        class_names,
        extra,
    })
}

/// Loads a checkpoint: rebuilds its model and fills in the saved weights,
/// refusing a model that needs more than the default memory limit
/// ([`default_max_memory`](crate::limits::default_max_memory)).
pub fn load(path: &Path) -> Result<(Network<f32>, CheckpointInfo)> {
    load_within(path, crate::limits::default_max_memory())
}

/// [`load`] with a memory limit of `max_memory` bytes for the model.
pub fn load_within(path: &Path, max_memory: u64) -> Result<(Network<f32>, CheckpointInfo)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_from_bytes(&bytes, &path.display().to_string(), max_memory)
}

/// Loads a checkpoint from its bytes; `source` names it in errors.
///
/// Everything is checked before it is used: the safetensors header (sizes
/// and offsets within the file), the metadata, the model's sizes against
/// `max_memory` (before any weight is allocated), and every tensor's type,
/// shape and values — a NaN or infinite weight, or a negative running
/// variance, is an error naming the tensor.
pub fn load_from_bytes(
    bytes: &[u8],
    source: &str,
    max_memory: u64,
) -> Result<(Network<f32>, CheckpointInfo)> {
    let info = read_info(bytes, source)?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Data(format!("{source}: not a safetensors file: {e}")))?;
    let mut net = build_model_within::<f32>(
        &info.model,
        &info.options,
        info.input_shape,
        info.class_names.len(),
        &mut Rng::new(0),
        max_memory,
    )
    .map_err(|e| Error::Data(format!("{source}: model {}: {}", info.model, e.detail())))?;
    for named in net.layers.iter_mut() {
        let kind = named.layer.kind();
        for p in named.layer.params() {
            let name = format!("{}.{}", named.name, p.name);
            let transposed = is_affine_weight(kind, p.name);
            read_tensor(&st, source, &name, p.value, transposed)?;
        }
        for (buffer_name, buffer) in named.layer.buffers() {
            let name = format!("{}.{buffer_name}", named.name);
            read_tensor(&st, source, &name, buffer, false)?;
            if buffer_name.ends_with("var") {
                if let Some(k) = buffer.data().iter().position(|&v| v < 0.0) {
                    return Err(Error::Data(format!(
                        "{source}: tensor {name} holds a negative variance ({}) at index {k}",
                        buffer.data()[k]
                    )));
                }
            }
        }
    }
    Ok((net, info))
}

/// Fills `target` from the stored tensor `name` (stored transposed when
/// `transposed`), checking its type and shape.
fn read_tensor(
    st: &SafeTensors<'_>,
    source: &str,
    name: &str,
    target: &mut Tensor<f32>,
    transposed: bool,
) -> Result<()> {
    let view = st
        .tensor(name)
        .map_err(|_| Error::Data(format!("{source}: tensor {name} is missing")))?;
    if view.dtype() != Dtype::F32 {
        return Err(Error::Data(format!(
            "{source}: tensor {name} is {:?}, expected F32",
            view.dtype()
        )));
    }
    let ours = target.shape().to_vec();
    let stored: Vec<usize> = if transposed {
        vec![ours[1], ours[0]]
    } else {
        ours.clone()
    };
    if view.shape() != stored {
        return Err(Error::Data(format!(
            "{source}: tensor {name} has shape {:?}, the model needs {stored:?}",
            view.shape()
        )));
    }
    let values = f32_values(source, name, view.data())?;
    let values = if transposed {
        transpose(&values, stored[0], stored[1])
    } else {
        values
    };
    *target = Tensor::from_vec(&ours, values)?;
    Ok(())
}

/// The little-endian f32 values of tensor `name`, refusing NaN and
/// infinities.
fn f32_values(source: &str, name: &str, bytes: &[u8]) -> Result<Vec<f32>> {
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "{source}: tensor {name} holds a non-finite value ({}) at index {k}",
            values[k]
        )));
    }
    Ok(values)
}

/// An optimizer's state: named flat tensors, in order.
pub type OptimizerState = Vec<(String, Vec<f32>)>;

/// Where the optimizer state of the checkpoint `model_path` is kept:
/// `model.safetensors` → `model.optim.safetensors`.
pub fn optimizer_path(model_path: &Path) -> std::path::PathBuf {
    let stem = model_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model_path.with_file_name(format!("{stem}.optim.safetensors"))
}

/// Saves an optimizer's state (velocities, moments: see
/// [`Optimizer::state`](crate::optim::Optimizer::state)) after `epoch`
/// epochs, atomically, as 1-D f32 tensors.
pub fn save_optimizer_state(path: &Path, epoch: usize, state: &[(String, Vec<f32>)]) -> Result<()> {
    write_atomically(path, &optimizer_state_to_bytes(epoch, state)?)
}

/// The bytes of the file [`save_optimizer_state`] writes.
pub fn optimizer_state_to_bytes(epoch: usize, state: &[(String, Vec<f32>)]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = state
        .iter()
        .map(|(_, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = state
        .iter()
        .zip(&bytes)
        .map(|((name, values), b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, vec![values.len()], b)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Data(format!("cannot encode optimizer state: {e}")))?;
    // The order of the entries matters to `load_state`: keep it in metadata.
    let order: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    let metadata = HashMap::from([
        ("epoch".to_string(), epoch.to_string()),
        (
            "order".to_string(),
            serde_json::to_string(&order).expect("strings serialise"),
        ),
    ]);
    safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
        .map_err(|e| Error::Data(format!("cannot encode optimizer state: {e}")))
}

/// Loads what [`save_optimizer_state`] wrote: the epoch and the state.
pub fn load_optimizer_state(path: &Path) -> Result<(usize, OptimizerState)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_optimizer_state(&bytes, &path.display().to_string())
}

/// [`load_optimizer_state`] from the file's bytes; `source` names it in
/// errors. Every tensor must be F32 and finite; whether the state fits a
/// network is for [`check_state_fits`](crate::optim::check_state_fits) and
/// the optimizer's [`load_state`](crate::optim::Optimizer::load_state).
pub fn parse_optimizer_state(bytes: &[u8], source: &str) -> Result<(usize, OptimizerState)> {
    let bad = |what: String| Error::Data(format!("{source}: not an optimizer state: {what}"));
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let map = meta.metadata().clone().unwrap_or_default();
    let epoch = map
        .get("epoch")
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| bad("no epoch".into()))?;
    let order: Vec<String> = map
        .get("order")
        .and_then(|o| serde_json::from_str(o).ok())
        .ok_or_else(|| bad("no order".into()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    if order.len() != st.len() {
        return Err(bad(format!(
            "its order lists {} tensors, the file holds {}",
            order.len(),
            st.len()
        )));
    }
    let mut state = Vec::with_capacity(order.len());
    for name in order {
        let view = st
            .tensor(&name)
            .map_err(|_| bad(format!("tensor {name} is missing")))?;
        if view.dtype() != Dtype::F32 {
            return Err(Error::Data(format!(
                "{source}: tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let values = f32_values(source, &name, view.data())?;
        state.push((name, values));
    }
    Ok((epoch, state))
}
