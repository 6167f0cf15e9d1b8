//! The matrix product `C = A·B` (or `C += A·B`): the one place the library
//! calls the `gemm` crate. Convolution and Affine spend nearly all their time
//! here.
//!
//! Matrices are views over flat slices with a row stride and a column stride,
//! so a transpose is free: `a.t()` swaps the strides. This lets the
//! convolution multiply by `col^T` without copying `col`.
//!
//! ```
//! use convnet::kernels::gemm::{matmul, MatMut, MatRef};
//! let a = [1.0f32, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
//! let b = [5.0f32, 6.0, 7.0, 8.0]; // [[5, 6], [7, 8]]
//! let mut c = [0.0f32; 4];
//! matmul(MatMut::new(&mut c, 2, 2), MatRef::new(&a, 2, 2), MatRef::new(&b, 2, 2), false, false);
//! assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
//! // A^T·B by swapping strides:
//! matmul(MatMut::new(&mut c, 2, 2), MatRef::new(&a, 2, 2).t(), MatRef::new(&b, 2, 2), false, false);
//! assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
//! ```

use crate::tensor::Float;

/// A read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows × cols` view of the start of `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// A `rows × cols` view with element (i, j) at
    /// `data[i * row_stride + j * col_stride]`. Rows may overlap (a stride
    /// smaller than the row): the convolution reads every shifted window
    /// of a channels-last image this way, without copying it.
    ///
    /// ```
    /// use convnet::kernels::gemm::{matmul, MatMut, MatRef};
    /// // Rows [1, 2], [2, 3], [3, 4] of one slice.
    /// let a = MatRef::strided(&[1.0f32, 2.0, 3.0, 4.0], 3, 2, 1, 1);
    /// let mut c = [0.0f32; 3];
    /// matmul(MatMut::new(&mut c, 3, 1), a, MatRef::new(&[1.0, 1.0], 2, 1), false, false);
    /// assert_eq!(c, [3.0, 5.0, 7.0]);
    /// ```
    pub fn strided(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Columns `start..end` of the matrix, without copying.
    pub fn cols(self, start: usize, end: usize) -> Self {
        assert!(
            start <= end && end <= self.cols,
            "MatRef::cols out of range"
        );
        MatRef {
            data: &self.data[(start * self.col_stride).min(self.data.len())..],
            cols: end - start,
            ..self
        }
    }

    /// Rows `start..end` of the matrix, without copying.
    pub fn rows(self, start: usize, end: usize) -> Self {
        assert!(
            start <= end && end <= self.rows,
            "MatRef::rows out of range"
        );
        MatRef {
            data: &self.data[(start * self.row_stride).min(self.data.len())..],
            rows: end - start,
            ..self
        }
    }

    fn last_index(&self) -> usize {
        (self.rows.max(1) - 1) * self.row_stride + (self.cols.max(1) - 1) * self.col_stride
    }
}

/// A mutable row-major matrix view.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// A row-major `rows × cols` view of the start of `data`.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride: cols,
        }
    }

    /// A row-major `rows × cols` view whose rows start `row_stride ≥ cols`
    /// values apart: a block of columns of a wider matrix.
    ///
    /// ```
    /// use convnet::kernels::gemm::{matmul, MatMut, MatRef};
    /// let mut c = [0.0f32; 6]; // 2×3, fill its middle column
    /// let (a, b) = ([1.0f32, 2.0], [10.0f32]);
    /// matmul(MatMut::with_row_stride(&mut c[1..], 2, 1, 3), MatRef::new(&a, 2, 1), MatRef::new(&b, 1, 1), false, false);
    /// assert_eq!(c, [0.0, 10.0, 0.0, 0.0, 20.0, 0.0]);
    /// ```
    pub fn with_row_stride(data: &'a mut [T], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(row_stride >= cols, "MatMut: rows overlap");
        MatMut {
            data,
            rows,
            cols,
            row_stride,
        }
    }
}

/// `C = A·B`, or `C += A·B` when `accumulate`. With `parallel`, the product is
/// split over the current rayon pool; otherwise it runs on the calling thread
/// (the layers call it from their own parallel loops over the batch).
///
/// Each element of `C` is summed in the same order whatever the number of
/// threads, so results do not depend on `--threads`.
///
/// Panics if the shapes do not agree or a view runs past its slice: that is a
/// bug in the caller, not bad user input.
pub fn matmul<T: Float>(
    c: MatMut<'_, T>,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    parallel: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "matmul shapes: A {}x{}, B {}x{}, C {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c.data.len() >= (m - 1) * c.row_stride + n,
        "matmul: C view past its slice"
    );
    if k == 0 {
        if !accumulate {
            for row in c.data.chunks_mut(c.row_stride).take(m) {
                row[..n].iter_mut().for_each(|v| *v = T::zero());
            }
        }
        return;
    }
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "matmul: A or B view past its slice"
    );
    tune_packing();
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index the kernel touches inside the
    // three slices; `c` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            1,
            c.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// On one thread, the `gemm` crate copies ("packs") one operand into its
/// own layout when `C` has more than 6 × this many rows; its default is 8
/// (48 rows). (`gemm` computes `C^T = B^T·A^T` for our row-major `C`, so
/// our rows are its columns, 6 to a microkernel.)
///
/// For a convolution's forward product, the rows are the filters. At the
/// default, the products of `deep`'s 64-filter layers (conv5 and conv6,
/// 64×288×64 and 64×576×64) pack `col`, which the microkernel can read in
/// place, so the copy is work for nothing. At 11 (66 rows) they are not
/// packed, and every product with more rows still is: `dcol`'s products
/// (144 to 576 rows) do gain from packing. Packing only copies values, so
/// the sums, and the numbers, are the same either way.
const LHS_PACKING_THRESHOLD: usize = 11;

