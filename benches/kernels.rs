//! Criterion benchmarks of the kernels behind SimpleConvNet training on a
//! batch of 100 MNIST-sized (1×28×28) images, all in `f32`:
//!
//! * `gemm`: the matrix products of the network, `convnet::kernels::gemm::matmul`
//!   (single-threaded, and for the large shapes also split over the rayon
//!   pool) against `matrixmultiply::sgemm` (single-threaded):
//!   - `a_conv_image`: convolution forward for one image, `W·col`,
//!     M=30 (filters), K=25 (5×5), N=576 (24×24 pixels), as the layer runs it;
//!   - `b_conv_batch`: the same for the whole batch in the book's layout,
//!     `col^T·W^T`, M=57600, K=25, N=30 (`W^T` is a transposed view);
//!   - `c_fc1`: the fc1 Affine forward `x·W`, M=100, K=4320, N=100.
//!
//!   Throughput is `2·M·N·K` elements, so criterion's "elem/s" reads as FLOP/s.
//! * `im2col`: `im2col_batch` and `col2im_batch` on 100 images, for the
//!   network's 1×28×28 with a 5×5 filter, and a padded case (16×14×14, 3×3,
//!   pad 1) with stride 1 and 2; and, on one thread, image after image, the
//!   book-layout kernels the layer used to call (`im2col_image`,
//!   `col2im_image`) against the padded wide-row ones it calls now
//!   (`pad_image` + `im2col_wide`, `col2im_wide` + `unpad_image`), also on
//!   `deep`'s second layer (16×28×28, 3×3, pad 1).
//! * `direct_conv`: on one thread, one image, the 3×3 forward product on
//!   the wide grid computed straight from the padded image
//!   (`kernels::direct_conv::conv_wide`) against unrolling and `gemm`
//!   (`im2col_wide` + `matmul`), padding included in both, for `deep`'s
//!   second layer (16 → 16 on 28×28) and `fashion-fast`'s (24 → 24);
//!   skipped where the CPU has no AVX-512.
//! * `direct_dw`: on one thread, one image's weight gradient of a
//!   one-channel first layer from the padded image and `dout` on the wide
//!   grid (`kernels::direct_dw::add_image`): SimpleConvNet's conv1 (30
//!   filters 5×5 on 28×28) and `deep`'s (16 filters 3×3, pad 1); skipped
//!   where the CPU has no AVX-512.
//! * `row_product`: on one thread, one image's product behind the
//!   channels-last weight gradient for one filter row
//!   (`kernels::row_product`, X's overlapping rows read in place) against
//!   `gemm` on the same strided view, on fashion-fast's and `deep`'s 3×3
//!   layers; skipped where the CPU has no AVX-512.
//! * `winograd`: on one thread, four images at a time, the 3×3 forward by
//!   Winograd's F(4×4, 3×3) (`kernels::winograd`: input transforms, the 36
//!   products over the four images' tiles, output transforms onto the wide
//!   grid) against padding and the direct kernel image by image, on the
//!   3×3 layers of `deep` and `fashion-fast`, the first (one channel)
//!   included (the filter transform, once per batch, left out); skipped
//!   where the CPU has no AVX-512.
//! * `convolution`: one `Convolution` layer (30 filters 5×5 on 1×28×28)
//!   forward, and forward + backward.
//! * `pooling`: `MaxPooling` 2×2 stride 2 on (100, 30, 24, 24), forward and
//!   forward + backward.
//! * `train_step`: one SimpleConvNet training step, `net.gradient` and an
//!   Adam step, on 100 random images.
//!
//! Buffers and layers are made once, outside the timed closures; the layers
//! reuse their own buffers from the second call on. The parallel variants and
//! the layers use the global rayon pool (set its size with `RAYON_NUM_THREADS`).
//!
//! ```text
//! cargo bench --bench kernels            # everything (about 1.5 minutes)
//! cargo bench --bench kernels -- gemm    # one group (criterion's name filter)
//! ```

