//! The named data sets: which files make each one, where they are downloaded
//! from, and the size and SHA-256 every file must have.
//!
//! | name | files | from |
//! |---|---|---|
//! | `mnist-10k` | compiled into the library | nothing to download |
//! | `mnist` | the four MNIST IDX `.gz` files | <https://ossci-datasets.s3.amazonaws.com/mnist/> (torchvision's mirror) |
//! | `fashion-mnist` | the four Fashion-MNIST IDX `.gz` files | <http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/> |
//! | `cifar10` | `cifar-10-binary.tar.gz`, unpacked to `cifar-10-batches-bin/` | <https://www.cs.toronto.edu/~kriz/> |
//!
//! A [`Source`] is that table row in data: the cache folder, the base URL
//! the file names are appended to, and the expected files. Tests (and
//! mirrors) build their own `Source`s; [`Source::with_base_url`] points one
//! at another server.
//!
//! ```
//! use convnet::data::catalog::DatasetName;
//!
//! let name: DatasetName = "fashion-mnist".parse().unwrap();
//! let source = name.source().unwrap();
//! assert_eq!(source.folder, "fashion-mnist");
//! assert_eq!(source.files.len(), 4);
//! assert!("mnist-10k".parse::<DatasetName>().unwrap().source().is_none());
//! assert!("imagenet".parse::<DatasetName>().is_err());
//! ```

use crate::error::Error;
use std::fmt;
use std::str::FromStr;

/// The data sets `convnet --dataset` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetName {
    /// The 10,000 MNIST digits embedded in the library (no download).
    Mnist10k,
    /// MNIST: 60,000 + 10,000 handwritten digits, 28×28.
    Mnist,
    /// Fashion-MNIST (Zalando Research): 60,000 + 10,000 clothes, 28×28.
    FashionMnist,
    /// CIFAR-10: 50,000 + 10,000 colour images, 3×32×32.
    Cifar10,
}

impl DatasetName {
    /// Every name, in the order `--help` lists them.
    pub const ALL: [DatasetName; 4] = [
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::Cifar10,
        DatasetName::Mnist10k,
    ];

    /// The name as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist10k => "mnist-10k",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
        }
    }

    /// Where the set is downloaded from; `None` for the embedded `mnist-10k`.
    pub fn source(self) -> Option<Source<'static>> {
        match self {
            DatasetName::Mnist10k => None,
            DatasetName::Mnist => Some(MNIST),
            DatasetName::FashionMnist => Some(FASHION_MNIST),
            DatasetName::Cifar10 => Some(CIFAR10),
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        DatasetName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = DatasetName::ALL.iter().map(|n| n.as_str()).collect();
                Error::Config(format!(
                    "unknown data set '{s}' (known: {})",
                    names.join(", ")
                ))
            })
    }
}

/// One file to download: its name (in the URL and in the cache folder), its
/// size in bytes and its SHA-256 as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile<'a> {
    /// The file's name, in the URL and in the cache folder.
    pub name: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, as 64 lowercase hex digits.
    pub sha256: &'a str,
}

/// What the downloaded files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout<'a> {
    /// MNIST-style IDX files, read where they lie
    /// ([`load_idx_dir`](super::load_idx_dir)).
    Idx,
    /// One `.tar.gz` archive (the single file of the source) holding the
    /// folder `inner`, which is unpacked next to it and then read by
    /// [`load_dir`](super::load_dir). The archive is deleted after
    /// unpacking if it was downloaded (a file put there by hand is kept).
    TarGz {
        /// The folder inside the archive that holds the data files.
        inner: &'a str,
    },
}

/// A downloadable data set: `<cache>/<folder>/<file>` is fetched from
/// `<base_url><file>` and must match the file's size and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// The set's name in messages and as loaded (`TrainTest::name`).
    pub name: &'a str,
    /// The folder under the cache directory.
    pub folder: &'a str,
    /// Prefix of every file's URL, ending in `/`.
    pub base_url: &'a str,
    /// The files to download.
    pub files: &'a [RemoteFile<'a>],
    /// What the downloaded files are, and so how they are read.
    pub layout: Layout<'a>,
}

impl<'a> Source<'a> {
    /// The same set served from `base_url` (which should end in `/`).
    pub fn with_base_url<'b>(&self, base_url: &'b str) -> Source<'b>
    where
        'a: 'b,
    {
        Source { base_url, ..*self }
    }

    /// The URL of `file`.
    pub fn url(&self, file: &RemoteFile) -> String {
        format!("{}{}", self.base_url, file.name)
    }
}