/// Sets [`LHS_PACKING_THRESHOLD`] once, before the first product. The
/// setting is `gemm`'s, for the whole process.
fn tune_packing() {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| gemm::set_lhs_packing_threshold_single_thread(LHS_PACKING_THRESHOLD));
}

/// `C = A·B` (or `C += A·B`) for a long inner dimension K and a small C
/// (an affine layer's forward: K = 4,320 inputs, C = 100 images × 100
/// outputs). Splitting C between threads leaves each too little work, so
/// the K dimension is cut into `parts` slices instead, whose products are
/// computed in parallel into `scratch` and then added in order. `parts` is
/// fixed by the caller, not by the thread count, so the sums, and the
/// result, are the same on any machine.
///
/// ```
/// use convnet::kernels::gemm::{matmul_split_k, MatMut, MatRef};
/// let a = [1.0f32, 2.0, 3.0, 4.0]; // 1×4
/// let b = [1.0f32, 1.0, 1.0, 1.0]; // 4×1
/// let (mut c, mut scratch) = ([0.0f32], Vec::new());
/// matmul_split_k(MatMut::new(&mut c, 1, 1), MatRef::new(&a, 1, 4), MatRef::new(&b, 4, 1), false, 2, &mut scratch);
/// assert_eq!(c, [10.0]);
/// ```
pub fn matmul_split_k<T: Float>(
    c: MatMut<'_, T>,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    parts: usize,
    scratch: &mut Vec<T>,
) {
    use rayon::prelude::*;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let parts = parts.clamp(1, k.max(1));
    if parts == 1 {
        return matmul(c, a, b, accumulate, false);
    }
    assert!(
        c.rows == m && c.cols == n && c.row_stride == n,
        "matmul_split_k: C is not a contiguous {m}x{n}"
    );
    scratch.resize(parts * m * n, T::zero());
    scratch
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(part, partial)| {
            let (start, end) = (part * k / parts, (part + 1) * k / parts);
            matmul(
                MatMut::new(partial, m, n),
                a.cols(start, end),
                b.rows(start, end),
                false,
                false,
            );
        });
    let c = &mut c.data[..m * n];
    if !accumulate {
        c.fill(T::zero());
    }
    for partial in scratch.chunks(m * n) {
        c.iter_mut().zip(partial).for_each(|(c, &p)| *c += p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn split_k_matches_the_plain_product() {
        let mut rng = Rng::new(5);
        let (m, k, n) = (7, 53, 9);
        let a: Vec<f64> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..k * n).map(|_| rng.normal()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut scratch = Vec::new();
        for parts in [1, 2, 5, 53, 100] {
            let mut c = vec![1.0; m * n];
            let (a, b) = (MatRef::new(&a, m, k), MatRef::new(&b, k, n));
            matmul_split_k(MatMut::new(&mut c, m, n), a, b, false, parts, &mut scratch);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12, "{parts} parts");
            }
            matmul_split_k(MatMut::new(&mut c, m, n), a, b, true, parts, &mut scratch);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 1e-12, "{parts} parts");
            }
        }
        // Transposed views: C^T = B^T · A^T.
        let mut ct = vec![0.0; n * m];
        let (at, bt) = (MatRef::new(&a, m, k).t(), MatRef::new(&b, k, n).t());
        matmul_split_k(MatMut::new(&mut ct, n, m), bt, at, false, 4, &mut scratch);
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - want[i * n + j]).abs() < 1e-12);
            }
        }
    }

    /// Packing only copies values: a product of 64 rows (packed at
    /// `gemm`'s default threshold, not at ours) gives the same bits either
    /// way, in f32 and on `deep`'s conv5 shape. (Other tests may run
    /// meanwhile under either setting; by this test, that changes nothing.)
    #[test]
    fn packing_or_not_gives_the_same_bits() {
        let mut rng = Rng::new(8);
        let (m, k, n) = (64, 288, 64);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
        let product = |threshold: usize| {
            tune_packing();
            gemm::set_lhs_packing_threshold_single_thread(threshold);
            let mut c = vec![0.0f32; m * n];
            let (a, b) = (MatRef::new(&a, m, k), MatRef::new(&b, k, n));
            matmul(MatMut::new(&mut c, m, n), a, b, false, false);
            gemm::set_lhs_packing_threshold_single_thread(LHS_PACKING_THRESHOLD);
            c
        };
        let (packed, in_place) = (product(8), product(LHS_PACKING_THRESHOLD));
        assert!(packed.iter().any(|&v| v != 0.0));
        let same = packed
            .iter()
            .zip(&in_place)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "packing changed the product");
    }

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        let mut rng = Rng::new(3);
        let (m, k, n) = (37, 25, 30);
        let a: Vec<f64> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..k * n).map(|_| rng.normal()).collect();
        let want = naive(&a, &b, m, k, n);
        for parallel in [false, true] {
            let mut c = vec![1.0; m * n];
            matmul(
                MatMut::new(&mut c, m, n),
                MatRef::new(&a, m, k),
                MatRef::new(&b, k, n),
                false,
                parallel,
            );
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12);
            }
            matmul(
                MatMut::new(&mut c, m, n),
                MatRef::new(&a, m, k),
                MatRef::new(&b, k, n),
                true,
                parallel,
            );
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 1e-12);
            }
        }
        // (B^T A^T)^T = A B: compute C^T = B^T·A^T from transposed views.
        let mut ct = vec![0.0; n * m];
        matmul(
            MatMut::new(&mut ct, n, m),
            MatRef::new(&b, k, n).t(),
            MatRef::new(&a, m, k).t(),
            false,
            false,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - want[i * n + j]).abs() < 1e-12);
            }
        }
    }
}
