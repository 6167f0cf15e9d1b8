//! Tests of the wide unrolling against the book's im2col/col2im.

use super::*;
use crate::kernels::im2col::{col2im_image, im2col_image};
use crate::rng::Rng;
use proptest::prelude::*;

/// Without its junk columns, the wide col of `g` is the book's col, and
/// col2im through the wide grid gives the book's col2im bit for bit
/// (the junk columns only ever add zeros).
fn assert_wide_equals_books(g: ConvGeometry, seed: u64) {
    let wg = WideGeometry::new(g);
    let mut rng = Rng::new(seed);
    let x: Vec<f64> = (0..g.image_len()).map(|_| rng.normal()).collect();
    let (k, pixels) = (g.col_width(), g.out_pixels());

    let mut want = vec![f64::NAN; k * pixels];
    im2col_image(&x, &g, &mut want);
    let mut xpad = vec![f64::NAN; wg.padded_len()];
    pad_image(&x, &wg, &mut xpad);
    let mut col = vec![f64::NAN; wg.col_len()];
    im2col_wide(&xpad, &wg, &mut col);
    // Junk columns and row ends are written too (the products read them).
    assert!(col.iter().all(|v| v.is_finite()));
    let mut got = vec![f64::NAN; k * pixels];
    narrow(&col, &wg, &vec![0.0; k], &mut got, |v| v);
    assert_eq!(got, want);

    let dcol: Vec<f64> = (0..k * pixels).map(|_| rng.normal()).collect();
    let mut want_dx = vec![f64::NAN; g.image_len()];
    col2im_image(&dcol, &g, &mut want_dx);
    let mut dcol_wide = vec![f64::NAN; wg.col_len()];
    widen(&dcol, &wg, &mut dcol_wide);
    assert!(dcol_wide.iter().all(|v| v.is_finite()));
    let mut dxpad = vec![f64::NAN; wg.padded_len()];
    col2im_wide(&dcol_wide, &wg, &mut dxpad);
    let mut dx = vec![f64::NAN; g.image_len()];
    unpad_image(&dxpad, &wg, &mut dx);
    assert_eq!(dx, want_dx);
}

#[test]
fn runs_of_8_and_16_on_the_books_grid() {
    // 3×3 on 8×8 with padding 1 (deep's conv5/conv6), 4×4 on 19×19 →
    // 16 wide, 3×3 on 10×10 and 5×5 on 12×12 → 8 wide: the
    // fixed-size runs of copy_runs/add_runs; and 7 wide, the loop.
    for (c, h, f, pad, out_w) in [
        (3, 8, 3, 1, 8),
        (2, 19, 4, 0, 16),
        (2, 10, 3, 0, 8),
        (1, 12, 5, 0, 8),
        (2, 9, 3, 0, 7),
    ] {
        let g = ConvGeometry::new((c, h, h), (f, f), 1, pad).unwrap();
        let wg = WideGeometry::new(g);
        assert_eq!((g.out_w, wg.wide_w), (out_w, out_w), "{h}×{h}, {f}×{f}");
        assert_wide_equals_books(g, h as u64);
    }
}

