//! Filters and feature maps as small pictures ("tiles") and their layout in
//! a grid.
//!
//! Every tile is rescaled to its own min..max, as matplotlib's `imshow` does
//! in the book's `visualize_filter` (§7.6.1):
//!
//! ```text
//! v' = (v − min) / (max − min)        in [0, 1]; a constant tile is all 0
//! ```
//!
//! A one-channel filter is drawn like the book's figure 7-24 (`gray_r`:
//! the largest weight black, the smallest white); a three-channel filter in
//! colour (its channels rescaled together, so hues are kept); a feature map
//! in grey with the strongest response white.

use super::canvas::{Canvas, Rgb};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One picture of `channels` (1: grey, 3: RGB) × `height` × `width` values
/// in [0, 1], stored (C, H, W).
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    /// Channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Height in values.
    pub height: usize,
    /// Width in values.
    pub width: usize,
    /// `channels · height · width` values in [0, 1], (C, H, W) order.
    pub values: Vec<f32>,
}

impl Tile {
    /// The colour of the value at row `y`, column `x`.
    pub fn colour(&self, y: usize, x: usize) -> Rgb {
        let plane = self.height * self.width;
        let byte = |c: usize| {
            let v = self.values[c * plane + y * self.width + x];
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        };
        match self.channels {
            3 => [byte(0), byte(1), byte(2)],
            _ => [byte(0); 3],
        }
    }
}

/// Rescales `values` to [0, 1] (their minimum to 0, maximum to 1); values
/// that are all equal (or not finite) become 0.
pub fn normalise_min_max(values: &mut [f32]) {
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = max - min;
    if range > 0.0 && range.is_finite() {
        values.iter_mut().for_each(|v| *v = (*v - min) / range);
    } else {
        values.iter_mut().for_each(|v| *v = 0.0);
    }
}

/// One tile per filter of a convolution weight `(FN, C, FH, FW)`: grey
/// (`gray_r`) for C = 1, colour for C = 3; any other C is an error.
pub fn filter_tiles(weight: &Tensor<f32>) -> Result<Vec<Tile>> {
    let (filters, channels, height, width) = weight.dims4()?;
    if channels != 1 && channels != 3 {
        return Err(Error::Shape(format!(
            "filters with {channels} input channels cannot be drawn (only 1, grey, or 3, colour)"
        )));
    }
    let size = channels * height * width;
    Ok((0..filters)
        .map(|f| {
            let mut values = weight.data()[f * size..(f + 1) * size].to_vec();
            normalise_min_max(&mut values);
            if channels == 1 {
                values.iter_mut().for_each(|v| *v = 1.0 - *v);
            }
            Tile {
                channels,
                height,
                width,
                values,
            }
        })
        .collect())
}

/// One grey tile per channel of the first image of `maps: (N, C, H, W)`.
pub fn feature_map_tiles(maps: &Tensor<f32>) -> Result<Vec<Tile>> {
    let (n, channels, height, width) = maps.dims4()?;
    if n == 0 {
        return Err(Error::Shape("no image in the batch".into()));
    }
    let plane = height * width;
    Ok(maps.data()[..channels * plane]
        .chunks(plane)
        .map(|channel| {
            let mut values = channel.to_vec();
            normalise_min_max(&mut values);
            Tile {
                channels: 1,
                height,
                width,
                values,
            }
        })
        .collect())
}

/// Where `count` tiles of `height × width` values go: at most
/// `max_columns` per row, rows filled evenly (30 tiles in 16 columns: two
/// rows of 15), each value magnified by a whole `scale` so that a tile's
/// longer side is at least `min_side` pixels, and `gap` pixels between tiles.
///
/// ```text
/// rows    = ⌈count / max_columns⌉          columns = ⌈count / rows⌉
/// scale   = ⌈min_side / max(height, width)⌉
/// width   = columns · (scale · width + gap) − gap
/// height  = rows · (scale · height + gap) − gap
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridLayout {
    /// The number of tiles.
    pub count: usize,
    /// Rows of tiles: ⌈count / max_columns⌉.
    pub rows: usize,
    /// Tiles per row: ⌈count / rows⌉.
    pub columns: usize,
    /// Pixels per value along each side.
    pub scale: usize,
    /// A tile's height in pixels: `scale · height`.
    pub tile_height: usize,
    /// A tile's width in pixels: `scale · width`.
    pub tile_width: usize,
    /// Pixels between neighbouring tiles.
    pub gap: usize,
}

impl GridLayout {
    /// Lays out `count` tiles of `[height, width]` values (see the formulas above).
    pub fn new(
        count: usize,
        [height, width]: [usize; 2],
        max_columns: usize,
        min_side: usize,
        gap: usize,
    ) -> Self {
        let rows = count.div_ceil(max_columns.max(1)).max(1);
        let columns = count.div_ceil(rows);
        let scale = min_side.div_ceil(height.max(width).max(1)).max(1);
        GridLayout {
            count,
            rows,
            columns,
            scale,
            tile_height: scale * height,
            tile_width: scale * width,
            gap,
        }
    }

