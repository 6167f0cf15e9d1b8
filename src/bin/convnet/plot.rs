//! `convnet plot`: loss and accuracy per epoch, train and test, from the
//! JSON lines `convnet train --metrics FILE` writes, as a PNG of two charts
//! (960×400 pixels).

use crate::drawing::{check_png_path, draw_on, text_style, write_png, FONT};
use anyhow::Context;
use clap::Args;
use convnet::metrics::{parse_metrics, EpochPoint};
use convnet::visualize::Canvas;
use plotters::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;

/// The picture's size in pixels.
pub const METRICS_PLOT_SIZE: (usize, usize) = (960, 400);

#[derive(Args)]
pub struct PlotArgs {
    /// A file written by `convnet train --metrics`: one JSON object per epoch.
    metrics: PathBuf,
    /// Where to write the PNG (960×400 pixels).
    #[arg(long, default_value = "metrics.png")]
    output: PathBuf,
}

pub fn run(args: PlotArgs) -> anyhow::Result<ExitCode> {
    check_png_path(&args.output)?;
    let text = std::fs::read_to_string(&args.metrics)
        .with_context(|| format!("cannot read {}", args.metrics.display()))?;
    let points = parse_metrics(&text, &args.metrics.display().to_string())?;
    let canvas = draw_metrics(&points)?;
    write_png(canvas, &args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// The two charts of `points`, side by side.
fn draw_metrics(points: &[EpochPoint]) -> anyhow::Result<Canvas> {
    let (width, height) = METRICS_PLOT_SIZE;
    let mut canvas = Canvas::new(width, height, convnet::visualize::WHITE);
    draw_on(&mut canvas, |area| {
        let (left, right) = area.split_horizontally(width as u32 / 2);
        let loss_max = points
            .iter()
            .map(|p| p.train_loss.max(p.test_loss))
            .fold(0.0, f64::max);
        chart(
            &left,
            points,
            "loss",
            "cross-entropy loss",
            (0.0, loss_max * 1.08),
            SeriesLabelPosition::UpperRight,
            |p| (p.train_loss, p.test_loss),
        )?;
        // Accuracy in %, from a multiple of 5 below the lowest value to 100.
        let acc_min = points
            .iter()
            .map(|p| p.train_acc.min(p.test_acc))
            .fold(1.0, f64::min);
        let low = ((100.0 * acc_min - 1.0) / 5.0).floor().max(0.0) * 5.0;
        chart(
            &right,
            points,
            "accuracy",
            "accuracy (%)",
            (low, 100.0),
            SeriesLabelPosition::LowerRight,
            |p| (100.0 * p.train_acc, 100.0 * p.test_acc),
        )
    })?;
    Ok(canvas)
}

/// `v` within ±1e15 (a chart of larger values says nothing more).
fn clamp(v: f64) -> f64 {
    v.clamp(-1e15, 1e15)
}

/// One chart: the train and test values `value(point)` against the epoch.
fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    points: &[EpochPoint],
    caption: &str,
    y_label: &str,
    (y_low, y_high): (f64, f64),
    legend_at: SeriesLabelPosition,
    value: impl Fn(&EpochPoint) -> (f64, f64),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // Epochs as i64 and values within ±1e15, so that no file (epoch
    // 4294967295, a loss of 1e308) can overflow the axes' arithmetic.
    let first = points.iter().map(|p| i64::from(p.epoch)).min().unwrap_or(1);
    let last = points
        .iter()
        .map(|p| i64::from(p.epoch))
        .max()
        .unwrap_or(1)
        .max(first + 1);
    let (y_low, y_high) = (clamp(y_low), clamp(y_high));
    let y_high = if y_high > y_low { y_high } else { y_low + 1.0 };
    // Enough decimals to tell the tick labels apart.
    let decimals = match y_high - y_low {
        r if r >= 10.0 => 0,
        r if r >= 1.0 => 1,
        _ => 2,
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(first..last, y_low..y_high)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .x_labels((last - first + 1).min(16) as usize)
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let series = [
        ("train", RGBColor(31, 119, 180), 0),
        ("test", RGBColor(255, 127, 14), 1),
    ];
    for (name, colour, which) in series {
        let pick = |p: &EpochPoint| {
            let (train, test) = value(p);
            let y = if which == 0 { train } else { test };
            // Off the chart by at most its height: plotters' pixel
            // arithmetic overflows for points very far outside.
            let span = y_high - y_low;
            (i64::from(p.epoch), y.clamp(y_low - span, y_high + span))
        };
        let line = ShapeStyle::from(&colour).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().map(pick), line))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], line));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new(pick(p), 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .label_font(text_style(13.0, BLACK))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            -2.0..2.0f64,
            Just(0.0),
            Just(1e308),
            Just(-1e308),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            -1e300..1e300f64,
        ]
    }

    fn point() -> impl Strategy<Value = EpochPoint> {
        let epoch = prop_oneof![0..5u32, Just(u32::MAX), Just(u32::MAX - 1), any::<u32>()];
        (epoch, value(), value(), value(), value()).prop_map(|(epoch, a, b, c, d)| EpochPoint {
            epoch,
            train_loss: a,
            test_loss: b,
            train_acc: c,
            test_acc: d,
        })
    }

    /// A metrics file of 0.0001 and 1e308, epoch 0 and 4294967295, used to
    /// overflow plotters' pixel arithmetic (a panic).
    #[test]
    fn extreme_values_are_drawn() {
        let extreme = |epoch, loss, acc| EpochPoint {
            epoch,
            train_loss: loss,
            test_loss: -loss,
            train_acc: acc,
            test_acc: -acc,
        };
        draw_metrics(&[
            extreme(0, 1e308, -1e300),
            extreme(u32::MAX, f64::MAX, 1e300),
        ])
        .unwrap();
        draw_metrics(&[extreme(7, 1.0, -1e300)]).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
        ))]

        #[test]
        fn any_parsed_metrics_are_drawn(points in prop::collection::vec(point(), 1..4)) {
            draw_metrics(&points).unwrap();
        }
    }
}
