//! Softmax with cross-entropy loss (book §5.6.3, `common/layers.py: SoftmaxWithLoss`).
//!
//! ```text
//! x: (N, K) scores, t: (N) class indices
//! y[n, k] = exp(x[n, k] − m_n) / Σ_j exp(x[n, j] − m_n),    m_n = max_j x[n, j]
//! L       = −(1/N) Σ_n log y[n, t_n]
//! dx      = (y − onehot(t)) / N
//! ```
//!
//! Subtracting the row maximum keeps `exp` from overflowing (§3.5.2). The
//! log is taken of the log-softmax directly (`x_t − m − log Σ exp(x − m)`)
//! rather than of `y + 1e-7` as the book does, so the loss equals PyTorch's
//! `cross_entropy` to rounding and stays finite for any score.
//!
//! ```
//! use convnet::layers::SoftmaxWithLoss;
//! use convnet::Tensor;
//! let mut loss = SoftmaxWithLoss::<f64>::new();
//! let x = Tensor::from_vec(&[1, 2], vec![0.0, 0.0]).unwrap();
//! let l = loss.forward(&x, &[1]).unwrap();
//! assert!((l - 2f64.ln()).abs() < 1e-12);
//! assert_eq!(loss.backward().unwrap().data(), [0.5, -0.5]);
//! ```

use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

/// Softmax of one row of scores into `y`, shifted by the row's maximum so
/// that `exp` cannot overflow. Returns `(max, sum)`, the shift and the sum of
/// the shifted exponentials, so that `log y_k = x_k − max − ln sum`.
///
/// ```
/// use convnet::layers::softmax_with_loss::softmax_row;
/// let mut y = [0.0f32; 2];
/// softmax_row(&[0.0, 3f32.ln()], &mut y);
/// assert!((y[0] - 0.25).abs() < 1e-6 && (y[1] - 0.75).abs() < 1e-6);
/// ```
pub fn softmax_row<T: Float>(x: &[T], y: &mut [T]) -> (T, T) {
    let max = x.iter().copied().fold(T::neg_infinity(), T::max);
    let mut sum = T::zero();
    for (y, &v) in y.iter_mut().zip(x) {
        *y = (v - max).exp();
        sum += *y;
    }
    y.iter_mut().for_each(|y| *y /= sum);
    (max, sum)
}

/// The last layer of a classifier during training.
pub struct SoftmaxWithLoss<T> {
    /// y: (N, K), the softmax probabilities of the last forward.
    y: Tensor<T>,
    /// t: (N), the labels of the last forward.
    labels: Vec<usize>,
    dx: Tensor<T>,
}

impl<T: Float> Default for SoftmaxWithLoss<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> SoftmaxWithLoss<T> {
    /// A softmax-with-loss layer (it has no parameters).
    pub fn new() -> Self {
        SoftmaxWithLoss {
            y: Tensor::default(),
            labels: Vec::new(),
            dx: Tensor::default(),
        }
    }

    /// The mean cross-entropy loss of scores `x: (N, K)` against `labels`.
    pub fn forward(&mut self, x: &Tensor<T>, labels: &[usize]) -> Result<T> {
        let &[n, k] = x.shape() else {
            return Err(Error::Shape(format!(
                "SoftmaxWithLoss expects (N, classes) scores, got {:?}",
                x.shape()
            )));
        };
        if labels.len() != n {
            return Err(Error::Shape(format!(
                "SoftmaxWithLoss: {n} score rows but {} labels",
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&t| t >= k) {
            return Err(Error::Shape(format!(
                "SoftmaxWithLoss: label {bad} is out of range for {k} classes"
            )));
        }
        self.y.resize(x.shape());
        let mut total = T::zero();
        for ((y_row, x_row), &t) in self
            .y
            .data_mut()
            .chunks_mut(k)
            .zip(x.data().chunks(k))
            .zip(labels)
        {
            let (max, sum) = softmax_row(x_row, y_row);
            // −log y_t = −(x_t − max − log sum)
            total += sum.ln() - (x_row[t] - max);
        }
        self.labels.clear();
        self.labels.extend_from_slice(labels);
        Ok(total / T::cast(n.max(1) as f64))
    }

    /// dx = (y − onehot(t)) / N, the gradient of the mean loss.
    pub fn backward(&mut self) -> Result<&Tensor<T>> {
        if self.labels.is_empty() {
            return Err(Error::BackwardBeforeForward("SoftmaxWithLoss"));
        }
        let k = self.y.shape()[1];
        let scale = T::one() / T::cast(self.labels.len() as f64);
        self.dx.copy_from(&self.y);
        for (row, &t) in self.dx.data_mut().chunks_mut(k).zip(&self.labels) {
            row[t] -= T::one();
            row.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(&self.dx)
    }

    /// The softmax probabilities of the last forward: (N, K).
    pub fn probabilities(&self) -> &Tensor<T> {
        &self.y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::max_relative_error;
    use crate::gradient_check::numerical_gradient;
    use crate::rng::Rng;

    #[test]
    fn loss_by_hand_and_stable_for_huge_scores() {
        let mut loss = SoftmaxWithLoss::<f64>::new();
        // Scores [ln 1, ln 3] → y = [0.25, 0.75]; label 0 → L = ln 4.
        let x = Tensor::from_vec(&[1, 2], vec![0.0, 3f64.ln()]).unwrap();
        assert!((loss.forward(&x, &[0]).unwrap() - 4f64.ln()).abs() < 1e-12);
        let dx = loss.backward().unwrap();
        assert!((dx.data()[0] + 0.75).abs() < 1e-12 && (dx.data()[1] - 0.75).abs() < 1e-12);
        let huge = Tensor::from_vec(&[1, 3], vec![1000.0, 0.0, -1000.0]).unwrap();
        let l = loss.forward(&huge, &[2]).unwrap();
        assert!((l - 2000.0).abs() < 1e-9, "{l}");
    }

    #[test]
    fn gradient_matches_numerical() {
        let mut rng = Rng::new(11);
        let mut x: Vec<f64> = (0..4 * 5).map(|_| rng.normal()).collect();
        let labels = [0, 3, 4, 1];
        let mut loss = SoftmaxWithLoss::<f64>::new();
        loss.forward(&Tensor::from_vec(&[4, 5], x.clone()).unwrap(), &labels)
            .unwrap();
        let analytic = loss.backward().unwrap().data().to_vec();
        let numeric = numerical_gradient(&mut x, |x| {
            let t = Tensor::from_vec(&[4, 5], x.to_vec()).unwrap();
            SoftmaxWithLoss::new().forward(&t, &labels).unwrap()
        });
        let err = max_relative_error(&analytic, &numeric);
        assert!(err <= 1e-6, "{err}");
    }

    #[test]
    fn bad_labels_are_errors() {
        let mut loss = SoftmaxWithLoss::<f32>::new();
        assert!(loss.backward().is_err());
        let x = Tensor::zeros(&[2, 3]);
        assert!(loss.forward(&x, &[0]).is_err());
        assert!(loss.forward(&x, &[0, 3]).is_err());
        assert!(loss.forward(&Tensor::zeros(&[2, 3, 1]), &[0, 1]).is_err());
    }
}
