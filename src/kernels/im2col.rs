//! im2col and col2im: the trick that turns convolution into one matrix product
//! (book §7.4.3, `common/util.py`).
//!
//! For an input `x: (N, C, H, W)` and a filter of `FH × FW` with stride `S` and
//! zero padding `P`, the output is `OH × OW` with
//!
//! ```text
//! OH = (H + 2P - FH) / S + 1        OW = (W + 2P - FW) / S + 1   (floor division)
//! ```
//!
//! `im2col` copies every `C × FH × FW` window the filter visits into one row
//! of a matrix `col: (N·OH·OW, C·FH·FW)`, in the book's layout; convolution is
//! then `col · W^T`. The layers use the per-image kernels
//! [`im2col_image`]/[`col2im_image`], which write each image's block
//! transposed, `(C·FH·FW, OH·OW)`: then `W · col` is already the NCHW output,
//! and for stride 1 each row is copied in contiguous runs of input pixels. `col2im` is its adjoint: it adds every row back onto the
//! window it came from (overlapping windows add up), which is exactly the
//! gradient of `im2col`, so `<im2col(x), y> = <x, col2im(y)>`.
//!
//! ```
//! use convnet::kernels::im2col::im2col;
//! use convnet::Tensor;
//! // Book §7.4.3: 1 image of 3 channels, 7x7, a 5x5 filter -> (9, 75).
//! let x = Tensor::<f32>::zeros(&[1, 3, 7, 7]);
//! assert_eq!(im2col(&x, 5, 5, 1, 0).unwrap().shape(), &[9, 75]);
//! // 10 images -> (90, 75).
//! let x = Tensor::<f32>::zeros(&[10, 3, 7, 7]);
//! assert_eq!(im2col(&x, 5, 5, 1, 0).unwrap().shape(), &[90, 75]);
//! ```

use crate::error::{Error, Result};
use crate::kernels::transpose_into;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// Output length along one axis: `(input + 2·pad − filter) / stride + 1`.
///
/// An error when the filter does not fit in the padded input or the stride is 0.
///
/// ```
/// use convnet::kernels::im2col::output_size;
/// assert_eq!(output_size(28, 5, 1, 0).unwrap(), 24);
/// assert_eq!(output_size(4, 3, 1, 1).unwrap(), 4); // "same" padding
/// assert_eq!(output_size(7, 3, 2, 0).unwrap(), 3);
/// assert!(output_size(4, 7, 1, 1).is_err()); // filter larger than padded input
/// ```
pub fn output_size(input: usize, filter: usize, stride: usize, pad: usize) -> Result<usize> {
    if stride == 0 {
        return Err(Error::Geometry("stride must be at least 1".into()));
    }
    if filter == 0 {
        return Err(Error::Geometry("filter size must be at least 1".into()));
    }
    let Some(padded) = pad.checked_mul(2).and_then(|p| p.checked_add(input)) else {
        return Err(Error::Geometry(format!(
            "padding {pad} on an input of {input} is too large to count"
        )));
    };
    if filter > padded {
        return Err(Error::Geometry(format!(
            "filter of size {filter} is larger than the padded input {input} + 2·{pad} = {padded}"
        )));
    }
    Ok((padded - filter) / stride + 1)
}

/// The most values one image's `col` may hold (2^30, 4 GiB of f32): beyond
/// that a geometry is refused rather than allowed to exhaust memory.
pub const MAX_COL_LEN: u128 = 1 << 30;

/// Where a filter (or pooling window) goes over one image: the input size, the
/// window, stride and padding, and the output size they give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// C: input channels.
    pub channels: usize,
    /// H: input height.
    pub in_h: usize,
    /// W: input width.
    pub in_w: usize,
    /// Filter height (FH in the book).
    pub filter_h: usize,
    /// Filter width (FW in the book).
    pub filter_w: usize,
    /// Stride S: how far the window moves each step.
    pub stride: usize,
    /// Padding P: zeros added on each side of the input.
    pub pad: usize,
    /// Output height OH = (H + 2P − FH)/S + 1.
    pub out_h: usize,
    /// Output width OW = (W + 2P − FW)/S + 1.
    pub out_w: usize,
}

