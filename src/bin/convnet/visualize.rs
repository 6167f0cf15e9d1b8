//! `convnet visualize filters` and `convnet visualize activations`: a saved
//! network's first-layer filters (book §7.6.1, figure 7-24) and the feature
//! maps of its convolution and pooling layers for one image, as PNG grids of
//! tiles. Each tile is scaled to its own min..max (see
//! [`convnet::visualize::tiles`]).

use crate::drawing::{check_png_path, draw_on, label, write_png};

use crate::memory::MemoryArgs;
use anyhow::Context;
use clap::{Args, Subcommand};
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::data::image_input::load_image;
use convnet::layers::softmax_with_loss::softmax_row;
use convnet::networks::{build_model_within, Network};
use convnet::visualize::{feature_map_tiles, filter_tiles, Canvas, GridLayout, Tile, WHITE};
use convnet::{Rng, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Blank border around a picture, in pixels.
const MARGIN: usize = 12;
/// Pixels between two tiles.
const GAP: usize = 2;
/// A tile's longer side is at least this many pixels (whole magnifications).
const MIN_TILE_SIDE: usize = 40;
/// Height of the line of text above a grid, and its font size.
const HEADER: usize = 24;
const HEADER_FONT: f64 = 14.0;

const FILTERS_HELP: &str = "\
Draws the first convolution's filters as a grid of tiles, at most 10 per row: \
grey for one input channel (as the book's figure 7-24: largest weight black), \
colour for three; each filter scaled to its own min..max, each weight a square \
of s = ceil(40 / filter side) pixels. With --compare, the filters of the \
untrained network built with the checkpoint's seed are drawn on the left.

Size: width = 24 + P·max(g, 240) + 24·(P − 1), height = 46 + rows·(s·k + 2), \
where P is 1 (2 with --compare), k the filter side, rows = ceil(filters / 10) and \
g = columns·(s·k + 2) − 2 the grid's width. SimpleConvNet's 30 filters of 5×5: \
442×172, or 884×172 with --compare.";

const ACTIVATIONS_HELP: &str = "\
Runs one image (converted as `convnet predict` does) through the network and \
draws, one panel per layer, the input and the output of every convolution and \
pooling layer: each channel a grey tile (white: strongest response), scaled to \
its own min..max, at most 16 tiles per row, each value a square of \
s = ceil(40 / map side) pixels. The input panel shows the predicted class.

Size: width = 24 + max(300, widest grid), height = 24 + Σ(24 + grid height) + \
10·(panels − 1), a grid of c maps of side k being columns·(s·k + 2) − 2 wide \
and rows·(s·k + 2) − 2 high (rows = ceil(c / 16), columns = ceil(c / rows)). \
SimpleConvNet: 772×368.";

#[derive(Args)]
pub struct VisualizeArgs {
    #[command(subcommand)]
    picture: Picture,
}

#[derive(Subcommand)]
enum Picture {
    /// The first convolution's filters as a grid of tiles (PNG).
    #[command(long_about = FILTERS_HELP)]
    Filters(FiltersArgs),
    /// The feature maps of every convolution and pooling layer for one image (PNG).
    #[command(long_about = ACTIVATIONS_HELP)]
    Activations(ActivationsArgs),
}

#[derive(Args)]
struct FiltersArgs {
    /// A checkpoint written by `convnet train --save`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where to write the PNG.
    #[arg(long, default_value = "filters.png")]
    output: PathBuf,
    /// Also draw the filters before training (the same model built with the
    /// seed stored in the checkpoint), left of the trained ones.
    #[arg(long)]
    compare: bool,
    #[command(flatten)]
    memory: MemoryArgs,
}

#[derive(Args)]
struct ActivationsArgs {
    /// A checkpoint written by `convnet train --save`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A PNG or JPEG image.
    image: PathBuf,
    /// Where to write the PNG.
    #[arg(long, default_value = "activations.png")]
    output: PathBuf,
    /// Never invert dark-on-light images (see `convnet predict`).
    #[arg(long)]
    no_invert: bool,
    #[command(flatten)]
    memory: MemoryArgs,
}

pub fn run(args: VisualizeArgs) -> anyhow::Result<ExitCode> {
    match args.picture {
        Picture::Filters(args) => filters(args),
        Picture::Activations(args) => activations(args),
    }
    .map(|()| ExitCode::SUCCESS)
}

/// The name and weight `(FN, C, FH, FW)` of the network's first convolution.
fn first_convolution(
    net: &mut Network<f32>,
    source: &Path,
) -> anyhow::Result<(String, Tensor<f32>)> {
    for named in net.layers.iter_mut() {
        if named.layer.kind() == "Convolution" {
            let weight = named
                .layer
                .params()
                .into_iter()
                .find(|p| p.name == "weight");
            if let Some(weight) = weight {
                return Ok((named.name.clone(), weight.value.clone()));
            }
        }
    }
    anyhow::bail!("{} has no convolution layer", source.display())
}

/// The seed the checkpoint's run was started with.
fn training_seed(info: &CheckpointInfo, source: &Path) -> anyhow::Result<u64> {
    let seed = info.extra.get("seed").with_context(|| {
        format!(
            "{} does not record its seed (saved by an older convnet): --compare needs it; train again with --save",
            source.display()
        )
    })?;
    seed.parse()
        .with_context(|| format!("{}: seed '{seed}' is not a number", source.display()))
}

/// One panel of a picture: a line of text above a grid of tiles.
struct Panel {
    title: String,
    layout: GridLayout,
    tiles: Vec<Tile>,
}

impl Panel {
    fn new(title: String, tiles: Vec<Tile>, max_columns: usize) -> Self {
        let shape = tiles.first().map_or([1, 1], |t| [t.height, t.width]);
        let layout = GridLayout::new(tiles.len(), shape, max_columns, MIN_TILE_SIDE, GAP);
        Panel {
            title,
            layout,
            tiles,
        }
    }

    fn height(&self) -> usize {
        self.layout.height().saturating_add(HEADER)
    }
}

/// Draws each panel with its top-left corner at the given place: its title,
/// and its grid `HEADER` pixels lower.
fn draw_panels(canvas: &mut Canvas, placed: &[(&Panel, (usize, usize))]) -> anyhow::Result<()> {
    for (panel, (x, y)) in placed {
        panel.layout.draw(canvas, *x, y + HEADER, &panel.tiles);
    }
    draw_on(canvas, |area| {
        for (panel, (x, y)) in placed {
            label(area, &panel.title, (*x, y + 3), HEADER_FONT)?;
        }
        Ok(())
    })
}

fn filters(args: FiltersArgs) -> anyhow::Result<()> {
    check_png_path(&args.output)?;
    let (mut net, info) = checkpoint::load_within(&args.checkpoint, args.memory.limit())?;
    let (name, trained) = first_convolution(&mut net, &args.checkpoint)?;
    let (_, c, k, _) = trained.dims4()?;
    let epoch = info
        .extra
        .get("epoch")
        .map(|e| format!(" (epoch {e})"))
        .unwrap_or_default();
    let mut panels = Vec::new();
    if args.compare {
        let seed = training_seed(&info, &args.checkpoint)?;
        let classes = info.class_names.len();
        let mut rng = Rng::new(seed);
        let mut untrained = build_model_within::<f32>(
            &info.model,
            &info.options,
            info.input_shape,
            classes,
            &mut rng,
            args.memory.limit(),
        )?;
        let (_, initial) = first_convolution(&mut untrained, &args.checkpoint)?;
        let title = format!("{name} before training (seed {seed})");
        panels.push(Panel::new(title, filter_tiles(&initial)?, 10));
    }
    let title = format!("{name} after training{epoch}");
    panels.push(Panel::new(title, filter_tiles(&trained)?, 10));

    let panel_width = panels[0].layout.width().max(240);
    let width = panel_width
        .saturating_mul(panels.len())
        .saturating_add(2 * MARGIN + 24 * (panels.len() - 1));
    let height = panels[0].height().saturating_add(2 * MARGIN);
    // Bounded before it is allocated (a convolution of 100,000 filters).
    let mut canvas = Canvas::checked(width, height, WHITE)?;
    let placed: Vec<_> = panels
        .iter()
        .enumerate()
        .map(|(i, panel)| (panel, (MARGIN + i * (panel_width + 24), MARGIN)))
        .collect();
    draw_panels(&mut canvas, &placed)?;
    let count = panels[0].tiles.len();
    println!("{name}: {count} filters of {c}×{k}×{k}");
    write_png(canvas, &args.output)
}

/// Layers whose outputs are drawn: convolutions and pooling with 4-D output.
fn is_drawn(kind: &str, output: &Tensor<f32>) -> bool {
    let spatial = [
        "Convolution",
        "MaxPooling",
        "AvgPooling",
        "GlobalAvgPooling",
    ];
    spatial.contains(&kind) && output.shape().len() == 4
}

fn activations(args: ActivationsArgs) -> anyhow::Result<()> {
    check_png_path(&args.output)?;
    crate::set_threads(None)?;
    let (mut net, info) = checkpoint::load_within(&args.checkpoint, args.memory.limit())?;
    let [c, h, w] = info.input_shape;
    let x = load_image(&args.image, info.input_shape, !args.no_invert)?;
    let values = x.data().to_vec();
    let outputs = net.layer_outputs(&x)?;

    let scores = &outputs.last().context("the network has no layers")?.output;
    let mut probabilities = vec![0.0f32; scores.len()];
    softmax_row(scores.data(), &mut probabilities);
    let (best, p) = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .context("the network gives no scores")?;
    let class = info
        .class_names
        .get(best)
        .cloned()
        .unwrap_or(best.to_string());
    let input = Tile {
        channels: c,
        height: h,
        width: w,
        values,
    };
    let title = format!("input {c}×{h}×{w} – predicted {class} ({:.1}%)", 100.0 * p);
    let mut panels = vec![Panel::new(title, vec![input], 16)];
    for out in outputs.iter().filter(|o| is_drawn(o.kind, &o.output)) {
        let (_, channels, oh, ow) = out.output.dims4()?;
        let title = format!("{} ({}) {channels}×{oh}×{ow}", out.name, out.kind);
        panels.push(Panel::new(title, feature_map_tiles(&out.output)?, 16));
    }
    anyhow::ensure!(
        panels.len() > 1,
        "{} has no convolution or pooling layer",
        args.checkpoint.display()
    );

    let grid_width = panels.iter().map(|p| p.layout.width()).max().unwrap_or(0);
    let width = grid_width.max(300).saturating_add(2 * MARGIN);
    let height = panels
        .iter()
        .map(Panel::height)
        .fold(2 * MARGIN + 10 * (panels.len() - 1), usize::saturating_add);
    let mut canvas = Canvas::checked(width, height, WHITE)?;
    let mut y = MARGIN;
    let mut placed = Vec::new();
    for panel in &panels {
        placed.push((panel, (MARGIN, y)));
        y += panel.height() + 10;
    }
    draw_panels(&mut canvas, &placed)?;
    write_png(canvas, &args.output)
}
