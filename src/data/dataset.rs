//! An in-memory image classification data set, and mini-batches cut from it.
//!
//! A [`Dataset`] holds `len()` images of shape `(C, H, W)` as one flat
//! vector, image after image, each image channel-major then row-major (the
//! NCHW layout of [`Tensor`]), with pixels in `[0, 1]`, and one label byte
//! per image. The pixels of MNIST and CIFAR-10 stay the bytes of their
//! files ([`Pixels::Bytes`], read as `byte / 255`, the book's
//! `normalize=True`), a quarter of the memory of `f32`s: they become floats
//! one mini-batch at a time. Any other values are kept as `f32`
//! ([`Pixels::Floats`]).
//! [`Dataset::batch_into`] copies chosen examples into an `(N, C, H, W)`
//! tensor and a label vector, reusing their allocations, so a training loop
//! allocates nothing per batch. A [`TrainTest`] pairs a training and a test
//! set with the names of their classes.
//!
//! ```
//! use convnet::data::Dataset;
//! use convnet::Tensor;
//!
//! // Three 1x2x2 images whose pixels are all 0.0, 0.5 and 1.0.
//! let images = vec![0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0];
//! let data = Dataset::new(images, vec![2, 0, 1], 1, 2, 2, 3).unwrap();
//! assert_eq!((data.len(), data.input_shape()), (3, [1, 2, 2]));
//!
//! let (mut x, mut t) = (Tensor::<f32>::zeros(&[0]), Vec::new());
//! data.batch_into(&[2, 0], &mut x, &mut t);
//! assert_eq!(x.shape(), &[2, 1, 2, 2]);
//! assert_eq!(x.data(), &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
//! assert_eq!(t, vec![1, 2]);
//! ```

use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// The pixels of a [`Dataset`], image after image (NCHW order).
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    /// Bytes, each meaning `byte / 255` (as `f32`): the pixels of MNIST-style
    /// and CIFAR-10 files, kept as they were read.
    Bytes(Vec<u8>),
    /// Values as they are.
    Floats(Vec<f32>),
}

impl Pixels {
    /// The number of pixels.
    pub fn len(&self) -> usize {
        match self {
            Pixels::Bytes(b) => b.len(),
            Pixels::Floats(f) => f.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels `range` as `f32` (borrowed when they are floats already).
    pub fn floats(&self, range: std::ops::Range<usize>) -> Cow<'_, [f32]> {
        match self {
            Pixels::Bytes(b) => Cow::Owned(b[range].iter().map(|&v| byte_value(v)).collect()),
            Pixels::Floats(f) => Cow::Borrowed(&f[range]),
        }
    }

    /// Pixels `range` (a copy of that part only).
    fn slice(&self, range: std::ops::Range<usize>) -> Pixels {
        match self {
            Pixels::Bytes(b) => Pixels::Bytes(b[range].to_vec()),
            Pixels::Floats(f) => Pixels::Floats(f[range].to_vec()),
        }
    }
}

/// The value of a pixel byte: `byte / 255` in `f32`, the scaling the data
/// set readers have always used (so results do not depend on how a set is
/// kept).
pub fn byte_value(byte: u8) -> f32 {
    f32::from(byte) / 255.0
}

/// Images with `channels x height x width` pixels in `[0, 1]` and a class label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `len() * channels * height * width` pixels, NCHW order.
    pub pixels: Pixels,
    /// One class index (`< num_classes`) per image.
    pub labels: Vec<u8>,
    /// C: channels per image (1 for grey, 3 for RGB).
    pub channels: usize,
    /// H: image height in pixels.
    pub height: usize,
    /// W: image width in pixels.
    pub width: usize,
    /// Number of classes; every label is below it.
    pub num_classes: usize,
}

