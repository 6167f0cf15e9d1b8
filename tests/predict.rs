//! `convnet predict` on image files the test writes from test digits.

mod common;

use common::{convnet_ok as convnet, TempDir};
use convnet::data::load_embedded_mnist10k;
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::Path;
use std::process::Command;

#[test]
fn predict_reads_digits_from_png_and_jpeg_files() {
    let temp = TempDir::new("predict");
    let dir = temp.path();
    std::fs::create_dir_all(dir.join("plain")).unwrap();
    std::fs::create_dir_all(dir.join("paper")).unwrap();
    let model = dir.join("model.safetensors");
    convnet(
        &["train", "--epochs", "3", "--threads", "2", "--save"],
        &[&model],
    );

    // The first 10 test digits as 28×28 PNGs, and as 84×84 RGB pictures of
    // dark ink on white paper (which predict must shrink, grey and invert).
    let data = load_embedded_mnist10k().unwrap();
    let mut labels = Vec::new();
    for i in 0..10 {
        let pixels = data.test.image(i);
        let byte = |x: u32, y: u32| (pixels[(y * 28 + x) as usize] * 255.0).round() as u8;
        let plain = GrayImage::from_fn(28, 28, |x, y| Luma([byte(x, y)]));
        plain
            .save(dir.join("plain").join(format!("{i}.png")))
            .unwrap();
        let paper = RgbImage::from_fn(84, 84, |x, y| {
            let ink = byte(x / 3, y / 3);
            Rgb([255 - ink, 255 - ink, 255 - ink / 2])
        });
        paper
            .save(dir.join("paper").join(format!("{i}.png")))
            .unwrap();
        labels.push(data.test.labels[i] as usize);
    }
    for folder in ["plain", "paper"] {
        let out = convnet(&["predict", "--checkpoint"], &[&model, &dir.join(folder)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 10, "{out}");
        // "DIR/3.png: 7 (99.1%), 9 (0.5%), 2 (0.2%)": the first class shown is the answer.
        let correct = lines
            .iter()
            .filter(|line| {
                let (file, classes) = line.split_once(": ").unwrap();
                let index: usize = Path::new(file)
                    .file_stem()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let first: usize = classes.split_whitespace().next().unwrap().parse().unwrap();
                first == labels[index]
            })
            .count();
        assert!(correct >= 9, "{folder}: {correct}/10 right\n{out}");
    }

    // A 200×200 colour JPEG that is no digit at all still gets an answer.
    let noise = RgbImage::from_fn(200, 200, |x, y| {
        Rgb([
            (x * 7 % 256) as u8,
            (y * 3 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    let jpeg = dir.join("noise.jpg");
    noise.save(&jpeg).unwrap();
    let out = convnet(
        &["predict", "--json", "--top-k", "2", "--checkpoint"],
        &[&model, &jpeg],
    );
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    let p0 = predictions[0]["probability"].as_f64().unwrap();
    let p1 = predictions[1]["probability"].as_f64().unwrap();
    assert!(p0 >= p1 && p0 + p1 <= 1.0 + 1e-6 && p1 >= 0.0);

    // A file that is not an image: one error line.
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(["predict", "--checkpoint"])
        .arg(&model)
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
