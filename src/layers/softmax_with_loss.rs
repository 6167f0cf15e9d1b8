//! Softmax with cross-entropy loss (book §5.6.3, `common/layers.py: SoftmaxWithLoss`).
//!
//! ```text
//! x: (N, K) scores, t: (N) class indices
//! y[n, k] = exp(x[n, k] − m_n) / Σ_j exp(x[n, j] − m_n),    m_n = max_j x[n, j]
//! L       = −(1/N) Σ_n log y[n, t_n]
//! dx      = (y − onehot(t)) / N
//! ```
//!
//! With label smoothing ε ([`SoftmaxWithLoss::set_label_smoothing`]; Szegedy
//! et al. 2016, §7) the target is `q = (1 − ε)·onehot(t) + ε/K` instead of
//! the one-hot vector:
//!
//! ```text
//! L  = −(1/N) Σ_n Σ_k q[n, k] log y[n, k]
//!    = −(1/N) Σ_n ((1 − ε) log y[n, t_n] + (ε/K) Σ_k log y[n, k])
//! dx = (y − q) / N
//! ```
//!
//! (ε = 0 runs the one-hot code above, unchanged to the bit.)
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
    /// The label smoothing ε of training forwards.
    smoothing: f64,
    /// The ε of the last forward (what `backward` differentiates).
    last_smoothing: f64,
}

impl<T: Float> Default for SoftmaxWithLoss<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> SoftmaxWithLoss<T> {
    /// A softmax-with-loss layer (it has no parameters), without label
    /// smoothing.
    pub fn new() -> Self {
        SoftmaxWithLoss {
            y: Tensor::default(),
            labels: Vec::new(),
            dx: Tensor::default(),
            smoothing: 0.0,
            last_smoothing: 0.0,
        }
    }

    /// Sets the label smoothing ε of [`forward`](Self::forward) (0, the
    /// default: plain one-hot targets). An error unless 0 ≤ ε < 1.
    pub fn set_label_smoothing(&mut self, epsilon: f64) -> Result<()> {
        if !(0.0..1.0).contains(&epsilon) {
            return Err(Error::Config(format!(
                "label smoothing must be in [0, 1), got {epsilon}"
            )));
        }
        self.smoothing = epsilon;
        Ok(())
    }

    /// The label smoothing ε of [`forward`](Self::forward).
    pub fn label_smoothing(&self) -> f64 {
        self.smoothing
    }

    /// The mean cross-entropy loss of scores `x: (N, K)` against `labels`,
    /// smoothed by [`label_smoothing`](Self::label_smoothing).
    pub fn forward(&mut self, x: &Tensor<T>, labels: &[usize]) -> Result<T> {
        self.forward_smoothed(x, labels, self.smoothing)
    }

    /// The mean cross-entropy loss against the one-hot labels, whatever the
    /// label smoothing (what evaluation reports).
    pub fn forward_plain(&mut self, x: &Tensor<T>, labels: &[usize]) -> Result<T> {
        self.forward_smoothed(x, labels, 0.0)
    }

    fn forward_smoothed(&mut self, x: &Tensor<T>, labels: &[usize], epsilon: f64) -> Result<T> {
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
        let rows = self.y.data_mut().chunks_mut(k).zip(x.data().chunks(k));
        if epsilon == 0.0 {
            for ((y_row, x_row), &t) in rows.zip(labels) {
                let (max, sum) = softmax_row(x_row, y_row);
                // −log y_t = −(x_t − max − log sum)
                total += sum.ln() - (x_row[t] - max);
            }
        } else {
            let (on, each) = (T::cast(1.0 - epsilon), T::cast(epsilon / k as f64));
            for ((y_row, x_row), &t) in rows.zip(labels) {
                let (max, sum) = softmax_row(x_row, y_row);
                let log_sum = sum.ln();
                // −Σ_k log y_k = Σ_k (log sum − (x_k − max))
                let all = x_row
                    .iter()
                    .fold(T::zero(), |acc, &v| acc + log_sum - (v - max));
                total += on * (log_sum - (x_row[t] - max)) + each * all;
            }
        }
        self.last_smoothing = epsilon;
        self.labels.clear();
        self.labels.extend_from_slice(labels);
        Ok(total / T::cast(n.max(1) as f64))
    }

