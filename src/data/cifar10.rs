//! The CIFAR-10 binary format (Krizhevsky 2009): 60,000 colour images of
//! 3×32×32 in 10 classes.
//!
//! ```text
//! data_batch_1.bin … data_batch_5.bin   10,000 training records each
//! test_batch.bin                         10,000 test records
//! record = 1 label byte (0–9) + 3,072 pixel bytes: the 1,024 red values of
//!          the 32×32 image row by row, then the green, then the blue —
//!          already (C, H, W) order
//! ```
//!
//! [`load_cifar10_dir`] reads a folder holding those files (as
//! `cifar-10-batches-bin` unpacks); `convnet train --data DIR` recognises it
//! by `data_batch_1.bin`.
//!
//! ```
//! use convnet::data::cifar10::parse_records;
//! let mut record = vec![7u8];               // label 7
//! record.extend(std::iter::repeat(255).take(3072));
//! let set = parse_records(&record, "example").unwrap();
//! assert_eq!((set.len(), set.input_shape()), (1, [3, 32, 32]));
//! assert_eq!(set.labels, [7]);
//! ```

use super::{Dataset, TrainTest};
use crate::error::{Error, Result};
use std::path::Path;

/// Bytes per record: a label and 3×32×32 pixels.
pub const RECORD_LEN: usize = 1 + 3 * 32 * 32;
/// The five training batch files (10,000 images each).
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file (10,000 images).
pub const TEST_FILE: &str = "test_batch.bin";
/// Class names of CIFAR-10, by label.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses the records of one batch file (or several concatenated);
/// `source` names it in errors, which also give the record's index within it.
pub fn parse_records(bytes: &[u8], source: &str) -> Result<Dataset> {
    check_records(bytes, source)?;
    let count = bytes.len() / RECORD_LEN;
    let mut images = Vec::with_capacity(count * (RECORD_LEN - 1));
    let mut labels = Vec::with_capacity(count);
    append_records(bytes, &mut images, &mut labels);
    Dataset::from_bytes(images, labels, 3, 32, 32, 10)
}

/// Checks that `bytes` are whole records with labels 0-9.
fn check_records(bytes: &[u8], source: &str) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_LEN) {
        let whole = bytes.len() / RECORD_LEN;
        let detail = if bytes.is_empty() {
            "the file is empty".to_string()
        } else {
            format!(
                "record {whole} is cut short after {} of its {RECORD_LEN} bytes",
                bytes.len() % RECORD_LEN
            )
        };
        return Err(Error::Data(format!(
            "{source}: {} bytes is not a whole number of CIFAR-10 records ({RECORD_LEN} bytes each): {detail}",
            bytes.len()
        )));
    }
    for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        if record[0] > 9 {
            return Err(Error::Data(format!(
                "{source}: record {i} has label {}, CIFAR-10 labels are 0-9",
                record[0]
            )));
        }
    }
    Ok(())
}

/// Appends checked records' labels and pixel bytes.
fn append_records(bytes: &[u8], images: &mut Vec<u8>, labels: &mut Vec<u8>) {
    for record in bytes.chunks_exact(RECORD_LEN) {
        labels.push(record[0]);
        images.extend_from_slice(&record[1..]);
    }
}

