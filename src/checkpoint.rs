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
//! (`C,H,W`), `class_names` (a JSON list), `normalisation`, `spec` (the
//! network as a [spec](crate::networks::spec), when it can be written as
//! one: see [`Network::to_spec`]), `layers` (the layers' names, a JSON
//! list), plus whatever the caller adds (epoch, metrics).
//!
//! Two ways back:
//!
//! - [`load`] rebuilds the network from the checkpoint alone (from its
//!   `spec`, else from `model` and `model_options`), layer names included:
//!   any network of the library's layers, whether built by name, from a spec
//!   or by hand;
//! - [`load_into`] fills a network that you have built (PyTorch's
//!   `load_state_dict`): the way back for a network with layers of your own.
//!   Every tensor must be there with the network's shape, and no other; a
//!   mismatch is an error that names the tensor, and leaves the network as
//!   it was.
//!
//! ```
//! use convnet::checkpoint::{self, CheckpointInfo};
//! use convnet::layers::{Affine, AffineConfig, Relu};
//! use convnet::networks::Network;
//! use convnet::{Rng, Tensor};
//! let mut rng = Rng::new(7);
//! let mut net = Network::<f32>::new([1, 2, 2]);
//! net.push("hidden", Affine::new(&AffineConfig { inputs: 4, outputs: 5, ..Default::default() }, &mut rng)).unwrap();
//! net.push("act", Relu::new()).unwrap();
//! net.push("out", Affine::new(&AffineConfig { inputs: 5, outputs: 3, ..Default::default() }, &mut rng)).unwrap();
//!
//! let path = std::env::temp_dir().join(format!("convnet-doc-{}.safetensors", std::process::id()));
//! let info = CheckpointInfo::for_network(&net, vec!["a".into(), "b".into(), "c".into()]);
//! checkpoint::save(&mut net, &info, &path).unwrap();
//!
//! let x = Tensor::from_vec(&[1, 1, 2, 2], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
//! let (mut loaded, info) = checkpoint::load(&path).unwrap();
//! assert_eq!(loaded.param_names(), ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]);
//! assert_eq!(loaded.predict(&x, false).unwrap(), net.predict(&x, false).unwrap());
//! assert_eq!(info.class_names, ["a", "b", "c"]);
//!
//! // Into a network of the same layers, built anew:
//! let mut same = Network::<f32>::new([1, 2, 2]);
//! same.push("hidden", Affine::new(&AffineConfig { inputs: 4, outputs: 5, ..Default::default() }, &mut rng)).unwrap();
//! same.push("act", Relu::new()).unwrap();
//! same.push("out", Affine::new(&AffineConfig { inputs: 5, outputs: 3, ..Default::default() }, &mut rng)).unwrap();
//! checkpoint::load_into(&mut same, &path).unwrap();
//! assert_eq!(same.predict(&x, false).unwrap(), net.predict(&x, false).unwrap());
//! # std::fs::remove_file(&path).unwrap();
//! ```
//!
//! # Saving without losing work
//!
//! Every file is written to a temporary file beside the target, flushed to
//! the disk (`sync_all`), renamed over the target, and the folder is synced
//! too ([`write_atomically`]): after a crash or a power loss the target is
//! either the old file or the new one, never a partial one. A failed write
//! (a full disk) removes its temporary file.
//!
//! A training run saves two files per epoch: the weights and the
//! optimizer's state. [`save_training_state`] makes the pair atomic as a
//! whole: the optimizer state goes to a file named after its epoch
//! (`model.optim-3.safetensors`) *before* the weights are replaced, and the
//! previous epoch's state file is removed only after, so whatever instant a
//! run is killed at, the weights on disk have their own epoch's optimizer
//! state beside them ([`load_training_state`] finds it).
//!
//! The same network saved twice gives the same bytes: the header's keys are
//! written in sorted order, and nothing in it depends on the clock.