use convnet::kernels::direct_conv::{conv_wide, cpu_applies};
use convnet::kernels::direct_dw;
use convnet::kernels::gemm::{matmul, MatMut, MatRef};
use convnet::kernels::im2col::{
    col2im_batch, col2im_image, im2col_batch, im2col_image, ConvGeometry,
};
use convnet::kernels::im2col_wide::{
    col2im_wide, im2col_wide, pad_image, unpad_image, WideGeometry,
};
use convnet::kernels::row_product::{self, RowProduct};
use convnet::kernels::winograd::{self, Dest, Source, Tiling, WeightLayout};
use convnet::layers::{Convolution, ConvolutionConfig, Layer, MaxPooling, PoolingConfig};
use convnet::networks::{simple_convnet, SimpleConvNetConfig};
use convnet::optim::{Adam, AdamConfig, Optimizer};
use convnet::{Rng, Tensor};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::hint::black_box;
use std::time::Duration;

/// Batch size of every benchmark.
const BATCH: usize = 100;

/// `len` standard normal numbers.
fn random_vec(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| rng.normal() as f32).collect()
}

/// A random tensor of `shape`.
fn random_tensor(shape: &[usize], rng: &mut Rng) -> Tensor<f32> {
    let len = shape.iter().product();
    Tensor::from_vec(shape, random_vec(len, rng)).expect("length matches the shape")
}

/// One GEMM shape `C (M×N) = A (M×K) · B (K×N)`, A row-major.
struct GemmShape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    /// B is stored as a row-major N×K matrix and used transposed (`W^T`).
    b_transposed: bool,
    /// Also bench `matmul` with `parallel = true`.
    parallel: bool,
}

impl GemmShape {
    fn id(&self, variant: &str) -> BenchmarkId {
        BenchmarkId::new(
            format!("{}_{}x{}x{}", self.name, self.m, self.k, self.n),
            variant,
        )
    }

    fn b_view<'a>(&self, b: &'a [f32]) -> MatRef<'a, f32> {
        if self.b_transposed {
            MatRef::new(b, self.n, self.k).t()
        } else {
            MatRef::new(b, self.k, self.n)
        }
    }

    /// (row stride, column stride) of B for `matrixmultiply`.
    fn b_strides(&self) -> (isize, isize) {
        if self.b_transposed {
            (1, self.k as isize)
        } else {
            (self.n as isize, 1)
        }
    }

    fn convnet(&self, c: &mut [f32], a: &[f32], b: &[f32], parallel: bool) {
        matmul(
            MatMut::new(c, self.m, self.n),
            MatRef::new(a, self.m, self.k),
            self.b_view(b),
            false,
            parallel,
        );
    }

    fn matrixmultiply(&self, c: &mut [f32], a: &[f32], b: &[f32]) {
        let (m, k, n) = (self.m, self.k, self.n);
        assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
        let (rsb, csb) = self.b_strides();
        // SAFETY: the three slices hold the M×K, K×N and M×N matrices that the
        // strides describe (checked above), and `c` does not alias `a` or `b`.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                rsb,
                csb,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }
}

fn bench_gemm(c: &mut Criterion) {
    let shapes = [
        GemmShape {
            name: "a_conv_image",
            m: 30,
            k: 25,
            n: 576,
            b_transposed: false,
            parallel: false,
        },
        GemmShape {
            name: "b_conv_batch",
            m: BATCH * 576,
            k: 25,
            n: 30,
            b_transposed: true,
            parallel: true,
        },
        GemmShape {
            name: "c_fc1",
            m: BATCH,
            k: 4320,
            n: 100,
            b_transposed: false,
            parallel: true,
        },
    ];
    eprintln!(
        "gemm: parallel variants use {} rayon threads",
        rayon::current_num_threads()
    );
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("gemm");
    for shape in &shapes {
        let (m, k, n) = (shape.m, shape.k, shape.n);
        let a = random_vec(m * k, &mut rng);
        let b = random_vec(k * n, &mut rng);
        let mut out = vec![0.0f32; m * n];

        // Both libraries must compute the same product.
        let mut want = vec![0.0f32; m * n];
        shape.matrixmultiply(&mut want, &a, &b);
        shape.convnet(&mut out, &a, &b, false);
        let max_err = out
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_err <= 1e-3 * (k as f32).sqrt(),
            "{}: gemm and matrixmultiply differ by {max_err}",
            shape.name
        );

        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(shape.id("convnet_1t"), |bench| {
            bench.iter(|| shape.convnet(black_box(&mut out), black_box(&a), black_box(&b), false))
        });
        if shape.parallel {
            group.bench_function(shape.id("convnet_par"), |bench| {
                bench
                    .iter(|| shape.convnet(black_box(&mut out), black_box(&a), black_box(&b), true))
            });
        }
        group.bench_function(shape.id("matrixmultiply_1t"), |bench| {
            bench.iter(|| shape.matrixmultiply(black_box(&mut out), black_box(&a), black_box(&b)))
        });
    }
    group.finish();
}