#[test]
fn filter_rows_of_3_added_back_in_one_pass() {
    // One run per row with a 3-wide filter (deep's conv2 to conv4, then
    // smaller ones): col2im_wide_3, the same sums as the book's col2im to
    // the bit.
    for (c, h, w, pad) in [
        (2, 28, 28, 1),
        (3, 14, 14, 2),
        (1, 2, 13, 1),
        (2, 16, 14, 0),
    ] {
        let g = ConvGeometry::new((c, h, w), (3, 3), 1, pad).unwrap();
        let wg = WideGeometry::new(g);
        assert!(wg.one_run(), "{h}×{w}");
        assert_wide_equals_books(g, (h * w) as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// [`assert_wide_equals_books`] on any geometry.
    #[test]
    fn wide_unrolling_equals_the_books(
        c in 1usize..4, h in 1usize..32, w in 1usize..32,
        fh in 1usize..5, fw in 1usize..5, stride in 1usize..5, pad in 0usize..3,
        seed in any::<u64>(),
    ) {
        prop_assume!(fh <= h + 2 * pad && fw <= w + 2 * pad);
        let g = ConvGeometry::new((c, h, w), (fh, fw), stride, pad).unwrap();
        assert_wide_equals_books(g, seed);
    }

    /// A band of output rows unrolled on its own ([`pad_band`],
    /// [`WideGeometry::band`]) is those rows' columns of the whole col,
    /// and fits in the whole image's buffers.
    #[test]
    fn a_band_unrolls_to_its_columns_of_the_whole(
        c in 1usize..4, h in 1usize..40, w in 1usize..40,
        fh in 1usize..6, fw in 1usize..6, stride in 1usize..5, pad in 0usize..3,
        cut in 0.0f64..1.0, seed in any::<u64>(),
    ) {
        prop_assume!(fh <= h + 2 * pad && fw <= w + 2 * pad);
        let g = ConvGeometry::new((c, h, w), (fh, fw), stride, pad).unwrap();
        prop_assume!(g.out_h >= 2);
        let wg = WideGeometry::new(g);
        let mut rng = Rng::new(seed);
        let x: Vec<f64> = (0..g.image_len()).map(|_| rng.normal()).collect();
        let mut whole = vec![f64::NAN; g.col_width() * g.out_pixels()];
        im2col_image(&x, &g, &mut whole);
        let split = 1 + (cut * (g.out_h - 1) as f64) as usize;
        for rows in [0..split, split..g.out_h] {
            let band = wg.band(rows.clone());
            // A band fits in the buffers sized for the whole image.
            prop_assert!(band.padded_len() <= wg.padded_len());
            prop_assert!(band.wide_pixels() <= wg.wide_pixels());
            let mut xpad = vec![f64::NAN; band.padded_len()];
            pad_band(&x, &wg, rows.clone(), &mut xpad);
            let mut col = vec![f64::NAN; band.col_len()];
            im2col_wide(&xpad, &band, &mut col);
            let mut got = vec![f64::NAN; g.col_width() * band.g.out_pixels()];
            narrow(&col, &band, &vec![0.0; g.col_width()], &mut got, |v| v);
            let columns = rows.start * g.out_w..rows.end * g.out_w;
            let want: Vec<f64> = whole
                .chunks_exact(g.out_pixels())
                .flat_map(|row| row[columns.clone()].iter().copied())
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    /// <im2col_wide(xpad), y> = <xpad, col2im_wide(y)> for any y.
    #[test]
    fn col2im_wide_is_the_adjoint_of_im2col_wide(
        c in 1usize..4, h in 1usize..32, w in 1usize..32,
        fh in 1usize..5, fw in 1usize..5, stride in 1usize..5, pad in 0usize..3,
        seed in any::<u64>(),
    ) {
        prop_assume!(fh <= h + 2 * pad && fw <= w + 2 * pad);
        let wg = WideGeometry::new(ConvGeometry::new((c, h, w), (fh, fw), stride, pad).unwrap());
        let mut rng = Rng::new(seed);
        let xpad: Vec<f64> = (0..wg.padded_len()).map(|_| rng.normal()).collect();
        let mut col = vec![0.0; wg.col_len()];
        im2col_wide(&xpad, &wg, &mut col);
        let y: Vec<f64> = (0..col.len()).map(|_| rng.normal()).collect();
        let mut dxpad = vec![0.0; wg.padded_len()];
        col2im_wide(&y, &wg, &mut dxpad);
        let lhs: f64 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f64 = xpad.iter().zip(&dxpad).map(|(a, b)| a * b).sum();
        prop_assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
    }
}

#[test]
fn junk_columns_only_where_few() {
    // 3×3 "same" on 28×28: rows of 30, of which 28 are output.
    let g = ConvGeometry::new((16, 28, 28), (3, 3), 1, 1).unwrap();
    let wg = WideGeometry::new(g);
    assert_eq!((wg.padded_h, wg.padded_w, wg.wide_w), (30, 30, 30));
    assert_eq!(wg.grid_pixels(), 28 * 30);
    assert_eq!(wg.wide_pixels(), 848); // 840 rounded up to a multiple of 16
    assert!(wg.one_run());
    // deep's conv4, 16×16 out of 18-wide rows: an eighth more, one run.
    let wg = WideGeometry::new(ConvGeometry::new((32, 14, 14), (3, 3), 1, 2).unwrap());
    assert_eq!((wg.wide_w, wg.wide_pixels()), (18, 288));
    assert!(wg.one_run());
    // On 8×8, 10 for 8 would be a quarter more: the book's grid.
    let wg = WideGeometry::new(ConvGeometry::new((64, 8, 8), (3, 3), 1, 1).unwrap());
    assert_eq!((wg.wide_w, wg.wide_pixels()), (8, 64));
    assert!(!wg.one_run());
    // A 2×2 output is not padded to 16: that would be 4× the work.
    let wg = WideGeometry::new(ConvGeometry::new((1, 2, 2), (1, 1), 1, 0).unwrap());
    assert_eq!(wg.wide_pixels(), 4);
    // LeNet's second layer, 5×5 on 14×14: 14 for 10, below the half
    // more that a filter of 5×5 or more may take (its unrolling is heavy);
    // a 3×3 filter with as many junk columns keeps the book's grid, and so
    // does a 5×5 one with half again or more (12 for 8, 11 for 7).
    let wg = WideGeometry::new(ConvGeometry::new((6, 14, 14), (5, 5), 1, 0).unwrap());
    assert_eq!((wg.wide_w, wg.wide_pixels()), (14, 144));
    assert!(wg.one_run());
    let wg = WideGeometry::new(ConvGeometry::new((6, 7, 7), (3, 3), 1, 0).unwrap());
    assert_eq!(wg.wide_w, 5);
    let wg = WideGeometry::new(ConvGeometry::new((6, 11, 11), (5, 5), 1, 0).unwrap());
    assert_eq!(wg.wide_w, 7);
    // AlexNet's first layer: 227 wide, 11×11, stride 4 → OW 55, no junk.
    let g = ConvGeometry::new((3, 227, 227), (11, 11), 4, 0).unwrap();
    let wg = WideGeometry::new(g);
    assert_eq!((g.out_w, wg.padded_w, wg.wide_w), (55, 227, 55));
}
