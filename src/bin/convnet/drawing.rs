//! What every picture of the command-line tool shares: the font compiled
//! into the program (a subset of DejaVu Sans, `assets/fonts/`: no system
//! fonts or fontconfig are needed), text and charts drawn with plotters
//! straight into a [`Canvas`], and writing the canvas as a PNG file.

use anyhow::Context;
use convnet::visualize::Canvas;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// The name under which the embedded font is registered with plotters.
pub const FONT: &str = "sans-serif";

const FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-subset.ttf");

/// Registers the embedded font with plotters (once).
fn register_embedded_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    anyhow::ensure!(ok, "the embedded font cannot be read");
    Ok(())
}

/// The embedded font at `size` pixels in `colour`.
pub fn text_style(size: f64, colour: RGBColor) -> TextStyle<'static> {
    (FONT, size).into_font().color(&colour)
}

/// A drawing area over the whole of the canvas's pixels.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// What drawing on an [`Area`] can fail with.
pub type DrawError = DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

/// Lets `draw` paint on `canvas` with plotters (text, charts), then keeps
/// what it drew in the canvas.
pub fn draw_on<F>(canvas: &mut Canvas, draw: F) -> anyhow::Result<()>
where
    F: FnOnce(&Area<'_>) -> Result<(), DrawError>,
{
    register_embedded_font()?;
    let size = (canvas.width() as u32, canvas.height() as u32);
    let area = BitMapBackend::with_buffer(canvas.pixels_mut(), size).into_drawing_area();
    draw(&area).map_err(|e| anyhow::anyhow!("cannot draw: {e}"))?;
    area.present()
        .map_err(|e| anyhow::anyhow!("cannot draw: {e}"))
}

/// The width in pixels of `text` at `size` pixels.
pub fn text_width(text: &str, size: f64) -> anyhow::Result<usize> {
    register_embedded_font()?;
    let (width, _) = text_style(size, BLACK)
        .font
        .box_size(text)
        .map_err(|e| anyhow::anyhow!("cannot measure text: {e}"))?;
    Ok(width as usize)
}

/// Writes `text` with its top-left corner at (x, y).
pub fn label(
    area: &Area<'_>,
    text: &str,
    (x, y): (usize, usize),
    size: f64,
) -> Result<(), DrawError> {
    area.draw(&Text::new(
        text.to_string(),
        (x as i32, y as i32),
        text_style(size, BLACK),
    ))
}

/// Checks that `path` names a PNG file: it ends in `.png` (or has no
/// extension). Commands call it before any work.
pub fn check_png_path(path: &Path) -> anyhow::Result<()> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("png");
    anyhow::ensure!(
        extension.eq_ignore_ascii_case("png"),
        "{}: pictures are written as PNG: give a name ending in .png",
        path.display()
    );
    Ok(())
}

/// Writes `canvas` to `path` as PNG (grey-scale when every pixel is grey,
/// which a third of the bytes holds; best DEFLATE compression) and prints
/// `wrote PATH (W×H)`.
pub fn write_png(canvas: Canvas, path: &Path) -> anyhow::Result<()> {
    check_png_path(path)?;
    let (width, height) = (canvas.width() as u32, canvas.height() as u32);
    let pixels = canvas.into_pixels();
    let grey = pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]);
    let (bytes, colour) = if grey {
        let luma: Vec<u8> = pixels.chunks(3).map(|p| p[0]).collect();
        (luma, ExtendedColorType::L8)
    } else {
        (pixels, ExtendedColorType::Rgb8)
    };
    let cannot_write = || format!("cannot write {}", path.display());
    let file = std::fs::File::create(path).with_context(cannot_write)?;
    let mut writer = std::io::BufWriter::new(file);
    PngEncoder::new_with_quality(&mut writer, CompressionType::Best, FilterType::Adaptive)
        .write_image(&bytes, width, height, colour)
        .with_context(cannot_write)?;
    writer.flush().with_context(cannot_write)?;
    println!("wrote {} ({width}×{height})", path.display());
    Ok(())
}
