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
//! | [`tensor`], [`gemm`] | NumPy arrays and `np.dot` |
//! | [`im2col`] | §7.4.3, `common/util.py` |
//! | [`layers`] | ch. 5 (Affine, ReLU, Sigmoid, Softmax-with-Loss), §7.4–7.5 (Convolution, Pooling) |
//! | [`init`] | §6.2 weight initialisation |
//! | [`optim`] | §6.1 SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam |
//! | [`gradient_check`] | §4.4, §5.7 numerical gradient and gradient check |
//! | [`networks`] | §7.5 SimpleConvNet |
//! | [`data`] | §3.6 MNIST |
//! | [`train`] | §4.5, `common/trainer.py` |
//! | [`checkpoint`] | `pickle` of the parameters, as safetensors |
//! | [`visualize`] | §7.6.1 `visualize_filter.py` |

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod gradient_check;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod limits;
pub mod metrics;
pub mod networks;
pub mod optim;
pub mod parallel;
pub mod rng;
pub mod tensor;
pub mod train;
pub mod visualize;

pub use error::{Error, Result};
pub use rng::Rng;
pub use tensor::{Float, Tensor};
