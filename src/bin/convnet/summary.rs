//! `convnet summary`: each layer's output shape, parameters and FLOPs.

use clap::Args;
use convnet::networks::{build_model_within, model_info, summary::summarize, ModelOptions};
use convnet::Rng;
use std::process::ExitCode;

#[derive(Args)]
pub struct SummaryArgs {
    /// simple, lenet5, alexnet, alexnet-small, deep, or a spec such as
    /// 'conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine(10)'.
    #[arg(long, default_value = "simple")]
    model: String,
    /// Input shape C,H,W. Default: the model's own (3,227,227 for alexnet,
    /// 1,28,28 otherwise).
    #[arg(long, value_parser = parse_shape)]
    input: Option<[usize; 3]>,
    /// Number of classes. Default: the model's own (1000 for alexnet, 10 otherwise).
    #[arg(long)]
    classes: Option<usize>,
    /// Activation of lenet5, alexnet, alexnet-small and deep: relu, sigmoid or tanh.
    #[arg(long)]
    activation: Option<String>,
    #[command(flatten)]
    reference: crate::ReferenceFlag,
    #[command(flatten)]
    memory: crate::memory::MemoryArgs,
}

/// `C,H,W` → `[C, H, W]`.
pub fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let dims: Vec<usize> = s
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("'{s}' is not C,H,W: {e}"))?;
    dims.try_into()
        .map_err(|_| format!("'{s}' is not C,H,W (three numbers)"))
}

/// The model's own input shape and class count.
pub fn default_shape(model: &str) -> ([usize; 3], usize) {
    model_info(model).map_or(([1, 28, 28], 10), |m| (m.input_shape, m.classes))
}

pub fn run(args: SummaryArgs) -> anyhow::Result<ExitCode> {
    let (shape, classes) = default_shape(&args.model);
    let options = ModelOptions {
        activation: args.activation,
        ..Default::default()
    };
    let input = args.input.unwrap_or(shape);
    let classes = args.classes.unwrap_or(classes);
    let limit = args.memory.limit();
    let mut net = build_model_within::<f32>(
        &args.model,
        &options,
        input,
        classes,
        &mut Rng::new(0),
        limit,
    )?;
    args.reference.apply(&mut net);
    println!(
        "{}{} on {:?} input, {classes} classes",
        args.model,
        args.reference.note(),
        input
    );
    println!("{}", summarize(&mut net)?);
    Ok(ExitCode::SUCCESS)
}
