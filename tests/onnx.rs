//! ONNX export and import: round trips give the same network and the same
//! outputs to the bit; malformed or unsupported files give one error line.
//!
//! With `CONVNET_ONNX_OUT=folder`, `conformance_fixtures` also writes each
//! exported model with test digits and convnet's probabilities there for
//! `tests/onnx/check_onnxruntime.py`; with `CONVNET_ONNX_FOREIGN=folder`,
//! `foreign_models_match_onnxruntime` imports the models that script wrote
//! (see `.ci/onnx-test.sh`).

mod common;

use common::{convnet_fails, convnet_ok, TempDir};
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::data::load_embedded_mnist10k;
use convnet::layers::softmax_with_loss::softmax_row;
use convnet::layers::BatchNorm;
use convnet::networks::{build_model, ModelOptions, Network};
use convnet::onnx::proto::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};
use convnet::onnx::{export, import, import_file, ExportInfo};
use convnet::{Rng, Tensor};
use proptest::prelude::*;
use prost::Message;
use std::path::Path;

/// Every op convnet exports: conv with stride and padding, max pooling with
/// padding, average pooling (padding counted), LRN, batch norm on images
/// and on features (with PyTorch's ε), GAP, dropout, every activation.
const ALL_OPS: &str = "conv(8,3,stride=2,pad=1)-bn-relu-maxpool(3,stride=2,pad=1)-lrn(3,1e-3,0.75,2)-conv(8,3,pad=1)-sigmoid-avgpool(2,stride=2,pad=1)-conv(16,3,pad=1)-tanh-gap-dropout(0.25)-affine(32)-bn(eps=1e-5)-relu-affine(10)";

const MODELS: [&str; 5] = ["simple", "lenet5", "deep", "alexnet-small", ALL_OPS];

fn classes() -> Vec<String> {
    (0..10).map(|i| format!("digit {i}")).collect()
}

/// A network with random weights, and batch norms with random statistics
/// (a fresh one has mean 0 and variance 1, which would hide mix-ups).
fn network(model: &str, seed: u64) -> Network<f32> {
    let mut rng = Rng::new(seed);
    let mut net =
        build_model::<f32>(model, &ModelOptions::default(), [1, 28, 28], 10, &mut rng).unwrap();
    for named in net.layers.iter_mut() {
        if named.layer.is::<BatchNorm<f32>>() {
            for p in named.layer.params() {
                for v in p.value.data_mut() {
                    *v = (0.5 + rng.uniform()) as f32;
                }
            }
            for (_, b) in named.layer.buffers() {
                for v in b.data_mut() {
                    *v = (0.1 + 1.9 * rng.uniform()) as f32;
                }
            }
        }
    }
    net
}

fn info(model: &str) -> CheckpointInfo {
    CheckpointInfo {
        model: model.to_string(),
        options: ModelOptions::default(),
        input_shape: [1, 28, 28],
        class_names: classes(),
        extra: Default::default(),
    }
}

/// `count` test digits as a (count, 1, 28, 28) batch.
fn digits(count: usize) -> Tensor<f32> {
    let set = load_embedded_mnist10k().unwrap();
    let data = (0..count)
        .flat_map(|i| set.test.image(i).to_vec())
        .collect();
    Tensor::from_vec(&[count, 1, 28, 28], data).unwrap()
}

fn exported(model: &str) -> (Network<f32>, Vec<u8>) {
    let net = network(model, 7);
    let bytes = export(&net, &ExportInfo::from(&info(model))).unwrap();
    (net, bytes)
}

fn layer_summary(net: &mut Network<f32>) -> Vec<(String, &'static str)> {
    net.layers
        .iter()
        .map(|l| (l.name.clone(), l.layer.kind()))
        .collect()
}

fn params(net: &mut Network<f32>) -> Vec<(String, Vec<f32>)> {
    let names = net.param_names();
    let mut all: Vec<(String, Vec<f32>)> = names
        .into_iter()
        .zip(net.params())
        .map(|(n, p)| (n, p.value.data().to_vec()))
        .collect();
    for named in net.layers.iter_mut() {
        let layer = named.name.clone();
        for (name, b) in named.layer.buffers() {
            all.push((format!("{layer}.{name}"), b.data().to_vec()));
        }
    }
    all
}

#[test]
fn export_then_import_gives_the_same_network_and_bit_identical_outputs() {
    let x = digits(5);
    for model in MODELS {
        let (mut net, bytes) = exported(model);
        let mut imported = import(&bytes, "model.onnx").unwrap();
        // Named models get their names back; a spec is kept as a spec.
        assert_eq!(imported.info.model, model);
        if model == ALL_OPS {
            assert_eq!(
                convnet::networks::spec::parse_spec(&imported.spec).unwrap(),
                convnet::networks::spec::parse_spec(ALL_OPS).unwrap()
            );
        }
        assert_eq!(imported.info.class_names, classes());
        assert_eq!(imported.info.input_shape, [1, 28, 28]);
        assert_eq!(
            layer_summary(&mut imported.net),
            layer_summary(&mut net),
            "{model}"
        );
        assert_eq!(params(&mut imported.net), params(&mut net), "{model}");
        let ours = net.predict(&x, false).unwrap().data().to_vec();
        let theirs = imported.net.predict(&x, false).unwrap().data().to_vec();
        assert_eq!(ours, theirs, "{model}");
    }
}

