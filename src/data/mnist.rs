//! Loading MNIST-style data sets: a folder of four IDX files, or the
//! MNIST-10k set embedded in the library.
//!
//! A folder holds the four standard files, each either gzipped (`NAME.gz`,
//! preferred when both exist) or raw (`NAME`):
//!
//! | file | contents |
//! |---|---|
//! | `train-images-idx3-ubyte` | training images, `(N_train, H, W)` bytes |
//! | `train-labels-idx1-ubyte` | training labels, `N_train` bytes |
//! | `t10k-images-idx3-ubyte` | test images, `(N_test, H, W)` bytes |
//! | `t10k-labels-idx1-ubyte` | test labels, `N_test` bytes |
//!
//! Each split becomes a [`Dataset`] of `(1, H, W)` images with pixels
//! `byte / 255` and 10 classes. MNIST is `(60000 | 10000, 28, 28)`;
//! Fashion-MNIST has the same layout, and a folder whose name contains
//! "fashion" gets its class names (T-shirt/top, Trouser, ...) instead of the
//! digits "0".."9".
//!
//! [`load_embedded_mnist10k`] needs no files: it reads the 10,000 real MNIST
//! digits (8,004 train, 1,996 test) of `data/mnist-10k/` compiled into the
//! binary.
//!
//! ```
//! let set = convnet::data::load_embedded_mnist10k().unwrap();
//! assert_eq!(set.name, "mnist-10k");
//! assert_eq!((set.train.len(), set.test.len()), (8004, 1996));
//! assert_eq!(set.train.input_shape(), [1, 28, 28]);
//! assert_eq!(set.class_names[7], "7");
//!
//! assert!(convnet::data::load_idx_dir("no/such/folder".as_ref()).is_err());
//! ```

use super::dataset::{Dataset, TrainTest};
use super::idx::{
    gunzip_if_compressed, parse_images, parse_images_owned, parse_labels, read_idx_file, IdxImages,
};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The training images' file name, without `.gz` (the standard names).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// The training labels' file name, without `.gz`.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// The test images' file name, without `.gz`.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// The test labels' file name, without `.gz`.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Number of classes of MNIST and Fashion-MNIST.
pub const NUM_CLASSES: usize = 10;

/// Class names of MNIST.
pub const DIGIT_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Class names of Fashion-MNIST (Zalando Research), by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Loads an MNIST-style folder (see the [module docs](self)). The set is named
/// after the folder. Missing folders or files, malformed IDX data, image and
/// label counts that disagree, labels above 9, and training and test images
/// of different sizes are all [`Error::Data`].
pub fn load_idx_dir(dir: &Path) -> Result<TrainTest> {
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        return Err(Error::Data(format!("data folder {} {what}", dir.display())));
    }
    let paths =
        [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS].map(|name| find_file(dir, name));
    let [train_images, train_labels, test_images, test_labels] = paths;
    let (train_images, train_labels) = (train_images?, train_labels?);
    let (test_images, test_labels) = (test_images?, test_labels?);
    let train = load_idx_pair(&train_images, &train_labels)?;
    let test = load_idx_pair(&test_images, &test_labels)?;
    check_same_size(&train, &test, &train_images, &test_images)?;

    // "." or "..": name the set after the folder they resolve to.
    let folder_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = folder_name(dir)
        .or_else(|| folder_name(&dir.canonicalize().ok()?))
        .unwrap_or_else(|| "idx".to_string());
    let class_names = class_names_for(&name);
    Ok(TrainTest {
        name,
        train,
        test,
        class_names,
    })
}

/// Loads one split from an IDX image file and an IDX label file (each raw or
/// gzipped) as a [`Dataset`] of `(1, rows, cols)` images and 10 classes.
pub fn load_idx_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let images_src = images_path.display().to_string();
    let labels_src = labels_path.display().to_string();
    let images = parse_images_owned(read_idx_file(images_path)?, &images_src)?;
    let labels = parse_labels(&read_idx_file(labels_path)?, &labels_src)?;
    dataset_from_idx(images, labels, &images_src, &labels_src)
}

