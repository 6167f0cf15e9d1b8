//! An RGB picture in memory: 3 bytes per pixel, rows top to bottom — the
//! layout of `image::RgbImage` and of plotters' bitmap backend, so that the
//! command-line tool can write labels on it and encode it without copying.

use super::tiles::Tile;

/// A colour: red, green, blue.
pub type Rgb = [u8; 3];

/// White: the background of the pictures.
pub const WHITE: Rgb = [255, 255, 255];

/// A `width × height` RGB picture.
#[derive(Clone, Debug, PartialEq)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// The widest or tallest picture [`Canvas::checked`] makes, in pixels.
pub const MAX_SIDE: usize = 32_768;
/// The most pixels [`Canvas::checked`] makes: 2^26 (192 MiB of RGB).
pub const MAX_PIXELS: usize = 1 << 26;

impl Canvas {
    /// A picture filled with `background`, or an error if it would be
    /// larger than [`MAX_SIDE`] a side or [`MAX_PIXELS`] in all (a network
    /// with very many or very large feature maps), before it is allocated.
    ///
    /// ```
    /// use convnet::visualize::{Canvas, WHITE};
    /// assert!(Canvas::checked(640, 480, WHITE).is_ok());
    /// let e = Canvas::checked(442, 420_046, WHITE).unwrap_err().to_string();
    /// assert!(e.contains("442×420046"), "{e}");
    /// ```
    pub fn checked(width: usize, height: usize, background: Rgb) -> crate::Result<Self> {
        let pixels = width.checked_mul(height);
        if width > MAX_SIDE || height > MAX_SIDE || pixels.is_none_or(|p| p > MAX_PIXELS) {
            return Err(crate::Error::Config(format!(
                "the picture would be {width}×{height} pixels, more than the limit of {MAX_SIDE} pixels a side and {MAX_PIXELS} pixels in all"
            )));
        }
        Ok(Canvas::new(width, height, background))
    }

    /// A picture filled with `background`.
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        let pixels = background
            .iter()
            .copied()
            .cycle()
            .take(3 * width * height)
            .collect();
        Canvas {
            width,
            height,
            pixels,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The bytes, `3 · (y · width + x)` for pixel (x, y).
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The bytes, mutable, laid out as in [`pixels`](Self::pixels).
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// The bytes, without copying.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The colour at (x, y); panics outside the picture.
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        assert!(x < self.width && y < self.height, "({x}, {y}) is outside");
        let i = 3 * (y * self.width + x);
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Fills the rectangle at (x, y) of `w × h` pixels, clipped to the picture.
    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: Rgb) {
        let (x_end, y_end) = ((x + w).min(self.width), (y + h).min(self.height));
        for row in y.min(y_end)..y_end {
            for col in x.min(x_end)..x_end {
                let i = 3 * (row * self.width + col);
                self.pixels[i..i + 3].copy_from_slice(&colour);
            }
        }
    }

    /// Draws `tile` with its top-left corner at (x, y), each of its values
    /// as a `scale × scale` square (nearest neighbour, no smoothing).
    pub fn draw_tile(&mut self, x: usize, y: usize, tile: &Tile, scale: usize) {
        for ty in 0..tile.height {
            for tx in 0..tile.width {
                let colour = tile.colour(ty, tx);
                self.fill_rect(x + tx * scale, y + ty * scale, scale, scale, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_rect_is_clipped_to_the_picture() {
        let mut canvas = Canvas::new(4, 3, [0, 0, 0]);
        canvas.fill_rect(2, 1, 10, 10, [9, 8, 7]);
        assert_eq!(canvas.pixel(1, 1), [0, 0, 0]);
        assert_eq!(canvas.pixel(3, 2), [9, 8, 7]);
        assert_eq!(canvas.pixel(2, 0), [0, 0, 0]);
        canvas.fill_rect(7, 7, 2, 2, [1, 1, 1]); // wholly outside: nothing
        assert_eq!(canvas.pixels().iter().filter(|&&b| b == 1).count(), 0);
    }

    #[test]
    fn a_tile_is_magnified_by_its_scale() {
        let tile = Tile {
            channels: 3,
            height: 1,
            width: 2,
            // (C, H, W): red (1, 0), green (0, 1), blue (0, 0).
            values: vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        };
        let mut canvas = Canvas::new(6, 4, WHITE);
        canvas.draw_tile(1, 1, &tile, 2);
        assert_eq!(canvas.pixel(1, 1), [255, 0, 0]);
        assert_eq!(canvas.pixel(2, 2), [255, 0, 0]);
        assert_eq!(canvas.pixel(3, 1), [0, 255, 0]);
        assert_eq!(canvas.pixel(4, 2), [0, 255, 0]);
        assert_eq!(canvas.pixel(5, 1), WHITE);
        assert_eq!(canvas.pixel(1, 3), WHITE);
    }
}