#[test]
fn an_imported_network_is_a_checkpoint_that_loads_again() {
    let dir = TempDir::new("onnx-checkpoint");
    let path = dir.join("imported.safetensors");
    let x = digits(3);
    for model in [ALL_OPS, "lenet5"] {
        let (mut net, bytes) = exported(model);
        let mut imported = import(&bytes, "model.onnx").unwrap();
        checkpoint::save_training_state(&mut imported.net, &imported.info, &[], 0, 0, &path)
            .unwrap();
        let (mut loaded, info) = checkpoint::load(&path).unwrap();
        assert_eq!(info.model, imported.info.model);
        assert_eq!(
            loaded.predict(&x, false).unwrap().data(),
            net.predict(&x, false).unwrap().data()
        );
        // --resume finds the epoch and its (empty) optimizer state.
        let state =
            checkpoint::load_training_state(&path, convnet::limits::default_max_memory()).unwrap();
        assert_eq!((state.epoch, state.optimizer_state.len()), (0, 0));
    }
}

#[test]
fn export_import_train_on_the_command_line() {
    let dir = TempDir::new("onnx-cli");
    let trained = dir.join("trained.safetensors");
    let onnx = dir.join("model.onnx");
    let back = dir.join("back.safetensors");
    let model = "conv(4,3)-relu-maxpool(2)-affine(10)";
    convnet_ok(
        &[
            "train",
            "--model",
            model,
            "--epochs",
            "0",
            "--threads",
            "1",
            "--save",
        ],
        &[&trained],
    );
    let out = convnet_ok(
        &["export", "--checkpoint"],
        &[&trained, Path::new("--onnx"), &onnx],
    );
    assert!(out.contains("\"logits\""), "{out}");
    convnet_ok(&["import"], &[&onnx, Path::new("--save"), &back]);
    let (mut a, _) = checkpoint::load(&trained).unwrap();
    let (mut b, info) = checkpoint::load(&back).unwrap();
    assert_eq!(info.model, model);
    let x = digits(2);
    assert_eq!(
        a.predict(&x, false).unwrap().data(),
        b.predict(&x, false).unwrap().data()
    );
    // Fine-tuning the imported network: one more epoch with --resume.
    convnet_ok(
        &[
            "train",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--batch-size",
            "100",
            "--resume",
        ],
        &[&back],
    );
    assert_eq!(
        checkpoint::load_training_state(&back, convnet::limits::default_max_memory())
            .unwrap()
            .epoch,
        1
    );
    // A broken file is one line.
    let broken = dir.join("broken.onnx");
    std::fs::write(&broken, &std::fs::read(&onnx).unwrap()[..100]).unwrap();
    let line = convnet_fails(&["import"], &[&broken, Path::new("--save"), &back]);
    assert!(line.contains("broken.onnx"), "{line}");
}

#[test]
fn an_even_lrn_window_does_not_export() {
    let net = network("conv(4,3)-lrn(4)-affine(10)", 1);
    let e = export(&net, &ExportInfo::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("lrn1") && e.contains("even"), "{e}");
}

#[test]
fn without_convnet_metadata_the_model_is_the_spec() {
    let (mut net, bytes) = exported(ALL_OPS);
    let mut model = decode(&bytes);
    model.metadata_props.clear();
    let mut imported = import(&model.encode_to_vec(), "bare.onnx").unwrap();
    assert_eq!(imported.info.model, imported.spec);
    assert_eq!(imported.info.class_names[3], "3");
    let x = digits(2);
    assert_eq!(
        imported.net.predict(&x, false).unwrap().data(),
        net.predict(&x, false).unwrap().data()
    );
}

// ---- malformed and unsupported files ---------------------------------------

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).unwrap()
}

/// Import of `model` fails, and the message contains every one of `words`.
fn refused(model: &ModelProto, words: &[&str]) {
    let bytes = model.encode_to_vec();
    let e = match import(&bytes, "bad.onnx") {
        Ok(_) => panic!("accepted; expected an error with {words:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "{e}");
    for w in words {
        assert!(e.contains(w), "{e:?} does not mention {w:?}");
    }
}

/// The graph's nodes, to change one.
fn nodes_mut(model: &mut ModelProto) -> std::slice::IterMut<'_, NodeProto> {
    model.graph.as_mut().unwrap().node.iter_mut()
}

fn node_mut<'a>(model: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    nodes_mut(model).find(|n| n.name() == name).unwrap()
}

