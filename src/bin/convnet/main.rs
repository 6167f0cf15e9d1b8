//! `convnet`: train, evaluate, check, benchmark and draw the book's CNNs
//! from the command line. Every failure is one line on stderr and a non-zero exit.

mod bench;
mod bench_scaling;
mod confusion_plot;
mod data;
mod drawing;
mod gradcheck;
mod image_input;
mod outputs;
mod plot;
mod predict;
mod serve;
mod summary;
mod train;
mod visualize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "convnet",
    version,
    about = "Convolutional neural networks from scratch (Deep Learning from Scratch, ch. 7)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network (default: SimpleConvNet on the embedded MNIST digits).
    Train(Box<train::TrainArgs>),
    /// Evaluate a saved network on a data set: accuracy, per class and confusion matrix.
    Eval(train::EvalArgs),
    /// Compare every layer's backward pass with a numerical gradient (f64).
    Gradcheck(gradcheck::GradcheckArgs),
    /// Measure training and inference speed (images per second).
    Bench(bench::BenchArgs),
    /// Print each layer's output shape, parameter count and FLOPs.
    Summary(summary::SummaryArgs),
    /// Classify PNG/JPEG files with a saved network (top-k classes).
    Predict(predict::PredictArgs),
    /// Draw a saved network's filters or one image's feature maps (PNG).
    Visualize(visualize::VisualizeArgs),
    /// Draw loss and accuracy per epoch from a `train --metrics` file (PNG, 960×400).
    Plot(plot::PlotArgs),
    /// Serve a local web page: draw a digit and watch every layer work on it.
    Serve(serve::ServeArgs),
}

/// `--reference`, on every command that builds or loads a network.
#[derive(clap::Args)]
pub struct ReferenceFlag {
    /// Use the book's plain Convolution and Pooling (layers/reference)
    /// instead of the fast ones.
    #[arg(long = "reference")]
    pub on: bool,
}

impl ReferenceFlag {
    /// Swaps `net`'s convolutions and max poolings for the reference ones
    /// with `--reference` ([`Network::use_reference_layers`]).
    ///
    /// [`Network::use_reference_layers`]: convnet::networks::Network::use_reference_layers
    pub fn apply<T: convnet::Float>(&self, net: &mut convnet::networks::Network<T>) {
        if self.on {
            net.use_reference_layers();
        }
    }

    /// `" with the reference layers"` with `--reference`, else nothing: for
    /// the line that names the network.
    pub fn note(&self) -> &'static str {
        if self.on {
            " with the reference layers"
        } else {
            ""
        }
    }
}

/// Starts rayon's global thread pool (`None`: one thread per core) with
/// subnormal floats flushed to zero on every thread (see `convnet::parallel::denormals`).
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    convnet::parallel::denormals::thread_pool_with_flushed_denormals(threads)?;
    Ok(())
}

/// Runs `work` on one of the pool's threads (after [`set_threads`]), with
/// the other workers kept awake ([`convnet::parallel::awake_workers`]). Every layer starts a
/// parallel loop; from a thread outside the pool, each one hands its work
/// to the pool and sleeps until a worker has finished it. From inside the
/// pool, a loop starts at once on the calling thread, and an awake worker
/// takes its share without being woken first.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    convnet::parallel::awake_workers::with_workers_awake(work)
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("convnet: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print as clap formats them.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Bad arguments: clap's first line, without its usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("convnet: error: {first} (see convnet --help)");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Train(args) => train::run_train(*args),
        Command::Eval(args) => train::run_eval(args),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Visualize(args) => visualize::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` joins the error's causes on one line.
            eprintln!("convnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