/// Reads the batch files `names` of `dir` into one data set; an error names
/// the file and the record within it.
fn read(dir: &Path, names: &[&str]) -> Result<Dataset> {
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::Data(format!(
                "{} is missing: a CIFAR-10 folder holds {} and {TEST_FILE}",
                path.display(),
                TRAIN_FILES.join(", ")
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        check_records(&bytes, &path.display().to_string())?;
        files.push(bytes);
    }
    let count: usize = files.iter().map(|b| b.len() / RECORD_LEN).sum();
    let mut images = Vec::with_capacity(count * (RECORD_LEN - 1));
    let mut labels = Vec::with_capacity(count);
    for bytes in &files {
        append_records(bytes, &mut images, &mut labels);
    }
    Dataset::from_bytes(images, labels, 3, 32, 32, 10)
}

/// True if `dir` looks like a CIFAR-10 binary folder: it holds one of the
/// batch files (so that a folder missing `data_batch_1.bin` is reported as
/// an incomplete CIFAR-10 folder, not as a folder without IDX files).
pub fn is_cifar10_dir(dir: &Path) -> bool {
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .any(|name| dir.join(name).is_file())
}

/// Reads the five training batches and the test batch in `dir`.
pub fn load_cifar10_dir(dir: &Path) -> Result<TrainTest> {
    Ok(TrainTest {
        name: "cifar10".into(),
        train: read(dir, &TRAIN_FILES)?,
        test: read(dir, &[TEST_FILE])?,
        class_names: CLASSES.iter().map(|c| c.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, red: u8, green: u8, blue: u8) -> Vec<u8> {
        let mut r = vec![label];
        for value in [red, green, blue] {
            r.extend(std::iter::repeat_n(value, 1024));
        }
        r
    }

    #[test]
    fn records_become_chw_images() {
        let mut bytes = record(3, 255, 0, 51);
        bytes.extend(record(9, 0, 255, 0));
        let set = parse_records(&bytes, "t").unwrap();
        assert_eq!(set.labels, [3, 9]);
        let first = set.image(0);
        assert_eq!((first[0], first[1024], first[2048]), (1.0, 0.0, 0.2));
        assert_eq!(set.image(1)[1500], 1.0);
    }

    #[test]
    fn truncated_files_and_bad_labels_are_errors() {
        let mut bytes = record(1, 0, 0, 0);
        bytes.pop();
        assert!(matches!(parse_records(&bytes, "t"), Err(Error::Data(_))));
        assert!(parse_records(&record(10, 0, 0, 0), "t").is_err());
        assert!(parse_records(&[], "t").is_err());
    }

    #[test]
    fn errors_name_the_file_and_the_record_within_it() {
        let dir = crate::data::idx::tests::TempDir::new("cifar-errors");
        for (k, name) in TRAIN_FILES.iter().enumerate() {
            let mut bytes = record(k as u8, 0, 0, 0);
            bytes.extend(record(1, 0, 0, 0));
            if k == 3 {
                // The second record of the fourth file has label 12.
                bytes[RECORD_LEN] = 12;
            }
            std::fs::write(dir.0.join(name), bytes).unwrap();
        }
        std::fs::write(dir.0.join(TEST_FILE), record(8, 1, 2, 3)).unwrap();
        let e = load_cifar10_dir(&dir.0).err().unwrap().to_string();
        assert!(e.contains("data_batch_4.bin: record 1 has label 12"), "{e}");
        // A file cut short names the record that is cut.
        let mut cut = record(1, 0, 0, 0);
        cut.extend(&record(2, 0, 0, 0)[..100]);
        std::fs::write(dir.0.join(TRAIN_FILES[3]), cut).unwrap();
        let e = load_cifar10_dir(&dir.0).err().unwrap().to_string();
        assert!(
            e.contains("data_batch_4.bin: 3173 bytes")
                && e.contains("record 1 is cut short after 100 of its 3073 bytes"),
            "{e}"
        );
        // Without data_batch_1.bin the folder is still a CIFAR-10 one, and
        // the message says which file is missing.
        std::fs::remove_file(dir.0.join(TRAIN_FILES[0])).unwrap();
        assert!(is_cifar10_dir(&dir.0));
        let e = crate::data::load_dir(&dir.0).err().unwrap().to_string();
        assert!(
            e.contains("data_batch_1.bin is missing: a CIFAR-10 folder holds"),
            "{e}"
        );
    }

    #[test]
    fn a_folder_of_batches_loads_and_a_missing_file_is_named() {
        let dir = std::env::temp_dir().join(format!("convnet-cifar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (k, name) in TRAIN_FILES.iter().enumerate() {
            std::fs::write(dir.join(name), record(k as u8, 0, 0, 0)).unwrap();
        }
        let missing = load_cifar10_dir(&dir).err().unwrap().to_string();
        assert!(missing.contains(TEST_FILE), "{missing}");
        std::fs::write(dir.join(TEST_FILE), record(8, 1, 2, 3)).unwrap();
        let set = load_cifar10_dir(&dir).unwrap();
        assert!(is_cifar10_dir(&dir));
        assert_eq!(set.train.labels, [0, 1, 2, 3, 4]);
        assert_eq!(set.test.len(), 1);
        assert_eq!(set.class_names[8], "ship");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
