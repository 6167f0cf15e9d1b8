//! The networks issue: named models, specs, summaries and the full AlexNet.

use convnet::data::load_embedded_mnist10k;
use convnet::gradient_check::check_network_sample;
use convnet::networks::summary::summarize;
use convnet::networks::{build_model, ModelOptions};
use convnet::{Rng, Tensor};
use std::process::Command;

fn build(model: &str, shape: [usize; 3], classes: usize) -> convnet::networks::Network<f32> {
    build_model::<f32>(
        model,
        &ModelOptions::default(),
        shape,
        classes,
        &mut Rng::new(1),
    )
    .unwrap()
}

#[test]
fn alexnet_has_the_papers_shapes_and_parameter_count() {
    let mut net = build("alexnet", [3, 227, 227], 1000);
    let summary = summarize(&mut net).unwrap();
    assert_eq!(summary.total_params, 62_378_344);
    let shape_of = |name: &str| {
        summary
            .rows
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .output_shape
            .clone()
    };
    assert_eq!(shape_of("conv1"), [1, 96, 55, 55]);
    assert_eq!(shape_of("pool1"), [1, 96, 27, 27]);
    assert_eq!(shape_of("pool2"), [1, 256, 13, 13]);
    assert_eq!(shape_of("pool3"), [1, 256, 6, 6]);
    assert_eq!(shape_of("fc3"), [1, 1000]);
}

#[test]
fn alexnet_runs_forward_and_backward_on_a_batch_of_two() {
    let mut net = build("alexnet", [3, 227, 227], 1000);
    let mut rng = Rng::new(2);
    let x: Vec<f32> = (0..2 * 3 * 227 * 227)
        .map(|_| rng.uniform() as f32)
        .collect();
    let x = Tensor::from_vec(&[2, 3, 227, 227], x).unwrap();
    let loss = net.gradient(&x, &[3, 999]).unwrap();
    // Untrained: close to ln(1000) = 6.91.
    assert!(loss.is_finite() && (loss - 6.91).abs() < 1.0, "loss {loss}");
    for p in net.params() {
        assert!(p.grad.data().iter().all(|g| g.is_finite()));
        assert!(
            p.grad.data().iter().any(|&g| g != 0.0),
            "{} gradient all zero",
            p.name
        );
    }
}

#[test]
fn lenet5_and_deep_have_the_documented_sizes() {
    let mut lenet = build("lenet5", [1, 28, 28], 10);
    let summary = summarize(&mut lenet).unwrap();
    // LeCun et al.: C1 156, C3 2,416, C5 48,120, F6 10,164, output 850.
    assert_eq!(summary.total_params, 61_706);
    assert_eq!(summary.rows[0].output_shape, [1, 6, 28, 28]);
    let mut deep = build("deep", [1, 28, 28], 10);
    let summary = summarize(&mut deep).unwrap();
    let fc1 = summary.rows.iter().find(|r| r.name == "fc1").unwrap();
    assert_eq!(fc1.params, 64 * 4 * 4 * 50 + 50); // 1,024 inputs, as in the book
    let kinds: Vec<&str> = summary.rows.iter().map(|r| r.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Convolution").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "Dropout").count(), 2);
    assert_eq!(kinds.last(), Some(&"Dropout"));
}

#[test]
fn lenet5_and_deep_gradients_match_numerical() {
    for (model, side) in [("lenet5", 28), ("deep", 12)] {
        let mut rng = Rng::new(5);
        let mut net = build_model::<f64>(
            model,
            &ModelOptions::default(),
            [1, side, side],
            10,
            &mut rng,
        )
        .unwrap();
        let n = 2 * side * side;
        let x =
            Tensor::from_vec(&[2, 1, side, side], (0..n).map(|_| rng.uniform()).collect()).unwrap();
        for (name, err) in check_network_sample(&mut net, &x, &[1, 8], 25, 3).unwrap() {
            assert!(err <= 1e-6, "{model} {name}: {err}");
        }
    }
}

#[test]
fn activation_option_switches_lenet5_to_relu() {
    let options = ModelOptions {
        activation: Some("relu".into()),
        ..Default::default()
    };
    let net = build_model::<f32>("lenet5", &options, [1, 28, 28], 10, &mut Rng::new(0)).unwrap();
    let kinds: Vec<&str> = net.layers.iter().map(|l| l.layer.kind()).collect();
    assert!(kinds.contains(&"Relu") && !kinds.contains(&"Sigmoid"));
    let bad = ModelOptions {
        activation: Some("swish".into()),
        ..Default::default()
    };
    assert!(build_model::<f32>("lenet5", &bad, [1, 28, 28], 10, &mut Rng::new(0)).is_err());
}

#[test]
fn spec_errors_name_the_layer() {
    let err = |spec: &str| {
        build_model::<f32>(
            spec,
            &ModelOptions::default(),
            [1, 28, 28],
            10,
            &mut Rng::new(0),
        )
        .err()
        .expect("should fail")
        .to_string()
    };
    assert!(err("conv(30,5)-relu-pooling(2)-affine(10)").contains("pooling"));
    assert!(err("conv(30,five)-relu-affine(10)").contains("five"));
    let too_big = err("conv(8,3)-relu-maxpool(2)-conv(8,20)-affine(10)");
    assert!(
        too_big.contains("layer 4") && too_big.contains("conv2"),
        "{too_big}"
    );
    assert!(err("conv(8,3)-relu-affine(7)").contains("10"));
    assert!(err("conv(8,3,stride=1,pad=1,dilation=2)-affine(10)").contains("dilation"));
}

#[test]
fn a_spec_model_trains_and_round_trips_through_a_checkpoint() {
    let dir = std::env::temp_dir().join(format!("convnet-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("spec.safetensors");
    let exe = env!("CARGO_BIN_EXE_convnet");
    let spec = "conv(8,3,pad=1)-bn-relu-maxpool(2)-conv(16,3)-tanh-avgpool(2)-dropout(0.25)-affine(32)-relu-affine(10)";
    let out = Command::new(exe)
        .args([
            "train",
            "--model",
            spec,
            "--epochs",
            "1",
            "--threads",
            "2",
            "--save",
        ])
        .arg(&checkpoint)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap().to_string();
    // "test accuracy: 96.04% (...)": the percentage must be reproduced by eval.
    let percent = last.split_whitespace().nth(2).unwrap().to_string();
    let accuracy: f64 = percent.trim_end_matches('%').parse().unwrap();
    assert!(accuracy > 70.0, "{last}"); // chance is 10 %
    let out = Command::new(exe)
        .args(["eval", "--checkpoint"])
        .arg(&checkpoint)
        .output()
        .unwrap();
    let eval = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eval.contains(&format!("accuracy: {percent}")),
        "{eval} vs {percent}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // The embedded data is what the run used.
    assert_eq!(load_embedded_mnist10k().unwrap().test.len(), 1996);
}

#[test]
fn summary_command_reports_alexnets_parameters() {
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(["summary", "--model", "alexnet"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("total parameters: 62,378,344"), "{text}");
    assert!(text.contains("[1, 256, 6, 6]"));
}

#[test]
fn options_that_do_not_apply_to_the_model_are_errors() {
    for args in [
        &["train", "--model", "deep", "--filters", "3"][..],
        &[
            "train",
            "--model",
            "conv(4,3)-relu-affine(10)",
            "--hidden-size",
            "5",
        ][..],
        &["train", "--activation", "relu"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("applies to"), "{stderr}");
    }
}
