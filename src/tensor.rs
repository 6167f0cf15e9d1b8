//! A minimal dense tensor: a shape and a flat, row-major (C-order) `Vec`.
//!
//! Images are stored NCHW, as in the book: `x[n][c][h][w]` lives at
//! `((n * C + c) * H + h) * W + w`. The element type is generic over
//! [`Float`] (`f32` for training, `f64` for gradient checks).
//!
//! ```
//! use convnet::Tensor;
//! let x = Tensor::<f32>::zeros(&[2, 1, 28, 28]);
//! assert_eq!(x.len(), 2 * 28 * 28);
//! assert_eq!(x.dims4().unwrap(), (2, 1, 28, 28));
//! ```

use crate::error::{Error, Result};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// The element type of tensors: `f32` or `f64`.
pub trait Float:
    num_traits::Float
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    /// Converts an `f64` constant (a learning rate, an epsilon) to this type.
    fn cast(x: f64) -> Self;
    /// Widens to `f64` (for printing and metrics).
    fn as_f64(self) -> f64;
    /// 1 / (1 + e⁻ˣ): for f32 by [`kernels::math`](crate::kernels::math),
    /// which vectorises; for f64 (gradient checks) by the standard `exp`.
    fn sigmoid(self) -> Self;
    /// tanh x: for f32 by [`kernels::math`](crate::kernels::math); for f64
    /// the standard `tanh`.
    fn tanh_fast(self) -> Self;
}

impl Float for f32 {
    fn cast(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn sigmoid(self) -> Self {
        crate::kernels::math::sigmoid_f32(self)
    }
    #[inline(always)]
    fn tanh_fast(self) -> Self {
        crate::kernels::math::tanh_f32(self)
    }
}

impl Float for f64 {
    fn cast(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
    #[inline(always)]
    fn tanh_fast(self) -> Self {
        self.tanh()
    }
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Float> Tensor<T> {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![T::zero(); shape.iter().product()],
        }
    }

    /// Wraps `data`, checking that its length matches `shape`.
    ///
    /// ```
    /// use convnet::Tensor;
    /// assert!(Tensor::from_vec(&[2, 3], vec![0.0f32; 6]).is_ok());
    /// assert!(Tensor::from_vec(&[2, 3], vec![0.0f32; 5]).is_err());
    /// ```
    pub fn from_vec(shape: &[usize], data: Vec<T>) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(Error::Shape(format!(
                "shape {shape:?} needs {expected} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// Gives the tensor a new shape, reusing its allocation. Elements beyond the
    /// old length are zero; the others keep their old values, so callers that
    /// use this for an output buffer must overwrite (or [`fill`](Self::fill)) it.
    pub fn resize(&mut self, shape: &[usize]) {
        if self.shape != shape {
            self.shape.clear();
            self.shape.extend_from_slice(shape);
        }
        self.data.resize(shape.iter().product(), T::zero());
    }

    /// Makes `self` a copy of `other`, reusing the allocation.
    pub fn copy_from(&mut self, other: &Tensor<T>) {
        self.resize(&other.shape);
        self.data.copy_from_slice(&other.data);
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T) {
        self.data.iter_mut().for_each(|v| *v = value);
    }

    /// Changes the shape without touching the data; the element count must match.
    pub fn reshape(&mut self, shape: &[usize]) -> Result<()> {
        let count: usize = shape.iter().product();
        if count != self.data.len() {
            return Err(Error::Shape(format!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                self.shape,
                self.data.len()
            )));
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        Ok(())
    }

    /// The size of each dimension (NumPy's `shape`).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, in row-major (C) order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements, mutable, in row-major (C) order.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The elements as a `Vec`, without copying.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// The number of elements (NumPy's `size`).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The four dimensions of an NCHW tensor, or an error for any other rank.
    pub fn dims4(&self) -> Result<(usize, usize, usize, usize)> {
        match self.shape[..] {
            [n, c, h, w] => Ok((n, c, h, w)),
            _ => Err(Error::Shape(format!(
                "expected a 4-D (N, C, H, W) tensor, got shape {:?}",
                self.shape
            ))),
        }
    }

    /// The first dimension (the batch size); 0 for a scalar.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Converts every element to another float type (f32 <-> f64).
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&v| U::cast(v.as_f64())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_reuses_and_reshape_checks_count() {
        let mut t = Tensor::<f32>::zeros(&[2, 3]);
        t.data_mut()[5] = 1.0;
        t.resize(&[3, 2]);
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.data()[5], 1.0);
        assert!(t.reshape(&[6]).is_ok());
        assert!(t.reshape(&[7]).is_err());
        assert!(t.dims4().is_err());
    }
}