/// MNIST (LeCun, Cortes and Burges), from the mirror torchvision uses, since
/// yann.lecun.com often refuses downloads.
///
/// Sizes and SHA-256: tensorflow/datasets `tensorflow_datasets/url_checksums/mnist.txt`
/// (for `https://storage.googleapis.com/cvdf-datasets/mnist/`, a byte-for-byte
/// copy of LeCun's files: same sizes 9,912,422 / 28,881 / 1,648,877 / 4,542);
/// the same four SHA-256 are listed for the yann.lecun.com and ossci-datasets
/// URLs by several independent public loaders (one, a Ruby port of
/// torchvision's MNIST, uses this very mirror). Not checked against a
/// download here: the machine that wrote this table had no internet.
pub const MNIST: Source<'static> = Source {
    name: "mnist",
    folder: "mnist",
    base_url: "https://ossci-datasets.s3.amazonaws.com/mnist/",
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            size: 9_912_422,
            sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            size: 28_881,
            sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            size: 1_648_877,
            sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            size: 4_542,
            sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ],
    layout: Layout::Idx,
};

/// Fashion-MNIST (Zalando Research), from its own S3 bucket.
///
/// Sizes and SHA-256: tensorflow/datasets
/// `tensorflow_datasets/url_checksums/fashion_mnist.txt`, for these exact
/// URLs; the MD5 sums in the Fashion-MNIST README belong to the same files
/// (several projects list both). Checked here against real bytes: Debian's
/// `dataset-fashion-mnist` package ships the original deflate streams under
/// a plain gzip header (no file name, another mtime: 23 bytes shorter, a
/// different SHA-256); with the original header put back (the file name
/// and mtime 2017-08-31 10:50:06 UTC for `train-*`, 10:50:27 for `t10k-*`)
/// all four match these sizes and SHA-256 (`tests/download.rs`). Debian's
/// files as they are do not pass this check: use them with `--data DIR`.
pub const FASHION_MNIST: Source<'static> = Source {
    name: "fashion-mnist",
    folder: "fashion-mnist",
    base_url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            size: 26_421_880,
            sha256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            size: 29_515,
            sha256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            size: 4_422_102,
            sha256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            size: 5_148,
            sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    ],
    layout: Layout::Idx,
};

/// CIFAR-10, binary version (Krizhevsky 2009), from the University of
/// Toronto.
///
/// Size and SHA-256: tensorflow/datasets
/// `tensorflow_datasets/url_checksums/cifar10.txt`, for this exact URL; the
/// same SHA-256 appears in other public loaders of this archive (a Ruby and
/// a Go one). Not checked against a download here (no internet).
pub const CIFAR10: Source<'static> = Source {
    name: "cifar10",
    folder: "cifar10",
    base_url: "https://www.cs.toronto.edu/~kriz/",
    files: &[RemoteFile {
        name: "cifar-10-binary.tar.gz",
        size: 170_052_171,
        sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    }],
    layout: Layout::TarGz {
        inner: "cifar-10-batches-bin",
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in DatasetName::ALL {
            assert_eq!(name.as_str().parse::<DatasetName>().unwrap(), name);
            assert_eq!(name.to_string(), name.as_str());
        }
        let msg = "mnist10k".parse::<DatasetName>().unwrap_err().to_string();
        assert!(
            msg.contains("mnist-10k") && msg.contains("cifar10"),
            "{msg}"
        );
    }

    #[test]
    fn the_table_is_well_formed() {
        for name in DatasetName::ALL {
            let Some(source) = name.source() else {
                continue;
            };
            assert_eq!(source.name, name.as_str());
            assert!(source.base_url.ends_with('/'));
            for file in source.files {
                assert_eq!(file.sha256.len(), 64, "{}", file.name);
                assert!(file
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                assert!(file.size > 0);
            }
            if let Layout::TarGz { .. } = source.layout {
                assert_eq!(source.files.len(), 1);
            }
        }
    }

    #[test]
    fn a_mirror_replaces_the_base_url_only() {
        let mirror = MNIST.with_base_url("http://127.0.0.1:1/mnist/");
        assert_eq!(
            mirror.url(&mirror.files[0]),
            "http://127.0.0.1:1/mnist/train-images-idx3-ubyte.gz"
        );
        assert_eq!(mirror.files, MNIST.files);
    }
}
