//! Downloading one file over HTTP(S) so that a broken download never leaves
//! a bad file behind.
//!
//! [`download`] streams the body into `NAME.part` beside the destination
//! while computing its SHA-256, then checks the byte count and the hash
//! against the expected [`RemoteFile`] and only then renames `NAME.part` to
//! `NAME` (atomic on one file system). On any failure — unreachable host,
//! an HTTP status other than 200, a connection that closes early, a size or
//! checksum mismatch — the `.part` file is deleted and the error is one line
//! naming the URL, of kind [`Error::Download`]. A `.part` file left by a
//! killed process is simply overwritten by the next try.
//!
//! The library draws no progress bar: the caller passes a callback that is
//! told the expected length and the bytes received so far ([`Event`]).
//!
//! ```no_run
//! use convnet::data::catalog::MNIST;
//! use convnet::data::download::{download, Event};
//!
//! let file = &MNIST.files[3];
//! let dest = std::path::Path::new("cache/mnist").join(file.name);
//! download(&MNIST.url(file), &dest, file, &mut |event| {
//!     if let Event::Received { done, total, .. } = event {
//!         eprint!("\r{done}/{}", total.unwrap_or(0));
//!     }
//! })?;
//! # Ok::<(), convnet::Error>(())
//! ```

use super::catalog::RemoteFile;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What [`download`] reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The server answered: the body is `total` bytes long (from
    /// `Content-Length`, else the expected size).
    Started {
        /// The URL being downloaded.
        url: &'a str,
        /// The body's length in bytes, if known.
        total: Option<u64>,
    },
    /// `done` bytes of the body have been written so far.
    Received {
        /// The URL being downloaded.
        url: &'a str,
        /// Bytes written so far.
        done: u64,
        /// The body's length in bytes, if known.
        total: Option<u64>,
    },
    /// The file is complete, verified and in place.
    Finished {
        /// The URL downloaded.
        url: &'a str,
        /// Where the file now is.
        path: &'a Path,
    },
}

