//! `convnet predict`: classify image files with a saved network; each
//! image is converted to the network's input as
//! [`convnet::data::image_input`] describes.

use anyhow::Context;
use clap::Args;
use convnet::checkpoint;
use convnet::data::image_input::load_image;
use convnet::layers::softmax_with_loss::softmax_row;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct PredictArgs {
    /// A checkpoint written by `convnet train --save`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files, or folders whose PNG/JPEG files are all classified.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Never invert dark-on-light images.
    #[arg(long)]
    no_invert: bool,
    /// One JSON object per image instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    reference: crate::ReferenceFlag,
    #[command(flatten)]
    memory: crate::memory::MemoryArgs,
}

/// The files to classify: files as given, folders expanded (sorted).
fn image_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read folder {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                    ["png", "jpg", "jpeg"].contains(&ext.to_ascii_lowercase().as_str())
                })
                .collect();
            found.sort();
            anyhow::ensure!(
                !found.is_empty(),
                "{} has no PNG or JPEG files",
                path.display()
            );
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

pub fn run(args: PredictArgs) -> anyhow::Result<ExitCode> {
    crate::set_threads(None)?;
    let (mut net, info) = checkpoint::load_within(&args.checkpoint, args.memory.limit())?;
    args.reference.apply(&mut net);
    anyhow::ensure!(args.top_k >= 1, "--top-k must be at least 1");
    for file in image_files(&args.images)? {
        let x = load_image(&file, info.input_shape, !args.no_invert)?;
        let scores = net.predict(&x, false)?;
        let mut probabilities = vec![0.0f32; scores.len()];
        softmax_row(scores.data(), &mut probabilities);
        let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(args.top_k);
        let name = |i: usize| {
            info.class_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| i.to_string())
        };
        if args.json {
            let predictions: Vec<_> = ranked
                .iter()
                .map(|&(i, p)| serde_json::json!({"class": name(i), "index": i, "probability": p}))
                .collect();
            let line =
                serde_json::json!({"file": file.display().to_string(), "predictions": predictions});
            println!("{line}");
        } else {
            let shown: Vec<String> = ranked
                .iter()
                .map(|&(i, p)| format!("{} ({:.1}%)", name(i), 100.0 * p))
                .collect();
            println!("{}: {}", file.display(), shown.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
