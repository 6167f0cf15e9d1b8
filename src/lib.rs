//! # convnet
//!
//! Convolutional neural networks built from scratch, the way *Deep Learning
//! from Scratch* (밑바닥부터 시작하는 딥러닝) chapter 7 builds them: every layer
//! writes its own forward and backward pass, convolution works through
//! im2col/col2im, and networks are trained by mini-batch gradient descent.
//!
//! The modules follow the book:
//!
//! | module | book |
//! |---|---|
//! | [`tensor`] | NumPy arrays |
//! | [`kernels`] | `np.dot` (GEMM), §7.4.3 im2col/col2im (`common/util.py`), transposes |
//! | [`layers`] | ch. 5 (Affine, ReLU, Sigmoid, Softmax-with-Loss), §7.4–7.5 (Convolution, Pooling) |
//! | [`init`] | §6.2 weight initialisation |
//! | [`optim`] | §6.1 SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam |
//! | [`gradient_check`] | §4.4, §5.7 numerical gradient and gradient check |
//! | [`networks`] | §7.5 SimpleConvNet, and any sequential CNN from a spec |
//! | [`data`] | §3.6 MNIST |
//! | [`train`] | §4.5, `common/trainer.py` |
//! | [`checkpoint`] | `pickle` of the parameters, as safetensors |
//! | [`visualize`] | §7.6.1 `visualize_filter.py` |
//! | [`parallel`] | (not in the book) spreading the work over the cores |
//! | [`distributed`] | (not in the book) data-parallel training, in shards and over MPI (feature `mpi`) |
//! | [`rng`] | `np.random`: a seeded generator, so runs repeat |
//! | [`error`] | (not in the book) every failure as an [`Error`] |
//! | `onnx` (feature `onnx`) | (not in the book) ONNX export and import |
//! | `serve` (feature `serve`) | the web page of `convnet serve`: every layer's output, live |
//!
//! ## Use it as a library
//!
//! ```toml
//! [dependencies]
//! # Without the command-line tool's dependencies (clap, image, plotters, ...):
//! convnet = { version = "0.1", default-features = false }
//!
//! # Build convnet optimised in your debug builds too: unoptimised, its
//! # layers train tens of times slower.
//! [profile.dev.package.convnet]
//! opt-level = 3
//! ```
//!
//! Cargo features: `cli` (the default: the `convnet` program; turns on the
//! others), `download` (fetching MNIST, Fashion-MNIST and CIFAR-10 into a
//! cache folder, `data::cache`), `image` (reading PNG/JPEG files as a
//! network's input, `data::image_input`), `onnx` (ONNX export and import,
//! `onnx`), `serve` (the web page of `convnet serve`, `serve`); off by
//! default, `mpi` (data-parallel training under `mpirun`,
//! `distributed::mpi`; needs Open MPI and libclang).
//!
//! Build a network (by name, from a [spec](networks::spec), or layer by layer
//! with [`Network::push`](networks::Network::push)), train it, and predict:
//!
//! ```
//! use convnet::data::{load_embedded_mnist10k, TrainTest};
//! use convnet::networks::{build_model, ModelOptions};
//! use convnet::train::{train, Progress, TrainConfig};
//! use convnet::{Rng, Tensor};
//!
//! # fn main() -> convnet::Result<()> {
//! // The 10,000 MNIST digits in the library; 2,500 of them keep this quick.
//! let digits = load_embedded_mnist10k()?;
//! let data = TrainTest {
//!     name: "2,500 digits".into(),
//!     train: digits.train.subset(2000),
//!     test: digits.test.subset(500),
//!     class_names: digits.class_names.clone(),
//! };
//! let spec = "conv(8,5)-relu-maxpool(2)-affine(10)";
//! let mut net = build_model::<f32>(spec, &ModelOptions::default(), [1, 28, 28], 10, &mut Rng::new(1))?;
//!
//! // Two epochs of Adam on batches of 25; the other settings are `convnet train`'s.
//! let config = TrainConfig { epochs: 2, batch_size: 25, ..TrainConfig::default() };
//! let history = train(&mut net, &data, &config, |event, _net| {
//!     if let Progress::Epoch(m) = event {
//!         println!("epoch {}: test accuracy {:.1}%", m.epoch, 100.0 * m.test_acc);
//!     }
//!     Ok(())
//! })?;
//! assert!(history[1].test_acc > 0.8);
//!
//! // The class of the first test digit: the largest of its ten scores.
//! let (mut x, mut labels) = (Tensor::default(), Vec::new());
//! data.test.batch_into(&[0], &mut x, &mut labels);
//! let scores = net.predict(&x, false)?; // (1, 10)
//! let predicted = (0..10).max_by(|&a, &b| scores.data()[a].total_cmp(&scores.data()[b])).unwrap();
//! println!("predicted {predicted}, labelled {}", labels[0]);
//! # Ok(())
//! # }
//! ```
//!
//! `train` runs on a thread pool whose workers flush subnormal floats to
//! zero and stay awake between the layers' parallel loops
//! ([`parallel::run_fast`]), as the `convnet` program does; `threads` in
//! [`TrainConfig`](train::TrainConfig) sets their number. The `examples/`
//! folder has more: a network built layer by layer (`train_in_code`), a
//! checkpoint and an image file (`classify_image`), a layer of your own
//! (`custom_layer`); [`checkpoint`] saves and loads networks.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod distributed;
pub mod error;
pub mod gradient_check;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod limits;
pub mod metrics;
pub mod networks;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod optim;
pub mod parallel;
pub mod rng;
#[cfg(feature = "serve")]
pub mod serve;
pub mod tensor;
pub mod train;
pub mod visualize;

pub use error::{Error, Result};
pub use rng::Rng;
pub use tensor::{Float, Tensor};
