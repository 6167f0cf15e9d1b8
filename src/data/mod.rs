//! Data sets (§3.6 of the book): MNIST-style IDX files, turned into
//! [`Dataset`]s of `(C, H, W)` images with pixels in `[0, 1]`, and cut into
//! `(N, C, H, W)` mini-batches.
//!
//! | module | what |
//! |---|---|
//! | [`idx`] | parsing IDX image (`0x00000803`) and label (`0x00000801`) files, raw or gzipped |
//! | [`dataset`] | [`Dataset`] (images + labels) with [`Dataset::batch_into`], and [`TrainTest`] |
//! | [`mnist`] | [`load_idx_dir`] for an MNIST / Fashion-MNIST folder, [`load_embedded_mnist10k`] |
//! | [`cifar10`] | the CIFAR-10 binary batches (3×32×32 colour) |
//! | [`catalog`] | the named sets (`mnist`, `fashion-mnist`, `cifar10`, `mnist-10k`): URLs, sizes, SHA-256 |
//! | `download` | one file over HTTP(S), verified, renamed into place (feature `download`) |
//! | `cache` | the cache folder; load a set by name, downloading what is missing (feature `download`) |
//! | `image_input` | a PNG/JPEG file as a network's input (feature `image`) |
//!
//! The library carries 10,000 real MNIST digits (8,004 train, 1,996 test;
//! see `data/mnist-10k/README.md`), so examples and tests need no download:
//!
//! ```
//! use convnet::data::load_embedded_mnist10k;
//! use convnet::Tensor;
//!
//! let set = load_embedded_mnist10k().unwrap();
//! let (mut x, mut t) = (Tensor::<f32>::zeros(&[0]), Vec::new());
//! set.train.batch_into(&[0, 1, 2, 3], &mut x, &mut t);
//! assert_eq!(x.shape(), &[4, 1, 28, 28]);
//! assert!(x.data().iter().all(|&p| (0.0..=1.0).contains(&p)));
//! assert!(t.iter().all(|&label| label < 10));
//! ```

#[cfg(feature = "download")]
pub mod cache;
pub mod catalog;
pub mod cifar10;
pub mod dataset;
#[cfg(feature = "download")]
pub mod download;
pub mod idx;
#[cfg(feature = "image")]
pub mod image_input;
pub mod mnist;

pub use dataset::{byte_value, Dataset, Pixels, TrainTest};
pub use mnist::{load_embedded_mnist10k, load_idx_dir};

/// Reads a data folder: CIFAR-10 binary batches if it has `data_batch_1.bin`,
/// otherwise MNIST-format IDX files.
pub fn load_dir(dir: &std::path::Path) -> crate::Result<TrainTest> {
    if cifar10::is_cifar10_dir(dir) {
        cifar10::load_cifar10_dir(dir)
    } else {
        load_idx_dir(dir)
    }
}