fn bench_im2col(c: &mut Criterion) {
    // ((C, H, W), filter, stride, pad)
    let cases = [
        ((1, 28, 28), 5, 1, 0),
        ((16, 14, 14), 3, 1, 1),
        ((16, 14, 14), 3, 2, 1),
    ];
    let mut rng = Rng::new(2);
    let mut group = c.benchmark_group("im2col");
    for ((channels, h, w), filter, stride, pad) in cases {
        let g = ConvGeometry::new((channels, h, w), (filter, filter), stride, pad)
            .expect("valid geometry");
        let label = format!("{channels}x{h}x{w}_f{filter}_s{stride}_p{pad}");
        let x = random_vec(BATCH * g.image_len(), &mut rng);
        let mut col = vec![0.0f32; BATCH * g.col_width() * g.out_pixels()];
        let mut dx = vec![0.0f32; x.len()];
        im2col_batch(&x, &g, &mut col);
        group.bench_function(BenchmarkId::new("im2col_batch", &label), |bench| {
            bench.iter(|| im2col_batch(black_box(&x), &g, black_box(&mut col)))
        });
        group.bench_function(BenchmarkId::new("col2im_batch", &label), |bench| {
            bench.iter(|| col2im_batch(black_box(&col), &g, black_box(&mut dx)))
        });
    }
    // One thread, one image's buffers reused image after image, as in the layer.
    let cases = [
        ((1, 28, 28), 5, 0),
        ((16, 28, 28), 3, 1),
        ((16, 14, 14), 3, 1),
    ];
    for ((channels, h, w), filter, pad) in cases {
        let g =
            ConvGeometry::new((channels, h, w), (filter, filter), 1, pad).expect("valid geometry");
        let wg = WideGeometry::new(g);
        let label = format!("{channels}x{h}x{w}_f{filter}_p{pad}");
        let x = random_vec(BATCH * g.image_len(), &mut rng);
        let mut col = vec![0.0f32; wg.col_len()];
        let mut xpad = vec![0.0f32; wg.padded_len()];
        let mut dx = vec![0.0f32; g.image_len()];
        group.bench_function(BenchmarkId::new("im2col_image", &label), |bench| {
            bench.iter(|| {
                for x_n in x.chunks(g.image_len()) {
                    im2col_image(black_box(x_n), &g, black_box(&mut col));
                }
            })
        });
        group.bench_function(BenchmarkId::new("pad_im2col_wide", &label), |bench| {
            bench.iter(|| {
                for x_n in x.chunks(g.image_len()) {
                    pad_image(black_box(x_n), &wg, &mut xpad);
                    im2col_wide(&xpad, &wg, black_box(&mut col));
                }
            })
        });
        group.bench_function(BenchmarkId::new("col2im_image", &label), |bench| {
            bench.iter(|| {
                for _ in 0..BATCH {
                    col2im_image(black_box(&col), &g, black_box(&mut dx));
                }
            })
        });
        group.bench_function(BenchmarkId::new("col2im_wide_unpad", &label), |bench| {
            bench.iter(|| {
                for _ in 0..BATCH {
                    col2im_wide(black_box(&col), &wg, &mut xpad);
                    unpad_image(&xpad, &wg, black_box(&mut dx));
                }
            })
        });
    }
    group.finish();
}