fn set_ints(node: &mut NodeProto, attr: &str, values: &[i64]) {
    match node.attribute.iter_mut().find(|a| a.name() == attr) {
        Some(a) => a.ints = values.to_vec(),
        None => node.attribute.push(convnet::onnx::proto::AttributeProto {
            name: Some(attr.into()),
            r#type: Some(7),
            ints: values.to_vec(),
            ..Default::default()
        }),
    }
}

#[test]
fn truncated_files_are_refused() {
    let (_, bytes) = exported("simple");
    for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
        assert!(import(&bytes[..cut], "cut.onnx").is_err(), "cut at {cut}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Flipped bytes anywhere give a network or an error, never a panic.
    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let original = BYTES.get_or_init(|| exported("lenet5").1);
        let mut bytes = original.clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value | 1;
        }
        let _ = import(&bytes, "flipped.onnx");
    }
}

#[test]
fn a_conv_without_its_weight_is_refused() {
    let (_, bytes) = exported("simple");
    let mut model = decode(&bytes);
    let graph = model.graph.as_mut().unwrap();
    graph.initializer.retain(|t| t.name() != "conv1.weight");
    refused(&model, &["node 'conv1' (Conv)", "conv1.weight"]);
    // A weight input left empty.
    let mut model = decode(&bytes);
    node_mut(&mut model, "conv1").input.truncate(1);
    refused(&model, &["conv1", "Conv", "weight"]);
}

#[test]
fn huge_or_inconsistent_tensors_are_refused_before_allocating() {
    let (_, bytes) = exported("simple");
    let edit = |f: &dyn Fn(&mut TensorProto)| {
        let mut model = decode(&bytes);
        let t = model
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .iter_mut()
            .find(|t| t.name() == "fc1.weight")
            .unwrap();
        f(t);
        model
    };
    // Dimensions whose product overflows, or far beyond the data present.
    refused(
        &edit(&|t| t.dims = vec![1 << 40, 1 << 40]),
        &["fc1.weight", "overflow"],
    );
    refused(
        &edit(&|t| t.dims = vec![1 << 30, 1 << 20]),
        &["fc1.weight", "bytes"],
    );
    refused(
        &edit(&|t| t.dims = vec![-1, 100]),
        &["fc1.weight", "negative"],
    );
    // raw_data one value short.
    refused(
        &edit(&|t| {
            let raw = t.raw_data.as_mut().unwrap();
            raw.truncate(raw.len() - 4);
        }),
        &["fc1.weight", "bytes"],
    );
    refused(
        &edit(&|t| t.data_type = Some(DataType::Double as i32)),
        &["fc1.weight", "DOUBLE"],
    );
    // A huge input shape.
    let mut model = decode(&bytes);
    let input = &mut model.graph.as_mut().unwrap().input[0];
    if let Some(convnet::onnx::proto::type_proto::Value::TensorType(t)) =
        input.r#type.as_mut().unwrap().value.as_mut()
    {
        t.shape.as_mut().unwrap().dim[2].value =
            Some(convnet::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(1 << 40));
    }
    refused(&model, &["input", "1 to 65536"]);
}

#[test]
fn graphs_that_are_not_a_chain_are_refused() {
    let (_, bytes) = exported("simple");
    // A cycle: relu1 reads pool1's output.
    let mut model = decode(&bytes);
    node_mut(&mut model, "relu1").input = vec!["pool1.out".into()];
    refused(&model, &["bad.onnx"]);
    // A dangling input.
    let mut model = decode(&bytes);
    node_mut(&mut model, "fc1").input[2] = "nowhere".into();
    refused(&model, &["node 'fc1' (Gemm)", "nowhere"]);
    // Two readers of one tensor.
    let mut model = decode(&bytes);
    node_mut(&mut model, "relu2").input = vec!["pool1.out".into()];
    refused(&model, &["read by 2 nodes"]);
    // No graph at all.
    refused(&ModelProto::default(), &["no graph"]);
}

#[test]
fn unsupported_ops_and_attributes_name_the_node() {
    let (_, bytes) = exported("simple");
    type Change = Box<dyn Fn(&mut NodeProto)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "conv1",
            Box::new(|n| set_ints(n, "dilations", &[2, 2])),
            "dilations",
        ),
        (
            "conv1",
            Box::new(|n| set_ints(n, "pads", &[0, 0, 1, 1])),
            "pads",
        ),
        (
            "conv1",
            Box::new(|n| {
                n.attribute.push(convnet::onnx::proto::AttributeProto {
                    name: Some("group".into()),
                    r#type: Some(2),
                    i: Some(2),
                    ..Default::default()
                })
            }),
            "group",
        ),
        (
            "conv1",
            Box::new(|n| {
                n.attribute.push(convnet::onnx::proto::AttributeProto {
                    name: Some("auto_pad".into()),
                    r#type: Some(3),
                    s: Some(b"SAME_UPPER".to_vec()),
                    ..Default::default()
                })
            }),
            "auto_pad",
        ),
        (
            "pool1",
            Box::new(|n| {
                n.attribute.push(convnet::onnx::proto::AttributeProto {
                    name: Some("ceil_mode".into()),
                    r#type: Some(2),
                    i: Some(1),
                    ..Default::default()
                })
            }),
            "ceil_mode",
        ),
        (
            "relu1",
            Box::new(|n| n.op_type = Some("Softplus".into())),
            "Softplus",
        ),
    ];
    for (name, change, word) in cases {
        let mut model = decode(&bytes);
        change(node_mut(&mut model, name));
        refused(&model, &[&format!("node '{name}'"), word]);
    }
}

