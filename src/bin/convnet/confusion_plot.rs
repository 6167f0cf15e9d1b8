//! `convnet eval --plot PATH`: the confusion matrix as a PNG heat-map of
//! 640×640 pixels. Row i, column j counts the test images of class i
//! predicted as j; a cell's colour is its share of the row (white: none,
//! dark blue: all of the class), and its count is written in it while the
//! cells are large enough (up to about 20 classes).

use crate::drawing::{draw_on, text_style, text_width, write_png};
use convnet::visualize::{Canvas, Rgb};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;
use std::path::Path;

/// The picture's size in pixels.
pub const CONFUSION_PLOT_SIZE: (usize, usize) = (640, 640);

/// Room for the title above the matrix, and the blank border.
const TOP: usize = 44;
const MARGIN: usize = 12;
/// Pixels between the matrix and its class names, and between those and
/// the axis titles; the axis titles' font size.
const PAD: usize = 6;
const AXIS_FONT: f64 = 14.0;

/// The longest class name written in full (longer ones end in "…").
const MAX_NAME: usize = 14;

/// matplotlib's "Blues" from its lightest to its darkest, `share` in [0, 1].
fn blue(share: f64) -> Rgb {
    let (light, dark) = ([247.0, 251.0, 255.0], [8.0, 48.0, 107.0]);
    let mix = |c: usize| (light[c] + (dark[c] - light[c]) * share.clamp(0.0, 1.0)).round() as u8;
    [mix(0), mix(1), mix(2)]
}

fn short(name: &str) -> String {
    if name.chars().count() <= MAX_NAME {
        name.to_string()
    } else {
        let kept: String = name.chars().take(MAX_NAME - 1).collect();
        format!("{kept}…")
    }
}

/// Draws `confusion[true][predicted]` with `class_names` on both axes and
/// `title` above, and writes it to `path`. The matrix, its names and axis
/// titles are centred below the title, as large as the picture allows.
pub fn write_confusion_plot(
    confusion: &[Vec<usize>],
    class_names: &[String],
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let classes = confusion.len();
    anyhow::ensure!(classes > 0, "the confusion matrix is empty");
    let (width, height) = CONFUSION_PLOT_SIZE;
    let names: Vec<String> = (0..classes)
        .map(|i| short(class_names.get(i).map_or(&i.to_string(), |n| n)))
        .collect();
    let name_font = (540.0 / classes as f64 * 0.6).clamp(7.0, 13.0);
    let longest = names
        .iter()
        .map(|n| text_width(n, name_font))
        .try_fold(0, |m, w| w.map(|w| m.max(w)))?;
    // Names and the axis title on the left of the matrix and below it.
    let room = PAD + longest + PAD + AXIS_FONT as usize + PAD;
    let side = (width - 2 * MARGIN - room).min(height - TOP - MARGIN - room);
    let cell = (side / classes).max(1);
    let grid = cell * classes;
    let left = (width - room - grid) / 2 + room;
    let top = TOP + (height - TOP - MARGIN - room - grid) / 2;

    let mut canvas = Canvas::new(width, height, convnet::visualize::WHITE);
    let mut counts = Vec::new();
    for (i, row) in confusion.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        for (j, &count) in row.iter().enumerate() {
            let share = count as f64 / total;
            let (x, y) = (left + j * cell, top + i * cell);
            canvas.fill_rect(
                x,
                y,
                cell.saturating_sub(1),
                cell.saturating_sub(1),
                blue(share),
            );
            counts.push((count, share, (x + cell / 2, y + cell / 2)));
        }
    }
    let font = (cell as f64 * 0.32).clamp(8.0, 13.0);
    let centred = Pos::new(HPos::Center, VPos::Center);
    draw_on(&mut canvas, |area| {
        let at = ((width / 2) as i32, (TOP / 2) as i32);
        area.draw(&Text::new(title, at, text_style(16.0, BLACK).pos(centred)))?;
        for (count, share, (x, y)) in &counts {
            let text = count.to_string();
            // Digits are about 0.64 em wide in DejaVu Sans.
            if cell >= 18 && text.len() as f64 * 0.64 * font <= cell as f64 - 4.0 {
                let colour = if *share > 0.5 { WHITE } else { BLACK };
                let style = text_style(font, colour).pos(centred);
                area.draw(&Text::new(text, (*x as i32, *y as i32), style))?;
            }
        }
        for (i, name) in names.iter().enumerate() {
            let middle = i * cell + cell / 2;
            // True classes left of the rows, right-aligned.
            let style = text_style(name_font, BLACK).pos(Pos::new(HPos::Right, VPos::Center));
            let at = ((left - PAD) as i32, (top + middle) as i32);
            area.draw(&Text::new(name.as_str(), at, style))?;
            // Predicted classes under the columns, reading upwards.
            let style = text_style(name_font, BLACK)
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center));
            let at = ((left + middle) as i32, (top + grid + PAD) as i32);
            area.draw(&Text::new(name.as_str(), at, style))?;
        }
        let beyond_names = PAD + longest + PAD + AXIS_FONT as usize / 2;
        let axis = text_style(AXIS_FONT, BLACK).pos(centred);
        let at = ((left + grid / 2) as i32, (top + grid + beyond_names) as i32);
        area.draw(&Text::new("predicted class", at, axis.clone()))?;
        let at = ((left - beyond_names) as i32, (top + grid / 2) as i32);
        let axis = axis.transform(FontTransform::Rotate270);
        area.draw(&Text::new("true class", at, axis))?;
        Ok(())
    })?;
    write_png(canvas, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_run_from_light_to_dark_blue_and_long_names_are_cut() {
        assert_eq!(blue(0.0), [247, 251, 255]);
        assert_eq!(blue(1.0), [8, 48, 107]);
        assert_eq!(blue(2.0), blue(1.0));
        assert_eq!(short("T-shirt/top"), "T-shirt/top");
        assert_eq!(short("a very long class name"), "a very long c…");
    }
}
