//! Property-based fuzzing of every reader of user input: IDX files (raw and
//! gzipped), CIFAR-10 batches, safetensors checkpoints and their metadata,
//! optimizer-state files, model specs (parsed, planned, built and run) and
//! metrics files.
//!
//! Each property starts from valid inputs and mutates them — truncation,
//! flipped and overwritten bytes, declared sizes changed to extreme values,
//! inserted and deleted runs, two files spliced — then asserts that the
//! reader returns an error or a valid result: never a panic, and never an
//! allocation beyond a limit (the global allocator below aborts the test
//! process on any single request above [`ALLOCATION_LIMIT`], so a header
//! that declares more data than the file holds must be refused before
//! anything that size is allocated).
//!
//! Case counts keep the whole file at a few seconds; `PROPTEST_CASES=N`
//! overrides them all, for a long campaign:
//!
//! ```text
//! PROPTEST_CASES=200000 nice cargo test --release --test fuzz
//! ```
//!
//! Inputs that once made a reader panic are kept at the end as explicit
//! regression tests.

use convnet::checkpoint::{self, CheckpointInfo};
use convnet::data::{cifar10, idx};
use convnet::init::Init;
use convnet::networks::{build_from_spec_within, build_model_within, parse_spec, plan_spec};
use convnet::optim::{build, check_state_fits, OptimizerKind};
use convnet::{Rng, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::Write;

// ---------------------------------------------------------------------------
// An allocator that refuses to let a reader allocate what a header declares
// ---------------------------------------------------------------------------

/// The largest single allocation any case may make. The inputs are a few
/// kilobytes and networks are built with a memory limit of
/// [`MODEL_MEMORY`], so anything near this is a size taken from a header
/// without checking it against the file.
const ALLOCATION_LIMIT: usize = 256 << 20;

/// The `max_memory` every network here is built within.
const MODEL_MEMORY: u64 = 16 << 20;

struct Guard;

// SAFETY: forwards to the system allocator; the only addition is a check of
// the requested size, which aborts (without allocating) when it is too large.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn check_size(size: usize) {
    if size > ALLOCATION_LIMIT {
        // No formatting: that could allocate.
        let _ = std::io::stderr()
            .write_all(b"fuzz: a reader asked for an allocation above ALLOCATION_LIMIT\n");
        std::process::abort();
    }
}

#[global_allocator]
static GUARD: Guard = Guard;

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

/// Numbers that break size arithmetic.
const EXTREMES: [u64; 12] = [
    0,
    1,
    2,
    255,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0xffff_ffff_ffff_fffe,
    u64::MAX,
];

