//! Data augmentation: every training image is moved or mirrored a little,
//! differently in every epoch, so that the network sees more variety than
//! the data set holds (the training images are never changed; each
//! mini-batch is augmented after it is cut, in place).
//!
//! | `--augment` | each image, independently |
//! |---|---|
//! | `crop:P` | random crop with zero padding `P`: pad by `P` pixels of 0 on every side, cut an `H×W` window at a random offset, so the image moves by `dy, dx ∈ [−P, P]` (uniform) and the uncovered border is 0 |
//! | `translate:P` | the same move, but the uncovered border repeats the image's edge pixels instead of 0 |
//! | `flip` | mirrored left–right with probability ½ (never for digits: a mirrored 2 is not a 2) |
//!
//! Items combine with commas (`crop:2,flip`); `none` is no augmentation.
//! The random draws of image `k` of a mini-batch come from its own
//! generator, seeded from the batch's seed and `k`
//! ([`Augment::apply`]): a run is reproduced by its seed whatever the
//! number of threads, and a run resumed in the middle of an epoch draws
//! exactly what the uninterrupted run drew.
//!
//! ```
//! use convnet::train::Augment;
//! use convnet::Tensor;
//! let augment: Augment = "crop:2,flip".parse().unwrap();
//! assert_eq!(augment.to_string(), "crop:2,flip");
//! let mut x = Tensor::<f32>::from_vec(&[1, 1, 4, 4], (0..16).map(|v| v as f32).collect()).unwrap();
//! augment.apply(&mut x, 7).unwrap();
//! // The pixels moved (or not), but the batch keeps its shape.
//! assert_eq!(x.shape(), &[1, 1, 4, 4]);
//! ```

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::{Float, Tensor};
use std::fmt;
use std::str::FromStr;

/// What is filled in where a moved image uncovers the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Zeros: the padding of a random crop (`crop:P`).
    Zero,
    /// The nearest edge pixel of the image (`translate:P`).
    Edge,
}

/// A random move of up to `max_shift` pixels in each direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    /// The largest move, in pixels, up, down, left or right.
    pub max_shift: usize,
    /// What fills the uncovered border.
    pub fill: Fill,
}

/// A data augmentation (see the [module](self) documentation). The default
/// changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// A random move of every image, if any.
    pub shift: Option<Shift>,
    /// Mirror each image left–right with probability ½.
    pub flip: bool,
}

impl Augment {
    /// Whether this augmentation changes nothing.
    pub fn is_none(&self) -> bool {
        self.shift.is_none() && !self.flip
    }

    /// Augments every image of the batch `x: (N, C, H, W)` in place: image
    /// `k` with draws from `Rng::new(image_seed(seed, k))`.
    pub fn apply<T: Float>(&self, x: &mut Tensor<T>, seed: u64) -> Result<()> {
        self.apply_at(x, seed, 0)
    }

    /// [`apply`](Self::apply) to a part of a mini-batch that starts at its
    /// image `first` (a shard of it): image `k` of `x` draws what image
    /// `first + k` of the whole batch would.
    pub fn apply_at<T: Float>(&self, x: &mut Tensor<T>, seed: u64, first: usize) -> Result<()> {
        if self.is_none() {
            return Ok(());
        }
        let (n, c, h, w) = x.dims4()?;
        let image_len = c * h * w;
        let mut scratch = vec![T::zero(); image_len];
        for (k, image) in x.data_mut().chunks_exact_mut(image_len).take(n).enumerate() {
            let mut rng = Rng::new(image_seed(seed, first + k));
            let (dy, dx) = match self.shift {
                Some(shift) => {
                    let span = 2 * shift.max_shift + 1;
                    let dy = rng.below(span) as isize - shift.max_shift as isize;
                    let dx = rng.below(span) as isize - shift.max_shift as isize;
                    (dy, dx)
                }
                None => (0, 0),
            };
            let flip = self.flip && rng.below(2) == 1;
            if flip {
                flip_horizontally(image, c, h, w);
            }
            if (dy, dx) != (0, 0) {
                let fill = self.shift.map_or(Fill::Zero, |s| s.fill);
                scratch.copy_from_slice(image);
                shift_image(&scratch, image, c, h, w, dy, dx, fill);
            }
        }
        Ok(())
    }
}