/// The MNIST-10k set compiled into the library: 10,000 real MNIST digits,
/// 8,004 for training and 1,996 for testing, 28x28, named "mnist-10k".
/// (Provenance: `data/mnist-10k/README.md`.)
pub fn load_embedded_mnist10k() -> Result<TrainTest> {
    const DIR: &str = "embedded data/mnist-10k";
    let split = |images: &[u8], images_name: &str, labels: &[u8], labels_name: &str| {
        let images_src = format!("{DIR}/{images_name}.gz");
        let labels_src = format!("{DIR}/{labels_name}.gz");
        let images = parse_images(&gunzip_if_compressed(images, &images_src)?, &images_src)?;
        let labels = parse_labels(&gunzip_if_compressed(labels, &labels_src)?, &labels_src)?;
        dataset_from_idx(images, labels, &images_src, &labels_src)
    };
    let train = split(
        include_bytes!("../../data/mnist-10k/train-images-idx3-ubyte.gz"),
        TRAIN_IMAGES,
        include_bytes!("../../data/mnist-10k/train-labels-idx1-ubyte.gz"),
        TRAIN_LABELS,
    )?;
    let test = split(
        include_bytes!("../../data/mnist-10k/t10k-images-idx3-ubyte.gz"),
        TEST_IMAGES,
        include_bytes!("../../data/mnist-10k/t10k-labels-idx1-ubyte.gz"),
        TEST_LABELS,
    )?;
    Ok(TrainTest {
        name: "mnist-10k".to_string(),
        train,
        test,
        class_names: DIGIT_CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}

/// `"fashion"` anywhere in the name (any case) selects the Fashion-MNIST class
/// names; anything else gets the digits.
fn class_names_for(name: &str) -> Vec<String> {
    let names = if name.to_lowercase().contains("fashion") {
        FASHION_CLASSES
    } else {
        DIGIT_CLASSES
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// `dir/NAME.gz` if it exists, else `dir/NAME`, else an error listing what
/// the folder should hold.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::Data(format!(
        "{}: no {name}.gz or {name}; an IDX data folder needs {TRAIN_IMAGES}, {TRAIN_LABELS}, \
         {TEST_IMAGES} and {TEST_LABELS} (each raw or .gz)",
        dir.display()
    )))
}