/// No data for this long on an open connection fails the download.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Downloads `url` to `dest` (creating its folder), checking that the body
/// has `expected.size` bytes and SHA-256 `expected.sha256`. See the
/// [module docs](self) for what happens on failure.
pub fn download(
    url: &str,
    dest: &Path,
    expected: &RemoteFile,
    progress: &mut dyn FnMut(Event),
) -> Result<()> {
    let folder = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    let part = part_path(dest);
    let result = fetch_into(url, &part, expected, progress)
        .and_then(|()| std::fs::rename(&part, dest).map_err(|e| Error::io(dest, e)));
    match result {
        Ok(()) => {
            progress(Event::Finished { url, path: dest });
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// `NAME.part` beside `dest`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// The SHA-256 of everything `reader` yields, as 64 lowercase hex digits.
pub fn sha256_hex(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hex(&hasher.finalize())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Checks a file already on disk against `expected` (size first, then
/// SHA-256). A mismatch is an [`Error::Data`] that says how to recover.
pub fn verify_file(path: &Path, expected: &RemoteFile) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mismatch = |what: String| {
        Error::Data(format!(
            "{}: {what}, not the expected file; delete it to download it again, \
             or pass --data DIR to use your own files unchecked",
            path.display()
        ))
    };
    if size != expected.size {
        return Err(mismatch(format!(
            "{size} bytes instead of {}",
            expected.size
        )));
    }
    let actual = sha256_hex(io::BufReader::new(file)).map_err(|e| Error::io(path, e))?;
    if actual != expected.sha256 {
        return Err(mismatch(format!(
            "SHA-256 checksum {actual} instead of {}",
            expected.sha256
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The failed-download error: `cannot download URL (REASON); HINT`.
fn failed(url: &str, part: &Path, reason: impl std::fmt::Display) -> Error {
    let folder = part.parent().unwrap_or(Path::new("."));
    let name = part
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".part").to_string())
        .unwrap_or_default();
    Error::Download(format!(
        "cannot download {url} ({reason}); put {name} in {}/ or pass --data DIR",
        folder.display()
    ))
}

/// Requests `url` and streams the body into `part`, verifying it.
fn fetch_into(
    url: &str,
    part: &Path,
    expected: &RemoteFile,
    progress: &mut dyn FnMut(Event),
) -> Result<()> {
    let mut response = agent_for(url)
        .get(url)
        .call()
        .map_err(|e| failed(url, part, describe(&e)))?;
    let status = response.status();
    if status != 200 {
        let reason = status.canonical_reason().unwrap_or("");
        return Err(failed(
            url,
            part,
            format!("HTTP {} {reason}", status.as_u16()).trim_end(),
        ));
    }
    let announced = response.body().content_length();
    if let Some(n) = announced.filter(|&n| n != expected.size) {
        return Err(failed(
            url,
            part,
            format!(
                "size mismatch: the server offers {n} bytes, the checksum table expects {}",
                expected.size
            ),
        ));
    }
    let total = announced.or(Some(expected.size));
    progress(Event::Started { url, total });

    let file = File::create(part).map_err(|e| Error::io(part, e))?;
    let mut out = io::BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(failed(
                    url,
                    part,
                    format!(
                        "connection broken after {done} of {} bytes: {e}",
                        expected.size
                    ),
                ))
            }
        };
        done += n as u64;
        if done > expected.size {
            return Err(failed(
                url,
                part,
                format!("more than the expected {} bytes", expected.size),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(part, e))?;
        progress(Event::Received { url, done, total });
    }
    if done != expected.size {
        return Err(failed(
            url,
            part,
            format!("connection closed after {done} of {} bytes", expected.size),
        ));
    }
    let actual = hex(&hasher.finalize());
    if actual != expected.sha256 {
        return Err(Error::Download(format!(
            "{url}: SHA-256 checksum mismatch (got {actual}, expected {}); the download was discarded",
            expected.sha256
        )));
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(part, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(part, e))?;
    Ok(())
}

/// A client with connect and read timeouts, ureq's default redirects (at
/// most 10) and HTTP statuses returned rather than raised, so that the
/// message can name them. Proxies come from the usual environment variables,
/// except for loopback URLs (test servers, a local mirror).
fn agent_for(url: &str) -> ureq::Agent {
    let host = url.split("://").nth(1).unwrap_or(url);
    let loopback = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| host.starts_with(h));
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .user_agent(concat!("convnet/", env!("CARGO_PKG_VERSION")));
    if loopback {
        config = config.proxy(None);
    }
    ureq::Agent::new_with_config(config.build())
}

/// A short reason for a failed request: "connection refused", "host not
/// found", ...
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            io::ErrorKind::ConnectionReset => "connection reset".to_string(),
            io::ErrorKind::TimedOut => "timed out".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::HostNotFound => "host not found; offline?".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_strings() {
        assert_eq!(
            sha256_hex(&b""[..]).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn part_file_sits_beside_the_destination() {
        assert_eq!(
            part_path(Path::new("/c/mnist/a.gz")),
            Path::new("/c/mnist/a.gz.part")
        );
    }

    #[test]
    fn verify_file_checks_size_and_hash() {
        let dir = std::env::temp_dir().join(format!("convnet-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"abc").unwrap();
        let good = RemoteFile {
            name: "f",
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        };
        verify_file(&path, &good).unwrap();
        let short = verify_file(&path, &RemoteFile { size: 4, ..good });
        assert!(short
            .unwrap_err()
            .to_string()
            .contains("3 bytes instead of 4"));
        let wrong = RemoteFile {
            sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ..good
        };
        let msg = verify_file(&path, &wrong).unwrap_err().to_string();
        assert!(
            msg.contains("SHA-256") && msg.contains("delete it"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreachable_server_is_a_one_line_error_and_leaves_nothing() {
        // Port 1 on loopback: nothing listens there.
        let dir = std::env::temp_dir().join(format!("convnet-dl-{}", std::process::id()));
        let dest = dir.join("x.gz");
        let file = RemoteFile {
            name: "x.gz",
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        };
        let url = "http://127.0.0.1:1/x.gz";
        let msg = download(url, &dest, &file, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(&format!("cannot download {url} (")),
            "{msg}"
        );
        assert!(msg.contains("put x.gz in") && !msg.contains('\n'), "{msg}");
        assert!(!dest.exists() && !part_path(&dest).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