fn bench_direct_conv(c: &mut Criterion) {
    if !cpu_applies::<f32>() {
        return;
    }
    let mut rng = Rng::new(4);
    let mut group = c.benchmark_group("direct_conv");
    for (channels, filters) in [(16, 16), (24, 24)] {
        let g = ConvGeometry::new((channels, 28, 28), (3, 3), 1, 1).expect("valid geometry");
        let wg = WideGeometry::new(g);
        let label = format!("{channels}x28x28_to_{filters}");
        let x = random_vec(g.image_len(), &mut rng);
        let weight = random_vec(filters * g.col_width(), &mut rng);
        let (mut xpad, mut col) = (vec![0.0f32; wg.padded_len()], vec![0.0f32; wg.col_len()]);
        let mut wide = vec![0.0f32; filters * wg.wide_pixels()];
        let flops = 2 * filters * g.col_width() * g.out_pixels();
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new("pad_direct", &label), |bench| {
            bench.iter(|| {
                pad_image(black_box(&x), &wg, &mut xpad);
                assert!(conv_wide(
                    &xpad,
                    &wg,
                    &weight,
                    filters,
                    black_box(&mut wide)
                ));
            })
        });
        group.bench_function(BenchmarkId::new("pad_im2col_wide_gemm", &label), |bench| {
            bench.iter(|| {
                pad_image(black_box(&x), &wg, &mut xpad);
                im2col_wide(&xpad, &wg, &mut col);
                let k = g.col_width();
                matmul(
                    MatMut::new(black_box(&mut wide), filters, wg.wide_pixels()),
                    MatRef::new(&weight, filters, k),
                    MatRef::new(&col, k, wg.wide_pixels()),
                    false,
                    false,
                );
            })
        });
    }
    group.finish();
}

/// A one-channel first layer's weight gradient for one image
/// (`kernels::direct_dw`), its sums added to the lanes of the last.
fn bench_direct_dw(c: &mut Criterion) {
    if !cpu_applies::<f32>() {
        return;
    }
    let mut rng = Rng::new(7);
    let mut group = c.benchmark_group("direct_dw");
    for (filters, size, pad) in [(30, 5, 0), (16, 3, 1)] {
        let g = ConvGeometry::new((1, 28, 28), (size, size), 1, pad).expect("valid geometry");
        let wg = WideGeometry::new(g);
        let label = format!("1x28x28_to_{filters}x{size}x{size}");
        let mut xpad = vec![0.0f32; wg.padded_len()];
        pad_image(&random_vec(g.image_len(), &mut rng), &wg, &mut xpad);
        let wide = random_vec(filters * wg.wide_pixels(), &mut rng);
        let mut lanes = vec![0.0f32; direct_dw::lanes_len(&wg, filters)];
        let flops = 2 * filters * g.col_width() * g.out_pixels();
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new("add_image", &label), |bench| {
            bench.iter(|| {
                direct_dw::add_image(black_box(&xpad), &wg, &wide, filters, &mut lanes, false)
            })
        });
    }
    group.finish();
}

/// The channels-last weight gradient's product for one image and one
/// filter row, `dW_fy (+)= wide · X_fy` with `X_fy`'s rows `C` apart
/// (`layers/convolution/weight_grad.rs`), by `kernels::row_product` and by
/// `gemm`, on one thread: fashion-fast's conv2 (24 → 24 on 28×28), conv3
/// (24 → 48 on 14×14) and conv4 (48 → 48), and `deep`'s conv2 (16 → 16)
/// and conv4 (32 → 32 on 14×14).
fn bench_row_product(c: &mut Criterion) {
    if !row_product::applies::<f32>() {
        return;
    }
    let mut rng = Rng::new(6);
    let mut group = c.benchmark_group("row_product");
    for (channels, filters, size) in [
        (24, 24, 28),
        (24, 48, 14),
        (48, 48, 14),
        (16, 16, 28),
        (32, 32, 14),
    ] {
        let g = ConvGeometry::new((channels, size, size), (3, 3), 1, 1).expect("valid geometry");
        let wg = WideGeometry::new(g);
        let (pixels, len, k) = (wg.wide_pixels(), 3 * channels, g.col_width());
        let label = format!("{channels}x{size}x{size}_to_{filters}");
        let wide = random_vec(filters * pixels, &mut rng);
        let x = random_vec(channels * (pixels + 2 * wg.padded_w + 2), &mut rng);
        let mut dw = vec![0.0f32; filters * k];
        let shape = RowProduct {
            filters,
            pixels,
            len,
            x_row: channels,
            out_row: k,
        };
        group.throughput(Throughput::Elements((2 * filters * pixels * len) as u64));
        group.bench_function(BenchmarkId::new("row_product", &label), |bench| {
            bench.iter(|| {
                assert!(row_product::product(
                    &shape,
                    black_box(&wide),
                    &x,
                    &mut dw,
                    true
                ))
            })
        });
        group.bench_function(BenchmarkId::new("gemm", &label), |bench| {
            bench.iter(|| {
                matmul(
                    MatMut::with_row_stride(&mut dw, filters, len, k),
                    MatRef::new(black_box(&wide), filters, pixels),
                    MatRef::strided(&x, pixels, len, channels, 1),
                    true,
                    false,
                )
            })
        });
    }
    group.finish();
}

