//! Reading an image file as a network's input, for `convnet predict` and
//! `convnet visualize activations`.
//!
//! Each image (PNG or JPEG, any size and colour) is converted:
//!
//! 1. to the model's channels: grey-scale (luminance) for one channel, RGB
//!    for three;
//! 2. resized to the model's height × width (triangle filter; the aspect
//!    ratio is not kept);
//! 3. for one-channel models (MNIST-style: light strokes on black), an image
//!    whose border is on average lighter than mid-grey is taken to be dark
//!    on light and inverted (`--no-invert` turns this off);
//! 4. scaled to [0, 1] as in training (`x / 255`).

use anyhow::Context;
use image::imageops::FilterType;
use std::path::Path;

/// Reads `path` and converts it as the module documentation says:
/// (C, H, W) values in [0, 1].
pub fn load_image(path: &Path, [c, h, w]: [usize; 3], invert: bool) -> anyhow::Result<Vec<f32>> {
    let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let img = img.resize_exact(w as u32, h as u32, FilterType::Triangle);
    match c {
        1 => {
            let grey = img.to_luma8();
            let mut values: Vec<f32> = grey.pixels().map(|p| p.0[0] as f32 / 255.0).collect();
            let border: Vec<f32> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (y, x)))
                .filter(|&(y, x)| y == 0 || x == 0 || y == h - 1 || x == w - 1)
                .map(|(y, x)| values[y * w + x])
                .collect();
            let border_mean = border.iter().sum::<f32>() / border.len().max(1) as f32;
            if invert && border_mean > 0.5 {
                values.iter_mut().for_each(|v| *v = 1.0 - *v);
            }
            Ok(values)
        }
        3 => {
            let rgb = img.to_rgb8();
            // HWC bytes → CHW values.
            let mut values = vec![0.0; 3 * h * w];
            for (i, p) in rgb.pixels().enumerate() {
                for ch in 0..3 {
                    values[ch * h * w + i] = p.0[ch] as f32 / 255.0;
                }
            }
            Ok(values)
        }
        other => anyhow::bail!("models with {other} input channels cannot read images"),
    }
}