/// Checks the counts and labels, and scales the pixels to `[0, 1]`.
fn dataset_from_idx(
    images: IdxImages,
    labels: Vec<u8>,
    images_src: &str,
    labels_src: &str,
) -> Result<Dataset> {
    if images.count != labels.len() {
        return Err(Error::Data(format!(
            "{labels_src}: {} labels but {images_src} has {} images",
            labels.len(),
            images.count
        )));
    }
    if let Some((i, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= NUM_CLASSES)
    {
        return Err(Error::Data(format!(
            "{labels_src}: label {label} of example {i} is not a class 0-{}",
            NUM_CLASSES - 1
        )));
    }
    Dataset::from_bytes(
        images.pixels,
        labels,
        1,
        images.rows,
        images.cols,
        NUM_CLASSES,
    )
}

fn check_same_size(
    train: &Dataset,
    test: &Dataset,
    train_src: &Path,
    test_src: &Path,
) -> Result<()> {
    if train.input_shape() != test.input_shape() {
        return Err(Error::Data(format!(
            "{}: test images are {}x{} but the training images in {} are {}x{}",
            test_src.display(),
            test.height,
            test.width,
            train_src.display(),
            train.height,
            train.width
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::{gzip, image_bytes, label_bytes, TempDir};
    use crate::tensor::Tensor;

    fn data_err<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Data(msg)) => msg,
            other => panic!("expected Error::Data, got {other:?}"),
        }
    }

    /// Writes a small set: 5 train and 3 test images of `rows x cols`;
    /// train images gzipped, the rest raw.
    fn write_set(dir: &Path, rows: u32, cols: u32) {
        let w = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
        w(
            "train-images-idx3-ubyte.gz",
            gzip(&image_bytes(5, rows, cols)),
        );
        w("train-labels-idx1-ubyte", label_bytes(&[5, 0, 4, 1, 9]));
        w("t10k-images-idx3-ubyte", image_bytes(3, rows, cols));
        w("t10k-labels-idx1-ubyte.gz", gzip(&label_bytes(&[7, 2, 1])));
    }

    #[test]
    fn embedded_mnist10k_loads() {
        let set = load_embedded_mnist10k().unwrap();
        assert_eq!(set.name, "mnist-10k");
        assert_eq!(set.class_names, DIGIT_CLASSES.to_vec());
        for (d, n) in [(&set.train, 8004), (&set.test, 1996)] {
            assert_eq!(d.len(), n);
            assert_eq!(d.input_shape(), [1, 28, 28]);
            assert_eq!(d.pixels.len(), n * 784);
            assert!(matches!(d.pixels, crate::data::Pixels::Bytes(_)));
            assert_eq!(d.num_classes, 10);
            let (lo, hi) = d
                .pixels
                .floats(0..d.pixels.len())
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
            assert_eq!((lo, hi), (0.0, 1.0));
        }
        assert_eq!(
            set.train.class_counts(),
            vec![801, 902, 793, 826, 784, 691, 812, 856, 756, 783]
        );
        // Every 5th digit of each class went to the test set.
        assert_eq!(
            set.test.class_counts(),
            vec![200, 225, 198, 206, 196, 172, 202, 214, 188, 195]
        );
        // Digits, not noise: most pixels are background, and a digit has ink.
        let pixels = set.train.pixels.floats(0..set.train.pixels.len());
        let zeros = pixels.iter().filter(|&&p| p == 0.0).count();
        assert!(zeros > pixels.len() / 2);
        assert!(set.train.image(0).iter().filter(|&&p| p > 0.5).count() > 20);
    }

    #[test]
    fn folder_with_raw_and_gz_files_loads() {
        let dir = TempDir::new("mnist-dir");
        write_set(&dir.0, 4, 3);
        let set = load_idx_dir(&dir.0).unwrap();
        assert!(set.name.starts_with("convnet-test-mnist-dir"));
        assert_eq!(set.class_names[0], "0");
        assert_eq!((set.train.len(), set.test.len()), (5, 3));
        assert_eq!(set.train.input_shape(), [1, 4, 3]);
        assert_eq!(set.train.labels, vec![5, 0, 4, 1, 9]);
        assert_eq!(set.test.labels, vec![7, 2, 1]);
        // Image 2, pixel 5 is byte (2 * 31 + 5) = 67.
        assert_eq!(set.train.image(2)[5], 67.0 / 255.0);
        assert_eq!(set.test.image(2)[5], 67.0 / 255.0);

        // .gz wins when both exist.
        std::fs::write(
            dir.0.join("t10k-labels-idx1-ubyte"),
            label_bytes(&[0, 0, 0]),
        )
        .unwrap();
        assert_eq!(load_idx_dir(&dir.0).unwrap().test.labels, vec![7, 2, 1]);
    }

    #[test]
    fn fashion_folders_get_fashion_class_names() {
        let parent = TempDir::new("fashion-parent");
        let dir = parent.0.join("My-Fashion-MNIST");
        std::fs::create_dir(&dir).unwrap();
        write_set(&dir, 2, 2);
        let set = load_idx_dir(&dir).unwrap();
        assert_eq!(set.name, "My-Fashion-MNIST");
        assert_eq!(set.class_names[0], "T-shirt/top");
        assert_eq!(set.class_names[9], "Ankle boot");
    }

    #[test]
    fn missing_folder_and_files_are_errors() {
        let dir = TempDir::new("mnist-missing");
        let gone = dir.0.join("not-here");
        let msg = data_err(load_idx_dir(&gone));
        assert_eq!(
            msg,
            format!("data folder {} does not exist", gone.display())
        );

        let file = dir.0.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(data_err(load_idx_dir(&file)).contains("is not a folder"));

        write_set(&dir.0, 2, 2);
        std::fs::remove_file(dir.0.join("t10k-images-idx3-ubyte")).unwrap();
        let msg = data_err(load_idx_dir(&dir.0));
        assert!(
            msg.contains("no t10k-images-idx3-ubyte.gz or t10k-images-idx3-ubyte"),
            "{msg}"
        );
        assert!(msg.contains(TRAIN_LABELS), "{msg}");
    }

    #[test]
    fn count_mismatch_is_an_error() {
        let dir = TempDir::new("mnist-count");
        write_set(&dir.0, 2, 2);
        std::fs::write(
            dir.0.join("t10k-labels-idx1-ubyte.gz"),
            gzip(&label_bytes(&[1, 2])),
        )
        .unwrap();
        let msg = data_err(load_idx_dir(&dir.0));
        assert!(
            msg.contains("t10k-labels-idx1-ubyte.gz: 2 labels but")
                && msg.contains("t10k-images-idx3-ubyte has 3 images"),
            "{msg}"
        );
    }

    #[test]
    fn bad_labels_and_size_mismatch_are_errors() {
        let dir = TempDir::new("mnist-bad");
        write_set(&dir.0, 2, 2);
        std::fs::write(
            dir.0.join("train-labels-idx1-ubyte"),
            label_bytes(&[1, 2, 10, 3, 4]),
        )
        .unwrap();
        let msg = data_err(load_idx_dir(&dir.0));
        assert!(
            msg.contains("train-labels-idx1-ubyte: label 10 of example 2"),
            "{msg}"
        );

        write_set(&dir.0, 2, 2);
        std::fs::write(dir.0.join("t10k-images-idx3-ubyte"), image_bytes(3, 2, 3)).unwrap();
        let msg = data_err(load_idx_dir(&dir.0));
        assert!(
            msg.contains("test images are 2x3") && msg.contains("are 2x2"),
            "{msg}"
        );

        // A corrupt file inside a folder names that file.
        write_set(&dir.0, 2, 2);
        std::fs::write(
            dir.0.join("train-images-idx3-ubyte.gz"),
            [0x1f, 0x8b, 0, 1, 2],
        )
        .unwrap();
        let msg = data_err(load_idx_dir(&dir.0));
        assert!(
            msg.contains("train-images-idx3-ubyte.gz: corrupt gzip"),
            "{msg}"
        );
    }

    #[test]
    fn batch_from_embedded_set() {
        let set = load_embedded_mnist10k().unwrap();
        let mut x = Tensor::<f32>::zeros(&[0]);
        let mut t = Vec::new();
        set.test.batch_into(&[10, 3, 1995], &mut x, &mut t);
        assert_eq!(x.shape(), &[3, 1, 28, 28]);
        assert_eq!(&x.data()[784..1568], &*set.test.image(3));
        assert_eq!(&x.data()[1568..], &*set.test.image(1995));
        let want: Vec<usize> = [10, 3, 1995]
            .iter()
            .map(|&i| set.test.labels[i] as usize)
            .collect();
        assert_eq!(t, want);
    }

    /// The full Fashion-MNIST, when this machine has it (run with `--ignored`).
    #[test]
    #[ignore = "needs /work/shared/data/fashion-mnist"]
    fn full_fashion_mnist_loads_fast() {
        let dir = Path::new("/work/shared/data/fashion-mnist");
        let start = std::time::Instant::now();
        let set = load_idx_dir(dir).unwrap();
        let took = start.elapsed();
        assert_eq!((set.train.len(), set.test.len()), (60_000, 10_000));
        assert_eq!(set.train.input_shape(), [1, 28, 28]);
        assert_eq!(set.class_names[9], "Ankle boot");
        assert_eq!(set.train.class_counts(), vec![6000; 10]);
        eprintln!("Fashion-MNIST (70,000 images) loaded in {took:?}");
    }
}
