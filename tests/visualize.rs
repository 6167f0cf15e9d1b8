//! The pictures: `visualize filters` (with `--compare`), `visualize
//! activations`, `plot` and `eval --plot` write PNGs of the documented size
//! that are not blank, and bad input is one clear error line.

mod common;

use common::{convnet_fails, convnet_ok as convnet, TempDir};
use convnet::checkpoint;
use convnet::data::load_embedded_mnist10k;
use image::{GrayImage, Luma, RgbImage};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Two convolutions and two kinds of pooling, small enough to train one
/// epoch of the embedded digits in about a second.
const MODEL: &str = "conv(6,5)-relu-maxpool(2)-conv(8,3)-relu-avgpool(2)-affine(10)";

/// Trains `MODEL` for `epochs` epochs in `dir` (plus `extra` options);
/// returns the checkpoint and the metrics file.
fn train(dir: &TempDir, epochs: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let model = dir.join("model.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let args = [
        &[
            "train",
            "--model",
            MODEL,
            "--epochs",
            epochs,
            "--threads",
            "2",
            "--seed",
            "3",
        ],
        extra,
        &["--metrics", metrics.to_str().unwrap(), "--save"],
    ]
    .concat();
    convnet(&args, &[&model]);
    (model, metrics)
}

/// Reads a PNG; asserts its size and that it is a picture, not a blank:
/// many distinct colours and a spread of brightness.
fn check_picture(path: &Path, size: (u32, u32)) -> RgbImage {
    let picture = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(picture.dimensions(), size, "{}", path.display());
    let colours: HashSet<[u8; 3]> = picture.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() >= 16,
        "{}: {} colours",
        path.display(),
        colours.len()
    );
    let grey: Vec<f64> = picture
        .pixels()
        .map(|p| p.0.iter().map(|&c| c as f64).sum::<f64>() / 3.0)
        .collect();
    let mean = grey.iter().sum::<f64>() / grey.len() as f64;
    let variance = grey.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / grey.len() as f64;
    assert!(variance > 100.0, "{}: variance {variance}", path.display());
    picture
}

/// The pixels of the rectangle at (x, y) of `w × h`.
fn region(picture: &RgbImage, (x, y): (u32, u32), (w, h): (u32, u32)) -> Vec<[u8; 3]> {
    (y..y + h)
        .flat_map(|row| (x..x + w).map(move |col| picture.get_pixel(col, row).0))
        .collect()
}

// Six 5×5 filters: one row of six tiles of 8·5 = 40 px, 2 px apart, so the
// grid is 6·42 − 2 = 250 wide and 40 high; a picture is 24 + max(250, 240)
// wide (two panels: 24 + 2·250 + 24) and 46 + 42 = 88 high.
const GRID: (u32, u32) = (250, 40);
const FILTERS_SIZE: (u32, u32) = (274, 88);
const COMPARE_SIZE: (u32, u32) = (548, 88);
/// The grids' top-left corners: margin 12, a 24 px title line; the second
/// panel 24 px right of the first.
const LEFT_GRID: (u32, u32) = (12, 36);
const RIGHT_GRID: (u32, u32) = (12 + 250 + 24, 36);

#[test]
fn filters_before_and_after_training() {
    let dir = TempDir::new("filters");
    let (model, _) = train(&dir, "1", &[]);
    let single = dir.join("filters.png");
    let out = convnet(
        &[
            "visualize",
            "filters",
            "--output",
            single.to_str().unwrap(),
            "--checkpoint",
        ],
        &[&model],
    );
    assert!(out.contains("conv1: 6 filters of 1×5×5"), "{out}");
    assert!(
        out.contains(&format!("wrote {} (274×88)", single.display())),
        "{out}"
    );
    check_picture(&single, FILTERS_SIZE);

    let compare = dir.join("compare.png");
    convnet(
        &[
            "visualize",
            "filters",
            "--compare",
            "--output",
            compare.to_str().unwrap(),
            "--checkpoint",
        ],
        &[&model],
    );
    let picture = check_picture(&compare, COMPARE_SIZE);
    // Training changed the filters: the panels differ.
    assert_ne!(
        region(&picture, LEFT_GRID, GRID),
        region(&picture, RIGHT_GRID, GRID)
    );
    // The right panel is the trained network's, drawn as `filters` alone draws it.
    let alone = image::open(&single).unwrap().to_rgb8();
    assert_eq!(
        region(&picture, RIGHT_GRID, GRID),
        region(&alone, LEFT_GRID, GRID)
    );
}

