//! Average pooling (book §7.3 names it beside max pooling; §7.7.1's LeNet
//! "subsampling", from LeCun et al., "Gradient-Based Learning Applied to
//! Document Recognition", 1998, minus LeNet-5's trainable scale and bias).
//!
//! ```text
//! x:   (N, C, H, W)  →  out: (N, C, OH, OW),   OH = (H + 2P − PH)/S + 1
//! out[n, c, oy, ox] = (1 / (PH·PW)) · Σ x over the PH×PW window at (oy·S − P, ox·S − P)
//! backward: dx[i] += dout / (PH·PW) for every real pixel i of the window
//! ```
//!
//! Padding counts as zeros: a window that hangs over the border is still
//! divided by the full `PH·PW`, which is PyTorch's `AvgPool2d` default
//! (`count_include_pad=True`). The padded pixels receive no gradient, since
//! they are not inputs. Overlapping windows (stride < size) add their shares.
//!
//! ```
//! use convnet::layers::{AvgPooling, Layer, PoolingConfig};
//! use convnet::Tensor;
//! let mut pool = AvgPooling::<f32>::new(&PoolingConfig { size: 2, stride: 2, pad: 0 });
//! let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 3.0, 2.0, 0.0]).unwrap();
//! assert_eq!(pool.forward(&x, false).unwrap().data(), [1.5]);
//! let dx = pool.backward(&Tensor::from_vec(&[1, 1, 1, 1], vec![4.0]).unwrap()).unwrap();
//! assert_eq!(dx.data(), [1.0, 1.0, 1.0, 1.0]);
//! ```

use super::elementwise::planes_per_task;
use super::pooling::{is_2x2, window, PoolingConfig};
use super::{check_dout, Layer};
use crate::error::{Error, Result};
use crate::kernels::im2col::ConvGeometry;
use crate::networks::spec::LayerSpec;
use crate::parallel::team::run_in_team;
use crate::tensor::{Float, Tensor};
use rayon::prelude::*;

/// Input values from which one image's planes are shared out in a batch-1
/// team.
const TEAM_MIN_VALUES: usize = 1 << 12;

/// One plane's windows, any size, stride and padding: the definition.
fn avg_pool_plane<T: Float>(
    x_p: &[T],
    g: &ConvGeometry,
    h: usize,
    w: usize,
    inv: T,
    out_p: &mut [T],
) {
    for oy in 0..g.out_h {
        let (y0, y1) = window(oy, g, g.filter_h, h);
        for ox in 0..g.out_w {
            let (x0, x1) = window(ox, g, g.filter_w, w);
            let mut sum = T::zero();
            for iy in y0..y1 {
                for &v in &x_p[iy * w + x0..iy * w + x1] {
                    sum += v;
                }
            }
            out_p[oy * g.out_w + ox] = sum * inv;
        }
    }
}

/// Backward of [`avg_pool_plane`] into a zeroed `dx_p`.
fn avg_pool_plane_backward<T: Float>(
    dout_p: &[T],
    g: &ConvGeometry,
    h: usize,
    w: usize,
    inv: T,
    dx_p: &mut [T],
) {
    for oy in 0..g.out_h {
        let (y0, y1) = window(oy, g, g.filter_h, h);
        for ox in 0..g.out_w {
            let (x0, x1) = window(ox, g, g.filter_w, w);
            let share = dout_p[oy * g.out_w + ox] * inv;
            // Overlapping windows: add, don't assign.
            for iy in y0..y1 {
                for d in &mut dx_p[iy * w + x0..iy * w + x1] {
                    *d += share;
                }
            }
        }
    }
}

/// The 2×2, stride-2 windows of one plane `w` wide (LeNet-5's
/// subsampling): the general loop's sum in the same order, ((a + b) + c) +
/// d, with fixed offsets the compiler can unroll and vectorise.
fn avg_pool_2x2<T: Float>(x_p: &[T], w: usize, inv: T, out_p: &mut [T], out_w: usize) {
    for (oy, out_row) in out_p.chunks_exact_mut(out_w).enumerate() {
        let row0 = &x_p[2 * oy * w..][..2 * out_w];
        let row1 = &x_p[(2 * oy + 1) * w..][..2 * out_w];
        let windows = row0.chunks_exact(2).zip(row1.chunks_exact(2));
        for (out, (pair0, pair1)) in out_row.iter_mut().zip(windows) {
            *out = (pair0[0] + pair0[1] + pair1[0] + pair1[1]) * inv;
        }
    }
}