// ---- ONNX Runtime conformance (run by .ci/onnx-test.sh) --------------------

/// Writes each exported model, 20 test digits and convnet's probabilities
/// to `$CONVNET_ONNX_OUT` for tests/onnx/check_onnxruntime.py; without the
/// variable, only checks that the models export.
#[test]
fn conformance_fixtures() {
    let out = std::env::var_os("CONVNET_ONNX_OUT");
    let x = digits(20);
    for (i, model) in MODELS.iter().enumerate() {
        let (mut net, bytes) = exported(model);
        let Some(out) = &out else { continue };
        let out = Path::new(out);
        std::fs::create_dir_all(out).unwrap();
        let name = if *model == ALL_OPS {
            "all-ops".to_string()
        } else {
            model.to_string()
        };
        std::fs::write(out.join(format!("{name}.onnx")), &bytes).unwrap();
        let logits = net.predict(&x, false).unwrap().data().to_vec();
        let probabilities: Vec<Vec<f32>> = logits
            .chunks(10)
            .map(|row| {
                let mut p = vec![0.0f32; 10];
                softmax_row(row, &mut p);
                p
            })
            .collect();
        let json = serde_json::json!({
            "model": model,
            "index": i,
            "input_shape": [20, 1, 28, 28],
            "input": x.data(),
            "probabilities": probabilities,
        });
        std::fs::write(out.join(format!("{name}.json")), json.to_string()).unwrap();
    }
}

/// Imports the "PyTorch-style" models that check_onnxruntime.py wrote to
/// `$CONVNET_ONNX_FOREIGN` (each `X.onnx` with `X.json`: input and ONNX
/// Runtime's output) and compares convnet's output to 1e-5.
#[test]
fn foreign_models_match_onnxruntime() {
    let Some(dir) = std::env::var_os("CONVNET_ONNX_FOREIGN") else {
        return;
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        check_foreign(&path);
        checked += 1;
    }
    assert!(checked > 0, "no models in {dir:?}");
}

/// A model of tests/fixtures/onnx (or a folder of foreign models) with the
/// JSON beside it: its input, and the output it must give.
struct Foreign {
    json: serde_json::Value,
    imported: convnet::onnx::Imported,
    x: Tensor<f32>,
}