use crate::error::{Error, Result};
use crate::init::Init;
use crate::kernels::transpose_into;
use crate::networks::{
    build_from_spec_within, build_model_within, parse_spec, ModelOptions, Network,
};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metadata stored beside the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    /// The model's name (`simple`, `lenet5`, ...) or spec, as [`build_model`](crate::networks::build_model) takes it;
    /// `"custom"` for a network with a layer of its own.
    pub model: String,
    /// The sizes the model was built with (`filters=16,...`).
    pub options: ModelOptions,
    /// One input image: (C, H, W).
    pub input_shape: [usize; 3],
    /// `class_names[k]` names label `k`.
    pub class_names: Vec<String>,
    /// Any other metadata (epoch, metrics, ...).
    pub extra: BTreeMap<String, String>,
}

impl CheckpointInfo {
    /// The metadata of a network built by hand: `model` is its spec
    /// ([`Network::to_spec`]), or `"custom"` for a network with a layer of
    /// your own (which [`load_into`] loads back, but not [`load`]); default
    /// options, the network's input shape, `class_names` (empty: [`save`]
    /// names the classes `0`, `1`, ...), no extra metadata.
    pub fn for_network<T: Float>(net: &Network<T>, class_names: Vec<String>) -> Self {
        CheckpointInfo {
            model: net.to_spec().unwrap_or_else(|_| "custom".into()),
            options: ModelOptions::default(),
            input_shape: net.input_shape,
            class_names,
            extra: BTreeMap::new(),
        }
    }
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

/// Writes `bytes` to `path` through a temporary file beside it: the file is
/// flushed to the disk, renamed over `path`, and the folder synced, so that
/// `path` holds either its old content or all of `bytes`, whatever happens.
/// On failure the temporary file is removed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    test_abort_point("after-temporary-file");
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_folder(path);
    Ok(())
}

/// Flushes the folder holding `path` to the disk, so that a rename into it
/// survives a power loss. Best effort: not every platform can open a folder.
fn sync_folder(path: &Path) {
    if let Ok(dir) = std::fs::File::open(folder_of(path)) {
        let _ = dir.sync_all();
    }
}

/// The folder a file path lies in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// For the tests of a kill during a save: when the environment variable
/// `CONVNET_TEST_ABORT_AT` names this point (`after-temporary-file`,
/// `after-optimizer-state`, `after-weights`), the process aborts there, as a
/// SIGKILL would stop it. Points are counted: `after-temporary-file:3`
/// aborts at the third time the point is reached.
#[doc(hidden)]
pub fn test_abort_point(point: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let Ok(wanted) = std::env::var("CONVNET_TEST_ABORT_AT") else {
        return;
    };
    let (name, nth) = match wanted.split_once(':') {
        Some((name, nth)) => (name.to_string(), nth.parse().unwrap_or(1)),
        None => (wanted, 1),
    };
    if name == point && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        std::process::abort();
    }
}

/// Rewrites a safetensors file's JSON header with its keys in sorted order
/// (the `safetensors` crate writes the metadata from a `HashMap`, in an order
/// that changes from run to run), so that the same content gives the same
/// bytes. The tensors' data and offsets are unchanged.
fn with_sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |what: String| Error::Data(format!("cannot encode checkpoint: {what}"));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + header_len]).map_err(|e| bad(e.to_string()))?;
    // `serde_json::Value`'s maps are sorted by key (no `preserve_order`);
    // sort explicitly all the same, so that a feature turned on elsewhere
    // in the dependency graph cannot change the bytes.
    let mut sorted: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (key, value) in header.as_object().cloned().unwrap_or_default() {
        let value = match value {
            serde_json::Value::Object(map) if key == "__metadata__" => {
                serde_json::to_value(map.into_iter().collect::<BTreeMap<_, _>>())
                    .map_err(|e| bad(e.to_string()))?
            }
            other => other,
        };
        sorted.insert(key, value);
    }
    let mut text = serde_json::to_vec(&sorted).map_err(|e| bad(e.to_string()))?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - header_len);
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    out.extend(&bytes[8 + header_len..]);
    Ok(out)
}

/// Saves `net`'s parameters and `info` to `path` (atomically), with the
/// network's spec and layer names so that [`load`] can rebuild it (see the
/// [module documentation](self)). An error if `info` gives another input
/// shape than the network's, or class names that are not one per class;
/// no class names are saved as `0`, `1`, ...
pub fn save(net: &mut Network<f32>, info: &CheckpointInfo, path: &Path) -> Result<()> {
    write_atomically(path, &to_bytes(net, info)?)
}

