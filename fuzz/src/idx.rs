//! AFL++ target: IDX image and label files, raw or gzipped (unpacking at
//! most 1 MiB). Any panic or abort is a crash.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        use convnet::data::idx;
        if let Ok(images) = idx::parse_images(data, "afl") {
            assert_eq!(
                images.pixels.len(),
                images.count * images.rows * images.cols
            );
        }
        let _ = idx::parse_labels(data, "afl");
        if let Ok(unpacked) = idx::gunzip_at_most(data, "afl", 1 << 20) {
            assert!(unpacked.len() <= 1 << 20);
            let _ = idx::parse_images(&unpacked, "afl");
            let _ = idx::parse_labels(&unpacked, "afl");
        }
        let _ = convnet::data::cifar10::parse_records(data, "afl");
    });
}