#[test]
fn compare_shows_the_initial_weights_of_the_same_seed() {
    // SGD with a learning rate of 1e-30 leaves every weight as it was drawn,
    // so "before" must equal "after" pixel for pixel.
    let dir = TempDir::new("compare");
    let (model, _) = train(&dir, "1", &["--optimizer", "sgd", "--lr", "1e-30"]);
    let compare = dir.join("compare.png");
    convnet(
        &[
            "visualize",
            "filters",
            "--compare",
            "--output",
            compare.to_str().unwrap(),
            "--checkpoint",
        ],
        &[&model],
    );
    let picture = check_picture(&compare, COMPARE_SIZE);
    assert_eq!(
        region(&picture, LEFT_GRID, GRID),
        region(&picture, RIGHT_GRID, GRID)
    );

    // A checkpoint without the seed (as older versions wrote) cannot compare.
    let (mut net, mut info) = checkpoint::load(&model).unwrap();
    assert_eq!(info.extra.get("seed").map(String::as_str), Some("3"));
    info.extra.remove("seed");
    let old = dir.join("old.safetensors");
    checkpoint::save(&mut net, &info, &old).unwrap();
    let err = convnet_fails(
        &["visualize", "filters", "--compare", "--checkpoint"],
        &[&old],
    );
    assert!(err.contains("does not record its seed"), "{err}");
}

#[test]
fn activations_of_one_test_digit() {
    let dir = TempDir::new("activations");
    let (model, _) = train(&dir, "1", &[]);
    let data = load_embedded_mnist10k().unwrap();
    let pixels = data.test.image(0);
    let digit = GrayImage::from_fn(28, 28, |x, y| {
        Luma([(pixels[(y * 28 + x) as usize] * 255.0).round() as u8])
    });
    let image = dir.join("digit.png");
    digit.save(&image).unwrap();
    let output = dir.join("activations.png");
    let out = convnet(
        &[
            "visualize",
            "activations",
            "--output",
            output.to_str().unwrap(),
            "--checkpoint",
        ],
        &[&model, &image],
    );
    // Panels (title 24 px + grid; 10 px between): the input, 56 px (28 × 2);
    // conv1 6×24×24 and pool1 6×12×12, 48 px tiles, 6·50 − 2 = 298 wide;
    // conv2 8×10×10 and pool2 8×5×5, 40 px tiles, 8·42 − 2 = 334 wide.
    let width = 24 + 334;
    let height = 24 + (24 + 56) + 2 * (24 + 48) + 2 * (24 + 40) + 10 * 4;
    assert!(out.contains(&format!("({width}×{height})")), "{out}");
    check_picture(&output, (width, height));
}

#[test]
fn metrics_plot_and_confusion_matrix() {
    let dir = TempDir::new("plots");
    let (model, metrics) = train(&dir, "2", &[]);
    let plot = dir.join("metrics.png");
    let out = convnet(&["plot", "--output", plot.to_str().unwrap()], &[&metrics]);
    assert!(out.contains("(960×400)"), "{out}");
    check_picture(&plot, (960, 400));

    let heat_map = dir.join("confusion.png");
    let out = convnet(
        &["eval", "--plot", heat_map.to_str().unwrap(), "--checkpoint"],
        &[&model],
    );
    assert!(out.contains("confusion matrix"), "{out}");
    let picture = check_picture(&heat_map, (640, 640));
    // The diagonal is dark blue: most digits are right after two epochs.
    let darkest = picture.pixels().map(|p| p.0[0]).min().unwrap();
    assert!(darkest < 40, "no dark cell: {darkest}");
}

#[test]
fn bad_input_is_one_clear_error() {
    let dir = TempDir::new("picture-errors");
    let good = r#"{"epoch":1,"train_loss":0.5,"train_acc":0.8,"test_loss":0.4,"test_acc":0.85}"#;
    let metrics = dir.join("bad.jsonl");
    std::fs::write(
        &metrics,
        format!("{good}\n{{\"epoch\": 2, \"train_loss\":\n"),
    )
    .unwrap();
    let err = convnet_fails(&["plot"], &[&metrics]);
    assert!(err.contains("bad.jsonl line 2: not JSON"), "{err}");
    let missing = dir.join("missing.jsonl");
    let err = convnet_fails(&["plot"], &[&missing]);
    assert!(
        err.contains("cannot read") && err.contains("missing.jsonl"),
        "{err}"
    );
    let err = convnet_fails(
        &["visualize", "filters", "--checkpoint"],
        &[&dir.join("none.safetensors")],
    );
    assert!(err.contains("none.safetensors"), "{err}");

    // A network without a convolution has no filters and no feature maps.
    let model = dir.join("affine.safetensors");
    convnet(
        &[
            "train",
            "--model",
            "affine(10)",
            "--epochs",
            "1",
            "--threads",
            "2",
            "--save",
        ],
        &[&model],
    );
    let err = convnet_fails(&["visualize", "filters", "--checkpoint"], &[&model]);
    assert!(
        err.ends_with("affine.safetensors has no convolution layer"),
        "{err}"
    );
    let image = dir.join("grey.png");
    GrayImage::from_fn(28, 28, |x, _| Luma([(x * 9) as u8]))
        .save(&image)
        .unwrap();
    let err = convnet_fails(
        &["visualize", "activations", "--checkpoint"],
        &[&model, &image],
    );
    assert!(
        err.ends_with("has no convolution or pooling layer"),
        "{err}"
    );
    // Pictures are PNG only.
    let jpeg = dir.join("out.jpg");
    let err = convnet_fails(
        &[
            "visualize",
            "filters",
            "--output",
            jpeg.to_str().unwrap(),
            "--checkpoint",
        ],
        &[&model],
    );
    assert!(err.contains("written as PNG"), "{err}");
}