/// The seed of image `k`'s draws in a mini-batch whose seed is `seed`.
fn image_seed(seed: u64, k: usize) -> u64 {
    seed ^ (k as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)
}

/// Mirrors every row of a `(C, H, W)` image: column `x` ↔ `w − 1 − x`.
pub fn flip_horizontally<T: Copy>(image: &mut [T], channels: usize, height: usize, width: usize) {
    for row in image.chunks_exact_mut(width).take(channels * height) {
        row.reverse();
    }
}

/// `dst[c, y, x] = src[c, y − dy, x − dx]`: the image moved down by `dy`
/// and right by `dx` pixels (negative: up, left); pixels whose source is
/// outside the image take `fill`.
#[allow(clippy::too_many_arguments)] // an image and its move: all are needed
pub fn shift_image<T: Float>(
    src: &[T],
    dst: &mut [T],
    channels: usize,
    height: usize,
    width: usize,
    dy: isize,
    dx: isize,
    fill: Fill,
) {
    let (h, w) = (height as isize, width as isize);
    for c in 0..channels {
        let plane = &src[c * height * width..(c + 1) * height * width];
        let out = &mut dst[c * height * width..(c + 1) * height * width];
        for y in 0..h {
            let sy = y - dy;
            for x in 0..w {
                let sx = x - dx;
                let inside = (0..h).contains(&sy) && (0..w).contains(&sx);
                out[(y * w + x) as usize] = match (inside, fill) {
                    (true, _) => plane[(sy * w + sx) as usize],
                    (false, Fill::Zero) => T::zero(),
                    (false, Fill::Edge) => {
                        plane[(sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)) as usize]
                    }
                };
            }
        }
    }
}

impl fmt::Display for Augment {
    /// The form [`FromStr`] reads: `none`, or items joined by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        if let Some(shift) = self.shift {
            let name = match shift.fill {
                Fill::Zero => "crop",
                Fill::Edge => "translate",
            };
            items.push(format!("{name}:{}", shift.max_shift));
        }
        if self.flip {
            items.push("flip".to_string());
        }
        if items.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&items.join(","))
        }
    }
}

/// The largest move `crop:P` and `translate:P` accept: more than this moves
/// a small image out of its own frame.
pub const MAX_SHIFT: usize = 64;

impl FromStr for Augment {
    type Err = Error;

