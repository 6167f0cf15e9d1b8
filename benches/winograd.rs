//! Criterion benchmark: one 3×3 convolution forward on `deep`'s five 3×3
//! layers with 16 or more input channels, by the route the layer takes
//! (pad, `im2col_wide`, one product, `narrow`) against Winograd F(2×2, 3×3)
//! (`experiments/winograd.rs`: input transform, 16 products, output transform).
//! On one thread, for a group of 4 images (Winograd's products take the 4
//! images' tiles together; im2col goes image by image), with the filter
//! transform, made once per batch in a layer, left out.
//!
//! ```text
//! cargo bench --bench winograd
//! ```

use convnet::kernels::gemm::{matmul, MatMut, MatRef};
use convnet::kernels::im2col::ConvGeometry;
use convnet::kernels::im2col_wide::{im2col_wide, narrow, pad_image, WideGeometry};
#[path = "../experiments/winograd.rs"]
#[allow(dead_code, unused_imports)]
mod winograd;

use convnet::Rng;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;
use winograd::{
    multiply, transform_filters, transform_input, transform_output, WinogradGeometry,
    TILE_POSITIONS,
};

/// Images per Winograd product.
const GROUP: usize = 4;

fn bench_winograd(c: &mut Criterion) {
    // (C, H, FN, pad): deep's conv2 … conv6
    let layers = [
        (16, 28, 16, 1),
        (16, 14, 32, 1),
        (32, 14, 32, 2),
        (32, 8, 64, 1),
        (64, 8, 64, 1),
    ];
    let mut rng = Rng::new(3);
    let mut group = c.benchmark_group("winograd");
    for (channels, h, filters, pad) in layers {
        let g = ConvGeometry::new((channels, h, h), (3, 3), 1, pad).expect("valid geometry");
        let label = format!("{filters}x3x3_on_{channels}x{h}x{h}_p{pad}");
        let mut normals =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
        let images: Vec<Vec<f32>> = (0..GROUP).map(|_| normals(g.image_len())).collect();
        let weight = normals(filters * g.col_width());
        let bias = normals(filters);
        let mut out = vec![0.0f32; filters * g.out_pixels()];

        let wide = WideGeometry::new(g);
        let mut xpad = vec![0.0f32; wide.padded_len()];
        let mut col = vec![0.0f32; wide.col_len()];
        let mut wide_out = vec![0.0f32; filters * wide.wide_pixels()];
        group.bench_function(BenchmarkId::new("im2col", &label), |bench| {
            bench.iter(|| {
                for x in &images {
                    pad_image(black_box(x), &wide, &mut xpad);
                    im2col_wide(&xpad, &wide, &mut col);
                    matmul(
                        MatMut::new(&mut wide_out, filters, wide.wide_pixels()),
                        MatRef::new(&weight, filters, g.col_width()),
                        MatRef::new(&col, g.col_width(), wide.wide_pixels()),
                        false,
                        false,
                    );
                    narrow(&wide_out, &wide, &bias, black_box(&mut out), |v| v);
                }
            })
        });

        let wg = WinogradGeometry::new(g).expect("3x3, stride 1");
        let group_tiles = GROUP * wg.tiles();
        let mut work = Vec::new();
        let mut u = vec![0.0f32; TILE_POSITIONS * filters * channels];
        transform_filters(&weight, filters, channels, false, &mut work, &mut u);
        let mut v = vec![0.0f32; TILE_POSITIONS * channels * group_tiles];
        let mut m = vec![0.0f32; TILE_POSITIONS * filters * group_tiles];
        group.bench_function(BenchmarkId::new("winograd", &label), |bench| {
            bench.iter(|| {
                for (i, x) in images.iter().enumerate() {
                    transform_input(
                        black_box(x),
                        &wg,
                        &mut work,
                        &mut v,
                        group_tiles,
                        i * wg.tiles(),
                    );
                }
                multiply(&u, &v, &mut m, filters, channels, group_tiles);
                for i in 0..GROUP {
                    let first = i * wg.tiles();
                    let (bias, out) = (Some(&bias[..]), black_box(&mut out[..]));
                    transform_output(&m, &wg, filters, group_tiles, first, bias, &mut work, out);
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = winograd;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_winograd
}
criterion_main!(winograd);