/// One change to a file's bytes. Positions are fractions of the length, so
/// that one strategy serves files of every size.
#[derive(Clone, Debug)]
enum Mutation {
    /// Keep only the first part.
    Truncate(f64),
    /// XOR one byte.
    Flip(f64, u8),
    /// Overwrite one byte.
    Set(f64, u8),
    /// Overwrite 4 bytes, big-endian (IDX sizes), with an extreme value.
    BigEndian32(f64, usize),
    /// Overwrite 8 bytes, little-endian (the safetensors header length).
    LittleEndian64(f64, usize),
    /// Insert bytes.
    Insert(f64, Vec<u8>),
    /// Remove a run of bytes.
    Delete(f64, usize),
    /// Repeat a run of bytes.
    Duplicate(f64, usize),
    /// The first part of this file followed by the rest of another valid one.
    Splice(f64, f64, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        at.clone().prop_map(Mutation::Truncate),
        (at.clone(), 1..=255u8).prop_map(|(p, m)| Mutation::Flip(p, m)),
        (at.clone(), any::<u8>()).prop_map(|(p, v)| Mutation::Set(p, v)),
        (at.clone(), 0..EXTREMES.len()).prop_map(|(p, v)| Mutation::BigEndian32(p, v)),
        (at.clone(), 0..EXTREMES.len()).prop_map(|(p, v)| Mutation::LittleEndian64(p, v)),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        (at.clone(), 1..64usize).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (at.clone(), 1..64usize).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        (at.clone(), at, any::<usize>()).prop_map(|(p, q, k)| Mutation::Splice(p, q, k)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..5)
}

fn index(len: usize, at: f64) -> usize {
    ((len as f64 * at) as usize).min(len)
}

/// Applies `mutations` to `bytes`; `others` are the valid files to splice from.
fn mutate(bytes: &[u8], mutations: &[Mutation], others: &[Vec<u8>]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in mutations {
        let len = b.len();
        match m {
            Mutation::Truncate(at) => b.truncate(index(len, *at)),
            Mutation::Flip(at, mask) if len > 0 => b[index(len - 1, *at)] ^= mask,
            Mutation::Set(at, value) if len > 0 => b[index(len - 1, *at)] = *value,
            Mutation::BigEndian32(at, v) if len >= 4 => {
                let i = index(len - 4, *at);
                b[i..i + 4].copy_from_slice(&(EXTREMES[*v] as u32).to_be_bytes());
            }
            Mutation::LittleEndian64(at, v) if len >= 8 => {
                let i = index(len - 8, *at);
                b[i..i + 8].copy_from_slice(&EXTREMES[*v].to_le_bytes());
            }
            Mutation::Insert(at, extra) => {
                let i = index(len, *at);
                b.splice(i..i, extra.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let i = index(len, *at);
                b.drain(i..(i + n).min(len));
            }
            Mutation::Duplicate(at, n) => {
                let i = index(len, *at);
                let run = b[i..(i + n).min(len)].to_vec();
                b.splice(i..i, run);
            }
            Mutation::Splice(at, from, k) if !others.is_empty() => {
                let other = &others[k % others.len()];
                b.truncate(index(len, *at));
                b.extend_from_slice(&other[index(other.len(), *from)..]);
            }
            _ => {}
        }
    }
    b
}

/// The case count for a property, unless `PROPTEST_CASES` says otherwise.
fn cases(default: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config.max_shrink_iters = 2048;
    // A failing case is saved in tests/fuzz.proptest-regressions and run
    // first from then on.
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    config
}

// ---------------------------------------------------------------------------
// IDX
// ---------------------------------------------------------------------------

fn idx_images(count: u32, rows: u32, cols: u32, seed: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for word in [idx::IMAGES_MAGIC, count, rows, cols] {
        b.extend_from_slice(&word.to_be_bytes());
    }
    let n = (count * rows * cols) as usize;
    b.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&idx::LABELS_MAGIC.to_be_bytes());
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// What a successful image parse must satisfy.
fn check_images(images: &idx::IdxImages) {
    assert!(images.rows > 0 && images.cols > 0);
    assert_eq!(
        images.pixels.len(),
        images.count * images.rows * images.cols
    );
    for i in 0..images.count {
        assert_eq!(images.image(i).len(), images.image_len());
    }
}

/// The images, the labels and the pairing as `load_idx_pair` does it.
fn parse_idx_pair(images: &[u8], labels: &[u8]) {
    let images = idx::parse_images(images, "images");
    let labels = idx::parse_labels(labels, "labels");
    if let Ok(images) = &images {
        check_images(images);
        if let Ok(labels) = &labels {
            let pixels = images
                .pixels
                .iter()
                .map(|&p| f32::from(p) / 255.0)
                .collect();
            let set = convnet::data::Dataset::new(
                pixels,
                labels.clone(),
                1,
                images.rows,
                images.cols,
                256,
            );
            if let Ok(set) = set {
                assert_eq!(set.len(), images.count);
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(8000))]

    #[test]
    fn idx_images_never_panic(
        count in 0..4u32, rows in 1..6u32, cols in 1..6u32, seed in any::<u8>(),
        muts in mutations(),
    ) {
        let valid = idx_images(count, rows, cols, seed);
        let others = [idx_images(2, 3, 3, 7), idx_labels(&[1, 2, 3])];
        let bytes = mutate(&valid, &muts, &others);
        if let Ok(images) = idx::parse_images(&bytes, "fuzz") {
            check_images(&images);
        }
    }

    #[test]
    fn idx_labels_never_panic(labels in prop::collection::vec(any::<u8>(), 0..20), muts in mutations()) {
        let valid = idx_labels(&labels);
        let others = [idx_images(1, 2, 2, 0), idx_labels(&[9; 5])];
        let bytes = mutate(&valid, &muts, &others);
        if let Ok(parsed) = idx::parse_labels(&bytes, "fuzz") {
            prop_assert_eq!(parsed.len() + 8, bytes.len());
        }
    }

    #[test]
    fn idx_pairs_never_panic(
        count in 0..4u32, side in 1..5u32, muts in mutations(), label_muts in mutations(),
    ) {
        let images = idx_images(count, side, side, 3);
        let labels = idx_labels(&vec![4; count as usize]);
        let others = [images.clone(), labels.clone()];
        parse_idx_pair(&mutate(&images, &muts, &others), &mutate(&labels, &label_muts, &others));
    }

    #[test]
    fn gzipped_idx_never_panics(count in 0..4u32, side in 1..6u32, muts in mutations()) {
        let raw = idx_images(count, side, side, 1);
        let valid = gzip(&raw);
        let others = [gzip(&idx_labels(&[1, 2])), raw.clone()];
        let bytes = mutate(&valid, &muts, &others);
        // A small limit: a mutation that makes the stream unpack to more
        // must be stopped there.
        if let Ok(unpacked) = idx::gunzip_at_most(&bytes, "fuzz.gz", 4096) {
            prop_assert!(unpacked.len() <= 4096);
            if let Ok(images) = idx::parse_images(&unpacked, "fuzz.gz") {
                check_images(&images);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// CIFAR-10
// ---------------------------------------------------------------------------

fn cifar_records(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, &label) in labels.iter().enumerate() {
        b.push(label);
        b.extend((0..cifar10::RECORD_LEN - 1).map(|i| (i + k) as u8));
    }
    b
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn cifar_batches_never_panic(labels in prop::collection::vec(0..10u8, 1..3), muts in mutations()) {
        let valid = cifar_records(&labels);
        let others = [cifar_records(&[3]), idx_labels(&[1])];
        let bytes = mutate(&valid, &muts, &others);
        if let Ok(set) = cifar10::parse_records(&bytes, "fuzz.bin") {
            prop_assert_eq!(set.len() * cifar10::RECORD_LEN, bytes.len());
            prop_assert!(set.labels.iter().all(|&l| l < 10));
            prop_assert!(set.pixels.floats(0..set.pixels.len()).iter().all(|&p| (0.0..=1.0).contains(&p)));
        }
    }
}

// ---------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------

/// Small models of every kind of layer a checkpoint stores.
const CHECKPOINT_MODELS: [(&str, [usize; 3], usize); 4] = [
    ("conv(2,3)-relu-maxpool(2)-affine(3)", [1, 8, 8], 3),
    (
        "conv(3,3,pad=1)-bn-relu-avgpool(2)-affine(4)-bn-affine(2)",
        [3, 6, 6],
        2,
    ),
    ("affine(5)-tanh-dropout(0.3)-affine(4)", [1, 3, 3], 4),
    ("simple", [1, 10, 10], 3),
];

fn checkpoint_bytes(k: usize) -> Vec<u8> {
    let (model, input_shape, classes) = CHECKPOINT_MODELS[k % CHECKPOINT_MODELS.len()];
    let options = if model == "simple" {
        "filters=2,filter_size=3,hidden_size=4".parse().unwrap()
    } else {
        Default::default()
    };
    let mut net = build_model_within::<f32>(
        model,
        &options,
        input_shape,
        classes,
        &mut Rng::new(k as u64),
        MODEL_MEMORY,
    )
    .unwrap();
    let info = CheckpointInfo {
        model: model.to_string(),
        options,
        input_shape,
        class_names: (0..classes).map(|c| format!("class {c}")).collect(),
        extra: BTreeMap::from([("epoch".to_string(), "3".to_string())]),
    };
    checkpoint::to_bytes(&mut net, &info).unwrap()
}

/// A change to the JSON header of a safetensors file, written back with a
/// correct length: the mutations byte flips rarely reach.
#[derive(Clone, Debug)]
enum HeaderMutation {
    /// Set a metadata entry (model, model_options, input_shape, class_names, ...).
    Metadata(usize, String),
    /// Change one dimension of one tensor's shape.
    Shape(usize, usize, u64),
    /// Change one tensor's data offsets.
    Offsets(usize, u64, u64),
    /// Change one tensor's dtype.
    Dtype(usize, &'static str),
    /// Remove one tensor's entry.
    Remove(usize),
    /// Rename one tensor.
    Rename(usize, String),
}

const METADATA_KEYS: [&str; 9] = [
    "model",
    "model_options",
    "spec",
    "layers",
    "input_shape",
    "class_names",
    "epoch",
    "format",
    "order",
];

fn metadata_value() -> impl Strategy<Value = String> {
    let extreme = (0..EXTREMES.len()).prop_map(|i| EXTREMES[i].to_string());
    prop_oneof![
        "[a-z0-9(),=.-]{0,40}",
        extreme.clone(),
        (extreme.clone(), extreme.clone(), extreme.clone())
            .prop_map(|(a, b, c)| format!("{a},{b},{c}")),
        (0..4usize, 1..40usize).prop_map(|(c, h)| format!("{c},{h},{h}")),
        extreme
            .clone()
            .prop_map(|v| format!("filters={v},hidden_size=3")),
        extreme
            .clone()
            .prop_map(|v| format!("filter_size={v},stride=1,pad=0")),
        extreme.prop_map(|v| format!("conv({v},3)-affine(3)")),
        (0..6usize).prop_map(|n| serde_json::to_string(&vec!["x"; n]).unwrap()),
        Just("[\"a\",".to_string()),
        Just("simple".to_string()),
        Just("deep".to_string()),
    ]
}

fn header_mutation() -> impl Strategy<Value = HeaderMutation> {
    let dtype = prop_oneof![
        Just("F32"),
        Just("F64"),
        Just("F16"),
        Just("I32"),
        Just("U8"),
        Just("BOOL")
    ];
    let extreme = (0..EXTREMES.len()).prop_map(|i| EXTREMES[i]);
    let small = 0..64u64;
    prop_oneof![
        (0..METADATA_KEYS.len(), metadata_value())
            .prop_map(|(k, v)| HeaderMutation::Metadata(k, v)),
        (
            any::<usize>(),
            0..4usize,
            prop_oneof![extreme.clone(), small.clone()]
        )
            .prop_map(|(t, d, v)| HeaderMutation::Shape(t, d, v)),
        (
            any::<usize>(),
            prop_oneof![extreme.clone(), small.clone()],
            prop_oneof![extreme, small]
        )
            .prop_map(|(t, a, b)| HeaderMutation::Offsets(t, a, b)),
        (any::<usize>(), dtype).prop_map(|(t, d)| HeaderMutation::Dtype(t, d)),
        any::<usize>().prop_map(HeaderMutation::Remove),
        (any::<usize>(), "[a-z0-9.]{0,12}").prop_map(|(t, n)| HeaderMutation::Rename(t, n)),
    ]
}

/// Applies header mutations to a safetensors file (unchanged if its header
/// does not parse).
fn mutate_header(bytes: &[u8], mutations: &[HeaderMutation]) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    else {
        return bytes.to_vec();
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes.to_vec();
    };
    let Ok(serde_json::Value::Object(mut header)) = serde_json::from_slice(header) else {
        return bytes.to_vec();
    };
    let data = &bytes[8 + len..];
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    for m in mutations {
        let tensor = |t: usize| names.get(t % names.len().max(1)).cloned();
        match m {
            HeaderMutation::Metadata(k, v) => {
                if let Some(serde_json::Value::Object(meta)) = header.get_mut("__metadata__") {
                    meta.insert(METADATA_KEYS[*k].to_string(), v.clone().into());
                }
            }
            HeaderMutation::Shape(t, d, v) => {
                if let Some(entry) = tensor(*t).and_then(|n| header.get_mut(&n)) {
                    if let Some(serde_json::Value::Array(shape)) = entry.get_mut("shape") {
                        if shape.is_empty() || *d >= shape.len() {
                            shape.push((*v).into());
                        } else {
                            shape[*d] = (*v).into();
                        }
                    }
                }
            }
            HeaderMutation::Offsets(t, a, b) => {
                if let Some(entry) = tensor(*t).and_then(|n| header.get_mut(&n)) {
                    entry["data_offsets"] = serde_json::json!([a, b]);
                }
            }
            HeaderMutation::Dtype(t, d) => {
                if let Some(entry) = tensor(*t).and_then(|n| header.get_mut(&n)) {
                    entry["dtype"] = (*d).into();
                }
            }
            HeaderMutation::Remove(t) => {
                if let Some(name) = tensor(*t) {
                    header.remove(&name);
                }
            }
            HeaderMutation::Rename(t, new) => {
                if let Some(name) = tensor(*t) {
                    if let Some(entry) = header.remove(&name) {
                        header.insert(new.clone(), entry);
                    }
                }
            }
        }
    }
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// What a successfully loaded checkpoint must satisfy: finite weights, and
/// a network that classifies an image.
fn check_loaded(bytes: &[u8]) {
    let Ok((mut net, info)) = checkpoint::load_from_bytes(bytes, "fuzz.safetensors", MODEL_MEMORY)
    else {
        return;
    };
    for p in net.params() {
        assert!(p.value.data().iter().all(|v| v.is_finite()));
    }
    let [c, h, w] = info.input_shape;
    let x = Tensor::<f32>::zeros(&[1, c, h, w]);
    let scores = net.predict(&x, false).unwrap();
    assert_eq!(scores.shape(), [1, info.class_names.len()]);
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn checkpoint_bytes_never_panic(k in 0..4usize, muts in mutations()) {
        let valid = checkpoint_bytes(k);
        let others = [checkpoint_bytes(k + 1), checkpoint_bytes(k + 2)];
        check_loaded(&mutate(&valid, &muts, &others));
    }

    #[test]
    fn checkpoint_headers_never_panic(
        k in 0..4usize,
        header in prop::collection::vec(header_mutation(), 1..4),
        muts in prop::collection::vec(mutation(), 0..2),
    ) {
        let valid = checkpoint_bytes(k);
        let bytes = mutate(&mutate_header(&valid, &header), &muts, &[]);
        check_loaded(&bytes);
        // The metadata alone too.
        let _ = checkpoint::read_info(&bytes, "fuzz.safetensors");
    }
}

// ---------------------------------------------------------------------------
// Optimizer state
// ---------------------------------------------------------------------------

const STATE_MODELS: [&str; 2] = [
    "conv(2,3)-relu-maxpool(2)-affine(3)",
    "conv(3,3)-relu-affine(3)",
];

/// A small network, a batch for it, and the bytes of `kind`'s state after
/// two steps.
fn trained_state(model: usize, kind: OptimizerKind) -> Vec<u8> {
    let (mut net, x, labels) = state_network(model);
    let mut opt = build::<f32>(kind, None);
    for _ in 0..2 {
        net.gradient(&x, &labels).unwrap();
        opt.step(&mut net.params());
    }
    checkpoint::optimizer_state_to_bytes(2, 0, &opt.state()).unwrap()
}

fn state_network(model: usize) -> (convnet::networks::Network<f32>, Tensor<f32>, Vec<usize>) {
    let spec = parse_spec(STATE_MODELS[model % STATE_MODELS.len()]).unwrap();
    let mut rng = Rng::new(1);
    let net = build_from_spec_within::<f32>(&spec, [1, 6, 6], 3, Init::He, &mut rng, MODEL_MEMORY)
        .unwrap();
    let x = Tensor::from_vec(
        &[2, 1, 6, 6],
        (0..72).map(|i| (i % 7) as f32 / 7.0).collect(),
    )
    .unwrap();
    (net, x, vec![0, 2])
}

fn optimizer_kind() -> impl Strategy<Value = OptimizerKind> {
    (0..OptimizerKind::ALL.len()).prop_map(|i| OptimizerKind::ALL[i])
}

proptest! {
    #![proptest_config(cases(2000))]

    /// A mutated state file, or one from another network or another
    /// optimizer, is refused or loads into an optimizer that then steps.
    #[test]
    fn optimizer_state_never_panics(
        model in 0..2usize,
        saved_by in optimizer_kind(),
        loaded_by in optimizer_kind(),
        header in prop::collection::vec(header_mutation(), 0..3),
        muts in prop::collection::vec(mutation(), 0..4),
    ) {
        let valid = trained_state(model, saved_by);
        let others = [trained_state(model + 1, saved_by), trained_state(model, loaded_by)];
        let bytes = mutate(&mutate_header(&valid, &header), &muts, &others);
        let Ok(saved) = checkpoint::parse_optimizer_state(&bytes, "fuzz.optim") else {
            return Ok(());
        };
        let state = saved.state;
        prop_assert!(state.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
        // Loaded into the other network too: refused, never a panic.
        let (mut net, x, labels) = state_network(model + usize::from(muts.len() % 2 == 1));
        let params: Vec<(String, usize)> = net
            .param_names()
            .into_iter()
            .zip(net.params().iter().map(|p| p.value.len()))
            .collect();
        let mut opt = build::<f32>(loaded_by, None);
        if check_state_fits(&state, &params).is_ok() && opt.load_state(&state).is_ok() {
            net.gradient(&x, &labels).unwrap();
            opt.step(&mut net.params());
        }
    }
}

// ---------------------------------------------------------------------------
// Model specs: parsed, planned, built and run
// ---------------------------------------------------------------------------

/// A number as a spec may hold it: mostly small, sometimes extreme or not
/// a whole number.
fn spec_number() -> impl Strategy<Value = String> {
    prop_oneof![
        14 => (1..6u64).prop_map(|v| v.to_string()),
        2 => Just("0".to_string()),
        1 => (0..EXTREMES.len()).prop_map(|i| EXTREMES[i].to_string()),
        1 => prop_oneof![
            Just("1.5".to_string()),
            Just("-1".to_string()),
            Just("1e300".to_string()),
            Just("NaN".to_string()),
            Just("inf".to_string()),
            Just("4294967296".to_string()),
            Just("0.999".to_string()),
            Just("5e-4".to_string()),
        ],
    ]
}

fn spec_layer() -> impl Strategy<Value = String> {
    let n = spec_number;
    let named = |key: &'static str| n().prop_map(move |v| format!("{key}={v}"));
    prop_oneof![
        (n(), n()).prop_map(|(f, k)| format!("conv({f},{k})")),
        (n(), n(), named("stride"), named("pad"))
            .prop_map(|(f, k, s, p)| format!("conv({f},{k},{s},{p})")),
        n().prop_map(|k| format!("maxpool({k})")),
        (n(), n(), n()).prop_map(|(k, s, p)| format!("maxpool({k},{s},{p})")),
        (n(), n(), n()).prop_map(|(k, s, p)| format!("avgpool({k},{s},{p})")),
        Just("gap".to_string()),
        n().prop_map(|m| format!("affine({m})")),
        Just("relu".to_string()),
        Just("sigmoid".to_string()),
        Just("tanh".to_string()),
        prop_oneof![Just("0".to_string()), Just("0.5".to_string()), n()]
            .prop_map(|r| format!("dropout({r})")),
        (n(), n(), n(), n()).prop_map(|(s, a, b, k)| format!("lrn({s},{a},{b},{k})")),
        Just("lrn".to_string()),
        Just("bn".to_string()),
    ]
}

/// Text edits that break a spec's syntax.
#[derive(Clone, Debug)]
enum TextEdit {
    Insert(f64, char),
    Delete(f64),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    let chars: Vec<char> = "()-,=.e0123456789 abcdfgilmnoprstuvx\u{e9}\u{1F600}"
        .chars()
        .collect();
    prop_oneof![
        (0.0..1.0f64, prop::sample::select(chars)).prop_map(|(p, c)| TextEdit::Insert(p, c)),
        (0.0..1.0f64).prop_map(TextEdit::Delete),
    ]
}

/// No edit half of the time, else one or two.
fn text_edits() -> impl Strategy<Value = Vec<TextEdit>> {
    prop_oneof![Just(Vec::new()), prop::collection::vec(text_edit(), 1..3)]
}

fn edit(text: &str, edits: &[TextEdit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match *e {
            TextEdit::Insert(at, c) => {
                let i = index(chars.len(), at);
                chars.insert(i, c);
            }
            TextEdit::Delete(at) if !chars.is_empty() => {
                let i = index(chars.len() - 1, at);
                chars.remove(i);
            }
            TextEdit::Delete(_) => {}
        }
    }
    chars.into_iter().collect()
}

/// Parses, plans and builds `spec`; a network that builds must train a step.
fn build_and_run(spec: &str, input: [usize; 3], classes: usize) {
    let Ok(layers) = parse_spec(spec) else {
        return;
    };
    let planned = plan_spec(&layers, input, classes);
    let built = build_from_spec_within::<f32>(
        &layers,
        input,
        classes,
        Init::He,
        &mut Rng::new(0),
        MODEL_MEMORY,
    );
    let Ok(mut net) = built else {
        return;
    };
    // What builds was planned, with the same shapes.
    let plan = planned.expect("a network that builds has a plan");
    let shapes = net.shapes(2).unwrap();
    for (layer, shape) in plan.layers.iter().zip(&shapes[1..]) {
        assert_eq!(layer.output[..], shape[1..], "{spec}: {}", layer.name);
    }
    let [c, h, w] = input;
    let x = Tensor::from_vec(
        &[2, c, h, w],
        (0..2 * c * h * w).map(|i| (i % 5) as f32 / 5.0).collect(),
    )
    .unwrap();
    net.gradient(&x, &[0, classes - 1]).unwrap();
    let mut opt = build::<f32>(OptimizerKind::Adam, None);
    opt.step(&mut net.params());
    net.predict(&x, false).unwrap();
}

proptest! {
    #![proptest_config(cases(5000))]

    #[test]
    fn specs_never_panic(
        layers in prop::collection::vec(spec_layer(), 0..6),
        end_with_classes in any::<bool>(),
        edits in text_edits(),
        c in 1..4usize, h in 1..12usize, w in 1..12usize, classes in 1..5usize,
    ) {
        let mut spec = layers.join("-");
        if end_with_classes {
            if !spec.is_empty() {
                spec.push('-');
            }
            spec.push_str(&format!("affine({classes})"));
        }
        let spec = edit(&spec, &edits);
        build_and_run(&spec, [c, h, w], classes);
    }

    /// Named models and `ModelOptions` text as checkpoint metadata holds it.
    #[test]
    fn model_options_never_panic(
        model in prop::sample::select(vec!["simple", "lenet5", "alexnet-small", "deep", "alexnet"]),
        options in "[a-z_=,0-9]{0,40}",
        value in spec_number(),
        c in 1..4usize, side in 1..40usize, classes in 1..12usize,
    ) {
        let text = format!("{options},filters={value}");
        for text in [options.as_str(), text.as_str()] {
            if let Ok(options) = text.parse() {
                let built = build_model_within::<f32>(
                    model, &options, [c, side, side], classes, &mut Rng::new(0), MODEL_MEMORY,
                );
                if let Ok(net) = built {
                    prop_assert_eq!(net.num_classes().unwrap(), classes);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Metrics files
// ---------------------------------------------------------------------------

fn metrics_line(epoch: u32, loss: f64) -> String {
    format!(
        r#"{{"epoch":{epoch},"train_loss":{loss},"train_acc":0.5,"test_loss":{loss},"test_acc":0.25,"seconds":1.0,"images_per_second":100.0}}"#
    )
}

proptest! {
    #![proptest_config(cases(8000))]

    #[test]
    fn metrics_files_never_panic(
        epochs in prop::collection::vec((any::<u32>(), -1e300..1e300f64), 1..4),
        muts in mutations(),
    ) {
        let text: String = epochs.iter().map(|&(e, l)| metrics_line(e, l) + "\n").collect();
        let other = metrics_line(7, 0.25).into_bytes();
        let bytes = mutate(text.as_bytes(), &muts, &[other]);
        let text = String::from_utf8_lossy(&bytes);
        match convnet::metrics::parse_metrics(&text, "fuzz.jsonl") {
            Ok(points) => {
                prop_assert!(!points.is_empty());
                for p in points {
                    prop_assert!([p.train_loss, p.test_loss, p.train_acc, p.test_acc]
                        .iter()
                        .all(|v| v.is_finite()));
                }
            }
            Err(e) => prop_assert!(!e.to_string().contains('\n'), "{}", e),
        }
    }

    #[test]
    fn memory_sizes_never_panic(text in "[0-9.]{0,12}[kmgtib ]{0,4}") {
        if let Ok(bytes) = convnet::limits::parse_bytes(&text) {
            prop_assert!(bytes >= 1);
        }
    }
}

// ---------------------------------------------------------------------------
// Regressions: inputs that once made a reader panic or allocate without limit
// ---------------------------------------------------------------------------

/// A checkpoint whose metadata asks for a huge model is refused before its
/// weights are allocated (it used to abort: `memory allocation of N bytes failed`).
#[test]
fn regression_checkpoint_declaring_a_huge_model() {
    let valid = checkpoint_bytes(3);
    // Checkpoints rebuild their network from the `spec` they record.
    let spec_key = METADATA_KEYS.iter().position(|k| *k == "spec").unwrap();
    for spec in [
        "conv(2,3)-relu-maxpool(2)-affine(1000000000)-relu-affine(3)",
        "conv(1000000000,3)-relu-maxpool(2)-affine(3)",
    ] {
        let bytes = mutate_header(
            &valid,
            &[HeaderMutation::Metadata(spec_key, spec.to_string())],
        );
        let e = checkpoint::load_from_bytes(&bytes, "huge.safetensors", 1 << 30)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("huge.safetensors: its spec: layer "), "{e}");
        assert!(e.contains("memory limit"), "{e}");
    }
}

/// Padding near `usize::MAX` used to overflow `input + 2 * pad`.
#[test]
fn regression_padding_that_overflows() {
    build_and_run("conv(1,1,pad=18446744073709551615)-affine(2)", [1, 4, 4], 2);
    build_and_run("maxpool(2,2,4294967295)-affine(2)", [1, 4, 4], 2);
    let layers = parse_spec("conv(1,3)-affine(2)").unwrap();
    assert!(plan_spec(&layers, [1, usize::MAX, usize::MAX], 2).is_err());
}

/// An optimizer state from another network is refused (it used to panic in
/// the first step: `assertion left == right failed`).
#[test]
fn regression_optimizer_state_from_another_network() {
    for kind in OptimizerKind::ALL {
        let bytes = trained_state(1, kind);
        let state = checkpoint::parse_optimizer_state(&bytes, "other.optim")
            .unwrap()
            .state;
        let (mut net, ..) = state_network(0);
        let params: Vec<(String, usize)> = net
            .param_names()
            .into_iter()
            .zip(net.params().iter().map(|p| p.value.len()))
            .collect();
        let fits = check_state_fits(&state, &params);
        if kind == OptimizerKind::Sgd {
            fits.unwrap();
        } else {
            let e = fits.unwrap_err().to_string();
            assert!(e.contains("from another network"), "{kind}: {e}");
        }
    }
}

/// The mutations still let a share of the cases through to the deeper
/// code (a network that builds and trains, a checkpoint that loads, a state
/// an optimizer steps with): a fuzzer whose every case fails at the first
/// check would test nothing.
#[test]
fn mutated_inputs_still_reach_the_deep_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut sample = |strategy: &dyn Fn(&mut TestRunner) -> bool, n: usize| {
        (0..n).filter(|_| strategy(&mut runner)).count() as f64 / n as f64
    };
    let specs = sample(
        &|runner| {
            let (layers, edits, c, side, classes) = (
                prop::collection::vec(spec_layer(), 0..6),
                text_edits(),
                1..4usize,
                1..12usize,
                1..5usize,
            )
                .new_tree(runner)
                .unwrap()
                .current();
            let spec = edit(&(layers.join("-") + &format!("-affine({classes})")), &edits);
            parse_spec(&spec)
                .and_then(|l| {
                    build_from_spec_within::<f32>(
                        &l,
                        [c, side, side],
                        classes,
                        Init::He,
                        &mut Rng::new(0),
                        MODEL_MEMORY,
                    )
                })
                .is_ok()
        },
        1000,
    );
    let checkpoints = sample(
        &|runner| {
            let (k, header, muts) = (
                0..4usize,
                prop::collection::vec(header_mutation(), 1..4),
                prop::collection::vec(mutation(), 0..2),
            )
                .new_tree(runner)
                .unwrap()
                .current();
            let bytes = mutate(&mutate_header(&checkpoint_bytes(k), &header), &muts, &[]);
            checkpoint::load_from_bytes(&bytes, "f", MODEL_MEMORY).is_ok()
        },
        500,
    );
    let states = sample(
        &|runner| {
            let (kind, muts) = (optimizer_kind(), prop::collection::vec(mutation(), 0..3))
                .new_tree(runner)
                .unwrap()
                .current();
            let bytes = mutate(&trained_state(0, kind), &muts, &[]);
            checkpoint::parse_optimizer_state(&bytes, "f").is_ok()
        },
        300,
    );
    eprintln!(
        "built {specs:.3} of specs, loaded {checkpoints:.3} of checkpoints, {states:.3} of states"
    );
    assert!(specs > 0.05, "{specs}");
    assert!(checkpoints > 0.005, "{checkpoints}");
    assert!(states > 0.05, "{states}");
}
