//! A drawn digit made to look like an MNIST one.
//!
//! MNIST's digits were prepared this way (LeCun et al.): the strokes' bounding
//! box is scaled, keeping its aspect ratio, so that its longer side is 20
//! pixels, with anti-aliasing; the 20×20 box is then placed in a 28×28 image
//! so that its centre of mass lies at the image's centre. A digit drawn on the
//! page in a large canvas goes through the same steps before it enters the
//! network, and the page shows the result.
//!
//! ```
//! use convnet::serve::preprocess::mnist_style;
//! // A 10×40 bar in the corner of a 100×100 drawing ...
//! let mut pixels = vec![0.0f32; 100 * 100];
//! for y in 0..40 {
//!     for x in 0..10 {
//!         pixels[y * 100 + x] = 1.0;
//!     }
//! }
//! let image = mnist_style(&pixels, 100, 100).unwrap();
//! // ... becomes a 5×20 bar in the middle of 28×28.
//! assert_eq!(image.len(), 28 * 28);
//! assert_eq!(image[14 * 28 + 14], 1.0);
//! assert_eq!(image[14 * 28 + 2], 0.0);
//! ```

use crate::error::{Error, Result};

/// The side of the box the digit is scaled into.
pub const BOX: usize = 20;
/// The side of the output image.
pub const SIDE: usize = 28;
/// Pixels at or below this value count as background for the bounding box.
const BACKGROUND: f32 = 0.02;

/// Resamples `len` values into `new_len` by area averaging: each output value
/// is the mean of the input over the interval it covers (fractional overlaps
/// weighted), which anti-aliases when shrinking.
fn area_weights(len: usize, new_len: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = len as f64 / new_len as f64;
    (0..new_len)
        .map(|o| {
            let (start, end) = (o as f64 * scale, (o + 1) as f64 * scale);
            let mut weights = Vec::new();
            let mut i = start.floor() as usize;
            while (i as f64) < end && i < len {
                let overlap = (end.min(i as f64 + 1.0) - start.max(i as f64)).max(0.0);
                if overlap > 0.0 {
                    weights.push((i, (overlap / scale) as f32));
                }
                i += 1;
            }
            weights
        })
        .collect()
}

