//! Checkpoints: safetensors bytes we can read when written by hand, and
//! `--resume` reproducing an uninterrupted run.

mod common;

use common::{convnet_ok as convnet, weights, TempDir};
use convnet::checkpoint;

#[test]
fn resume_ends_with_the_weights_of_an_uninterrupted_run() {
    let dir = TempDir::new("resume");
    let whole = dir.path().join("whole.safetensors");
    let parts = dir.path().join("parts.safetensors");
    // deep has dropout, so the masks must be reproduced too; a small spec
    // with dropout keeps the test quick.
    let model = "conv(8,3)-relu-maxpool(2)-dropout(0.3)-affine(32)-relu-affine(10)";
    let common = [
        "train",
        "--model",
        model,
        "--seed",
        "9",
        "--threads",
        "2",
        "--optimizer",
        "adam",
    ];
    convnet(
        &[&common[..], &["--epochs", "3", "--save"]].concat(),
        &[&whole],
    );
    convnet(
        &[&common[..], &["--epochs", "1", "--save"]].concat(),
        &[&parts],
    );
    assert!(checkpoint::optimizer_path(&parts, 1).exists());
    let resumed = convnet(
        &[&common[..], &["--epochs", "3", "--resume"]].concat(),
        &[&parts],
    );
    assert!(
        resumed.contains("epoch  2/3") && !resumed.contains("epoch  1/3"),
        "{resumed}"
    );
    let (a, b) = (weights(&whole), weights(&parts));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{name} differs after resuming");
    }
    // And a run of one epoch less is different, so the comparison can fail.
    let short = dir.path().join("short.safetensors");
    convnet(
        &[&common[..], &["--epochs", "2", "--save"]].concat(),
        &[&short],
    );
    assert_ne!(weights(&short)[0].1, a[0].1);
}

