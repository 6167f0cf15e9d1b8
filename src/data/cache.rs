//! The download cache: loading a data set by name, downloading on first use
//! whatever files are missing.
//!
//! The cache folder is the one given ([`Cache::new`]), else
//! `$XDG_CACHE_HOME/convnet`, else `$HOME/.cache/convnet`
//! ([`default_cache_dir`]). Each set has a folder in it:
//!
//! ```text
//! <cache>/mnist/train-images-idx3-ubyte.gz        (and the other three IDX files)
//! <cache>/fashion-mnist/train-images-idx3-ubyte.gz
//! <cache>/cifar10/cifar-10-batches-bin/data_batch_1.bin   (unpacked from
//!                                                          cifar-10-binary.tar.gz)
//! ```
//!
//! What is checked when:
//!
//! - A downloaded file is verified (size and SHA-256 from
//!   [`catalog`](super::catalog)) before it gets its name
//!   ([`download`](super::download)).
//! - An IDX file already in the cache is verified again on every load (a
//!   few hundredths of a second), so a file put there by hand must be the
//!   original: a mismatch is an error that says to delete it or use
//!   `--data`, never a silent re-download over it.
//! - CIFAR-10's archive is verified, unpacked into a temporary folder and
//!   renamed to `cifar-10-batches-bin`; that folder only ever appears
//!   complete, so when it exists it is trusted without re-checking. The
//!   archive is then deleted if it was downloaded, kept if it was put there
//!   by hand.
//!
//! Setting `CONVNET_MIRROR=URL` ([`MIRROR_ENV`]) fetches every set from
//! `URL/<folder>/<file>` instead of its canonical server: a mirror is a copy
//! of a cache folder served over HTTP. Checksums still apply.

use super::catalog::{DatasetName, Layout, RemoteFile, Source};
use super::download::{download, verify_file, Event};
use super::{load_dir, load_embedded_mnist10k, TrainTest};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The environment variable that points every data set at one mirror.
pub const MIRROR_ENV: &str = "CONVNET_MIRROR";

/// `$XDG_CACHE_HOME/convnet` if that variable holds an absolute path, else
/// `$HOME/.cache/convnet`; `None` when neither is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .map(|dir| dir.join("convnet"))
}

/// A cache folder, and optionally a mirror that replaces every set's
/// canonical base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// The cache folder: each set in `<dir>/<folder>`.
    pub dir: PathBuf,
    /// A base URL that replaces every set's canonical one (ending in `/`); `None`: the
    /// canonical servers.
    pub mirror: Option<String>,
}

