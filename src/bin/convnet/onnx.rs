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
    /// Tanh, Dropout, LRN and BatchNormalization nodes.
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
    let bytes = std::fs::read(&args.onnx)
        .with_context(|| format!("cannot read {}", args.onnx.display()))?;
    let mut imported = onnx::import(&bytes, &args.onnx.display().to_string())?;
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