    /// The grid's width in pixels.
    pub fn width(&self) -> usize {
        (self.columns * (self.tile_width + self.gap)).saturating_sub(self.gap)
    }

    /// The grid's height in pixels.
    pub fn height(&self) -> usize {
        (self.rows * (self.tile_height + self.gap)).saturating_sub(self.gap)
    }

    /// The top-left corner of tile `i`, relative to the grid's.
    pub fn tile_origin(&self, i: usize) -> (usize, usize) {
        let (row, column) = (i / self.columns, i % self.columns);
        (
            column * (self.tile_width + self.gap),
            row * (self.tile_height + self.gap),
        )
    }

    /// Draws `tiles` (at most `count`) with the grid's top-left corner at (x, y).
    pub fn draw(&self, canvas: &mut Canvas, x: usize, y: usize, tiles: &[Tile]) {
        for (i, tile) in tiles.iter().take(self.count).enumerate() {
            let (dx, dy) = self.tile_origin(i);
            canvas.draw_tile(x + dx, y + dy, tile, self.scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_maps_min_to_0_and_max_to_1() {
        let mut v = [2.0, -2.0, 0.0, 6.0];
        normalise_min_max(&mut v);
        assert_eq!(v, [0.5, 0.0, 0.25, 1.0]);
        let mut constant = [3.0; 4];
        normalise_min_max(&mut constant);
        assert_eq!(constant, [0.0; 4]);
    }

    #[test]
    fn each_filter_gets_its_own_range() {
        // Two 1×1×2 filters of very different scales look the same.
        let w = Tensor::from_vec(&[2, 1, 1, 2], vec![0.0, 0.01, -100.0, 100.0]).unwrap();
        let tiles = filter_tiles(&w).unwrap();
        assert_eq!(tiles[0].values, [1.0, 0.0]); // gray_r: larger is darker
        assert_eq!(tiles[1].values, tiles[0].values);
        assert_eq!(tiles[0].colour(0, 0), [255; 3]);
        assert_eq!(tiles[0].colour(0, 1), [0; 3]);
    }

    #[test]
    fn colour_filters_share_one_range_across_channels() {
        // One 3×1×1 filter: R = 1, G = 0, B = 0.5 → pure colours kept.
        let w = Tensor::from_vec(&[1, 3, 1, 1], vec![1.0, 0.0, 0.5]).unwrap();
        let tiles = filter_tiles(&w).unwrap();
        assert_eq!(tiles[0].colour(0, 0), [255, 0, 128]);
        let two = Tensor::from_vec(&[1, 2, 1, 1], vec![1.0, 0.0]).unwrap();
        assert!(filter_tiles(&two)
            .unwrap_err()
            .to_string()
            .contains("2 input channels"));
    }

    #[test]
    fn feature_maps_of_the_first_image_one_tile_per_channel() {
        // (N=2, C=2, 1, 2): only the first image is drawn.
        let maps = Tensor::from_vec(&[2, 2, 1, 2], vec![0., 4., 3., 1., 9., 9., 9., 9.]).unwrap();
        let tiles = feature_map_tiles(&maps).unwrap();
        assert_eq!(tiles.len(), 2);
        assert_eq!(tiles[0].values, [0.0, 1.0]);
        assert_eq!(tiles[1].values, [1.0, 0.0]);
        assert_eq!(tiles[0].colour(0, 1), [255; 3]); // strongest is white
    }

    #[test]
    fn grid_rows_are_filled_evenly() {
        let layout = GridLayout::new(30, [24, 24], 16, 40, 2);
        assert_eq!((layout.rows, layout.columns, layout.scale), (2, 15, 2));
        assert_eq!(layout.width(), 15 * 50 - 2);
        assert_eq!(layout.height(), 2 * 50 - 2);
        assert_eq!(layout.tile_origin(16), (50, 50));
        let one = GridLayout::new(1, [28, 28], 16, 40, 2);
        assert_eq!((one.width(), one.height()), (56, 56));
        let filters = GridLayout::new(30, [5, 5], 10, 40, 2);
        assert_eq!(
            (filters.rows, filters.columns, filters.tile_width),
            (3, 10, 40)
        );
    }

    #[test]
    fn draw_puts_each_tile_at_its_origin() {
        let tile = |v: f32| Tile {
            channels: 1,
            height: 1,
            width: 1,
            values: vec![v],
        };
        let layout = GridLayout::new(3, [1, 1], 2, 2, 1);
        // 2 rows: 2 columns then 1; tiles of 2×2 pixels, 1 px apart.
        let mut canvas = Canvas::new(layout.width(), layout.height(), [7, 7, 7]);
        layout.draw(&mut canvas, 0, 0, &[tile(1.0), tile(0.0), tile(1.0)]);
        assert_eq!((canvas.width(), canvas.height()), (5, 5));
        assert_eq!(canvas.pixel(1, 1), [255; 3]);
        assert_eq!(canvas.pixel(2, 0), [7; 3]); // the gap
        assert_eq!(canvas.pixel(3, 0), [0; 3]);
        assert_eq!(canvas.pixel(0, 4), [255; 3]);
        assert_eq!(canvas.pixel(4, 4), [7; 3]); // no fourth tile
    }
}
