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
use convnet::onnx::{export, import, ExportInfo};
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

fn node_mut<'a>(model: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    model
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.name() == name)
        .unwrap()
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

/// Imports `path`, runs the input of the JSON beside it and compares with
/// the stored ONNX Runtime output (probabilities when the model ends in a
/// softmax, logits otherwise, to 1e-5).
fn check_foreign(path: &Path) {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    let floats = |key: &str| -> Vec<f32> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let shape: Vec<usize> = json["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut imported = import(&std::fs::read(path).unwrap(), &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_vec(&shape, floats("input")).unwrap();
    let ours = imported.net.predict(&x, false).unwrap().data().to_vec();
    let classes = ours.len() / shape[0];
    let ours: Vec<f32> = if json["softmax"].as_bool().unwrap_or(false) {
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
    let expected = floats("output");
    assert_eq!(ours.len(), expected.len(), "{}", path.display());
    for (a, b) in ours.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-5, "{}: {a} vs {b}", path.display());
    }
}

/// A model written by the `onnx` Python package's helper in PyTorch's style
/// (tests/fixtures/onnx/, made by tests/onnx/check_onnxruntime.py
/// --fixture): initializers, Constant, Identity, Flatten, Gemm with
/// transB=1, Reshape, MatMul + Add, BatchNormalization with ε = 1e-5, a
/// final Softmax; its expected output is ONNX Runtime's.
#[test]
fn a_pytorch_style_model_matches_onnxruntime() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            check_foreign(&path);
            checked += 1;
        }
    }
    assert!(checked > 0);
}