impl ConvGeometry {
    /// Computes the output size; an error if the geometry gives no output.
    pub fn new(
        (channels, in_h, in_w): (usize, usize, usize),
        (filter_h, filter_w): (usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let g = ConvGeometry {
            channels,
            in_h,
            in_w,
            filter_h,
            filter_w,
            stride,
            pad,
            out_h: output_size(in_h, filter_h, stride, pad)?,
            out_w: output_size(in_w, filter_w, stride, pad)?,
        };
        // One image's col must fit in memory; this also keeps every index
        // product below usize::MAX.
        let col_len = [g.out_h, g.out_w, channels, filter_h, filter_w]
            .iter()
            .try_fold(1u128, |acc, &v| acc.checked_mul(v as u128))
            .unwrap_or(u128::MAX);
        if col_len > MAX_COL_LEN {
            return Err(Error::Geometry(format!(
                "{}x{} output with {}x{} filters over {channels} channels needs {col_len} im2col values per image, more than the limit {MAX_COL_LEN}",
                g.out_h, g.out_w, filter_h, filter_w
            )));
        }
        Ok(g)
    }

    /// Length of one `col` row: `C · FH · FW`.
    pub fn col_width(&self) -> usize {
        self.channels * self.filter_h * self.filter_w
    }

    /// Number of `col` rows per image: `OH · OW`.
    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Elements in one input image: `C · H · W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.in_h * self.in_w
    }
}

/// The range of output columns `ox` whose input column `ox·S + fx − P` lies
/// inside `0..in_w`, for filter column `fx`: outside it the window reads padding.
#[inline]
fn valid_columns(fx: usize, g: &ConvGeometry) -> (usize, usize) {
    let (s, p) = (g.stride, g.pad);
    // ox·S + fx ≥ P  ⇔  ox ≥ ceil((P − fx) / S)
    let lo = if p > fx { (p - fx).div_ceil(s) } else { 0 };
    // ox·S + fx − P < W  ⇔  ox < ceil((W + P − fx) / S)
    let hi = if g.in_w + p > fx {
        (g.in_w + p - fx).div_ceil(s)
    } else {
        0
    };
    (lo.min(g.out_w), hi.min(g.out_w).max(lo.min(g.out_w)))
}

/// Copies a short run (one output row's worth, typically 8–60 values) in
/// fixed blocks of 8, which compile to vector moves; `copy_from_slice` would
/// call `memcpy`, whose call overhead dominates at these lengths.
#[inline(always)]
fn copy_run<T: Float>(dst: &mut [T], src: &[T]) {
    let mut dst_blocks = dst.chunks_exact_mut(8);
    let mut src_blocks = src.chunks_exact(8);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        let d: &mut [T; 8] = d.try_into().expect("blocks of 8");
        let s: &[T; 8] = s.try_into().expect("blocks of 8");
        *d = *s;
    }
    for (d, &s) in dst_blocks
        .into_remainder()
        .iter_mut()
        .zip(src_blocks.remainder())
    {
        *d = s;
    }
}

/// im2col for one image, in the layout the matrix product wants:
/// `x: (C, H, W)` → `col: (C·FH·FW, OH·OW)`, the transpose of the book's
/// `(OH·OW, C·FH·FW)` rows. Row `(c, fy, fx)` holds, for every output pixel,
/// the input pixel that filter tap sees, so for stride 1 it is made of
/// contiguous runs of the input rows. Every element is overwritten (padding
/// reads as zero).
pub fn im2col_image<T: Float>(x: &[T], g: &ConvGeometry, col: &mut [T]) {
    let pixels = g.out_pixels();
    let plane = g.in_h * g.in_w;
    let mut rows = col.chunks_exact_mut(pixels);
    for c in 0..g.channels {
        let x_c = &x[c * plane..][..plane];
        for fy in 0..g.filter_h {
            for fx in 0..g.filter_w {
                let row = rows.next().expect("col has C·FH·FW rows");
                let (lo, hi) = valid_columns(fx, g);
                for (oy, dst) in row.chunks_exact_mut(g.out_w).enumerate() {
                    let iy = (oy * g.stride + fy) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.in_h as isize || lo == hi {
                        dst.fill(T::zero());
                        continue;
                    }
                    let src = &x_c[iy as usize * g.in_w..][..g.in_w];
                    // The padding columns are few (at most P on each side):
                    // plain loops, not calls to memset.
                    for d in &mut dst[..lo] {
                        *d = T::zero();
                    }
                    for d in &mut dst[hi..] {
                        *d = T::zero();
                    }
                    // Input column of output column ox: ox·S + fx − P.
                    let first = lo * g.stride + fx - g.pad;
                    if g.stride == 1 {
                        copy_run(&mut dst[lo..hi], &src[first..first + (hi - lo)]);
                    } else {
                        for (d, &v) in dst[lo..hi]
                            .iter_mut()
                            .zip(src[first..].iter().step_by(g.stride))
                        {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
}

/// col2im for one image: the adjoint of [`im2col_image`].
/// `col: (C·FH·FW, OH·OW)` → `dx: (C, H, W)`, overwritten with the sum of
/// every entry's contribution (entries that fell on the padding are dropped).
pub fn col2im_image<T: Float>(col: &[T], g: &ConvGeometry, dx: &mut [T]) {
    dx.fill(T::zero());
    let pixels = g.out_pixels();
    let plane = g.in_h * g.in_w;
    let mut rows = col.chunks_exact(pixels);
    for c in 0..g.channels {
        let dx_c = &mut dx[c * plane..][..plane];
        for fy in 0..g.filter_h {
            for fx in 0..g.filter_w {
                let row = rows.next().expect("col has C·FH·FW rows");
                let (lo, hi) = valid_columns(fx, g);
                for (oy, src) in row.chunks_exact(g.out_w).enumerate() {
                    let iy = (oy * g.stride + fy) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.in_h as isize || lo == hi {
                        continue;
                    }
                    let dst = &mut dx_c[iy as usize * g.in_w..][..g.in_w];
                    let first = lo * g.stride + fx - g.pad;
                    if g.stride == 1 {
                        // Contiguous: the compiler vectorises this add.
                        let run = &mut dst[first..first + (hi - lo)];
                        for (d, &v) in run.iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst[first..].iter_mut().step_by(g.stride).zip(&src[lo..hi]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// im2col over a batch, one image per rayon task.
/// `x: (N, C, H, W)` → `col: (N, C·FH·FW, OH·OW)`.
pub fn im2col_batch<T: Float>(x: &[T], g: &ConvGeometry, col: &mut [T]) {
    let per_image = g.out_pixels() * g.col_width();
    col.par_chunks_mut(per_image)
        .zip(x.par_chunks(g.image_len()))
        .for_each(|(col_n, x_n)| im2col_image(x_n, g, col_n));
}

/// col2im over a batch, one image per rayon task.
/// `col: (N, C·FH·FW, OH·OW)` → `dx: (N, C, H, W)`.
pub fn col2im_batch<T: Float>(col: &[T], g: &ConvGeometry, dx: &mut [T]) {
    let per_image = g.out_pixels() * g.col_width();
    dx.par_chunks_mut(g.image_len())
        .zip(col.par_chunks(per_image))
        .for_each(|(dx_n, col_n)| col2im_image(col_n, g, dx_n));
}

/// The book's `im2col(input_data, filter_h, filter_w, stride, pad)`:
/// `x: (N, C, H, W)` → `col: (N·OH·OW, C·FH·FW)`.
pub fn im2col<T: Float>(
    x: &Tensor<T>,
    filter_h: usize,
    filter_w: usize,
    stride: usize,
    pad: usize,
) -> Result<Tensor<T>> {
    let (n, c, h, w) = x.dims4()?;
    let g = ConvGeometry::new((c, h, w), (filter_h, filter_w), stride, pad)?;
    let (k, pixels) = (g.col_width(), g.out_pixels());
    let mut col_t = vec![T::zero(); n * k * pixels];
    im2col_batch(x.data(), &g, &mut col_t);
    // Each image's (C·FH·FW, OH·OW) block, transposed to the book's rows.
    let mut col = Tensor::zeros(&[n * pixels, k]);
    for (src, dst) in col_t
        .chunks(k * pixels)
        .zip(col.data_mut().chunks_mut(k * pixels))
    {
        transpose_into(src, k, pixels, dst);
    }
    Ok(col)
}

/// The book's `col2im(col, input_shape, filter_h, filter_w, stride, pad)`:
/// `col: (N·OH·OW, C·FH·FW)` → `dx: input_shape = (N, C, H, W)`.
pub fn col2im<T: Float>(
    col: &Tensor<T>,
    input_shape: [usize; 4],
    filter_h: usize,
    filter_w: usize,
    stride: usize,
    pad: usize,
) -> Result<Tensor<T>> {
    let [n, c, h, w] = input_shape;
    let g = ConvGeometry::new((c, h, w), (filter_h, filter_w), stride, pad)?;
    let want = [n * g.out_pixels(), g.col_width()];
    if col.shape() != want {
        return Err(Error::Shape(format!(
            "col2im: col has shape {:?}, expected {want:?}",
            col.shape()
        )));
    }
    let (k, pixels) = (g.col_width(), g.out_pixels());
    let mut col_t = vec![T::zero(); col.len()];
    for (src, dst) in col
        .data()
        .chunks(k * pixels)
        .zip(col_t.chunks_mut(k * pixels))
    {
        transpose_into(src, pixels, k, dst);
    }
    let mut dx = Tensor::zeros(&input_shape);
    col2im_batch(&col_t, &g, dx.data_mut());
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use proptest::prelude::*;

    fn t(shape: &[usize], data: Vec<f64>) -> Tensor<f64> {
        Tensor::from_vec(shape, data).unwrap()
    }

    #[test]
    fn output_size_formula() {
        assert_eq!(output_size(28, 5, 1, 0).unwrap(), 24);
        assert_eq!(output_size(24, 2, 2, 0).unwrap(), 12);
        assert_eq!(output_size(227, 11, 4, 0).unwrap(), 55);
        assert_eq!(output_size(14, 3, 1, 2).unwrap(), 16);
        assert_eq!(output_size(5, 2, 2, 0).unwrap(), 2); // floor
        assert!(output_size(3, 2, 0, 0).is_err());
        assert!(output_size(3, 0, 1, 0).is_err());
        assert!(output_size(3, 6, 1, 1).is_err());
    }

    #[test]
    fn im2col_by_hand_stride_1() {
        // x = [[1 2 3], [4 5 6], [7 8 9]], 2x2 filter, stride 1: four windows.
        let x = t(&[1, 1, 3, 3], (1..=9).map(f64::from).collect());
        let col = im2col(&x, 2, 2, 1, 0).unwrap();
        assert_eq!(col.shape(), &[4, 4]);
        #[rustfmt::skip]
        let want = [1., 2., 4., 5.,
                    2., 3., 5., 6.,
                    4., 5., 7., 8.,
                    5., 6., 8., 9.];
        assert_eq!(col.data(), want);
    }

    #[test]
    fn im2col_by_hand_padding_and_stride_2() {
        // x = [[1 2], [3 4]] padded by 1 -> 4x4; a 2x2 window with stride 2
        // sees the four corners, each holding one real pixel.
        let x = t(&[1, 1, 2, 2], vec![1., 2., 3., 4.]);
        let col = im2col(&x, 2, 2, 2, 1).unwrap();
        assert_eq!(col.shape(), &[4, 4]);
        #[rustfmt::skip]
        let want = [0., 0., 0., 1.,
                    0., 0., 2., 0.,
                    0., 3., 0., 0.,
                    4., 0., 0., 0.];
        assert_eq!(col.data(), want);
    }

    #[test]
    fn im2col_two_channels_two_images() {
        // Rows hold channel 0's window then channel 1's.
        let x = t(&[2, 2, 2, 2], (0..16).map(f64::from).collect());
        let col = im2col(&x, 2, 2, 1, 0).unwrap();
        assert_eq!(col.shape(), &[2, 8]);
        assert_eq!(col.data()[..8], [0., 1., 2., 3., 4., 5., 6., 7.]);
        assert_eq!(col.data()[8..], [8., 9., 10., 11., 12., 13., 14., 15.]);
    }

    #[test]
    fn col2im_by_hand_adds_overlaps() {
        // All-ones col for a 2x2 filter, stride 1, on 3x3: each pixel receives
        // the number of windows that cover it.
        let col = t(&[4, 4], vec![1.0; 16]);
        let dx = col2im(&col, [1, 1, 3, 3], 2, 2, 1, 0).unwrap();
        assert_eq!(dx.data(), [1., 2., 1., 2., 4., 2., 1., 2., 1.]);
        // With padding 1 and stride 2 on 2x2, each pixel is in one window.
        let dx = col2im(&col, [1, 1, 2, 2], 2, 2, 2, 1).unwrap();
        assert_eq!(dx.data(), [1., 1., 1., 1.]);
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let x = Tensor::<f32>::zeros(&[1, 1, 4, 4]);
        assert!(matches!(im2col(&x, 5, 5, 1, 0), Err(Error::Geometry(_))));
        assert!(matches!(im2col(&x, 2, 2, 0, 0), Err(Error::Geometry(_))));
        let col = Tensor::<f32>::zeros(&[3, 4]);
        assert!(matches!(
            col2im(&col, [1, 1, 3, 3], 2, 2, 1, 0),
            Err(Error::Shape(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// <im2col(x), y> = <x, col2im(y)> for any geometry.
        #[test]
        fn col2im_is_the_adjoint_of_im2col(
            n in 1usize..3, c in 1usize..4, h in 1usize..9, w in 1usize..9,
            fh in 1usize..5, fw in 1usize..5, stride in 1usize..4, pad in 0usize..3,
            seed in any::<u64>(),
        ) {
            prop_assume!(fh <= h + 2 * pad && fw <= w + 2 * pad);
            let mut rng = Rng::new(seed);
            let x = t(&[n, c, h, w], (0..n * c * h * w).map(|_| rng.normal()).collect());
            let col = im2col(&x, fh, fw, stride, pad).unwrap();
            let y = t(col.shape(), (0..col.len()).map(|_| rng.normal()).collect());
            let dx = col2im(&y, [n, c, h, w], fh, fw, stride, pad).unwrap();
            let lhs: f64 = col.data().iter().zip(y.data()).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.data().iter().zip(dx.data()).map(|(a, b)| a * b).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
        }
    }
}
