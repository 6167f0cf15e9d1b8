//! Reading IDX files, the format MNIST and Fashion-MNIST are published in.
//!
//! Every IDX file starts with a 4-byte magic number `00 00 TT DD` (`TT` the
//! element type, `08` for unsigned bytes; `DD` the number of dimensions),
//! then one big-endian `u32` per dimension, then the elements in row-major
//! order with no padding. The two kinds used here:
//!
//! | file | magic | header | data |
//! |---|---|---|---|
//! | images (`*-idx3-ubyte`) | `0x00000803` | count, rows, cols (16 bytes in all) | `count * rows * cols` bytes, image after image, row after row; 0 = background |
//! | labels (`*-idx1-ubyte`) | `0x00000801` | count (8 bytes in all) | `count` bytes, one class index each |
//!
//! The parsers are strict: a wrong magic number, a short header, missing data
//! or bytes left over after the data are all [`Error::Data`] naming the file.
//! [`read_idx_file`] reads a file from disk and gunzips it when it starts with
//! the gzip magic `1f 8b`, so both `train-images-idx3-ubyte` and
//! `train-images-idx3-ubyte.gz` work.
//!
//! ```
//! use convnet::data::idx::{parse_images, parse_labels};
//!
//! // Two 2x3 images...
//! let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
//! images.extend_from_slice(&[0, 255, 0, 255, 0, 255, 1, 2, 3, 4, 5, 6]);
//! let parsed = parse_images(&images, "example images").unwrap();
//! assert_eq!((parsed.count, parsed.rows, parsed.cols), (2, 2, 3));
//! assert_eq!(parsed.image(1), &[1, 2, 3, 4, 5, 6]);
//!
//! // ...and their labels.
//! let labels = parse_labels(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 3], "example labels").unwrap();
//! assert_eq!(labels, vec![7, 3]);
//!
//! // One byte too many is an error, not silently ignored.
//! assert!(parse_labels(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 3, 9], "bad labels").is_err());
//! ```

use crate::error::{Error, Result};
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The first two bytes of every gzip stream.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

const IMAGES_HEADER_LEN: usize = 16;
const LABELS_HEADER_LEN: usize = 8;