/// Image `i` of the images `x` padded into its slot of `xpad`, which it returns.
fn pad_nth<'a>(x: &[f32], wg: &WideGeometry, xpad: &'a mut [f32], i: usize) -> &'a mut [f32] {
    let len = wg.g.image_len();
    let xpad = &mut xpad[i * wg.padded_len()..][..wg.padded_len()];
    pad_image(black_box(&x[i * len..][..len]), wg, xpad);
    xpad
}

fn bench_winograd(c: &mut Criterion) {
    if !cpu_applies::<f32>() {
        return;
    }
    let mut rng = Rng::new(5);
    let mut group = c.benchmark_group("winograd");
    const IMAGES: usize = 4;
    for (channels, filters, side) in [
        (1, 24, 28),
        (16, 16, 28),
        (24, 24, 28),
        (24, 48, 14),
        (48, 48, 14),
        (32, 64, 8),
    ] {
        let g = ConvGeometry::new((channels, side, side), (3, 3), 1, 1).expect("valid geometry");
        let wg = WideGeometry::new(g);
        let label = format!("{channels}x{side}x{side}_to_{filters}_x{IMAGES}");
        let x = random_vec(IMAGES * g.image_len(), &mut rng);
        let weight = random_vec(filters * g.col_width(), &mut rng);
        let mut xpad = vec![0.0f32; IMAGES * wg.padded_len()];
        let mut wide = vec![0.0f32; IMAGES * filters * wg.wide_pixels()];
        let flops = 2 * filters * g.col_width() * g.out_pixels() * IMAGES;
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new("pad_direct", &label), |bench| {
            bench.iter(|| {
                for i in 0..IMAGES {
                    let xpad = pad_nth(&x, &wg, &mut xpad, i);
                    let wide =
                        &mut wide[i * filters * wg.wide_pixels()..][..filters * wg.wide_pixels()];
                    assert!(conv_wide(xpad, &wg, &weight, filters, black_box(wide)));
                }
            })
        });
        let tiling = Tiling::new(channels, filters, g.out_h, g.out_w);
        let plane = (IMAGES - 1) * tiling.image_tiles() + tiling.image_span();
        let mut u = vec![0.0f32; tiling.u_len()];
        winograd::transform_filters(&weight, WeightLayout::forward(channels), &tiling, &mut u);
        let mut v = vec![0.0f32; tiling.v_len(plane)];
        let mut m = vec![0.0f32; tiling.m_len(plane)];
        let mut phases = Vec::new();
        let source = Source {
            rows: wg.padded_h,
            cols: wg.padded_w,
            row: wg.padded_w,
            plane: wg.padded_h * wg.padded_w,
            shift: 0,
        };
        group.bench_function(BenchmarkId::new("pad_winograd", &label), |bench| {
            bench.iter(|| {
                for i in 0..IMAGES {
                    let xpad = pad_nth(&x, &wg, &mut xpad, i);
                    let offset = i * tiling.image_tiles();
                    winograd::transform_input(
                        xpad,
                        source,
                        &tiling,
                        &mut phases,
                        &mut v,
                        plane,
                        offset,
                        true,
                    );
                }
                winograd::multiply(
                    &u,
                    &v,
                    &tiling,
                    plane,
                    IMAGES * tiling.image_tiles(),
                    &mut m,
                    true,
                );
                for i in 0..IMAGES {
                    let wide =
                        &mut wide[i * filters * wg.wide_pixels()..][..filters * wg.wide_pixels()];
                    let dest = Dest {
                        plane: wg.wide_pixels(),
                        offset: 0,
                        row: wg.wide_w,
                    };
                    let offset = i * tiling.image_tiles();
                    winograd::transform_output(
                        &m,
                        &tiling,
                        plane,
                        offset,
                        &mut phases,
                        dest,
                        black_box(wide),
                        true,
                    );
                }
            })
        });
    }
    group.finish();
}