/// Backward of [`avg_pool_2x2`] into a zeroed `dx_p`: each window's four pixels get its share
/// (the windows do not overlap; a last odd row or column keeps its zeros).
fn avg_pool_2x2_backward<T: Float>(dout_p: &[T], inv: T, dx_p: &mut [T], w: usize, out_w: usize) {
    for (oy, dout_row) in dout_p.chunks_exact(out_w).enumerate() {
        let (top, bottom) = dx_p[2 * oy * w..].split_at_mut(w);
        let pairs = top[..2 * out_w].chunks_exact_mut(2);
        let pairs = pairs.zip(bottom[..2 * out_w].chunks_exact_mut(2));
        for (&d, (pair0, pair1)) in dout_row.iter().zip(pairs) {
            let share = d * inv;
            pair0.fill(share);
            pair1.fill(share);
        }
    }
}

/// Average pooling over each channel separately.
pub struct AvgPooling<T> {
    /// Window size, stride and padding.
    pub config: PoolingConfig,
    /// The last input's shape; empty before the first forward.
    input_shape: Vec<usize>,
    out: Tensor<T>,
    dx: Tensor<T>,
}

impl<T: Float> AvgPooling<T> {
    /// An average pooling layer with `config`'s window, stride and padding.
    pub fn new(config: &PoolingConfig) -> Self {
        AvgPooling {
            config: config.clone(),
            input_shape: Vec::new(),
            out: Tensor::default(),
            dx: Tensor::default(),
        }
    }
}