    /// Parses `none` or comma-separated `crop:P`, `translate:P`, `flip`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "augmentation '{s}': {why} (expected none, or crop:P, translate:P and flip joined by commas, e.g. crop:2,flip)"
            ))
        };
        let mut augment = Augment::default();
        if s.trim() == "none" {
            return Ok(augment);
        }
        for item in s.split(',').map(str::trim) {
            let parts: Vec<&str> = item.split(':').collect();
            match parts[..] {
                ["flip"] if !augment.flip => augment.flip = true,
                [name @ ("crop" | "translate"), pixels] if augment.shift.is_none() => {
                    let max_shift: usize = pixels
                        .parse()
                        .map_err(|_| bad(&format!("'{pixels}' is not a number of pixels")))?;
                    if !(1..=MAX_SHIFT).contains(&max_shift) {
                        return Err(bad(&format!("{name} takes 1 to {MAX_SHIFT} pixels")));
                    }
                    let fill = if name == "crop" {
                        Fill::Zero
                    } else {
                        Fill::Edge
                    };
                    augment.shift = Some(Shift { max_shift, fill });
                }
                ["flip"] | ["crop" | "translate", _] => {
                    return Err(bad(&format!("'{item}' repeats a move or a flip")))
                }
                _ => return Err(bad(&format!("unknown item '{item}'"))),
            }
        }
        Ok(augment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, c: usize, h: usize, w: usize) -> Tensor<f64> {
        let data = (0..n * c * h * w).map(|v| v as f64 + 1.0).collect();
        Tensor::from_vec(&[n, c, h, w], data).unwrap()
    }

    #[test]
    fn a_flip_of_a_flip_is_the_identity() {
        let x = ramp(2, 3, 4, 5);
        let mut y = x.clone();
        flip_horizontally(y.data_mut(), 6, 4, 5);
        assert_ne!(y.data(), x.data());
        assert_eq!(y.data()[..5], [5.0, 4.0, 3.0, 2.0, 1.0]);
        flip_horizontally(y.data_mut(), 6, 4, 5);
        assert_eq!(y.data(), x.data());
    }

    #[test]
    fn shifts_move_pixels_and_fill_the_border() {
        // 3×3 image 1..9, moved down 1 and left 1.
        let src: Vec<f64> = (1..=9).map(f64::from).collect();
        let mut dst = vec![0.0; 9];
        shift_image(&src, &mut dst, 1, 3, 3, 1, -1, Fill::Zero);
        assert_eq!(dst, [0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
        shift_image(&src, &mut dst, 1, 3, 3, 1, -1, Fill::Edge);
        assert_eq!(dst, [2.0, 3.0, 3.0, 2.0, 3.0, 3.0, 5.0, 6.0, 6.0]);
        // A move and its opposite give back the inside of the image.
        let mut back = vec![0.0; 9];
        shift_image(&src, &mut dst, 1, 3, 3, 0, 1, Fill::Zero);
        shift_image(&dst, &mut back, 1, 3, 3, 0, -1, Fill::Zero);
        assert_eq!(back, [1.0, 2.0, 0.0, 4.0, 5.0, 0.0, 7.0, 8.0, 0.0]);
    }

    #[test]
    fn the_same_seed_gives_the_same_batch_and_images_draw_independently() {
        let augment: Augment = "crop:2,flip".parse().unwrap();
        let x = ramp(16, 1, 6, 6);
        let (mut a, mut b, mut c) = (x.clone(), x.clone(), x.clone());
        augment.apply(&mut a, 11).unwrap();
        augment.apply(&mut b, 11).unwrap();
        augment.apply(&mut c, 12).unwrap();
        assert_eq!(a.data(), b.data());
        assert_ne!(a.data(), c.data());
        assert_ne!(a.data(), x.data());
        // Image k depends on k and the seed only: the first 5 images of a
        // batch of 5 are those of the batch of 16.
        let mut first = Tensor::from_vec(&[5, 1, 6, 6], x.data()[..5 * 36].to_vec()).unwrap();
        augment.apply(&mut first, 11).unwrap();
        assert_eq!(first.data(), &a.data()[..5 * 36]);
    }

    #[test]
    fn moves_stay_within_the_padding_and_flips_happen_half_the_time() {
        // One bright pixel in the middle of a 9×9 image: where it lands
        // tells the move (and the flip mirrors its column around 4).
        let augment: Augment = "crop:2,flip".parse().unwrap();
        let n = 2000;
        let mut x = Tensor::<f64>::zeros(&[n, 1, 9, 9]);
        for image in x.data_mut().chunks_exact_mut(81) {
            image[4 * 9 + 3] = 1.0;
        }
        augment.apply(&mut x, 5).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for image in x.data().chunks_exact(81) {
            let at = image.iter().position(|&v| v == 1.0).unwrap();
            assert_eq!(image.iter().sum::<f64>(), 1.0);
            let (y, col) = (at / 9, at % 9);
            assert!((2..=6).contains(&y), "row {y}");
            assert!((1..=7).contains(&col), "column {col}");
            seen.insert((y, col));
        }
        // Rows 2..=6 and columns 1..=7 (3 ± 2 and its mirror 5 ± 2): all reached.
        assert_eq!(seen.len(), 5 * 7);
    }

    #[test]
    fn parsing_and_printing_agree_and_nonsense_is_refused() {
        for text in ["none", "flip", "crop:2", "translate:3,flip", "crop:1,flip"] {
            let augment: Augment = text.parse().unwrap();
            assert_eq!(augment.to_string(), text);
        }
        assert_eq!(
            "flip,crop:2".parse::<Augment>().unwrap().to_string(),
            "crop:2,flip"
        );
        for text in [
            "",
            "crop",
            "crop:0",
            "crop:-1",
            "crop:65",
            "crop:2,translate:1",
            "flip,flip",
            "rotate:5",
        ] {
            let err = text.parse::<Augment>().unwrap_err().to_string();
            assert!(err.contains("augmentation"), "{text}: {err}");
        }
        assert!("none".parse::<Augment>().unwrap().is_none());
    }
}