/// Converts a drawing (`width × height` values, 0 background, 1 ink, row by
/// row) into a 28×28 MNIST-style image (see the module documentation). An
/// empty drawing gives an empty image. An error if the sizes do not match
/// or a value is not finite.
pub fn mnist_style(pixels: &[f32], width: usize, height: usize) -> Result<Vec<f32>> {
    if width == 0 || height == 0 || pixels.len() != width * height {
        return Err(Error::Shape(format!(
            "a drawing of {width}×{height} needs {} values, got {}",
            width * height,
            pixels.len()
        )));
    }
    if pixels.iter().any(|v| !v.is_finite()) {
        return Err(Error::Data("drawing values must be finite numbers".into()));
    }
    let ink = |v: f32| v.clamp(0.0, 1.0);
    // 1. The bounding box of the strokes.
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..height {
        for x in 0..width {
            if ink(pixels[y * width + x]) > BACKGROUND {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x + 1);
                y1 = y1.max(y + 1);
            }
        }
    }
    let mut out = vec![0.0f32; SIDE * SIDE];
    if x0 == usize::MAX {
        return Ok(out);
    }
    let (bw, bh) = (x1 - x0, y1 - y0);
    // 2. Scaled so that the longer side is 20 pixels, area-averaged.
    let scale = BOX as f64 / bw.max(bh) as f64;
    let nw = ((bw as f64 * scale).round() as usize).clamp(1, BOX);
    let nh = ((bh as f64 * scale).round() as usize).clamp(1, BOX);
    let (wx, wy) = (area_weights(bw, nw), area_weights(bh, nh));
    // Rows first: (bh, nw), then columns: (nh, nw).
    let mut rows = vec![0.0f32; bh * nw];
    for y in 0..bh {
        let src = &pixels[(y0 + y) * width + x0..(y0 + y) * width + x1];
        for (ox, weights) in wx.iter().enumerate() {
            rows[y * nw + ox] = weights.iter().map(|&(i, w)| w * ink(src[i])).sum();
        }
    }
    let mut small = vec![0.0f32; nh * nw];
    for (oy, weights) in wy.iter().enumerate() {
        for ox in 0..nw {
            let v: f32 = weights.iter().map(|&(i, w)| w * rows[i * nw + ox]).sum();
            small[oy * nw + ox] = v.clamp(0.0, 1.0);
        }
    }
    // 3. Centred by centre of mass: the mass's centre (in pixel-centre
    // coordinates) goes to the image's centre, 13.5.
    let mass: f64 = small.iter().map(|&v| v as f64).sum();
    let (mut cx, mut cy) = (0.0f64, 0.0f64);
    for y in 0..nh {
        for x in 0..nw {
            let v = small[y * nw + x] as f64;
            cx += v * x as f64;
            cy += v * y as f64;
        }
    }
    let centre = (SIDE as f64 - 1.0) / 2.0;
    let (dx, dy) = if mass > 0.0 {
        (
            (centre - cx / mass).round() as isize,
            (centre - cy / mass).round() as isize,
        )
    } else {
        (((SIDE - nw) / 2) as isize, ((SIDE - nh) / 2) as isize)
    };
    for y in 0..nh {
        for x in 0..nw {
            let (ty, tx) = (y as isize + dy, x as isize + dx);
            if (0..SIDE as isize).contains(&ty) && (0..SIDE as isize).contains(&tx) {
                out[ty as usize * SIDE + tx as usize] = small[y * nw + x];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn centre_of_mass(image: &[f32]) -> (f64, f64) {
        let mass: f64 = image.iter().map(|&v| v as f64).sum();
        let (mut cx, mut cy) = (0.0, 0.0);
        for (i, &v) in image.iter().enumerate() {
            cx += v as f64 * (i % SIDE) as f64;
            cy += v as f64 * (i / SIDE) as f64;
        }
        (cx / mass, cy / mass)
    }

    fn bounding_box(image: &[f32]) -> (usize, usize) {
        let inked: Vec<usize> = (0..image.len()).filter(|&i| image[i] > 0.0).collect();
        let xs = inked.iter().map(|i| i % SIDE);
        let ys = inked.iter().map(|i| i / SIDE);
        (
            xs.clone().max().unwrap() - xs.min().unwrap() + 1,
            ys.clone().max().unwrap() - ys.min().unwrap() + 1,
        )
    }

    /// An off-centre ring ends up 20 pixels across, centred by mass, values in [0, 1].
    #[test]
    fn a_ring_in_a_corner_is_scaled_to_20_and_centred() {
        let (w, h) = (200, 150);
        let mut pixels = vec![0.0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let r = ((x as f64 - 40.0).powi(2) + (y as f64 - 50.0).powi(2)).sqrt();
                if (25.0..33.0).contains(&r) {
                    pixels[y * w + x] = 1.0;
                }
            }
        }
        let image = mnist_style(&pixels, w, h).unwrap();
        assert_eq!(bounding_box(&image), (20, 20));
        let (cx, cy) = centre_of_mass(&image);
        assert!(
            (cx - 13.5).abs() <= 0.5 && (cy - 13.5).abs() <= 0.5,
            "{cx} {cy}"
        );
        assert!(image.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // Anti-aliased: the ring's edges are grey.
        assert!(image.iter().any(|&v| v > 0.05 && v < 0.95));
    }

    /// A tall stroke keeps its aspect ratio: 20 high, narrow.
    #[test]
    fn the_aspect_ratio_is_kept() {
        let (w, h) = (100, 100);
        let mut pixels = vec![0.0f32; w * h];
        for y in 10..90 {
            for x in 60..68 {
                pixels[y * w + x] = 1.0;
            }
        }
        let image = mnist_style(&pixels, w, h).unwrap();
        assert_eq!(bounding_box(&image), (2, 20));
    }

    #[test]
    fn empty_and_bad_drawings() {
        assert!(mnist_style(&[0.0; 16], 4, 4)
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        assert!(mnist_style(&[0.0; 15], 4, 4).is_err());
        assert!(mnist_style(&[], 0, 0).is_err());
        assert!(mnist_style(&[f32::NAN; 4], 2, 2).is_err());
    }
}
