//! Loads a checkpoint and classifies an image file (PNG or JPEG), as
//! `convnet predict` does: the image is made into the network's input by
//! `convnet::data::image_input` (grey-scale, resized, inverted if dark on
//! light, scaled to [0, 1]).
//!
//! ```text
//! cargo run --release --example classify_image -- CHECKPOINT IMAGE
//! cargo run --release --example classify_image
//! ```
//!
//! With no arguments it makes both itself, so that it runs from a fresh
//! clone: it trains SimpleConvNet for one epoch on the embedded MNIST digits
//! and saves it into a temporary folder, writes the first embedded test digit
//! there as a PNG, classifies that, and removes the folder. (A checkpoint of
//! your own: `convnet train --save model.safetensors`.)

use convnet::checkpoint::{self, CheckpointInfo};
use convnet::data::image_input::{image, load_image};
use convnet::data::load_embedded_mnist10k;
use convnet::init::Init;
use convnet::layers::softmax_with_loss::softmax_row;
use convnet::networks::{build_model, ModelOptions};
use convnet::train::{train, TrainConfig};
use convnet::Rng;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let result = match &args[..] {
        [checkpoint, image] => classify(checkpoint, image),
        [] => demo(),
        _ => {
            eprintln!("usage: classify_image [CHECKPOINT IMAGE]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classify_image: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the three most likely classes of `image` for the network saved
/// in `checkpoint`.
fn classify(checkpoint: &Path, image: &Path) -> convnet::Result<()> {
    let (mut net, info) = checkpoint::load(checkpoint)?;
    let x = load_image(image, info.input_shape, true)?; // (1, C, H, W)
    let scores = net.predict(&x, false)?;
    let mut probabilities = vec![0.0f32; scores.len()];
    softmax_row(scores.data(), &mut probabilities);
    let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = ranked[..3.min(ranked.len())]
        .iter()
        .map(|&(class, p)| format!("{} ({:.1}%)", info.class_names[class], 100.0 * p))
        .collect();
    println!("{}: {}", image.display(), top.join(", "));
    Ok(())
}

/// Makes a checkpoint and an image in a temporary folder, and classifies it.
fn demo() -> convnet::Result<()> {
    let dir = std::env::temp_dir().join(format!("convnet-classify-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| convnet::Error::io(&dir, e))?;
    let result = demo_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo_in(dir: &Path) -> convnet::Result<()> {
    let data = load_embedded_mnist10k()?;
    let shape = data.train.input_shape();
    // He initialisation, as `convnet train` uses for SimpleConvNet.
    let options = ModelOptions {
        init: Some(Init::He),
        ..ModelOptions::default()
    };
    let mut net = build_model::<f32>("simple", &options, shape, 10, &mut Rng::new(1))?;
    println!(
        "training SimpleConvNet for one epoch on {} digits...",
        data.train.len()
    );
    let config = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    train(&mut net, &data, &config, |_, _| Ok(()))?;
    let model = dir.join("model.safetensors");
    let info = CheckpointInfo::for_network(&net, data.class_names.clone());
    checkpoint::save(&mut net, &info, &model)?;

    // The first test digit as an 8-bit grey PNG.
    let pixels = data
        .test
        .image(0)
        .iter()
        .map(|&v| (v * 255.0).round() as u8)
        .collect();
    let png = dir.join("digit.png");
    let [_, h, w] = shape;
    image::GrayImage::from_raw(w as u32, h as u32, pixels)
        .expect("one byte per pixel")
        .save(&png)
        .map_err(|e| convnet::Error::Data(format!("cannot write {}: {e}", png.display())))?;
    println!(
        "the digit in {} is a {}",
        png.display(),
        data.test.labels[0]
    );
    classify(&model, &png)
}
