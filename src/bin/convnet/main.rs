//! `convnet`: train, evaluate, check, benchmark and draw the book's CNNs
//! from the command line. Every failure is one line on stderr and a non-zero
//! exit; `convnet` alone prints its help (the list of commands) and exits
//! with 2; output into a closed pipe (`convnet summary | head -1`) ends the
//! program quietly, as SIGPIPE ends other Unix tools.

mod bench;
mod bench_scaling;
mod confusion_plot;
mod data;
mod distributed;
mod drawing;
mod gradcheck;
mod memory;
mod onnx;
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
    about = "Convolutional neural networks from scratch (Deep Learning from Scratch, ch. 7)",
    arg_required_else_help = true
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
    /// Write a saved network as an ONNX model (opset 13, output: logits).
    Export(onnx::ExportArgs),
    /// Read an ONNX model into a checkpoint (see docs/onnx.md for the operators).
    Import(onnx::ImportArgs),
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
/// subnormal floats flushed to zero on every thread (see
/// `convnet::parallel::denormals`). The library's training, evaluation and
/// `convnet::parallel::run_fast` then run on it, its workers kept awake.
/// A `--threads` far above the cores (see `convnet::limits::max_threads`)
/// is refused before any thread starts.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        convnet::limits::check_threads(n)?;
    }
    convnet::parallel::denormals::thread_pool_with_flushed_denormals(threads)?;
    Ok(())
}

fn main() -> ExitCode {
    die_quietly_on_closed_pipe();
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("convnet: internal error: {}", fold_lines(&info.to_string()));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    let result = match cli.command {
        Command::Train(args) => distributed::run_train(*args),
        Command::Eval(args) => train::run_eval(args),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Visualize(args) => visualize::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Export(args) => onnx::run_export(args),
        Command::Import(args) => onnx::run_import(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` joins the error's causes; a cause may itself span
            // lines (some image decoders'), so fold those too.
            eprintln!("convnet: error: {}", fold_lines(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Reports a command line that clap refused (or `--help`, `--version`):
/// help and version as clap prints them; a missing command or subcommand
/// with the help that lists them (exit 2); any other error as one line with
/// clap's tips and the `--help` to read (exit 2).
fn argument_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let command = command_path(std::env::args().skip(1));
            eprintln!("convnet: error: {}", one_line(&e.to_string(), &command));
            ExitCode::from(2)
        }
    }
}

/// clap's rendered error on one line: its message (with the lines that
/// continue it, such as the missing arguments), then its tips in
/// parentheses, then the `--help` to read: that of `command`, the
/// subcommand the arguments name.
fn one_line(rendered: &str, command: &str) -> String {
    let mut message = Vec::new();
    let mut tips = Vec::new();
    for l in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(tip) = l.strip_prefix("tip: ") {
            tips.push(tip);
        } else if l.starts_with("Usage: ") || l.starts_with("For more information") {
            break;
        } else {
            message.push(l.strip_prefix("error: ").unwrap_or(l));
        }
    }
    let mut line = match message.join(" ") {
        m if m.is_empty() => "invalid arguments".to_string(),
        m => m,
    };
    if !tips.is_empty() {
        line.push_str(&format!(" (tip: {})", tips.join("; tip: ")));
    }
    format!("{line}; see {command} --help")
}

/// The (sub)command that `args` (without the program name) name: `convnet`,
/// `convnet train`, `convnet visualize filters`, ...
fn command_path(args: impl IntoIterator<Item = String>) -> String {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut path = vec!["convnet".to_string()];
    for arg in args {
        if arg == "--" {
            break;
        }
        let found = command
            .get_subcommands()
            .find(|sub| sub.get_name() == arg || sub.get_all_aliases().any(|a| a == arg))
            .cloned();
        if let Some(sub) = found {
            path.push(sub.get_name().to_string());
            command = sub;
        }
    }
    path.join(" ")
}

/// Restores the default action of SIGPIPE, which Rust's runtime ignores:
/// writing into a closed pipe (`convnet gradcheck | head -1`) then ends the
/// program at once and silently, as it does other Unix tools, instead of
/// `println!` panicking on the broken pipe.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: `signal` is the C library's; setting SIGPIPE's action to
        // SIG_DFL, before any other thread exists, has no other effect.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}

/// `text` on one line: its lines trimmed, the empty ones dropped, the rest
/// joined by nothing (before a line that starts with `:`, `.`, ...), a
/// space (after a `:` or `.` at a line's end) or `: `.
fn fold_lines(text: &str) -> String {
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
    use super::{command_path, fold_lines, one_line};

    #[test]
    fn clap_errors_become_one_line_with_their_tips() {
        let rendered = "error: unrecognized subcommand 'trian'\n\n  tip: a similar subcommand exists: 'train'\n\nUsage: convnet <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered, "convnet"),
            "unrecognized subcommand 'trian' (tip: a similar subcommand exists: 'train'); see convnet --help"
        );
        let rendered = "error: unexpected argument '--epoch' found\n\n  tip: a similar argument exists: '--epochs'\n\nUsage: convnet train --epochs <EPOCHS>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered, "convnet train"),
            "unexpected argument '--epoch' found (tip: a similar argument exists: '--epochs'); see convnet train --help"
        );
        let rendered = "error: the following required arguments were not provided:\n  --checkpoint <CHECKPOINT>\n  <IMAGES>...\n\nUsage: convnet predict --checkpoint <CHECKPOINT> <IMAGES>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered, "convnet predict"),
            "the following required arguments were not provided: --checkpoint <CHECKPOINT> <IMAGES>...; see convnet predict --help"
        );
    }

    #[test]
    fn the_command_path_follows_the_subcommands_named() {
        let path = |args: &[&str]| command_path(args.iter().map(|a| a.to_string()));
        assert_eq!(path(&[]), "convnet");
        assert_eq!(path(&["trian"]), "convnet");
        assert_eq!(path(&["train", "--epochs", "x"]), "convnet train");
        assert_eq!(
            path(&["visualize", "filters", "--bogus"]),
            "convnet visualize filters"
        );
        assert_eq!(path(&["--", "train"]), "convnet");
    }

    #[test]
    fn errors_are_folded_onto_one_line() {
        assert_eq!(fold_lines("plain"), "plain");
        assert_eq!(
            fold_lines(
                "cannot read image x.png: Format error decoding Png:\n  invalid signature\n"
            ),
            "cannot read image x.png: Format error decoding Png: invalid signature"
        );
        assert_eq!(fold_lines("a\n\n b \r\nc"), "a: b: c");
        // The image crate's JPEG errors end in a newline before the cause.
        assert_eq!(
            fold_lines("Jpeg: I/O errors Not enough bytes\n: I/O errors Not enough bytes\n\n"),
            "Jpeg: I/O errors Not enough bytes: I/O errors Not enough bytes"
        );
        assert_eq!(
            fold_lines("panicked at src/x.rs:1:2:\nboom"),
            "panicked at src/x.rs:1:2: boom"
        );
        assert_eq!(fold_lines("cr\ronly"), "cr only");
        assert!(!fold_lines("a\u{2028}b\u{85}c").contains(['\u{2028}', '\u{85}']));
    }
}
