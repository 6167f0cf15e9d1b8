//! `convnet`: train, evaluate, check, benchmark and draw the book's CNNs
//! from the command line. Every failure is one line on stderr and a non-zero exit.

mod bench;
mod bench_scaling;
mod confusion_plot;
mod data;
mod drawing;
mod gradcheck;
mod image_input;
mod memory;
mod plot;
mod predict;
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
}

/// Starts rayon's global thread pool (`None`: one thread per core) with
/// subnormal floats flushed to zero on every thread (see `convnet::parallel::denormals`).
/// A `--threads` far above the cores (see `convnet::limits::max_threads`)
/// is refused before any thread starts.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        convnet::limits::check_threads(n)?;
    }
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
        eprintln!("convnet: internal error: {}", one_line(&info.to_string()));
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` joins the error's causes; a cause may itself span
            // lines (some image decoders'), so fold those too.
            eprintln!("convnet: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// `text` on one line: its lines trimmed, the empty ones dropped, the rest
/// joined by nothing (before a line that starts with `:`, `.`, ...), a
/// space (after a `:` or `.` at a line's end) or `: `.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if line.starts_with([':', '.', ';', ',', ')']) {
                ""
            } else if out.ends_with([':', '.', ';', ',']) {
                " "
            } else {
                ": "
            });
        }
        out.push_str(line);
    }
    // Other vertical whitespace (\r alone, form feeds) as spaces.
    out.replace(
        ['\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}'],
        " ",
    )
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn errors_are_folded_onto_one_line() {
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(
            one_line("cannot read image x.png: Format error decoding Png:\n  invalid signature\n"),
            "cannot read image x.png: Format error decoding Png: invalid signature"
        );
        assert_eq!(one_line("a\n\n b \r\nc"), "a: b: c");
        // The image crate's JPEG errors end in a newline before the cause.
        assert_eq!(
            one_line("Jpeg: I/O errors Not enough bytes\n: I/O errors Not enough bytes\n\n"),
            "Jpeg: I/O errors Not enough bytes: I/O errors Not enough bytes"
        );
        assert_eq!(
            one_line("panicked at src/x.rs:1:2:\nboom"),
            "panicked at src/x.rs:1:2: boom"
        );
        assert_eq!(one_line("cr\ronly"), "cr only");
        assert!(!one_line("a\u{2028}b\u{85}c").contains(['\u{2028}', '\u{85}']));
    }
}