    /// dx = (y − q) / N, the gradient of the last forward's mean loss
    /// (`q = onehot(t)` without label smoothing).
    pub fn backward(&mut self) -> Result<&Tensor<T>> {
        if self.labels.is_empty() {
            return Err(Error::BackwardBeforeForward("SoftmaxWithLoss"));
        }
        let k = self.y.shape()[1];
        let scale = T::one() / T::cast(self.labels.len() as f64);
        self.dx.copy_from(&self.y);
        let epsilon = self.last_smoothing;
        if epsilon == 0.0 {
            for (row, &t) in self.dx.data_mut().chunks_mut(k).zip(&self.labels) {
                row[t] -= T::one();
                row.iter_mut().for_each(|v| *v *= scale);
            }
        } else {
            let (on, each) = (T::cast(1.0 - epsilon), T::cast(epsilon / k as f64));
            for (row, &t) in self.dx.data_mut().chunks_mut(k).zip(&self.labels) {
                row[t] -= on;
                row.iter_mut().for_each(|v| *v = (*v - each) * scale);
            }
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

    /// The smoothed loss by its definition, −Σ q log y with q spelled out,
    /// and its gradient against the numerical one, in f64.
    #[test]
    fn label_smoothing_loss_and_gradient_match() {
        let mut rng = Rng::new(12);
        let mut x: Vec<f64> = (0..4 * 5).map(|_| rng.normal()).collect();
        let labels = [0, 3, 4, 1];
        let epsilon = 0.2;
        let smoothed = |x: &[f64]| {
            let mut loss = SoftmaxWithLoss::new();
            loss.set_label_smoothing(epsilon).unwrap();
            loss.forward(&Tensor::from_vec(&[4, 5], x.to_vec()).unwrap(), &labels)
                .unwrap()
        };
        let mut by_hand = 0.0;
        for (row, &t) in x.chunks(5).zip(&labels) {
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            for (k, &v) in row.iter().enumerate() {
                let q = if k == t { 1.0 - epsilon } else { 0.0 } + epsilon / 5.0;
                by_hand -= q * (v.exp() / z).ln();
            }
        }
        by_hand /= 4.0;
        assert!((smoothed(&x) - by_hand).abs() < 1e-12);

        let mut loss = SoftmaxWithLoss::<f64>::new();
        loss.set_label_smoothing(epsilon).unwrap();
        loss.forward(&Tensor::from_vec(&[4, 5], x.clone()).unwrap(), &labels)
            .unwrap();
        let analytic = loss.backward().unwrap().data().to_vec();
        let numeric = numerical_gradient(&mut x, smoothed);
        let err = max_relative_error(&analytic, &numeric);
        assert!(err <= 1e-6, "{err}");
        // The plain loss ignores the smoothing, and its gradient is the one-hot one.
        let t = Tensor::from_vec(&[4, 5], x.clone()).unwrap();
        let plain = loss.forward_plain(&t, &labels).unwrap();
        assert_eq!(plain, SoftmaxWithLoss::new().forward(&t, &labels).unwrap());
        assert!(plain < smoothed(&x));
    }

    /// ε = 0 is the one-hot loss, to the bit, in f32.
    #[test]
    fn zero_smoothing_changes_nothing() {
        let mut rng = Rng::new(13);
        let x: Vec<f32> = (0..3 * 4).map(|_| rng.normal() as f32).collect();
        let t = Tensor::from_vec(&[3, 4], x).unwrap();
        let mut plain = SoftmaxWithLoss::<f32>::new();
        let mut zero = SoftmaxWithLoss::<f32>::new();
        zero.set_label_smoothing(0.0).unwrap();
        assert_eq!(
            plain.forward(&t, &[1, 0, 3]).unwrap(),
            zero.forward(&t, &[1, 0, 3]).unwrap()
        );
        assert_eq!(plain.backward().unwrap(), zero.backward().unwrap());
        for bad in [-0.1, 1.0, f64::NAN] {
            assert!(zero.set_label_smoothing(bad).is_err());
        }
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
