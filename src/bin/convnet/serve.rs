//! `convnet serve`: a local web page that shows every layer of a network at
//! work on a digit you draw (see `docs/serve.md` and `convnet::serve`).
//!
//! Without `--checkpoint`, a SimpleConvNet is trained on the embedded MNIST
//! digits first (a few epochs, with progress) and kept in the cache folder,
//! so that the page works out of the box and without a network; the next
//! start loads it.
//!
//! `convnet train --serve` serves the same page during training
//! ([`TrainLive`]): the curves, the filters and the answers follow the run.

use clap::Args;
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::data::TrainTest;
use convnet::data::{load_embedded_mnist10k, Dataset};
use convnet::init::Init;
use convnet::networks::{build_model, ModelOptions, Network};
use convnet::serve::{App, RunInfo, Server, Stopper, Trainer};
use convnet::train::{train, EpochMetrics, Progress, TrainConfig};
use convnet::Rng;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The default network's training: epochs over the embedded digits.
const DEFAULT_EPOCHS: usize = 4;
/// The file name of the default network in the cache folder.
const DEFAULT_FILE: &str = "serve-simple-mnist-10k.safetensors";

#[derive(Args)]
pub struct ServeArgs {
    /// A checkpoint written by `convnet train --save`. Default: the book's
    /// SimpleConvNet trained on the embedded MNIST digits (trained on first
    /// use and kept in the cache folder).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The address to listen on. The default serves this computer only;
    /// 0.0.0.0 serves the whole network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Where the default network is kept. Default: $XDG_CACHE_HOME/convnet,
    /// else $HOME/.cache/convnet.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Worker threads for the network. Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    reference: crate::ReferenceFlag,
}

/// `convnet train`'s options for training live.
#[derive(Args)]
pub struct TrainServeArgs {
    /// Serve the web page of `convnet serve` during training (its URL is
    /// printed before the first epoch): loss and accuracy curves, the first
    /// layer's filters and the drawing pad follow the run. When training is
    /// over, the final network is served until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// With --serve: the address to listen on. The default serves this
    /// computer only; 0.0.0.0 serves the whole network.
    #[arg(long, default_value = "127.0.0.1", requires = "serve")]
    host: String,
    /// With --serve: the port (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 8000, requires = "serve")]
    port: u16,
}

/// Training live: the server of `convnet train --serve` and the trainer's
/// side of it. Dropping it stops the server.
pub struct TrainLive {
    trainer: Trainer,
    server: Option<Server>,
    url: String,
    /// Set when training is over: Ctrl-C then stops the server.
    over: Arc<AtomicBool>,
}

/// What Ctrl-C does to a training live server: nothing during training
/// (training stops first, then the server), stop it once training is over.
pub struct ServeCtrlC {
    stopper: Stopper,
    over: Arc<AtomicBool>,
}

impl ServeCtrlC {
    /// Stops the server if training is over; whether it did.
    pub fn stop_if_over(&self) -> bool {
        let over = self.over.load(Ordering::SeqCst);
        if over {
            self.stopper.stop();
        }
        over
    }
}

