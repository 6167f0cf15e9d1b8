//! Data-set downloads without the internet: a small HTTP server on
//! 127.0.0.1 (a `TcpListener` in a thread) serves tiny IDX and CIFAR-10 files
//! made here, and the library (`data::cache`, with a checksum table of those
//! files) and the `convnet` binary (`CONVNET_MIRROR`, `--cache-dir`) fetch
//! from it. Checked: a good download is verified, loaded and not fetched
//! again; a wrong checksum, a dropped connection and a 404 are one-line
//! errors that leave no file in the cache; offline, the message says where
//! to put the file.

mod common;

use common::{idx_images, idx_labels, TempDir};
use convnet::data::cache::Cache;
use convnet::data::catalog::{Layout, RemoteFile, Source};
use convnet::data::download::{sha256_hex, Event};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const IDX_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

// ---------------------------------------------------------------------------
// A tiny HTTP server
// ---------------------------------------------------------------------------

/// How the server answers one path.
#[derive(Clone)]
enum Reply {
    /// 200 with the whole body.
    Ok(Vec<u8>),
    /// 200 announcing the whole body's length, then closing after half of it.
    Truncated(Vec<u8>),
}

/// A server on 127.0.0.1 (any free port) that answers GET requests from a
/// table of paths (404 for the rest) and counts the requests per path. The
/// thread lives until the test process ends.
struct Server {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &routes, &counter);
            }
        });
        Server { port, hits }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

