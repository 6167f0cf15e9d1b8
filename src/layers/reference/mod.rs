//! The book's convolution and max pooling layers as the book writes them
//! (§7.4.3 `Convolution`, §7.4.4 `Pooling`): im2col, one matrix product or
//! one maximum per window, col2im. Each file fits on a screen next to the
//! book.
//!
//! [`layers::Convolution`](crate::layers::Convolution) and
//! [`layers::MaxPooling`](crate::layers::MaxPooling) compute the same
//! functions, made fast; these are what they are tested against, and a
//! network can run with them instead
//! ([`Network::use_reference_layers`](crate::networks::Network::use_reference_layers),
//! `convnet train --reference`). Their parameters have the same names and
//! shapes, so a checkpoint loads into either.
//!
//! ```
//! use convnet::layers::{reference, Layer, PoolingConfig};
//! use convnet::Tensor;
//! let weight = Tensor::<f32>::zeros(&[30, 1, 5, 5]);
//! let mut conv = reference::Convolution::from_params(weight, Tensor::zeros(&[30]), 1, 0).unwrap();
//! let mut pool = reference::MaxPooling::new(&PoolingConfig::default());
//! let out = conv.forward(&Tensor::zeros(&[2, 1, 28, 28]), true).unwrap();
//! assert_eq!(pool.forward(out, true).unwrap().shape(), [2, 30, 12, 12]);
//! ```

pub mod convolution;
pub mod pooling;

pub use convolution::Convolution;
pub use pooling::MaxPooling;

#[cfg(test)]
mod tests;
