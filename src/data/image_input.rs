//! Preparing an image file for classification (feature `image`, which the
//! default feature `cli` turns on): what `convnet predict` and `convnet
//! visualize activations` do to a PNG or JPEG before the network sees it.
//!
//! Each image (any size and colour) is converted:
//!
//! 1. to the model's channels: grey-scale (luminance) for one channel, RGB
//!    for three;
//! 2. resized to the model's height × width (triangle filter; the aspect
//!    ratio is not kept);
//! 3. for one-channel models (MNIST-style: light strokes on black), an image
//!    whose border is on average lighter than mid-grey is taken to be dark
//!    on light and inverted (`invert` false, `--no-invert`, turns this off);
//! 4. scaled to [0, 1] as in training (`x / 255`).
//!
//! ```
//! use convnet::data::image_input::{from_image, image};
//! // A white 56×56 image with a black square: dark on light, so inverted.
//! let img = image::GrayImage::from_fn(56, 56, |x, y| {
//!     let inside = (20..36).contains(&x) && (20..36).contains(&y);
//!     image::Luma([if inside { 0 } else { 255 }])
//! });
//! let x = from_image(&img.into(), [1, 28, 28], true).unwrap();
//! assert_eq!(x.shape(), [1, 1, 28, 28]);
//! assert_eq!(x.data()[0], 0.0); // the corner: white, inverted to black
//! assert_eq!(x.data()[14 * 28 + 14], 1.0); // the centre: the square, now white
//! ```
//!
//! The `image` crate is re-exported as [`image`], for programs that make or
//! change images themselves.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
pub use image;
use image::imageops::FilterType;
use image::DynamicImage;
use std::path::Path;

/// Reads `path` (PNG or JPEG) and converts it as the [module
/// documentation](self) says, for a network taking images of shape `[c, h,
/// w]` (`Network::input_shape`): a batch of one image, (1, C, H, W), values
/// in [0, 1]. Errors are one line, naming the file.
pub fn load_image(path: &Path, shape: [usize; 3], invert: bool) -> Result<Tensor<f32>> {
    let img = image::open(path).map_err(|e| {
        Error::Data(format!(
            "cannot read image {}: {}",
            path.display(),
            one_line(&e.to_string())
        ))
    })?;
    from_image(&img, shape, invert)
        .map_err(|e| Error::Data(format!("image {}: {}", path.display(), e.detail())))
}

/// Converts an image already in memory as [`load_image`] does.
pub fn from_image(img: &DynamicImage, [c, h, w]: [usize; 3], invert: bool) -> Result<Tensor<f32>> {
    let size = |n: usize| u32::try_from(n).ok().filter(|&n| n > 0);
    let (Some(width), Some(height)) = (size(w), size(h)) else {
        return Err(Error::Config(format!(
            "cannot resize an image to {h}×{w} pixels"
        )));
    };
    let img = img.resize_exact(width, height, FilterType::Triangle);
    let values = match c {
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
            values
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
            values
        }
        other => {
            return Err(Error::Config(format!(
                "models with {other} input channels cannot read images (1: grey, 3: RGB)"
            )))
        }
    };
    Tensor::from_vec(&[1, c, h, w], values)
}

/// `text` on one line: its lines joined by "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_images_become_chw_planes() {
        let img = image::RgbImage::from_fn(4, 2, |x, _| image::Rgb([255, (x * 50) as u8, 0]));
        let x = from_image(&img.into(), [3, 2, 4], true).unwrap();
        assert_eq!(x.shape(), [1, 3, 2, 4]);
        assert!(x.data()[..8].iter().all(|&v| v == 1.0));
        assert!(x.data()[16..].iter().all(|&v| v == 0.0));
        // Never inverted: only one-channel models are.
        assert_eq!(x.data()[8], 0.0);
    }

    #[test]
    fn errors_are_one_line_and_name_the_file() {
        let dir = std::env::temp_dir().join(format!("convnet-image-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("not-an-image.png");
        std::fs::write(&bad, b"these bytes are no PNG\n\nat all\n").unwrap();
        let missing = dir.join("missing.png");
        for path in [&bad, &missing] {
            let err = load_image(path, [1, 28, 28], true).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let grey: DynamicImage = image::GrayImage::new(3, 3).into();
        let err = from_image(&grey, [2, 28, 28], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 input channels"), "{err}");
        assert!(from_image(&grey, [1, 0, 28], true).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\n\n  b  \nc"), "a; b; c");
    }
}
