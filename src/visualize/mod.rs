//! Pictures of a network as pixels (book §7.6, figure 7-24: the first
//! layer's filters before and after training), without any drawing library:
//!
//! - [`tiles`]: filters and feature maps as [`Tile`]s, each value rescaled
//!   to its tile's own min..max, laid out in a [`GridLayout`];
//! - [`canvas`]: an RGB pixel buffer the tiles are drawn into, which the
//!   command-line tool labels and encodes as PNG.
//!
//! ```
//! use convnet::visualize::{filter_tiles, Canvas, GridLayout, WHITE};
//! use convnet::Tensor;
//! // Two 1×2×2 filters.
//! let weight = Tensor::from_vec(&[2, 1, 2, 2], vec![0., 1., 2., 3., 5., 5., 5., 6.]).unwrap();
//! let tiles = filter_tiles(&weight).unwrap();
//! let layout = GridLayout::new(tiles.len(), [2, 2], 8, 10, 1);
//! assert_eq!((layout.width(), layout.height()), (21, 10)); // two 10×10 tiles, 1 px apart
//! let mut canvas = Canvas::new(layout.width(), layout.height(), WHITE);
//! layout.draw(&mut canvas, 0, 0, &tiles);
//! assert_eq!(canvas.pixel(0, 0), [255, 255, 255]); // the first filter's minimum, book's grey
//! assert_eq!(canvas.pixel(9, 9), [0, 0, 0]); // its maximum
//! ```

pub mod canvas;
pub mod tiles;

pub use canvas::{Canvas, Rgb, WHITE};
pub use tiles::{feature_map_tiles, filter_tiles, normalise_min_max, GridLayout, Tile};