impl Cache {
    /// The cache in `dir`, downloading from the canonical servers.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache {
            dir: dir.into(),
            mirror: None,
        }
    }

    /// The cache in `dir` if given, else [`default_cache_dir`], with the
    /// mirror from `$CONVNET_MIRROR` if set and non-empty.
    pub fn from_env(dir: Option<&Path>) -> Result<Cache> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => default_cache_dir().ok_or_else(|| {
                Error::Config(
                    "no cache folder: neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir DIR"
                        .to_string(),
                )
            })?,
        };
        let mirror = std::env::var(MIRROR_ENV).ok().filter(|m| !m.is_empty());
        Ok(Cache { dir, mirror })
    }

    /// Loads a named set: the embedded one, or from the cache, downloading
    /// what is missing.
    pub fn load(&self, name: DatasetName, progress: &mut dyn FnMut(Event)) -> Result<TrainTest> {
        match name.source() {
            None => load_embedded_mnist10k(),
            Some(source) => self.load_source(&source, progress),
        }
    }

    /// Makes `source` complete in the cache ([`Cache::fetch`]) and loads it,
    /// named `source.name`.
    pub fn load_source(
        &self,
        source: &Source,
        progress: &mut dyn FnMut(Event),
    ) -> Result<TrainTest> {
        let folder = self.fetch(source, progress)?;
        let mut set = load_dir(&folder)?;
        set.name = source.name.to_string();
        Ok(set)
    }

    /// Downloads and verifies whatever of `source` the cache lacks, and
    /// returns the folder to load (`<cache>/<folder>`, or for an archive
    /// the folder unpacked from it).
    pub fn fetch(&self, source: &Source, progress: &mut dyn FnMut(Event)) -> Result<PathBuf> {
        let mirror_base = self
            .mirror
            .as_ref()
            .map(|m| format!("{}/{}/", m.trim_end_matches('/'), source.folder));
        let source = match &mirror_base {
            Some(base) => source.with_base_url(base),
            None => *source,
        };
        let folder = self.dir.join(source.folder);
        match source.layout {
            Layout::Idx => {
                for file in source.files {
                    self.ensure_file(&source, &folder, file, progress)?;
                }
                Ok(folder)
            }
            Layout::TarGz { inner } => {
                let unpacked = folder.join(inner);
                if unpacked.is_dir() {
                    return Ok(unpacked);
                }
                let [file] = source.files else {
                    return Err(Error::Config(format!(
                        "{}: an archive source needs exactly one file",
                        source.name
                    )));
                };
                let downloaded = self.ensure_file(&source, &folder, file, progress)?;
                let archive = folder.join(file.name);
                unpack_tar_gz(&archive, inner, &unpacked)?;
                if downloaded {
                    let _ = std::fs::remove_file(&archive);
                }
                Ok(unpacked)
            }
        }
    }

    /// Verifies `folder/file` if it exists, else downloads it; true if it
    /// was downloaded.
    fn ensure_file(
        &self,
        source: &Source,
        folder: &Path,
        file: &RemoteFile,
        progress: &mut dyn FnMut(Event),
    ) -> Result<bool> {
        let path = folder.join(file.name);
        if path.is_file() {
            verify_file(&path, file)?;
            return Ok(false);
        }
        download(&source.url(file), &path, file, progress)?;
        Ok(true)
    }
}

/// Unpacks the `.tar.gz` at `archive` into a temporary folder beside
/// `target`, checks that it holds the folder `inner`, and renames that to
/// `target`. The temporary folder is removed in every case.
pub fn unpack_tar_gz(archive: &Path, inner: &str, target: &Path) -> Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = unpack_into(archive, &tmp).and_then(|()| {
        let found = tmp.join(inner);
        if !found.is_dir() {
            return Err(Error::Data(format!(
                "{}: the archive has no {inner}/ folder",
                archive.display()
            )));
        }
        match std::fs::rename(&found, target) {
            // Another process unpacked it first: theirs is as good.
            Err(_) if target.is_dir() => Ok(()),
            other => other.map_err(|e| Error::io(target, e)),
        }
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn unpack_into(archive: &Path, dir: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    // `unpack` refuses entries that would land outside `dir` (`..`, absolute paths).
    tar::Archive::new(gz)
        .unpack(dir)
        .map_err(|e| Error::Data(format!("{}: cannot unpack ({e})", archive.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::catalog::MNIST;

    #[test]
    fn a_mirror_serves_every_set_from_its_own_folder() {
        let dir = std::env::temp_dir().join(format!("convnet-mirror-{}", std::process::id()));
        let cache = Cache {
            dir: dir.clone(),
            mirror: Some("http://127.0.0.1:1/sets/".to_string()),
        };
        let msg = cache.fetch(&MNIST, &mut |_| {}).unwrap_err().to_string();
        assert!(
            msg.contains("http://127.0.0.1:1/sets/mnist/train-images-idx3-ubyte.gz"),
            "{msg}"
        );
        assert!(
            msg.contains(&dir.join("mnist").display().to_string()),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mnist_10k_needs_no_cache() {
        let cache = Cache::new("/nonexistent/convnet-cache");
        let set = cache.load(DatasetName::Mnist10k, &mut |_| {}).unwrap();
        assert_eq!(set.name, "mnist-10k");
    }

    #[test]
    fn a_corrupt_archive_is_an_error_and_leaves_no_folder() {
        let dir = std::env::temp_dir().join(format!("convnet-untar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("a.tar.gz");
        std::fs::write(&archive, b"not gzip").unwrap();
        let target = dir.join("out");
        assert!(unpack_tar_gz(&archive, "x", &target).is_err());
        assert!(!target.exists());
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the archive remains");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