/// The bytes of the checkpoint [`save`] writes.
pub fn to_bytes(net: &mut Network<f32>, info: &CheckpointInfo) -> Result<Vec<u8>> {
    if info.input_shape != net.input_shape {
        return Err(Error::Config(format!(
            "cannot save the checkpoint: its input shape {:?} is not the network's {:?}",
            info.input_shape, net.input_shape
        )));
    }
    let classes = net.num_classes()?;
    let class_names = if info.class_names.is_empty() {
        (0..classes).map(|c| c.to_string()).collect()
    } else if info.class_names.len() == classes {
        info.class_names.clone()
    } else {
        return Err(Error::Config(format!(
            "cannot save the checkpoint: {} class names for a network with {classes} classes",
            info.class_names.len()
        )));
    };
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
        serde_json::to_string(&class_names).expect("strings serialise"),
    );
    metadata.insert("normalisation".into(), NORMALISATION.into());
    // A network with a layer of your own has no spec: `load_into` loads it.
    metadata.remove("spec");
    if let Ok(spec) = net.to_spec() {
        metadata.insert("spec".into(), spec);
    }
    let names: Vec<&str> = net.layers.iter().map(|l| l.name.as_str()).collect();
    metadata.insert(
        "layers".into(),
        serde_json::to_string(&names).expect("strings serialise"),
    );
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
        .map_err(|e| Error::Data(format!("cannot encode checkpoint: {e}")))?;
    with_sorted_header(bytes)
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
        "spec",
        "layers",
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

/// Reads the metadata of the checkpoint at `path` (without its weights).
pub fn load_info(path: &Path) -> Result<CheckpointInfo> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_info(&bytes, &path.display().to_string())
}

/// Loads a checkpoint: rebuilds its network — from the `spec` that [`save`]
/// records, or for older checkpoints from `model` and `model_options` — with
/// the saved layer names, and fills in the saved weights. A network with a
/// layer of your own is loaded with [`load_into`] instead.
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
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Data(format!("{source}: not a safetensors file: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let classes = info.class_names.len();
    let mut net = match meta.get("spec") {
        Some(spec) => {
            let layers = parse_spec(spec)
                .map_err(|e| Error::Data(format!("{source}: its spec: {}", e.detail())))?;
            // The initialisation does not matter: every weight is overwritten.
            build_from_spec_within::<f32>(
                &layers,
                info.input_shape,
                classes,
                Init::He,
                &mut Rng::new(0),
                max_memory,
            )
            .map_err(|e| Error::Data(format!("{source}: its spec: {}", e.detail())))?
        }
        None => build_model_within::<f32>(
            &info.model,
            &info.options,
            info.input_shape,
            classes,
            &mut Rng::new(0),
            max_memory,
        )
        .map_err(|e| {
            Error::Data(format!(
                "{source}: cannot rebuild its model '{}' ({}); a network with layers of your own is loaded with checkpoint::load_into",
                info.model,
                e.detail()
            ))
        })?,
    };
    if let Some(names) = meta.get("layers") {
        let names: Vec<String> = serde_json::from_str(names)
            .map_err(|e| Error::Data(format!("{source}: layers: {e}")))?;
        if names.len() != net.layers.len() {
            return Err(Error::Data(format!(
                "{source}: {} layer names for a network of {} layers",
                names.len(),
                net.layers.len()
            )));
        }
        for (named, name) in net.layers.iter_mut().zip(names) {
            named.name = name;
        }
    }
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Data(format!("{source}: not a safetensors file: {e}")))?;
    fill(&mut net, &st, source)?;
    Ok((net, info))
}

/// Loads the weights saved at `path` into `net`, a network you have built
/// with the same layers (PyTorch's `load_state_dict`): each parameter and
/// buffer `layer.weight`, `layer.bias`, ... must be in the file with the
/// network's shape, and the file must hold no other tensor. Any mismatch is
/// an error that names the tensor, and leaves `net` unchanged. The file's
/// metadata is not needed (see [`load_info`]).
pub fn load_into(net: &mut Network<f32>, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let source = path.display().to_string();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Data(format!("{source}: not a safetensors file: {e}")))?;
    fill(net, &st, &source)
}