/// Imports `path` (with its external data, if any) and reads the JSON beside it.
fn foreign(path: &Path) -> Foreign {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    let shape: Vec<usize> = json["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let x = Tensor::from_vec(&shape, floats(&json, "input")).unwrap();
    let imported = import_file(path).unwrap_or_else(|e| panic!("{e}"));
    Foreign { json, imported, x }
}

fn floats(json: &serde_json::Value, key: &str) -> Vec<f32> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// |convnet − expected| for every output value: probabilities when the
/// model ends in a softmax (convnet's import leaves it out and gives the
/// scores), the scores otherwise.
fn differences(f: &mut Foreign) -> Vec<f32> {
    let ours = f.imported.net.predict(&f.x, false).unwrap().data().to_vec();
    let classes = ours.len() / f.x.shape()[0];
    let ours: Vec<f32> = if f.json["softmax"].as_bool().unwrap_or(false) {
        ours.chunks(classes)
            .flat_map(|row| {
                let mut p = vec![0.0f32; classes];
                softmax_row(row, &mut p);
                p
            })
            .collect()
    } else {
        ours
    };
    let expected = floats(&f.json, "output");
    assert_eq!(ours.len(), expected.len());
    ours.iter()
        .zip(&expected)
        .map(|(a, b)| {
            if a.is_finite() {
                (a - b).abs()
            } else {
                f32::INFINITY
            }
        })
        .collect()
}

/// Imports `path`, runs the input of the JSON beside it and compares every
/// output value with the stored one to 1e-5; the largest difference.
fn check_foreign(path: &Path) -> f32 {
    let d = differences(&mut foreign(path));
    if let Some(i) = d.iter().position(|&d| d.is_nan() || d > 1e-5) {
        panic!("{}: output {i} differs by {}", path.display(), d[i]);
    }
    d.into_iter().fold(0.0, f32::max)
}

/// A model written by the `onnx` Python package's helper in PyTorch's style
/// (tests/fixtures/onnx/, made by tests/onnx/check_onnxruntime.py
/// --fixture): initializers, Constant, Identity, Flatten, Gemm with
/// transB=1, Reshape, MatMul + Add, BatchNormalization with ε = 1e-5, a
/// final Softmax; its expected output is ONNX Runtime's.
#[test]
fn a_pytorch_style_model_matches_onnxruntime() {
    for name in ["pytorch-style-a", "pytorch-style-b"] {
        check_foreign(&fixtures().join(format!("{name}.onnx")));
    }
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

// ---- torch.onnx.export's own files -----------------------------------------

/// The models tests/onnx/torch_export.py exported with PyTorch's default
/// exporter (and one with the legacy one), and the network convnet makes
/// of each: dropout is gone in
/// eval mode, a batch norm right after a conv or an affine layer is folded
/// into it, LRN is matched from its nine-node decomposition.
const TORCH_MODELS: [(&str, &str); 6] = [
    ("simple", "conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)"),
    (
        "lenet5",
        "conv(6,5,pad=2)-sigmoid-avgpool(2)-conv(16,5)-sigmoid-avgpool(2)-conv(120,5)-sigmoid-affine(84)-sigmoid-affine(10)",
    ),
    (
        "deep",
        "conv(16,3,pad=1)-relu-conv(16,3,pad=1)-relu-maxpool(2)-conv(32,3,pad=1)-relu-conv(32,3,pad=2)-relu-maxpool(2)-conv(64,3,pad=1)-relu-conv(64,3,pad=1)-relu-maxpool(2)-affine(50)-relu-affine(10)",
    ),
    (
        "alexnet-small",
        "conv(32,3,pad=1)-relu-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(64,3,pad=1)-relu-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(96,3,pad=1)-relu-conv(96,3,pad=1)-relu-conv(64,3,pad=1)-relu-maxpool(3,2)-affine(256)-relu-affine(256)-relu-affine(10)",
    ),
    (
        "all-ops",
        "conv(8,3,stride=2,pad=1)-relu-maxpool(3,stride=2,pad=1)-bn-lrn(3,1e-3,0.75,2)-conv(8,3,pad=1)-sigmoid-avgpool(2,stride=2,pad=1)-conv(16,3,pad=1)-tanh-gap-bn-affine(32)-relu-bn(eps=1e-5)-affine(10)",
    ),
    // The legacy exporter (dynamo=False), all-ops without LRN.
    (
        "legacy-all-ops",
        "conv(8,3,stride=2,pad=1)-relu-maxpool(3,stride=2,pad=1)-bn-conv(8,3,pad=1)-sigmoid-avgpool(2,stride=2,pad=1)-conv(16,3,pad=1)-tanh-gap-bn-affine(32)-relu-bn(eps=1e-5)-affine(10)",
    ),
];

/// torch.onnx.export's own files (tests/fixtures/onnx/torch-*.onnx, their
/// weights in torch-*.onnx.data, written by tests/onnx/torch_export.py):
/// each imports as the expected layers and gives PyTorch's stored outputs
/// (logits; probabilities for all-ops, which ends in a softmax) to 1e-5,
/// every value compared; one weight changed by 0.01 breaks that.
#[test]
fn torch_onnx_export_models_match_pytorch() {
    let on_disk = std::fs::read_dir(fixtures())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("torch-") && name.ends_with(".onnx")
        })
        .count();
    assert_eq!(
        on_disk,
        TORCH_MODELS.len(),
        "a torch-*.onnx fixture is not checked"
    );
    for (name, spec) in TORCH_MODELS {
        let path = fixtures().join(format!("torch-{name}.onnx"));
        let mut f = foreign(&path);
        assert_eq!(f.json["model"], name);
        let exporter = f.json["exporter"].as_str().unwrap();
        let dynamo = if name.starts_with("legacy") {
            "dynamo=False"
        } else {
            "dynamo=True"
        };
        assert!(exporter.contains(dynamo), "{name}: {exporter}");
        assert_eq!(
            convnet::networks::spec::parse_spec(&f.imported.spec).unwrap(),
            convnet::networks::spec::parse_spec(spec).unwrap(),
            "{name}: {}",
            f.imported.spec
        );
        let d = differences(&mut f);
        let max = d.iter().copied().fold(0.0, f32::max);
        assert!(
            d.iter().all(|&d| d <= 1e-5),
            "{name}: max |convnet - PyTorch| = {max:e}"
        );
        eprintln!(
            "torch-{name}: {} outputs, max |convnet - PyTorch| = {max:.1e}",
            d.len()
        );
        // The comparison sees a wrong weight: the first layer's first one.
        f.imported.net.params()[0].value.data_mut()[0] += 0.01;
        let d = differences(&mut f);
        assert!(
            d.iter().any(|&d| d > 1e-5),
            "{name}: a changed weight went unseen"
        );
    }
}