fn bench_convolution(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let config = ConvolutionConfig::default(); // 30 filters 5×5, stride 1, pad 0
    let mut conv = Convolution::<f32>::new(&config, &mut rng).unwrap();
    let x = random_tensor(&[BATCH, 1, 28, 28], &mut rng);
    let dout = random_tensor(&[BATCH, 30, 24, 24], &mut rng);
    // First call sizes the layer's buffers.
    conv.forward(&x, true).expect("forward");
    conv.backward(&dout).expect("backward");

    let mut group = c.benchmark_group("convolution");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("30x5x5_on_1x28x28/forward", |bench| {
        bench.iter(|| {
            black_box(conv.forward(black_box(&x), true).expect("forward"));
        })
    });
    group.bench_function("30x5x5_on_1x28x28/forward_backward", |bench| {
        bench.iter(|| {
            conv.forward(black_box(&x), true).expect("forward");
            black_box(conv.backward(black_box(&dout)).expect("backward"));
        })
    });
    group.finish();
}

fn bench_pooling(c: &mut Criterion) {
    let mut rng = Rng::new(4);
    let mut pool = MaxPooling::<f32>::new(&PoolingConfig::default()); // 2×2, stride 2
    let x = random_tensor(&[BATCH, 30, 24, 24], &mut rng);
    let dout = random_tensor(&[BATCH, 30, 12, 12], &mut rng);
    pool.forward(&x, true).expect("forward");
    pool.backward(&dout).expect("backward");

    let mut group = c.benchmark_group("pooling");
    group.bench_function("max2x2_s2_on_30x24x24/forward", |bench| {
        bench.iter(|| {
            black_box(pool.forward(black_box(&x), true).expect("forward"));
        })
    });
    group.bench_function("max2x2_s2_on_30x24x24/forward_backward", |bench| {
        bench.iter(|| {
            pool.forward(black_box(&x), true).expect("forward");
            black_box(pool.backward(black_box(&dout)).expect("backward"));
        })
    });
    group.finish();
}

fn bench_train_step(c: &mut Criterion) {
    let mut rng = Rng::new(5);
    let mut net =
        simple_convnet::<f32>(&SimpleConvNetConfig::default(), &mut rng).expect("network");
    let mut optimizer = Adam::<f32>::new(AdamConfig::default());
    let pixels: Vec<f32> = (0..BATCH * 784).map(|_| rng.uniform() as f32).collect();
    let x = Tensor::from_vec(&[BATCH, 1, 28, 28], pixels).expect("batch");
    let labels: Vec<usize> = (0..BATCH).map(|_| rng.below(10)).collect();
    // First step sizes the buffers and the optimizer's state.
    net.gradient(&x, &labels).expect("gradient");
    optimizer.step(&mut net.params());

    let mut group = c.benchmark_group("train_step");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("simple_convnet_adam", |bench| {
        bench.iter(|| {
            black_box(net.gradient(black_box(&x), &labels).expect("gradient"));
            optimizer.step(&mut net.params());
        })
    });
    group.finish();
}

criterion_group! {
    name = kernels;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_gemm, bench_im2col, bench_direct_conv, bench_direct_dw, bench_row_product, bench_winograd, bench_convolution, bench_pooling, bench_train_step
}
criterion_main!(kernels);
