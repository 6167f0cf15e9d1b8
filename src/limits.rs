//! Limits on what a user's input may make the program allocate or start:
//! the memory a network may take (`--max-memory`), the number of worker
//! threads (`--threads`), and memory sizes written as text (`512M`, `8G`).
//!
//! Every size that comes from a user — a model spec, a command-line size,
//! the metadata of a checkpoint — is checked against these *before* anything
//! is allocated (see [`networks::plan`](crate::networks::plan)), so that a
//! request for a huge layer is one error line instead of the process being
//! killed by `memory allocation of N bytes failed`.
//!
//! ```
//! use convnet::limits::{format_bytes, parse_bytes};
//! assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
//! assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
//! assert_eq!(parse_bytes("4096").unwrap(), 4096);
//! assert!(parse_bytes("lots").is_err());
//! assert_eq!(format_bytes(3 << 29), "1.5 GiB");
//! ```

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// The memory limit when the machine's memory cannot be read: 8 GiB.
pub const FALLBACK_MAX_MEMORY: u64 = 8 << 30;

/// The most worker threads ever started, whatever the number of cores.
pub const MAX_THREADS_CAP: usize = 1024;

/// The default `--max-memory`: half of the machine's memory (`MemTotal` in
/// `/proc/meminfo`), or [`FALLBACK_MAX_MEMORY`] where that cannot be read.
pub fn default_max_memory() -> u64 {
    static DEFAULT: OnceLock<u64> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text))
            .map(|total| total / 2)
            .filter(|&half| half > 0)
            .unwrap_or(FALLBACK_MAX_MEMORY)
    })
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") | Some("KB") | Some("kiB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

/// Parses a memory size: a number of bytes, optionally with a fraction and
/// a binary unit — `K`, `M`, `G`, `T` (also written `KB`, `KiB`, ...; any
/// case), each 1024 times the one before.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad_size(text)),
    };
    let value: f64 = number.parse().map_err(|_| bad_size(text))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(Error::Config(format!(
            "memory size '{text}' is out of range (1 byte to 16 EiB)"
        )));
    }
    Ok(bytes as u64)
}

fn bad_size(text: &str) -> Error {
    Error::Config(format!(
        "'{text}' is not a memory size (a number of bytes, or with a unit: 512M, 8G, 1.5GiB)"
    ))
}

/// A byte count for people: `912 B`, `3.4 MiB`, `1.5 GiB`.
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value >= 1024.0 {
        // Beyond EiB: say how many.
        format!("{value:.0} {}", UNITS[unit])
    } else {
        let text = format!("{value:.1}");
        let text = text.strip_suffix(".0").unwrap_or(&text);
        format!("{text} {}", UNITS[unit])
    }
}

/// The most `--threads` accepted: four per core but at least 64, and never
/// more than [`MAX_THREADS_CAP`].
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).clamp(64, MAX_THREADS_CAP)
}

/// Checks a `--threads` value: at least 1 and at most [`max_threads`].
pub fn check_threads(threads: usize) -> Result<usize> {
    let max = max_threads();
    if threads == 0 {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    if threads > max {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Err(Error::Config(format!(
            "--threads {threads} is more than this machine's limit of {max} ({cores} cores)"
        )));
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("1").unwrap(), 1);
        assert_eq!(parse_bytes(" 2k ").unwrap(), 2048);
        assert_eq!(parse_bytes("3MB").unwrap(), 3 << 20);
        assert_eq!(parse_bytes("8G").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("0.5t").unwrap(), 1 << 39);
        assert_eq!(parse_bytes("1 GiB").unwrap(), 1 << 30);
        for bad in [
            "",
            "G",
            "-1G",
            "1X",
            "0",
            "1e3",
            "1..2M",
            "99999999999T",
            "nan",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_format_for_people() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1 KiB");
        assert_eq!(format_bytes(5 << 30), "5 GiB");
        assert_eq!(
            format_bytes(u128::MAX),
            format!("{:.0} EiB", u128::MAX as f64 / (1u64 << 60) as f64)
        );
    }

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:       24683792 kB\nMemFree: 1 kB\n";
        assert_eq!(mem_total(text), Some(24683792 * 1024));
        assert_eq!(mem_total("nothing"), None);
        assert!(default_max_memory() > 0);
    }

    #[test]
    fn thread_counts_are_bounded() {
        assert!(check_threads(0).is_err());
        assert_eq!(check_threads(1).unwrap(), 1);
        assert_eq!(check_threads(64).unwrap(), 64);
        let e = check_threads(100_000_000).unwrap_err().to_string();
        assert!(e.contains("100000000") && e.contains("limit"), "{e}");
        assert!(max_threads() <= MAX_THREADS_CAP);
    }
}
