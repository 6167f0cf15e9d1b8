//! The data-set options shared by `convnet train` and `convnet eval`:
//! `--data DIR`, `--dataset NAME` and `--cache-dir DIR`, and the download
//! progress bar.

use clap::builder::PossibleValuesParser;
use clap::Args;
use convnet::data::cache::Cache;
use convnet::data::catalog::DatasetName;
use convnet::data::download::Event;
use convnet::data::{load_dir, load_embedded_mnist10k, TrainTest};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The names `--dataset` takes.
const NAMES: [&str; 4] = ["mnist", "fashion-mnist", "cifar10", "mnist-10k"];

#[derive(Args)]
pub struct DataArgs {
    /// A folder of MNIST-format IDX files (gzipped or raw, standard names) or
    /// of CIFAR-10 binary batches, used as it is (no download, no checksum).
    #[arg(long, conflicts_with_all = ["dataset", "cache_dir"])]
    data: Option<PathBuf>,
    /// A data set by name: mnist, fashion-mnist and cifar10 are downloaded on
    /// first use into the cache folder and checked against their SHA-256;
    /// mnist-10k is the 10,000 MNIST digits embedded in the program.
    /// Default (with neither --data nor --dataset): mnist-10k.
    #[arg(long, value_parser = PossibleValuesParser::new(NAMES))]
    dataset: Option<String>,
    /// The download cache. Default: $XDG_CACHE_HOME/convnet, else
    /// $HOME/.cache/convnet. CONVNET_MIRROR=URL fetches every set from
    /// URL/<set>/<file> instead of its canonical server.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The `--data` folder, if one is given.
    pub fn folder(&self) -> Option<&std::path::Path> {
        self.data.as_deref()
    }

    /// Loads the chosen set, downloading it if needed.
    pub fn load(&self) -> anyhow::Result<TrainTest> {
        self.load_or(None)
    }

    /// [`load`](Self::load), with `default` (a `--dataset` name) instead of
    /// the embedded digits when neither `--data` nor `--dataset` is given.
    pub fn load_or(&self, default: Option<&str>) -> anyhow::Result<TrainTest> {
        if let Some(dir) = &self.data {
            return Ok(load_dir(dir)?);
        }
        let name: DatasetName = match self.dataset.as_deref().or(default) {
            Some(name) => name.parse()?,
            None => DatasetName::Mnist10k,
        };
        if name.source().is_none() {
            // The embedded set: no cache folder needed, nor $HOME.
            return Ok(load_embedded_mnist10k()?);
        }
        let cache = Cache::from_env(self.cache_dir.as_deref())?;
        let mut bar = DownloadBar::default();
        let set = cache.load(name, &mut |event| bar.update(event));
        bar.clear();
        Ok(set?)
    }
}

/// One progress bar per file on a terminal; one line per file otherwise.
#[derive(Default)]
struct DownloadBar(Option<ProgressBar>);

impl DownloadBar {
    fn update(&mut self, event: Event) {
        match event {
            Event::Started { url, total } => {
                self.clear();
                let name = url.rsplit('/').next().unwrap_or(url).to_string();
                if !std::io::stderr().is_terminal() {
                    eprintln!("downloading {url}");
                    return;
                }
                let bar = ProgressBar::new(total.unwrap_or(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_message(name);
                self.0 = Some(bar);
            }
            Event::Received { done, .. } => {
                if let Some(bar) = &self.0 {
                    bar.set_position(done);
                }
            }
            Event::Finished { path, .. } => {
                self.clear();
                eprintln!("saved {}", path.display());
            }
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}