impl Dataset {
    /// Builds a data set, checking that the dimensions are positive, that
    /// `images` holds exactly `labels.len()` images and that every label is
    /// below `num_classes`.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
        num_classes: usize,
    ) -> Result<Self> {
        Self::with_pixels(
            Pixels::Floats(images),
            labels,
            channels,
            height,
            width,
            num_classes,
        )
    }

    /// [`new`](Self::new) for pixels kept as bytes (`byte / 255`).
    pub fn from_bytes(
        bytes: Vec<u8>,
        labels: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
        num_classes: usize,
    ) -> Result<Self> {
        Self::with_pixels(
            Pixels::Bytes(bytes),
            labels,
            channels,
            height,
            width,
            num_classes,
        )
    }

    /// [`new`](Self::new) for either kind of [`Pixels`].
    pub fn with_pixels(
        images: Pixels,
        labels: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
        num_classes: usize,
    ) -> Result<Self> {
        if channels == 0 || height == 0 || width == 0 || num_classes == 0 {
            return Err(Error::Shape(format!(
                "data set needs positive dimensions, got {channels}x{height}x{width} images \
                 and {num_classes} classes"
            )));
        }
        let needed = channels
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width))
            .and_then(|n| n.checked_mul(labels.len()));
        if needed != Some(images.len()) {
            let needed = needed.map_or_else(|| "too many".to_string(), |n| n.to_string());
            return Err(Error::Shape(format!(
                "{} labels need {needed} pixels of {channels}x{height}x{width} images, got {}",
                labels.len(),
                images.len()
            )));
        }
        if let Some((i, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= num_classes)
        {
            return Err(Error::Data(format!(
                "label {label} of example {i} is out of range for {num_classes} classes"
            )));
        }
        Ok(Dataset {
            pixels: images,
            labels,
            channels,
            height,
            width,
            num_classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image (`channels * height * width`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (CHW order), as `f32`. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> Cow<'_, [f32]> {
        let len = self.image_len();
        self.pixels.floats(i * len..(i + 1) * len)
    }

    /// `[channels, height, width]`: the shape of one input to a network.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Fills `x` with the images at `indices`, shape `(indices.len(), C, H, W)`,
    /// and `labels` with their labels, reusing both allocations (nothing is
    /// allocated once they have held a batch this large).
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn batch_into<T: Float>(
        &self,
        indices: &[usize],
        x: &mut Tensor<T>,
        labels: &mut Vec<usize>,
    ) {
        let len = self.image_len();
        x.resize(&[indices.len(), self.channels, self.height, self.width]);
        // One image per task: the images lie scattered over the whole set,
        // and their reads wait on memory, so both cores wait at once.
        let byte_values: [T; 256] =
            std::array::from_fn(|b| T::cast(f64::from(byte_value(b as u8))));
        x.data_mut()
            .par_chunks_mut(len.max(1))
            .zip(indices.par_iter())
            .for_each(|(dst, &i)| {
                let src = i * len..(i + 1) * len;
                match &self.pixels {
                    Pixels::Bytes(bytes) => {
                        for (d, &b) in dst.iter_mut().zip(&bytes[src]) {
                            *d = byte_values[usize::from(b)];
                        }
                    }
                    Pixels::Floats(floats) => {
                        for (d, &s) in dst.iter_mut().zip(&floats[src]) {
                            *d = T::cast(f64::from(s));
                        }
                    }
                }
            });
        labels.clear();
        labels.extend(indices.iter().map(|&i| self.labels[i] as usize));
    }

    /// A copy of the first `count` examples (all of them if `count >= len()`).
    pub fn subset(&self, count: usize) -> Dataset {
        let count = count.min(self.len());
        Dataset {
            pixels: self.pixels.slice(0..count * self.image_len()),
            labels: self.labels[..count].to_vec(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        }
    }

    /// How many examples each class has (`num_classes` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// A named pair of training and test sets with the names of their classes.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainTest {
    /// The set's name (for MNIST-style folders, the folder name).
    pub name: String,
    /// The training set (the book's `x_train`, `t_train`).
    pub train: Dataset,
    /// The test set (the book's `x_test`, `t_test`).
    pub test: Dataset,
    /// `class_names[k]` names label `k`.
    pub class_names: Vec<String>,
}

impl TrainTest {
    /// A short fingerprint of the set, stored in checkpoints so that
    /// `convnet train --resume` can tell that it is given the data the run
    /// started on: FNV-1a (64 bits) over the image shape, the class names and
    /// every label of both parts, in order. Cheap (the labels, not the
    /// pixels) and enough to tell MNIST, Fashion-MNIST, CIFAR-10, the
    /// embedded digits and most folders apart.
    ///
    /// ```
    /// let digits = convnet::data::load_embedded_mnist10k().unwrap();
    /// assert_eq!(digits.fingerprint(), digits.fingerprint());
    /// assert_eq!(digits.fingerprint().len(), 16);
    /// ```
    pub fn fingerprint(&self) -> String {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut hash = OFFSET;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
            }
        };
        for dim in self.train.input_shape() {
            eat(&(dim as u64).to_le_bytes());
        }
        for name in &self.class_names {
            eat(name.as_bytes());
            eat(&[0]);
        }
        for part in [&self.train, &self.test] {
            eat(&(part.len() as u64).to_le_bytes());
            for &label in &part.labels {
                eat(&[label]);
            }
        }
        format!("{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four 2x2x3 images; pixel `p` of image `i` is `(10 * i + p) / 100`.
    fn tiny() -> Dataset {
        let images = (0..4)
            .flat_map(|i| (0..12).map(move |p| (10 * i + p) as f32 / 100.0))
            .collect();
        Dataset::new(images, vec![3, 1, 4, 0], 2, 2, 3, 5).unwrap()
    }

    #[test]
    fn new_validates() {
        let d = tiny();
        assert_eq!(
            (d.len(), d.image_len(), d.input_shape()),
            (4, 12, [2, 2, 3])
        );
        assert!(!d.is_empty());
        assert_eq!(d.image(3)[0], 0.3);
        assert_eq!(d.class_counts(), vec![1, 1, 0, 1, 1]);
        assert!(matches!(
            Dataset::new(vec![0.0; 11], vec![0], 1, 3, 4, 2),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Dataset::new(vec![0.0; 12], vec![0], 0, 3, 4, 2),
            Err(Error::Shape(_))
        ));
        match Dataset::new(vec![0.0; 24], vec![1, 2], 1, 3, 4, 2) {
            Err(Error::Data(msg)) => assert!(msg.contains("label 2 of example 1"), "{msg}"),
            other => panic!("expected a label error, got {other:?}"),
        }
        let empty = Dataset::new(Vec::new(), Vec::new(), 1, 28, 28, 10).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn batch_into_picks_chosen_examples() {
        let d = tiny();
        let mut x = Tensor::<f64>::zeros(&[0]);
        let mut t = Vec::new();
        d.batch_into(&[2, 0, 2], &mut x, &mut t);
        assert_eq!(x.shape(), &[3, 2, 2, 3]);
        assert_eq!(t, vec![4, 3, 4]);
        for (k, &i) in [2usize, 0, 2].iter().enumerate() {
            for p in 0..12 {
                let want = f64::from((10 * i + p) as f32 / 100.0);
                assert_eq!(x.data()[k * 12 + p], want);
            }
        }

        // A smaller batch next reuses the buffers and leaves no stale data.
        let (x_ptr, t_ptr) = (x.data().as_ptr(), t.as_ptr());
        d.batch_into(&[3], &mut x, &mut t);
        assert_eq!(x.shape(), &[1, 2, 2, 3]);
        assert_eq!(x.data()[0], f64::from(0.3f32));
        assert_eq!(t, vec![0]);
        assert_eq!((x.data().as_ptr(), t.as_ptr()), (x_ptr, t_ptr));

        d.batch_into(&[], &mut x, &mut t);
        assert_eq!((x.shape(), t.len()), (&[0, 2, 2, 3][..], 0));
    }

    #[test]
    fn subset_takes_the_first_examples() {
        let d = tiny();
        let s = d.subset(2);
        assert_eq!(s.len(), 2);
        assert_eq!(s.labels, vec![3, 1]);
        assert_eq!(s.image(1), d.image(1));
        assert_eq!(d.subset(100), d);
    }

    #[test]
    fn bytes_read_as_the_floats_they_stand_for() {
        // Four 1×8×8 images: every byte value once, in a shuffled order.
        let bytes: Vec<u8> = (0..=255u8).map(|v| v.wrapping_mul(77)).collect();
        let floats: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 255.0).collect();
        let b = Dataset::from_bytes(bytes, vec![3, 1, 4, 0], 1, 8, 8, 5).unwrap();
        let f = Dataset::new(floats, vec![3, 1, 4, 0], 1, 8, 8, 5).unwrap();
        assert_eq!(b.image(2), f.image(2));
        assert_eq!(b.subset(3).image(2), f.image(2));
        let (mut xb, mut xf) = (Tensor::<f64>::zeros(&[0]), Tensor::<f64>::zeros(&[0]));
        let (mut tb, mut tf) = (Vec::new(), Vec::new());
        b.batch_into(&[3, 0, 2, 1], &mut xb, &mut tb);
        f.batch_into(&[3, 0, 2, 1], &mut xf, &mut tf);
        assert_eq!((xb.data(), &tb), (xf.data(), &tf));
        let (mut xb32, mut xf32) = (Tensor::<f32>::zeros(&[0]), Tensor::<f32>::zeros(&[0]));
        b.batch_into(&[1, 2, 0, 3], &mut xb32, &mut tb);
        f.batch_into(&[1, 2, 0, 3], &mut xf32, &mut tf);
        assert_eq!(xb32.data(), xf32.data());
        assert_eq!(byte_value(255), 1.0);
        assert!(Dataset::from_bytes(vec![0; 11], vec![0], 1, 3, 4, 2).is_err());
    }
}