/// Answers one request and closes the connection.
fn serve(
    mut stream: TcpStream,
    routes: &HashMap<String, Reply>,
    hits: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let header = |status: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match routes.get(&path) {
        Some(Reply::Ok(body)) => {
            stream.write_all(header("200 OK", body.len()).as_bytes())?;
            stream.write_all(body)?;
        }
        Some(Reply::Truncated(body)) => {
            stream.write_all(header("200 OK", body.len()).as_bytes())?;
            stream.write_all(&body[..body.len() / 2])?;
        }
        None => {
            let body = b"not found";
            stream.write_all(header("404 Not Found", body.len()).as_bytes())?;
            stream.write_all(body)?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Test data: tiny gzipped IDX files and a CIFAR-10 archive
// ---------------------------------------------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// `count` images of `side × side` bytes, the pixels varied by `seed`.
fn image_file(count: usize, side: usize, seed: u8) -> Vec<u8> {
    let pixels: Vec<u8> = (0..count * side * side)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    idx_images(count, side, side, &pixels)
}

/// `count` labels 0, 1, ..., 9, 0, 1, ...
fn label_file(count: usize) -> Vec<u8> {
    idx_labels(&(0..count).map(|i| (i % 10) as u8).collect::<Vec<_>>())
}

/// The four gzipped IDX files of a 20 + 10 image set of 8×8 images, named
/// as in [`IDX_NAMES`].
fn idx_files() -> Vec<(&'static str, Vec<u8>)> {
    let bodies = [
        gzip(&image_file(20, 8, 1)),
        gzip(&label_file(20)),
        gzip(&image_file(10, 8, 2)),
        gzip(&label_file(10)),
    ];
    IDX_NAMES.into_iter().zip(bodies).collect()
}

/// `cifar-10-binary.tar.gz` holding `cifar-10-batches-bin/` with one record
/// in each of the five training batches and two in the test batch.
fn cifar_archive() -> Vec<u8> {
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut files: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|k| (format!("data_batch_{k}.bin"), record(k as u8)))
        .collect();
    files.push(("test_batch.bin".into(), [record(8), record(9)].concat()));
    files.push(("batches.meta.txt".into(), b"airplane\n".to_vec()));
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &body[..],
        )
        .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The checksum-table entry of `body`.
fn entry<'a>(name: &'a str, body: &[u8], sha: &'a mut String) -> RemoteFile<'a> {
    *sha = sha256_hex(body).unwrap();
    RemoteFile {
        name,
        size: body.len() as u64,
        sha256: sha,
    }
}

/// Every file under `dir`, recursively, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// Runs the library's download of one IDX set served as `routes` (under
/// `/mnist/`), with the checksum table of [`idx_files`], into `cache`.
fn fetch_idx(server: &Server, cache: &Path) -> convnet::Result<convnet::data::TrainTest> {
    let files = idx_files();
    let mut shas = vec![String::new(); 4];
    let table: Vec<RemoteFile> = files
        .iter()
        .zip(shas.iter_mut())
        .map(|((name, body), sha)| entry(name, body, sha))
        .collect();
    let base = format!("{}/mnist/", server.base());
    let source = Source {
        name: "tiny-mnist",
        folder: "mnist",
        base_url: &base,
        files: &table,
        layout: Layout::Idx,
    };
    Cache::new(cache).load_source(&source, &mut |_| {})
}

fn idx_routes(prefix: &str) -> HashMap<String, Reply> {
    idx_files()
        .into_iter()
        .map(|(name, body)| (format!("{prefix}/{name}"), Reply::Ok(body)))
        .collect()
}

// ---------------------------------------------------------------------------
// Library
// ---------------------------------------------------------------------------

#[test]
fn good_files_are_downloaded_verified_loaded_and_then_reused() {
    let server = Server::start(idx_routes("/mnist"));
    let cache = TempDir::new("dl-good");
    let set = fetch_idx(&server, cache.path()).unwrap();
    assert_eq!(
        (set.name.as_str(), set.train.len(), set.test.len()),
        ("tiny-mnist", 20, 10)
    );
    assert_eq!(set.train.input_shape(), [1, 8, 8]);
    assert_eq!(files_under(&cache.join("mnist")).len(), 4, "no .part left");
    assert_eq!(server.total_hits(), 4);

    // Second run: everything is in the cache (and verified), nothing is fetched.
    let again = fetch_idx(&server, cache.path()).unwrap();
    assert_eq!(again.train.labels, set.train.labels);
    assert_eq!(server.total_hits(), 4);
}

#[test]
fn progress_is_reported_from_start_to_finish() {
    let server = Server::start(idx_routes("/mnist"));
    let cache = TempDir::new("dl-progress");
    let (body, mut sha) = (gzip(&image_file(20, 8, 1)), String::new());
    let file = entry(IDX_NAMES[0], &body, &mut sha);
    let url = format!("{}/mnist/{}", server.base(), IDX_NAMES[0]);
    let dest = cache.join(IDX_NAMES[0]);
    let mut events = Vec::new();
    convnet::data::download::download(&url, &dest, &file, &mut |e| {
        events.push(match e {
            Event::Started { total, .. } => format!("start {total:?}"),
            Event::Received { done, .. } => format!("got {done}"),
            Event::Finished { .. } => "done".to_string(),
        })
    })
    .unwrap();
    assert_eq!(
        events.first().unwrap(),
        &format!("start Some({})", body.len())
    );
    assert_eq!(events[events.len() - 2], format!("got {}", body.len()));
    assert_eq!(events.last().unwrap(), "done");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_wrong_checksum_is_an_error_and_leaves_no_file() {
    // The server's train images differ from the table's (another seed).
    let mut routes = idx_routes("/mnist");
    routes.insert(
        format!("/mnist/{}", IDX_NAMES[0]),
        Reply::Ok(gzip(&image_file(20, 8, 99))),
    );
    let server = Server::start(routes);
    let cache = TempDir::new("dl-checksum");
    let msg = fetch_idx(&server, cache.path()).unwrap_err().to_string();
    assert!(
        msg.contains("checksum") && msg.contains(IDX_NAMES[0]),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        files_under(cache.path()).is_empty(),
        "{:?}",
        files_under(cache.path())
    );
}

#[test]
fn a_dropped_connection_is_an_error_and_leaves_no_file() {
    let mut routes = idx_routes("/mnist");
    let (name, body) = idx_files().remove(0);
    routes.insert(format!("/mnist/{name}"), Reply::Truncated(body));
    let server = Server::start(routes);
    let cache = TempDir::new("dl-dropped");
    let msg = fetch_idx(&server, cache.path()).unwrap_err().to_string();
    assert!(
        msg.starts_with("cannot download http://127.0.0.1:"),
        "{msg}"
    );
    assert!(msg.contains(name) && msg.contains("bytes"), "{msg}");
    assert!(
        files_under(cache.path()).is_empty(),
        "{:?}",
        files_under(cache.path())
    );
}

#[test]
fn a_404_names_the_url_and_the_status() {
    let mut routes = idx_routes("/mnist");
    routes.remove(&format!("/mnist/{}", IDX_NAMES[2]));
    let server = Server::start(routes);
    let cache = TempDir::new("dl-404");
    let msg = fetch_idx(&server, cache.path()).unwrap_err().to_string();
    let url = format!("{}/mnist/{}", server.base(), IDX_NAMES[2]);
    assert!(
        msg.contains(&format!("cannot download {url} (HTTP 404 Not Found)")),
        "{msg}"
    );
    // The two files before it were good and stay; nothing of the third.
    assert_eq!(
        files_under(&cache.join("mnist")),
        [IDX_NAMES[0], IDX_NAMES[1]]
    );
}

#[test]
fn a_bad_file_already_in_the_cache_is_reported_not_replaced() {
    let server = Server::start(idx_routes("/mnist"));
    let cache = TempDir::new("dl-bad-cached");
    std::fs::create_dir_all(cache.join("mnist")).unwrap();
    let planted = cache.join("mnist").join(IDX_NAMES[1]);
    std::fs::write(&planted, b"not the labels").unwrap();
    let msg = fetch_idx(&server, cache.path()).unwrap_err().to_string();
    assert!(
        msg.contains("delete it") && msg.contains(IDX_NAMES[1]),
        "{msg}"
    );
    assert_eq!(std::fs::read(&planted).unwrap(), b"not the labels");
}

#[test]
fn cifar10_archive_is_verified_unpacked_and_then_reused() {
    let archive = cifar_archive();
    let name = "cifar-10-binary.tar.gz";
    let server = Server::start(HashMap::from([(
        format!("/cifar10/{name}"),
        Reply::Ok(archive.clone()),
    )]));
    let cache = TempDir::new("dl-cifar");
    let mut sha = String::new();
    let table = [entry(name, &archive, &mut sha)];
    let base = format!("{}/cifar10/", server.base());
    let source = Source {
        name: "cifar10",
        folder: "cifar10",
        base_url: &base,
        files: &table,
        layout: Layout::TarGz {
            inner: "cifar-10-batches-bin",
        },
    };
    let cache_dir = Cache::new(cache.path());
    let set = cache_dir.load_source(&source, &mut |_| {}).unwrap();
    assert_eq!(
        (set.name.as_str(), set.train.len(), set.test.len()),
        ("cifar10", 5, 2)
    );
    assert_eq!(set.train.labels, [1, 2, 3, 4, 5]);
    // The downloaded archive is gone; only the unpacked folder stays.
    let left = files_under(cache.path());
    assert_eq!(left.len(), 7, "{left:?}");
    assert!(
        left.iter()
            .all(|f| f.starts_with("cifar10/cifar-10-batches-bin/")),
        "{left:?}"
    );

    cache_dir.load_source(&source, &mut |_| {}).unwrap();
    assert_eq!(server.hits(&format!("/cifar10/{name}")), 1);
}

/// The Fashion-MNIST checksums of the catalog, checked against real files:
/// Debian's `dataset-fashion-mnist` (in `shared/data/fashion-mnist` here)
/// holds the original deflate streams under a plain gzip header; putting the
/// original header back (file name, and the mtime of 2017-08-31 10:50:06 or
/// :27 UTC, found by search) must give exactly the catalog's SHA-256.
/// Skipped when no copy of the files is found.
#[test]
fn fashion_mnist_checksums_match_the_real_files() {
    let candidates = [
        std::env::var_os("CONVNET_FASHION_DIR").map(std::path::PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-mnist")),
        Some("/work/shared/data/fashion-mnist".into()),
        Some("/usr/share/datasets/fashion-mnist".into()),
    ];
    let Some(dir) = candidates
        .into_iter()
        .flatten()
        .find(|d| d.join(IDX_NAMES[0]).is_file())
    else {
        eprintln!("no Fashion-MNIST .gz files found: skipped");
        return;
    };
    let source = convnet::data::catalog::FASHION_MNIST;
    for file in source.files {
        let bytes = std::fs::read(dir.join(file.name)).unwrap();
        const FNAME: u8 = 0x08;
        let original = if bytes.len() > 10 && bytes[3] & FNAME == 0 {
            let mtime: u32 = if file.name.starts_with("train") {
                1_504_176_606
            } else {
                1_504_176_627
            };
            let stem = file.name.trim_end_matches(".gz");
            let mut o = vec![0x1f, 0x8b, 0x08, FNAME];
            o.extend(mtime.to_le_bytes());
            o.extend([0x00, 0x03]);
            o.extend(stem.as_bytes());
            o.push(0);
            o.extend(&bytes[10..]);
            o
        } else {
            bytes
        };
        assert_eq!(original.len() as u64, file.size, "{}", file.name);
        assert_eq!(
            sha256_hex(&original[..]).unwrap(),
            file.sha256,
            "{}",
            file.name
        );
    }
}

// ---------------------------------------------------------------------------
// The convnet binary
// ---------------------------------------------------------------------------

fn convnet(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_convnet"));
    command.args(args).env_remove("CONVNET_MIRROR");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run the convnet binary")
}

/// The `convnet: error:` line of a failed run (other lines: download notes).
fn error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("convnet: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    errors[0].to_string()
}

#[test]
fn cli_offline_says_which_file_is_missing_and_where_to_put_it() {
    let cache = TempDir::new("cli-offline");
    let mirror = format!("http://127.0.0.1:{}", closed_port());
    // No --cache-dir: $XDG_CACHE_HOME/convnet.
    let xdg = cache.path().to_str().unwrap();
    let out = convnet(
        &["train", "--dataset", "mnist", "--epochs", "1"],
        &[("CONVNET_MIRROR", &mirror), ("XDG_CACHE_HOME", xdg)],
    );
    let line = error_line(&out);
    let folder = cache.join("convnet").join("mnist");
    assert!(
        line.contains(&format!("cannot download {mirror}/mnist/{}", IDX_NAMES[0]))
            && line.contains("connection refused")
            && line.contains(&format!("put {} in {}/", IDX_NAMES[0], folder.display()))
            && line.ends_with("or pass --data DIR"),
        "{line}"
    );
    assert!(files_under(cache.path()).is_empty());
}

#[test]
fn cli_rejects_files_that_fail_the_checksum_table() {
    // The mirror serves well-formed IDX files, but not MNIST's: the real
    // table refuses the first one and nothing is kept. (The library tests
    // check a body of the right size with the wrong SHA-256.)
    let server = Server::start(idx_routes("/mnist"));
    let cache = TempDir::new("cli-checksum");
    let dir = cache.path().to_str().unwrap();
    let out = convnet(
        &[
            "train",
            "--dataset",
            "mnist",
            "--cache-dir",
            dir,
            "--epochs",
            "1",
        ],
        &[("CONVNET_MIRROR", &server.base())],
    );
    let line = error_line(&out);
    // The size is checked before the body is read: 330 bytes are not 9,912,422.
    assert!(
        line.contains("size mismatch") && line.contains("checksum table"),
        "{line}"
    );
    assert!(
        line.contains(&format!("{}/mnist/{}", server.base(), IDX_NAMES[0])),
        "{line}"
    );
    assert!(
        files_under(cache.path()).is_empty(),
        "{:?}",
        files_under(cache.path())
    );
}

#[test]
fn cli_trains_on_a_cached_set_without_downloading() {
    // An unpacked CIFAR-10 folder in the cache is used as it is.
    let cache = TempDir::new("cli-cached");
    let archive = cifar_archive();
    tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]))
        .unpack(cache.join("cifar10"))
        .unwrap();
    let dir = cache.path().to_str().unwrap();
    let unreachable = format!("http://127.0.0.1:{}", closed_port());
    let out = convnet(
        &[
            "train",
            "--dataset",
            "cifar10",
            "--cache-dir",
            dir,
            "--epochs",
            "1",
            "--batch-size",
            "5",
        ],
        &[("CONVNET_MIRROR", &unreachable)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("on cifar10: 5 train / 2 test images [3, 32, 32]"),
        "{stdout}"
    );
}

#[test]
fn cli_data_and_dataset_conflict_and_names_are_checked() {
    for args in [
        &["train", "--data", "x", "--dataset", "mnist"][..],
        &["train", "--dataset", "imagenet"],
        &[
            "eval",
            "--checkpoint",
            "c",
            "--data",
            "x",
            "--cache-dir",
            "y",
        ],
    ] {
        let out = convnet(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let line = error_line(&out);
        assert!(
            line.contains("--data") || line.contains("imagenet"),
            "{line}"
        );
    }
}