/// `convnet import` of a torch.onnx.export file reads its external data
/// and saves a checkpoint that gives PyTorch's outputs.
#[test]
fn convnet_import_reads_a_torch_export() {
    let dir = TempDir::new("onnx-torch-cli");
    let saved = dir.join("alexnet-small.safetensors");
    let onnx = fixtures().join("torch-alexnet-small.onnx");
    let out = convnet_ok(&["import"], &[&onnx, Path::new("--save"), &saved]);
    assert!(out.contains("10 classes"), "{out}");
    let mut f = foreign(&onnx);
    f.imported.net = checkpoint::load(&saved).unwrap().0;
    assert!(differences(&mut f).iter().all(|&d| d <= 1e-5));
}

// ---- what torch.onnx.export writes, edited: each pattern and its refusals ----

/// The torch fixture `torch-NAME.onnx`, decoded (its large weights are in
/// torch-NAME.onnx.data).
fn torch_proto(name: &str) -> ModelProto {
    decode(&std::fs::read(fixtures().join(format!("torch-{name}.onnx"))).unwrap())
}

/// Imports `model`, an edited torch fixture, from a folder that also holds
/// the fixture's external data file.
fn import_torch(name: &str, model: &ModelProto) -> convnet::Result<convnet::onnx::Imported> {
    let dir = TempDir::new("onnx-torch");
    let data = format!("torch-{name}.onnx.data");
    std::fs::copy(fixtures().join(&data), dir.join(&data)).unwrap();
    let path = dir.join(&format!("torch-{name}.onnx"));
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    import_file(&path)
}

/// Import of the edited torch fixture fails with one line holding `words`.
fn torch_refused(name: &str, model: &ModelProto, words: &[&str]) {
    let e = match import_torch(name, model) {
        Ok(_) => panic!("accepted; expected an error with {words:?}"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "{e}");
    for w in words {
        assert!(e.contains(w), "{e:?} does not mention {w:?}");
    }
}

/// The `nth` node of operator `op`.
fn op_node<'a>(model: &'a mut ModelProto, op: &str, nth: usize) -> &'a mut NodeProto {
    nodes_mut(model)
        .filter(|n| n.op_type() == op)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {op} {nth}"))
}

fn initializer<'a>(model: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

/// Sets the int64 initializer that is input `i` of the `nth` `op` node.
fn set_const_ints(model: &mut ModelProto, op: &str, nth: usize, i: usize, values: &[i64]) {
    let name = op_node(model, op, nth).input[i].clone();
    let t = initializer(model, &name);
    t.dims = vec![values.len() as i64];
    t.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    t.int64_data.clear();
}

/// Sets the float initializer that is input `i` of the `nth` `op` node.
fn set_const_floats(model: &mut ModelProto, op: &str, nth: usize, i: usize, values: &[f32]) {
    let name = op_node(model, op, nth).input[i].clone();
    let t = initializer(model, &name);
    t.dims = if values.len() == 1 {
        vec![]
    } else {
        vec![values.len() as i64]
    };
    t.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    t.float_data.clear();
}

fn spec_of(imported: &convnet::onnx::Imported) -> Vec<convnet::networks::LayerSpec> {
    convnet::networks::spec::parse_spec(&imported.spec).unwrap()
}

