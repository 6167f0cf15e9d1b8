//! The pure numeric kernels that make the layers fast: free functions on
//! slices, with no layers, no threads of their own and no state. Each has
//! property tests against a plain definition next to it.
//!
//! | module | what | book |
//! |---|---|---|
//! | [`bn_sums`] | a 4-D batch norm's sums over one block, forward and backward (f32, AVX-512) | §6.3 |
//! | [`direct_conv`] | a stride-1 convolution's product computed from the padded image, without `col` (f32, AVX-512) | §7.4.3 |
//! | [`direct_dw`] | a stride-1 convolution's weight gradient from the padded image, without `col`, for layers with few channels (f32, AVX-512) | §7.4.3 |
//! | [`gemm`] | the matrix product `C = A·B` on strided views (the one place the `gemm` crate is called) | `np.dot` |
//! | [`gemv`] | one row vector times a matrix (an affine layer at batch 1), its columns in register blocks | `np.dot` |
//! | [`im2col`] | the book's im2col/col2im, the output-size formula, [`ConvGeometry`](im2col::ConvGeometry) | §7.4.3, `common/util.py` |
//! | [`im2col_wide`] | im2col over a zero-padded image, one row of patches per padded pixel (the fast convolution's layout) | — |
//! | [`math`] | `exp`, `tanh` and the sigmoid for f32 without library calls, which the compiler vectorises | `np.exp` |
//! | [`reduce`] | sums in a fixed order of interleaved partial sums, which the compiler vectorises | `np.sum` |
//! | [`row_product`] | the channels-last weight gradient's product, `out += wide · X` with `X`'s overlapping rows read in place (f32, AVX-512) | §7.4.3 |
//! | [`vectorize`] | element-wise loops compiled for AVX-512, AVX2 and SSE2, the widest the CPU has chosen when called | — |
//! | [`winograd`] | Winograd's F(4×4, 3×3): a 3×3 stride-1 convolution with 4× fewer multiplications | — |
//! | [`pool_2x2`] | max pooling over 2×2 windows, forward and backward, a row of windows at a time in vector registers | §7.4.4 |
//! | [`transpose`] | a cache-friendly 2-D transpose | `ndarray.transpose` |

pub mod bn_sums;
pub mod direct_conv;
pub mod direct_dw;
pub mod gemm;
pub mod gemv;
pub mod im2col;
pub mod im2col_wide;
pub mod math;
pub mod pool_2x2;
pub mod reduce;
pub mod row_product;
pub mod transpose;
pub mod vectorize;
pub mod winograd;

pub use transpose::transpose_into;