/// Fills every parameter and buffer of `net` from `st`, after checking all
/// of them: on an error, `net` is unchanged.
fn fill(net: &mut Network<f32>, st: &SafeTensors<'_>, source: &str) -> Result<()> {
    let mut values = Vec::new();
    let mut expected = Vec::new();
    for named in net.layers.iter_mut() {
        let kind = named.layer.kind();
        for p in named.layer.params() {
            let name = format!("{}.{}", named.name, p.name);
            let transposed = is_affine_weight(kind, p.name);
            values.push(read_tensor(st, source, &name, p.value.shape(), transposed)?);
            expected.push(name);
        }
        for (buffer_name, buffer) in named.layer.buffers() {
            let name = format!("{}.{buffer_name}", named.name);
            let value = read_tensor(st, source, &name, buffer.shape(), false)?;
            if buffer_name.ends_with("var") {
                if let Some(k) = value.data().iter().position(|&v| v < 0.0) {
                    return Err(Error::Data(format!(
                        "{source}: tensor {name} holds a negative variance ({}) at index {k}",
                        value.data()[k]
                    )));
                }
            }
            values.push(value);
            expected.push(name);
        }
    }
    let mut unexpected: Vec<String> = st
        .names()
        .into_iter()
        .filter(|name| !expected.iter().any(|e| e == name))
        .map(str::to_string)
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(Error::Data(format!(
            "{source}: tensor {} is not in the network (it has {})",
            unexpected.join(", "),
            expected.join(", ")
        )));
    }
    let mut values = values.into_iter();
    for named in net.layers.iter_mut() {
        for p in named.layer.params() {
            *p.value = values.next().expect("one value per parameter");
        }
        for (_, buffer) in named.layer.buffers() {
            *buffer = values.next().expect("one value per buffer");
        }
    }
    Ok(())
}