/// torch.onnx.export's default puts the weights in `model.onnx.data`:
/// `import_file` (and `convnet import`) read it from the model's folder,
/// checking location, offset and length first; `import` of the bytes alone
/// says where the weights are.
#[test]
fn external_data_is_read_from_the_models_folder_and_checked() {
    let bytes = std::fs::read(fixtures().join("torch-simple.onnx")).unwrap();
    let Err(e) = import(&bytes, "torch-simple.onnx") else {
        panic!("external data accepted without its folder")
    };
    let e = e.to_string();
    assert!(
        e.contains("'0.weight'") && e.contains("external file") && e.contains("import_file"),
        "{e}"
    );
    type Edit = Box<dyn Fn(&mut TensorProto)>;
    let set = |key: &'static str, value: &'static str| -> Edit {
        Box::new(move |t: &mut TensorProto| {
            t.external_data
                .iter_mut()
                .find(|e| e.key() == key)
                .unwrap()
                .value = Some(value.into())
        })
    };
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            set("location", "../torch-simple.onnx.data"),
            &["not a file in the model's folder"],
        ),
        (
            set("location", "/etc/passwd"),
            &["not a file in the model's folder"],
        ),
        (
            set("location", "missing.data"),
            &["cannot open", "missing.data"],
        ),
        (set("length", "12"), &["length 12"]),
        (
            set("offset", "1735000"),
            &["1735400 bytes", "offset 1735000"],
        ),
        (set("offset", "-1"), &["offset '-1' is not a number"]),
        (Box::new(|t| t.dims = vec![1 << 40, 1 << 40]), &["overflow"]),
        (Box::new(|t| t.dims = vec![1 << 20, 1 << 20]), &["bytes"]),
        (
            Box::new(|t| t.external_data.retain(|e| e.key() != "location")),
            &["no location"],
        ),
        (
            Box::new(|t| t.data_type = Some(DataType::Double as i32)),
            &["DOUBLE"],
        ),
    ];
    for (edit, words) in cases {
        let mut model = torch_proto("simple");
        edit(initializer(&mut model, "3.1.weight"));
        let mut words = words.to_vec();
        words.push("tensor '3.1.weight'");
        torch_refused("simple", &model, &words);
    }
    // More tensors over fc1's bytes: each fits in the file, but the first
    // copy already makes them read more than it holds.
    let mut model = torch_proto("simple");
    let fc1 = initializer(&mut model, "3.1.weight").clone();
    let graph = model.graph.as_mut().unwrap();
    for copy in ["copy 1", "copy 2"] {
        let mut t = fc1.clone();
        t.name = Some(copy.into());
        graph.initializer.push(t);
    }
    torch_refused(
        "simple",
        &model,
        &["tensor 'copy 1'", "tensors share bytes"],
    );
    // The same through a second name for the file: a link beside it.
    #[cfg(unix)]
    {
        let dir = TempDir::new("onnx-torch-link");
        let data = "torch-simple.onnx.data";
        std::fs::copy(fixtures().join(data), dir.join(data)).unwrap();
        std::os::unix::fs::symlink(dir.join(data), dir.join("alias.data")).unwrap();
        let mut model = torch_proto("simple");
        let mut copy = initializer(&mut model, "3.1.weight").clone();
        copy.name = Some("copy 1".into());
        for entry in &mut copy.external_data {
            if entry.key() == "location" {
                entry.value = Some("alias.data".into());
            }
        }
        model.graph.as_mut().unwrap().initializer.push(copy);
        let path = dir.join("torch-simple.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        let e = import_file(&path).err().expect("refused").to_string();
        assert!(e.contains("tensors share bytes"), "{e}");
    }
}

/// The exporter's `Reshape` (allowzero 1) and `ReduceMean` over H and W
/// (nn.AdaptiveAvgPool2d(1)) import; other shapes and axes do not.
#[test]
fn torch_reshape_and_reduce_mean() {
    let (name, spec) = TORCH_MODELS[4];
    let expected = convnet::networks::spec::parse_spec(spec).unwrap();
    // keepdims 0: (N, C) straight away, then the Reshape to (-1, C).
    let mut model = torch_proto(name);
    let a = &mut op_node(&mut model, "ReduceMean", 0).attribute;
    a.iter_mut().find(|a| a.name() == "keepdims").unwrap().i = Some(0);
    assert_eq!(spec_of(&import_torch(name, &model).unwrap()), expected);
    // The axes as an attribute (before opset 18), as [2, 3].
    let mut model = torch_proto(name);
    op_node(&mut model, "ReduceMean", 0).input.truncate(1);
    set_ints(op_node(&mut model, "ReduceMean", 0), "axes", &[2, 3]);
    assert_eq!(spec_of(&import_torch(name, &model).unwrap()), expected);
    // A mean over W alone, or over the channels.
    for axes in [&[-1][..], &[1, 2, 3]] {
        let mut model = torch_proto(name);
        set_const_ints(&mut model, "ReduceMean", 0, 1, axes);
        torch_refused(name, &model, &["node 'node_mean' (ReduceMean)", "axes"]);
    }
    // Both an axes input and attribute.
    let mut model = torch_proto(name);
    set_ints(op_node(&mut model, "ReduceMean", 0), "axes", &[2, 3]);
    torch_refused(name, &model, &["(ReduceMean)", "one input or attribute"]);
    // Reshape: with allowzero 1 a 0 is a dimension of 0, not a copy of N.
    let reshape = |values: &[i64], allowzero: i64| {
        let mut model = torch_proto("deep");
        set_const_ints(&mut model, "Reshape", 0, 1, values);
        let node = op_node(&mut model, "Reshape", 0);
        let a = node.attribute.iter_mut().find(|a| a.name() == "allowzero");
        a.unwrap().i = Some(allowzero);
        model
    };
    for (values, allowzero) in [(&[-1, 1024][..], 1), (&[0, -1], 0), (&[1, 1024], 1)] {
        assert!(import_torch("deep", &reshape(values, allowzero)).is_ok());
    }
    for (values, allowzero) in [(&[0, -1][..], 1), (&[-1, 1000], 1), (&[-1, 1024], 2)] {
        torch_refused(
            "deep",
            &reshape(values, allowzero),
            &["(Reshape)", &format!("allowzero {allowzero}")],
        );
    }
}

