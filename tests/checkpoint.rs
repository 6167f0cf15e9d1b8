//! Checkpoints: safetensors bytes we can read when written by hand, and
//! `--resume` reproducing an uninterrupted run.

mod common;

use common::{convnet_ok as convnet, TempDir};
use convnet::checkpoint;
use std::path::Path;

/// Every parameter of a checkpoint, flattened, in order.
fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let (mut net, _) = checkpoint::load(path).unwrap();
    let names = net.param_names();
    names
        .into_iter()
        .zip(net.params())
        .map(|(n, p)| (n, p.value.data().to_vec()))
        .collect()
}

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