impl TrainLive {
    /// Starts serving `net` (a copy) for a run of `epochs` in all, from
    /// `start_epoch`, if `--serve` asks for it; prints the URL.
    pub fn start(
        args: &TrainServeArgs,
        net: &mut Network<f32>,
        info: &CheckpointInfo,
        data: &TrainTest,
        config: &TrainConfig,
    ) -> anyhow::Result<Option<TrainLive>> {
        if !args.serve {
            return Ok(None);
        }
        let app = Arc::new(App::training(net, info.clone(), Some(&data.test))?);
        let server = Server::start(app.clone(), &args.host, args.port)?;
        let url = server.url().to_string();
        let run = RunInfo {
            epochs: config.epochs,
            start_epoch: config.start_epoch,
            batches: data.train.len().div_ceil(config.batch_size.max(1)),
            batch_size: config.batch_size,
            train_images: data.train.len(),
            test_images: data.test.len(),
            dataset: data.name.clone(),
        };
        println!("serving the training live at {url}  (Ctrl-C stops the training)");
        std::io::stdout().flush()?;
        Ok(Some(TrainLive {
            trainer: Trainer::new(app, &run),
            server: Some(server),
            url,
            over: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// For the Ctrl-C handler.
    pub fn ctrl_c(&self) -> Option<ServeCtrlC> {
        self.server.as_ref().map(|server| ServeCtrlC {
            stopper: server.stopper(),
            over: self.over.clone(),
        })
    }

    /// Reports a training event (see [`Trainer::progress`]).
    pub fn progress(&mut self, event: &Progress, net: &mut Network<f32>) {
        self.trainer.progress(event, net);
    }

    /// Training has ended (`result`; `interrupted` by Ctrl-C): the final
    /// network is served, and the page told.
    pub fn finish(
        &mut self,
        net: &mut Network<f32>,
        result: &convnet::Result<Vec<EpochMetrics>>,
        interrupted: bool,
    ) {
        let (status, message) = match result {
            Err(e) => ("failed", Some(e.to_string())),
            Ok(_) if interrupted => ("interrupted", None),
            Ok(_) => ("finished", None),
        };
        self.trainer.finish(net, status, message.as_deref());
    }

    /// Serves the final network until Ctrl-C.
    pub fn serve_until_stopped(mut self) {
        self.over.store(true, Ordering::SeqCst);
        println!(
            "training is over: serving the final network at {}  (Ctrl-C to stop)",
            self.url
        );
        let _ = std::io::stdout().flush();
        if let Some(server) = self.server.take() {
            server.wait();
        }
        eprintln!("stopped");
    }
}

impl Drop for TrainLive {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::set_threads(args.threads)?;
    let (mut net, info) = match &args.checkpoint {
        Some(path) => checkpoint::load(path)?,
        None => default_network(args.cache_dir.as_deref())?,
    };
    args.reference.apply(&mut net);
    let samples = digit_samples(&info)?;
    let app = App::new(net, info.clone(), samples.as_ref())?;
    let server = Server::start(Arc::new(app), &args.host, args.port)?;
    let stopper = server.stopper();
    ctrlc::set_handler(move || stopper.stop())
        .map_err(|e| anyhow::anyhow!("cannot handle Ctrl-C: {e}"))?;
    println!(
        "serving {} ({} classes) at {}  (Ctrl-C to stop)",
        info.model,
        info.class_names.len(),
        server.url()
    );
    std::io::stdout().flush()?;
    server.wait();
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The embedded MNIST test digits, for a network that reads 28×28 digits.
fn digit_samples(info: &CheckpointInfo) -> anyhow::Result<Option<Dataset>> {
    let digits = (0..10).map(|d| d.to_string()).collect::<Vec<_>>();
    if info.input_shape != [1, 28, 28] || info.class_names != digits {
        return Ok(None);
    }
    Ok(Some(load_embedded_mnist10k()?.test))
}

/// The default network: loaded from the cache folder, or trained there.
fn default_network(cache_dir: Option<&Path>) -> anyhow::Result<(Network<f32>, CheckpointInfo)> {
    let dir = cache_dir
        .map(Path::to_path_buf)
        .or_else(convnet::data::cache::default_cache_dir);
    let path = dir.as_ref().map(|d| d.join(DEFAULT_FILE));
    if let Some(path) = path.as_ref().filter(|p| p.is_file()) {
        eprintln!("loading the default network from {}", path.display());
        return Ok(checkpoint::load(path)?);
    }
    let data = load_embedded_mnist10k()?;
    let options = ModelOptions {
        init: Some(Init::He),
        ..ModelOptions::default()
    };
    let seed = 1;
    let mut net = build_model::<f32>(
        "simple",
        &options,
        data.train.input_shape(),
        data.class_names.len(),
        &mut Rng::new(seed),
    )?;
    eprintln!(
        "training the default network (SimpleConvNet, {DEFAULT_EPOCHS} epochs on the embedded MNIST digits; once)"
    );
    let config = TrainConfig {
        epochs: DEFAULT_EPOCHS,
        seed,
        ..TrainConfig::default()
    };
    let mut last_shown = 0;
    // The library's `train` runs on a fast pool itself.
    train(&mut net, &data, &config, |event, _| {
        match event {
            Progress::Batch {
                epoch, done, total, ..
            } if done * 10 / total != last_shown => {
                last_shown = done * 10 / total;
                eprint!(
                    "\r  epoch {}/{DEFAULT_EPOCHS}: {:>3}%",
                    epoch,
                    done * 100 / total
                );
            }
            Progress::Epoch(m) => {
                last_shown = 0;
                eprintln!(
                    "\r  epoch {}/{DEFAULT_EPOCHS}: test accuracy {:.2}%  ({:.1} s)",
                    m.epoch,
                    100.0 * m.test_acc,
                    m.seconds
                );
            }
            _ => {}
        }
        Ok(())
    })?;
    let info = CheckpointInfo {
        model: "simple".to_string(),
        options,
        input_shape: data.train.input_shape(),
        class_names: data.class_names.clone(),
        extra: BTreeMap::from([
            ("seed".to_string(), seed.to_string()),
            ("dataset".to_string(), data.name.clone()),
            ("dataset_fingerprint".to_string(), data.fingerprint()),
        ]),
    };
    match (&dir, &path) {
        (Some(dir), Some(path)) => {
            let saved = std::fs::create_dir_all(dir)
                .map_err(anyhow::Error::from)
                .and_then(|_| Ok(checkpoint::save(&mut net, &info, path)?));
            match saved {
                Ok(()) => eprintln!("saved it to {} for next time", path.display()),
                Err(e) => eprintln!("could not keep it in the cache ({e:#}); serving it anyway"),
            }
        }
        _ => eprintln!("no cache folder ($HOME is not set): the network is not kept"),
    }
    Ok((net, info))
}
