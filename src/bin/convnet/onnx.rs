//! `convnet export` and `convnet import`: ONNX models in and out
//! (`convnet::onnx`, docs/onnx.md).

use anyhow::Context;
use clap::Args;
use convnet::checkpoint;
use convnet::onnx::{self, ExportInfo};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ExportArgs {
    /// A checkpoint written by `convnet train --save` (or `convnet import`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The ONNX file to write (opset 13; input "input" (N, C, H, W) float32,
    /// output "logits" (N, classes), the scores before the softmax).
    #[arg(long)]
    onnx: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    /// An ONNX model: a chain of Conv, MaxPool, AveragePool,
    /// GlobalAveragePool, Gemm (or MatMul + Add), Flatten, Relu, Sigmoid,
    /// Tanh, Dropout, LRN and BatchNormalization nodes, or what
    /// torch.onnx.export writes for the same layers (docs/onnx.md); an
    /// external data file beside it is read.
    onnx: PathBuf,
    /// The checkpoint to write (safetensors); `train --resume` continues it.
    #[arg(long)]
    save: PathBuf,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    crate::outputs::check_outputs(
        &[("--onnx", Some(args.onnx.as_path()))],
        &[("--checkpoint".to_string(), args.checkpoint.clone())],
    )?;
    let (net, info) = checkpoint::load(&args.checkpoint)?;
    let bytes = onnx::export(&net, &ExportInfo::from(&info))
        .with_context(|| format!("cannot export {}", args.checkpoint.display()))?;
    checkpoint::write_atomically(&args.onnx, &bytes)?;
    let [c, h, w] = info.input_shape;
    println!(
        "wrote {} ({} bytes, opset {}): input \"{}\" (N, {c}, {h}, {w}) float32, output \"{}\" (N, {}) logits",
        args.onnx.display(),
        bytes.len(),
        onnx::OPSET,
        onnx::INPUT_NAME,
        onnx::OUTPUT_NAME,
        info.class_names.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    crate::outputs::check_outputs(
        &[("--save", Some(args.save.as_path()))],
        &[("the ONNX file".to_string(), args.onnx.clone())],
    )?;
    // Weights in an external data file (torch.onnx.export's default,
    // model.onnx.data) are read from the model's folder.
    let mut imported = onnx::import_file(&args.onnx)?;
    // Epoch 0 with an empty optimizer state, so that `train --resume`
    // fine-tunes it with a fresh optimizer.
    checkpoint::save_training_state(&mut imported.net, &imported.info, &[], 0, 0, &args.save)?;
    println!(
        "imported {}: {} on {:?} input, {} classes, {} parameters; saved {}",
        args.onnx.display(),
        imported.info.model,
        imported.info.input_shape,
        imported.info.class_names.len(),
        imported.net.num_params(),
        args.save.display()
    );
    Ok(ExitCode::SUCCESS)
}