impl<T: Float> Layer<T> for AvgPooling<T> {
    fn kind(&self) -> &'static str {
        "AvgPooling"
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.config.geometry("AvgPooling", input)?;
        Ok(vec![input[0], input[1], g.out_h, g.out_w])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        // One addition per window element (the division is folded in).
        let window = (self.config.size * self.config.size) as u64;
        self.output_shape(input)
            .map_or(0, |out| out.iter().product::<usize>() as u64 * window)
    }

    fn forward(&mut self, x: &Tensor<T>, _train: bool) -> Result<&Tensor<T>> {
        let g = self.config.geometry("AvgPooling", x.shape())?;
        let (n, c, h, w) = x.dims4()?;
        // count_include_pad: always the full window.
        let inv = T::one() / T::cast((g.filter_h * g.filter_w) as f64);
        self.out.resize(&[n, c, g.out_h, g.out_w]);
        let out_plane = g.out_pixels();
        let pool_plane = |x_p: &[T], out_p: &mut [T]| {
            if is_2x2(&g) {
                avg_pool_2x2(x_p, w, inv, out_p, g.out_w)
            } else {
                avg_pool_plane(x_p, &g, h, w, inv, out_p)
            }
        };
        // Fewer images than threads (inference at batch 1): half the planes
        // to each member of the team, if one is running and the planes are
        // worth more than handing them over (LeNet-5's 6×28×28 are, its
        // 16×10×10 are not; neither is when the members are distant).
        let planes = n * c;
        let by_team = planes >= 2
            && x.len() >= TEAM_MIN_VALUES
            && run_in_team(n, false, |team| {
                let half = planes / 2;
                let outs = self.out.data_mut().split_at_mut(half * out_plane);
                let xs = x.data().split_at(half * h * w);
                team.run_parts([(outs.0, xs.0), (outs.1, xs.1)], |_, (out, x)| {
                    for (out_p, x_p) in out.chunks_mut(out_plane).zip(x.chunks(h * w)) {
                        pool_plane(x_p, out_p);
                    }
                });
            });
        if !by_team {
            self.out
                .data_mut()
                .par_chunks_mut(out_plane)
                .zip(x.data().par_chunks(h * w))
                .with_min_len(planes_per_task(h * w))
                .for_each(|(out_p, x_p)| pool_plane(x_p, out_p));
        }
        self.input_shape.clear();
        self.input_shape.extend_from_slice(x.shape());
        Ok(&self.out)
    }

    fn backward(&mut self, dout: &Tensor<T>) -> Result<&Tensor<T>> {
        if self.input_shape.is_empty() {
            return Err(Error::BackwardBeforeForward("AvgPooling"));
        }
        check_dout("AvgPooling", Some(self.out.shape()), dout)?;
        let g = self.config.geometry("AvgPooling", &self.input_shape)?;
        let (h, w) = (self.input_shape[2], self.input_shape[3]);
        let inv = T::one() / T::cast((g.filter_h * g.filter_w) as f64);
        self.dx.resize(&self.input_shape);
        self.dx
            .data_mut()
            .par_chunks_mut(h * w)
            .zip(dout.data().par_chunks(g.out_pixels()))
            .with_min_len(planes_per_task(h * w))
            .for_each(|(dx_p, dout_p)| {
                dx_p.fill(T::zero());
                if is_2x2(&g) {
                    avg_pool_2x2_backward(dout_p, inv, dx_p, w, g.out_w)
                } else {
                    avg_pool_plane_backward(dout_p, &g, h, w, inv, dx_p)
                }
            });
        Ok(&self.dx)
    }

    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::AvgPool(self.config.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_layer;
    use crate::rng::Rng;

    #[rustfmt::skip]
    const X: [f64; 16] = [
        1., 2., 0., 1.,
        0., 3., 4., 2.,
        5., 0., 1., 1.,
        2., 1., 0., 6.,
    ];

    #[test]
    fn forward_and_backward_by_hand() {
        let x = Tensor::from_vec(&[1, 1, 4, 4], X.to_vec()).unwrap();
        let mut pool = AvgPooling::<f64>::new(&PoolingConfig::default());
        // (1+2+0+3)/4, (0+1+4+2)/4, (5+0+2+1)/4, (1+1+0+6)/4.
        assert_eq!(pool.forward(&x, true).unwrap().data(), [1.5, 1.75, 2., 2.]);
        let dout = Tensor::from_vec(&[1, 1, 2, 2], vec![4., 8., 12., 16.]).unwrap();
        #[rustfmt::skip]
        let want = [
            1., 1., 2., 2.,
            1., 1., 2., 2.,
            3., 3., 4., 4.,
            3., 3., 4., 4.,
        ];
        assert_eq!(pool.backward(&dout).unwrap().data(), want);
    }

    #[test]
    fn one_image_in_a_team_gives_the_same_planes() {
        let mut rng = Rng::new(6);
        // 5 planes: the members take 2 and 3.
        let x: Vec<f32> = (0..5 * 900).map(|_| rng.normal() as f32).collect();
        let x = Tensor::from_vec(&[1, 5, 30, 30], x).unwrap();
        assert!(x.len() >= TEAM_MIN_VALUES);
        for size in [2, 3] {
            let config = PoolingConfig {
                size,
                stride: 2,
                pad: 1,
            };
            let mut pool = AvgPooling::<f32>::new(&config);
            let alone = pool.forward(&x, false).unwrap().clone();
            // A pool of two threads, so that the team has its helper.
            let in_team = crate::parallel::team::test_pool(2).install(|| {
                crate::parallel::team::with_team(|| pool.forward(&x, false).unwrap().clone())
            });
            assert_eq!(alone, in_team);
            let g = config.geometry("AvgPooling", x.shape()).unwrap();
            let mut plane = vec![0.0; g.out_pixels()];
            let last = &x.data()[4 * 900..];
            avg_pool_plane(last, &g, 30, 30, 1.0 / (size * size) as f32, &mut plane);
            assert_eq!(&alone.data()[4 * g.out_pixels()..], &plane[..]);
        }
    }

    #[test]
    fn the_2x2_path_gives_the_general_loops_bits() {
        let mut rng = Rng::new(5);
        for (h, w) in [(4, 4), (5, 7), (28, 28), (2, 3)] {
            let config = PoolingConfig {
                size: 2,
                stride: 2,
                pad: 0,
            };
            let g = config.geometry("AvgPooling", &[1, 1, h, w]).unwrap();
            assert!(is_2x2(&g));
            let x: Vec<f32> = (0..h * w).map(|_| rng.normal() as f32).collect();
            let (mut general, mut fast) = (vec![0.0; g.out_pixels()], vec![1.0; g.out_pixels()]);
            avg_pool_plane(&x, &g, h, w, 0.25, &mut general);
            avg_pool_2x2(&x, w, 0.25, &mut fast, g.out_w);
            assert_eq!(general, fast, "forward {h}x{w}");
            let dout: Vec<f32> = (0..g.out_pixels()).map(|_| rng.normal() as f32).collect();
            let (mut general, mut fast) = (vec![0.0; h * w], vec![0.0; h * w]);
            avg_pool_plane_backward(&dout, &g, h, w, 0.25, &mut general);
            avg_pool_2x2_backward(&dout, 0.25, &mut fast, w, g.out_w);
            assert_eq!(general, fast, "backward {h}x{w}");
        }
    }

    #[test]
    fn padding_counts_in_the_divisor() {
        // 3x3 windows, stride 2, pad 1 on 4x4: OH = (4 + 2 − 3)/2 + 1 = 2.
        // Window rows/cols: output 0 covers [−1, 2) → real 0..2; output 1
        // covers [1, 4). Every sum is divided by 9, padding included.
        let x = Tensor::from_vec(&[1, 1, 4, 4], X.to_vec()).unwrap();
        let mut pool = AvgPooling::<f64>::new(&PoolingConfig {
            size: 3,
            stride: 2,
            pad: 1,
        });
        let out = pool.forward(&x, true).unwrap().data().to_vec();
        // rows 0-1 × cols 0-1: 6; rows 0-1 × cols 1-3: 12;
        // rows 1-3 × cols 0-1: 11; rows 1-3 × cols 1-3: 18.
        for (o, want) in out.iter().zip([6. / 9., 12. / 9., 11. / 9., 18. / 9.]) {
            assert!((o - want).abs() < 1e-15, "{o} vs {want}");
        }
        // dout = 9 everywhere: each real pixel gets 1 per window covering it.
        // Row 1 and column 1 lie in both windows of their axis.
        let dx = pool
            .backward(&Tensor::from_vec(&[1, 1, 2, 2], vec![9.; 4]).unwrap())
            .unwrap();
        #[rustfmt::skip]
        let want = [
            1., 2., 1., 1.,
            2., 4., 2., 2.,
            1., 2., 1., 1.,
            1., 2., 1., 1.,
        ];
        assert_eq!(dx.data(), want);
    }

    #[test]
    fn gradients_match_numerical() {
        for config in [
            PoolingConfig::default(),
            PoolingConfig {
                size: 3,
                stride: 2,
                pad: 1,
            },
        ] {
            let mut pool = AvgPooling::<f64>::new(&config);
            for (name, err) in check_layer(&mut pool, &[2, 3, 6, 6], 5).unwrap() {
                assert!(err <= 1e-6, "{config:?} {name}: {err}");
            }
        }
    }

    #[test]
    fn errors_instead_of_panics() {
        let mut pool = AvgPooling::<f32>::new(&PoolingConfig::default());
        assert!(matches!(
            pool.backward(&Tensor::zeros(&[1, 1, 1, 1])),
            Err(Error::BackwardBeforeForward("AvgPooling"))
        ));
        assert!(pool.forward(&Tensor::zeros(&[1, 1, 1, 1]), false).is_err());
        assert!(matches!(
            pool.forward(&Tensor::zeros(&[1, 4]), false),
            Err(Error::Shape(_))
        ));
        pool.forward(&Tensor::zeros(&[1, 1, 4, 4]), false).unwrap();
        assert!(matches!(
            pool.backward(&Tensor::zeros(&[1, 1, 4, 4])),
            Err(Error::Shape(_))
        ));
        let mut bad = AvgPooling::<f32>::new(&PoolingConfig {
            size: 2,
            stride: 0,
            pad: 0,
        });
        assert!(matches!(
            bad.forward(&Tensor::zeros(&[1, 1, 4, 4]), false),
            Err(Error::Geometry(_))
        ));
        assert_eq!(pool.flops(&[1, 1, 4, 4]), 16);
    }
}