/// PyTorch's LRN as the exporter writes it (Mul, Reshape, Pad, AveragePool,
/// Squeeze, Mul, Add, Pow, Div) is one `lrn` layer, for even sizes too
/// when the padding is PyTorch's; any difference in it is refused with the
/// node that differs.
#[test]
fn torch_lrn_decomposition() {
    let name = "all-ops";
    let lrn = |imported: &convnet::onnx::Imported| {
        spec_of(imported)
            .into_iter()
            .find(|l| matches!(l, convnet::networks::LayerSpec::Lrn(_)))
            .unwrap()
    };
    let config = |size, alpha, k| {
        convnet::networks::LayerSpec::Lrn(convnet::layers::LrnConfig {
            size,
            alpha,
            beta: 0.75,
            k,
        })
    };
    assert_eq!(
        lrn(&import_torch(name, &torch_proto(name)).unwrap()),
        config(3, 0.001, 2.0)
    );
    // An even window: 2 channels below, 1 above (PyTorch's and convnet's).
    let even = |before: i64, after: i64| {
        let mut model = torch_proto(name);
        set_const_ints(
            &mut model,
            "Pad",
            0,
            1,
            &[0, 0, before, 0, 0, 0, 0, after, 0, 0],
        );
        set_ints(
            op_node(&mut model, "AveragePool", 0),
            "kernel_shape",
            &[4, 1, 1],
        );
        set_const_floats(&mut model, "Mul", 1, 1, &[0.5]);
        model
    };
    assert_eq!(
        lrn(&import_torch(name, &even(2, 1)).unwrap()),
        config(4, 0.5, 2.0)
    );
    // The same window the other way round is not PyTorch's LRN.
    torch_refused(
        name,
        &even(1, 2),
        &["node 'node_pad' (Pad)", "not PyTorch's"],
    );
    type Edit = Box<dyn Fn(&mut ModelProto)>;
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            Box::new(|m| set_const_ints(m, "Pad", 0, 1, &[0, 0, 1, 1, 0, 0, 0, 1, 0, 0])),
            &["(Pad)", "pads"],
        ),
        (
            Box::new(|m| set_const_ints(m, "Reshape", 0, 1, &[-1, 1, 8, 49, 1])),
            &["(Reshape)", "(-1, 1, 8, 7, 7)"],
        ),
        (
            Box::new(|m| set_ints(op_node(m, "AveragePool", 0), "strides", &[2, 1, 1])),
            &["(AveragePool)", "strides 1"],
        ),
        (
            Box::new(|m| set_ints(op_node(m, "AveragePool", 0), "kernel_shape", &[3, 3, 1])),
            &["(AveragePool)", "kernel_shape"],
        ),
        (
            Box::new(|m| set_const_ints(m, "Squeeze", 0, 1, &[2])),
            &["(Squeeze)", "axes [2]"],
        ),
        (
            Box::new(|m| set_const_floats(m, "Pow", 0, 1, &[0.75, 0.75])),
            &["(Pow)", "beta"],
        ),
        (
            Box::new(|m| set_const_floats(m, "Add", 0, 1, &[0.0])),
            &["(Add)", "k > 0"],
        ),
        (
            Box::new(|m| op_node(m, "Add", 0).op_type = Some("Sub".into())),
            &["(Sub)", "expected Add"],
        ),
        (
            Box::new(|m| op_node(m, "Mul", 0).input[1] = "0.bias".into()),
            &["read by 2 nodes"],
        ),
        (
            Box::new(|m| op_node(m, "Div", 0).input.swap(0, 1)),
            &["read by 2 nodes"],
        ),
        (
            Box::new(|m| {
                let pow = op_node(m, "Pow", 0).output[0].clone();
                op_node(m, "Squeeze", 0).input[0] = pow;
            }),
            &["(AveragePool)", "read by the next node alone"],
        ),
    ];
    for (i, (edit, words)) in cases.into_iter().enumerate() {
        let mut model = torch_proto(name);
        edit(&mut model);
        let e = match import_torch(name, &model) {
            Ok(_) => panic!("case {i}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(!e.contains('\n'), "{e}");
        for w in words {
            assert!(e.contains(w), "case {i}: {e:?} does not mention {w:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Flipped bytes in a torch.onnx.export file (LRN pattern, ReduceMean,
    /// external data) give a network or an error, never a panic.
    #[test]
    fn flipped_bytes_of_a_torch_export_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = std::fs::read(fixtures().join("torch-all-ops.onnx")).unwrap();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value | 1;
        }
        let dir = TempDir::new("onnx-flip");
        std::fs::copy(fixtures().join("torch-all-ops.onnx.data"), dir.join("torch-all-ops.onnx.data")).unwrap();
        let path = dir.join("torch-all-ops.onnx");
        std::fs::write(&path, &bytes).unwrap();
        let _ = import_file(&path);
    }
}