/// Reads the stored tensor `name` (stored transposed when `transposed`) as
/// a tensor of shape `ours`, checking its type and shape.
fn read_tensor(
    st: &SafeTensors<'_>,
    source: &str,
    name: &str,
    ours: &[usize],
    transposed: bool,
) -> Result<Tensor<f32>> {
    let view = st
        .tensor(name)
        .map_err(|_| Error::Data(format!("{source}: tensor {name} is missing")))?;
    if view.dtype() != Dtype::F32 {
        return Err(Error::Data(format!(
            "{source}: tensor {name} is {:?}, expected F32",
            view.dtype()
        )));
    }
    let stored: Vec<usize> = if transposed {
        vec![ours[1], ours[0]]
    } else {
        ours.to_vec()
    };
    if view.shape() != stored {
        return Err(Error::Data(format!(
            "{source}: tensor {name} has shape {:?}, the network needs {stored:?}",
            view.shape()
        )));
    }
    let values = f32_values(source, name, view.data())?;
    let values = if transposed {
        transpose(&values, stored[0], stored[1])
    } else {
        values
    };
    Tensor::from_vec(ours, values)
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

/// Where the optimizer state of the checkpoint `model_path` after `epoch`
/// epochs is kept: `model.safetensors` → `model.optim-3.safetensors`. The
/// epoch in the name lets the state of the new epoch be written before the
/// weights are replaced (see [`save_training_state`]).
pub fn optimizer_path(model_path: &Path, epoch: usize) -> PathBuf {
    optimizer_path_at(model_path, epoch, 0)
}

/// [`optimizer_path`] of a run stopped after `batches_done` mini-batches of
/// the epoch after `epoch`: `model.optim-3-250.safetensors` (the plain name
/// when `batches_done` is 0).
pub fn optimizer_path_at(model_path: &Path, epoch: usize, batches_done: usize) -> PathBuf {
    let stem = file_stem(model_path);
    let name = match batches_done {
        0 => format!("{stem}.optim-{epoch}.safetensors"),
        b => format!("{stem}.optim-{epoch}-{b}.safetensors"),
    };
    model_path.with_file_name(name)
}

/// Where `convnet train --ema` keeps the averaged model of the run saved
/// to `model_path`: `model.safetensors` → `model.ema.safetensors` (a
/// checkpoint like any other; see [`Ema`](crate::train::Ema)).
pub fn averaged_path(model_path: &Path) -> PathBuf {
    model_path.with_file_name(format!("{}.ema.safetensors", file_stem(model_path)))
}

/// The single optimizer file of checkpoints written before the epoch was
/// part of its name: `model.optim.safetensors`.
fn unversioned_optimizer_path(model_path: &Path) -> PathBuf {
    model_path.with_file_name(format!("{}.optim.safetensors", file_stem(model_path)))
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Saves a training run after `epoch` epochs and `batches_done` mini-batches
/// of the next one (0 at the end of an epoch) — the weights to `path` (with
/// the position in `info`'s metadata: `epoch`, `batches_done`) and the
/// optimizer's state beside them — so that the pair is atomic as a whole: a
/// kill or a crash at any instant leaves either the previous pair or this
/// one, each complete.
///
/// 1. the optimizer state goes to `optimizer_path_at(path, epoch,
///    batches_done)` (atomically);
/// 2. the weights replace `path` (atomically): from here on, `path` is the
///    new position's;
/// 3. the other positions' optimizer files are removed.
pub fn save_training_state(
    net: &mut Network<f32>,
    info: &CheckpointInfo,
    optimizer_state: &[(String, Vec<f32>)],
    epoch: usize,
    batches_done: usize,
    path: &Path,
) -> Result<()> {
    let optim_path = optimizer_path_at(path, epoch, batches_done);
    save_optimizer_state(&optim_path, epoch, batches_done, optimizer_state)?;
    test_abort_point("after-optimizer-state");
    let mut info = info.clone();
    info.extra.insert("epoch".to_string(), epoch.to_string());
    if batches_done == 0 {
        info.extra.remove("batches_done");
    } else {
        info.extra
            .insert("batches_done".to_string(), batches_done.to_string());
    }
    save(net, &info, path)?;
    test_abort_point("after-weights");
    remove_other_optimizer_files(path, &optim_path);
    Ok(())
}

/// Removes the optimizer files of `path` other than `keep` (best effort: a
/// file left behind is only disk space).
fn remove_other_optimizer_files(path: &Path, keep: &Path) {
    for file in optimizer_files(path) {
        if file != keep {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The optimizer-state files beside the checkpoint `model_path`, of any
/// position: `model.optim-3.safetensors`, `model.optim-3-250.safetensors`,
/// and the unversioned `model.optim.safetensors` of older checkpoints.
pub fn optimizer_files(model_path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.optim-", file_stem(model_path));
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder_of(model_path))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let position = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".safetensors"));
            position
                .is_some_and(|p| !p.is_empty() && p.split('-').all(|n| n.parse::<usize>().is_ok()))
        })
        .map(|entry| model_path.with_file_name(entry.file_name()))
        .collect();
    let unversioned = unversioned_optimizer_path(model_path);
    if unversioned.exists() {
        files.push(unversioned);
    }
    files.sort();
    files
}

/// A training run read back by [`load_training_state`].
pub struct TrainingState {
    /// The network with its saved weights.
    pub net: Network<f32>,
    /// The checkpoint's metadata.
    pub info: CheckpointInfo,
    /// The epochs done.
    pub epoch: usize,
    /// Mini-batches done of the next epoch (0 unless the run was stopped
    /// mid-epoch).
    pub batches_done: usize,
    /// The optimizer's state after `epoch` epochs.
    pub optimizer_state: OptimizerState,
}

