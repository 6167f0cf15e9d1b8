//! The pure numeric kernels that make the layers fast: free functions on
//! slices, with no layers, no threads of their own and no state. Each has
//! property tests against a plain definition next to it.
//!
//! | module | what | book |
//! |---|---|---|
//! | [`gemm`] | the matrix product `C = A·B` on strided views (the one place the `gemm` crate is called) | `np.dot` |
//! | [`im2col`] | the book's im2col/col2im, the output-size formula, [`ConvGeometry`](im2col::ConvGeometry) | §7.4.3, `common/util.py` |
//! | [`im2col_wide`] | im2col over a zero-padded image, one row of patches per padded pixel (the fast convolution's layout) | — |
//! | [`transpose`] | a cache-friendly 2-D transpose | `ndarray.transpose` |

pub mod gemm;
pub mod im2col;
pub mod im2col_wide;
pub mod transpose;

pub use transpose::transpose_into;
