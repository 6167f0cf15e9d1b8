//! Writes the starting corpus into seeds/: `cargo run --bin seeds` (no AFL
//! instrumentation needed).

use convnet::checkpoint::{self, CheckpointInfo};
use convnet::networks::{build_model, ModelOptions};
use convnet::Rng;
use std::io::Write;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = |path: &str, bytes: &[u8]| std::fs::write(dir.join(path), bytes).unwrap();
    // IDX: two 3×3 images, their labels, the images gzipped.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    images.extend(0..18u8);
    write("idx/images", &images);
    write("idx/labels", &[0, 0, 8, 1, 0, 0, 0, 2, 7, 3]);
    write("idx/images.gz", &gzip_stored(&images));
    // Checkpoints of three small models.
    for (i, (model, shape, classes)) in [
        ("conv(2,3)-relu-maxpool(2)-affine(3)", [1, 8, 8], 3),
        ("conv(2,3,pad=1)-bn-relu-avgpool(2)-affine(2)", [3, 4, 4], 2),
        ("affine(4)-tanh-dropout(0.3)-affine(2)", [1, 2, 2], 2),
    ]
    .into_iter()
    .enumerate()
    {
        let options = ModelOptions::default();
        let mut net =
            build_model::<f32>(model, &options, shape, classes, &mut Rng::new(1)).unwrap();
        let info = CheckpointInfo {
            model: model.into(),
            options,
            input_shape: shape,
            class_names: (0..classes).map(|c| c.to_string()).collect(),
            extra: Default::default(),
        };
        write(
            &format!("checkpoint/{i}.bin"),
            &checkpoint::to_bytes(&mut net, &info).unwrap(),
        );
    }
    // Specs, after three bytes choosing the input and classes.
    for (i, spec) in [
        "conv(4,3,pad=1)-relu-maxpool(2)-affine(3)",
        "conv(2,3,stride=2)-bn-tanh-avgpool(2,1,1)-gap-affine(3)",
        "lrn(3,1e-4,0.75,2)-dropout(0.5)-affine(5)-sigmoid-affine(3)",
    ]
    .into_iter()
    .enumerate()
    {
        let mut bytes = vec![0u8, 7, 2];
        bytes.write_all(spec.as_bytes()).unwrap();
        write(&format!("spec/{i}"), &bytes);
    }
}

/// A gzip member holding `bytes` in one stored (uncompressed) deflate block.
fn gzip_stored(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let len = bytes.len() as u16;
    out.push(1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(&crc32(bytes).to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