/// A checkpoint of a tiny `affine(2)` network, written byte by byte:
/// 8-byte little-endian header length, the JSON header, then the data.
#[test]
fn reads_a_checkpoint_written_by_hand() {
    let dir = TempDir::new("by-hand");
    // fc1.weight is stored as PyTorch's (out, in) = (2, 3); fc1.bias (2).
    let weight: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let bias: [f32; 2] = [0.5, -0.5];
    let header = concat!(
        r#"{"__metadata__":{"format":"convnet","model":"affine(2)","model_options":"","#,
        r#""input_shape":"1,1,3","class_names":"[\"no\",\"yes\"]"},"#,
        r#""fc1.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#,
        r#""fc1.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}}"#
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for v in bias.iter().chain(&weight) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let path = dir.path().join("hand.safetensors");
    std::fs::write(&path, &bytes).unwrap();

    let (mut net, info) = checkpoint::load(&path).unwrap();
    assert_eq!(info.model, "affine(2)");
    assert_eq!(info.input_shape, [1, 1, 3]);
    assert_eq!(info.class_names, ["no", "yes"]);
    // Our affine weight is the book's (in, out) = (3, 2): the transpose.
    let params = net.params();
    assert_eq!(params[0].value.shape(), &[3, 2]);
    assert_eq!(params[0].value.data(), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(params[1].value.data(), bias);
    drop(params);
    // out = x·W + b for x = [1, 1, 1]: [1+2+3+0.5, 4+5+6−0.5].
    let x = convnet::Tensor::from_vec(&[1, 1, 1, 3], vec![1.0, 1.0, 1.0]).unwrap();
    assert_eq!(net.predict(&x, false).unwrap().data(), [6.5, 14.5]);

    // Saving it again and reading it back gives the same tensors.
    let again = dir.path().join("again.safetensors");
    checkpoint::save(&mut net, &info, &again).unwrap();
    assert_eq!(weights(&again), weights(&path));
}

// ---------------------------------------------------------------------------
// Networks built by hand
// ---------------------------------------------------------------------------

use convnet::checkpoint::CheckpointInfo;
use convnet::init::Init;
use convnet::layers::{
    Affine, AffineConfig, BatchNorm, BatchNormConfig, Convolution, ConvolutionConfig, Dropout,
    DropoutConfig, Layer, MaxPooling, PoolingConfig, Relu,
};
use convnet::networks::Network;
use convnet::optim::{build, OptimizerKind};
use convnet::{Rng, Tensor};

/// conv → batch norm → ReLU → max pool → dropout → affine, with names of
/// its own (not the spec's `conv1`, `bn1`, ...), for 8×8 images.
fn hand_built(filters: usize, classes: usize, seed: u64) -> Network<f32> {
    let mut rng = Rng::new(seed);
    let mut net = Network::new([1, 8, 8]);
    let conv = ConvolutionConfig {
        in_channels: 1,
        filters,
        filter_size: 3,
        pad: 1,
        init: Init::He,
        ..Default::default()
    };
    net.push("features", Convolution::new(&conv, &mut rng).unwrap())
        .unwrap();
    let norm = BatchNormConfig {
        features: filters,
        momentum: 0.8,
        eps: 1e-5,
    };
    net.push("norm", BatchNorm::new(&norm).unwrap()).unwrap();
    net.push("act", Relu::new()).unwrap();
    let pool = PoolingConfig {
        size: 2,
        stride: 2,
        pad: 0,
    };
    net.push("pool", MaxPooling::new(&pool)).unwrap();
    let dropout = Dropout::new(&DropoutConfig { ratio: 0.3 }, rng.fork()).unwrap();
    net.push("drop", dropout).unwrap();
    let fc = AffineConfig {
        inputs: filters * 16,
        outputs: classes,
        init: Init::He,
    };
    net.push("classifier", Affine::new(&fc, &mut rng)).unwrap();
    net
}

/// Random images and labels for [`hand_built`] networks.
fn batch(n: usize, seed: u64) -> (Tensor<f32>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let x = (0..n * 64).map(|_| rng.normal() as f32).collect();
    let labels = (0..n).map(|i| i % 3).collect();
    (Tensor::from_vec(&[n, 1, 8, 8], x).unwrap(), labels)
}

/// A few SGD steps: weights and batch norm's running statistics move away
/// from their initial values.
fn train_a_little(net: &mut Network<f32>) {
    let (x, labels) = batch(6, 11);
    let mut sgd = build::<f32>(OptimizerKind::Sgd, Some(0.1));
    for _ in 0..3 {
        net.gradient(&x, &labels).unwrap();
        sgd.step(&mut net.params());
    }
}

fn scores(net: &mut Network<f32>) -> Vec<f32> {
    let (x, _) = batch(5, 12);
    net.predict(&x, false).unwrap().data().to_vec()
}

#[test]
fn a_hand_built_network_saves_and_loads_back_with_identical_predictions() {
    let dir = TempDir::new("hand-built");
    let path = dir.join("net.safetensors");
    let mut net = hand_built(4, 3, 1);
    train_a_little(&mut net);
    let spec =
        "conv(4,3,pad=1)-bn(momentum=0.8,eps=0.00001)-relu-maxpool(2)-dropout(0.3)-affine(3)";
    assert_eq!(net.to_spec().unwrap(), spec);
    let info = CheckpointInfo::for_network(&net, Vec::new());
    assert_eq!(info.model, spec);
    checkpoint::save(&mut net, &info, &path).unwrap();

    let (mut loaded, loaded_info) = checkpoint::load(&path).unwrap();
    assert_eq!(loaded_info.class_names, ["0", "1", "2"]);
    assert_eq!(loaded_info.input_shape, [1, 8, 8]);
    assert_eq!(loaded.param_names(), net.param_names());
    assert_eq!(loaded.to_spec().unwrap(), spec);
    assert_eq!(scores(&mut loaded), scores(&mut net));
    // Batch norm's running statistics came back too (evaluation uses them).
    let running = |net: &mut Network<f32>| net.layers[1].layer.buffers()[0].1.data().to_vec();
    assert_eq!(running(&mut loaded), running(&mut net));
    assert!(running(&mut net).iter().any(|&v| v != 0.0));
}

#[test]
fn load_into_fills_a_network_of_the_same_layers() {
    let dir = TempDir::new("load-into");
    let path = dir.join("net.safetensors");
    let mut net = hand_built(4, 3, 1);
    train_a_little(&mut net);
    let info = CheckpointInfo::for_network(&net, vec!["a".into(), "b".into(), "c".into()]);
    checkpoint::save(&mut net, &info, &path).unwrap();

    let mut other = hand_built(4, 3, 2);
    assert_ne!(scores(&mut other), scores(&mut net));
    checkpoint::load_into(&mut other, &path).unwrap();
    assert_eq!(scores(&mut other), scores(&mut net));
    assert_eq!(
        checkpoint::load_info(&path).unwrap().class_names,
        ["a", "b", "c"]
    );
}

#[test]
fn load_into_refuses_a_mismatch_naming_the_tensor_and_changes_nothing() {
    let dir = TempDir::new("load-into-mismatch");
    let path = dir.join("net.safetensors");
    let mut net = hand_built(4, 3, 1);
    let info = CheckpointInfo::for_network(&net, Vec::new());
    checkpoint::save(&mut net, &info, &path).unwrap();
    let fails = |mut other: Network<f32>| -> String {
        let before = scores(&mut other);
        let err = checkpoint::load_into(&mut other, &path)
            .unwrap_err()
            .to_string();
        assert_eq!(scores(&mut other), before, "{err}: the network changed");
        assert!(!err.contains('\n'), "{err}");
        err
    };

    // Another shape: the first tensor that differs is named, with both shapes.
    let err = fails(hand_built(5, 3, 1));
    assert!(
        err.contains(
            "tensor features.weight has shape [4, 1, 3, 3], the network needs [5, 1, 3, 3]"
        ),
        "{err}"
    );
    // The last layer differs: nothing before it was filled either.
    let err = fails(hand_built(4, 4, 1));
    assert!(err.contains("tensor classifier.weight"), "{err}");

    // A name the file does not have.
    let mut renamed = hand_built(4, 3, 1);
    renamed.layers[5].name = "head".into();
    let err = fails(renamed);
    assert!(err.contains("tensor head.weight is missing"), "{err}");

    // Tensors the network does not have.
    let mut rng = Rng::new(1);
    let mut smaller = Network::new([1, 8, 8]);
    let conv = ConvolutionConfig {
        in_channels: 1,
        filters: 4,
        filter_size: 3,
        pad: 1,
        ..Default::default()
    };
    smaller
        .push("features", Convolution::new(&conv, &mut rng).unwrap())
        .unwrap();
    let fc = AffineConfig {
        inputs: 256,
        outputs: 3,
        ..Default::default()
    };
    smaller
        .push("classifier", Affine::new(&fc, &mut rng))
        .unwrap();
    let err = fails(smaller);
    assert!(err.contains("tensor classifier.weight has shape"), "{err}");
}

#[test]
fn tensors_the_network_lacks_are_refused_by_name() {
    let dir = TempDir::new("unexpected");
    let path = dir.join("net.safetensors");
    let mut net = hand_built(4, 3, 1);
    let info = CheckpointInfo::for_network(&net, Vec::new());
    checkpoint::save(&mut net, &info, &path).unwrap();
    // The same network without its batch norm.
    let mut without = hand_built(4, 3, 1);
    without.layers.remove(1);
    let err = checkpoint::load_into(&mut without, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor norm.bias, norm.running_mean, norm.running_var, norm.weight is not in the network"),
        "{err}"
    );
}

#[test]
fn save_refuses_class_names_that_are_not_one_per_class() {
    let dir = TempDir::new("class-names");
    let mut net = hand_built(4, 3, 1);
    let info = CheckpointInfo::for_network(&net, vec!["a".into(), "b".into()]);
    let err = checkpoint::save(&mut net, &info, &dir.join("net.safetensors")).unwrap_err();
    assert!(
        err.to_string()
            .contains("2 class names for a network with 3 classes"),
        "{err}"
    );
}

/// y = 2x: a layer of the user's own, which no spec can name.
struct Double {
    out: Tensor<f32>,
    dx: Tensor<f32>,
}

impl Layer<f32> for Double {
    fn kind(&self) -> &'static str {
        "Double"
    }
    fn output_shape(&self, input: &[usize]) -> convnet::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor<f32>, _train: bool) -> convnet::Result<&Tensor<f32>> {
        let values = x.data().iter().map(|v| 2.0 * v).collect();
        self.out = Tensor::from_vec(x.shape(), values)?;
        Ok(&self.out)
    }
    fn backward(&mut self, dout: &Tensor<f32>) -> convnet::Result<&Tensor<f32>> {
        let values = dout.data().iter().map(|v| 2.0 * v).collect();
        self.dx = Tensor::from_vec(dout.shape(), values)?;
        Ok(&self.dx)
    }
}

#[test]
fn a_network_with_a_layer_of_ones_own_loads_into_a_network_only() {
    let dir = TempDir::new("custom-layer");
    let path = dir.join("net.safetensors");
    let with_double = |seed| {
        let mut net = hand_built(4, 3, seed);
        let double = Double {
            out: Tensor::default(),
            dx: Tensor::default(),
        };
        net.push("double", double).unwrap();
        net
    };
    let mut net = with_double(1);
    let err = net.to_spec().unwrap_err().to_string();
    assert!(err.contains("double (Double)"), "{err}");
    let info = CheckpointInfo::for_network(&net, Vec::new());
    assert_eq!(info.model, "custom");
    checkpoint::save(&mut net, &info, &path).unwrap();

    let err = checkpoint::load(&path).err().unwrap().to_string();
    assert!(err.contains("checkpoint::load_into"), "{err}");
    let mut other = with_double(2);
    checkpoint::load_into(&mut other, &path).unwrap();
    assert_eq!(scores(&mut other), scores(&mut net));
}