/// The contents of an IDX image file: `count` images of `rows x cols` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
    /// `count * rows * cols` pixel bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Bytes per image (`rows * cols`).
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`. Panics if `i >= count`.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.pixels[i * len..(i + 1) * len]
    }
}

/// Parses an IDX image file (magic `0x00000803`) already in memory.
/// `source` names the file in error messages.
pub fn parse_images(bytes: &[u8], source: &str) -> Result<IdxImages> {
    let [count, rows, cols] = check_images(bytes, source)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes[IMAGES_HEADER_LEN..].to_vec(),
    })
}

/// [`parse_images`] keeping the file's own bytes as the pixels (the header
/// cut off in place), so that a large file is never held twice.
pub fn parse_images_owned(mut bytes: Vec<u8>, source: &str) -> Result<IdxImages> {
    let [count, rows, cols] = check_images(&bytes, source)?;
    bytes.drain(..IMAGES_HEADER_LEN);
    bytes.shrink_to_fit();
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes,
    })
}

/// The `[count, rows, cols]` of an IDX image file, after checking its
/// header and that its data is exactly that long.
fn check_images(bytes: &[u8], source: &str) -> Result<[usize; 3]> {
    let [count, rows, cols] = parse_header::<3>(bytes, IMAGES_MAGIC, source)?;
    if rows == 0 || cols == 0 {
        return Err(Error::Data(format!(
            "{source}: IDX image file declares {rows}x{cols} images; rows and cols must be > 0"
        )));
    }
    let expected = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(|| {
            Error::Data(format!(
                "{source}: IDX image file declares an impossible size ({count} images of {rows}x{cols})"
            ))
        })?;
    let data = &bytes[IMAGES_HEADER_LEN..];
    check_data_len(data.len(), expected, source, || {
        format!("{count} images of {rows}x{cols}")
    })?;
    Ok([count, rows, cols])
}

/// Parses an IDX label file (magic `0x00000801`) already in memory, returning
/// one byte per label. `source` names the file in error messages.
pub fn parse_labels(bytes: &[u8], source: &str) -> Result<Vec<u8>> {
    let [count] = parse_header::<1>(bytes, LABELS_MAGIC, source)?;
    let data = &bytes[LABELS_HEADER_LEN..];
    check_data_len(data.len(), count, source, || format!("{count} labels"))?;
    Ok(data.to_vec())
}

/// Reads an IDX file from disk, gunzipping it if it starts with the gzip magic
/// `1f 8b`. I/O failures are [`Error::Io`]; a corrupt gzip stream is
/// [`Error::Data`] naming the file.
pub fn read_idx_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match gunzip_if_compressed(&bytes, &path.display().to_string())? {
        Cow::Borrowed(_) => Ok(bytes),
        Cow::Owned(decompressed) => Ok(decompressed),
    }
}

/// The most bytes a gzipped IDX file may unpack to: 2 GiB (MNIST's largest
/// file is 47 MB). More is refused as it is reached, not after.
pub const MAX_GUNZIPPED_LEN: usize = 2 << 30;

/// Returns `bytes` gunzipped if they start with the gzip magic `1f 8b`, and
/// unchanged (borrowed) otherwise. `source` names the data in error messages.
/// At most [`MAX_GUNZIPPED_LEN`] bytes are unpacked.
pub fn gunzip_if_compressed<'a>(bytes: &'a [u8], source: &str) -> Result<Cow<'a, [u8]>> {
    gunzip_at_most(bytes, source, MAX_GUNZIPPED_LEN)
}

/// [`gunzip_if_compressed`] unpacking at most `max_len` bytes: a stream
/// that unpacks to more (a "gzip bomb") is an error once `max_len` is
/// passed, so no more than about `max_len` bytes are ever allocated.
pub fn gunzip_at_most<'a>(bytes: &'a [u8], source: &str, max_len: usize) -> Result<Cow<'a, [u8]>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    // The gzip trailer holds the uncompressed size modulo 2^32: a good guess
    // for the capacity, capped (deflate expands at most ~1032x, and never
    // beyond the limit) so that a corrupt trailer cannot ask for an absurd
    // allocation.
    let hint = match bytes.len() {
        n if n >= 18 => {
            u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]) as usize
        }
        _ => 0,
    };
    let capacity = hint.min(bytes.len().saturating_mul(1032)).min(max_len);
    let mut out = Vec::with_capacity(capacity);
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Error::Data(format!("{source}: corrupt gzip data ({e})")))?;
    if out.len() > max_len {
        return Err(Error::Data(format!(
            "{source}: gzip data unpacks to more than {max_len} bytes, the limit for an IDX file"
        )));
    }
    Ok(Cow::Owned(out))
}

/// Checks the magic number and header length, and returns the `N` dimensions.
fn parse_header<const N: usize>(bytes: &[u8], magic: u32, source: &str) -> Result<[usize; N]> {
    let header_len = 4 + 4 * N;
    let what = kind_name(magic);
    if bytes.starts_with(&GZIP_MAGIC) {
        return Err(Error::Data(format!(
            "{source}: data is gzip-compressed; gunzip it first (read_idx_file does)"
        )));
    }
    if bytes.len() >= 4 {
        let found = be_u32(&bytes[0..4]);
        if found != magic {
            let hint = match found {
                IMAGES_MAGIC | LABELS_MAGIC => format!(" (that is {})", kind_name(found)),
                _ => String::new(),
            };
            return Err(Error::Data(format!(
                "{source}: bad magic number 0x{found:08x}{hint}, expected 0x{magic:08x} for {what}"
            )));
        }
    }
    if bytes.len() < header_len {
        return Err(Error::Data(format!(
            "{source}: truncated header: {} bytes, {what} needs a {header_len}-byte header",
            bytes.len()
        )));
    }
    let mut dims = [0usize; N];
    for (k, dim) in dims.iter_mut().enumerate() {
        *dim = be_u32(&bytes[4 + 4 * k..8 + 4 * k]) as usize;
    }
    Ok(dims)
}

fn check_data_len(
    found: usize,
    expected: usize,
    source: &str,
    contents: impl Fn() -> String,
) -> Result<()> {
    if found < expected {
        Err(Error::Data(format!(
            "{source}: truncated data: header declares {} ({expected} bytes) but only {found} bytes follow",
            contents()
        )))
    } else if found > expected {
        Err(Error::Data(format!(
            "{source}: {} trailing bytes after the {expected} bytes of data the header declares ({})",
            found - expected,
            contents()
        )))
    } else {
        Ok(())
    }
}

fn kind_name(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => "an IDX image file",
        LABELS_MAGIC => "an IDX label file",
        _ => "an IDX file",
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    /// An IDX image file holding `count` images of `rows x cols` whose pixel
    /// `p` of image `i` is `(i * 31 + p) % 256`.
    pub(crate) fn image_bytes(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&rows.to_be_bytes());
        b.extend_from_slice(&cols.to_be_bytes());
        let len = (rows * cols) as usize;
        for i in 0..count as usize {
            b.extend((0..len).map(|p| ((i * 31 + p) % 256) as u8));
        }
        b
    }

    /// An IDX label file holding `labels`.
    pub(crate) fn label_bytes(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        b.extend_from_slice(labels);
        b
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A fresh folder under the system temp dir, removed when dropped.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "convnet-test-{tag}-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn data_err<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Data(msg)) => msg,
            other => panic!("expected Error::Data, got {other:?}"),
        }
    }

    #[test]
    fn good_files_parse() {
        let images = parse_images(&image_bytes(3, 4, 5), "img").unwrap();
        assert_eq!((images.count, images.rows, images.cols), (3, 4, 5));
        assert_eq!(images.pixels.len(), 60);
        assert_eq!(images.image(2)[0], 62);
        assert_eq!(images.image(2)[19], 81);
        assert_eq!(
            parse_labels(&label_bytes(&[1, 2, 9]), "lbl").unwrap(),
            vec![1, 2, 9]
        );
        // Empty files (count 0) are well-formed.
        assert_eq!(
            parse_images(&image_bytes(0, 28, 28), "img").unwrap().count,
            0
        );
        assert!(parse_labels(&label_bytes(&[]), "lbl").unwrap().is_empty());
    }

    #[test]
    fn wrong_magic_is_an_error() {
        let mut b = image_bytes(2, 3, 3);
        b[3] = 0x02;
        let msg = data_err(parse_images(&b, "imgs.idx"));
        assert!(msg.contains("imgs.idx") && msg.contains("magic"), "{msg}");
        // A label file handed to the image parser, and vice versa.
        let msg = data_err(parse_images(&label_bytes(&[1, 2]), "labels.idx"));
        assert!(msg.contains("IDX label file"), "{msg}");
        let msg = data_err(parse_labels(&image_bytes(1, 1, 1), "images.idx"));
        assert!(msg.contains("IDX image file"), "{msg}");
        // Still compressed.
        let msg = data_err(parse_labels(&gzip(&label_bytes(&[1])), "l.gz"));
        assert!(msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn truncated_header_is_an_error() {
        let b = image_bytes(2, 3, 3);
        for len in [0, 3, 4, 15] {
            let msg = data_err(parse_images(&b[..len], "img"));
            assert!(msg.starts_with("img:"), "{msg}");
        }
        let msg = data_err(parse_images(&b[..12], "img"));
        assert!(msg.contains("truncated header"), "{msg}");
        let msg = data_err(parse_labels(&label_bytes(&[1])[..7], "lbl"));
        assert!(msg.contains("truncated header"), "{msg}");
    }

    #[test]
    fn truncated_data_is_an_error() {
        let b = image_bytes(2, 3, 3);
        let msg = data_err(parse_images(&b[..b.len() - 1], "img"));
        assert!(msg.contains("truncated data"), "{msg}");
        let b = label_bytes(&[1, 2, 3]);
        let msg = data_err(parse_labels(&b[..b.len() - 2], "lbl"));
        assert!(
            msg.contains("truncated data") && msg.contains("1 bytes follow"),
            "{msg}"
        );
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut b = image_bytes(2, 3, 3);
        b.push(0);
        let msg = data_err(parse_images(&b, "img"));
        assert!(msg.contains("1 trailing bytes"), "{msg}");
        let mut b = label_bytes(&[1, 2, 3]);
        b.extend_from_slice(&[0, 0]);
        let msg = data_err(parse_labels(&b, "lbl"));
        assert!(msg.contains("2 trailing bytes"), "{msg}");
    }

    #[test]
    fn insane_sizes_are_errors() {
        let msg = data_err(parse_images(&image_bytes(2, 0, 3), "img"));
        assert!(msg.contains("must be > 0"), "{msg}");
        let msg = data_err(parse_images(&image_bytes(2, 3, 0), "img"));
        assert!(msg.contains("must be > 0"), "{msg}");
        // A header declaring far more data than there is must not allocate it.
        let mut b = image_bytes(0, 1, 1);
        b[4..16].copy_from_slice(&[0xff; 12]);
        let msg = data_err(parse_images(&b, "img"));
        assert!(msg.starts_with("img:"), "{msg}");
    }

    #[test]
    fn gzip_and_raw_files_both_read() {
        let dir = TempDir::new("idx-read");
        let raw = image_bytes(4, 2, 2);
        let raw_path = dir.0.join("images-idx3-ubyte");
        let gz_path = dir.0.join("images-idx3-ubyte.gz");
        std::fs::write(&raw_path, &raw).unwrap();
        std::fs::write(&gz_path, gzip(&raw)).unwrap();
        assert_eq!(read_idx_file(&raw_path).unwrap(), raw);
        assert_eq!(read_idx_file(&gz_path).unwrap(), raw);
        // Compression is detected from the content, not the name.
        let odd_path = dir.0.join("compressed-without-suffix");
        std::fs::write(&odd_path, gzip(&raw)).unwrap();
        assert_eq!(read_idx_file(&odd_path).unwrap(), raw);
        // A missing file is an I/O error with its path.
        match read_idx_file(dir.0.join("nope")) {
            Err(Error::Io { path, .. }) => assert!(path.ends_with("nope")),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_gzip_is_a_data_error() {
        let dir = TempDir::new("idx-corrupt");
        let mut gz = gzip(&image_bytes(50, 8, 8));
        // Cut the stream short...
        let cut = dir.0.join("cut.gz");
        std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
        let msg = data_err(read_idx_file(&cut));
        assert!(
            msg.contains("cut.gz") && msg.contains("corrupt gzip"),
            "{msg}"
        );
        // ...and scramble the middle (the CRC catches whatever inflate does not).
        let mid = gz.len() / 2;
        for b in &mut gz[mid - 8..mid + 8] {
            *b ^= 0x5a;
        }
        let bad = dir.0.join("bad.gz");
        std::fs::write(&bad, &gz).unwrap();
        let msg = data_err(read_idx_file(&bad));
        assert!(
            msg.contains("bad.gz") && msg.contains("corrupt gzip"),
            "{msg}"
        );
        // Just the magic.
        let msg = data_err(gunzip_if_compressed(&GZIP_MAGIC, "magic-only"));
        assert!(msg.contains("magic-only"), "{msg}");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 10 MB of zeros pack into ~10 KB; unpacking stops at the limit.
        let bomb = gzip(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 100_000);
        let msg = data_err(gunzip_at_most(&bomb, "bomb.gz", 1_000_000));
        assert!(
            msg.contains("bomb.gz") && msg.contains("more than 1000000 bytes"),
            "{msg}"
        );
        assert_eq!(
            gunzip_at_most(&bomb, "bomb.gz", 10_000_000).unwrap().len(),
            10_000_000
        );
    }
}