/// Loads what [`save_training_state`] wrote (the network within
/// `max_memory` bytes, see [`load_within`]): the weights at `path`, their
/// epoch, and the optimizer state of that same epoch (from
/// `optimizer_path(path, epoch)`, or the unversioned file of an older
/// checkpoint if it is of that epoch).
pub fn load_training_state(path: &Path, max_memory: u64) -> Result<TrainingState> {
    let (net, info) = load_within(path, max_memory)?;
    let number = |key: &str| -> Result<Option<usize>> {
        info.extra
            .get(key)
            .map(|v| {
                v.parse().map_err(|_| {
                    Error::Data(format!(
                        "{}: {key} '{v}' is not a whole number",
                        path.display()
                    ))
                })
            })
            .transpose()
    };
    let epoch = number("epoch")?.ok_or_else(|| {
        Error::Data(format!(
            "{}: no epoch count in its metadata",
            path.display()
        ))
    })?;
    let batches_done = number("batches_done")?.unwrap_or(0);
    let versioned = optimizer_path_at(path, epoch, batches_done);
    let optim_path = if versioned.exists() || batches_done > 0 {
        versioned.clone()
    } else {
        unversioned_optimizer_path(path)
    };
    if !optim_path.exists() {
        return Err(Error::Data(format!(
            "{}: its optimizer state ({}) is missing",
            path.display(),
            versioned.display()
        )));
    }
    let saved = load_optimizer_state(&optim_path)?;
    let (optim_epoch, optim_batches) = (saved.epoch, saved.batches_done);
    if (optim_epoch, optim_batches) != (epoch, batches_done) {
        return Err(Error::Data(format!(
            "{} is from epoch {optim_epoch} (+{optim_batches} batches) but {} from epoch {epoch} (+{batches_done} batches)",
            optim_path.display(),
            path.display()
        )));
    }
    Ok(TrainingState {
        net,
        info,
        epoch,
        batches_done,
        optimizer_state: saved.state,
    })
}

/// Saves an optimizer's state (velocities, moments: see
/// [`Optimizer::state`](crate::optim::Optimizer::state)) after `epoch`
/// epochs and `batches_done` mini-batches of the next, atomically, as 1-D
/// f32 tensors.
pub fn save_optimizer_state(
    path: &Path,
    epoch: usize,
    batches_done: usize,
    state: &[(String, Vec<f32>)],
) -> Result<()> {
    write_atomically(path, &optimizer_state_to_bytes(epoch, batches_done, state)?)
}

/// The bytes of the file [`save_optimizer_state`] writes.
pub fn optimizer_state_to_bytes(
    epoch: usize,
    batches_done: usize,
    state: &[(String, Vec<f32>)],
) -> Result<Vec<u8>> {
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
        ("batches_done".to_string(), batches_done.to_string()),
        (
            "order".to_string(),
            serde_json::to_string(&order).expect("strings serialise"),
        ),
    ]);
    let encoded =
        safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
            .map_err(|e| Error::Data(format!("cannot encode optimizer state: {e}")))?;
    with_sorted_header(encoded)
}

/// What [`load_optimizer_state`] reads.
pub struct SavedOptimizerState {
    /// The epochs done when it was saved.
    pub epoch: usize,
    /// The mini-batches done of the next epoch (0 at the end of an epoch).
    pub batches_done: usize,
    /// The state, in the optimizer's order.
    pub state: OptimizerState,
}

/// Loads what [`save_optimizer_state`] wrote: the position and the state.
pub fn load_optimizer_state(path: &Path) -> Result<SavedOptimizerState> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_optimizer_state(&bytes, &path.display().to_string())
}

/// [`load_optimizer_state`] from the file's bytes; `source` names it in
/// errors. Every tensor must be F32 and finite; whether the state fits a
/// network is for [`check_state_fits`](crate::optim::check_state_fits) and
/// the optimizer's [`load_state`](crate::optim::Optimizer::load_state).
pub fn parse_optimizer_state(bytes: &[u8], source: &str) -> Result<SavedOptimizerState> {
    let bad = |what: String| Error::Data(format!("{source}: not an optimizer state: {what}"));
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let map = meta.metadata().clone().unwrap_or_default();
    let epoch = map
        .get("epoch")
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| bad("no epoch".into()))?;
    let batches_done = match map.get("batches_done") {
        Some(b) => b.parse().map_err(|_| bad(format!("batches_done '{b}'")))?,
        None => 0,
    };
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
    Ok(SavedOptimizerState {
        epoch,
        batches_done,
        state,
    })
}
